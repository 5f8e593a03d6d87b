//! Garbage collection of MVCC versions behind a horizon: what no read at or
//! above the horizon can see — every version older than the newest one at
//! or below it, that one too if it is a delete, and rollback records at or
//! below it — except a two-phase primary's commit record whose
//! secondaries may still be locked (`Write::pending_secondaries`): readers
//! resolving those locks decide from it, and "no record" must keep
//! meaning "not committed".
//!
//! Two halves: `GarbageFinder` reads raw records in key order (a leader's
//! off-task range scan) and names the keys that hold garbage; `gc_key`
//! computes the deletes for one key from the replicated state, which is
//! what the replicated GC command runs on every replica — so a key the
//! finder named from a stale view is simply re-checked.

use super::reader::Reader;
use super::records::{Write, WriteKind};
use super::Timestamp;
use crate::error::Result;
use crate::keys::{self, MvccRecord};
use crate::storage::WriteBatch;

/// Whether GC may collect `w` (a pending primary's record it may not).
fn keeps_nothing(w: &Write) -> bool {
    !w.pending_secondaries || crate::chaos::canary(crate::chaos::Canary::GcCollectsPendingPrimary)
}

/// Whether GC at `horizon` drops the record at `ts` of `kind`
/// (`kept_visible`: a newer put or delete at or below the horizon exists).
/// A rollback record sits at its transaction's start, and a transaction
/// starting exactly at the horizon is still admitted
/// (`RangeDescriptor::check_gc_horizon`): its rollback record must stay,
/// or its late one-command commit or prewrite would land after it was
/// settled as rolled back (seed 1927: an SDK pin held the horizon exactly
/// at such a start).
fn dropped(kind: WriteKind, ts: Timestamp, horizon: Timestamp, kept_visible: bool) -> bool {
    match kind {
        WriteKind::Rollback => ts < horizon,
        WriteKind::Delete => true,
        WriteKind::Put => kept_visible,
    }
}

/// The deletes that collect `data_key`'s garbage at `horizon`.
pub fn gc_key(r: &Reader, data_key: &[u8], horizon: Timestamp) -> Result<WriteBatch> {
    let mut wb = WriteBatch::new();
    let mut kept_visible = false;
    let mut cursor = horizon;
    while let Some((ts, w)) = r.newest_at_or_below(data_key, cursor)? {
        let kind = w.write_kind()?;
        let drop = keeps_nothing(&w) && dropped(kind, ts, horizon, kept_visible);
        // Below a delete or the newest put, nothing is visible any more.
        if matches!(kind, WriteKind::Put | WriteKind::Delete) {
            kept_visible = true;
        }
        if drop {
            wb.delete(keys::version_key(data_key, ts.0));
        }
        if ts == Timestamp::ZERO {
            break;
        }
        cursor = Timestamp(ts.0 - 1);
    }
    Ok(wb)
}

/// Collects every key's garbage in `[start, end)` (tests and tools; ranges
/// collect the keys a `GarbageFinder` named).
pub fn gc(r: &Reader, start: &[u8], end: &[u8], horizon: Timestamp) -> Result<WriteBatch> {
    let mut wb = WriteBatch::new();
    for key in r.keys_in(start, end, false)? {
        wb.append(gc_key(r, &key, horizon)?);
    }
    Ok(wb)
}

/// Names the keys holding garbage at a horizon, from raw records in key
/// order. A key has garbage unless its records at or below the horizon are
/// exactly one put.
#[derive(Debug)]
pub struct GarbageFinder {
    horizon: Timestamp,
    limit: usize,
    current: Option<Vec<u8>>,
    /// The current key has a visible version at or below the horizon (its
    /// versions arrive newest first).
    kept_visible: bool,
    garbage: bool,
    found: Vec<Vec<u8>>,
}

impl GarbageFinder {
    /// A finder that stops naming keys after `limit`.
    pub fn new(horizon: Timestamp, limit: usize) -> GarbageFinder {
        GarbageFinder {
            horizon,
            limit,
            current: None,
            kept_visible: false,
            garbage: false,
            found: Vec::new(),
        }
    }

    /// Whether it has named as many keys as it may.
    pub fn full(&self) -> bool {
        self.found.len() >= self.limit
    }

    /// One raw record (`key` as stored); anything but an MVCC version is
    /// skipped.
    pub fn record(&mut self, key: &[u8], value: &[u8]) {
        let Some((data_key, rec)) = keys::split_mvcc(key) else {
            return;
        };
        if self.current.as_deref() != Some(data_key) {
            self.flush();
            self.current = Some(data_key.to_vec());
        }
        let MvccRecord::Version(ts) = rec else {
            return;
        };
        if Timestamp(ts) > self.horizon {
            return;
        }
        // The same rule as `gc_key`, record by record, newest first.
        let decoded = Write::decode(value).and_then(|w| Ok((w.write_kind()?, w)));
        match decoded {
            Ok((kind, w)) => {
                let drop = keeps_nothing(&w)
                    && dropped(kind, Timestamp(ts), self.horizon, self.kept_visible);
                if matches!(kind, WriteKind::Put | WriteKind::Delete) {
                    self.kept_visible = true;
                }
                self.garbage |= drop;
            }
            // A record that does not decode is left for the replicated
            // check (which reports it).
            Err(_) => self.garbage = true,
        }
    }

    fn flush(&mut self) {
        if let Some(k) = self.current.take() {
            if self.garbage && !self.full() {
                self.found.push(k);
            }
        }
        self.kept_visible = false;
        self.garbage = false;
    }

    /// The keys found (at most `limit`).
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        self.flush();
        self.found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Engine, MemEngine};

    fn version(wb: &mut WriteBatch, k: &[u8], ts: u64, kind: WriteKind) {
        record(wb, k, ts, kind, false);
    }

    fn record(wb: &mut WriteBatch, k: &[u8], ts: u64, kind: WriteKind, pending: bool) {
        let w = Write {
            kind: kind as i32,
            start_ts: ts,
            value: b"v".to_vec(),
            pending_secondaries: pending,
            ..Default::default()
        };
        wb.put(keys::version_key(k, ts), w.encode());
    }

    /// The finder names exactly the keys `gc_key` collects something of.
    #[test]
    fn the_finder_names_the_keys_gc_collects() {
        let e = MemEngine::new();
        let mut wb = WriteBatch::new();
        let k = |s: &str| keys::data_key(s.as_bytes());
        version(&mut wb, &k("one-put"), 5, WriteKind::Put);
        version(&mut wb, &k("two-puts"), 5, WriteKind::Put);
        version(&mut wb, &k("two-puts"), 3, WriteKind::Put);
        version(&mut wb, &k("deleted"), 5, WriteKind::Delete);
        version(&mut wb, &k("deleted"), 3, WriteKind::Put);
        version(&mut wb, &k("new-only"), 50, WriteKind::Put);
        version(&mut wb, &k("new-only"), 40, WriteKind::Put);
        version(&mut wb, &k("rolled-back"), 4, WriteKind::Rollback);
        version(&mut wb, &k("rolled-back"), 2, WriteKind::Put);
        // A primary whose secondaries may be locked keeps its record.
        version(&mut wb, &k("pending-old"), 6, WriteKind::Put);
        record(&mut wb, &k("pending-old"), 4, WriteKind::Put, true);
        record(&mut wb, &k("pending-newest"), 5, WriteKind::Delete, true);
        version(&mut wb, &k("pending-newest"), 3, WriteKind::Put);
        // A transaction started exactly at the horizon is still admitted:
        // its rollback record stays (seed 1927).
        version(&mut wb, &k("rollback-at-horizon"), 10, WriteKind::Rollback);
        version(&mut wb, &k("rollback-at-horizon"), 7, WriteKind::Put);
        e.write(&wb, true).unwrap();
        let horizon = Timestamp(10);
        let mut f = GarbageFinder::new(horizon, 100);
        let (lo, hi) = keys::user_data_bounds();
        for (key, v) in e.scan(&lo, &hi, usize::MAX, false).unwrap() {
            f.record(&key, &v);
        }
        let found = f.finish();
        let r = Reader::new(&e);
        for key in r.keys_in(&lo, &hi, false).unwrap() {
            let collects = !gc_key(&r, &key, horizon).unwrap().is_empty();
            assert_eq!(found.contains(&key), collects, "{}", keys::display(&key));
        }
        assert_eq!(found.len(), 4);
        let dropped = gc_key(&r, &k("pending-old"), horizon).unwrap();
        assert!(dropped.is_empty(), "a pending primary record was collected");
        let at_horizon = gc_key(&r, &k("rollback-at-horizon"), horizon).unwrap();
        assert!(
            at_horizon.is_empty(),
            "the rollback at the horizon was collected"
        );
    }
}
