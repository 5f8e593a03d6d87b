//! The replicated command: what a Raft entry of a range carries, as a typed
//! sum (a protobuf `oneof`). Each kind is proposed and applied by its own
//! file (`write.rs`, `split.rs`, `merge.rs`); `state_machine::apply` is the
//! one dispatcher.

use crate::error::Result;
use crate::storage::Pair;

use super::RangeDescriptor;

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum OpKind {
    Put = 0,
    Delete = 1,
    /// Write a range-directory entry unless the stored one has a newer epoch
    /// (so a deposed leader cannot publish a stale descriptor).
    PutRangeMeta = 2,
    /// Write only if the key does not exist; otherwise the whole command fails.
    PutIfAbsent = 3,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Op {
    #[prost(enumeration = "OpKind", tag = "1")]
    pub kind: i32,
    /// Internal data key.
    #[prost(bytes = "vec", tag = "2")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub value: Vec<u8>,
    /// A user-data Put's lease (0: none): the key is deleted when the
    /// lease ends (`server::lease`), unless written again without it.
    #[prost(uint64, tag = "4")]
    pub lease: u64,
}

impl Op {
    pub fn put(key: Vec<u8>, value: Vec<u8>) -> Op {
        Op {
            kind: OpKind::Put as i32,
            key,
            value,
            lease: 0,
        }
    }
    /// A Put of a user key attached to `lease`.
    pub fn put_leased(key: Vec<u8>, value: Vec<u8>, lease: u64) -> Op {
        Op {
            lease,
            ..Op::put(key, value)
        }
    }
    pub fn delete(key: Vec<u8>) -> Op {
        Op {
            kind: OpKind::Delete as i32,
            key,
            value: Vec::new(),
            lease: 0,
        }
    }
    pub fn put_if_absent(key: Vec<u8>, value: Vec<u8>) -> Op {
        Op {
            kind: OpKind::PutIfAbsent as i32,
            key,
            value,
            lease: 0,
        }
    }
    pub fn put_range_meta(desc: &RangeDescriptor) -> Op {
        Op {
            kind: OpKind::PutRangeMeta as i32,
            key: RangeDescriptor::directory_key(desc.range_id),
            value: desc.directory_value(),
            lease: 0,
        }
    }
}

/// A client write: its ops apply atomically, in order.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct WriteCmd {
    #[prost(message, repeated, tag = "1")]
    pub ops: Vec<Op>,
}

/// Splits a range at `split_key`: the range keeps `[start, split_key)` and a
/// new range `new_range_id` takes `[split_key, end)`, same replicas.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SplitCmd {
    /// Internal data key; strictly inside the range.
    #[prost(bytes = "vec", tag = "1")]
    pub split_key: Vec<u8>,
    #[prost(uint64, tag = "2")]
    pub new_range_id: u64,
    /// The range's `version` when the split was proposed; a stale split
    /// (the range changed meanwhile) is rejected by every replica.
    #[prost(uint64, tag = "3")]
    pub expected_version: u64,
    /// A manual split: the new right range is never merged away by the
    /// placement driver.
    #[prost(bool, tag = "4")]
    pub sticky: bool,
}

/// Freezes a range for a merge into its left neighbour (see `MergeCmd`).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct FreezeCmd {
    /// The range's `version` when the freeze was proposed.
    #[prost(uint64, tag = "1")]
    pub expected_version: u64,
}

/// Absorbs the frozen right neighbour `rhs` into this range. The command
/// carries the right range's final data, so a replica of this range applies
/// it without depending on its own (possibly lagging or absent) replica of
/// the right range: the merge is one command of this range's log.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct MergeCmd {
    /// This range's `version` when the merge was proposed.
    #[prost(uint64, tag = "1")]
    pub expected_version: u64,
    /// The right neighbour's descriptor, frozen.
    #[prost(message, optional, tag = "2")]
    pub rhs: Option<RangeDescriptor>,
    /// Every pair of the right range's span, as frozen.
    #[prost(message, repeated, tag = "3")]
    pub pairs: Vec<Pair>,
}

/// A span `[start, end)` of data keys a transaction scanned.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct KeySpan {
    #[prost(bytes = "vec", tag = "1")]
    pub start: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub end: Vec<u8>,
}

/// A timestamped write of user data in one step (`mvcc::one_pc`): a plain
/// put, delete or single-range batch (`start_ts == commit_ts`, nothing
/// read), or a transaction confined to this range (its reads validated in
/// `(start_ts, commit_ts]`). Proposed and applied by `timestamped.rs`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct OnePcCmd {
    /// `Put` or `Delete` ops on user data keys.
    #[prost(message, repeated, tag = "1")]
    pub ops: Vec<Op>,
    #[prost(uint64, tag = "2")]
    pub start_ts: u64,
    #[prost(uint64, tag = "3")]
    pub commit_ts: u64,
    /// Keys the transaction read (data keys).
    #[prost(bytes = "vec", repeated, tag = "4")]
    pub reads: Vec<Vec<u8>>,
    #[prost(message, repeated, tag = "5")]
    pub spans: Vec<KeySpan>,
}

/// Collects MVCC garbage at `horizon` on the named keys (`range/gc.rs`):
/// every replica re-checks each key, so the list may be stale.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct GcCmd {
    #[prost(uint64, tag = "1")]
    pub horizon: u64,
    /// Data keys.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub keys: Vec<Vec<u8>>,
}

/// Locks every key of `ops` for the transaction started at `start_ts`
/// (`mvcc::prewrite`; `range/txn.rs`).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PrewriteCmd {
    /// `Put` or `Delete` ops on user data keys.
    #[prost(message, repeated, tag = "1")]
    pub ops: Vec<Op>,
    /// The data key of the transaction's primary lock.
    #[prost(bytes = "vec", tag = "2")]
    pub primary: Vec<u8>,
    #[prost(uint64, tag = "3")]
    pub start_ts: u64,
    #[prost(uint64, tag = "4")]
    pub ttl_ms: u64,
}

/// Commits (`commit_ts` > 0) or rolls back (`commit_ts` == 0) the
/// transaction's locks on `keys` (`mvcc::commit` / `mvcc::rollback`): the
/// coordinator's steps, and lock resolution once a transaction's fate is
/// known.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct FinishCmd {
    /// Data keys.
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub keys: Vec<Vec<u8>>,
    #[prost(uint64, tag = "2")]
    pub start_ts: u64,
    #[prost(uint64, tag = "3")]
    pub commit_ts: u64,
    /// Committing a two-phase transaction's primary: its record stays
    /// until `secondaries_done` (GC must not collect it while secondaries
    /// may be locked).
    #[prost(bool, tag = "4")]
    pub primary_of_many: bool,
    /// Not a commit or rollback: every secondary of the transaction whose
    /// primary is `keys` committed, so its record may be collected.
    #[prost(bool, tag = "5")]
    pub secondaries_done: bool,
    /// With `secondaries_done`: each key's transaction's start (empty:
    /// `start_ts` for every key), so one command marks many transactions.
    #[prost(uint64, repeated, tag = "6")]
    pub done_starts: Vec<u64>,
}

/// Settles a transaction's primary at `now_ts` (`mvcc::check_status`): an
/// expired lock is rolled back, and a transaction that left nothing is
/// marked rolled back so a late prewrite fails. Its outcome is then read
/// (`ReadOp::TxnStatus`).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct CheckTxnCmd {
    #[prost(bytes = "vec", tag = "1")]
    pub primary: Vec<u8>,
    #[prost(uint64, tag = "2")]
    pub start_ts: u64,
    #[prost(uint64, tag = "3")]
    pub now_ts: u64,
    /// Settling a commit whose reply was lost (not resolving a lock): a
    /// transaction that left nothing, below the range's GC horizon, may
    /// have committed a record GC has since collected, so it is not marked
    /// rolled back; the step fails with `TxnTooOld` instead.
    #[prost(bool, tag = "4")]
    pub lost_reply: bool,
}

/// Keeps a transaction's primary lock alive: its TTL (from its start)
/// grows to `ttl_ms` (`mvcc::heartbeat`); fails if the lock is gone.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct HeartbeatCmd {
    #[prost(bytes = "vec", tag = "1")]
    pub primary: Vec<u8>,
    #[prost(uint64, tag = "2")]
    pub start_ts: u64,
    #[prost(uint64, tag = "3")]
    pub ttl_ms: u64,
}

/// What a command does. Transaction commands (prewrite, commit, rollback,
/// lock resolution, GC) join this oneof as new variants, each proposed and
/// applied by a file of its own, like `write.rs`.
#[derive(Clone, PartialEq, Eq, prost::Oneof)]
pub enum Kind {
    #[prost(message, tag = "2")]
    Write(WriteCmd),
    #[prost(message, tag = "3")]
    Split(SplitCmd),
    #[prost(message, tag = "4")]
    Freeze(FreezeCmd),
    #[prost(message, tag = "5")]
    Merge(MergeCmd),
    #[prost(message, tag = "6")]
    OnePc(OnePcCmd),
    #[prost(message, tag = "7")]
    Gc(GcCmd),
    #[prost(message, tag = "8")]
    Prewrite(PrewriteCmd),
    #[prost(message, tag = "9")]
    Finish(FinishCmd),
    #[prost(message, tag = "10")]
    CheckTxn(CheckTxnCmd),
    #[prost(message, tag = "11")]
    Heartbeat(HeartbeatCmd),
}

/// A replicated command.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Command {
    /// Unique per proposal; matches the applied entry to its waiting client.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(oneof = "Kind", tags = "2, 3, 4, 5, 6, 7, 8, 9, 10, 11")]
    pub kind: Option<Kind>,
}

impl Command {
    pub fn new(kind: Kind) -> Command {
        Command {
            id: 0,
            kind: Some(kind),
        }
    }
    pub fn write(ops: Vec<Op>) -> Command {
        Command::new(Kind::Write(WriteCmd { ops }))
    }
    pub fn encode(&self) -> Vec<u8> {
        prost::Message::encode_to_vec(self)
    }
    pub fn decode(b: &[u8]) -> Result<Command> {
        Ok(<Command as prost::Message>::decode(b)?)
    }
    /// A short name for traces.
    pub fn describe(&self) -> String {
        match &self.kind {
            Some(Kind::Write(w)) => format!("write({} ops)", w.ops.len()),
            Some(Kind::OnePc(w)) => format!("1pc({} ops at {})", w.ops.len(), w.commit_ts),
            Some(Kind::Gc(g)) => format!("gc({} keys at {})", g.keys.len(), g.horizon),
            Some(Kind::Prewrite(p)) => format!("prewrite({} ops of {})", p.ops.len(), p.start_ts),
            Some(Kind::Finish(f)) => format!(
                "finish({} keys of {} at {})",
                f.keys.len(),
                f.start_ts,
                f.commit_ts
            ),
            Some(Kind::CheckTxn(c)) => format!("check-txn({})", c.start_ts),
            Some(Kind::Heartbeat(h)) => format!("heartbeat({}, {} ms)", h.start_ts, h.ttl_ms),
            Some(Kind::Split(s)) => format!("split(new range {})", s.new_range_id),
            Some(Kind::Freeze(_)) => "freeze".into(),
            Some(Kind::Merge(m)) => {
                format!("merge(range {})", m.rhs.as_ref().map_or(0, |r| r.range_id))
            }
            None => "unknown".into(),
        }
    }
}
