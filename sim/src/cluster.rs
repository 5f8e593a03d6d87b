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
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            log_compact_entries: rangedb::config::DEFAULT_LOG_COMPACT_ENTRIES,
            election_ticks: rangedb::config::DEFAULT_ELECTION_TICKS,
            heartbeat_ticks: rangedb::config::DEFAULT_HEARTBEAT_TICKS,
            max_msgs_per_loop: rangedb::config::DEFAULT_MAX_MSGS_PER_LOOP,
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
        let mut nodes = Vec::new();
        for i in 1..=n {
            let engine = MemEngine::new();
            let clock = NodeClock::default();
            let cfg = ServerConfig {
                peer_address: peers[i - 1].clone(),
                client_address: format!("10.0.0.{i}:8081"),
                peers: peers.clone(),
                cluster_init: i == 1,
                data_dir: format!("sim-node-{i}").into(),
                log_compact_entries: opts.log_compact_entries,
                election_ticks: opts.election_ticks,
                heartbeat_ticks: opts.heartbeat_ticks,
                max_msgs_per_loop: opts.max_msgs_per_loop,
                clock: clock.clone(),
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
                    async move {
                        let (_keep_running, rx) = watch::channel(false);
                        if let Err(e) = rangedb::server::run_node(cfg, Arc::new(disk), rx).await {
                            panic!("node stopped with an error: {e}");
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
        }
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
        let opts = ClientOptions {
            deadline,
            ..Default::default()
        };
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

    /// Node statuses as seen from the client host (unreachable nodes omitted).
    pub async fn statuses(&self) -> Vec<NodeStatusResponse> {
        let opts = ClientOptions {
            deadline: Duration::from_secs(2),
            rpc_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_millis(500),
        };
        let client = Client::new(self.endpoints(), opts).expect("valid endpoints");
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

    /// The status of node `id`, if reachable.
    pub async fn status(&self, id: u64) -> Option<NodeStatusResponse> {
        self.statuses().await.into_iter().find(|s| s.node_id == id)
    }

    /// Waits until every range has a leader; panics after `limit`.
    pub async fn wait_for_leaders(&self, limit: Duration) {
        let start = tokio::time::Instant::now();
        loop {
            let st = self.statuses().await;
            let ok = st.len() == self.nodes.len()
                && st
                    .iter()
                    .all(|s| s.ranges.len() >= 2 && s.ranges.iter().all(|r| r.leader_id != 0));
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

    /// Waits until every node holds every range, initialized and at the same
    /// applied index; then checks that replicas agree on the apply hash
    /// chain, that all nodes agree on every range's span and version, and
    /// that the ranges tile the keyspace with no gap or overlap. Returns each
    /// node's data keys. Err describes a divergence or a timeout.
    pub async fn converge(&self, limit: Duration) -> Result<Vec<Vec<(Vec<u8>, Vec<u8>)>>, String> {
        let start = tokio::time::Instant::now();
        loop {
            let st = self.statuses().await;
            let mut ids: Vec<u64> = st
                .iter()
                .flat_map(|s| s.ranges.iter().map(|r| r.range_id))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            let mut converged = st.len() == self.nodes.len();
            if converged {
                for &range_id in &ids {
                    let per_node: Vec<(u64, u64, u64, bool)> = st
                        .iter()
                        .map(|s| {
                            s.ranges
                                .iter()
                                .find(|r| r.range_id == range_id)
                                .map(|r| {
                                    (s.node_id, r.applied, r.apply_hash, !r.end_key.is_empty())
                                })
                                .unwrap_or((s.node_id, 0, 0, false))
                        })
                        .collect();
                    let same_index = per_node
                        .iter()
                        .all(|&(_, a, _, init)| init && a == per_node[0].1 && a > 0);
                    if same_index && per_node.iter().any(|&(_, _, h, _)| h != per_node[0].2) {
                        let brief: Vec<(u64, u64, u64)> =
                            per_node.iter().map(|&(n, a, h, _)| (n, a, h)).collect();
                        return Err(format!(
                            "range {range_id}: replicas applied the same index {} but their apply hashes differ \
                             (node, applied, hash): {brief:?}",
                            per_node[0].1
                        ));
                    }
                    converged &= same_index;
                }
            }
            if converged {
                check_tiling(&st)?;
                return Ok(self
                    .nodes
                    .iter()
                    .map(|n| {
                        n.engine
                            .dump()
                            .into_iter()
                            .filter(|(k, _)| keys::user_key(k).is_some())
                            .collect()
                    })
                    .collect());
            }
            if start.elapsed() > limit {
                let brief: Vec<String> = st
                    .iter()
                    .map(|s| {
                        let rs: Vec<String> = s
                            .ranges
                            .iter()
                            .map(|r| {
                                format!(
                                    "r{}:applied {} leader {}",
                                    r.range_id, r.applied, r.leader_id
                                )
                            })
                            .collect();
                        format!("node {} [{}]", s.node_id, rs.join(", "))
                    })
                    .collect();
                return Err(format!(
                    "replicas did not converge within {limit:?}: {}",
                    brief.join("; ")
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `converge`, panicking with the replay hint on failure (for tests).
    pub async fn wait_converged(&self, limit: Duration) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        match self.converge(limit).await {
            Ok(d) => d,
            Err(e) => panic!("{e}\n{}", replay_hint(self.seed)),
        }
    }
}

/// Every node must report the same ranges (id, span, version), and they must
/// tile the data keyspace `[0x10, 0x12)` with no gap or overlap.
fn check_tiling(st: &[NodeStatusResponse]) -> Result<(), String> {
    let view = |s: &NodeStatusResponse| {
        let mut v: Vec<(Vec<u8>, Vec<u8>, u64, u64)> = s
            .ranges
            .iter()
            .map(|r| {
                (
                    r.start_key.clone(),
                    r.end_key.clone(),
                    r.range_id,
                    r.version,
                )
            })
            .collect();
        v.sort();
        v
    };
    let first = view(&st[0]);
    for s in &st[1..] {
        if view(s) != first {
            return Err(format!(
                "range layout differs: node {} has {:?}, node {} has {:?}",
                st[0].node_id,
                brief_ranges(&first),
                s.node_id,
                brief_ranges(&view(s))
            ));
        }
    }
    let mut expect = vec![keys::SYSTEM_DATA];
    for (start, end, id, _) in &first {
        if *start != expect {
            return Err(format!(
                "ranges do not tile the keyspace: range {id} starts at {start:?}, expected {expect:?} ({:?})",
                brief_ranges(&first)
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
