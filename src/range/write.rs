//! Client writes: admission on the leader, and the state machine's apply.
//! A write's ops apply atomically and in order; `PutIfAbsent` checks run
//! against the state before the command, `PutRangeMeta` against the state
//! including the command's earlier ops.

use super::command::{Command, OpKind, WriteCmd};
use super::replica::{Admit, Replica};
use super::state_machine::{ApplyCtx, Effects, SizeChange};
use super::{Op, RangeDescriptor};
use crate::chaos::{self, Canary};
use crate::error::{Error, Result};
use crate::keys;

impl Replica {
    /// The command for a client write, if this leader may propose it.
    pub(super) fn prepare_write(&self, ops: Vec<Op>) -> Result<Command> {
        let frozen_ok = chaos::canary(Canary::MergeLosesWrites);
        self.admit(Admit {
            frozen_ok,
            ..Admit::LEADER
        })?;
        if ops.iter().any(|op| !self.desc.contains(&op.key)) {
            return Err(Error::KeyNotInRange {
                range_id: self.desc.range_id,
                span: self.span(),
            });
        }
        if ops
            .iter()
            .any(|op| op.key.first() == Some(&keys::USER_DATA))
        {
            return Err(Error::Internal(
                "user data is versioned: it is written by timestamped writes".into(),
            ));
        }
        Ok(Command::write(ops))
    }
}

/// Applies a client write.
pub(super) fn apply(cmd: &WriteCmd, ctx: &ApplyCtx) -> Result<Effects> {
    let desc = ctx.desc;
    let frozen = desc.frozen && !chaos::canary(Canary::MergeLosesWrites);
    if frozen || cmd.ops.iter().any(|op| !desc.contains(&op.key)) {
        // The range split, or froze for a merge, after the write was
        // proposed: nothing is written; the client retries.
        return Err(desc.epoch_mismatch());
    }
    let mut kinds = Vec::with_capacity(cmd.ops.len());
    for op in &cmd.ops {
        let kind = OpKind::try_from(op.kind).map_err(|_| {
            Error::Internal(format!(
                "a committed write holds op kind {} that this build does not know",
                op.kind
            ))
        })?;
        if kind == OpKind::PutIfAbsent && ctx.reader.exists(&op.key)? {
            return Err(Error::InvalidArgument("key already exists".into()));
        }
        kinds.push(kind);
    }
    let mut fx = Effects::default();
    let mut bytes = 0u64;
    for (op, kind) in cmd.ops.iter().zip(kinds) {
        bytes += (op.key.len() + op.value.len()) as u64;
        match kind {
            OpKind::Put | OpKind::PutIfAbsent => fx.writes.put(op.key.clone(), op.value.clone()),
            OpKind::Delete => fx.writes.delete(op.key.clone()),
            OpKind::PutRangeMeta => {
                let new = RangeDescriptor::directory_epoch(&op.value);
                let current = ctx.read_after(&fx.writes, &op.key)?;
                let old = current
                    .as_deref()
                    .and_then(RangeDescriptor::directory_epoch);
                if new.is_some() && (old.is_none() || new > old) {
                    fx.writes.put(op.key.clone(), op.value.clone());
                }
            }
        }
    }
    fx.size = SizeChange::Grew(bytes);
    Ok(fx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys;
    use crate::range::state_machine::{self, Applied};
    use crate::storage::{Engine, MemEngine, Overlay, WriteBatch};

    fn run(cmd: &Command, engine: &MemEngine, staged: &WriteBatch) -> Applied {
        run_in(1, cmd, engine, staged)
    }

    /// Applies `cmd` to initial range `i` (0: system, 1: user).
    fn run_in(i: usize, cmd: &Command, engine: &MemEngine, staged: &WriteBatch) -> Applied {
        let desc = RangeDescriptor::initial(vec![1])[i].clone();
        let ctx = ApplyCtx {
            node_id: 1,
            desc: &desc,
            voters: &[1],
            learners: &[],
            reader: Overlay::new(staged, engine),
        };
        state_machine::apply(cmd, &ctx).unwrap()
    }

    #[test]
    fn a_write_stages_its_ops_and_a_foreign_key_is_refused_whole() {
        let cmd = Command::write(vec![
            Op::put(keys::data_key(b"a"), b"1".to_vec()),
            Op::delete(keys::data_key(b"b")),
        ]);
        let cmd = Command::decode(&cmd.encode()).unwrap();
        let e = MemEngine::new();
        let a = run(&cmd, &e, &WriteBatch::new());
        assert!(a.response.is_ok());
        assert_eq!(a.effects.writes.len(), 2);
        let bad = Command::write(vec![
            Op::put(keys::data_key(b"ok"), vec![]),
            Op::put(keys::data_key(b"_/x"), vec![]),
        ]);
        let a = run(&bad, &e, &WriteBatch::new());
        assert!(matches!(a.response, Err(Error::EpochMismatch { .. })));
        assert!(
            a.effects.writes.is_empty(),
            "a refused command writes nothing"
        );
    }

    /// Defect (issue 9): `WriteBatch::last_put` answered "not in this batch"
    /// for a key deleted earlier in the batch, so PutIfAbsent read the stale
    /// engine value — and whether it succeeded depended on how entries were
    /// grouped into one Ready. Failed before the fix with
    /// `Err(InvalidArgument("key already exists"))`.
    #[test]
    fn put_if_absent_sees_a_delete_staged_earlier_in_the_same_batch() {
        let e = MemEngine::new();
        let k = keys::data_key(b"k");
        let mut w = WriteBatch::new();
        w.put(k.clone(), b"old".to_vec());
        e.write(&w, true).unwrap();
        let delete = Command::write(vec![Op::delete(k.clone())]);
        let insert = Command::write(vec![Op::put_if_absent(k.clone(), b"new".to_vec())]);
        // Both entries in one Ready: the first one's effects are staged.
        let mut staged = WriteBatch::new();
        staged.append(run(&delete, &e, &WriteBatch::new()).effects.writes);
        let together = run(&insert, &e, &staged);
        assert!(together.response.is_ok(), "{:?}", together.response);
        // In two Readys (the delete written first): the same answer.
        e.write(&staged, false).unwrap();
        let apart = run(&insert, &e, &WriteBatch::new());
        assert!(apart.response.is_ok());
        // And a key that exists is refused, deterministically.
        let again = run(&insert, &e, &together.effects.writes);
        assert!(matches!(again.response, Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn a_range_meta_put_keeps_the_newest_epoch() {
        let e = MemEngine::new();
        let mut d = RangeDescriptor::initial(vec![1])[1].clone();
        d.version = 5;
        let newer = Op::put_range_meta(&d);
        d.version = 4;
        let older = Op::put_range_meta(&d);
        let cmd = Command::write(vec![newer, older]);
        let a = run_in(0, &cmd, &e, &WriteBatch::new());
        assert!(a.response.is_ok(), "{:?}", a.response);
        assert_eq!(a.effects.writes.len(), 1, "the older one is skipped");
    }
}
