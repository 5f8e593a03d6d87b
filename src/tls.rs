//! TLS material of one side of a connection, and the endpoints that use it:
//! shared by the SDK (a user's client certificate), the node's own calls to
//! other nodes (its node certificate as a client identity) and the Raft
//! transport.
//!
//! A certificates directory (`--certs-dir`, `RANGEDB_CERTS_DIR`) holds, as
//! `rangedb cert` writes them:
//! - `ca.crt`: the cluster's certificate authority, the only root trusted;
//! - `node.crt`, `node.key`: a node's identity (server and client);
//! - `client.<user>.crt`, `client.<user>.key`: a user's client identity.
//!
//! Invariants: with material, every connection is TLS 1.3/1.2 verified
//! against `ca.crt` alone (no system roots) and presents a certificate; the
//! server's name is checked against the host the address names. Without
//! material, connections are plaintext (`http://`). Simulation builds carry
//! the material but ignore it (madsim's transport has no TLS): TLS types
//! are only touched under `cfg(not(madsim))`.

use std::fmt;
use std::path::{Path, PathBuf};

use tonic::transport::Endpoint;

use crate::error::{Error, Result};

/// The CA certificate's file name in a certificates directory.
pub const CA_CERT: &str = "ca.crt";
/// The node certificate and key.
pub const NODE_CERT: &str = "node.crt";
pub const NODE_KEY: &str = "node.key";
/// The user the CLI acts as when none is given (its certificate is
/// `client.root.crt`).
pub const DEFAULT_USER: &str = "root";

/// A user's client certificate's file name.
pub fn client_cert_file(user: &str) -> String {
    format!("client.{user}.crt")
}

/// A user's client key's file name.
pub fn client_key_file(user: &str) -> String {
    format!("client.{user}.key")
}

/// PEM bytes: the CA to trust, and this side's certificate and key.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsMaterial {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// Where it was read from (for error messages).
    pub source: String,
}

impl fmt::Debug for TlsMaterial {
    // Never print a private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TlsMaterial({})", self.source)
    }
}

impl TlsMaterial {
    /// A user's client identity from `dir`: `ca.crt`,
    /// `client.<user>.crt`, `client.<user>.key`.
    pub fn client(dir: &Path, user: &str) -> Result<Self> {
        Self::read(dir, &client_cert_file(user), &client_key_file(user))
            .map_err(|e| with_hint(e, &format!("rangedb cert create-client {user}")))
    }

    /// Only the cluster's CA from `dir`: a client that proves who it is
    /// with a login token instead of a certificate.
    pub fn ca_only(dir: &Path) -> Result<Self> {
        Ok(TlsMaterial {
            ca_pem: read_file(&dir.join(CA_CERT))?,
            cert_pem: Vec::new(),
            key_pem: Vec::new(),
            source: format!("{}/{CA_CERT}", dir.display()),
        })
    }

    /// Whether it holds a certificate to present (not `ca_only`).
    pub fn has_identity(&self) -> bool {
        !self.cert_pem.is_empty()
    }

    /// A node's identity from `dir`: `ca.crt`, `node.crt`, `node.key`.
    pub fn node(dir: &Path) -> Result<Self> {
        Self::read(dir, NODE_CERT, NODE_KEY)
            .map_err(|e| with_hint(e, "rangedb cert create-node <hosts...>"))
    }

    fn read(dir: &Path, cert: &str, key: &str) -> Result<Self> {
        let ca_pem = read_file(&dir.join(CA_CERT))?;
        let cert_pem = read_file(&dir.join(cert))?;
        let key_pem = read_file(&dir.join(key))?;
        Ok(TlsMaterial {
            ca_pem,
            cert_pem,
            key_pem,
            source: format!("{}/{cert}", dir.display()),
        })
    }
}

fn with_hint(e: Error, cmd: &str) -> Error {
    match e {
        Error::Config(m) => Error::Config(format!("{m} (create it with `{cmd}`)")),
        e => e,
    }
}

/// Reads one certificate or key file; a missing or unreadable file is one
/// clear line naming it.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(b) if b.is_empty() => Err(Error::Config(format!("{} is empty", path.display()))),
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(Error::Config(format!("{} does not exist", path.display())))
        }
        Err(e) => Err(Error::Config(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// The certificates directory `RANGEDB_CERTS_DIR` names, if set.
pub fn certs_dir_from_env() -> Option<PathBuf> {
    std::env::var_os("RANGEDB_CERTS_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The client material the environment asks for, as the CLI reads it:
/// `RANGEDB_CERTS_DIR` and the user `RANGEDB_USER` (default root); `None`
/// (plaintext) when `RANGEDB_CERTS_DIR` is unset.
pub fn client_from_env() -> Result<Option<TlsMaterial>> {
    let Some(dir) = certs_dir_from_env() else {
        return Ok(None);
    };
    let user = std::env::var("RANGEDB_USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_USER.to_string());
    TlsMaterial::client(&dir, &user).map(Some)
}

/// An endpoint for `addr` (`host:port`): TLS with `tls`, plaintext without.
pub fn endpoint(addr: &str, tls: Option<&TlsMaterial>) -> Result<Endpoint> {
    let scheme = if tls.is_some() && cfg!(not(madsim)) {
        "https"
    } else {
        "http"
    };
    let ep = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| Error::Config(format!("bad endpoint {addr}: {e}")))?;
    #[cfg(not(madsim))]
    if let Some(t) = tls {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let mut cfg = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&t.ca_pem));
        if t.has_identity() {
            cfg = cfg.identity(Identity::from_pem(&t.cert_pem, &t.key_pem));
        }
        return ep
            .tls_config(cfg)
            .map_err(|e| Error::Config(format!("TLS material {} is unusable: {e}", t.source)));
    }
    Ok(ep)
}

/// Simulation only: the identity a verified TLS client certificate would
/// prove (`node`, or `user:<name>`). Simulated connections carry no TLS,
/// so the simulator's clients state it and its nodes believe it; no
/// production build reads or sends it.
#[cfg(madsim)]
pub const SIM_IDENTITY: &str = "x-rangedb-sim-identity";
