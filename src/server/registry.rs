//! The node registry (`_/cluster/nodes/node<id>` -> `api::NodeEntry`) and
//! the cluster settings, read through this node's Store. One reader each;
//! entries that do not decode are reported, never read as defaults: a
//! corrupt registry entry must not make a node look dead (its replicas
//! would be moved away), and a corrupt setting must not quietly become the
//! default.

use crate::api::{meta, Registry};
use crate::config::ClusterSettings;
use crate::error::{Error, Result};
use crate::keys;
use crate::node::{Consistency, StoreHandle};
use crate::range::{ReadOp, ReadResult};

/// Most registry entries and settings read in one scan.
const MAX_META_SCAN: usize = 100_000;

/// Every pair under a system prefix, user-visible keys.
pub(super) async fn scan_prefix(
    store: &StoreHandle,
    prefix: &str,
    consistency: Consistency,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let (start, end) = keys::prefix_bounds(prefix.as_bytes());
    let op = ReadOp::Scan {
        start,
        end,
        limit: MAX_META_SCAN,
        reverse: false,
    };
    let pairs = match store.read(op, consistency).await? {
        ReadResult::Pairs(p, _) => p,
        ReadResult::Value(_)
        | ReadResult::Txn(_)
        | ReadResult::Term(_)
        | ReadResult::Changes(..)
        | ReadResult::History(..)
        | ReadResult::Items(..) => Vec::new(),
    };
    pairs
        .into_iter()
        .map(|(k, v)| match keys::user_key(&k) {
            Some(u) => Ok((u, v)),
            None => Err(Error::Corruption(format!(
                "key {k:02x?} under {prefix} is not a data key"
            ))),
        })
        .collect()
}

/// The registry, through this node's Store.
pub async fn read_registry(store: &StoreHandle, consistency: Consistency) -> Result<Registry> {
    Ok(Registry::parse(
        scan_prefix(store, meta::NODES_PREFIX, consistency).await?,
    ))
}

/// The cluster settings, through this node's Store.
pub async fn read_settings(
    store: &StoreHandle,
    consistency: Consistency,
) -> Result<ClusterSettings> {
    let pairs = scan_prefix(store, meta::CONFIG_PREFIX, consistency).await?;
    ClusterSettings::from_pairs(pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
}
