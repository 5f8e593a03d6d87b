//! The server edge: node bootstrap/restart (the store identity check), the
//! tonic services (Kv, RaftTransport, Admin, grpc.health.v1), Error -> Status.
//!
//! `run_node` is the whole server as one future over an `Engine` and a
//! shutdown signal; production wraps it with RocksDB and OS signals
//! (`serve`), the simulator with a MemEngine it keeps across restarts.

mod bootstrap;
mod health;
mod kv;
mod raft_service;

pub use bootstrap::{prepare_store, StoreIdent};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::ServerConfig;
use crate::error::{Error, Result};
use crate::node::{Directory, Store, StoreConfig, Transport};
use crate::proto::admin_server::AdminServer;
use crate::proto::kv_server::KvServer;
use crate::proto::raft_transport_server::RaftTransportServer;
use crate::storage::Engine;

/// Largest Raft batch a node accepts (snapshots travel inside MsgSnapshot).
const MAX_RAFT_BATCH_BYTES: usize = 1 << 30;

/// Resolves `host:port` to a socket address to listen on (IPv4 preferred).
pub async fn resolve_listen(addr: &str) -> Result<SocketAddr> {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Ok(a);
    }
    let found: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| Error::Config(format!("cannot resolve {addr}: {e}")))?
        .collect();
    found
        .iter()
        .find(|a| a.is_ipv4())
        .or(found.first())
        .copied()
        .ok_or_else(|| Error::Config(format!("{addr} resolves to no address")))
}

async fn until_shutdown(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        s.push_str(": ");
        s.push_str(&src.to_string());
        cur = src.source();
    }
    s
}

/// Runs one node until `shutdown` becomes true (or a fatal error).
pub async fn run_node(
    cfg: ServerConfig,
    engine: Arc<dyn Engine>,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    cfg.validate()?;
    let ident = if cfg.is_new_node() && engine.get(crate::keys::STORE_IDENT_KEY)?.is_none() {
        let (node_id, cluster_id) = join_cluster(&cfg, shutdown.clone()).await?;
        bootstrap::prepare_new_node(&cfg, engine.as_ref(), node_id, cluster_id)?
    } else {
        prepare_store(&cfg, engine.as_ref())?
    };
    let node_id = ident.node_id;
    let peer_addr = resolve_listen(&cfg.peer_address).await?;
    let client_addr = resolve_listen(&cfg.client_address).await?;

    // Initial nodes' ids are their positions in the initial peer list; nodes
    // that joined later are learned from the registry and Raft traffic.
    let addresses = crate::node::PeerAddresses::default();
    for (i, a) in ident.peers.iter().enumerate() {
        addresses.insert(i as u64 + 1, a.clone());
    }
    addresses.insert(node_id, cfg.peer_address.clone());
    let directory = Directory::default();
    directory.insert(node_id, cfg.client_address.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let transport = Transport::start(
        node_id,
        cfg.client_address.clone(),
        cfg.peer_address.clone(),
        addresses.clone(),
        stop_rx.clone(),
    );
    let store_cfg = StoreConfig {
        node_id,
        tick: cfg.tick,
        heartbeat_ticks: cfg.heartbeat_ticks,
        election_ticks: cfg.election_ticks,
        log_compact_entries: cfg.log_compact_entries,
        max_msgs_per_loop: cfg.max_msgs_per_loop,
        request_timeout: cfg.request_timeout,
        clock: cfg.clock.clone(),
    };
    let (store, handle) = Store::open(
        store_cfg,
        engine.clone(),
        transport,
        directory,
        madsim::rand::random(),
    )?;
    let mut store_task = tokio::spawn(store.run(stop_rx.clone()));

    let info = Arc::new(kv::NodeInfo {
        node_id,
        cluster_id: ident.cluster_id.clone(),
        peer_address: cfg.peer_address.clone(),
        client_address: cfg.client_address.clone(),
    });
    let kv_service = kv::KvService::new(handle.clone(), info);
    let health = health::HealthService::new(handle.clone());
    let raft_service = raft_service::RaftService::new(handle.clone(), addresses.clone());
    tokio::spawn(refresh_peer_addresses(
        ident.peers.clone(),
        addresses,
        stop_rx.clone(),
    ));

    // Kv and Admin are served on the peer address too, so nodes that only know
    // each other's peer addresses (registration, placement) can talk.
    let peer_server = tonic::transport::Server::builder()
        .add_service(
            RaftTransportServer::new(raft_service).max_decoding_message_size(MAX_RAFT_BATCH_BYTES),
        )
        .add_service(KvServer::new(kv_service.clone()))
        .add_service(
            AdminServer::new(kv_service.clone())
                .max_decoding_message_size(crate::config::MAX_ADMIN_MESSAGE),
        )
        .add_service(health::pb::health_server::HealthServer::new(health.clone()))
        .serve_with_shutdown(peer_addr, until_shutdown(stop_rx.clone()));
    let client_server = tonic::transport::Server::builder()
        .add_service(KvServer::new(kv_service.clone()))
        .add_service(
            AdminServer::new(kv_service)
                .max_decoding_message_size(crate::config::MAX_ADMIN_MESSAGE),
        )
        .add_service(health::pb::health_server::HealthServer::new(health.clone()))
        .serve_with_shutdown(client_addr, until_shutdown(stop_rx.clone()));
    tokio::spawn(publish_directory(handle.clone(), stop_rx.clone()));
    tokio::spawn(crate::placement::run(
        handle.clone(),
        node_id,
        stop_rx.clone(),
    ));
    tokio::spawn(register(
        node_id,
        ident.peers.clone(),
        cfg.peer_address.clone(),
        cfg.client_address.clone(),
        stop_rx.clone(),
    ));
    let mut peer_task = tokio::spawn(peer_server);
    let mut client_task = tokio::spawn(client_server);
    tracing::info!(node_id, peer = %cfg.peer_address, client = %cfg.client_address, cluster_id = %ident.cluster_id, "rangedb node started");

    // Which task ended the node: its JoinHandle must not be polled again.
    #[derive(PartialEq)]
    enum Ended {
        Signal,
        Peer,
        Client,
        Store,
    }
    let (ended, result): (Ended, Result<()>) = tokio::select! {
        _ = until_shutdown(shutdown) => (Ended::Signal, Ok(())),
        r = &mut peer_task => (Ended::Peer, Err(Error::Config(format!("cannot serve peer address {}: {}", cfg.peer_address,
            match r { Ok(Err(e)) => error_chain(&e), Ok(Ok(())) => "stopped".into(), Err(e) => e.to_string() })))),
        r = &mut client_task => (Ended::Client, Err(Error::Config(format!("cannot serve client address {}: {}", cfg.client_address,
            match r { Ok(Err(e)) => error_chain(&e), Ok(Ok(())) => "stopped".into(), Err(e) => e.to_string() })))),
        r = &mut store_task => (Ended::Store, match r {
            Ok(Err(e)) => Err(e),
            Ok(Ok(())) => Err(Error::Internal("store stopped".into())),
            Err(e) => Err(Error::Internal(format!("store task: {e}"))),
        }),
    };
    match &result {
        Ok(()) => tracing::info!("rangedb node shutting down"),
        Err(e) => tracing::error!(%e, "rangedb node shutting down"),
    }
    let _ = stop_tx.send(true);
    if ended != Ended::Store {
        let _ = store_task.await;
    }
    if ended != Ended::Peer {
        let _ = peer_task.await;
    }
    if ended != Ended::Client {
        let _ = client_task.await;
    }
    result
}

/// Keeps the range directory (`_/partitions/`) current: every second, this
/// node publishes the descriptor of each range it leads whose epoch changed
/// since it last published it. The directory keeps the newest epoch, so a
/// stale leader cannot roll it back.
async fn publish_directory(store: crate::node::StoreHandle, stop: watch::Receiver<bool>) {
    use crate::client::{Client, ClientOptions};
    let mut published: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut client: Option<(Vec<String>, Client)> = None;
    loop {
        tokio::select! {
            biased;
            _ = until_shutdown(stop.clone()) => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
        let Ok(led) = store.led_descriptors().await else {
            continue;
        };
        let addrs: Vec<String> = store.directory().all().into_values().collect();
        if client.as_ref().map(|(a, _)| a != &addrs).unwrap_or(true) {
            let opts = ClientOptions {
                deadline: std::time::Duration::from_secs(3),
                ..Default::default()
            };
            match Client::new(addrs.clone(), opts) {
                Ok(c) => client = Some((addrs, c)),
                Err(_) => continue,
            }
        }
        let Some((_, c)) = client.as_ref() else {
            continue;
        };
        for d in &led {
            let epoch = (d.version, d.conf_ver);
            if published.get(&d.range_id) == Some(&epoch) {
                continue;
            }
            let msg = crate::proto::RangeDescriptorMsg::from(d.clone());
            if c.publish_range(msg).await.is_ok() {
                published.insert(d.range_id, epoch);
            }
        }
    }
}

/// Asks the cluster (through the given peer addresses) for a node id, until
/// it answers or the node is told to stop.
async fn join_cluster(cfg: &ServerConfig, stop: watch::Receiver<bool>) -> Result<(u64, String)> {
    use crate::client::{Client, ClientOptions};
    let opts = ClientOptions {
        deadline: std::time::Duration::from_secs(5),
        ..Default::default()
    };
    let c = Client::new(cfg.peers.clone(), opts)?;
    let mut wait = std::time::Duration::from_millis(200);
    loop {
        match c.join_cluster(&cfg.peer_address, &cfg.client_address).await {
            Ok(r) => {
                tracing::info!(node_id = r.0, cluster_id = %r.1, "joined the cluster as a new node");
                return Ok(r);
            }
            Err(e) if !e.is_retryable() => {
                return Err(Error::Config(format!(
                    "the cluster refused to add this node: {e}"
                )))
            }
            Err(e) => tracing::info!(%e, "waiting for the cluster to accept this node"),
        }
        tokio::select! {
            biased;
            _ = until_shutdown(stop.clone()) => return Err(Error::ShuttingDown),
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(std::time::Duration::from_secs(5));
    }
}

/// Keeps the peer addresses of nodes that joined later current (from the
/// registry), so this node can send them Raft messages.
async fn refresh_peer_addresses(
    peers: Vec<String>,
    addresses: crate::node::PeerAddresses,
    stop: watch::Receiver<bool>,
) {
    use crate::client::{Client, ClientOptions};
    let opts = ClientOptions {
        deadline: std::time::Duration::from_secs(3),
        ..Default::default()
    };
    let Ok(c) = Client::new(peers, opts) else {
        return;
    };
    loop {
        tokio::select! {
            biased;
            _ = until_shutdown(stop.clone()) => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
        }
        if let Ok(pairs) = c
            .scan(b"_/cluster/nodes/", b"_/cluster/nodes0", 100_000, false)
            .await
        {
            for (k, v) in pairs {
                let id = std::str::from_utf8(&k[b"_/cluster/nodes/".len()..])
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok());
                let entry: serde_json::Value = serde_json::from_slice(&v).unwrap_or_default();
                if let (Some(id), Some(addr)) = (id, entry["peer_address"].as_str()) {
                    addresses.insert(id, addr.to_string());
                }
            }
        }
    }
}

/// Records this node's addresses in `_/cluster/nodes/<id>` (retrying until
/// the cluster accepts it), reaching the cluster through its peer addresses.
async fn register(
    node_id: u64,
    peers: Vec<String>,
    peer: String,
    client: String,
    stop: watch::Receiver<bool>,
) {
    use crate::client::{Client, ClientOptions};
    let opts = ClientOptions {
        deadline: std::time::Duration::from_secs(5),
        ..Default::default()
    };
    let Ok(c) = Client::new(peers, opts) else {
        return;
    };
    let mut wait = std::time::Duration::from_millis(200);
    loop {
        tokio::select! {
            biased;
            _ = until_shutdown(stop.clone()) => return,
            _ = tokio::time::sleep(wait) => {}
        }
        if c.register_node(node_id, &peer, &client).await.is_ok() {
            return;
        }
        wait = (wait * 2).min(std::time::Duration::from_secs(1));
    }
}

/// Production entry point: RocksDB in `cfg.data_dir`, graceful stop on
/// SIGINT/SIGTERM.
#[cfg(not(madsim))]
pub async fn serve(cfg: ServerConfig) -> Result<()> {
    cfg.validate()?;
    let fresh = bootstrap::check_data_dir(&cfg.data_dir)?;
    if fresh && !cfg.cluster_init && cfg.peers.is_empty() {
        return Err(Error::Config(format!(
            "data directory {} is empty: start with --cluster-init to create a new cluster, or with \
             --join=<peer addresses> to join one",
            cfg.data_dir.display()
        )));
    }
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| {
        Error::DataDir(format!(
            "cannot create data directory {}: {e}",
            cfg.data_dir.display()
        ))
    })?;
    let engine = Arc::new(crate::storage::RocksEngine::open(&cfg.data_dir)?);
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received; shutting down gracefully");
        let _ = tx.send(true);
    });
    run_node(cfg, engine, rx).await
}

#[cfg(not(madsim))]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
