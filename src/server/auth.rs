//! The Auth service: logins, users, roles, turning authentication on and
//! off (`security::auth` has the model). Changes are read-modify-write of
//! `_/auth/` records through this node's Store (the system range's leader
//! serves them; others answer NotLeader and the SDK follows), one at a
//! time per node; the node that made a change loads the new table at once,
//! the others at their next metadata refresh.
//!
//! Input is checked before anything is written; passwords are hashed here,
//! so only hashes reach Raft.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::status;
use super::registry::scan_prefix;
use crate::error::{Error, Result};
use crate::keys;
use crate::node::{Consistency, StoreHandle};
use crate::proto::auth_server::Auth;
use crate::proto::*;
use crate::range::Op;
use crate::security::auth::{
    self, check_name, password, principal, token, AuthGate, AuthState, Grant, Principal,
    RoleRecord, UserRecord, ROOT,
};

/// Default token lifetime (`rangedb login --ttl`).
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 3600;
/// What `auth enable|disable` waits beyond one metadata refresh.
const SWITCH_MARGIN: std::time::Duration = std::time::Duration::from_secs(1);
/// Longest token lifetime.
pub const MAX_TOKEN_TTL_SECS: u64 = 24 * 3600;

#[derive(Clone)]
pub struct AuthService {
    store: StoreHandle,
    gate: AuthGate,
    /// One change at a time on this node (read-modify-write).
    changing: Arc<tokio::sync::Mutex<()>>,
}

impl AuthService {
    pub fn new(store: StoreHandle, gate: AuthGate) -> Self {
        AuthService {
            store,
            gate,
            changing: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The table as stored now (linearizable).
    async fn load(&self) -> Result<AuthState> {
        let pairs = scan_prefix(&self.store, auth::AUTH_PREFIX, Consistency::Linearizable).await?;
        AuthState::from_pairs(pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
    }

    /// The table as stored now, for a caller who must be root.
    async fn load_as_root<T>(&self, request: &Request<T>, what: &str) -> Result<AuthState> {
        principal(request)?.check_root(what)?;
        self.load().await
    }

    /// Runs one change: `f` edits a fresh copy of the table and returns
    /// the records to write; they are written together, then this node
    /// loads the result.
    async fn change<F>(&self, req_principal: &Principal, what: &str, f: F) -> Result<()>
    where
        F: FnOnce(&mut AuthState) -> Result<Vec<Op>>,
    {
        req_principal.check_root(what)?;
        let _one = self.changing.lock().await;
        let mut state = self.load().await?;
        let ops = f(&mut state)?;
        if ops.is_empty() {
            return Ok(());
        }
        self.store.write(ops).await?;
        self.gate.set(state);
        Ok(())
    }
}

/// The answer to a change.
fn done(r: Result<()>) -> Result<Response<AuthChangeResponse>, Status> {
    r.map(|()| Response::new(AuthChangeResponse {}))
        .map_err(status)
}

fn put_json<T: serde::Serialize>(key: String, v: &T) -> Result<Op> {
    let bytes = serde_json::to_vec(v).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(Op::put(keys::system(&key), bytes))
}

fn user_key(name: &str) -> String {
    format!("{}{name}", auth::USERS_PREFIX)
}

fn role_key(name: &str) -> String {
    format!("{}{name}", auth::ROLES_PREFIX)
}

fn no_user(name: &str) -> Error {
    Error::NotFound(format!("user {name} does not exist"))
}

fn no_role(name: &str) -> Error {
    Error::NotFound(format!("role {name} does not exist"))
}

/// Runs argon2 (tens of milliseconds of CPU) off the async workers in
/// production; inline in simulation (cheap parameters, no blocking pool).
async fn off_reactor<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    #[cfg(not(madsim))]
    {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| Error::Internal(format!("password check: {e}")))
    }
    #[cfg(madsim)]
    {
        Ok(f())
    }
}

async fn hash_password(pw: String) -> Result<String> {
    off_reactor(move || password::hash(&pw)).await?
}

async fn verify_password(pw: String, phc: String) -> bool {
    off_reactor(move || password::verify(&pw, &phc))
        .await
        .unwrap_or(false)
}

fn status_response(enabled: bool, p: Option<&Principal>, state: &AuthState) -> AuthStatusResponse {
    let (name, roles) = match p {
        Some(Principal::User { name, root, .. }) => {
            let mut roles = state
                .users
                .get(name)
                .map(|u| u.roles.clone())
                .unwrap_or_default();
            if *root && !roles.iter().any(|r| r == ROOT) {
                roles.insert(0, ROOT.to_string());
            }
            (name.clone(), roles)
        }
        Some(other) => (other.describe(), Vec::new()),
        None => (String::new(), Vec::new()),
    };
    AuthStatusResponse {
        enabled,
        principal: name,
        roles,
    }
}

fn grant_of(p: Option<Permission>) -> Result<Grant> {
    let p = p.ok_or_else(|| Error::InvalidArgument("no permission given".into()))?;
    let write = match crate::proto::Access::try_from(p.access) {
        Ok(crate::proto::Access::Read) => false,
        Ok(crate::proto::Access::ReadWrite) => true,
        Err(_) => {
            return Err(Error::InvalidArgument(format!(
                "unknown access {}",
                p.access
            )))
        }
    };
    if p.prefix.len() > crate::api::MAX_KEY_BYTES {
        return Err(Error::InvalidArgument("the prefix is too long".into()));
    }
    if p.prefix.starts_with(auth::AUTH_PREFIX.as_bytes()) {
        return Err(Error::InvalidArgument(
            "_/auth/ cannot be granted: it holds the users and their password hashes".into(),
        ));
    }
    Ok(Grant {
        prefix: p.prefix,
        write,
    })
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let req = request.into_inner();
        let ttl = match req.ttl_secs {
            0 => DEFAULT_TOKEN_TTL_SECS,
            t if t > MAX_TOKEN_TTL_SECS => {
                return Err(status(Error::InvalidArgument(format!(
                    "a token lives at most {MAX_TOKEN_TTL_SECS} s; {t} s asked"
                ))))
            }
            t => t,
        };
        let state = self.load().await.map_err(status)?;
        if !state.enabled {
            return Err(status(Error::FailedPrecondition(
                "authentication is off: no login is needed (`rangedb admin auth enable` turns it on)"
                    .into(),
            )));
        }
        // One answer for a wrong password and an unknown user.
        let refused = || {
            status(Error::Unauthenticated(format!(
                "wrong user name or password for {}",
                req.user
            )))
        };
        let Some(user) = state.users.get(&req.user).cloned() else {
            // Spend the same work as a real check (no user enumeration by time).
            let _ = verify_password(req.password.clone(), DUMMY_HASH.into()).await;
            return Err(refused());
        };
        if !verify_password(req.password, user.hash).await {
            return Err(refused());
        }
        let expires_at_ms = self.gate.now_ms() + ttl * 1000;
        let token = token::issue(&state.token_key, &req.user, user.generation, expires_at_ms);
        tracing::info!(user = %req.user, ttl_secs = ttl, "login");
        Ok(Response::new(LoginResponse {
            token,
            expires_at_ms,
        }))
    }

    async fn auth_status(
        &self,
        request: Request<AuthStatusRequest>,
    ) -> Result<Response<AuthStatusResponse>, Status> {
        let p = principal(&request).ok();
        let state = self.load().await.map_err(status)?;
        Ok(Response::new(status_response(
            state.enabled,
            p.as_ref(),
            &state,
        )))
    }

    async fn set_auth_enabled(
        &self,
        request: Request<SetAuthEnabledRequest>,
    ) -> Result<Response<AuthStatusResponse>, Status> {
        let p = principal(&request).map_err(status)?;
        let on = request.into_inner().enabled;
        if on && !self.gate.tls() {
            return Err(status(Error::FailedPrecondition(
                "authentication needs TLS: start every node with --certs-dir (passwords and \
                 tokens must not cross the network in plaintext, and only node certificates \
                 tell nodes from users)"
                    .into(),
            )));
        }
        let what = if on {
            "enable authentication"
        } else {
            "disable authentication"
        };
        self.change(&p, what, |s| {
            if s.enabled == on {
                return Ok(Vec::new());
            }
            let mut ops = Vec::new();
            if on {
                if !s.users.contains_key(ROOT) {
                    return Err(Error::FailedPrecondition(
                        "authentication needs a root user first: `rangedb user add root`".into(),
                    ));
                }
                // A fresh token key: tokens of an earlier enabled period
                // (or anything read while authentication was off) die.
                let key: [u8; 32] = madsim::rand::random();
                s.token_key = key.to_vec();
                ops.push(Op::put(
                    keys::system(auth::TOKEN_KEY_KEY),
                    auth::hex(&key).into_bytes(),
                ));
            }
            s.enabled = on;
            ops.push(Op::put(
                keys::system(auth::ENABLED_KEY),
                if on {
                    b"true".to_vec()
                } else {
                    b"false".to_vec()
                },
            ));
            Ok(ops)
        })
        .await
        .map_err(status)?;
        tracing::warn!(enabled = on, by = %p.describe(), "authentication switched");
        // Answer once every node has had a refresh to learn it, so that the
        // next command (a login, then a write led by another node) finds
        // the cluster switched, not half of it.
        tokio::time::sleep(super::background::METADATA_REFRESH_INTERVAL + SWITCH_MARGIN).await;
        let state = self.gate.state().unwrap_or_default();
        Ok(Response::new(status_response(on, Some(&p), &state)))
    }

    async fn user_add(
        &self,
        request: Request<UserPasswordRequest>,
    ) -> Result<Response<AuthChangeResponse>, Status> {
        let p = principal(&request).map_err(status)?;
        let req = request.into_inner();
        check_name(&req.user, "user").map_err(status)?;
        let hash = hash_password(req.password).await.map_err(status)?;
        done(
            self.change(&p, "add users", |s| {
                if s.users.contains_key(&req.user) {
                    return Err(Error::AlreadyExists(format!("user {} exists", req.user)));
                }
                let rec = UserRecord {
                    hash,
                    roles: Vec::new(),
                    generation: madsim::rand::random(),
                };
                let op = put_json(user_key(&req.user), &rec)?;
                s.users.insert(req.user.clone(), rec);
                Ok(vec![op])
            })
            .await,
        )
    }

    async fn user_passwd(
        &self,
        request: Request<UserPasswordRequest>,
    ) -> Result<Response<AuthChangeResponse>, Status> {
        let p = principal(&request).map_err(status)?;
        let req = request.into_inner();
        check_name(&req.user, "user").map_err(status)?;
        let hash = hash_password(req.password).await.map_err(status)?;
        // A user may change their own password; root anyone's.
        let me = matches!(&p, Principal::User { name, .. } if *name == req.user);
        let acting = if me { Principal::Node } else { p };
        done(
            self.change(&acting, "change another user's password", |s| {
                let rec = s
                    .users
                    .get_mut(&req.user)
                    .ok_or_else(|| no_user(&req.user))?;
                rec.hash = hash;
                rec.generation = madsim::rand::random();
                Ok(vec![put_json(user_key(&req.user), rec)?])
            })
            .await,
        )
    }

    async fn user_remove(
        &self,
        request: Request<UserRequest>,
    ) -> Result<Response<AuthChangeResponse>, Status> {
        let p = principal(&request).map_err(status)?;
        let name = request.into_inner().user;
        done(
            self.change(&p, "remove users", |s| {
                if !s.users.contains_key(&name) {
                    return Err(no_user(&name));
                }
                if name == ROOT && s.enabled {
                    return Err(Error::FailedPrecondition(
                        "root cannot be removed while authentication is on".into(),
                    ));
                }
                s.users.remove(&name);
                Ok(vec![Op::delete(keys::system(&user_key(&name)))])
            })
            .await,
        )
    }

    async fn user_role(
        &self,
        request: Request<UserRoleRequest>,
    ) -> Result<Response<AuthChangeResponse>, Status> {
        let p = principal(&request).map_err(status)?;
        let req = request.into_inner();
        done(
            self.change(&p, "grant roles", |s| {
                if req.role != ROOT && !s.roles.contains_key(&req.role) {
                    return Err(no_role(&req.role));
                }
                let rec = s
                    .users
                    .get_mut(&req.user)
                    .ok_or_else(|| no_user(&req.user))?;
                let has = rec.roles.contains(&req.role);
                match (req.revoke, has) {
                    (false, false) => rec.roles.push(req.role.clone()),
                    (true, true) => rec.roles.retain(|r| *r != req.role),
                    _ => return Ok(Vec::new()),
                }
                rec.roles.sort();
                Ok(vec![put_json(user_key(&req.user), rec)?])
            })
            .await,
        )
    }

    async fn user_list(
        &self,
        request: Request<UserListRequest>,
    ) -> Result<Response<UserListResponse>, Status> {
        let state = self
            .load_as_root(&request, "list users")
            .await
            .map_err(status)?;
        let users = state
            .users
            .iter()
            .map(|(name, u)| UserInfo {
                name: name.clone(),
                roles: u.roles.clone(),
            })
            .collect();
        Ok(Response::new(UserListResponse { users }))
    }

    async fn role_add(
        &self,
        request: Request<RoleRequest>,
    ) -> Result<Response<AuthChangeResponse>, Status> {
        let p = principal(&request).map_err(status)?;
        let role = request.into_inner().role;
        check_name(&role, "role").map_err(status)?;
        done(
            self.change(&p, "add roles", |s| {
                if role == ROOT || s.roles.contains_key(&role) {
                    return Err(Error::AlreadyExists(format!("role {role} exists")));
                }
                let rec = RoleRecord::default();
                let op = put_json(role_key(&role), &rec)?;
                s.roles.insert(role.clone(), rec);
                Ok(vec![op])
            })
            .await,
        )
    }

    async fn role_remove(
        &self,
        request: Request<RoleRequest>,
    ) -> Result<Response<AuthChangeResponse>, Status> {
        let p = principal(&request).map_err(status)?;
        let role = request.into_inner().role;
        done(
            self.change(&p, "remove roles", |s| {
                if s.roles.remove(&role).is_none() {
                    return Err(no_role(&role));
                }
                // Users lose the role with it (one batch: no dangling names).
                let mut ops = vec![Op::delete(keys::system(&role_key(&role)))];
                for (name, u) in s.users.iter_mut() {
                    if u.roles.contains(&role) {
                        u.roles.retain(|r| *r != role);
                        ops.push(put_json(user_key(name), u)?);
                    }
                }
                Ok(ops)
            })
            .await,
        )
    }

    async fn role_permission(
        &self,
        request: Request<RolePermissionRequest>,
    ) -> Result<Response<AuthChangeResponse>, Status> {
        let p = principal(&request).map_err(status)?;
        let req = request.into_inner();
        let grant = grant_of(req.permission).map_err(status)?;
        done(
            self.change(&p, "grant permissions", |s| {
                let rec = s
                    .roles
                    .get_mut(&req.role)
                    .ok_or_else(|| no_role(&req.role))?;
                let before = rec.grants.clone();
                // One grant per prefix: read-write replaces read and back.
                rec.grants.retain(|g| g.prefix != grant.prefix);
                if !req.revoke {
                    rec.grants.push(grant);
                }
                rec.grants.sort();
                if rec.grants == before {
                    return Ok(Vec::new());
                }
                Ok(vec![put_json(role_key(&req.role), rec)?])
            })
            .await,
        )
    }

    async fn role_list(
        &self,
        request: Request<RoleListRequest>,
    ) -> Result<Response<RoleListResponse>, Status> {
        let state = self
            .load_as_root(&request, "list roles")
            .await
            .map_err(status)?;
        let roles = state
            .roles
            .iter()
            .map(|(name, r)| RoleInfo {
                name: name.clone(),
                permissions: r
                    .grants
                    .iter()
                    .map(|g| Permission {
                        prefix: g.prefix.clone(),
                        access: if g.write {
                            crate::proto::Access::ReadWrite as i32
                        } else {
                            crate::proto::Access::Read as i32
                        },
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(RoleListResponse { roles }))
    }
}

/// A well-formed hash of nothing anyone knows, verified against when the
/// user does not exist (the same cost as a real check).
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0m8B1ztWhW7S6eQ3fb0Z3Ev3U8f6vD6XKq0b6o6Yk3Y";
