//! Two-phase commit on a range: prewrite (lock), finish (commit or roll
//! back locks: the coordinator's second phase, and lock resolution), and
//! check-txn (settle a transaction's primary: roll back an expired lock, or
//! mark a transaction that left nothing rolled back), and heartbeat (keep a
//! committing transaction's primary lock alive). Each is one
//! replicated command computed by `mvcc` from the replicated state, so
//! every replica reaches the same answer; refusals are deterministic errors
//! (`KeyLocked`, `WriteConflict`, `TxnAborted`, `TxnCommitted`).
//!
//! No read-floor check is needed here (Percolator): a reader at `T` either
//! ran before the prewrite applied — then the commit timestamp, taken after
//! the prewrite, is above `T` — or it meets the lock and resolves it.

use super::command::{CheckTxnCmd, Command, FinishCmd, HeartbeatCmd, Kind, PrewriteCmd};
use super::replica::{Admit, Replica};
use super::state_machine::{ApplyCtx, Effects, SizeChange};
use super::timestamped::{mutations, ops_bytes, txn_error};
use crate::api::Timestamp;
use crate::chaos::{self, Canary};
use crate::error::{Error, Result};
use crate::keys;
use crate::mvcc::{self, Reader};

impl Replica {
    /// The command for a transaction step on `keys`, if this leader may
    /// propose it.
    pub(super) fn prepare_txn(&self, kind: Kind) -> Result<Command> {
        // The canary lets steps into a range frozen for a merge (lost).
        self.admit(Admit {
            frozen_ok: chaos::canary(Canary::MergeLosesWrites),
            ..Admit::LEADER
        })?;
        let keys: Vec<&[u8]> = match &kind {
            Kind::Prewrite(p) => p.ops.iter().map(|o| o.key.as_slice()).collect(),
            Kind::Finish(f) => f.keys.iter().map(Vec::as_slice).collect(),
            Kind::CheckTxn(c) => vec![c.primary.as_slice()],
            Kind::Heartbeat(h) => vec![h.primary.as_slice()],
            _ => return Err(Error::Internal("not a transaction step".into())),
        };
        for k in keys {
            if !self.desc.contains(k) {
                return Err(Error::KeyNotInRange {
                    range_id: self.desc.range_id,
                    span: self.span(),
                });
            }
            if k.first() != Some(&keys::USER_DATA) {
                return Err(Error::Internal(
                    "a transaction step on a key outside the user keyspace".into(),
                ));
            }
        }
        Ok(Command::new(kind))
    }
}

fn check_span<'a>(ctx: &ApplyCtx, keys: impl IntoIterator<Item = &'a [u8]>) -> Result<()> {
    let desc = ctx.desc;
    let frozen = desc.frozen && !chaos::canary(Canary::MergeLosesWrites);
    if frozen || keys.into_iter().any(|k| !desc.contains(k)) {
        return Err(desc.epoch_mismatch());
    }
    Ok(())
}

pub(super) fn apply_prewrite(cmd: &PrewriteCmd, ctx: &ApplyCtx) -> Result<Effects> {
    check_span(ctx, cmd.ops.iter().map(|o| o.key.as_slice()))?;
    ctx.desc.check_gc_horizon(cmd.start_ts)?;
    let muts = mutations(&cmd.ops)?;
    let bytes = ops_bytes(&cmd.ops);
    let r = Reader::new(&ctx.reader);
    let start = Timestamp(cmd.start_ts);
    match mvcc::prewrite(&r, &muts, &cmd.primary, start, cmd.ttl_ms)? {
        Ok(writes) => Ok(Effects {
            writes,
            size: SizeChange::Grew(bytes),
            ..Effects::default()
        }),
        Err(e) => Err(txn_error(e)),
    }
}

pub(super) fn apply_finish(cmd: &FinishCmd, ctx: &ApplyCtx) -> Result<Effects> {
    check_span(ctx, cmd.keys.iter().map(Vec::as_slice))?;
    let r = Reader::new(&ctx.reader);
    let start = Timestamp(cmd.start_ts);
    if cmd.secondaries_done {
        let mut writes = crate::storage::WriteBatch::new();
        for (i, k) in cmd.keys.iter().enumerate() {
            let start = cmd.done_starts.get(i).map_or(start, |s| Timestamp(*s));
            writes.append(mvcc::secondaries_done(&r, k, start)?);
        }
        return Ok(Effects {
            writes,
            ..Effects::default()
        });
    }
    // Neither a rollback nor a commit is decided from records GC may
    // have collected: a commit retried after its first attempt landed
    // finds nothing once later writes superseded the record (seed 2039).
    for k in &cmd.keys {
        check_nothing_left(&r, k, start, ctx)?;
    }
    let outcome = if cmd.commit_ts == 0 {
        mvcc::rollback(&r, &cmd.keys, start)?
    } else {
        let commit = Timestamp(cmd.commit_ts);
        mvcc::commit(&r, &cmd.keys, start, commit, cmd.primary_of_many)?
    };
    match outcome {
        Ok(writes) => Ok(Effects {
            writes,
            ..Effects::default()
        }),
        Err(e) => Err(txn_error(e)),
    }
}

/// Refuses, below the range's GC horizon, to decide anything from the
/// absence of the transaction's records on `key`: GC may have collected a
/// committed one (a lock resolution never gets here: a primary with locked
/// secondaries keeps its record, `mvcc::Write::pending_secondaries`).
fn check_nothing_left(r: &Reader, key: &[u8], start: Timestamp, ctx: &ApplyCtx) -> Result<()> {
    if start.0 >= ctx.desc.gc_horizon {
        return Ok(());
    }
    let locked = r.lock(key)?.is_some_and(|l| l.start() == start);
    if locked || r.by_txn(key, start)?.is_some() {
        return Ok(());
    }
    Err(Error::TxnTooOld(format!(
        "the transaction started at {start} left nothing on range {} and is below its GC horizon: \
         its outcome can no longer be told",
        ctx.desc.range_id
    )))
}

pub(super) fn apply_check(cmd: &CheckTxnCmd, ctx: &ApplyCtx) -> Result<Effects> {
    check_span(ctx, [cmd.primary.as_slice()])?;
    let r = Reader::new(&ctx.reader);
    if cmd.lost_reply {
        check_nothing_left(&r, &cmd.primary, Timestamp(cmd.start_ts), ctx)?;
    }
    let (_, writes) = mvcc::check_status(
        &r,
        &cmd.primary,
        Timestamp(cmd.start_ts),
        Timestamp(cmd.now_ts),
    )?;
    Ok(Effects {
        writes,
        ..Effects::default()
    })
}

pub(super) fn apply_heartbeat(cmd: &HeartbeatCmd, ctx: &ApplyCtx) -> Result<Effects> {
    check_span(ctx, [cmd.primary.as_slice()])?;
    let r = Reader::new(&ctx.reader);
    match mvcc::heartbeat(&r, &cmd.primary, Timestamp(cmd.start_ts), cmd.ttl_ms)? {
        Ok(writes) => Ok(Effects {
            writes,
            ..Effects::default()
        }),
        Err(e) => Err(txn_error(e)),
    }
}
