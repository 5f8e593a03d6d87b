//! The raft-rs adapter: `LogStore` (raft::Storage over an `Engine`), group
//! configuration, and a slog→tracing bridge for raft-rs' logger.
//!
//! This layer knows Raft logs, hard state, apply state and snapshots of one
//! key span; it knows nothing of ranges, requests or MVCC. The caller (the
//! node's Store) drives each `RawNode` through raft-rs' Ready order and passes
//! one `WriteBatch` through every mutation here, so all state changes of a loop
//! land in one engine write.

mod log_store;
mod logger;
pub mod snapshot;
pub mod wire_guard;

pub use log_store::{chain_hash, ApplyState, LogStore};
pub use logger::raft_logger;
pub use snapshot::{SnapshotData, SnapshotJob, SnapshotJobs};

pub use raft::eraftpb;
pub use raft::{RawNode, StateRole};

/// Log index and term at which a freshly bootstrapped range starts. Replicas
/// created later start empty, below it, and so always receive a snapshot first.
pub const INIT_INDEX: u64 = 5;
pub const INIT_TERM: u64 = 5;

/// raft-rs configuration for one replica: election timeouts are drawn from
/// `[election_tick, 2 * election_tick)`.
///
/// raft-rs draws each new timeout from rand's thread-local generator, which
/// the simulator cannot seed; the replica overrides every draw with one from its
/// own seeded RNG (`Replica::reseed_election_timeout`) before the next tick,
/// so runs stay deterministic and timeouts are re-randomized every term (a
/// fixed timeout per replica can make two replicas tie forever: seed 43).
pub fn group_config(
    id: u64,
    applied: u64,
    heartbeat_tick: usize,
    election_tick: usize,
) -> raft::Config {
    raft::Config {
        id,
        applied,
        heartbeat_tick,
        election_tick,
        min_election_tick: election_tick,
        max_election_tick: 2 * election_tick,
        check_quorum: true,
        pre_vote: true,
        max_size_per_msg: 1024 * 1024,
        max_inflight_msgs: 256,
        max_uncommitted_size: 64 * 1024 * 1024,
        max_committed_size_per_ready: 16 * 1024 * 1024,
        batch_append: true,
        ..Default::default()
    }
}
