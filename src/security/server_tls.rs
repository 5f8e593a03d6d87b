//! The listeners' TLS (production edge only): the node's certificate as
//! the server identity, the cluster CA as the only root for client
//! certificates (required), a bounded handshake, and the identity a
//! connection's verified certificate proves.

use std::time::Duration;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use super::certs;
use super::peer::PeerIdentity;
use crate::tls::TlsMaterial;

/// A client that has not finished its TLS handshake by then is dropped
/// (a slow-loris holding handshakes open).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Server TLS for one listener: a client certificate, if presented, must
/// be signed by the cluster's CA. One is optional at the handshake so that
/// users can log in with a password; the auth gate (`auth::AuthGate`)
/// refuses a request without one while authentication is off, and the
/// Raft service accepts node certificates only.
pub fn server_config(m: &TlsMaterial) -> ServerTlsConfig {
    ServerTlsConfig::new()
        .identity(Identity::from_pem(&m.cert_pem, &m.key_pem))
        .client_ca_root(Certificate::from_pem(&m.ca_pem))
        .client_auth_optional(true)
        .timeout(HANDSHAKE_TIMEOUT)
}

/// The identity a request's connection proved; `None` when it carries no
/// verified certificate (a plaintext listener).
pub fn identity<T>(req: &tonic::Request<T>) -> Option<PeerIdentity> {
    let chain = req.peer_certs()?;
    let leaf = chain.first()?;
    certs::inspect_der(leaf.as_ref(), "peer certificate")
        .ok()
        .map(|c| c.identity())
}
