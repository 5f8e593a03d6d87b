//! Logins, users and roles through the SDK (the Auth service). Every call
//! is routed to the leader of the range holding `_/auth/`. Changes are
//! idempotent or refuse a repeat clearly (adding a user twice: "exists"),
//! so ambiguous failures are retried only where repeating is harmless.

use super::{Client, Retry};
use crate::api::route;
use crate::error::Result;
use crate::proto::*;
use crate::trace_context as trace;

/// Where the auth records live (route key).
fn home() -> Vec<u8> {
    route::key(b"_/auth/")
}

/// A permission as the SDK takes it.
pub fn permission(prefix: &[u8], write: bool) -> Permission {
    Permission {
        prefix: prefix.to_vec(),
        access: if write {
            Access::ReadWrite as i32
        } else {
            Access::Read as i32
        },
    }
}

macro_rules! auth_call {
    ($self:ident, $retry:expr, $method:ident, $req:expr) => {{
        let req = $req;
        $self
            .with_retry(&home(), $retry, |ch| {
                let req = req.clone();
                async move { ch.auth().$method(trace::request(req)).await }
            })
            .await
            .map(|r| r.into_inner())
    }};
}

impl Client {
    /// A token for `user` (pass it as `ClientOptions::token`), and when it
    /// expires (ms since the epoch). `ttl_secs` 0: the default (1 hour).
    pub async fn login(&self, user: &str, password: &str, ttl_secs: u64) -> Result<LoginResponse> {
        let req = LoginRequest {
            user: user.into(),
            password: password.into(),
            ttl_secs,
        };
        auth_call!(self, Retry::Idempotent, login, req)
    }

    /// Whether authentication is on, and who this client is.
    pub async fn auth_status(&self) -> Result<AuthStatusResponse> {
        auth_call!(self, Retry::Idempotent, auth_status, AuthStatusRequest {})
    }

    pub async fn set_auth_enabled(&self, enabled: bool) -> Result<AuthStatusResponse> {
        let req = SetAuthEnabledRequest { enabled };
        auth_call!(self, Retry::Idempotent, set_auth_enabled, req)
    }

    pub async fn user_add(&self, user: &str, password: &str) -> Result<()> {
        let req = UserPasswordRequest {
            user: user.into(),
            password: password.into(),
        };
        auth_call!(self, Retry::Write, user_add, req).map(|_| ())
    }

    pub async fn user_passwd(&self, user: &str, password: &str) -> Result<()> {
        let req = UserPasswordRequest {
            user: user.into(),
            password: password.into(),
        };
        auth_call!(self, Retry::Idempotent, user_passwd, req).map(|_| ())
    }

    pub async fn user_remove(&self, user: &str) -> Result<()> {
        let req = UserRequest { user: user.into() };
        auth_call!(self, Retry::Write, user_remove, req).map(|_| ())
    }

    /// Grants `role` to `user` (or takes it away with `revoke`).
    pub async fn user_role(&self, user: &str, role: &str, revoke: bool) -> Result<()> {
        let req = UserRoleRequest {
            user: user.into(),
            role: role.into(),
            revoke,
        };
        auth_call!(self, Retry::Idempotent, user_role, req).map(|_| ())
    }

    pub async fn user_list(&self) -> Result<Vec<UserInfo>> {
        auth_call!(self, Retry::Idempotent, user_list, UserListRequest {}).map(|r| r.users)
    }

    pub async fn role_add(&self, role: &str) -> Result<()> {
        let req = RoleRequest { role: role.into() };
        auth_call!(self, Retry::Write, role_add, req).map(|_| ())
    }

    pub async fn role_remove(&self, role: &str) -> Result<()> {
        let req = RoleRequest { role: role.into() };
        auth_call!(self, Retry::Write, role_remove, req).map(|_| ())
    }

    /// Grants read (or read-write) on `prefix` to `role`; with `revoke`,
    /// takes the grant on that prefix away.
    pub async fn role_permission(
        &self,
        role: &str,
        prefix: &[u8],
        write: bool,
        revoke: bool,
    ) -> Result<()> {
        let req = RolePermissionRequest {
            role: role.into(),
            permission: Some(permission(prefix, write)),
            revoke,
        };
        auth_call!(self, Retry::Idempotent, role_permission, req).map(|_| ())
    }

    pub async fn role_list(&self) -> Result<Vec<RoleInfo>> {
        auth_call!(self, Retry::Idempotent, role_list, RoleListRequest {}).map(|r| r.roles)
    }
}
