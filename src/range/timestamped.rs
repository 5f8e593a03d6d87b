//! Timestamped (MVCC) writes of user data, and the leader's read floor that
//! keeps reads at a timestamp stable.
//!
//! User data is versioned (`mvcc`): a write lands as versions at a commit
//! timestamp from the oracle, in one command (`OnePcCmd`, `mvcc::one_pc`).
//! System data (`_/…`) stays plain (`write.rs`).
//!
//! **The read floor.** A read at `T` must see every write that will ever
//! commit at or below `T`. The leader keeps `max_read_ts`, the highest
//! timestamp it served a read (or a validation) at, and
//! - refuses a write proposed at or below it (`StaleTimestamp`: nothing is
//!   written; the server retries with a fresh timestamp, which is above
//!   every read already registered — the oracle is monotonic in real time);
//! - makes a read at `T` wait until everything proposed before the read
//!   registered is applied (`wait_index`), so an in-flight write below `T`
//!   is seen.
//!
//! **Seeding.** A new leader does not know which reads its predecessor
//! served, so it refuses timestamped writes until one arrives whose
//! timestamp was taken after it refused one *in its current term*
//! (`seed_term`). Such a timestamp is above every read of the predecessor:
//! each of those was confirmed by a quorum (ReadIndex) before any of that
//! quorum voted for this term, and its timestamp was taken before that. A
//! merge unseeds the leader the same way (the absorbed range's reads); a
//! range created by a split starts unseeded.
//!
//! A one-range transaction (`OnePcCmd` with reads or spans) validates its
//! reads as it applies, up to its commit timestamp, so proposing it
//! registers that timestamp on the floor too: a write proposed after it
//! cannot land inside its validated window.
//!
//! Apply is deterministic: `one_pc` refuses (every replica alike) a write
//! that meets a lock (`KeyLocked`) or a version at or above its timestamp
//! (`WriteConflict`).

use super::command::{Command, Kind, OnePcCmd, OpKind};
use super::replica::{Admit, Replica};
use super::state_machine::{ApplyCtx, Effects, SizeChange};
use crate::api::Timestamp;
use crate::chaos::{self, Canary};
use crate::error::{Error, Result};
use crate::keys;
use crate::mvcc::{self, Mutation, Reader, TxnError};

/// The leader's read floor (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct ReadFloor {
    /// The highest timestamp a read or validation registered at.
    pub max_read_ts: Timestamp,
    /// The term in which the floor was seeded (`None`: not yet, or a merge
    /// unseeded it).
    pub seeded_term: Option<u64>,
    /// The newest oracle timestamp this replica has seen (applied commands,
    /// reads served): a lower bound on the oracle's clock, from which MVCC
    /// GC takes its horizon (`node/gc.rs`) — never from a node clock, which
    /// may run ahead of the oracle's (seeds 175, 446).
    pub newest_seen: Timestamp,
}

impl Replica {
    /// A read at `ts` registers on the floor (leader only).
    pub(super) fn register_read(&mut self, ts: Timestamp) {
        if ts > self.floor.max_read_ts {
            self.floor.max_read_ts = ts;
        }
        self.saw_timestamp(ts.0);
    }

    /// Notes an oracle timestamp a command or read carried.
    pub(super) fn saw_timestamp(&mut self, ts: u64) {
        if ts != Timestamp::MAX.0 && ts > self.floor.newest_seen.0 {
            self.floor.newest_seen = Timestamp(ts);
        }
    }

    /// The newest oracle timestamp this replica has seen (see `ReadFloor`).
    pub fn newest_timestamp(&self) -> Timestamp {
        self.floor.newest_seen
    }

    /// The command for a timestamped write, if this leader may propose it
    /// at `cmd.commit_ts`. `seed_term`: the timestamp was taken after this
    /// leader refused a write in that term.
    pub(super) fn prepare_one_pc(
        &mut self,
        cmd: OnePcCmd,
        seed_term: Option<u64>,
    ) -> Result<Command> {
        // The canary lets writes into a range frozen for a merge (lost).
        let frozen_ok = chaos::canary(Canary::MergeLosesWrites);
        self.admit(Admit {
            frozen_ok,
            ..Admit::LEADER
        })?;
        // A one-range transaction's reads and spans must lie in this range
        // too: what lies outside would go unvalidated.
        let d = &self.desc;
        let outside = cmd.reads.iter().any(|k| !d.contains(k))
            || cmd.spans.iter().any(|s| {
                !d.contains(&s.start) || s.end.is_empty() || s.end.as_slice() > d.end_key.as_slice()
            });
        if outside {
            return Err(Error::KeyNotInRange {
                range_id: self.desc.range_id,
                span: self.span(),
            });
        }
        for op in &cmd.ops {
            if !self.desc.contains(&op.key) {
                return Err(Error::KeyNotInRange {
                    range_id: self.desc.range_id,
                    span: self.span(),
                });
            }
            if op.key.first() != Some(&keys::USER_DATA) {
                return Err(Error::Internal(
                    "a timestamped write of a key outside the user keyspace".into(),
                ));
            }
        }
        let term = self.group.raft.term;
        if self.floor.seeded_term != Some(term) {
            if seed_term != Some(term) {
                return Err(self.stale_timestamp());
            }
            self.floor.seeded_term = Some(term);
        }
        if Timestamp(cmd.commit_ts) <= self.floor.max_read_ts {
            return Err(self.stale_timestamp());
        }
        // A transaction's reads are validated when the command applies, up
        // to its commit timestamp: they register on the floor like a read
        // at that timestamp, so no write proposed after this one lands at
        // or below it (seed 185: two one-range transactions proposed in the
        // opposite order of their timestamps each validated before the
        // other's write applied — write skew).
        if !cmd.reads.is_empty() || !cmd.spans.is_empty() {
            self.register_read(Timestamp(cmd.commit_ts));
        }
        Ok(Command::new(Kind::OnePc(cmd)))
    }

    fn stale_timestamp(&self) -> Error {
        Error::StaleTimestamp {
            range_id: self.desc.range_id,
            term: self.group.raft.term,
        }
    }

    /// A merge applied: the absorbed range's leader served reads this
    /// floor does not know of.
    pub(super) fn unseed(&mut self) {
        self.floor.seeded_term = None;
    }
}

/// The error a transaction action's refusal becomes (deterministic). Keys
/// leave as user-visible keys (`keys::data_key` gives the data key back).
pub fn txn_error(e: TxnError) -> Error {
    let user = |k: Vec<u8>| keys::user_key(&k).unwrap_or(k);
    match e {
        TxnError::Locked { key, lock } => Error::KeyLocked {
            key: user(key),
            primary: user(lock.primary),
            start_ts: lock.start_ts,
            ttl_ms: lock.ttl_ms,
        },
        TxnError::Conflict { key, committed } => Error::WriteConflict {
            key: user(key),
            committed: committed.0,
        },
        TxnError::Aborted { key } | TxnError::LockLost { key } => {
            Error::TxnAborted { key: user(key) }
        }
        TxnError::Committed { key, commit_ts } => Error::TxnCommitted {
            key: user(key),
            commit_ts: commit_ts.0,
        },
    }
}

/// About how many bytes `ops` write.
pub(super) fn ops_bytes(ops: &[super::Op]) -> u64 {
    ops.iter()
        .map(|op| (op.key.len() + op.value.len()) as u64)
        .sum()
}

/// The mutations of a committed command's `Put` / `Delete` ops.
pub(super) fn mutations(ops: &[super::Op]) -> Result<Vec<Mutation>> {
    ops.iter()
        .map(|op| match OpKind::try_from(op.kind) {
            Ok(OpKind::Put) => Ok(Mutation::Put {
                key: op.key.clone(),
                value: op.value.clone(),
                lease: op.lease,
            }),
            Ok(OpKind::Delete) => Ok(Mutation::Delete {
                key: op.key.clone(),
            }),
            _ => Err(Error::Internal(format!(
                "a committed MVCC write holds op kind {}",
                op.kind
            ))),
        })
        .collect()
}

/// Applies a timestamped write.
pub(super) fn apply(cmd: &OnePcCmd, ctx: &ApplyCtx) -> Result<Effects> {
    let desc = ctx.desc;
    let outside = |k: &[u8]| !desc.contains(k);
    if (desc.frozen && !chaos::canary(Canary::MergeLosesWrites))
        || cmd.ops.iter().any(|op| outside(&op.key))
        || cmd.reads.iter().any(|k| outside(k))
    {
        return Err(desc.epoch_mismatch());
    }
    desc.check_gc_horizon(cmd.start_ts)?;
    let muts = mutations(&cmd.ops)?;
    let bytes = ops_bytes(&cmd.ops);
    let spans: Vec<(Vec<u8>, Vec<u8>)> = cmd
        .spans
        .iter()
        .map(|s| {
            (
                s.start.as_slice().max(desc.start_key.as_slice()).to_vec(),
                s.end.as_slice().min(desc.end_key.as_slice()).to_vec(),
            )
        })
        .collect();
    let reader = Reader::new(&ctx.reader);
    let (start, commit) = (Timestamp(cmd.start_ts), Timestamp(cmd.commit_ts));
    match mvcc::one_pc(&reader, &muts, &cmd.reads, &spans, start, commit)? {
        Ok(writes) => Ok(Effects {
            writes,
            size: SizeChange::Grew(bytes),
            ..Effects::default()
        }),
        Err(e) => Err(txn_error(e)),
    }
}
