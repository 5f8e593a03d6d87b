//! The replicated command: what a Raft entry of a range carries.

use crate::error::{Error, Result};
use crate::storage::{Engine, WriteBatch};

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
}

impl Op {
    pub fn put(key: Vec<u8>, value: Vec<u8>) -> Op {
        Op {
            kind: OpKind::Put as i32,
            key,
            value,
        }
    }
    pub fn delete(key: Vec<u8>) -> Op {
        Op {
            kind: OpKind::Delete as i32,
            key,
            value: Vec::new(),
        }
    }
    pub fn put_if_absent(key: Vec<u8>, value: Vec<u8>) -> Op {
        Op {
            kind: OpKind::PutIfAbsent as i32,
            key,
            value,
        }
    }
    pub fn put_range_meta(desc: &RangeDescriptor) -> Op {
        Op {
            kind: OpKind::PutRangeMeta as i32,
            key: RangeDescriptor::directory_key(desc.range_id),
            value: desc.directory_value(),
        }
    }
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

/// A key-value pair carried inside a command (internal keys).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Pair {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
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

/// A replicated command: a client write (ops apply atomically, in order),
/// or one of split, freeze and merge.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Command {
    /// Unique per proposal; matches the applied entry to its waiting client.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(message, repeated, tag = "2")]
    pub ops: Vec<Op>,
    #[prost(message, optional, tag = "3")]
    pub split: Option<SplitCmd>,
    #[prost(message, optional, tag = "4")]
    pub freeze: Option<FreezeCmd>,
    #[prost(message, optional, tag = "5")]
    pub merge: Option<MergeCmd>,
}

impl Command {
    pub fn encode(&self) -> Vec<u8> {
        prost::Message::encode_to_vec(self)
    }
    pub fn decode(b: &[u8]) -> Result<Command> {
        Ok(<Command as prost::Message>::decode(b)?)
    }

    /// The state machine: stages this command's writes into `wb`.
    /// Deterministic: every replica makes the same decision.
    pub fn apply(
        &self,
        desc: &RangeDescriptor,
        engine: &dyn Engine,
        wb: &mut WriteBatch,
    ) -> Result<()> {
        let frozen = desc.frozen && !crate::chaos::canary(crate::chaos::Canary::MergeLosesWrites);
        if frozen || self.ops.iter().any(|op| !desc.contains(&op.key)) {
            // The range split, or froze for a merge, after the write was
            // proposed: nothing is written; the client retries.
            return Err(desc.epoch_mismatch());
        }
        for op in &self.ops {
            if op.kind == OpKind::PutIfAbsent as i32 {
                let exists = match wb.last_put(&op.key) {
                    Some(_) => true,
                    None => engine.get(&op.key)?.is_some(),
                };
                if exists {
                    return Err(Error::InvalidArgument("key already exists".into()));
                }
            }
        }
        for op in &self.ops {
            match OpKind::try_from(op.kind) {
                Ok(OpKind::Put) => wb.put(op.key.clone(), op.value.clone()),
                Ok(OpKind::Delete) => wb.delete(op.key.clone()),
                Ok(OpKind::PutIfAbsent) => wb.put(op.key.clone(), op.value.clone()),
                Ok(OpKind::PutRangeMeta) => {
                    let new = RangeDescriptor::directory_epoch(&op.value);
                    let current = match wb.last_put(&op.key) {
                        Some(v) => Some(v.to_vec()),
                        None => engine.get(&op.key)?,
                    };
                    let old = current
                        .as_deref()
                        .and_then(RangeDescriptor::directory_epoch);
                    if new.is_some() && (old.is_none() || new > old) {
                        wb.put(op.key.clone(), op.value.clone());
                    }
                }
                Err(_) => return Err(Error::Corruption(format!("unknown op kind {}", op.kind))),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys;

    #[test]
    fn apply_stages_ops_and_rejects_foreign_keys() {
        let desc = &RangeDescriptor::initial(vec![1])[1];
        let cmd = Command {
            id: 9,
            ops: vec![
                Op::put(keys::data_key(b"a"), b"1".to_vec()),
                Op::delete(keys::data_key(b"b")),
            ],
            ..Default::default()
        };
        let cmd = Command::decode(&cmd.encode()).unwrap();
        let mut wb = WriteBatch::new();
        cmd.apply(desc, &crate::storage::MemEngine::new(), &mut wb)
            .unwrap();
        assert_eq!(wb.len(), 2);
        let bad = Command {
            id: 1,
            ops: vec![
                Op::put(keys::data_key(b"ok"), vec![]),
                Op::put(keys::data_key(b"_/x"), vec![]),
            ],
            ..Default::default()
        };
        let mut wb = WriteBatch::new();
        assert!(bad
            .apply(desc, &crate::storage::MemEngine::new(), &mut wb)
            .is_err());
        assert!(wb.is_empty(), "a rejected command writes nothing");
    }
}
