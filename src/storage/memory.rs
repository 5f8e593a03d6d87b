//! `MemEngine`: an in-memory engine with an explicit durability model.
//!
//! It keeps two maps: `visible` (what reads see) and `durable` (what survives a
//! crash). A synced write makes every earlier write durable too (prefix
//! durability, like a write-ahead log); `crash()` throws away everything not yet
//! synced. Clones share the same state, so a simulation harness can hold a
//! node's "disk" across kill and restart.
//!
//! A harness can make reads fail (`fail_reads`): a disk that returns read
//! errors for some keys, the fault the state machine must answer by
//! stopping the node rather than skipping an entry. It can make fsyncs
//! fail (`fail_syncs`): a synced write then errors and leaves nothing new
//! durable or visible (after a failed fsync the kernel may have dropped the
//! dirty pages: the only safe answer is to stop, never to retry and go on).
//!
//! CAVEATS: snapshots copy the visible map (O(n)); fine for tests and simulation.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{feed, BatchOp, Engine, Fed, KvPair, Snapshot, Visitor, WriteBatch};
use crate::error::Result;

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Default)]
struct Inner {
    visible: Map,
    durable: Map,
    /// Batches written since the last sync, oldest first.
    unsynced: Vec<WriteBatch>,
    writes: u64,
    syncs: u64,
    sync_latency: std::time::Duration,
    /// Reads of keys this matches fail (see `fail_reads`).
    failing_reads: Option<ReadFault>,
    /// Synced writes fail (see `fail_syncs`).
    failing_syncs: bool,
}

/// Which point reads fail.
pub type ReadFault = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// The message of an injected read error (harnesses match on it).
pub const INJECTED_READ_ERROR: &str = "injected read error";
/// The message of an injected fsync failure (harnesses match on it).
pub const INJECTED_SYNC_ERROR: &str = "injected fsync error";

/// A shared, in-memory engine (cheap to clone; clones share state).
#[derive(Clone, Default)]
pub struct MemEngine {
    inner: Arc<Mutex<Inner>>,
}

/// Counters for tests and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemStats {
    pub writes: u64,
    pub syncs: u64,
    pub unsynced_batches: usize,
}

impl MemEngine {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock poisons it; the maps stay consistent
        // because every mutation completes before the guard drops.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Simulates a power loss: every write not yet synced is gone.
    pub fn crash(&self) {
        let mut inner = self.lock();
        inner.visible = inner.durable.clone();
        inner.unsynced.clear();
    }

    pub fn stats(&self) -> MemStats {
        let inner = self.lock();
        MemStats {
            writes: inner.writes,
            syncs: inner.syncs,
            unsynced_batches: inner.unsynced.len(),
        }
    }

    /// Makes every synced write take `d` longer (a slow disk).
    pub fn set_sync_latency(&self, d: std::time::Duration) {
        self.lock().sync_latency = d;
    }

    /// Makes reads of the keys `which` matches fail (`None`: heal): point
    /// reads of them, and scans and visits that start at one or pass one
    /// (a disk that fails reads fails them whether or not a key is there).
    pub fn fail_reads(&self, which: Option<ReadFault>) {
        self.lock().failing_reads = which;
    }

    /// Makes every synced write fail (`false`: heal).
    pub fn fail_syncs(&self, on: bool) {
        self.lock().failing_syncs = on;
    }

    /// Every visible pair, for state comparisons in tests.
    pub fn dump(&self) -> Vec<KvPair> {
        self.lock()
            .visible
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

fn apply(map: &mut Map, batch: &WriteBatch) {
    for op in batch.ops() {
        match op {
            BatchOp::Put(k, v) => {
                map.insert(k.clone(), v.clone());
            }
            BatchOp::Delete(k) => {
                map.remove(k);
            }
            BatchOp::DeleteRange(s, e) => {
                if s < e {
                    let doomed: Vec<Vec<u8>> = map
                        .range(s.clone()..e.clone())
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in doomed {
                        map.remove(&k);
                    }
                }
            }
        }
    }
}

fn scan_map(map: &Map, start: &[u8], end: &[u8], limit: usize, reverse: bool) -> Vec<KvPair> {
    if !end.is_empty() && start >= end {
        return Vec::new();
    }
    let lo = Bound::Included(start.to_vec());
    let hi = if end.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Excluded(end.to_vec())
    };
    let iter = map.range((lo, hi));
    let clone = |(k, v): (&Vec<u8>, &Vec<u8>)| (k.clone(), v.clone());
    if reverse {
        iter.rev().take(limit).map(clone).collect()
    } else {
        iter.take(limit).map(clone).collect()
    }
}

/// `visit` over the map: a `Seek` starts a new range at its key.
fn visit_map(map: &Map, start: &[u8], end: &[u8], f: &mut Visitor) -> Result<()> {
    let hi = if end.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Excluded(end.to_vec())
    };
    let mut from = start.to_vec();
    loop {
        if !end.is_empty() && from.as_slice() >= end {
            return Ok(());
        }
        let pairs = map
            .range((Bound::Included(from.clone()), hi.clone()))
            .map(|(k, v)| (k.as_slice(), v.as_slice()));
        match feed(pairs, f)? {
            Fed::Seek(to) => from = to,
            Fed::Ended | Fed::Stopped => return Ok(()),
        }
    }
}

impl Engine for MemEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let inner = self.lock();
        if inner.failing_reads.as_ref().is_some_and(|f| f(key)) {
            return Err(crate::error::Error::Storage(INJECTED_READ_ERROR.into()));
        }
        Ok(inner.visible.get(key).cloned())
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize, reverse: bool) -> Result<Vec<KvPair>> {
        let inner = self.lock();
        let pairs = scan_map(&inner.visible, start, end, limit, reverse);
        if let Some(fault) = &inner.failing_reads {
            if fault(start) || pairs.iter().any(|(k, _)| fault(k)) {
                return Err(crate::error::Error::Storage(INJECTED_READ_ERROR.into()));
            }
        }
        Ok(pairs)
    }

    fn visit(&self, start: &[u8], end: &[u8], f: &mut Visitor) -> Result<()> {
        let inner = self.lock();
        match &inner.failing_reads {
            Some(fault) if fault(start) => {
                Err(crate::error::Error::Storage(INJECTED_READ_ERROR.into()))
            }
            Some(fault) => visit_map(&inner.visible, start, end, &mut |k, v| {
                if fault(k) {
                    return Err(crate::error::Error::Storage(INJECTED_READ_ERROR.into()));
                }
                f(k, v)
            }),
            None => visit_map(&inner.visible, start, end, f),
        }
    }

    fn write(&self, batch: &WriteBatch, sync: bool) -> Result<()> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        if sync && inner.failing_syncs {
            return Err(crate::error::Error::Storage(INJECTED_SYNC_ERROR.into()));
        }
        apply(&mut inner.visible, batch);
        inner.writes += 1;
        if sync {
            for b in inner.unsynced.drain(..) {
                apply(&mut inner.durable, &b);
            }
            apply(&mut inner.durable, batch);
            inner.syncs += 1;
        } else if !batch.is_empty() {
            inner.unsynced.push(batch.clone());
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Box<dyn Snapshot>> {
        Ok(Box::new(MemSnapshot {
            map: Arc::new(self.lock().visible.clone()),
        }))
    }

    fn sync_latency(&self) -> std::time::Duration {
        self.lock().sync_latency
    }
}

struct MemSnapshot {
    map: Arc<Map>,
}

impl Snapshot for MemSnapshot {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.map.get(key).cloned())
    }
    fn scan(&self, start: &[u8], end: &[u8], limit: usize, reverse: bool) -> Result<Vec<KvPair>> {
        Ok(scan_map(&self.map, start, end, limit, reverse))
    }
    fn visit(&self, start: &[u8], end: &[u8], f: &mut Visitor) -> Result<()> {
        visit_map(&self.map, start, end, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_loses_exactly_the_unsynced_writes() {
        let e = MemEngine::new();
        let mut b = WriteBatch::new();
        b.put("a", "1");
        e.write(&b, false).unwrap();
        let mut b = WriteBatch::new();
        b.put("b", "2");
        e.write(&b, true).unwrap(); // makes "a" durable too
        let mut b = WriteBatch::new();
        b.put("c", "3");
        b.delete("a");
        e.write(&b, false).unwrap();
        assert_eq!(e.get(b"c").unwrap(), Some(b"3".to_vec()));
        assert_eq!(e.get(b"a").unwrap(), None);
        e.crash();
        assert_eq!(e.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(e.get(b"b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(e.get(b"c").unwrap(), None);
        assert_eq!(e.stats().unsynced_batches, 0);
    }

    #[test]
    fn clones_share_the_disk() {
        let e = MemEngine::new();
        let e2 = e.clone();
        let mut b = WriteBatch::new();
        b.put("k", "v");
        e.write(&b, true).unwrap();
        e2.crash();
        assert_eq!(e.get(b"k").unwrap(), Some(b"v".to_vec()));
    }
}
