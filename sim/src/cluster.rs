//! The simulated cluster: nodes, disks, clients and fault injection.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use madsim::net::NetSim;
use madsim::runtime::{Handle, NodeHandle};
use rangedb::client::{Client, ClientOptions};
use rangedb::clock::NodeClock;
use rangedb::config::ServerConfig;
use rangedb::keys;
use rangedb::proto::NodeStatusResponse;
use rangedb::storage::memory::{INJECTED_READ_ERROR, INJECTED_SYNC_ERROR};
use rangedb::storage::MemEngine;
use tokio::sync::watch;

/// One simulated server: its host, its disk and its addresses.
pub struct SimNode {
    pub id: u64,
    pub handle: NodeHandle,
    pub engine: MemEngine,
    pub clock: NodeClock,
    pub client_address: String,
}

pub struct Cluster {
    pub nodes: Vec<SimNode>,
    pub client_host: NodeHandle,
    seed: u64,
    /// Started with `ClusterOptions::tls`.
    tls: bool,
}

/// A stand-in certificate: its "PEM" is the identity it proves
/// (`node`, `user:<name>`; empty: only the CA).
fn sim_certificate(identity: &str) -> rangedb::tls::TlsMaterial {
    rangedb::tls::TlsMaterial {
        ca_pem: b"sim-ca".to_vec(),
        cert_pem: identity.as_bytes().to_vec(),
        key_pem: Vec::new(),
        source: "simulation".into(),
    }
}

/// The one-line command that replays this run.
pub fn replay_hint(seed: u64) -> String {
    format!("replay: make sim-tests SEED={seed}")
}

/// Logs to stderr when RUST_LOG is set (e.g. `RUST_LOG=info make sim SEED=…`).
fn init_logging() {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .try_init();
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("static ip")
}

/// Knobs of a simulated cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub nodes: usize,
    /// Compact a range's log after this many applied entries.
    pub log_compact_entries: u64,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    pub max_msgs_per_loop: usize,
    /// The last node (when 1) is not in the initial peer list: it joins the
    /// running cluster a few seconds in, as a new node.
    pub joiners: usize,
    /// Nodes run "with TLS": simulated connections carry none, but the
    /// nodes behave as TLS nodes (authentication may be enabled) and
    /// clients state the identity a certificate would prove
    /// (`rangedb::tls::SIM_IDENTITY`).
    pub tls: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            log_compact_entries: rangedb::config::DEFAULT_LOG_COMPACT_ENTRIES,
            election_ticks: rangedb::config::DEFAULT_ELECTION_TICKS,
            heartbeat_ticks: rangedb::config::DEFAULT_HEARTBEAT_TICKS,
            max_msgs_per_loop: rangedb::config::DEFAULT_MAX_MSGS_PER_LOOP,
            joiners: 0,
            tls: false,
        }
    }
}

impl Cluster {
    /// Starts `n` nodes forming one cluster (node 1 initializes it).
    pub fn start(n: usize) -> Cluster {
        Self::start_with(ClusterOptions {
            nodes: n,
            ..Default::default()
        })
    }

    pub fn start_with(opts: ClusterOptions) -> Cluster {
        init_logging();
        let n = opts.nodes;
        let h = Handle::current();
        let peers: Vec<String> = (1..=n).map(|i| format!("10.0.0.{i}:8080")).collect();
        // At most one joiner, so its node id (given by the cluster) is n.
        let joiners = opts.joiners.min(1).min(n - 1);
        let initial: Vec<String> = peers[..n - joiners].to_vec();
        let mut nodes = Vec::new();
        for i in 1..=n {
            let engine = MemEngine::new();
            let clock = NodeClock::default();
            let cfg = ServerConfig {
                peer_address: peers[i - 1].clone(),
                client_address: format!("10.0.0.{i}:8081"),
                peers: initial.clone(),
                cluster_init: i == 1,
                data_dir: format!("sim-node-{i}").into(),
                log_compact_entries: opts.log_compact_entries,
                election_ticks: opts.election_ticks,
                heartbeat_ticks: opts.heartbeat_ticks,
                max_msgs_per_loop: opts.max_msgs_per_loop,
                clock: clock.clone(),
                max_clock_drift_ppm: crate::nemesis::DRIFT_BOUND_PPM,
                tls: opts.tls.then(|| Arc::new(sim_certificate("node"))),
                ..Default::default()
            };
            let disk = engine.clone();
            let handle = h
                .create_node()
                .name(format!("node-{i}"))
                .ip(ip(&format!("10.0.0.{i}")))
                .init(move || {
                    let cfg = cfg.clone();
                    let disk = disk.clone();
                    let joiner = i > n - joiners;
                    async move {
                        if joiner && rangedb::storage::Engine::is_empty(&disk).unwrap_or(false) {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                        }
                        let (_keep_running, rx) = watch::channel(false);
                        match rangedb::server::run_node(cfg, Arc::new(disk), rx).await {
                            Ok(()) => {}
                            // The node stopped on an injected disk error (as
                            // it must, rather than skip an entry): it exits,
                            // and the nemesis restarts it as a supervisor would.
                            Err(e)
                                if e.to_string().contains(INJECTED_READ_ERROR)
                                    || e.to_string().contains(INJECTED_SYNC_ERROR) =>
                            {
                                let _ = (i, e);
                            }
                            Err(e) => panic!("node stopped with an error: {e}"),
                        }
                    }
                })
                .build();
            nodes.push(SimNode {
                id: i as u64,
                handle,
                engine,
                clock,
                client_address: format!("10.0.0.{i}:8081"),
            });
        }
        let client_host = h.create_node().name("client").ip(ip("10.0.1.1")).build();
        Cluster {
            nodes,
            client_host,
            seed: h.seed(),
            tls: opts.tls,
        }
    }

    /// A client acting as `user` (the identity its certificate would
    /// prove; `None`: no certificate) with a login token, if any. Only in
    /// a cluster started with `tls`.
    pub fn client_as(
        &self,
        deadline: Duration,
        user: Option<&str>,
        token: Option<String>,
    ) -> Client {
        self.client_as_via(deadline, user, token, 0)
    }

    /// `client_as`, trying the nodes from the `first`-th (mod n) on.
    pub fn client_as_via(
        &self,
        deadline: Duration,
        user: Option<&str>,
        token: Option<String>,
        first: usize,
    ) -> Client {
        assert!(self.tls, "client_as needs a cluster started with tls");
        let cert = match user {
            Some(u) => sim_certificate(&format!("user:{u}")),
            None => sim_certificate(""),
        };
        let opts = ClientOptions {
            deadline,
            tls: Some(Arc::new(cert)),
            token,
            ..Default::default()
        };
        let mut eps = self.endpoints();
        let k = first % eps.len();
        eps.rotate_left(k);
        Client::new(eps, opts).expect("valid endpoints")
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| n.client_address.clone())
            .collect()
    }

    pub fn client(&self, deadline: Duration) -> Client {
        let mut opts = ClientOptions {
            deadline,
            ..Default::default()
        };
        // A write stuck at a cut-off leader gives up soon and finds the new
        // leader, while other clients still read from the old one: the
        // window a lease that outlives its promise needs to be seen.
        if rangedb::chaos::canary(rangedb::chaos::Canary::LeaseDriftBeyondBound) {
            opts.rpc_timeout = Duration::from_millis(300);
        }
        Client::new(self.endpoints(), opts).expect("valid endpoints")
    }

    pub fn node(&self, id: u64) -> &SimNode {
        &self.nodes[(id - 1) as usize]
    }

    /// Power loss: the node stops and its unsynced writes are gone.
    pub fn kill(&self, id: u64) {
        let n = self.node(id);
        Handle::current().kill(n.handle.id());
        n.engine.crash();
    }

    pub fn restart(&self, id: u64) {
        Handle::current().restart(self.node(id).handle.id());
    }

    /// Whether node `id`'s server stopped by itself (an injected disk error).
    pub fn stopped(&self, id: u64) -> bool {
        Handle::current().is_exit(self.node(id).handle.id())
    }

    /// Restarts a node whose server stopped by itself (an injected disk
    /// error); returns whether it had stopped. Killing it first releases its
    /// sockets.
    pub fn restart_if_stopped(&self, id: u64) -> bool {
        let h = Handle::current();
        let node = self.node(id).handle.id();
        if !h.is_exit(node) {
            return false;
        }
        h.kill(node);
        h.restart(node);
        true
    }

    /// Stops scheduling the node's tasks (a GC or VM pause); timers and
    /// network deliveries still happen.
    pub fn pause(&self, id: u64) {
        Handle::current().pause(self.node(id).handle.id());
    }

    pub fn resume(&self, id: u64) {
        Handle::current().resume(self.node(id).handle.id());
    }

    /// Drops traffic from `from` to `to` only.
    pub fn clog_one_way(&self, from: u64, to: u64) {
        NetSim::current().clog_link(self.node(from).handle.id(), self.node(to).handle.id());
    }

    /// Sets message latency and loss for the whole network.
    pub fn set_network(&self, latency: std::ops::Range<Duration>, loss: f64) {
        NetSim::current().update_config(|c| {
            c.send_latency = latency.clone();
            c.packet_loss_rate = loss;
        });
    }

    /// Cuts every link between `a` and `b`, both ways.
    pub fn partition(&self, a: &[u64], b: &[u64]) {
        let net = NetSim::current();
        for &x in a {
            for &y in b {
                let (x, y) = (self.node(x).handle.id(), self.node(y).handle.id());
                net.clog_link(x, y);
                net.clog_link(y, x);
            }
        }
    }

    /// Cuts `id` off from every other node (clients can still reach it).
    pub fn isolate(&self, id: u64) {
        let others: Vec<u64> = self
            .nodes
            .iter()
            .map(|n| n.id)
            .filter(|&o| o != id)
            .collect();
        self.partition(&[id], &others);
    }

    /// Restores every link between nodes and the default network.
    pub fn heal(&self) {
        self.set_network(Duration::from_millis(1)..Duration::from_millis(10), 0.0);
        let net = NetSim::current();
        for a in &self.nodes {
            for b in &self.nodes {
                if a.id != b.id {
                    net.unclog_link(a.handle.id(), b.handle.id());
                }
            }
        }
    }

    /// A client for the harness's admin calls: short deadlines, so a call
    /// to a dead or cut-off node fails fast.
    fn admin_client(&self) -> Client {
        let opts = ClientOptions {
            deadline: Duration::from_secs(2),
            rpc_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_millis(500),
            // As root in a TLS cluster (the auth simulation makes one).
            tls: self.tls.then(|| Arc::new(sim_certificate("user:root"))),
            token: None,
        };
        Client::new(self.endpoints(), opts).expect("valid endpoints")
    }

    /// Node statuses as seen from the client host (unreachable nodes omitted).
    pub async fn statuses(&self) -> Vec<NodeStatusResponse> {
        let client = self.admin_client();
        let eps = self.endpoints();
        self.client_host
            .spawn(async move {
                let mut out = Vec::new();
                for ep in eps {
                    if let Ok(s) = client.node_status(&ep).await {
                        out.push(s);
                    }
                }
                out
            })
            .await
            .expect("client host task")
    }

    /// The leader of `range_id` as reported by its own node, if any.
    pub async fn leader(&self, range_id: u64) -> Option<u64> {
        self.statuses()
            .await
            .iter()
            .find(|s| {
                s.ranges
                    .iter()
                    .any(|r| r.range_id == range_id && r.is_leader)
            })
            .map(|s| s.node_id)
    }

    /// The range holding user key `key` and the node leading it, as the
    /// leader reports.
    pub async fn leader_of_key(&self, key: &[u8]) -> Option<(u64, u64)> {
        let k = rangedb::keys::data_key(key);
        self.statuses().await.iter().find_map(|s| {
            s.ranges
                .iter()
                .find(|r| {
                    r.is_leader
                        && r.start_key.as_slice() <= k.as_slice()
                        && (r.end_key.is_empty() || k.as_slice() < r.end_key.as_slice())
                })
                .map(|r| (r.range_id, s.node_id))
        })
    }

    /// Asks the leader of `range_id` to hand its leadership to node `to`;
    /// the node that led.
    pub async fn transfer_leader(&self, range_id: u64, to: u64) -> Result<u64, String> {
        let statuses = self.statuses().await;
        let (from, start) = statuses
            .iter()
            .find_map(|s| {
                s.ranges
                    .iter()
                    .find(|r| r.range_id == range_id && r.is_leader)
                    .map(|r| (s.node_id, r.start_key.clone()))
            })
            .ok_or("no leader known")?;
        if from == to {
            return Err(format!("node {to} leads it already"));
        }
        let client = self.admin_client();
        let change = rangedb::api::ReplicaChange::TransferLeader(to);
        self.client_host
            .spawn(async move {
                client
                    .change_replicas(&start, range_id, change, 0)
                    .await
                    .map(|_| from)
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| format!("client host task: {e}"))?
    }

    /// The status of node `id`, if reachable.
    pub async fn status(&self, id: u64) -> Option<NodeStatusResponse> {
        self.statuses().await.into_iter().find(|s| s.node_id == id)
    }

    /// Waits until every range has a leader; panics after `limit`.
    pub async fn wait_for_leaders(&self, limit: Duration) {
        let start = tokio::time::Instant::now();
        loop {
            let st = self.statuses().await;
            let ok = st.len() == self.nodes.len() && leaders_everywhere(&st);
            if ok {
                return;
            }
            if start.elapsed() > limit {
                panic!(
                    "no leader for every range within {limit:?}: {st:?}\n{}",
                    replay_hint(self.seed)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until every range's members (per its leader) hold it,
    /// initialized and at the same applied index, no other node holds it,
    /// and — when `rf` is given — every range has exactly `rf` voters and no
    /// learners. Then checks that members agree on the apply hash chain and
    /// on the range's data, that all members agree on spans and versions,
    /// and that the ranges tile the keyspace with no gap or overlap. Returns
    /// each node's data keys. Err describes a divergence or a timeout.
    pub async fn converge(
        &self,
        limit: Duration,
        rf: Option<usize>,
    ) -> Result<Vec<Vec<(Vec<u8>, Vec<u8>)>>, String> {
        let start = tokio::time::Instant::now();
        loop {
            let st = self.statuses().await;
            let mut why = String::new();
            if st.len() != self.nodes.len() {
                why = format!("{} of {} nodes answer", st.len(), self.nodes.len());
            }
            // Each range, as its leader describes it.
            let mut leaders: std::collections::BTreeMap<u64, &rangedb::proto::RangeStatus> =
                Default::default();
            for s in &st {
                for r in s.ranges.iter().filter(|r| r.is_leader) {
                    leaders.insert(r.range_id, r);
                }
            }
            let mut ids: Vec<u64> = st
                .iter()
                .flat_map(|s| s.ranges.iter().map(|r| r.range_id))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            for &range_id in &ids {
                if !why.is_empty() {
                    break;
                }
                let Some(leader) = leaders.get(&range_id) else {
                    if st.iter().any(|s| {
                        s.ranges
                            .iter()
                            .any(|r| r.range_id == range_id && !r.end_key.is_empty())
                    }) {
                        why = format!("range {range_id} has no leader");
                    }
                    continue;
                };
                if leader.frozen {
                    why = format!("range {range_id} is frozen: a merge is under way");
                    continue;
                }
                if let Some(rf) = rf {
                    if leader.voters.len() != rf || !leader.learners.is_empty() {
                        why = format!(
                            "range {range_id} has voters {:?} learners {:?}, want {rf} voters",
                            leader.voters, leader.learners
                        );
                        continue;
                    }
                }
                let members: Vec<u64> = leader
                    .voters
                    .iter()
                    .chain(leader.learners.iter())
                    .copied()
                    .collect();
                let mut seen: Vec<(u64, u64, u64)> = Vec::new();
                for s in &st {
                    let r = s
                        .ranges
                        .iter()
                        .find(|r| r.range_id == range_id && !r.end_key.is_empty());
                    match (members.contains(&s.node_id), r) {
                        (true, Some(r)) => seen.push((s.node_id, r.applied, r.apply_hash)),
                        (true, None) => {
                            why = format!("node {} does not hold range {range_id} yet", s.node_id)
                        }
                        (false, Some(_)) => {
                            why = format!(
                                "node {} still holds range {range_id} it was removed from",
                                s.node_id
                            )
                        }
                        (false, None) => {}
                    }
                }
                if !why.is_empty() || seen.is_empty() {
                    continue;
                }
                if seen.iter().all(|&(_, a, _)| a == seen[0].1) {
                    if seen.iter().any(|&(_, _, h)| h != seen[0].2) {
                        return Err(format!(
                            "range {range_id}: replicas applied the same index {} but their apply hashes differ \
                             (node, applied, hash): {seen:?}",
                            seen[0].1
                        ));
                    }
                } else {
                    why =
                        format!("range {range_id} replicas at different applied indexes {seen:?}");
                }
            }
            if why.is_empty() {
                check_tiling(&st, &leaders)?;
                let dumps: Vec<Vec<(Vec<u8>, Vec<u8>)>> = self
                    .nodes
                    .iter()
                    .map(|n| {
                        n.engine
                            .dump()
                            .into_iter()
                            // Data: plain system values and MVCC records
                            // of user data (compared raw, versions included).
                            .filter(|(k, _)| {
                                keys::user_key(k).is_some() || keys::split_mvcc(k).is_some()
                            })
                            .collect()
                    })
                    .collect();
                // The dumps are only comparable if nothing was applied while
                // they were taken (the directory publisher keeps writing).
                let applied = |st: &[NodeStatusResponse]| -> Vec<(u64, u64, u64)> {
                    let mut v: Vec<(u64, u64, u64)> = st
                        .iter()
                        .flat_map(|s| {
                            s.ranges
                                .iter()
                                .map(move |r| (s.node_id, r.range_id, r.applied))
                        })
                        .collect();
                    v.sort_unstable();
                    v
                };
                if applied(&self.statuses().await) != applied(&st) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                for (range_id, leader) in &leaders {
                    let within = |d: &Vec<(Vec<u8>, Vec<u8>)>| -> Vec<(Vec<u8>, Vec<u8>)> {
                        d.iter()
                            .filter(|(k, _)| *k >= leader.start_key && *k < leader.end_key)
                            .cloned()
                            .collect()
                    };
                    let members: Vec<u64> = leader
                        .voters
                        .iter()
                        .chain(leader.learners.iter())
                        .copied()
                        .collect();
                    let first = within(&dumps[(members[0] - 1) as usize]);
                    for &m in &members[1..] {
                        let other = within(&dumps[(m - 1) as usize]);
                        if other != first {
                            let a: std::collections::BTreeSet<_> = first.iter().collect();
                            let b: std::collections::BTreeSet<_> = other.iter().collect();
                            let only0 = a.difference(&b).next().map(|(k, v)| {
                                format!(
                                    "{}={}",
                                    String::from_utf8_lossy(k),
                                    String::from_utf8_lossy(v)
                                )
                            });
                            let only1 = b.difference(&a).next().map(|(k, v)| {
                                format!(
                                    "{}={}",
                                    String::from_utf8_lossy(k),
                                    String::from_utf8_lossy(v)
                                )
                            });
                            return Err(format!(
                                "range {range_id}: nodes {} and {m} hold different data (node {} only: {only0:?}, node {m} only: {only1:?})",
                                members[0], members[0]
                            ));
                        }
                    }
                }
                return Ok(dumps);
            }
            if start.elapsed() > limit {
                return Err(format!("replicas did not converge within {limit:?}: {why}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `converge`, panicking with the replay hint on failure (for tests).
    pub async fn wait_converged(&self, limit: Duration) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        match self.converge(limit, None).await {
            Ok(d) => d,
            Err(e) => panic!("{e}\n{}", replay_hint(self.seed)),
        }
    }
}

/// Every holder of a range must report the leader's span and version, and
/// the ranges must tile the data keyspace `[0x10, 0x12)` with no gap or
/// overlap.
fn check_tiling(
    st: &[NodeStatusResponse],
    leaders: &std::collections::BTreeMap<u64, &rangedb::proto::RangeStatus>,
) -> Result<(), String> {
    for s in st {
        for r in s.ranges.iter().filter(|r| !r.end_key.is_empty()) {
            if let Some(l) = leaders.get(&r.range_id) {
                if (&r.start_key, &r.end_key, r.version) != (&l.start_key, &l.end_key, l.version) {
                    return Err(format!(
                        "range {} on node {} is {:?}..{:?} v{}, but its leader has {:?}..{:?} v{}",
                        r.range_id,
                        s.node_id,
                        r.start_key,
                        r.end_key,
                        r.version,
                        l.start_key,
                        l.end_key,
                        l.version
                    ));
                }
            }
        }
    }
    let mut layout: Vec<(Vec<u8>, Vec<u8>, u64, u64)> = leaders
        .values()
        .map(|r| {
            (
                r.start_key.clone(),
                r.end_key.clone(),
                r.range_id,
                r.version,
            )
        })
        .collect();
    layout.sort();
    let mut expect = vec![keys::SYSTEM_DATA];
    for (start, end, id, _) in &layout {
        if *start != expect {
            return Err(format!(
                "ranges do not tile the keyspace: range {id} starts at {start:?}, expected {expect:?} ({:?})",
                brief_ranges(&layout)
            ));
        }
        expect = end.clone();
    }
    if expect != vec![keys::DATA_END] {
        return Err(format!(
            "ranges do not reach the end of the keyspace: last end {expect:?}"
        ));
    }
    Ok(())
}

/// Whether every range any node holds has a leader.
fn leaders_everywhere(st: &[NodeStatusResponse]) -> bool {
    let held: std::collections::BTreeSet<u64> = st
        .iter()
        .flat_map(|s| s.ranges.iter().map(|r| r.range_id))
        .collect();
    !held.is_empty()
        && held.iter().all(|id| {
            st.iter()
                .any(|s| s.ranges.iter().any(|r| r.range_id == *id && r.is_leader))
        })
}

pub fn all_ranges_led(st: &[NodeStatusResponse]) -> bool {
    leaders_everywhere(st)
}

fn brief_ranges(v: &[(Vec<u8>, Vec<u8>, u64, u64)]) -> Vec<String> {
    v.iter()
        .map(|(s, e, id, ver)| {
            format!(
                "r{id}v{ver}[{}..{})",
                String::from_utf8_lossy(s),
                String::from_utf8_lossy(e)
            )
        })
        .collect()
}
