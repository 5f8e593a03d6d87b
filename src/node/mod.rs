//! The multi-Raft driver of one node: the `Store` owns every replica on this
//! node and the one engine they share, and drives them from a single task.
//!
//! Each loop: take up to `max_msgs_per_loop` requests and Raft messages, tick
//! if due, then handle all replicas' Readys together — one engine write and at
//! most one fsync for all ranges (group commit), then the messages that had to
//! wait for persistence, then a second (unsynced) write with what the light
//! readies applied, then answers to clients. This is the one async↔sync seam:
//! replicas are synchronous; engine writes run on the blocking pool.
//!
//! CAVEATS: the peer list is static (membership changes come with placement).

mod store;
mod transport;

pub use store::{Consistency, NodeStatus, Store, StoreConfig, StoreHandle, StoreMsg};
pub use transport::{Directory, PeerAddresses, SnapshotAssembler, Transport};
