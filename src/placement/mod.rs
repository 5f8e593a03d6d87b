//! The embedded placement driver (PD): runs on every node, acts only while
//! this node leads the system range, and so fails over with it.
//!
//! Every second it probes the registered nodes (`_/cluster/nodes/`), marks a
//! node dead once it has not answered for `dead_node_timeout`, and repairs
//! replication one membership change at a time per range:
//! 1. a learner that caught up with its leader is promoted; a dead learner is
//!    removed;
//! 2. a range with a dead voter gets a replacement learner on the live node
//!    holding the fewest replicas — and only after that replacement has been
//!    promoted is the dead voter removed (never remove first);
//! 3. a range with fewer voters than `replication_factor` gets a learner;
//!    one with more loses its replica on the most loaded node.
//!
//! Ranges with the fewest live voters go first. Decisions are pure
//! (`plan`), the IO is in `run`.
//!
//! When nothing needs repair it balances replicas and leaders, and merges
//! small cold neighbours (`merge`).
//!
//! CAVEATS: liveness is in the PD's memory (a new PD grants every node a
//! fresh timeout).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::sync::watch;

pub mod merge;

use crate::client::{Client, ClientOptions};
use crate::keys;
use crate::node::{Consistency, StoreHandle};
use crate::range::{ReadOp, ReadResult, ReplicaChange, SYSTEM_RANGE_ID};

/// Default `dead_node_timeout`: seconds without an answer before a node's
/// replicas are replaced (CockroachDB waits 5 minutes, TiKV 30 minutes).
pub const DEFAULT_DEAD_NODE_TIMEOUT_SECS: u64 = 10;
/// Default `replication_factor`.
pub const DEFAULT_REPLICATION_FACTOR: usize = 3;
/// Balancing steps (replica or leader moves) per round.
const BALANCE_STEPS: usize = 32;
/// Placement rounds of a calm cluster are this far apart.
const CALM_INTERVAL: Duration = Duration::from_secs(3);
/// A learner this close to the leader's last index is caught up.
const CATCH_UP_SLACK: u64 = 10;

/// What the PD knows about one range (from its leader).
#[derive(Debug, Clone)]
pub struct RangeView {
    pub range_id: u64,
    pub start_key: Vec<u8>,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub leader: u64,
    pub last_index: u64,
    /// peer -> matched index
    pub matched: BTreeMap<u64, u64>,
    pub conf_ver: u64,
    pub end_key: Vec<u8>,
    pub version: u64,
    pub frozen: bool,
    pub sticky: bool,
    pub approx_bytes: u64,
    pub qps: u64,
}

/// One decided action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub range_id: u64,
    pub start_key: Vec<u8>,
    /// The membership epoch this decision was based on.
    pub conf_ver: u64,
    pub change: ReplicaChange,
    pub why: String,
}

/// One balancing step when nothing needs repair: move a replica from the
/// node holding the most to the one holding the fewest (add a learner there;
/// once promoted, the extra voter is removed from the most loaded node), or
/// else hand a leadership from the node leading the most ranges to one
/// leading the fewest. Differences of one are left alone.
pub fn balance(ranges: &[RangeView], live: &BTreeSet<u64>, rf: usize) -> Option<Action> {
    if live.len() < 2 {
        return None;
    }
    let count = |pick: &dyn Fn(&RangeView) -> Vec<u64>| -> BTreeMap<u64, usize> {
        let mut m: BTreeMap<u64, usize> = live.iter().map(|n| (*n, 0)).collect();
        for r in ranges {
            for n in pick(r) {
                if let Some(c) = m.get_mut(&n) {
                    *c += 1;
                }
            }
        }
        m
    };
    let extremes = |m: &BTreeMap<u64, usize>| {
        let max = m
            .iter()
            .max_by_key(|(n, c)| (**c, std::cmp::Reverse(**n)))
            .map(|(n, c)| (*n, *c));
        let min = m
            .iter()
            .min_by_key(|(n, c)| (**c, **n))
            .map(|(n, c)| (*n, *c));
        max.zip(min)
    };
    let healthy = |r: &&RangeView| {
        r.learners.is_empty() && r.voters.len() == rf && r.voters.iter().all(|v| live.contains(v))
    };
    let replicas =
        count(&|r: &RangeView| r.voters.iter().chain(r.learners.iter()).copied().collect());
    let leaders = count(&|r: &RangeView| vec![r.leader]);
    // Hand a range's leadership to its voter leading the fewest ranges.
    let transfer = |r: &RangeView, why: String| -> Option<Action> {
        let from = leaders.get(&r.leader).copied().unwrap_or(0);
        let to = r
            .voters
            .iter()
            .copied()
            // Only a move that narrows the gap: swapping who leads more
            // (2 vs 1 → 1 vs 2) would ping-pong, and when the range is the
            // system range it moves the placement driver each time, which
            // restarts its dead-node timeouts (a repair that never came).
            .filter(|v| *v != r.leader && leaders.get(v).is_some_and(|c| c + 1 < from))
            .min_by_key(|v| (leaders.get(v).copied().unwrap_or(0), *v))?;
        Some(Action {
            range_id: r.range_id,
            start_key: r.start_key.clone(),
            conf_ver: r.conf_ver,
            change: ReplicaChange::TransferLeader(to),
            why,
        })
    };
    if let Some((_, (lo, lc))) = extremes(&replicas) {
        // The busiest nodes first. A range led from the busy node first hands
        // its leadership to another voter, then moves next round.
        let mut busy: Vec<(u64, usize)> = replicas
            .iter()
            .map(|(n, c)| (*n, *c))
            .filter(|(_, c)| *c > lc + 1)
            .collect();
        busy.sort_by_key(|(n, c)| (std::cmp::Reverse(*c), *n));
        let movable = |hi: u64| -> Vec<&RangeView> {
            ranges
                .iter()
                .filter(healthy)
                .filter(|r| r.voters.contains(&hi) && !r.voters.contains(&lo))
                .collect()
        };
        for &(hi, hc) in &busy {
            if let Some(r) = movable(hi).into_iter().find(|r| r.leader != hi) {
                return Some(Action {
                    range_id: r.range_id,
                    start_key: r.start_key.clone(),
                    conf_ver: r.conf_ver,
                    change: ReplicaChange::AddLearner(lo),
                    why: format!("rebalance: node {hi} holds {hc} replicas, node {lo} {lc}"),
                });
            }
        }
        for &(hi, _) in &busy {
            let why =
                |r: &RangeView| format!("rebalance: free range {} to leave node {hi}", r.range_id);
            if let Some(a) = movable(hi).first().and_then(|r| transfer(r, why(r))) {
                return Some(a);
            }
        }
    }
    if let Some(((hi, hc), (_, lc))) = extremes(&leaders) {
        if hc > lc + 1 {
            for r in ranges.iter().filter(healthy).filter(|r| r.leader == hi) {
                if let Some(a) =
                    transfer(r, format!("rebalance leaders: node {hi} leads {hc} ranges"))
                {
                    if matches!(a.change, ReplicaChange::TransferLeader(to) if leaders.get(&to).copied().unwrap_or(0) + 1 < hc)
                    {
                        return Some(a);
                    }
                }
            }
        }
    }
    None
}

/// Up to `max` balancing steps on distinct ranges, each planned as if the
/// previous ones had happened.
pub fn balance_many(
    ranges: &[RangeView],
    live: &BTreeSet<u64>,
    rf: usize,
    max: usize,
) -> Vec<Action> {
    let mut views = ranges.to_vec();
    let mut out = Vec::new();
    while out.len() < max {
        let Some(a) = balance(&views, live, rf) else {
            break;
        };
        if let Some(v) = views.iter_mut().find(|v| v.range_id == a.range_id) {
            match a.change {
                ReplicaChange::AddLearner(n) => v.learners.push(n),
                ReplicaChange::TransferLeader(n) => {
                    v.leader = n;
                    v.learners.push(0); // one step per range per round
                }
                _ => {}
            }
        }
        out.push(a);
    }
    out
}

/// Repairs that cannot proceed, and why (shown by `admin cluster status`).
pub fn blocked(
    ranges: &[RangeView],
    live: &BTreeSet<u64>,
    dead: &BTreeSet<u64>,
    rf: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    for r in ranges {
        let members: BTreeSet<u64> = r.voters.iter().chain(r.learners.iter()).copied().collect();
        let spare = live.iter().any(|n| !members.contains(n));
        let live_voters = r.voters.iter().filter(|v| !dead.contains(v)).count();
        if live_voters < rf && !spare && r.learners.is_empty() {
            out.push(format!(
                "range {}: {live_voters} live voters < replication_factor {rf}, and no live node without a replica \
                 can take one (live nodes: {})",
                r.range_id,
                live.len()
            ));
        }
    }
    out
}

/// Decides this round's membership changes (pure; deterministic order).
/// `dead` holds nodes whose replicas must be replaced (dead or being
/// decommissioned); `live` the nodes that may receive replicas.
pub fn plan(
    ranges: &[RangeView],
    live: &BTreeSet<u64>,
    dead: &BTreeSet<u64>,
    rf: usize,
    max_actions: usize,
) -> Vec<Action> {
    let mut load: BTreeMap<u64, usize> = live.iter().map(|n| (*n, 0)).collect();
    for r in ranges {
        for n in r.voters.iter().chain(r.learners.iter()) {
            if let Some(c) = load.get_mut(n) {
                *c += 1;
            }
        }
    }
    let mut order: Vec<&RangeView> = ranges.iter().collect();
    order.sort_by_key(|r| {
        (
            r.voters.iter().filter(|v| live.contains(v)).count(),
            r.range_id,
        )
    });
    let mut out = Vec::new();
    for r in order {
        if out.len() >= max_actions {
            break;
        }
        let act = |change, why: String| Action {
            range_id: r.range_id,
            start_key: r.start_key.clone(),
            conf_ver: r.conf_ver,
            change,
            why,
        };
        if let Some(&l) = r.learners.iter().find(|l| dead.contains(l)) {
            out.push(act(
                ReplicaChange::Remove(l),
                format!("learner {l} is dead"),
            ));
            continue;
        }
        if let Some(&l) = r.learners.first() {
            if crate::chaos::canary(crate::chaos::Canary::RepairRemovesEarly) {
                if let Some(&d) = r.voters.iter().find(|v| dead.contains(v)) {
                    out.push(act(
                        ReplicaChange::Remove(d),
                        format!("voter {d} is dead (canary: learner {l} not caught up)"),
                    ));
                    continue;
                }
            }
            let matched = r.matched.get(&l).copied().unwrap_or(0);
            if matched + CATCH_UP_SLACK >= r.last_index && matched > 0 {
                out.push(act(
                    ReplicaChange::Promote(l),
                    format!("learner {l} caught up ({matched}/{})", r.last_index),
                ));
            }
            continue; // wait for the learner either way
        }
        let members: BTreeSet<u64> = r.voters.iter().chain(r.learners.iter()).copied().collect();
        let dead_voters: Vec<u64> = r
            .voters
            .iter()
            .copied()
            .filter(|v| dead.contains(v))
            .collect();
        let target = load
            .iter()
            .filter(|(n, _)| !members.contains(n))
            .min_by_key(|(n, c)| (**c, **n))
            .map(|(n, _)| *n);
        let live_voters = r.voters.len() - dead_voters.len();
        if let Some(&d) = dead_voters.first() {
            if live_voters >= rf {
                out.push(act(
                    ReplicaChange::Remove(d),
                    format!("voter {d} is dead and a replacement is in place"),
                ));
            } else if let Some(t) = target {
                out.push(act(
                    ReplicaChange::AddLearner(t),
                    format!("replacing dead voter {d}"),
                ));
                if let Some(c) = load.get_mut(&t) {
                    *c += 1;
                }
            }
            continue;
        }
        if r.voters.len() < rf {
            if let Some(t) = target {
                out.push(act(
                    ReplicaChange::AddLearner(t),
                    format!("{} voters < replication_factor {rf}", r.voters.len()),
                ));
                if let Some(c) = load.get_mut(&t) {
                    *c += 1;
                }
            }
        } else if r.voters.len() > rf {
            let victim = r
                .voters
                .iter()
                .copied()
                .filter(|v| *v != r.leader)
                .max_by_key(|v| (load.get(v).copied().unwrap_or(0), *v));
            if let Some(v) = victim {
                out.push(act(
                    ReplicaChange::Remove(v),
                    format!("{} voters > replication_factor {rf}", r.voters.len()),
                ));
            }
        }
    }
    out
}

async fn local_get(store: &StoreHandle, key: &[u8]) -> Option<Vec<u8>> {
    match store
        .read(ReadOp::Get(keys::data_key(key)), Consistency::Local)
        .await
    {
        Ok(ReadResult::Value(v)) => v,
        _ => None,
    }
}

async fn local_setting(store: &StoreHandle, name: &str) -> Option<u64> {
    let v = local_get(store, format!("_/cluster/config/{name}").as_bytes()).await?;
    String::from_utf8(v).ok()?.trim().parse().ok()
}

/// The node registry (`_/cluster/nodes/<id>` -> JSON entry), read through
/// this node's Store.
pub async fn registry_entries(
    store: &StoreHandle,
    consistency: Consistency,
) -> crate::Result<Vec<(u64, serde_json::Value)>> {
    let (start, end) = (
        keys::data_key(b"_/cluster/nodes/"),
        keys::data_key(b"_/cluster/nodes0"),
    );
    let op = ReadOp::Scan {
        start,
        end,
        limit: 100_000,
        reverse: false,
    };
    let pairs = match store.read(op, consistency).await? {
        ReadResult::Pairs(p, _) => p,
        ReadResult::Value(_) => Vec::new(),
    };
    Ok(pairs
        .into_iter()
        .filter_map(|(k, v)| {
            let id = keys::user_key(&k)
                .and_then(|u| std::str::from_utf8(&u[b"_/cluster/nodes/".len()..]).ok())
                .and_then(|s| s.parse::<u64>().ok())?;
            Some((id, serde_json::from_slice(&v).unwrap_or_default()))
        })
        .collect())
}

/// The range directory as (0, range id, start key, version), read locally.
async fn directory_entries(store: &StoreHandle) -> Vec<merge::Held> {
    let op = ReadOp::Scan {
        start: keys::data_key(b"_/partitions/"),
        end: keys::data_key(b"_/partitions0"),
        limit: usize::MAX,
        reverse: false,
    };
    let Ok(ReadResult::Pairs(pairs, _)) = store.read(op, Consistency::Local).await else {
        return Vec::new();
    };
    pairs
        .into_iter()
        .filter_map(|(_, v)| {
            let v: serde_json::Value = serde_json::from_slice(&v).ok()?;
            let start = crate::wire::unhex(v["start"].as_str()?)?;
            let end = crate::wire::unhex(v["end"].as_str()?)?;
            Some((
                0,
                v["range_id"].as_u64()?,
                start,
                end,
                v["version"].as_u64()?,
            ))
        })
        .collect()
}

/// Registered nodes: id -> client address, and the ones being decommissioned.
/// A node listed without a client address (an initial peer that has not
/// registered yet, or never started) is kept with `None`: it cannot be
/// asked for its status, so it counts as not answering and, after
/// `dead_node_timeout`, as dead — its replicas are repaired elsewhere.
async fn registry(store: &StoreHandle) -> (BTreeMap<u64, Option<String>>, BTreeSet<u64>) {
    let mut out = BTreeMap::new();
    let mut draining = BTreeSet::new();
    for (id, entry) in registry_entries(store, Consistency::Local)
        .await
        .unwrap_or_default()
    {
        out.insert(id, entry["client_address"].as_str().map(str::to_string));
        if entry["decommissioning"].as_bool() == Some(true) {
            draining.insert(id);
        }
    }
    (out, draining)
}

/// The placement loop (see module docs).
pub async fn run(store: StoreHandle, node_id: u64, mut stop: watch::Receiver<bool>) {
    let mut last_seen: BTreeMap<u64, tokio::time::Instant> = BTreeMap::new();
    let mut was_pd = false;
    let mut last_dead = BTreeSet::new();
    let mut last_report: Option<serde_json::Value> = None;
    let mut client: Option<(Vec<String>, Client)> = None;
    let mut merge_streaks = BTreeMap::new();
    let mut rounds = 0u64;
    // One second while there is work; a calm cluster (nothing to repair,
    // move or merge) is looked at every CALM_INTERVAL: each round reads
    // every node's status, which costs with thousands of ranges.
    let mut interval = Duration::from_secs(1);
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        rounds += 1;
        let Ok(me) = store.status().await else {
            continue;
        };
        let is_pd = me
            .ranges
            .iter()
            .any(|r| r.range_id == SYSTEM_RANGE_ID && r.is_leader);
        if !is_pd {
            if was_pd {
                tracing::info!("no longer the placement driver");
            }
            was_pd = false;
            continue;
        }
        let now = tokio::time::Instant::now();
        if !was_pd {
            tracing::info!("this node is now the placement driver");
            last_seen.clear(); // a new PD gives every node a fresh timeout
            was_pd = true;
        }
        let (nodes, draining) = registry(&store).await;
        let addrs: Vec<String> = nodes.values().flatten().cloned().collect();
        if addrs.is_empty() {
            continue;
        }
        if client.as_ref().map(|(a, _)| a != &addrs).unwrap_or(true) {
            let opts = ClientOptions {
                deadline: Duration::from_secs(3),
                rpc_timeout: Duration::from_secs(2),
                connect_timeout: Duration::from_millis(500),
            };
            match Client::new(addrs.clone(), opts) {
                Ok(c) => client = Some((addrs, c)),
                Err(_) => continue,
            }
        }
        let Some((_, c)) = client.as_ref() else {
            continue;
        };
        let dead_after = Duration::from_secs(
            local_setting(&store, "dead_node_timeout")
                .await
                .unwrap_or(DEFAULT_DEAD_NODE_TIMEOUT_SECS),
        );
        let rf = local_setting(&store, "replication_factor")
            .await
            .map(|v| v as usize)
            .unwrap_or(DEFAULT_REPLICATION_FACTOR);

        let mut ranges: BTreeMap<u64, RangeView> = BTreeMap::new();
        let mut live = BTreeSet::new();
        // (node, range, conf_ver) of every initialized replica, to find stale ones.
        let mut held: Vec<(u64, u64, u64)> = Vec::new();
        let mut held_spans: Vec<merge::Held> = Vec::new();
        for (&id, addr) in &nodes {
            last_seen.entry(id).or_insert(now);
            let status = if id == node_id {
                for r in me
                    .ranges
                    .iter()
                    .filter(|r| !r.descriptor.end_key.is_empty())
                {
                    held.push((id, r.range_id, r.descriptor.conf_ver));
                    held_spans.push((
                        id,
                        r.range_id,
                        r.descriptor.start_key.clone(),
                        r.descriptor.end_key.clone(),
                        r.descriptor.version,
                    ));
                }
                Some(me.ranges.iter().map(to_view_from_local).collect::<Vec<_>>())
            } else if let Some(addr) = addr {
                c.node_status(addr).await.ok().map(|s| {
                    for r in s.ranges.iter().filter(|r| !r.end_key.is_empty()) {
                        held.push((id, r.range_id, r.conf_ver));
                        held_spans.push((
                            id,
                            r.range_id,
                            r.start_key.clone(),
                            r.end_key.clone(),
                            r.version,
                        ));
                    }
                    s.ranges.iter().map(to_view_from_proto).collect()
                })
            } else {
                None // not registered: cannot be asked
            };
            if let Some(views) = status {
                last_seen.insert(id, now);
                live.insert(id);
                for v in views.into_iter().flatten() {
                    ranges.insert(v.range_id, v);
                }
            }
        }
        let mut dead: BTreeSet<u64> = nodes
            .keys()
            .copied()
            .filter(|id| now.duration_since(last_seen[id]) >= dead_after)
            .collect();
        // Decommissioning nodes are drained like dead ones but stay reachable.
        dead.extend(draining.iter().copied());
        if dead != last_dead {
            tracing::info!(?dead, "dead or draining nodes changed");
            last_dead = dead.clone();
        }
        tracing::debug!(rounds, ?live, ?dead, "placement round");
        let all_answered = live.len() == nodes.len();
        let live: BTreeSet<u64> = live.difference(&dead).copied().collect();
        // A replica whose node a newer membership excludes was removed while
        // that node was away: tell the node to drop it.
        for &(id, range_id, conf_ver) in &held {
            let Some(v) = ranges.get(&range_id) else {
                continue;
            };
            let member = v.voters.contains(&id) || v.learners.contains(&id);
            if !member && conf_ver < v.conf_ver {
                if let Some(Some(addr)) = nodes.get(&id) {
                    tracing::info!(
                        range_id,
                        node = id,
                        "asking a node to drop its stale replica"
                    );
                    let _ = c.gc_replica(addr, range_id, v.conf_ver, false).await;
                }
            }
        }
        let by_id = ranges;
        let views: Vec<RangeView> = by_id.values().cloned().collect();
        let mut actions = plan(&views, &live, &dead, rf, 8);
        // Merges: finishing frozen ranges always; starting new ones only
        // while nothing needs repair.
        let limits = merge::MergeLimits {
            max_bytes: local_setting(&store, "merge_max_bytes")
                .await
                .unwrap_or(crate::config::DEFAULT_MERGE_MAX_BYTES)
                .min(
                    local_setting(&store, "range_max_bytes")
                        .await
                        .unwrap_or(crate::config::DEFAULT_RANGE_MAX_BYTES)
                        / 4,
                ),
            max_qps: local_setting(&store, "split_qps").await.map_or(
                crate::config::DEFAULT_SPLIT_QPS / 4,
                |q| {
                    if q == 0 {
                        u64::MAX // load splits are off: load does not block merges
                    } else {
                        q / 4
                    }
                },
            ),
        };
        let limits = if actions.is_empty() {
            limits
        } else {
            merge::MergeLimits {
                max_bytes: 0,
                ..limits
            }
        };
        let step = merge::plan_merge(&views, limits, &mut merge_streaks);
        let merging = step.is_some() || views.iter().any(|v| v.frozen);
        if let Some(step) = step {
            if let Err(e) = merge::execute(c, &step, &by_id).await {
                tracing::info!(?step, %e, "merge step failed; will retry");
            }
        }
        // Leftovers of merged ranges: their replicas and directory entries.
        let mut gone = BTreeSet::new();
        for (node, range_id) in merge::merged_replicas(&held_spans, &views, true) {
            gone.insert(range_id);
            if let Some(Some(addr)) = nodes.get(&node) {
                tracing::info!(range_id, node, "dropping a replica of a merged range");
                let _ = c.gc_replica(addr, range_id, 0, true).await;
            }
        }
        // Directory entries of merged ranges (the same rule). A full scan
        // of the directory: every few rounds.
        if rounds % 4 == 0 {
            let entries = directory_entries(&store).await;
            for (_, range_id) in merge::merged_replicas(&entries, &views, false) {
                gone.insert(range_id);
            }
        }
        if !gone.is_empty() {
            let ops = gone
                .iter()
                .map(|id| {
                    crate::range::Op::delete(crate::range::RangeDescriptor::directory_key(*id))
                })
                .collect();
            let _ = store.write(ops).await;
        }
        if actions.is_empty() {
            // Leader moves are cheap; thousands of ranges need many per round.
            actions.extend(balance_many(&views, &live, rf, BALANCE_STEPS));
        }
        let mut report_actions: Vec<String> = actions
            .iter()
            .map(|a| format!("range {}: {:?} ({})", a.range_id, a.change, a.why))
            .collect();
        for v in &views {
            for l in &v.learners {
                let m = v.matched.get(l).copied().unwrap_or(0);
                report_actions.push(format!(
                    "range {}: learner {l} catching up ({m}/{})",
                    v.range_id, v.last_index
                ));
            }
        }
        let report = serde_json::json!({
            "placement_driver": node_id,
            "jobs": report_actions,
            "blocked": blocked(&views, &live, &dead, rf),
            "dead_nodes": dead.iter().collect::<Vec<_>>(),
        });
        if last_report.as_ref() != Some(&report) {
            let op = crate::range::Op::put(
                keys::data_key(b"_/cluster/placement"),
                report.to_string().into_bytes(),
            );
            if store.write(vec![op]).await.is_ok() {
                last_report = Some(report);
            }
        }
        let busy = !actions.is_empty()
            || merging
            || !dead.is_empty()
            || !all_answered
            || !merge_streaks.is_empty();
        interval = if busy {
            Duration::from_secs(1)
        } else {
            CALM_INTERVAL
        };
        for a in actions {
            tracing::info!(range_id = a.range_id, change = ?a.change, why = %a.why, "placement");
            if let Err(e) = c
                .change_replicas(&a.start_key, a.range_id, a.change, a.conf_ver)
                .await
            {
                tracing::debug!(range_id = a.range_id, %e, "placement change failed; will retry");
            }
        }
    }
}

/// A leader's view of its range (followers report nothing).
fn to_view_from_local(r: &crate::range::ReplicaStatus) -> Option<RangeView> {
    r.is_leader.then(|| RangeView {
        range_id: r.range_id,
        start_key: r.descriptor.start_key.clone(),
        voters: r.voters.clone(),
        learners: r.learners.clone(),
        leader: r.leader_id,
        last_index: r.last_index,
        matched: r.progress.iter().copied().collect(),
        conf_ver: r.descriptor.conf_ver,
        end_key: r.descriptor.end_key.clone(),
        version: r.descriptor.version,
        frozen: r.descriptor.frozen,
        sticky: r.descriptor.sticky,
        approx_bytes: r.approx_bytes,
        qps: r.qps,
    })
}

fn to_view_from_proto(r: &crate::proto::RangeStatus) -> Option<RangeView> {
    r.is_leader.then(|| RangeView {
        range_id: r.range_id,
        start_key: r.start_key.clone(),
        voters: r.voters.clone(),
        learners: r.learners.clone(),
        leader: r.leader_id,
        last_index: r.last_index,
        matched: r.progress.iter().map(|p| (p.node_id, p.matched)).collect(),
        conf_ver: r.conf_ver,
        end_key: r.end_key.clone(),
        version: r.version,
        frozen: r.frozen,
        sticky: r.sticky,
        approx_bytes: r.approx_bytes,
        qps: r.qps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: u64, voters: &[u64], learners: &[u64], matched: &[(u64, u64)]) -> RangeView {
        RangeView {
            range_id: id,
            start_key: vec![id as u8],
            voters: voters.to_vec(),
            learners: learners.to_vec(),
            leader: voters[0],
            last_index: 100,
            matched: matched.iter().copied().collect(),
            conf_ver: 1,
            end_key: vec![id as u8 + 1],
            version: 1,
            frozen: false,
            sticky: false,
            approx_bytes: 0,
            qps: 0,
        }
    }
    fn set(v: &[u64]) -> BTreeSet<u64> {
        v.iter().copied().collect()
    }

    #[test]
    fn a_dead_voter_is_replaced_before_it_is_removed() {
        let live = set(&[1, 2, 4]);
        let dead = set(&[3]);
        let a = plan(&[view(7, &[1, 2, 3], &[], &[])], &live, &dead, 3, 8);
        assert_eq!(a[0].change, ReplicaChange::AddLearner(4), "{a:?}");
        // The learner has not caught up: wait, remove nothing.
        assert!(plan(&[view(7, &[1, 2, 3], &[4], &[(4, 20)])], &live, &dead, 3, 8).is_empty());
        let a = plan(
            &[view(7, &[1, 2, 3], &[4], &[(4, 100)])],
            &live,
            &dead,
            3,
            8,
        );
        assert_eq!(a[0].change, ReplicaChange::Promote(4));
        let a = plan(&[view(7, &[1, 2, 3, 4], &[], &[])], &live, &dead, 3, 8);
        assert_eq!(a[0].change, ReplicaChange::Remove(3));
        assert!(
            plan(&[view(7, &[1, 2, 4], &[], &[])], &live, &dead, 3, 8).is_empty(),
            "done"
        );
    }

    #[test]
    fn replication_factor_up_and_down() {
        let live = set(&[1, 2, 3, 4, 5]);
        let a = plan(&[view(1, &[1, 2, 3], &[], &[])], &live, &set(&[]), 5, 8);
        assert_eq!(a[0].change, ReplicaChange::AddLearner(4));
        let a = plan(
            &[view(1, &[1, 2, 3, 4, 5], &[], &[])],
            &live,
            &set(&[]),
            3,
            8,
        );
        assert!(
            matches!(a[0].change, ReplicaChange::Remove(n) if n != 1),
            "never the leader: {a:?}"
        );
    }

    #[test]
    fn balance_moves_replicas_then_leaders() {
        let live = set(&[1, 2, 3, 4]);
        // Node 4 is empty: a replica moves there from the busiest non-leader node.
        let ranges: Vec<RangeView> = (1..=4).map(|i| view(i, &[1, 2, 3], &[], &[])).collect();
        let a = balance(&ranges, &live, 3).expect("a move");
        assert_eq!(a.change, ReplicaChange::AddLearner(4));
        // Balanced replicas, but node 1 leads everything: hand one leadership off.
        let ranges = vec![
            view(1, &[1, 2, 3], &[], &[]),
            view(2, &[1, 2, 4], &[], &[]),
            view(3, &[1, 3, 4], &[], &[]),
            view(4, &[1, 2, 4], &[], &[]),
        ];
        let a = balance(&ranges, &set(&[1, 2, 3, 4]), 3).expect("a leader move");
        assert!(
            matches!(a.change, ReplicaChange::TransferLeader(n) if n != 1),
            "{a:?}"
        );
        // Within one of each other: nothing to do.
        let ranges = vec![
            view(1, &[1, 2, 3], &[], &[]),
            view(2, &[4, 2, 3], &[], &[]),
            view(3, &[2, 1, 4], &[], &[]),
            view(4, &[3, 4, 1], &[], &[]),
        ];
        assert_eq!(balance(&ranges, &set(&[1, 2, 3, 4]), 3), None);
    }

    #[test]
    fn fewest_live_voters_first_and_bounded() {
        let live = set(&[1, 4, 5]);
        let dead = set(&[2, 3]);
        let ranges = [view(1, &[1, 2, 4], &[], &[]), view(2, &[1, 2, 3], &[], &[])];
        let a = plan(&ranges, &live, &dead, 3, 1);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].range_id, 2, "the range with one live voter goes first");
    }
}
