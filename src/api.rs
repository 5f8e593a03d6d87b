//! The public contract shared by the server, the client SDK and the CLI —
//! plain types and names only, no behaviour that needs the server:
//! - the reserved `_/` metadata namespace and the names of its keys
//!   (`meta`), including the node registry entry (`NodeEntry`);
//! - request limits (key, value, batch and scan sizes);
//! - route keys: the order in which the SDK caches range spans;
//! - `ReplicaChange`, the admin API's membership change;
//! - `Timestamp`, a point in the order of transactions (`timestamp`).
//!
//! Everything here is part of what a client can observe; the physical
//! layout of the engine is `keys.rs`'s business and never leaks here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub mod timestamp;
pub use timestamp::{Timestamp, LOGICAL_BITS};

/// Largest key accepted by the Kv API, in bytes.
pub const MAX_KEY_BYTES: usize = 4 * 1024;
/// Largest value accepted by the Kv API, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Most pairs in one BatchPut.
pub const MAX_BATCH_PAIRS: usize = 1000;
/// Largest total size (keys + values) of one BatchPut, in bytes.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Largest Kv message, in bytes: a largest BatchPut with its framing
/// (tonic's 4 MiB default would refuse it); larger ones are refused
/// before they are decoded.
pub const MAX_KV_MESSAGE_BYTES: usize = MAX_BATCH_BYTES + 1024 * 1024;
/// Scan limit used when the request says 0.
pub const DEFAULT_SCAN_LIMIT: usize = 1000;
/// Most pairs one Scan returns.
pub const MAX_SCAN_LIMIT: usize = 100_000;
/// Most keys one transaction writes.
pub const MAX_TXN_KEYS: usize = 100_000;
/// Largest total size (keys + values) of one transaction's writes, in bytes.
pub const MAX_TXN_BYTES: usize = 10 * 1024 * 1024;
/// Largest Txn message, in bytes (a transaction's writes, with framing).
pub const MAX_TXN_MESSAGE_BYTES: usize = 12 * 1024 * 1024;
/// Largest Admin message, in bytes (a merge carries the absorbed range's data).
pub const MAX_ADMIN_MESSAGE_BYTES: usize = 256 << 20;

/// Node ids run from 1 to this bound (range ids embed the node id in their
/// last three decimal digits: see `node`).
pub const MAX_NODE_ID: u64 = 999;

/// Names in the reserved `_/` metadata namespace, as users see them.
pub mod meta {
    /// Every key starting with this is a system key.
    pub const PREFIX: &str = "_/";
    /// The cluster id.
    pub const CLUSTER_ID: &str = "_/cluster/id";
    /// Prefix of the cluster settings (`_/cluster/config/<name>`).
    pub const CONFIG_PREFIX: &str = "_/cluster/config/";
    /// Prefix of the node registry (`_/cluster/nodes/node<id>`).
    pub const NODES_PREFIX: &str = "_/cluster/nodes/";
    /// The placement driver's report (jobs, blocked repairs, dead nodes).
    pub const PLACEMENT: &str = "_/cluster/placement";
    /// The timestamp oracle's persisted high-water mark (u64 BE): no
    /// timestamp at or above it has been handed out.
    pub const TSO: &str = "_/cluster/tso";
    /// The term (u64 BE) in which the oracle's holder released its lease
    /// before handing the system range's leadership over (0: none); a
    /// leader of the next term may serve without waiting the lease out.
    pub const TSO_HANDOFF: &str = "_/cluster/tso-handoff";
    /// Prefix of the range directory (`_/partitions/<range id>`).
    pub const PARTITIONS_PREFIX: &str = "_/partitions/";
    /// GC pins of open transactions (`_/txn/pins/<id>`: the start timestamp).
    pub const PINS_PREFIX: &str = "_/txn/pins/";
    /// Finished backups (`_/backups/<id>`: a JSON summary).
    pub const BACKUPS_PREFIX: &str = "_/backups/";

    /// The registry key of node `id`, as the original README shows it.
    pub fn node_key(id: u64) -> String {
        format!("{NODES_PREFIX}node{id}")
    }

    /// The node id a registry key names.
    pub fn node_id_of(key: &[u8]) -> Option<u64> {
        let rest = key.strip_prefix(NODES_PREFIX.as_bytes())?;
        let digits = rest.strip_prefix(b"node")?;
        let id: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
        (id >= 1 && digits.first() != Some(&b'0')).then_some(id)
    }

    /// The directory key of range `id`.
    pub fn partition_key(id: u64) -> String {
        format!("{PARTITIONS_PREFIX}{id}")
    }

    /// The key of cluster setting `name`.
    pub fn pin_key(id: &str) -> String {
        format!("{PINS_PREFIX}{id}")
    }

    /// The start timestamp a pin holds, if it is still alive at `now_ms`
    /// (physical milliseconds of an oracle timestamp): a transaction may
    /// run `max_ms` (txn_max_duration) from its start.
    /// A leased pin (`<start>@<until_ms>`, see `lease_pin`) lives until
    /// `until_ms` instead.
    pub fn live_pin(value: &[u8], now_ms: u64, max_ms: u64) -> Option<u64> {
        let text = std::str::from_utf8(value).ok()?.trim();
        if let Some((start, until)) = text.split_once('@') {
            let start: u64 = start.parse().ok()?;
            let until: u64 = until.parse().ok()?;
            return (until > now_ms).then_some(start);
        }
        let start: u64 = text.parse().ok()?;
        let start_ms = start >> crate::api::LOGICAL_BITS;
        (start_ms.saturating_add(max_ms) > now_ms).then_some(start)
    }

    /// The value of a pin of `start` leased until `until_ms` (wall
    /// milliseconds; renewed by writing it again): backups.
    pub fn lease_pin(start: u64, until_ms: u64) -> String {
        format!("{start}@{until_ms}")
    }

    /// Where a finished backup is recorded.
    pub fn backup_key(id: &str) -> String {
        format!("{BACKUPS_PREFIX}{id}")
    }

    /// Where leases live: `_/leases/<id, 16 hex digits>` holds a lease's
    /// record, `_/leases/<id>/k/<key>` each key attached to it.
    pub const LEASES_PREFIX: &str = "_/leases/";

    pub fn lease_key(id: u64) -> String {
        format!("{LEASES_PREFIX}{id:016x}")
    }

    /// The prefix of the keys attached to lease `id`.
    pub fn lease_keys_prefix(id: u64) -> Vec<u8> {
        format!("{LEASES_PREFIX}{id:016x}/k/").into_bytes()
    }

    pub fn config_key(name: &str) -> String {
        format!("{CONFIG_PREFIX}{name}")
    }

    /// The first key after every key that starts with `prefix`.
    pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
        let mut end = prefix.to_vec();
        while let Some(last) = end.pop() {
            if last < 0xff {
                end.push(last + 1);
                return end;
            }
        }
        Vec::new()
    }
}

/// Whether a user-visible key lies in the reserved `_/` namespace.
pub fn is_system_key(key: &[u8]) -> bool {
    key.starts_with(meta::PREFIX.as_bytes())
}

/// One node's entry in the registry (`_/cluster/nodes/node<id>`), JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// Where other nodes send Raft traffic.
    pub peer_address: String,
    /// Where clients reach the node; unknown until the node registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_address: Option<String>,
    /// Being drained by `rangedb admin node decommission`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub decommissioning: bool,
}

impl NodeEntry {
    pub fn new(peer_address: &str, client_address: Option<&str>) -> NodeEntry {
        NodeEntry {
            peer_address: peer_address.to_string(),
            client_address: client_address.map(str::to_string),
            decommissioning: false,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes an entry; a value that is not one is corruption, reported —
    /// never read as an entry without an address.
    pub fn decode(key: &[u8], value: &[u8]) -> Result<NodeEntry> {
        let e: NodeEntry = serde_json::from_slice(value).map_err(|e| {
            Error::Corruption(format!(
                "registry entry {} does not decode: {e}",
                String::from_utf8_lossy(key)
            ))
        })?;
        if e.peer_address.is_empty() {
            return Err(Error::Corruption(format!(
                "registry entry {} has no peer address",
                String::from_utf8_lossy(key)
            )));
        }
        Ok(e)
    }
}

/// The registry as read: the entries that decode, and what did not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    pub entries: BTreeMap<u64, NodeEntry>,
    /// Entries that do not decode: (node id if the key names one, why).
    pub corrupt: Vec<(Option<u64>, String)>,
}

impl Registry {
    /// Parses `(user-visible key, value)` pairs under `_/cluster/nodes/`.
    pub fn parse(pairs: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Registry {
        let mut r = Registry::default();
        for (k, v) in pairs {
            let id = meta::node_id_of(&k);
            match (id, NodeEntry::decode(&k, &v)) {
                (Some(id), Ok(e)) => {
                    r.entries.insert(id, e);
                }
                (None, _) => r.corrupt.push((
                    None,
                    format!(
                        "registry key {} names no node (want {}node<id>)",
                        String::from_utf8_lossy(&k),
                        meta::NODES_PREFIX
                    ),
                )),
                (Some(id), Err(e)) => r.corrupt.push((Some(id), e.to_string())),
            }
        }
        r
    }

    /// Every node id the registry uses, corrupt entries included (a new
    /// node must never be given one of them).
    pub fn max_id(&self) -> u64 {
        let good = self.entries.keys().copied().max().unwrap_or(0);
        let bad = self
            .corrupt
            .iter()
            .filter_map(|(id, _)| *id)
            .max()
            .unwrap_or(0);
        good.max(bad)
    }
}

/// A change to a range's replica set, one voter at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaChange {
    /// Add `node` as a learner (it receives a snapshot, then the log).
    AddLearner(u64),
    /// Make learner `node` a voter.
    Promote(u64),
    /// Remove `node` (voter or learner).
    Remove(u64),
    /// Hand leadership to voter `node` (not a membership change).
    TransferLeader(u64),
}

/// Route keys order user-visible keys the way ranges do: every system key
/// before every user key. The SDK's range cache and the spans in routing
/// errors use them: `[namespace] ++ key`, with `ROUTE_END` after all keys.
pub mod route {
    /// The namespace byte of system keys.
    pub const SYSTEM: u8 = 0;
    /// The namespace byte of user keys.
    pub const USER: u8 = 1;
    /// After every route key.
    pub const END: u8 = 2;

    /// The route key of a user-visible key.
    pub fn key(key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(key.len() + 1);
        k.push(if super::is_system_key(key) {
            SYSTEM
        } else {
            USER
        });
        k.extend_from_slice(key);
        k
    }

    /// The route key of `key` taken in the user namespace (scan bounds).
    pub fn user(key: &[u8]) -> Vec<u8> {
        let mut k = vec![USER];
        k.extend_from_slice(key);
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defect (issue 9): a registry entry that did not decode was read as
    /// JSON null — "no client address" — so the placement driver counted
    /// the node as not answering and, after `dead_node_timeout`, moved its
    /// replicas away. Failed before the fix: the entry came back as
    /// `(3, Null)`.
    #[test]
    fn a_corrupt_registry_entry_is_reported_not_read_as_an_unreachable_node() {
        let good = NodeEntry::new("127.0.0.1:8080", Some("127.0.0.1:8081"));
        let r = Registry::parse([
            (meta::node_key(1).into_bytes(), good.encode()),
            (meta::node_key(3).into_bytes(), b"{corrupt".to_vec()),
            (b"_/cluster/nodes/7".to_vec(), good.encode()),
        ]);
        assert_eq!(r.entries.len(), 1);
        assert_eq!(r.entries[&1], good);
        assert!(
            !r.entries.contains_key(&3),
            "a corrupt node is not a node without an address"
        );
        assert_eq!(r.corrupt.len(), 2);
        assert_eq!(r.corrupt[0].0, Some(3));
        assert!(
            r.corrupt[0].1.contains("does not decode"),
            "{:?}",
            r.corrupt
        );
        assert_eq!(r.max_id(), 3, "a new node never gets a corrupt entry's id");
    }

    #[test]
    fn registry_keys_read_as_the_original_readme_shows_them() {
        assert_eq!(meta::node_key(1), "_/cluster/nodes/node1");
        assert_eq!(meta::node_id_of(b"_/cluster/nodes/node12"), Some(12));
        assert_eq!(meta::node_id_of(b"_/cluster/nodes/1"), None);
        assert_eq!(meta::node_id_of(b"_/cluster/nodes/node0"), None);
        assert_eq!(meta::node_id_of(b"_/cluster/nodes/node01"), None);
        assert_eq!(meta::prefix_end(b"ab"), b"ac");
        assert_eq!(meta::prefix_end(b"a\xff"), b"b");
    }

    #[test]
    fn node_entries_roundtrip_and_corruption_is_an_error() {
        let e = NodeEntry::new("127.0.0.1:8080", Some("127.0.0.1:8081"));
        let k = meta::node_key(1);
        assert_eq!(NodeEntry::decode(k.as_bytes(), &e.encode()).unwrap(), e);
        let bare = NodeEntry::new("127.0.0.1:8082", None);
        assert_eq!(
            String::from_utf8(bare.encode()).unwrap(),
            r#"{"peer_address":"127.0.0.1:8082"}"#
        );
        for bad in [&b"{corrupt"[..], b"null", b"{}", br#"{"peer_address":""}"#] {
            let err = NodeEntry::decode(k.as_bytes(), bad).unwrap_err();
            assert!(matches!(err, Error::Corruption(_)), "{err}");
        }
    }

    #[test]
    fn route_keys_put_system_keys_first() {
        assert!(route::key(b"_/cluster/id") < route::key(b""));
        assert!(route::key(b"/a") < route::key(b"a"));
        assert!(route::key(b"zzz") < vec![route::END]);
        assert_eq!(route::user(b"_/x")[0], route::USER);
    }
}
