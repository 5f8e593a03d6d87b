//! Security at the node's edges: which addresses may serve plaintext, the
//! node's TLS configuration, certificates (`certs`, `rangedb cert`) and the
//! identity a peer's certificate proves (`peer`).
//!
//! The rules (docs/security.md):
//! - with `--certs-dir`, client traffic is TLS and peer traffic mutual
//!   TLS; both listeners require a certificate signed by the cluster's CA
//!   (until users and passwords exist, a certificate is the credential);
//! - without it, RangeDB serves plaintext on loopback addresses only,
//!   unless `--insecure` says the operator accepts what that exposes;
//! - a Raft sender's claims are checked against its certificate before
//!   any Raft message is decoded (`peer`).
//!
//! TLS exists only at the production edge: madsim's transport ignores it,
//! so simulation builds keep `peer::PeerIdentity::Unverified`.

pub mod auth;
#[cfg(not(madsim))]
pub mod certs;
pub mod peer;
#[cfg(not(madsim))]
pub mod server_tls;

use std::net::SocketAddr;

use crate::config::ServerConfig;
use crate::error::{Error, Result};

/// What a plaintext listener on a reachable address gives away.
pub const INSECURE_EXPOSES: &str = "anyone who can reach it can read and write every key, \
    call every admin command, and send Raft traffic as any node";

/// Refuses to serve plaintext beyond loopback without `--insecure`; `addrs`
/// are (what, configured address, resolved address). With `--insecure`,
/// warns once per exposed listener.
pub fn check_exposure(cfg: &ServerConfig, addrs: &[(&str, &str, SocketAddr)]) -> Result<()> {
    for (what, given, at) in addrs {
        // With TLS the HTTP listener (status and metrics, never data)
        // stays plaintext wherever it listens.
        if at.ip().is_loopback() || cfg.tls.is_some() {
            continue;
        }
        if !cfg.insecure {
            return Err(Error::Config(format!(
                "refusing to serve the {what} address {given} ({at}) without TLS: {INSECURE_EXPOSES}. \
                 Give --certs-dir (see `rangedb cert --help`), listen on a loopback address, \
                 or give --insecure to accept that"
            )));
        }
        tracing::warn!(address = %given, listener = what,
            "RUNNING INSECURE: plaintext on a reachable address: {INSECURE_EXPOSES}");
    }
    Ok(())
}

/// Loads and checks the node's TLS material from `dir` (one clear line for
/// a missing, expired, foreign or mismatched file).
#[cfg(not(madsim))]
pub fn load_node_tls(dir: &std::path::Path) -> Result<crate::tls::TlsMaterial> {
    let m = crate::tls::TlsMaterial::node(dir)?;
    certs::check(&m, "node")?;
    Ok(m)
}

/// Loads and checks a user's client material from `dir`.
#[cfg(not(madsim))]
pub fn load_client_tls(dir: &std::path::Path, user: &str) -> Result<crate::tls::TlsMaterial> {
    let m = crate::tls::TlsMaterial::client(dir, user)?;
    certs::check(&m, "client")?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn plaintext_stays_on_loopback_unless_insecure() {
        let mut cfg = ServerConfig::default();
        let local = [("client", "127.0.0.1:8081", at("127.0.0.1:8081"))];
        assert!(check_exposure(&cfg, &local).is_ok());
        let wide = [("peer", "0.0.0.0:8080", at("0.0.0.0:8080"))];
        let e = check_exposure(&cfg, &wide).unwrap_err().to_string();
        assert!(
            e.contains("refusing to serve the peer address 0.0.0.0:8080"),
            "{e}"
        );
        assert!(e.contains("--insecure") && e.contains("--certs-dir"), "{e}");
        cfg.insecure = true;
        assert!(check_exposure(&cfg, &wide).is_ok());
        cfg.insecure = false;
        cfg.tls = Some(Arc::new(crate::tls::TlsMaterial {
            ca_pem: vec![1],
            cert_pem: vec![1],
            key_pem: vec![1],
            source: "x".into(),
        }));
        let http = [("HTTP", "0.0.0.0:9081", at("0.0.0.0:9081"))];
        assert!(check_exposure(&cfg, &wide).is_ok());
        assert!(check_exposure(&cfg, &http).is_ok());
    }
}
