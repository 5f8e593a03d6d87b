//! The state machine: a pure function from a replicated command and the
//! replicated state (read through `Overlay`) to the command's answer and its
//! effects. It does no IO and mutates nothing: the replica merges the
//! returned `Effects` into the loop's write batch and its in-memory state.
//!
//! Determinism contract: `apply` returns
//! - `Ok(Applied { response: Ok(()), effects })` — the command applied;
//! - `Ok(Applied { response: Err(e), .. })` with `e.is_deterministic()` —
//!   the command is refused by every replica alike (a key that exists, a
//!   stale epoch); the entry counts as applied with no effects;
//! - `Err(e)` — this node failed (an engine read failed, a command of a
//!   kind this build does not know): the caller stops the node and never
//!   counts the entry as applied, so no replica diverges.

use super::command::{Command, Kind};
use super::{gc, merge, split, timestamped, txn, write, RangeDescriptor};
use crate::chaos::Canary;
use crate::error::{Error, Result};
use crate::storage::{Overlay, Staged, WriteBatch};

/// What the state machine may look at while applying one entry.
pub struct ApplyCtx<'a> {
    pub node_id: u64,
    /// The range as of the previous entry.
    pub desc: &'a RangeDescriptor,
    /// The range's applied membership.
    pub voters: &'a [u64],
    pub learners: &'a [u64],
    /// The engine as it will be once this loop's batch (so far) is written.
    pub reader: Overlay<'a>,
}

impl ApplyCtx<'_> {
    /// Reads `key` as an entry sees it after the writes it staged so far.
    pub fn read_after(&self, own: &WriteBatch, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match own.staged(key) {
            Staged::Put(v) => Ok(Some(v.to_vec())),
            Staged::Deleted => Ok(None),
            Staged::Untouched => self.reader.get(key),
        }
    }
}

/// A range the merge absorbed: its id, span and final version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Absorbed {
    pub range_id: u64,
    pub start: Vec<u8>,
    pub end: Vec<u8>,
    pub version: u64,
}

/// How an entry changed the range's approximate size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SizeChange {
    #[default]
    Unchanged,
    /// About this many bytes were written.
    Grew(u64),
    /// The range split: about half stays.
    Halved,
}

/// What applying one command does, for the replica to carry out.
#[derive(Debug, Default)]
pub struct Effects {
    /// Engine writes, staged into the loop's batch.
    pub writes: WriteBatch,
    /// The range's new descriptor (its copy is among `writes`).
    pub desc: Option<RangeDescriptor>,
    /// A range a split created on this node (bootstrapped in `writes`).
    pub created: Option<RangeDescriptor>,
    /// A range a merge absorbed: the node drops its replica of it.
    pub absorbed: Option<Absorbed>,
    pub size: SizeChange,
}

/// A command's answer and effects.
#[derive(Debug)]
pub struct Applied {
    pub response: Result<()>,
    pub effects: Effects,
}

/// Applies `cmd` (see the module docs for the contract).
pub fn apply(cmd: &Command, ctx: &ApplyCtx) -> Result<Applied> {
    let result = match &cmd.kind {
        Some(Kind::Write(w)) => write::apply(w, ctx),
        Some(Kind::Split(s)) => split::apply(s, ctx),
        Some(Kind::Freeze(f)) => merge::apply_freeze(f, ctx),
        Some(Kind::Merge(m)) => merge::apply_merge(m, ctx),
        Some(Kind::OnePc(w)) => timestamped::apply(w, ctx),
        Some(Kind::Gc(g)) => gc::apply(g, ctx),
        Some(Kind::Prewrite(p)) => txn::apply_prewrite(p, ctx),
        Some(Kind::Finish(f)) => txn::apply_finish(f, ctx),
        Some(Kind::CheckTxn(c)) => txn::apply_check(c, ctx),
        Some(Kind::Heartbeat(h)) => txn::apply_heartbeat(h, ctx),
        None => Err(Error::Internal(
            "a committed entry holds a command of a kind this build does not know \
             (a newer node proposed it); stopping rather than skipping it"
                .into(),
        )),
    };
    match result {
        Ok(effects) => Ok(Applied {
            response: Ok(()),
            effects,
        }),
        Err(e) if e.is_deterministic() || crate::chaos::canary(Canary::ApplyErrorSkipsEntry) => {
            Ok(Applied {
                response: Err(e),
                effects: Effects::default(),
            })
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys;
    use crate::range::Op;
    use crate::storage::{Engine, KvPair, MemEngine, Snapshot};

    /// An engine whose reads fail: a transient disk error on this node.
    struct FailingReads(MemEngine);

    impl Engine for FailingReads {
        fn get(&self, _: &[u8]) -> Result<Option<Vec<u8>>> {
            Err(Error::Storage("injected read error".into()))
        }
        fn scan(&self, s: &[u8], e: &[u8], l: usize, r: bool) -> Result<Vec<KvPair>> {
            self.0.scan(s, e, l, r)
        }
        fn write(&self, b: &WriteBatch, sync: bool) -> Result<()> {
            self.0.write(b, sync)
        }
        fn snapshot(&self) -> Result<Box<dyn Snapshot>> {
            self.0.snapshot()
        }
    }

    /// Defect (issue 9): an engine error while applying was returned to the
    /// client as the command's answer and the entry counted as applied, so
    /// one replica with a transient disk error diverged. Now it is a node
    /// failure (`Err`), which stops the node; only deterministic refusals
    /// are answers. Before the fix the replica-level test applied the entry
    /// ("drive returned Ok(1), applied 6 -> 7"); see also the golden script
    /// `apply_error_stops_the_node`.
    #[test]
    fn an_engine_error_is_a_node_failure_and_a_refusal_is_an_answer() {
        let desc = RangeDescriptor::initial(vec![1])[1].clone();
        let staged = WriteBatch::new();
        let failing = FailingReads(MemEngine::new());
        let ctx = ApplyCtx {
            node_id: 1,
            desc: &desc,
            voters: &[1],
            learners: &[],
            reader: Overlay::new(&staged, &failing),
        };
        let insert = Command::write(vec![Op::put_if_absent(keys::data_key(b"k"), b"v".to_vec())]);
        let err = apply(&insert, &ctx).unwrap_err();
        assert!(
            matches!(err, Error::Storage(_)) && !err.is_deterministic(),
            "{err}"
        );
        // A command outside the range is refused the same way everywhere.
        let outside = Command::write(vec![Op::put(keys::data_key(b"_/x"), vec![])]);
        let a = apply(&outside, &ctx).unwrap();
        assert!(matches!(a.response, Err(Error::EpochMismatch { .. })));
        // A command of a kind this build does not know stops the node.
        let unknown = Command { id: 1, kind: None };
        assert!(apply(&unknown, &ctx).is_err());
    }
}
