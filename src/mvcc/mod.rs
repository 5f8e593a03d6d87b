//! MVCC: every user key keeps its versions by commit timestamp, plus at most
//! one lock. This module owns the record formats (`records.rs`; their keys
//! are `keys::lock_key` / `keys::version_key`), reads at a timestamp
//! (`reader.rs`) and the transaction actions (`txn.rs`). It does no IO: reads
//! go through a `Source`, and every action returns a `WriteBatch` for a
//! Raft command to apply — so every replica computes the same writes.
//!
//! The protocol it supports is Percolator's two-phase commit plus read
//! validation (`../shared/ARCHITECTURE.md`, Transactions):
//! 1. a transaction reads at `start_ts` (a lock of a transaction started at
//!    or below `start_ts` must be resolved first: it may commit below it);
//! 2. `prewrite` locks every written key, failing on a foreign lock or on a
//!    write committed at or above `start_ts`;
//! 3. with a `commit_ts` from the oracle, `validate` checks that nothing it
//!    read (keys and scanned spans) changed in `(start_ts, commit_ts]` and
//!    that no other transaction holds a lock there — the check that makes
//!    the result serializable (write skew is caught), and strictly so with
//!    timestamps from one monotonic oracle;
//! 4. `commit` on the primary key is the commit point; secondaries follow
//!    (readers roll them forward through the primary: `check_status`,
//!    `resolve`);
//! 5. `rollback` leaves a rollback record at `start_ts`, so a late prewrite
//!    or commit of the rolled-back transaction fails.
//!
//! A transaction confined to one range needs no locks: `one_pc` validates
//! and writes its versions in one command.
//!
//! Invariants: at most one lock per key; a key's versions are unique by
//! commit timestamp (timestamps come from one oracle); a version's
//! `start_ts` names the transaction that wrote it; `gc` never removes the
//! newest version at or below its horizon unless that is a delete.
//!
//! Each Put's write record also carries the key's etcd-style metadata,
//! fixed when it is written: the commit timestamp that created the key,
//! its version count, and its lease (`txn::versioned`). `history.rs`
//! reads a span's versions in `(since, at]` for watches.
//!
//! Reads walk one engine cursor (`Source::visit`): a point read stops at
//! the first record that decides; a forward scan, once a key's visible
//! version is found, steps over a few older ones and seeks past the rest,
//! so its cost follows the keys it returns, not the versions GC keeps.
//!
//! CAVEATS: a reversed scan still reads every version record of its span
//! (a key's versions come oldest first that way); values live inline in
//! locks and write records (at most 1 MiB).
//! Garbage collection (`gc.rs`) is a replicated command over keys a
//! leader's off-task scan found (`GarbageFinder`); every replica re-checks
//! each key at the horizon, so replicas stay identical.

mod gc;
mod history;
mod reader;
mod records;
mod txn;

#[cfg(test)]
mod tests;

pub use crate::api::{Timestamp, LOGICAL_BITS};
pub use gc::{gc, gc_key, GarbageFinder};
pub use history::{Event, History};
pub use reader::{Change, Item, LockedKey, Reader, Seen, Source, Visible};
pub use records::{Lock, Write, WriteKind};
pub use txn::{
    check_status, commit, heartbeat, one_pc, prewrite, resolve, rollback, secondaries_done,
    validate, Mutation, Outcome, TxnError, TxnStatus,
};
