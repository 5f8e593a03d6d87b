//! Users, roles and logins (docs/security.md, "Users and roles").
//!
//! What it owns:
//! - the records under `_/auth/` in the system keyspace: `enabled`, the
//!   token key, `users/<name>` (argon2id hash, roles, a generation that
//!   changes with every password) and `roles/<name>` (grants), JSON;
//! - `AuthState`, the parsed table every node keeps in memory (refreshed
//!   with the other cluster metadata, and at once on the node that made a
//!   change), and `AuthGate`, which turns a request's credentials into a
//!   `Principal` synchronously (a tonic interceptor: before the body is
//!   decoded, and in simulation too);
//! - `authz` (what a principal may touch), `token`, `password`.
//!
//! Invariants:
//! - authentication is off until enabled, which needs TLS (node
//!   certificates are how nodes are told from users) and a root user;
//! - a node with TLS refuses users until it has loaded the table once
//!   (fail closed, never "off by default" after a restart);
//! - a password never leaves the node that received it: only its hash is
//!   proposed;
//! - a change reaches every node within `METADATA_REFRESH_INTERVAL` (the
//!   node that made it at once); until then another node may still accept
//!   a removed user's token — documented, bounded.

pub mod authz;
pub mod password;
pub mod token;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataMap;

pub use authz::{Grant, Principal};

use crate::clock::NodeClock;
use crate::error::{Error, Result};
use crate::security::peer::PeerIdentity;

pub const ENABLED_KEY: &str = "_/auth/enabled";
pub const TOKEN_KEY_KEY: &str = "_/auth/token-key";
pub const USERS_PREFIX: &str = "_/auth/users/";
pub const ROLES_PREFIX: &str = "_/auth/roles/";
pub const AUTH_PREFIX: &str = "_/auth/";
/// The built-in superuser and its role (every right, administration).
pub const ROOT: &str = "root";

/// A user as stored (`_/auth/users/<name>`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct UserRecord {
    /// argon2id, PHC string.
    pub hash: String,
    pub roles: Vec<String>,
    /// Random, new with every password: tokens name it, so a new password
    /// or a removed-and-re-added user ends old tokens.
    pub generation: u64,
}

/// A role as stored (`_/auth/roles/<name>`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct RoleRecord {
    pub grants: Vec<Grant>,
}

/// The whole table, as one node knows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuthState {
    pub enabled: bool,
    pub token_key: Vec<u8>,
    pub users: BTreeMap<String, UserRecord>,
    pub roles: BTreeMap<String, RoleRecord>,
}

impl AuthState {
    /// Parses the `_/auth/` pairs (user-visible keys); a record that does
    /// not parse is corruption and fails the whole load (the node keeps
    /// its previous table rather than dropping a user's restrictions).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Result<Self> {
        let mut s = AuthState::default();
        for (k, v) in pairs {
            let key = String::from_utf8_lossy(k);
            let corrupt = |e: serde_json::Error| Error::Internal(format!("{key} is corrupt: {e}"));
            if key == ENABLED_KEY {
                s.enabled = v == b"true";
            } else if key == TOKEN_KEY_KEY {
                s.token_key = unhex(&String::from_utf8_lossy(v))
                    .ok_or_else(|| Error::Internal(format!("{key} is corrupt")))?;
            } else if let Some(name) = key.strip_prefix(USERS_PREFIX) {
                s.users.insert(
                    name.to_string(),
                    serde_json::from_slice(v).map_err(corrupt)?,
                );
            } else if let Some(name) = key.strip_prefix(ROLES_PREFIX) {
                s.roles.insert(
                    name.to_string(),
                    serde_json::from_slice(v).map_err(corrupt)?,
                );
            }
        }
        Ok(s)
    }

    /// The principal of an existing user.
    pub fn principal(&self, name: &str) -> Option<Principal> {
        let u = self.users.get(name)?;
        let root = name == ROOT || u.roles.iter().any(|r| r == ROOT);
        let mut grants: Vec<Grant> = u
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|r| r.grants.iter().cloned())
            .collect();
        grants.sort();
        grants.dedup();
        Some(Principal::User {
            name: name.to_string(),
            root,
            grants,
        })
    }
}

/// Checks a user or role name: 1-64 of `[A-Za-z0-9_.-]` (names appear in
/// keys, tokens and file names).
pub fn check_name(name: &str, what: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{what} name {name:?} must be 1-64 characters of A-Z a-z 0-9 _ . -"
        )))
    }
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// The metadata key of a bearer token.
pub const AUTHORIZATION: &str = "authorization";

/// Turns credentials into principals on one node: the table as last
/// loaded, whether the node runs TLS, its clock (token expiry).
#[derive(Clone)]
pub struct AuthGate {
    inner: Arc<GateInner>,
}

struct GateInner {
    /// The table and when it was last loaded (local monotonic time).
    state: RwLock<Option<(Arc<AuthState>, tokio::time::Instant)>>,
    tls: bool,
    clock: NodeClock,
}

/// A TLS node whose table is older than this (its refreshes failed: the
/// system range is out of reach) refuses users until it has a fresh one:
/// a removal or revocation takes effect everywhere within this bound.
pub const MAX_STALENESS: std::time::Duration = std::time::Duration::from_secs(10);

impl AuthGate {
    pub fn new(tls: bool, clock: NodeClock) -> Self {
        AuthGate {
            inner: Arc::new(GateInner {
                state: RwLock::new(None),
                tls,
                clock,
            }),
        }
    }

    pub fn tls(&self) -> bool {
        self.inner.tls
    }

    pub fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    /// The table as last loaded (`None`: not yet).
    pub fn state(&self) -> Option<Arc<AuthState>> {
        self.loaded().map(|(s, _)| s)
    }

    fn loaded(&self) -> Option<(Arc<AuthState>, tokio::time::Instant)> {
        self.inner
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Canary `AuthRefreshKeepsOldTable` only: the refresher read the
    /// table but keeps the old one, as if it were fresh.
    pub fn mark_fresh(&self) {
        let mut cur = self.inner.state.write().unwrap_or_else(|e| e.into_inner());
        if let Some((_, at)) = cur.as_mut() {
            *at = tokio::time::Instant::now();
        }
    }

    /// Replaces the table; says whether authentication turned on or off.
    pub fn set(&self, s: AuthState) {
        let mut cur = self.inner.state.write().unwrap_or_else(|e| e.into_inner());
        let was = cur.as_ref().map(|(c, _)| c.enabled);
        if was != Some(s.enabled) {
            tracing::info!(enabled = s.enabled, "authentication state loaded");
        }
        if !self.inner.tls && s.enabled {
            tracing::error!(
                "authentication is on in this cluster but this node runs without TLS: \
                 it refuses every client until restarted with --certs-dir"
            );
        }
        *cur = Some((Arc::new(s), tokio::time::Instant::now()));
    }

    /// Who a request is: from its bearer token, else its verified client
    /// certificate (`cert`, production only).
    pub fn authenticate(
        &self,
        meta: &MetadataMap,
        cert: Option<&PeerIdentity>,
    ) -> Result<Principal> {
        if let Some(PeerIdentity::Node { .. }) = cert {
            return Ok(Principal::Node);
        }
        let token = bearer(meta)?;
        let Some((state, at)) = self.loaded() else {
            if !self.inner.tls {
                // Without TLS authentication cannot be on (SetAuthEnabled
                // refuses), unless a restart dropped --certs-dir: the
                // first load (at once, then every refresh) tells.
                return Ok(Principal::Unrestricted);
            }
            return Err(Error::Unavailable(
                "this node is still loading users and roles; retry".into(),
            ));
        };
        if self.inner.tls && at.elapsed() > MAX_STALENESS {
            return Err(Error::Unavailable(format!(
                "this node could not refresh users and roles for {} s (the system range is \
                 out of reach); retry or use another node",
                at.elapsed().as_secs()
            )));
        }
        if !state.enabled {
            if self.inner.tls && cert.is_none() {
                return Err(Error::Unauthenticated(
                    "no client certificate: while authentication is off, TLS clients need one \
                     (`rangedb cert create-client <user>`)"
                        .into(),
                ));
            }
            return Ok(Principal::Unrestricted);
        }
        if !self.inner.tls {
            return Err(Error::Unauthenticated(
                "authentication is on in this cluster, but this node runs without TLS: \
                 restart it with --certs-dir"
                    .into(),
            ));
        }
        if let Some(t) = token {
            let claims = token::verify(&state.token_key, t, self.now_ms())?;
            let user = state.users.get(&claims.user);
            if user.is_none_or(|u| u.generation != claims.generation) {
                return Err(Error::Unauthenticated(format!(
                    "the token of user {} is no longer valid (the user was removed or its \
                     password changed): run `rangedb login`",
                    claims.user
                )));
            }
            return state
                .principal(&claims.user)
                .ok_or_else(|| Error::Internal("user vanished".into()));
        }
        if let Some(PeerIdentity::User(name)) = cert {
            return state.principal(name).ok_or_else(|| {
                Error::Unauthenticated(format!(
                    "user {name} (from the client certificate) does not exist: \
                     `rangedb user add {name}`"
                ))
            });
        }
        Err(Error::Unauthenticated(
            "authentication is required: run `rangedb login`, set RANGEDB_PASSWORD, \
             or present a client certificate"
                .into(),
        ))
    }
}

/// The bearer token of a request, if any.
fn bearer(meta: &MetadataMap) -> Result<Option<&str>> {
    let Some(v) = meta.get(AUTHORIZATION) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|s| s.strip_prefix("Bearer "))
        .map(|t| Some(t.trim()))
        .ok_or_else(|| {
            Error::Unauthenticated("the authorization header is not `Bearer <token>`".into())
        })
}

/// Why the gate did not name a request's caller, kept for the handler
/// where the gate lets such requests through (the Auth service: logging
/// in needs no credentials).
#[derive(Clone, Debug)]
pub struct Unidentified(pub Error);

/// Simulation only: the identity a client certificate would prove, as the
/// simulated client states it (`tls::SIM_IDENTITY`).
#[cfg(madsim)]
pub fn sim_identity(meta: &MetadataMap) -> Option<PeerIdentity> {
    let v = meta.get(crate::tls::SIM_IDENTITY)?.to_str().ok()?;
    match v.strip_prefix("user:") {
        Some(name) => Some(PeerIdentity::User(name.to_string())),
        None if v == "node" => Some(PeerIdentity::Node { hosts: Vec::new() }),
        None => None,
    }
}

/// The principal the interceptor put on a request; a request without one
/// did not pass the gate and is refused (with the gate's reason).
pub fn principal<T>(req: &tonic::Request<T>) -> Result<Principal> {
    if let Some(p) = req.extensions().get::<Principal>() {
        return Ok(p.clone());
    }
    Err(match req.extensions().get::<Unidentified>() {
        Some(Unidentified(e)) => e.clone(),
        None => Error::Unauthenticated("the request carries no identity".into()),
    })
}

#[cfg(test)]
mod tests;
