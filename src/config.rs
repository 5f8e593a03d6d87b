//! Typed configuration: the server's settings (`ServerConfig`, defaults as
//! named constants with units, `validate()` for relations between fields)
//! and the cluster settings (`settings`: one table, one validator, one typed
//! reader). Request limits are part of the API (`api`).

mod settings;

pub use settings::{
    validate_setting, ClusterSettings, Setting, DEFAULT_DEAD_NODE_TIMEOUT_SECS,
    DEFAULT_MERGE_MAX_BYTES, DEFAULT_RANGE_MAX_BYTES, DEFAULT_REPLICATION_FACTOR,
    DEFAULT_SPLIT_QPS, MIN_RANGE_MAX_BYTES,
};

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

pub const DEFAULT_PEER_ADDRESS: &str = "127.0.0.1:8080";
pub const DEFAULT_CLIENT_ADDRESS: &str = "127.0.0.1:8081";
pub const DEFAULT_DATA_DIR: &str = "./rangedb-data";

/// Snapshots are sent in chunks of this size...
#[cfg(not(madsim))]
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// ...at most this fast per peer, on a stream of their own (so heartbeats
/// never wait behind a snapshot).
#[cfg(not(madsim))]
pub const SNAPSHOT_BYTES_PER_SEC: u64 = 64 << 20;
/// In simulation snapshots are small: tiny chunks exercise the chunking.
#[cfg(madsim)]
pub const SNAPSHOT_CHUNK_BYTES: usize = 512;
#[cfg(madsim)]
pub const SNAPSHOT_BYTES_PER_SEC: u64 = 1 << 20;

/// Raft tick period.
pub const DEFAULT_TICK_MS: u64 = 100;
/// Leader heartbeat every this many ticks.
pub const DEFAULT_HEARTBEAT_TICKS: usize = 2;
/// Base election timeout in ticks; each replica draws its own in [base, 2*base).
pub const DEFAULT_ELECTION_TICKS: usize = 10;
/// The most a node's clock may run fast or slow, in parts per million,
/// that leader leases assume (`range::lease`): 10%, far above what quartz
/// and NTP allow (about 500 ppm), so a VM's clock trouble stays inside it.
pub const DEFAULT_MAX_CLOCK_DRIFT_PPM: u64 = 100_000;
/// Server-side deadline for one client request.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 5_000;
/// Compact a range's Raft log once it holds this many applied entries.
pub const DEFAULT_LOG_COMPACT_ENTRIES: u64 = 2_000;
/// Most store messages handled per loop iteration before the Readys are processed.
pub const DEFAULT_MAX_MSGS_PER_LOOP: usize = 4_096;

/// Settings of one `rangedb server` process (or simulated node).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address other nodes use for Raft traffic.
    pub peer_address: String,
    /// Address clients use for the Kv API.
    pub client_address: String,
    /// Peer addresses of the initial voters, in the same order on every node.
    /// Empty means a single-node cluster made of this node.
    pub peers: Vec<String>,
    /// Initialize a new cluster when the data directory is empty.
    pub cluster_init: bool,
    pub data_dir: PathBuf,
    pub tick: Duration,
    pub heartbeat_ticks: usize,
    pub election_ticks: usize,
    pub request_timeout: Duration,
    pub log_compact_entries: u64,
    pub max_msgs_per_loop: usize,
    /// This node's clock (skewed and drifted by the simulator).
    pub clock: crate::clock::NodeClock,
    /// The HTTP listener (`/healthz`, `/readyz`); `None`: none (the
    /// simulator, embedded test nodes). `rangedb server` always has one
    /// (`http_address_for`).
    pub http_address: Option<String>,
    /// The etcd v3 gateway's address (`--etcd-address`); `None`: off.
    pub etcd_address: Option<String>,
    /// On a stop signal, drain first (not ready, leaderships moved away)
    /// for at most this long; zero: stop at once (the simulator's nodes).
    pub drain_timeout: Duration,
    /// Serve linearizable reads under leader leases (`range::lease`).
    pub read_leases: bool,
    /// The clock drift those leases assume, in parts per million.
    pub max_clock_drift_ppm: u64,
    /// The node's TLS identity (`--certs-dir`): client traffic is TLS and
    /// peer traffic mutual TLS. `None`: plaintext (`security` decides
    /// where that is allowed).
    pub tls: Option<std::sync::Arc<crate::tls::TlsMaterial>>,
    /// Serve plaintext on addresses other than loopback (`--insecure`).
    pub insecure: bool,
    /// Open connections per gRPC listener (a quarter of it per source
    /// address; `server::conn_limit`, production only).
    pub max_connections: usize,
    /// Free bytes the node keeps on its data directory's disk: below it,
    /// client writes are refused (`server::disk`); `None`: 5% of the file
    /// system, at most 1 GiB.
    pub min_free_space: Option<u64>,
}

/// `rangedb server --max-connections` by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// How long `rangedb server` drains on SIGTERM by default.
pub const DEFAULT_DRAIN_TIMEOUT_SECS: u64 = 10;

/// The default HTTP address of a node serving clients at `client`: the
/// same host, port + 1000 (8081 -> 9081), so the three nodes of the
/// README's one-machine cluster (8081, 8083, 8085) get three listeners.
pub fn http_address_for(client: &str) -> Result<String> {
    let (host, port) = client
        .rsplit_once(':')
        .ok_or_else(|| Error::Config(format!("client address {client:?} has no port")))?;
    let port: u16 = port
        .parse()
        .map_err(|_| Error::Config(format!("client address {client:?} has a bad port")))?;
    let http = port.checked_add(1000).ok_or_else(|| {
        Error::Config(format!(
            "no default HTTP port above client port {port}: give --http-address"
        ))
    })?;
    Ok(format!("{host}:{http}"))
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            peer_address: DEFAULT_PEER_ADDRESS.into(),
            client_address: DEFAULT_CLIENT_ADDRESS.into(),
            peers: Vec::new(),
            cluster_init: false,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            tick: Duration::from_millis(DEFAULT_TICK_MS),
            heartbeat_ticks: DEFAULT_HEARTBEAT_TICKS,
            election_ticks: DEFAULT_ELECTION_TICKS,
            request_timeout: Duration::from_millis(DEFAULT_REQUEST_TIMEOUT_MS),
            log_compact_entries: DEFAULT_LOG_COMPACT_ENTRIES,
            max_msgs_per_loop: DEFAULT_MAX_MSGS_PER_LOOP,
            clock: Default::default(),
            http_address: None,
            etcd_address: None,
            drain_timeout: Duration::ZERO,
            read_leases: true,
            max_clock_drift_ppm: DEFAULT_MAX_CLOCK_DRIFT_PPM,
            tls: None,
            insecure: false,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            min_free_space: None,
        }
    }
}

impl ServerConfig {
    /// The initial voters' peer addresses (this node alone when none were given).
    pub fn initial_peers(&self) -> Vec<String> {
        if self.peers.is_empty() {
            vec![self.peer_address.clone()]
        } else {
            self.peers.clone()
        }
    }

    /// This node's id: its 1-based position in the initial peer list.
    pub fn node_id(&self) -> Result<u64> {
        let peers = self.initial_peers();
        peers
            .iter()
            .position(|p| same_address(p, &self.peer_address))
            .map(|i| i as u64 + 1)
            .ok_or_else(|| {
                Error::Config(format!(
                    "--peer-address {} is not in the peer list [{}]; a node that creates the cluster must be \
                     listed (a new node joins a running cluster with --join and gets its id from the cluster)",
                    self.peer_address,
                    peers.join(",")
                ))
            })
    }

    /// A node joining a running cluster that was not in its initial peer
    /// list: it asks the cluster for a node id.
    pub fn is_new_node(&self) -> bool {
        !self.cluster_init && !self.peers.is_empty() && self.node_id().is_err()
    }

    pub fn validate(&self) -> Result<()> {
        if self.peer_address.is_empty() || self.client_address.is_empty() {
            return Err(Error::Config(
                "peer and client addresses must not be empty".into(),
            ));
        }
        if same_address(&self.peer_address, &self.client_address) {
            return Err(Error::Config(format!(
                "--peer-address and --client-address must differ (both are {})",
                self.peer_address
            )));
        }
        let peers = self.initial_peers();
        for (i, p) in peers.iter().enumerate() {
            if !p.contains(':') {
                return Err(Error::Config(format!(
                    "peer address {p:?} has no port (want host:port)"
                )));
            }
            if peers[..i].iter().any(|q| same_address(p, q)) {
                return Err(Error::Config(format!("peer address {p} is listed twice")));
            }
        }
        if !self.is_new_node() {
            self.node_id()?;
        }
        if self.max_connections < 16 {
            return Err(Error::Config(
                "--max-connections must be at least 16 (nodes hold several connections to each other)"
                    .into(),
            ));
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            return Err(Error::Config(
                "election ticks must exceed heartbeat ticks (> 0)".into(),
            ));
        }
        if self.max_clock_drift_ppm >= 1_000_000 {
            return Err(Error::Config(format!(
                "--max-clock-drift-ppm {} is not below 1000000 (100%)",
                self.max_clock_drift_ppm
            )));
        }
        if self.tick.is_zero() || self.request_timeout.is_zero() {
            return Err(Error::Config(
                "tick and request timeout must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// Compares host:port addresses, treating `localhost` and `127.0.0.1` alike.
pub fn same_address(a: &str, b: &str) -> bool {
    fn norm(s: &str) -> String {
        let s = s.trim().trim_start_matches("http://");
        s.replacen("localhost:", "127.0.0.1:", 1)
    }
    norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_is_position_in_peer_list() {
        let cfg = ServerConfig {
            peer_address: "localhost:8082".into(),
            client_address: "localhost:8083".into(),
            peers: vec![
                "localhost:8080".into(),
                "localhost:8082".into(),
                "localhost:8084".into(),
            ],
            ..Default::default()
        };
        assert_eq!(cfg.node_id().unwrap(), 2);
        cfg.validate().unwrap();
    }

    #[test]
    fn single_node_defaults_validate() {
        let cfg = ServerConfig::default();
        assert_eq!(cfg.node_id().unwrap(), 1);
        cfg.validate().unwrap();
    }

    #[test]
    fn rejects_bad_configs() {
        let mut cfg = ServerConfig {
            peers: vec!["a:1".into(), "b:2".into()],
            cluster_init: true,
            ..Default::default()
        };
        assert!(
            matches!(cfg.validate(), Err(Error::Config(_))),
            "the node creating the cluster must be in the peer list"
        );
        cfg.cluster_init = false;
        assert!(
            cfg.is_new_node() && cfg.validate().is_ok(),
            "a node outside the list joins as a new node"
        );
        cfg.peers = vec!["127.0.0.1:8080".into(), "localhost:8080".into()];
        assert!(cfg.validate().is_err(), "duplicate peer");
        let cfg = ServerConfig {
            client_address: DEFAULT_PEER_ADDRESS.into(),
            ..Default::default()
        };
        assert!(cfg.validate().is_err(), "same peer and client address");
    }
}
