//! Storage engines: one narrow trait, two implementations.
//!
//! `Engine` is `&self` (RocksDB is concurrent): atomic `WriteBatch`es with a
//! sync flag, point reads, bounded ordered scans in both directions, and
//! consistent snapshots. `RocksEngine` (production, not in sim builds) and
//! `MemEngine` (tests and simulation) must behave alike; one conformance suite
//! (`conformance.rs`) runs against both.
//!
//! Durability model, shared by both: a batch written with `sync = true` is
//! durable together with every batch written before it; unsynced batches may be
//! lost in a crash (MemEngine::crash drops exactly those).

#[cfg(test)]
mod conformance;
pub mod memory;
#[cfg(not(madsim))]
pub mod rocks;

pub use memory::MemEngine;
#[cfg(not(madsim))]
pub use rocks::RocksEngine;

use crate::error::Result;

/// A key and its value.
pub type KvPair = (Vec<u8>, Vec<u8>);

/// One mutation inside a `WriteBatch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    /// Deletes every key in `[start, end)`.
    DeleteRange(Vec<u8>, Vec<u8>),
}

/// Mutations applied atomically, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
    bytes: usize,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        let (k, v) = (key.into(), value.into());
        self.bytes += k.len() + v.len();
        self.ops.push(BatchOp::Put(k, v));
    }
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        let k = key.into();
        self.bytes += k.len();
        self.ops.push(BatchOp::Delete(k));
    }
    pub fn delete_range(&mut self, start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) {
        let (s, e) = (start.into(), end.into());
        self.bytes += s.len() + e.len();
        self.ops.push(BatchOp::DeleteRange(s, e));
    }
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    /// Approximate payload size in bytes.
    pub fn size_bytes(&self) -> usize {
        self.bytes
    }
    /// The value of the last put of `key` in this batch, if it is put (and
    /// not deleted afterwards).
    pub fn last_put(&self, key: &[u8]) -> Option<&[u8]> {
        for op in self.ops.iter().rev() {
            match op {
                BatchOp::Put(k, v) if k == key => return Some(v),
                BatchOp::Delete(k) if k == key => return None,
                BatchOp::DeleteRange(s, e) if s.as_slice() <= key && key < e.as_slice() => {
                    return None
                }
                _ => {}
            }
        }
        None
    }

    pub fn append(&mut self, other: WriteBatch) {
        self.bytes += other.bytes;
        self.ops.extend(other.ops);
    }
}

/// A consistent, read-only view of the engine at one point in time.
pub trait Snapshot: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Up to `limit` pairs with `start <= key < end` (empty `end`: unbounded),
    /// ascending, or descending from the end when `reverse`.
    fn scan(&self, start: &[u8], end: &[u8], limit: usize, reverse: bool) -> Result<Vec<KvPair>>;
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
