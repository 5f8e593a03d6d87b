//! The node's background tasks: registration and joining, publishing the
//! range directory, and the metadata refresher that keeps peer addresses,
//! cluster settings, users and roles, MVCC GC's clock and pins current on
//! every node. Each reaches the cluster through the SDK, as any client
//! would, with the node's own certificate when TLS is on.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::watch;
use tracing::Instrument;

use super::{placement_loop, until_shutdown, StoreIdent};
use crate::api::meta;
use crate::client::ClientOptions;
use crate::config::{ClusterSettings, ServerConfig};
use crate::error::{Error, Result};
use crate::node::{PeerAddresses, StoreHandle};

/// Leaders publish changed descriptors to the directory this often.
const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);
/// Peer addresses and cluster settings are re-read this often.
pub(super) const METADATA_REFRESH_INTERVAL: Duration = Duration::from_secs(2);
/// Registration and joining retry with backoff from this...
const RETRY_FIRST: Duration = Duration::from_millis(200);
/// ...up to this (registration) and this (joining).
const REGISTER_RETRY_MAX: Duration = Duration::from_secs(1);
const JOIN_RETRY_MAX: Duration = Duration::from_secs(5);
/// Budgets of the SDK calls a node makes to its cluster.
const NODE_CALL_DEADLINE: Duration = Duration::from_secs(3);
const JOIN_CALL_DEADLINE: Duration = Duration::from_secs(5);

/// Options of the SDK clients a node calls its cluster with: its own
/// certificate as the client identity when TLS is on.
fn node_client_options(cfg: &ServerConfig, deadline: Duration) -> ClientOptions {
    ClientOptions {
        deadline,
        tls: cfg.tls.clone(),
        ..Default::default()
    }
}

/// The node's background tasks.
pub(super) fn spawn_background(
    cfg: &ServerConfig,
    ident: &StoreIdent,
    handle: StoreHandle,
    addresses: PeerAddresses,
    (settings, gate): (
        watch::Sender<ClusterSettings>,
        crate::security::auth::AuthGate,
    ),
    stop: &watch::Receiver<bool>,
) {
    let node = |deadline| node_client_options(cfg, deadline);
    tokio::spawn(
        refresh_metadata(
            ident.peers.clone(),
            node(NODE_CALL_DEADLINE),
            addresses,
            (settings, gate),
            handle.clone(),
            stop.clone(),
        )
        .in_current_span(),
    );
    tokio::spawn(
        publish_directory(handle.clone(), node(NODE_CALL_DEADLINE), stop.clone()).in_current_span(),
    );
    tokio::spawn(
        placement_loop::run(handle, ident.node_id, cfg.tls.clone(), stop.clone()).in_current_span(),
    );
    tokio::spawn(
        register(
            ident.node_id,
            ident.peers.clone(),
            node(JOIN_CALL_DEADLINE),
            cfg.peer_address.clone(),
            cfg.client_address.clone(),
            stop.clone(),
        )
        .in_current_span(),
    );
}

/// Keeps the range directory (`_/partitions/`) current: every second, this
/// node publishes the descriptor of each range it leads whose epoch changed
/// since it last published it. The directory keeps the newest epoch, so a
/// stale leader cannot roll it back.
async fn publish_directory(store: StoreHandle, opts: ClientOptions, stop: watch::Receiver<bool>) {
    use crate::client::Client;
    let mut published: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut client: Option<(Vec<String>, Client)> = None;
    loop {
        tokio::select! {
            biased;
            _ = until_shutdown(stop.clone()) => return,
            _ = tokio::time::sleep(PUBLISH_INTERVAL) => {}
        }
        let Ok(led) = store.led_descriptors().await else {
            continue;
        };
        let addrs: Vec<String> = store.directory().all().into_values().collect();
        if client.as_ref().is_none_or(|(a, _)| a != &addrs) {
            match Client::new(addrs.clone(), opts.clone()) {
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
pub(super) async fn join_cluster(
    cfg: &ServerConfig,
    stop: watch::Receiver<bool>,
) -> Result<(u64, String)> {
    use crate::client::Client;
    let c = Client::new(
        cfg.peers.clone(),
        node_client_options(cfg, JOIN_CALL_DEADLINE),
    )?;
    let mut wait = RETRY_FIRST;
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
        wait = (wait * 2).min(JOIN_RETRY_MAX);
    }
}

/// Keeps what every node must know of the system range current, even on
/// nodes holding no replica of it: the peer addresses of nodes that joined
/// later (from the registry, so this node can send them Raft messages), the
/// cluster settings (split thresholds take effect live everywhere), users
/// and roles (`security::auth`; at once on a TLS node, which refuses users
/// until it has them), and a fresh oracle timestamp (MVCC GC's clock,
/// `node/gc.rs`).
async fn refresh_metadata(
    peers: Vec<String>,
    opts: ClientOptions,
    addresses: PeerAddresses,
    (settings, gate): (
        watch::Sender<ClusterSettings>,
        crate::security::auth::AuthGate,
    ),
    store: StoreHandle,
    stop: watch::Receiver<bool>,
) {
    use crate::client::Client;
    let Ok(c) = Client::new(peers, opts) else {
        return;
    };
    let scan = |prefix: &'static str| {
        let c = &c;
        async move {
            let end = meta::prefix_end(prefix.as_bytes());
            c.scan(
                prefix.as_bytes(),
                &end,
                crate::api::MAX_SCAN_LIMIT as u32,
                false,
            )
            .await
        }
    };
    // A TLS node loads users and roles before its first sleep (it refuses
    // users until then), retrying quickly until it has them.
    let mut auth_wait = gate.tls().then_some(Duration::ZERO);
    loop {
        let wait = auth_wait.unwrap_or(METADATA_REFRESH_INTERVAL);
        tokio::select! {
            biased;
            _ = until_shutdown(stop.clone()) => return,
            _ = tokio::time::sleep(wait) => {}
        }
        match scan(crate::security::auth::AUTH_PREFIX)
            .await
            .and_then(|pairs| {
                crate::security::auth::AuthState::from_pairs(
                    pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
                )
            }) {
            Ok(s) => {
                if crate::chaos::canary(crate::chaos::Canary::AuthRefreshKeepsOldTable)
                    && gate.state().is_some_and(|s| s.enabled)
                {
                    gate.mark_fresh();
                } else {
                    gate.set(s);
                }
                auth_wait = None;
            }
            Err(e) => {
                if auth_wait.is_some() {
                    auth_wait = Some(RETRY_FIRST);
                }
                tracing::debug!(%e, "users and roles not loaded");
            }
        }
        if auth_wait.is_some() {
            continue;
        }
        // Oracle time for MVCC GC on ranges that see no traffic, and the
        // oldest pin of an open transaction (GC stays below it).
        if let Ok(now) = c.timestamps(1).await {
            store.oracle_time(now).await;
            if let Ok(pins) = scan(meta::PINS_PREFIX).await {
                let max_ms = settings.borrow().txn_max_duration.as_millis() as u64;
                let live = |v: &[u8]| meta::live_pin(v, now.physical_ms(), max_ms);
                let oldest = pins
                    .iter()
                    .filter_map(|(_, v)| live(v))
                    .min()
                    .map(crate::api::Timestamp);
                store.gc_pin(oldest).await;
                // Pins of transactions abandoned past txn_max_duration go.
                for (k, v) in &pins {
                    if live(v).is_none() {
                        let id = k.strip_prefix(meta::PINS_PREFIX.as_bytes());
                        if let Some(id) = id.and_then(|id| std::str::from_utf8(id).ok()) {
                            let _ = c.release_pin(id).await;
                        }
                    }
                }
            }
        }
        if let Ok(pairs) = scan(meta::NODES_PREFIX).await {
            let r = crate::api::Registry::parse(pairs);
            for (id, why) in &r.corrupt {
                tracing::warn!(node = ?id, %why, "registry entry skipped");
            }
            for (id, e) in r.entries {
                addresses.insert(id, e.peer_address);
            }
        }
        if let Ok(pairs) = scan(meta::CONFIG_PREFIX).await {
            let parsed = ClusterSettings::from_pairs(
                pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
            );
            match parsed {
                Ok(s) => {
                    settings.send_if_modified(|cur| {
                        let changed = *cur != s;
                        *cur = s;
                        changed
                    });
                }
                Err(e) => {
                    tracing::error!(%e, "cluster settings are unreadable; keeping the last ones")
                }
            }
        }
    }
}

/// Records this node's addresses in its registry entry (retrying until the
/// cluster accepts it), reaching the cluster through its peer addresses.
async fn register(
    node_id: u64,
    peers: Vec<String>,
    opts: ClientOptions,
    peer: String,
    client: String,
    stop: watch::Receiver<bool>,
) {
    use crate::client::Client;
    let Ok(c) = Client::new(peers, opts) else {
        return;
    };
    let mut wait = RETRY_FIRST;
    loop {
        tokio::select! {
            biased;
            _ = until_shutdown(stop.clone()) => return,
            _ = tokio::time::sleep(wait) => {}
        }
        if c.register_node(node_id, &peer, &client).await.is_ok() {
            return;
        }
        wait = (wait * 2).min(REGISTER_RETRY_MAX);
    }
}
