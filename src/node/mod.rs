//! The multi-Raft driver of one node.
//!
//! `Store` is a synchronous core that owns every replica on this node and
//! the one engine they share; `StoreTask` is its async shell (mailbox,
//! ticks, engine writes on the blocking pool, transport); `StoreHandle` is
//! the API the server calls. The golden-script harness (`harness`, tests
//! only) drives the same core synchronously, several nodes and a network
//! in one test.
//!
//! One loop of the task: take up to `max_msgs_per_loop` requests and Raft
//! messages (`dispatch`, `raft_in`), tick if due (`hibernate`,
//! `split_check`), then run Ready rounds (`ready`): every replica's Ready
//! in ONE engine write with at most one fsync (group commit), the messages
//! that had to wait for persistence, a second (unsynced) write with what
//! the light readies applied, then the answers.
//!
//! Files, by concern: `store.rs` (the core's state, open, routing
//! helpers), `dispatch.rs` (one method per message), `raft_in.rs` (which
//! Raft traffic reaches a replica), `router.rs` (key -> replica, a sorted
//! map), `lifecycle.rs` (create, destroy, tombstones), `cover.rs` (spans
//! taken by merges and snapshots in a round), `split_check.rs` (size and
//! load), `hibernate.rs` (ticks, pings), `range_ids.rs`, `ready.rs`,
//! `task.rs`, `handle.rs`, `transport.rs`.
//!
//! Invariants:
//! - No two initialized replicas on a node overlap (`Router` asserts it).
//! - The Store task never writes the engine directly: every write is part
//!   of a round's batch, written on the blocking pool; whole-range reads
//!   (size measurements, a frozen range's data) run off the task too.
//! - A range id is durably reserved before a split proposes it.
//! - Replicas created over a tombstone do not vote until they hold a newer
//!   membership than the one that removed them.
//!
//! CAVEATS: node ids double as Raft peer ids (tombstones and the no-vote
//! rule keep it safe; a per-incarnation replica id would make it safe by
//! construction); user reads run on the Store task (bounded by the scan
//! limit); MemEngine snapshots copy the whole map.

mod cover;
mod dispatch;
mod gc;
mod handle;
#[cfg(test)]
mod harness;
mod hibernate;
mod lifecycle;
mod raft_in;
mod range_ids;
mod ready;
mod router;
mod split_check;
mod store;
mod task;
mod transport;

pub use handle::{Consistency, NodeStatus, StoreHandle, StoreMsg};
pub use ready::Round;
pub use split_check::{measure, MeasureRequest, Measurement};
pub use store::{Store, StoreConfig};
pub use task::StoreTask;
pub use transport::{Directory, PeerAddresses, SnapshotAssembler, Transport, MAX_SNAPSHOT_BYTES};
