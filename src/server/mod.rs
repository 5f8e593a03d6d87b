//! The server edge: node bootstrap/restart (the data format and store
//! identity checks), the tonic services (Kv, Txn, Admin, Auth,
//! RaftTransport, grpc.health.v1) with every client-facing one behind the
//! auth gate (an interceptor, `security::auth`), Error -> Status with spans
//! as route keys (`convert`), and the node's background tasks
//! (`background`: registration, directory publishing, the metadata
//! refresher; `placement_loop`).
//!
//! `run_node` is the whole server as one future over an `Engine` and a
//! shutdown signal; production wraps it with RocksDB and OS signals
//! (`serve`: SIGTERM drains first, `drain`), the simulator with a MemEngine
//! it keeps across restarts. The operator's edge: `http` (production only:
//! `/metrics`, `/healthz`, `/readyz`), `grpc_metrics` (production only),
//! `observe` (the metrics text, also in simulation), `drain`.
//!
//! The server talks to other nodes through the client SDK (registration,
//! publishing, placement): the SDK depends only on the API, never back on
//! the server.

mod admin;
pub mod admission;
mod auth;
mod background;
mod bootstrap;
#[cfg(not(madsim))]
mod conn_limit;
#[cfg(not(madsim))]
mod console;
pub mod convert;
#[cfg(not(madsim))]
mod disk;
pub mod drain;
#[cfg(not(madsim))]
mod etcd_listener;
#[cfg(not(madsim))]
mod grpc_metrics;
mod health;
mod history;
#[cfg(not(madsim))]
mod http;
mod kv;
mod lease;
mod lease_keeper;
#[cfg(not(madsim))]
mod limits;
pub mod observe;
mod placement_loop;
mod raft_service;
pub mod registry;
mod tso;
mod txn;
mod versioned;

pub use bootstrap::{prepare_store, StoreIdent};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::Instrument;

use crate::api::MAX_ADMIN_MESSAGE_BYTES;
use crate::config::{ClusterSettings, ServerConfig};
use crate::error::{Error, Result};
use crate::node::{
    Directory, PeerAddresses, Store, StoreConfig, StoreHandle, StoreTask, Transport,
};
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
    let ident = open_identity(&cfg, engine.as_ref(), &shutdown).await?;
    let node_id = ident.node_id;
    // Log lines of this node's tasks carry its id (see `serve`).
    tracing::Span::current().record("node", node_id);
    let peer_addr = resolve_listen(&cfg.peer_address).await?;
    let client_addr = resolve_listen(&cfg.client_address).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    // Initial nodes' ids are their positions in the initial peer list; nodes
    // that joined later are learned from the registry and Raft traffic.
    let addresses = PeerAddresses::default();
    for (i, a) in ident.peers.iter().enumerate() {
        addresses.insert(i as u64 + 1, a.clone());
    }
    addresses.insert(node_id, cfg.peer_address.clone());
    let (settings_tx, settings_rx) = watch::channel(ClusterSettings::default());
    let (store_task, handle) = open_store(
        &cfg,
        node_id,
        engine,
        &addresses,
        settings_rx.clone(),
        &stop_rx,
    )?;
    let store_task = tokio::spawn(store_task.run(stop_rx.clone()).in_current_span());
    let info = Arc::new(kv::NodeInfo {
        node_id,
        cluster_id: ident.cluster_id.clone(),
        peer_address: cfg.peer_address.clone(),
        client_address: cfg.client_address.clone(),
        drain_limit: if cfg.drain_timeout.is_zero() {
            Duration::from_secs(crate::config::DEFAULT_DRAIN_TIMEOUT_SECS)
        } else {
            cfg.drain_timeout
        },
    });
    let tso = Arc::new(tso::TsoService::new(handle.clone(), cfg.clock.clone()));
    let versioned = versioned::Versioned::new(
        handle.clone(),
        tso.clone(),
        addresses.clone(),
        settings_rx,
        cfg.clock.clone(),
        cfg.tls.clone(),
    );
    let drain_tso = tso.clone();
    let disk = admission::DiskRoom::default();
    let gate = crate::security::auth::AuthGate::new(cfg.tls.is_some(), cfg.clock.clone());
    // The disk reserve (a node over an in-memory engine has no directory).
    #[cfg(not(madsim))]
    if cfg.data_dir.is_dir() {
        tokio::spawn(
            disk::watch_space(
                cfg.data_dir.clone(),
                cfg.min_free_space,
                disk.clone(),
                stop_rx.clone(),
            )
            .in_current_span(),
        );
    }
    let keeper =
        lease_keeper::LeaseKeeper::new(handle.clone(), cfg.clock.clone(), versioned.clone());
    tokio::spawn(keeper.clone().run(stop_rx.clone()).in_current_span());
    let leases = lease::LeaseService {
        keeper,
        clock: cfg.clock.clone(),
    };
    let (peer_task, client_task) = spawn_services(
        &handle,
        (info, tso, versioned, disk),
        (gate.clone(), leases),
        addresses.clone(),
        (peer_addr, client_addr),
        (cfg.tls.as_deref(), cfg.max_connections),
        &stop_rx,
    )?;
    let http_task = spawn_http(&cfg, &handle, &stop_rx).await?;
    #[cfg(not(madsim))]
    etcd_listener::spawn(&cfg, node_id, &ident.cluster_id).await?;
    let drain_handle = handle.clone();
    background::spawn_background(
        &cfg,
        &ident,
        handle,
        addresses,
        (settings_tx, gate),
        &stop_rx,
    );
    tracing::info!(node_id, peer = %cfg.peer_address, client = %cfg.client_address,
        http = cfg.http_address.as_deref().unwrap_or("none"), cluster_id = %ident.cluster_id,
        "rangedb node started");
    let mut tasks = NodeTasks {
        store: store_task,
        peer: peer_task,
        client: client_task,
        http: http_task,
    };
    let (ended, result) = tasks
        .first_to_end(&cfg, shutdown, drain_handle.stop_requested())
        .await;
    if ended == Ended::Signal && !cfg.drain_timeout.is_zero() && !drain_handle.is_draining() {
        drain::drain(&drain_handle, &drain_tso, cfg.drain_timeout).await;
    }
    match &result {
        Ok(()) => tracing::info!("rangedb node shutting down"),
        Err(e) => tracing::error!(%e, "rangedb node shutting down"),
    }
    let _ = stop_tx.send(true);
    tasks.join_rest(ended).await;
    result
}

/// How a listener's gate treats a service.
#[derive(Clone, Copy)]
struct GateMode {
    /// Let an unidentified request through with the reason, for handlers
    /// that need no caller (the Auth service: Login).
    lenient: bool,
    /// The peer listener: with TLS it serves nodes only (their
    /// certificates); users and tokens belong on the client listener.
    peer: bool,
}

/// The auth gate as a tonic interceptor: the request's principal goes
/// into its extensions (`security::auth::principal` reads it back).
fn auth_interceptor(
    gate: crate::security::auth::AuthGate,
    GateMode { lenient, peer }: GateMode,
) -> impl FnMut(tonic::Request<()>) -> std::result::Result<tonic::Request<()>, tonic::Status> + Clone
{
    move |mut req: tonic::Request<()>| {
        #[cfg(not(madsim))]
        let cert = crate::security::server_tls::identity(&req);
        #[cfg(madsim)]
        let cert = gate
            .tls()
            .then(|| crate::security::auth::sim_identity(req.metadata()))
            .flatten();
        match gate.authenticate(req.metadata(), cert.as_ref()) {
            Ok(p) if peer && gate.tls() && p != crate::security::auth::Principal::Node => {
                return Err(convert::status(Error::PermissionDenied(
                    "this is a peer address: it serves other nodes (node certificates) only; \
                     clients use a node's client address"
                        .into(),
                )))
            }
            Ok(p) => {
                req.extensions_mut().insert(p);
            }
            Err(e) if lenient && !(peer && gate.tls()) => {
                req.extensions_mut()
                    .insert(crate::security::auth::Unidentified(e));
            }
            Err(e) => return Err(convert::status(e)),
        }
        Ok(req)
    }
}

/// A service behind the auth gate, with its message size limit (tonic
/// and madsim-tonic build the pair differently).
macro_rules! guarded {
    ($server:ident, $svc:expr, $limit:expr, $gate:expr, $mode:expr) => {{
        #[cfg(not(madsim))]
        {
            tonic::service::interceptor::InterceptedService::new(
                $server::new($svc).max_decoding_message_size($limit),
                auth_interceptor($gate, $mode),
            )
        }
        #[cfg(madsim)]
        {
            $server::with_interceptor($svc, auth_interceptor($gate, $mode))
                .max_decoding_message_size($limit)
        }
    }};
    ($($server:ident)::+, $svc:expr, $limit:expr, $gate:expr, $mode:expr) => {{
        use $($server)::+ as GuardedServer;
        guarded!(GuardedServer, $svc, $limit, $gate, $mode)
    }};
}

type ServeTask = tokio::task::JoinHandle<std::result::Result<(), tonic::transport::Error>>;

/// Starts the gRPC services. Kv and Admin are served on the peer address
/// too, so nodes that only know each other's peer addresses (registration,
/// placement) can talk.
fn spawn_services(
    handle: &StoreHandle,
    (info, tso, versioned, disk): (
        Arc<kv::NodeInfo>,
        Arc<tso::TsoService>,
        versioned::Versioned,
        admission::DiskRoom,
    ),
    (gate, leases): (crate::security::auth::AuthGate, lease::LeaseService),
    addresses: PeerAddresses,
    (peer_addr, client_addr): (SocketAddr, SocketAddr),
    (tls, max_connections): (Option<&crate::tls::TlsMaterial>, usize),
    stop: &watch::Receiver<bool>,
) -> Result<(ServeTask, ServeTask)> {
    let kv_service = kv::KvService::new(handle.clone(), info, tso, versioned, disk);
    let auth_service = auth::AuthService::new(handle.clone(), gate.clone());
    let health = health::HealthService::new(handle.clone());
    let raft_service = raft_service::RaftService::new(handle.clone(), addresses, tls.is_some());
    // Every service but Raft (its own certificate check) and health passes
    // the auth gate: an interceptor, so it runs before the body is decoded
    // and in simulation too.
    let strict = |peer| GateMode {
        lenient: false,
        peer,
    };
    let admin = |kv: kv::KvService, peer| {
        guarded!(
            AdminServer,
            kv,
            MAX_ADMIN_MESSAGE_BYTES,
            gate.clone(),
            strict(peer)
        )
    };
    let kv = |kv: kv::KvService, peer| {
        guarded!(
            KvServer,
            kv,
            crate::api::MAX_KV_MESSAGE_BYTES,
            gate.clone(),
            strict(peer)
        )
    };
    let txn = |kv: kv::KvService, peer| {
        guarded!(
            crate::proto::txn_server::TxnServer,
            kv,
            crate::api::MAX_TXN_MESSAGE_BYTES,
            gate.clone(),
            strict(peer)
        )
    };
    let lease = || {
        guarded!(
            crate::proto::lease_server::LeaseServer,
            leases.clone(),
            crate::api::MAX_KV_MESSAGE_BYTES,
            gate.clone(),
            strict(false)
        )
    };
    let auth = |peer| {
        guarded!(
            crate::proto::auth_server::AuthServer,
            auth_service.clone(),
            crate::api::MAX_KV_MESSAGE_BYTES,
            gate.clone(),
            GateMode {
                lenient: true,
                peer
            }
        )
    };
    // Request metrics by method and code (a tower layer), TLS and the
    // listeners' limits: production only (madsim ignores all of them).
    #[cfg(not(madsim))]
    let builder = || -> Result<_> {
        let b = limits::apply(tonic::transport::Server::builder());
        let b = match tls {
            Some(m) => b
                .tls_config(crate::security::server_tls::server_config(m))
                .map_err(|e| {
                    Error::Config(format!("TLS material {} is unusable: {e}", m.source))
                })?,
            None => b,
        };
        Ok(b.layer(grpc_metrics::MetricsLayer::new(handle.metrics().clone())))
    };
    #[cfg(madsim)]
    let builder = || -> Result<_> { Ok(tonic::transport::Server::builder()) };
    let peer_server = builder()?
        .add_service(
            RaftTransportServer::new(raft_service).max_decoding_message_size(MAX_RAFT_BATCH_BYTES),
        )
        .add_service(kv(kv_service.clone(), true))
        .add_service(txn(kv_service.clone(), true))
        .add_service(admin(kv_service.clone(), true))
        .add_service(auth(true))
        .add_service(health::pb::health_server::HealthServer::new(health.clone()));
    let client_server = builder()?
        .add_service(kv(kv_service.clone(), false))
        .add_service(txn(kv_service.clone(), false))
        .add_service(admin(kv_service, false))
        .add_service(auth(false))
        .add_service(lease())
        .add_service(health::pb::health_server::HealthServer::new(health));
    // Production listeners cap their connections (`conn_limit`).
    #[cfg(not(madsim))]
    let (peer_server, client_server) = {
        use conn_limit::{bind, CappedListener};
        let (p, c) = (
            bind("peer", &peer_addr.to_string(), peer_addr)?,
            bind("client", &client_addr.to_string(), client_addr)?,
        );
        (
            peer_server.serve_with_incoming_shutdown(
                CappedListener::new(p, "peer", max_connections).into_stream(),
                until_shutdown(stop.clone()),
            ),
            client_server.serve_with_incoming_shutdown(
                CappedListener::new(c, "client", max_connections).into_stream(),
                until_shutdown(stop.clone()),
            ),
        )
    };
    #[cfg(madsim)]
    let (peer_server, client_server) = {
        let _ = max_connections;
        (
            peer_server.serve_with_shutdown(peer_addr, until_shutdown(stop.clone())),
            client_server.serve_with_shutdown(client_addr, until_shutdown(stop.clone())),
        )
    };
    Ok((
        tokio::spawn(peer_server.in_current_span()),
        tokio::spawn(client_server.in_current_span()),
    ))
}

/// The HTTP listener (`http.rs`), when the config has an address
/// (production only). Binding fails the start with one clear line.
#[cfg(not(madsim))]
async fn spawn_http(
    cfg: &ServerConfig,
    handle: &StoreHandle,
    stop: &watch::Receiver<bool>,
) -> Result<Option<HttpTask>> {
    let Some(addr) = &cfg.http_address else {
        return Ok(None);
    };
    let at = resolve_listen(addr).await?;
    let listener = conn_limit::CappedListener::new(
        conn_limit::bind("HTTP", addr, at)?,
        "HTTP",
        cfg.max_connections,
    );
    let (handle, client, stop) = (handle.clone(), cfg.client_address.clone(), stop.clone());
    let tls = cfg.tls.clone();
    Ok(Some(tokio::spawn(
        async move { http::serve(listener, handle, &client, tls, stop).await }.in_current_span(),
    )))
}

#[cfg(madsim)]
async fn spawn_http(
    _cfg: &ServerConfig,
    _handle: &StoreHandle,
    _stop: &watch::Receiver<bool>,
) -> Result<Option<HttpTask>> {
    Ok(None)
}

type HttpTask = tokio::task::JoinHandle<std::io::Result<()>>;

/// Why a listener task (`what`, serving `addr`) ended the node.
fn served<E: std::error::Error>(
    what: &str,
    addr: &str,
    r: std::result::Result<std::result::Result<(), E>, tokio::task::JoinError>,
) -> Error {
    Error::Config(format!(
        "cannot serve {what} address {addr}: {}",
        match r {
            Ok(Err(e)) => error_chain(&e),
            Ok(Ok(())) => "stopped".into(),
            Err(e) => e.to_string(),
        }
    ))
}

/// The tasks a node lives by: when one ends, the node stops.
struct NodeTasks {
    store: tokio::task::JoinHandle<Result<()>>,
    peer: ServeTask,
    client: ServeTask,
    /// The HTTP listener, if any (its end stops the node too).
    http: Option<HttpTask>,
}

/// Which task ended the node (its JoinHandle must not be polled again).
#[derive(PartialEq)]
enum Ended {
    Signal,
    /// `rangedb admin node drain` drained the node.
    Drained,
    Peer,
    Client,
    Store,
    Http,
}

impl NodeTasks {
    /// Waits for `shutdown` or for a task to end (its error is the node's).
    async fn first_to_end(
        &mut self,
        cfg: &ServerConfig,
        shutdown: watch::Receiver<bool>,
        drained: watch::Receiver<bool>,
    ) -> (Ended, Result<()>) {
        // Biased: an unbiased select draws from tokio's RNG, which the
        // simulator does not seed (seeds of the fsync test replayed
        // differently in one process when the store ended).
        tokio::select! {
            biased;
            _ = until_shutdown(shutdown) => (Ended::Signal, Ok(())),
            _ = until_shutdown(drained) => (Ended::Drained, Ok(())),
            r = &mut self.peer => (Ended::Peer, Err(served("peer", &cfg.peer_address, r))),
            r = &mut self.client => (Ended::Client, Err(served("client", &cfg.client_address, r))),
            r = async { match self.http.as_mut() { Some(h) => h.await, None => std::future::pending().await } } => {
                (Ended::Http, Err(served("HTTP", cfg.http_address.as_deref().unwrap_or(""), r)))
            }
            r = &mut self.store => (Ended::Store, match r {
                Ok(Err(e)) => Err(e),
                Ok(Ok(())) => Err(Error::Internal("store stopped".into())),
                Err(e) => Err(Error::Internal(format!("store task: {e}"))),
            }),
        }
    }

    /// Waits for the tasks still running (after the stop signal).
    async fn join_rest(self, ended: Ended) {
        if ended != Ended::Store {
            let _ = self.store.await;
        }
        if ended != Ended::Peer {
            let _ = self.peer.await;
        }
        if ended != Ended::Client {
            let _ = self.client.await;
        }
        if let (false, Some(h)) = (ended == Ended::Http, self.http) {
            let _ = h.await;
        }
    }
}

/// This node's store identity: a new node joining a running cluster asks
/// it for an id first; otherwise the data directory's (created if new).
async fn open_identity(
    cfg: &ServerConfig,
    engine: &dyn Engine,
    shutdown: &watch::Receiver<bool>,
) -> Result<StoreIdent> {
    if cfg.is_new_node() && engine.get(crate::keys::STORE_IDENT_KEY)?.is_none() {
        let (node_id, cluster_id) = background::join_cluster(cfg, shutdown.clone()).await?;
        bootstrap::prepare_new_node(cfg, engine, node_id, cluster_id)
    } else {
        prepare_store(cfg, engine)
    }
}

/// Opens the Store over `engine` and its task.
fn open_store(
    cfg: &ServerConfig,
    node_id: u64,
    engine: Arc<dyn Engine>,
    addresses: &PeerAddresses,
    settings: watch::Receiver<ClusterSettings>,
    stop: &watch::Receiver<bool>,
) -> Result<(StoreTask, StoreHandle)> {
    let directory = Directory::default();
    directory.insert(node_id, cfg.client_address.clone());
    let transport = Transport::start(
        node_id,
        cfg.client_address.clone(),
        cfg.peer_address.clone(),
        addresses.clone(),
        cfg.tls.clone(),
        stop.clone(),
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
        metrics: Arc::new(crate::metrics::NodeMetrics::new()),
        // How long a leader serves reads after a quorum confirmed it, on
        // its clock; `None`: leases off (or an election timeout too short).
        read_lease: cfg
            .read_leases
            .then(|| {
                crate::range::lease_length(cfg.election_ticks, cfg.tick, cfg.max_clock_drift_ppm)
            })
            .flatten(),
    };
    store_cfg
        .metrics
        .start_time
        .set(cfg.clock.now_ms() as f64 / 1000.0);
    let store = Store::open(store_cfg, engine, madsim::rand::random())?;
    Ok(StoreTask::new(store, transport, directory, settings))
}

/// Production entry point: RocksDB in `cfg.data_dir`, graceful stop on
/// SIGINT/SIGTERM.
#[cfg(not(madsim))]
pub async fn serve(cfg: ServerConfig) -> Result<()> {
    cfg.validate()?;
    let mut listeners = vec![
        ("peer", cfg.peer_address.as_str()),
        ("client", cfg.client_address.as_str()),
    ];
    if let Some(h) = &cfg.http_address {
        listeners.push(("HTTP", h.as_str()));
    }
    let mut resolved = Vec::new();
    for (what, given) in listeners {
        resolved.push((what, given, resolve_listen(given).await?));
    }
    crate::security::check_exposure(&cfg, &resolved)?;
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
    // Every task the node spawns inherits this span: `node=<id>` on its log lines.
    run_node(cfg, engine, rx)
        .instrument(tracing::info_span!("rangedb", node = tracing::field::Empty))
        .await
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
