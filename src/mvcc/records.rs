//! The MVCC records stored under a user key (layout: `keys::lock_key`,
//! `keys::version_key`): at most one lock, and write records by commit
//! timestamp. Plain data; encoding is protobuf.

use super::Timestamp;
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum WriteKind {
    /// The key took this value at the commit timestamp.
    Put = 0,
    /// The key was deleted at the commit timestamp.
    Delete = 1,
    /// The transaction that started at `start_ts` was rolled back; stored at
    /// its start timestamp so a late prewrite or commit of it fails.
    Rollback = 2,
}

/// A transaction's lock on a key between prewrite and commit.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Lock {
    /// The transaction's start timestamp (its identity).
    #[prost(uint64, tag = "1")]
    pub start_ts: u64,
    /// The data key of the transaction's primary lock (its commit point).
    #[prost(bytes = "vec", tag = "2")]
    pub primary: Vec<u8>,
    /// Milliseconds after the start timestamp's physical time the lock
    /// lives, unless renewed.
    #[prost(uint64, tag = "3")]
    pub ttl_ms: u64,
    /// What commit writes: `Put` with `value`, or `Delete`.
    #[prost(enumeration = "WriteKind", tag = "4")]
    pub kind: i32,
    #[prost(bytes = "vec", tag = "5")]
    pub value: Vec<u8>,
    /// The lease a Put attaches its key to (0: none).
    #[prost(uint64, tag = "6")]
    pub lease: u64,
}

/// What a transaction did to a key at a commit timestamp.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Write {
    #[prost(enumeration = "WriteKind", tag = "1")]
    pub kind: i32,
    /// The start timestamp of the transaction that wrote it.
    #[prost(uint64, tag = "2")]
    pub start_ts: u64,
    #[prost(bytes = "vec", tag = "3")]
    pub value: Vec<u8>,
    /// The commit record of a two-phase transaction's primary key whose
    /// secondaries may still be locked: GC keeps it (a reader resolving a
    /// secondary decides its fate from this record) until the coordinator
    /// reports every secondary committed (`mvcc::secondaries_done`).
    #[prost(bool, tag = "4")]
    pub pending_secondaries: bool,
    /// A Put's key metadata, as etcd defines it, fixed when the version is
    /// written (`txn::versioned`): the commit timestamp of the first Put
    /// since the key was last absent (etcd's create_revision) ...
    #[prost(uint64, tag = "5")]
    pub create_ts: u64,
    /// ... and how many Puts that makes, this one included (etcd's
    /// version). Records written before format 3 kept them are read as
    /// `create_ts` = their own timestamp, `version` = 1 (`Write::meta`).
    #[prost(uint64, tag = "6")]
    pub version: u64,
    /// The lease the key is attached to (0: none): when it ends, the key
    /// is deleted if this is still its newest version.
    #[prost(uint64, tag = "7")]
    pub lease: u64,
}

impl Lock {
    pub fn start(&self) -> Timestamp {
        Timestamp(self.start_ts)
    }

    /// Whether the lock's owner may be presumed gone at `now`.
    pub fn expired(&self, now: Timestamp) -> bool {
        now.physical_ms() >= self.start().physical_ms().saturating_add(self.ttl_ms)
    }

    pub fn encode(&self) -> Vec<u8> {
        prost::Message::encode_to_vec(self)
    }

    pub fn decode(b: &[u8]) -> Result<Lock> {
        <Lock as prost::Message>::decode(b).map_err(|e| Error::Corruption(format!("lock: {e}")))
    }
}

impl Write {
    /// (create_ts, version) of a Put committed at `at`.
    pub fn meta(&self, at: Timestamp) -> (Timestamp, u64) {
        if self.version == 0 {
            (at, 1)
        } else {
            (Timestamp(self.create_ts), self.version)
        }
    }

    pub fn write_kind(&self) -> Result<WriteKind> {
        WriteKind::try_from(self.kind)
            .map_err(|_| Error::Corruption(format!("write record of kind {}", self.kind)))
    }

    pub fn encode(&self) -> Vec<u8> {
        prost::Message::encode_to_vec(self)
    }

    pub fn decode(b: &[u8]) -> Result<Write> {
        <Write as prost::Message>::decode(b)
            .map_err(|e| Error::Corruption(format!("write record: {e}")))
    }
}
