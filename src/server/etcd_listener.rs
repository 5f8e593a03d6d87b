//! Starts the etcd v3 gateway (`crate::etcd`) on `--etcd-address`, off by
//! default: a client of this node's own client address. Plaintext only —
//! the gateway does not yet serve TLS or check RangeDB users — so a
//! cluster with TLS refuses the flag, and a reachable address needs
//! `--insecure` like every plaintext listener.

use std::time::Duration;

use crate::client::{Client, ClientOptions};
use crate::config::ServerConfig;
use crate::error::{Error, Result};
use crate::etcd::{Gateway, GatewayInfo};

/// Binds and spawns the gateway, if configured; a bad or taken address
/// fails the start with one line.
pub async fn spawn(cfg: &ServerConfig, node_id: u64, cluster_id: &str) -> Result<()> {
    let Some(addr) = &cfg.etcd_address else {
        return Ok(());
    };
    if cfg.tls.is_some() {
        return Err(Error::Config(
            "--etcd-address cannot be used with TLS yet: the etcd gateway serves plaintext \
             and does not check RangeDB users (docs/etcd-compatibility.md)"
                .into(),
        ));
    }
    let at = super::resolve_listen(addr).await?;
    if !at.ip().is_loopback() && !cfg.insecure {
        return Err(Error::Config(format!(
            "refusing to serve the etcd address {addr} ({at}) in plaintext: {} \
             The etcd gateway has no TLS yet: listen on a loopback address, or give \
             --insecure to accept that",
            crate::security::INSECURE_EXPOSES
        )));
    }
    crate::security::check_exposure(cfg, &[("etcd", addr, at)])?;
    // Bind once to fail the start with a clear line if the port is taken.
    drop(
        std::net::TcpListener::bind(at)
            .map_err(|e| Error::Config(format!("cannot serve the etcd address {addr}: {e}")))?,
    );
    let client = Client::new(
        vec![cfg.client_address.clone()],
        ClientOptions {
            deadline: Duration::from_secs(10),
            ..Default::default()
        },
    )?;
    let gateway = Gateway::new(
        client,
        GatewayInfo {
            node_id,
            cluster_id: cluster_id.to_string(),
            etcd_address: addr.clone(),
            peer_address: cfg.peer_address.clone(),
        },
    );
    tokio::spawn(async move {
        if let Err(e) = gateway.serve(at).await {
            tracing::error!("{e}");
        }
    });
    tracing::info!(address = %addr, "etcd v3 gateway serving");
    Ok(())
}
