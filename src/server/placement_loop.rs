//! The placement driver loop: runs on every node, acts only while this node
//! leads the system range, and so fails over with it. Decisions are the
//! pure functions of `placement`; this file does the IO: it probes the
//! registered nodes, marks a node dead once it has not answered for
//! `dead_node_timeout` (a registered node without a client address cannot
//! be asked and so counts as not answering; a node whose registry entry is
//! corrupt is never declared dead, it is reported), collects stale
//! replicas, runs merges, publishes its report (`_/cluster/placement`) and
//! carries out the planned changes through the SDK.
//!
//! One round every second while there is work; a calm cluster (nothing to
//! repair, move or merge) every CALM_INTERVAL — each round reads every
//! node's status, which costs with thousands of ranges.
//!
//! CAVEATS: liveness is in the PD's memory (a new PD grants every node a
//! fresh timeout).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::registry::{read_registry, read_settings};
use crate::api::meta;
use crate::api::Registry;
use crate::api::ReplicaChange;
use crate::client::{Client, ClientOptions};
use crate::config::ClusterSettings;
use crate::keys;
use crate::metrics;
use crate::node::{Consistency, NodeStatus, StoreHandle};
use crate::placement::merge::{self, Held, MergeLimits, MergeStep};
use crate::placement::{self, Action, RangeView, BALANCE_STEPS_PER_ROUND, REPAIRS_PER_ROUND};
use crate::range::{Op, RangeDescriptor, ReadOp, ReadResult, SYSTEM_RANGE_ID};
use crate::tls::TlsMaterial;

/// Rounds of a calm cluster are this far apart...
const CALM_INTERVAL: Duration = Duration::from_secs(3);
/// ...and of a busy one this far.
const BUSY_INTERVAL: Duration = Duration::from_secs(1);
/// The range directory is scanned for merged ranges every this many rounds.
const DIRECTORY_SCAN_ROUNDS: u64 = 4;
/// The PD's client: short budgets, a round must not hang on a dead node.
const PD_CALL_DEADLINE: Duration = Duration::from_secs(3);
const PD_RPC_TIMEOUT: Duration = Duration::from_secs(2);
const PD_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Runs the placement loop until `stop` flips.
pub async fn run(
    store: StoreHandle,
    node_id: u64,
    tls: Option<Arc<TlsMaterial>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut pd = PlacementDriver::new(store, node_id, tls);
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            _ = tokio::time::sleep(pd.interval) => {}
        }
        pd.round().await;
    }
}

/// What one round learned from the nodes.
#[derive(Default)]
struct Survey {
    ranges: BTreeMap<u64, RangeView>,
    /// Nodes that answered.
    answered: BTreeSet<u64>,
    /// (node, range, conf_ver) of every initialized replica.
    held: Vec<(u64, u64, u64)>,
    held_spans: Vec<Held>,
}

impl Survey {
    /// Notes an initialized replica (`end` non-empty) that `node` holds.
    fn hold(
        &mut self,
        node: u64,
        range_id: u64,
        start: &[u8],
        end: &[u8],
        version: u64,
        conf_ver: u64,
    ) {
        if end.is_empty() {
            return;
        }
        self.held.push((node, range_id, conf_ver));
        self.held_spans
            .push((node, range_id, start.to_vec(), end.to_vec(), version));
    }
}

/// What the placement driver sees of the cluster in a round (its gauges).
struct ClusterView<'a> {
    views: &'a [RangeView],
    live: &'a BTreeSet<u64>,
    dead: &'a BTreeSet<u64>,
    rf: usize,
}

struct PlacementDriver {
    store: StoreHandle,
    node_id: u64,
    last_seen: BTreeMap<u64, Instant>,
    was_pd: bool,
    last_dead: BTreeSet<u64>,
    last_report: Option<serde_json::Value>,
    client: Option<(Vec<String>, Arc<Client>)>,
    /// The node's TLS identity for its calls to other nodes.
    tls: Option<Arc<TlsMaterial>>,
    merge_streaks: BTreeMap<(u64, u64), u32>,
    rounds: u64,
    interval: Duration,
}

impl PlacementDriver {
    fn new(store: StoreHandle, node_id: u64, tls: Option<Arc<TlsMaterial>>) -> Self {
        PlacementDriver {
            store,
            node_id,
            last_seen: BTreeMap::new(),
            was_pd: false,
            last_dead: BTreeSet::new(),
            last_report: None,
            client: None,
            tls,
            merge_streaks: BTreeMap::new(),
            rounds: 0,
            interval: BUSY_INTERVAL,
        }
    }

    async fn round(&mut self) {
        self.rounds += 1;
        let Ok(me) = self.store.status().await else {
            return;
        };
        if !self.take_role(&me) {
            self.publish_gauges(None);
            return;
        }
        let registry = match read_registry(&self.store, Consistency::Local).await {
            Ok(r) => r,
            Err(e) => return tracing::warn!(%e, "placement: cannot read the registry"),
        };
        let settings = match read_settings(&self.store, Consistency::Local).await {
            Ok(s) => s,
            Err(e) => return tracing::error!(%e, "placement: cluster settings are unreadable"),
        };
        let Some(c) = self.client_for(&registry) else {
            return;
        };
        let survey = self.survey(&me, &registry, &c).await;
        let dead = self.dead_nodes(&registry, &settings);
        let all_answered = survey.answered.len() == registry.entries.len();
        let live: BTreeSet<u64> = survey.answered.difference(&dead).copied().collect();
        collect_stale(&c, &survey, &registry).await;
        let views: Vec<RangeView> = survey.ranges.values().cloned().collect();
        let rf = settings.replication_factor;
        self.publish_gauges(Some(ClusterView {
            views: &views,
            live: &live,
            dead: &dead,
            rf,
        }));
        let mut actions = placement::plan(&views, &live, &dead, rf, REPAIRS_PER_ROUND);
        let merging = self
            .merges(&c, &survey, &views, &settings, !actions.is_empty())
            .await;
        self.drop_merged_leftovers(&c, &survey, &views, &registry)
            .await;
        if actions.is_empty() {
            // Leader moves are cheap; thousands of ranges need many per round.
            actions.extend(placement::balance_many(
                &views,
                &live,
                rf,
                BALANCE_STEPS_PER_ROUND,
            ));
        }
        self.report(&actions, &views, &live, &dead, &registry, rf)
            .await;
        let busy = !actions.is_empty()
            || merging
            || !dead.is_empty()
            || !all_answered
            || !self.merge_streaks.is_empty();
        self.interval = if busy { BUSY_INTERVAL } else { CALM_INTERVAL };
        for a in actions {
            tracing::info!(range_id = a.range_id, change = ?a.change, why = %a.why, "placement");
            self.store.metrics().job(match a.change {
                ReplicaChange::TransferLeader(_) => metrics::JOB_LEADER,
                _ => metrics::JOB_REPLICA,
            });
            let start = keys::route_key(&a.start_key);
            if let Err(e) = c
                .change_replicas(&start, a.range_id, a.change, a.conf_ver)
                .await
            {
                tracing::debug!(range_id = a.range_id, %e, "placement change failed; will retry");
            }
        }
    }

    /// The placement driver's gauges: its view of the cluster (`None`: this
    /// node is not the driver, every gauge reads 0 so sums over nodes hold).
    fn publish_gauges(&self, view: Option<ClusterView<'_>>) {
        let m = self.store.metrics();
        let Some(ClusterView {
            views,
            live,
            dead,
            rf,
        }) = view
        else {
            for g in [
                &m.placement_driver,
                &m.ranges,
                &m.ranges_underreplicated,
                &m.ranges_unavailable,
                &m.live_nodes,
                &m.dead_nodes,
            ] {
                g.set(0);
            }
            return;
        };
        let health = placement::replication_health(views, live, rf);
        m.placement_driver.set(1);
        m.ranges.set(views.len() as i64);
        m.ranges_underreplicated.set(health.underreplicated as i64);
        m.ranges_unavailable.set(health.unavailable as i64);
        m.live_nodes.set(live.len() as i64);
        m.dead_nodes.set(dead.len() as i64);
    }

    /// Whether this node is the placement driver now (it leads the system
    /// range); logs when that changes.
    fn take_role(&mut self, me: &NodeStatus) -> bool {
        let is_pd = me
            .ranges
            .iter()
            .any(|r| r.range_id == SYSTEM_RANGE_ID && r.is_leader);
        if is_pd && !self.was_pd {
            tracing::info!("this node is now the placement driver");
            self.last_seen.clear(); // a new PD gives every node a fresh timeout
        } else if !is_pd && self.was_pd {
            tracing::info!("no longer the placement driver");
        }
        self.was_pd = is_pd;
        is_pd
    }

    fn client_for(&mut self, registry: &Registry) -> Option<Arc<Client>> {
        let addrs: Vec<String> = registry
            .entries
            .values()
            .filter_map(|e| e.client_address.clone())
            .collect();
        if addrs.is_empty() {
            return None;
        }
        if self.client.as_ref().is_none_or(|(a, _)| a != &addrs) {
            let opts = ClientOptions {
                deadline: PD_CALL_DEADLINE,
                rpc_timeout: PD_RPC_TIMEOUT,
                connect_timeout: PD_CONNECT_TIMEOUT,
                tls: self.tls.clone(),
                token: None,
            };
            let c = Client::new(addrs.clone(), opts).ok()?;
            self.client = Some((addrs, Arc::new(c)));
        }
        self.client.as_ref().map(|(_, c)| c.clone())
    }

    /// Asks every registered node for its status (this one directly).
    async fn survey(&mut self, me: &NodeStatus, registry: &Registry, c: &Client) -> Survey {
        let now = Instant::now();
        let mut s = Survey::default();
        for (&id, entry) in &registry.entries {
            self.last_seen.entry(id).or_insert(now);
            let views = if id == self.node_id {
                for r in &me.ranges {
                    let d = &r.descriptor;
                    s.hold(
                        id,
                        r.range_id,
                        &d.start_key,
                        &d.end_key,
                        d.version,
                        d.conf_ver,
                    );
                }
                Some(
                    me.ranges
                        .iter()
                        .filter_map(RangeView::from_status)
                        .collect::<Vec<_>>(),
                )
            } else if let Some(addr) = &entry.client_address {
                c.node_status(addr).await.ok().map(|st| {
                    for r in &st.ranges {
                        s.hold(
                            id,
                            r.range_id,
                            &r.start_key,
                            &r.end_key,
                            r.version,
                            r.conf_ver,
                        );
                    }
                    st.ranges.iter().filter_map(view_from_proto).collect()
                })
            } else {
                None // not registered: cannot be asked
            };
            if let Some(views) = views {
                self.last_seen.insert(id, now);
                s.answered.insert(id);
                for v in views {
                    s.ranges.insert(v.range_id, v);
                }
            }
        }
        s
    }

    /// Nodes whose replicas must move: silent for `dead_node_timeout`, or
    /// being decommissioned (drained like dead ones but still reachable).
    fn dead_nodes(&mut self, registry: &Registry, settings: &ClusterSettings) -> BTreeSet<u64> {
        let now = Instant::now();
        let mut dead: BTreeSet<u64> = registry
            .entries
            .keys()
            .copied()
            .filter(|id| {
                self.last_seen
                    .get(id)
                    .is_some_and(|t| now.duration_since(*t) >= settings.dead_node_timeout)
            })
            .collect();
        dead.extend(
            registry
                .entries
                .iter()
                .filter(|(_, e)| e.decommissioning)
                .map(|(id, _)| *id),
        );
        if dead != self.last_dead {
            tracing::info!(?dead, "dead or draining nodes changed");
            self.last_dead = dead.clone();
        }
        tracing::debug!(rounds = self.rounds, ?dead, "placement round");
        dead
    }

    /// Merges: finishing frozen ranges always; starting new ones only while
    /// nothing needs repair. Returns whether a merge is under way.
    async fn merges(
        &mut self,
        c: &Client,
        survey: &Survey,
        views: &[RangeView],
        settings: &ClusterSettings,
        repairing: bool,
    ) -> bool {
        let limits = MergeLimits {
            max_bytes: if repairing {
                0
            } else {
                settings.merge_limit_bytes()
            },
            max_qps: settings.merge_limit_qps(),
        };
        let step = merge::plan_merge(views, limits, &mut self.merge_streaks);
        let merging = step.is_some() || views.iter().any(|v| v.frozen);
        if let Some(step) = step {
            self.store.metrics().job(metrics::JOB_MERGE);
            if let Err(e) = execute_merge(c, &step, &survey.ranges).await {
                tracing::info!(?step, %e, "merge step failed; will retry");
            }
        }
        merging
    }

    /// Leftovers of merged ranges: their replicas and directory entries.
    async fn drop_merged_leftovers(
        &mut self,
        c: &Client,
        survey: &Survey,
        views: &[RangeView],
        registry: &Registry,
    ) {
        let mut gone = BTreeSet::new();
        for (node, range_id) in merge::merged_replicas(&survey.held_spans, views, true) {
            gone.insert(range_id);
            if let Some(addr) = registry
                .entries
                .get(&node)
                .and_then(|e| e.client_address.as_ref())
            {
                tracing::info!(range_id, node, "dropping a replica of a merged range");
                let _ = c.gc_replica(addr, range_id, 0, true).await;
            }
        }
        // Directory entries of merged ranges (the same rule): a full scan
        // of the directory, every few rounds.
        if self.rounds.is_multiple_of(DIRECTORY_SCAN_ROUNDS) {
            let entries = directory_entries(&self.store).await;
            for (_, range_id) in merge::merged_replicas(&entries, views, false) {
                gone.insert(range_id);
            }
        }
        if !gone.is_empty() {
            let ops = gone
                .iter()
                .map(|id| Op::delete(RangeDescriptor::directory_key(*id)))
                .collect();
            let _ = self.store.write(ops).await;
        }
    }

    /// Publishes what the PD is doing and what blocks it (shown by `admin
    /// cluster status`) when it changed.
    async fn report(
        &mut self,
        actions: &[Action],
        views: &[RangeView],
        live: &BTreeSet<u64>,
        dead: &BTreeSet<u64>,
        registry: &Registry,
        rf: usize,
    ) {
        let mut jobs: Vec<String> = actions
            .iter()
            .map(|a| format!("range {}: {:?} ({})", a.range_id, a.change, a.why))
            .collect();
        for v in views {
            for l in &v.learners {
                let m = v.matched.get(l).copied().unwrap_or(0);
                jobs.push(format!(
                    "range {}: learner {l} catching up ({m}/{})",
                    v.range_id, v.last_index
                ));
            }
        }
        let mut blocked = placement::blocked(views, live, dead, rf);
        blocked.extend(registry.corrupt.iter().map(|(id, why)| match id {
            Some(id) => format!("node {id} is not managed: its {why}"),
            None => why.clone(),
        }));
        let report = serde_json::json!({
            "placement_driver": self.node_id,
            "jobs": jobs,
            "blocked": blocked,
            "dead_nodes": dead.iter().collect::<Vec<_>>(),
        });
        if self.last_report.as_ref() != Some(&report) {
            let op = Op::put(
                keys::system(meta::PLACEMENT),
                report.to_string().into_bytes(),
            );
            if self.store.write(vec![op]).await.is_ok() {
                self.last_report = Some(report);
            }
        }
    }
}

/// A replica whose node a newer membership excludes was removed while that
/// node was away: tell the node to drop it.
async fn collect_stale(c: &Client, survey: &Survey, registry: &Registry) {
    for &(id, range_id, conf_ver) in &survey.held {
        let Some(v) = survey.ranges.get(&range_id) else {
            continue;
        };
        let member = v.voters.contains(&id) || v.learners.contains(&id);
        if member || conf_ver >= v.conf_ver {
            continue;
        }
        if let Some(addr) = registry
            .entries
            .get(&id)
            .and_then(|e| e.client_address.as_ref())
        {
            tracing::info!(
                range_id,
                node = id,
                "asking a node to drop its stale replica"
            );
            let _ = c.gc_replica(addr, range_id, v.conf_ver, false).await;
        }
    }
}

/// Simulation only: how often, and at most how long, a merge pauses
/// between freezing the right-hand range and merging it.
const BUGGIFY_MERGE_PAUSE_PROBABILITY: f64 = 0.5;
const BUGGIFY_MERGE_PAUSE: Duration = Duration::from_millis(800);

/// Runs steps 1 and 2 of a merge (see `placement::merge`); `views` holds
/// this round's leader views. The caller then drops the leftovers.
async fn execute_merge(
    c: &Client,
    step: &MergeStep,
    views: &BTreeMap<u64, RangeView>,
) -> crate::Result<()> {
    let (Some(l), Some(r)) = (views.get(&step.lhs), views.get(&step.rhs)) else {
        return Ok(());
    };
    tracing::info!(
        lhs = l.range_id,
        rhs = r.range_id,
        "merging range {} into range {}",
        r.range_id,
        l.range_id
    );
    let frozen = c
        .freeze_range(&keys::route_key(&r.start_key), r.range_id, r.version)
        .await?;
    // BUGGIFY: a placement driver slow between the two steps keeps the
    // right-hand range frozen longer (writes there wait and retry).
    let pause = crate::chaos::buggify_delay(BUGGIFY_MERGE_PAUSE_PROBABILITY, BUGGIFY_MERGE_PAUSE);
    if !pause.is_zero() {
        tokio::time::sleep(pause).await;
    }
    c.merge_ranges(
        &keys::route_key(&l.start_key),
        l.range_id,
        l.version,
        frozen,
    )
    .await
}

/// The range directory as (0, range id, start key, end key, version),
/// read locally.
async fn directory_entries(store: &StoreHandle) -> Vec<Held> {
    let (start, end) = keys::prefix_bounds(meta::PARTITIONS_PREFIX.as_bytes());
    let op = ReadOp::Scan {
        start,
        end,
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

/// A leader's view of its range from a node status (followers report
/// nothing).
fn view_from_proto(r: &crate::proto::RangeStatus) -> Option<RangeView> {
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
