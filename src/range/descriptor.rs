//! Range descriptors: id, key span, epoch and replicas.
//!
//! Invariants: `start_key < end_key` for an initialized range (internal
//! data keys); `version` (splits, merges, freezes) and `conf_ver`
//! (membership changes) never decrease (asserted by `Replica`).

use crate::api::meta;
use crate::error::Result;
use crate::keys;

/// The range holding the `_/` metadata namespace.
pub const SYSTEM_RANGE_ID: u64 = 1;
/// The first (and for now only) user range.
pub const USER_RANGE_ID: u64 = 2;

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct RangeDescriptor {
    #[prost(uint64, tag = "1")]
    pub range_id: u64,
    /// Inclusive start in the internal data keyspace.
    #[prost(bytes = "vec", tag = "2")]
    pub start_key: Vec<u8>,
    /// Exclusive end in the internal data keyspace.
    #[prost(bytes = "vec", tag = "3")]
    pub end_key: Vec<u8>,
    /// Bumped by membership changes.
    #[prost(uint64, tag = "4")]
    pub conf_ver: u64,
    /// Bumped by splits and merges.
    #[prost(uint64, tag = "5")]
    pub version: u64,
    /// Node ids holding a replica.
    #[prost(uint64, repeated, tag = "6")]
    pub replicas: Vec<u64>,
    /// Frozen for a merge into its left neighbour: no reads, writes,
    /// splits or membership changes; its data is final. Never thawed: the
    /// range lives on only inside whichever range absorbs it.
    #[prost(bool, tag = "7")]
    pub frozen: bool,
    /// Created by a manual split: the placement driver never merges it
    /// into its left neighbour.
    #[prost(bool, tag = "8")]
    pub sticky: bool,
    /// The highest MVCC GC horizon applied to the range: versions a read
    /// below it would need may be gone, so a transaction that started
    /// below it can no longer read, validate or write here (`TxnTooOld`).
    /// Replicated, carried by snapshots, inherited by splits, the higher
    /// of the two in a merge.
    #[prost(uint64, tag = "9")]
    pub gc_horizon: u64,
}

/// Lower-case hex of a byte string (directory values show spans this way).
fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl RangeDescriptor {
    pub fn encode(&self) -> Vec<u8> {
        prost::Message::encode_to_vec(self)
    }

    pub fn decode(b: &[u8]) -> Result<RangeDescriptor> {
        Ok(<RangeDescriptor as prost::Message>::decode(b)?)
    }

    /// Refuses a transaction that started at `start`, below the range's
    /// GC horizon (deterministic: the horizon is replicated).
    pub fn check_gc_horizon(&self, start: u64) -> Result<()> {
        if start < self.gc_horizon {
            return Err(crate::error::Error::TxnTooOld(format!(
                "it started at {}, below range {}'s GC horizon {} (gc_ttl)",
                crate::api::Timestamp(start),
                self.range_id,
                crate::api::Timestamp(self.gc_horizon)
            )));
        }
        Ok(())
    }

    /// Where the range directory (in the system range) keeps this range.
    pub fn directory_key(range_id: u64) -> Vec<u8> {
        keys::system(&meta::partition_key(range_id))
    }

    /// The directory entry: JSON, spans as hex of the internal keys.
    pub fn directory_value(&self) -> Vec<u8> {
        let readable = |k: &[u8]| {
            keys::user_key(k)
                .map(|u| String::from_utf8_lossy(&u).into_owned())
                .unwrap_or_default()
        };
        serde_json::json!({
            "range_id": self.range_id,
            "from": readable(&self.start_key),
            "to": readable(&self.end_key),
            "start": hex(&self.start_key),
            "end": hex(&self.end_key),
            "version": self.version,
            "conf_ver": self.conf_ver,
            "replicas": self.replicas,
            "sticky": self.sticky,
            "system": self.range_id == SYSTEM_RANGE_ID,
        })
        .to_string()
        .into_bytes()
    }

    /// The (version, conf_ver) epoch recorded in a directory entry.
    pub fn directory_epoch(value: &[u8]) -> Option<(u64, u64)> {
        let v: serde_json::Value = serde_json::from_slice(value).ok()?;
        Some((v.get("version")?.as_u64()?, v.get("conf_ver")?.as_u64()?))
    }

    /// The error for a request this range can no longer take (it changed,
    /// or froze for a merge).
    pub fn epoch_mismatch(&self) -> crate::error::Error {
        crate::error::Error::EpochMismatch {
            range_id: self.range_id,
            current: crate::error::Span::new(self.start_key.clone(), self.end_key.clone()),
            version: self.version,
        }
    }

    pub fn contains(&self, data_key: &[u8]) -> bool {
        data_key >= self.start_key.as_slice() && data_key < self.end_key.as_slice()
    }

    /// The two ranges a new cluster starts with.
    pub fn initial(replicas: Vec<u64>) -> Vec<RangeDescriptor> {
        let (s0, s1) = keys::system_data_bounds();
        let (u0, u1) = keys::user_data_bounds();
        vec![
            RangeDescriptor {
                range_id: SYSTEM_RANGE_ID,
                start_key: s0,
                end_key: s1,
                conf_ver: 1,
                version: 1,
                replicas: replicas.clone(),
                ..Default::default()
            },
            RangeDescriptor {
                range_id: USER_RANGE_ID,
                start_key: u0,
                end_key: u1,
                conf_ver: 1,
                version: 1,
                replicas,
                ..Default::default()
            },
        ]
    }
}
