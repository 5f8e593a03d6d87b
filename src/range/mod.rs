//! Ranges: a range is `[start, end)` of the internal data keyspace, replicated by
//! one Raft group. This module owns the descriptor, the replicated command
//! format, the state machine (`apply`) and `Replica`: one group plus its
//! pending proposals and reads.
//!
//! Invariants:
//! - A command only touches keys inside its range; the state machine checks it
//!   deterministically and rejects (skips) a command that does not.
//! - Entry `i` is applied exactly once: `LogStore::set_applied` asserts
//!   `i == applied + 1` and is staged in the same batch as the entry's writes.
//!
//! CAVEATS: ranges are fixed (system + one user range); split and merge arrive
//! with the placement driver.

mod command;
mod descriptor;
mod replica;

pub use command::{Command, Op, OpKind, SplitCmd};
pub use descriptor::{RangeDescriptor, SYSTEM_RANGE_ID, USER_RANGE_ID};
pub use replica::{
    Completion, ReadOp, ReadResult, Replica, ReplicaChange, ReplicaStatus, Responder,
};
