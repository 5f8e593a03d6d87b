//! The cluster's state as JSON, gathered through the public API: the
//! metadata namespace (`_/partitions/`, `_/nodes/`, `_/config/`,
//! `_/placement`, `_/backups/`) and each node's own report.
//!
//! One shape for every reader: `rangedb admin cluster status --output json`,
//! `rangedb admin backup list --output json`, `rangedb admin node status
//! --output json` and the web console's API (`/api/v1/cluster`,
//! `/api/v1/backups`, `/api/v1/node`) print the same documents, so a
//! script written against one works against the other.
//!
//! Node reports are asked for concurrently: an unreachable node costs one
//! RPC timeout, not one per node.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::api::{meta, Registry, MAX_SCAN_LIMIT};
use crate::client::Client;
use crate::config::ClusterSettings;
use crate::error::Result;
use crate::proto::NodeStatusResponse;

/// A node's status as the JSON documents name it.
pub const NODE_RUNNING: &str = "NODE_RUNNING";
pub const NODE_DRAINING: &str = "NODE_DRAINING";
pub const NODE_DECOMMISSIONING: &str = "NODE_DECOMMISSIONING";
pub const NODE_UNREACHABLE: &str = "NODE_UNREACHABLE";

/// Every pair under a metadata prefix.
pub async fn scan_prefix(client: &Client, prefix: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let end = meta::prefix_end(prefix.as_bytes());
    client
        .scan(prefix.as_bytes(), &end, MAX_SCAN_LIMIT as u32, false)
        .await
}

/// The recorded backups (`_/backups/`), oldest id first.
pub async fn backups(client: &Client) -> Result<Vec<Value>> {
    Ok(scan_prefix(client, meta::BACKUPS_PREFIX)
        .await?
        .iter()
        .filter_map(|(_, v)| serde_json::from_slice(v).ok())
        .collect())
}

/// The whole cluster: id, replication factor, the range directory
/// (`partitions`, as stored), every registered node with its status,
/// the ranges it holds and leads, each range with its leader, replicas,
/// size and load, the under-replicated ranges, and the placement
/// driver's jobs.
pub async fn cluster(client: &Client) -> Result<Value> {
    let text = |v: Option<Vec<u8>>| v.map(|v| String::from_utf8_lossy(&v).into_owned());
    let cluster_id = text(client.get(meta::CLUSTER_ID.as_bytes()).await?).unwrap_or_default();
    let settings = scan_prefix(client, meta::CONFIG_PREFIX).await?;
    let rf =
        ClusterSettings::from_pairs(settings.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))?
            .replication_factor;
    let parts = scan_prefix(client, meta::PARTITIONS_PREFIX).await?;
    let registry = Registry::parse(scan_prefix(client, meta::NODES_PREFIX).await?);
    let reports = node_reports(client, &registry).await;
    let placement: Value = client
        .get(meta::PLACEMENT.as_bytes())
        .await?
        .and_then(|v| serde_json::from_slice(&v).ok())
        .unwrap_or_default();

    // range id -> running nodes holding it; range id -> its leader's report.
    let mut hosting: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut led: BTreeMap<u64, (u64, &crate::proto::RangeStatus)> = BTreeMap::new();
    let mut nodes = Vec::new();
    for (id, entry, addr, st) in &reports {
        let held: Vec<_> = st
            .iter()
            .flat_map(|s| s.ranges.iter())
            .filter(|r| !r.end_key.is_empty())
            .collect();
        for r in &held {
            hosting.entry(r.range_id).or_default().push(*id);
            if r.is_leader {
                led.insert(r.range_id, (*id, r));
            }
        }
        let status = match st {
            None => NODE_UNREACHABLE,
            Some(_) if entry.decommissioning => NODE_DECOMMISSIONING,
            Some(s) if s.draining => NODE_DRAINING,
            Some(_) => NODE_RUNNING,
        };
        nodes.push(json!({
            "node_id": id,
            "peer_address": entry.peer_address,
            "client_address": addr,
            "status": status,
            "partitions": held.iter().map(|r| r.range_id).collect::<Vec<_>>(),
            "leader_of": held.iter().filter(|r| r.is_leader).map(|r| r.range_id).collect::<Vec<_>>(),
        }));
    }

    let mut partitions = Vec::new();
    let mut ranges = Vec::new();
    let mut under = Vec::new();
    let mut directory: Vec<Value> = parts
        .iter()
        .map(|(_, v)| serde_json::from_slice(v).unwrap_or_default())
        .collect();
    // In key order (the directory's own order is by id as text).
    directory.sort_by(|a, b| a["start"].as_str().cmp(&b["start"].as_str()));
    for d in directory {
        let id = d["range_id"].as_u64().unwrap_or(0);
        // Under-replicated: fewer running nodes hold it than the
        // replication factor asks for (the directory may lag a second).
        let live = hosting.get(&id).map(Vec::len).unwrap_or(0);
        if live < rf {
            under.push(json!({"range_id": id, "live_replicas": live, "replicas": rf}));
        }
        let leader = led.get(&id);
        ranges.push(json!({
            "range_id": id,
            "system": d["system"].as_bool().unwrap_or(false),
            "from": d["from"],
            "to": d["to"],
            "leader": leader.map(|(n, _)| *n),
            "replicas": leader.map_or_else(|| d["replicas"].clone(), |(_, r)| json!(r.voters)),
            "live_replicas": live,
            "approx_bytes": leader.map(|(_, r)| r.approx_bytes),
            "qps": leader.map(|(_, r)| r.qps),
            "sleeping": leader.map(|(_, r)| r.quiesced),
            "under_replicated": live < rf,
        }));
        partitions.push(d);
    }
    let corrupt: Vec<String> = registry
        .corrupt
        .iter()
        .map(|(_, why)| why.clone())
        .collect();
    Ok(json!({
        "placement": placement,
        "cluster_id": cluster_id,
        "replication_factor": rf,
        "partitions": partitions,
        "ranges": ranges,
        "nodes": nodes,
        "under_replicated": under,
        "corrupt_registry_entries": corrupt,
    }))
}

/// Each registered node with its client address and its own report
/// (`None`: it did not answer), asked concurrently.
async fn node_reports<'r>(
    client: &Client,
    registry: &'r Registry,
) -> Vec<(
    u64,
    &'r crate::api::NodeEntry,
    Option<String>,
    Option<NodeStatusResponse>,
)> {
    // node id -> client address, as the nodes know it.
    let mut addresses: BTreeMap<u64, String> = BTreeMap::new();
    for ep in client.endpoints() {
        if let Ok(s) = client.node_status(ep).await {
            addresses.extend(s.client_addresses);
            break;
        }
    }
    let asks = registry.entries.iter().map(|(&id, entry)| {
        let addr = entry
            .client_address
            .clone()
            .or_else(|| addresses.get(&id).cloned());
        async move {
            let st = match &addr {
                Some(a) => client.node_status(a).await.ok(),
                None => None,
            };
            (id, entry, addr, st)
        }
    });
    futures::future::join_all(asks).await
}

/// One node's own report (`admin node status --output json`, `/api/v1/node`).
pub fn node_status_json(ep: &str, s: &NodeStatusResponse) -> Value {
    let ranges: Vec<_> = s
        .ranges
        .iter()
        .map(|r| {
            json!({
                "range_id": r.range_id, "leader_id": r.leader_id, "term": r.term,
                "is_leader": r.is_leader, "commit": r.commit, "applied": r.applied,
                "last_index": r.last_index, "voters": r.voters, "sleeping": r.quiesced,
                "approx_bytes": r.approx_bytes, "qps": r.qps,
            })
        })
        .collect();
    json!({
        "endpoint": ep, "node_id": s.node_id, "cluster_id": s.cluster_id,
        "peer_address": s.peer_address, "client_address": s.client_address,
        "draining": s.draining, "ranges": ranges,
    })
}
