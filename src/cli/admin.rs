//! `rangedb admin …`: cluster and node status, decommissioning, the `_/`
//! metadata namespace, settings, manual splits.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

use super::data::{print_ok, print_pairs, print_value};
use super::{AdminCommand, ClusterCommand, ConfigCommand, MetaCommand, NodeCommand};
use crate::api::{meta, Registry};
use crate::client::{Client, ReadConsistency};
use crate::error::{Error, Result};
use crate::proto::NodeStatusResponse;
use crate::status;

/// How often decommissioning progress is polled.
const DECOMMISSION_POLL: Duration = Duration::from_secs(1);
/// Jobs and blocked repairs listed by `cluster status` (the rest: a count).
const STATUS_LIST_MAX: usize = 20;

pub(super) async fn run(
    out: &mut impl Write,
    client: &Client,
    cmd: AdminCommand,
    json: bool,
) -> Result<ExitCode> {
    match cmd {
        AdminCommand::Cluster(ClusterCommand::Status) => {
            let status = status::cluster(client).await?;
            if json {
                let _ = writeln!(out, "{status}");
            } else {
                print_cluster_status(out, &status);
            }
        }
        AdminCommand::Split { key } => {
            client.split(key.as_bytes(), true).await?;
            print_ok(out, json);
        }
        AdminCommand::Meta(MetaCommand::List { prefix, limit }) => {
            let prefix = system_key(&prefix, "")?;
            let end = meta::prefix_end(prefix.as_bytes());
            let pairs = client
                .scan(prefix.as_bytes(), &end, limit.unwrap_or(0), false)
                .await?;
            print_pairs(out, &pairs, json);
        }
        AdminCommand::Meta(MetaCommand::Get { key }) => {
            let key = system_key(&key, "")?;
            return print_value(out, client, &key, ReadConsistency::Linearizable, json).await;
        }
        AdminCommand::Config(ConfigCommand::Set { key, value }) => {
            crate::config::validate_setting(&key, &value)?;
            let full = client.set_config(&key, &value).await?;
            if json {
                let _ = writeln!(out, "{}", json!({"key": full, "value": value.trim()}));
            } else {
                let _ = writeln!(out, "OK ({full} = {})", value.trim());
            }
        }
        AdminCommand::Config(ConfigCommand::Get { key }) => {
            let key = system_key(&key, meta::CONFIG_PREFIX)?;
            return print_value(out, client, &key, ReadConsistency::Linearizable, json).await;
        }
        AdminCommand::Node(NodeCommand::Decommission { id, wait }) => {
            decommission(out, client, id, wait, json).await?
        }
        AdminCommand::Node(NodeCommand::Status) => return node_status(out, client, json).await,
        AdminCommand::Node(NodeCommand::Drain { id, wait }) => {
            drain(out, client, id, wait, json).await?
        }
        AdminCommand::Backup(cmd) => return super::backup::run(out, client, cmd, json).await,
        AdminCommand::Auth(cmd) => return super::auth::run_admin(out, client, cmd, json).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks node `id` to drain and stop, then waits until it no longer answers.
async fn drain(
    out: &mut impl Write,
    client: &Client,
    id: u64,
    wait: u64,
    json: bool,
) -> Result<()> {
    let registry = Registry::parse(status::scan_prefix(client, meta::NODES_PREFIX).await?);
    let addr = registry
        .entries
        .get(&id)
        .and_then(|e| e.client_address.clone())
        .ok_or_else(|| Error::InvalidArgument(format!("node {id} is not registered")))?;
    let leading = client.drain_node(&addr, id).await?;
    if !json {
        let _ = writeln!(
            out,
            "node {id} ({addr}) is draining: moving {leading} leaderships away"
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    while client.node_status(&addr).await.is_ok() {
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout(format!(
                "node {id} still answers after {wait} s of draining"
            )));
        }
        tokio::time::sleep(DECOMMISSION_POLL / 5).await;
    }
    if json {
        let _ = writeln!(
            out,
            "{}",
            json!({"node_id": id, "drained": true, "led": leading})
        );
    } else {
        let _ = writeln!(out, "node {id} drained and stopped");
    }
    Ok(())
}

/// Starts draining node `id`, then reports progress until it holds no
/// replicas (or `wait` seconds passed; 0: return at once).
async fn decommission(
    out: &mut impl Write,
    client: &Client,
    id: u64,
    wait: u64,
    json: bool,
) -> Result<()> {
    client.decommission_node(id).await?;
    let start = tokio::time::Instant::now();
    let mut last = None;
    loop {
        let status = status::cluster(client).await?;
        let held = status["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["node_id"].as_u64() == Some(id)))
            .and_then(|n| n["partitions"].as_array().map(Vec::len));
        let shown = held.map_or_else(|| "?".to_string(), |h| h.to_string());
        if held == Some(0) {
            if json {
                let v = json!({"node_id": id, "replicas": 0, "decommissioned": true});
                let _ = writeln!(out, "{v}");
            } else {
                let _ = writeln!(out, "Node {id} decommissioned: it holds no replicas");
            }
            return Ok(());
        }
        if held != last {
            eprintln!("node {id}: {shown} replicas left");
            last = held;
        }
        if start.elapsed() >= Duration::from_secs(wait) {
            if wait > 0 {
                return Err(Error::Timeout(format!(
                    "node {id} still holds {shown} replicas after {wait}s; decommissioning continues"
                )));
            }
            let _ = writeln!(out, "Decommissioning node {id} started");
            return Ok(());
        }
        tokio::time::sleep(DECOMMISSION_POLL).await;
    }
}

async fn node_status(out: &mut impl Write, client: &Client, json: bool) -> Result<ExitCode> {
    let mut failed = false;
    for ep in client.endpoints() {
        match client.node_status(ep).await {
            Ok(s) if json => {
                let _ = writeln!(out, "{}", status::node_status_json(ep, &s));
            }
            Ok(s) => print_node_status(out, ep, &s),
            Err(e) => {
                failed = true;
                eprintln!("Error: {ep}: {e}");
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_node_status(out: &mut impl Write, ep: &str, s: &NodeStatusResponse) {
    let _ = writeln!(out, "Node {} ({}), cluster {}", s.node_id, ep, s.cluster_id);
    let _ = writeln!(out, "  Peer Address: {}", s.peer_address);
    let asleep = s.ranges.iter().filter(|r| r.quiesced).count();
    let _ = writeln!(out, "  Ranges: {} ({asleep} sleeping)", s.ranges.len());
    for r in &s.ranges {
        let _ = writeln!(
            out,
            "  range {}: {} term {} leader {} commit {} applied {} voters {:?}{}",
            r.range_id,
            if r.is_leader { "LEADER  " } else { "follower" },
            r.term,
            r.leader_id,
            r.commit,
            r.applied,
            r.voters,
            if r.quiesced { " sleeping" } else { "" }
        );
    }
}

fn id_list(v: &Value) -> String {
    let ids: Vec<String> = v
        .as_array()
        .map(|a| a.iter().map(|x| x.to_string()).collect())
        .unwrap_or_default();
    format!("[{}]", ids.join(", "))
}

/// `admin cluster status` as the REPL prints it: the original README's lines.
pub(super) async fn cluster_status_brief(out: &mut impl Write, client: &Client) -> Result<()> {
    let status = status::cluster(client).await?;
    print_status_head(out, &status, true);
    Ok(())
}

fn print_cluster_status(out: &mut impl Write, s: &Value) {
    print_status_head(out, s, false);
    match s["under_replicated"].as_array() {
        Some(u) if !u.is_empty() => {
            let _ = writeln!(out, "  Under-replicated Partitions ({}):", u.len());
            for r in u {
                let _ = writeln!(
                    out,
                    "    range {}: {} of {} replicas live",
                    r["range_id"], r["live_replicas"], r["replicas"]
                );
            }
        }
        _ => {
            let _ = writeln!(out, "  Under-replicated Partitions: none");
        }
    }
    print_placement(out, s);
}

/// Cluster id, replication, partitions and nodes (`brief`: without the
/// leaders each node holds).
fn print_status_head(out: &mut impl Write, s: &Value, brief: bool) {
    let empty = Vec::new();
    let nodes = s["nodes"].as_array().unwrap_or(&empty);
    let _ = writeln!(out, "Cluster Status:");
    let _ = writeln!(
        out,
        "  Cluster ID: {}",
        s["cluster_id"].as_str().unwrap_or("")
    );
    let _ = writeln!(out, "  Replication Factor: {}", s["replication_factor"]);
    let parts = s["partitions"].as_array().map(Vec::len).unwrap_or(0);
    let _ = writeln!(out, "  Number of Partitions: {parts}");
    let _ = writeln!(out, "  Nodes ({}):", nodes.len());
    for n in nodes {
        let peer = n["peer_address"].as_str().unwrap_or("");
        let _ = writeln!(out, "    {}. {}", n["node_id"], peer);
        let client = n["client_address"].as_str().unwrap_or("unknown");
        let _ = writeln!(out, "       Client Address: {client}");
        let _ = writeln!(out, "       Peer Address: {peer}");
        let _ = writeln!(out, "       Status: {}", n["status"].as_str().unwrap_or(""));
        let _ = writeln!(out, "       Partitions: {}", id_list(&n["partitions"]));
        if !brief {
            let _ = writeln!(out, "       Leader Of: {}", id_list(&n["leader_of"]));
        }
    }
}

fn print_placement(out: &mut impl Write, s: &Value) {
    let p = &s["placement"];
    let jobs = p["jobs"].as_array().cloned().unwrap_or_default();
    let mut blocked = p["blocked"].as_array().cloned().unwrap_or_default();
    for c in s["corrupt_registry_entries"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if !blocked.contains(c) {
            blocked.push(c.clone());
        }
    }
    let count = if jobs.is_empty() {
        "none".to_string()
    } else {
        jobs.len().to_string()
    };
    let _ = writeln!(out, "  Placement Jobs: {count}");
    for j in jobs.iter().take(STATUS_LIST_MAX) {
        let _ = writeln!(out, "    {}", j.as_str().unwrap_or(""));
    }
    if !blocked.is_empty() {
        let _ = writeln!(out, "  Blocked ({}):", blocked.len());
        for b in blocked.iter().take(STATUS_LIST_MAX) {
            let _ = writeln!(out, "    {}", b.as_str().unwrap_or(""));
        }
    }
}

/// A metadata key as typed: full (`_/...`) or, with a default prefix, short.
fn system_key(key: &str, default_prefix: &str) -> Result<String> {
    if key.starts_with(meta::PREFIX) {
        Ok(key.to_string())
    } else if !default_prefix.is_empty() && !key.is_empty() && !key.contains('/') {
        Ok(format!("{default_prefix}{key}"))
    } else {
        Err(Error::InvalidArgument(format!(
            "{key:?} is not a metadata key (they start with \"_/\")"
        )))
    }
}
