//! Ranges: a range is `[start, end)` of the internal data keyspace,
//! replicated by one Raft group. This module owns the descriptor and its
//! epoch, the replicated command (a typed sum), the state machine, and
//! `Replica`: one group plus the proposals and reads waiting on it.
//!
//! Layout, by operation — each operation keeps its proposal and its apply
//! side together:
//! - `replica.rs`: the struct, `open`, the one admission check (`admit`:
//!   leader? frozen? epoch?) and the proposal dispatcher (`propose`);
//! - `command.rs`: what a log entry carries; `state_machine.rs`: the pure
//!   `apply` (command + overlay of batch over engine -> answer + effects);
//! - `write.rs`, `split.rs`, `merge.rs` (freeze and merge),
//!   `membership.rs` (ConfChangeV2 and leader transfer): one operation each;
//!   `timestamped.rs` (MVCC writes of user data and the leader's read
//!   floor); transaction commands will be files of their own beside them;
//! - `read.rs` (ReadIndex, leased and local reads), `lease.rs` (the
//!   leader's read lease and why it is safe), `ready.rs` (the two Ready
//!   phases, applying entries), `hibernate.rs` (ticks and idle sleep).
//!
//! Invariants:
//! - A command only touches keys inside its range; the state machine checks
//!   it deterministically and every replica refuses one that does not.
//! - Entry `i` is applied exactly once and in order: `LogStore::set_applied`
//!   asserts `i == applied + 1`, staged in the same batch as the entry's
//!   effects.
//! - Apply is deterministic: errors are either the state machine's answer
//!   (`Error::is_deterministic`, the same on every replica) or this node's
//!   failure, which stops the node without counting the entry as applied.
//! - Reads during apply see the loop's staged writes (`storage::Overlay`),
//!   so the outcome never depends on how entries were grouped into Readys.
//! - A descriptor's epoch (`version`, `conf_ver`) never decreases, and the
//!   Raft group replicates exactly the descriptor's span (asserted).
//!
//! CAVEATS: a merge carries the absorbed range's data in one entry (bounded
//! by `merge_max_bytes`); node ids double as Raft peer ids (see `node`).

mod command;
mod deferred;
mod descriptor;
mod gc;
mod hibernate;
mod history;
mod lease;
mod membership;
mod merge;
mod read;
mod ready;
mod replica;
mod split;
pub mod state_machine;
mod timestamped;
mod txn;
mod write;

pub use crate::api::ReplicaChange;
pub use command::{
    CheckTxnCmd, Command, FinishCmd, FreezeCmd, GcCmd, HeartbeatCmd, KeySpan, Kind, MergeCmd,
    OnePcCmd, Op, OpKind, PrewriteCmd, SplitCmd, WriteCmd,
};
pub use descriptor::{RangeDescriptor, SYSTEM_RANGE_ID, USER_RANGE_ID};
pub use lease::{lease_length, LeaseConfig};
pub use read::{ReadOp, ReadResult};
pub use replica::{Completion, Replica, ReplicaConfig, ReplicaStatus, Request, Responder};
pub use timestamped::{txn_error, ReadFloor};
