//! Storage engines: one narrow trait, two implementations.
//!
//! `Engine` is `&self` (RocksDB is concurrent): atomic `WriteBatch`es with a
//! sync flag, point reads, bounded ordered scans in both directions,
//! forward visits (a cursor that lends each pair to a callback, which may
//! seek ahead: how MVCC reads step over old versions without copying
//! them), and consistent snapshots. `RocksEngine` (production, not in sim builds) and
//! `MemEngine` (tests and simulation) must behave alike; one conformance suite
//! (`conformance.rs`) runs against both.
//!
//! Reads during apply go through `Overlay` (a batch staged over the engine),
//! which tells a key put, deleted or untouched by the batch.
//!
//! Durability model, shared by both: a batch written with `sync = true` is
//! durable together with every batch written before it; unsynced batches may be
//! lost in a crash (MemEngine::crash drops exactly those).

mod batch;
#[cfg(test)]
mod conformance;
pub mod memory;
#[cfg(not(madsim))]
pub mod rocks;

pub use batch::{BatchOp, Overlay, Staged, WriteBatch};
pub use memory::MemEngine;
#[cfg(not(madsim))]
pub use rocks::RocksEngine;

use crate::error::Result;

/// A key and its value.
pub type KvPair = (Vec<u8>, Vec<u8>);

/// A key and its value inside a protobuf message (replicated commands,
/// snapshots).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Pair {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// What a `visit` callback wants next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The next pair in order.
    Next,
    /// The first pair at or after this key (above the one just visited):
    /// skips what lies between without reading it.
    Seek(Vec<u8>),
    /// No more pairs.
    Stop,
}

/// A `visit` callback: borrows each pair (no copy) and says what next.
pub type Visitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<Step> + 'a;

/// An ascending bounded scan from a key, at most so many pairs (what
/// `visit_chunked` reads through).
pub type ScanFrom<'a> = dyn Fn(&[u8], usize) -> Result<Vec<KvPair>> + 'a;

/// A consistent, read-only view of the engine at one point in time.
pub trait Snapshot: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Up to `limit` pairs with `start <= key < end` (empty `end`: unbounded),
    /// ascending, or descending from the end when `reverse`.
    fn scan(&self, start: &[u8], end: &[u8], limit: usize, reverse: bool) -> Result<Vec<KvPair>>;
    /// Calls `f` on the pairs with `start <= key < end` (empty `end`:
    /// unbounded) in ascending order, borrowed, until it says `Stop` or the
    /// span ends; `Seek` skips ahead. Engines with a cursor walk one
    /// iterator; the default reads in growing chunks through `scan`.
    fn visit(&self, start: &[u8], end: &[u8], f: &mut Visitor) -> Result<()> {
        visit_chunked(&|from, n| self.scan(from, end, n, false), start, f)
    }
}

/// A key-value storage engine.
pub trait Engine: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Same contract as `Snapshot::scan`, on the latest state.
    fn scan(&self, start: &[u8], end: &[u8], limit: usize, reverse: bool) -> Result<Vec<KvPair>>;
    /// Applies the batch atomically; with `sync`, returns only once it (and
    /// everything written before it) is durable.
    fn write(&self, batch: &WriteBatch, sync: bool) -> Result<()>;
    fn snapshot(&self) -> Result<Box<dyn Snapshot>>;
    /// Same contract as `Snapshot::visit`, on the latest state.
    fn visit(&self, start: &[u8], end: &[u8], f: &mut Visitor) -> Result<()> {
        visit_chunked(&|from, n| self.scan(from, end, n, false), start, f)
    }
    /// Extra time a synced write takes (the simulator's slow-disk fault);
    /// real engines spend it inside `write` and report zero.
    fn sync_latency(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
    /// Whether the engine holds no keys at all.
    fn is_empty(&self) -> Result<bool> {
        Ok(self.scan(&[], &[], 1, false)?.is_empty())
    }
}

/// How a run of pairs fed to a visitor ended.
pub(crate) enum Fed {
    /// Every pair was visited.
    Ended,
    /// The visitor asked to continue at this key.
    Seek(Vec<u8>),
    /// The visitor said stop.
    Stopped,
}

/// Feeds `pairs` to `f` until it seeks or stops.
pub(crate) fn feed<'a>(
    pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    f: &mut Visitor,
) -> Result<Fed> {
    for (k, v) in pairs {
        match f(k, v)? {
            Step::Next => {}
            Step::Seek(to) => return Ok(Fed::Seek(to)),
            Step::Stop => return Ok(Fed::Stopped),
        }
    }
    Ok(Fed::Ended)
}

/// Pairs a chunked visit reads first (most visits stop early), and at most.
const VISIT_FIRST_CHUNK: usize = 4;
const VISIT_MAX_CHUNK: usize = 64;

/// `visit` over an ascending bounded scan (`scan(from, limit)`): chunks of
/// 4, 16, then 64 pairs; a `Seek` starts a new chunk at its key.
pub fn visit_chunked(scan: &ScanFrom, start: &[u8], f: &mut Visitor) -> Result<()> {
    let mut from = start.to_vec();
    let mut want = VISIT_FIRST_CHUNK;
    loop {
        let chunk = scan(&from, want)?;
        let pairs = chunk.iter().map(|(k, v)| (k.as_slice(), v.as_slice()));
        match (feed(pairs, f)?, chunk.last()) {
            (Fed::Stopped, _) => return Ok(()),
            (Fed::Seek(to), _) => from = to,
            (Fed::Ended, Some((k, _))) if chunk.len() == want => {
                from = k.clone();
                from.push(0);
                want = (want * 4).min(VISIT_MAX_CHUNK);
            }
            _ => return Ok(()),
        }
    }
}
