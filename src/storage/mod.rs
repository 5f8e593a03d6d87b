//! Storage engines: one narrow trait, two implementations.
//!
//! `Engine` is `&self` (RocksDB is concurrent): atomic `WriteBatch`es with a
//! sync flag, point reads, bounded ordered scans in both directions, and
//! consistent snapshots. `RocksEngine` (production, not in sim builds) and
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
