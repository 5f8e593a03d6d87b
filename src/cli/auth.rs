//! `rangedb user …`, `rangedb role …`, `rangedb login|logout` and `rangedb
//! admin auth …`, and the credentials every client command sends:
//!
//! 1. `RANGEDB_PASSWORD` set: the command logs in as `--user` first (a
//!    short-lived token, for scripts);
//! 2. else a token cached by `rangedb login` (`~/.rangedb/token.<user>`,
//!    or `$RANGEDB_TOKEN_DIR`), if it has not expired;
//! 3. else only the client certificate, if `--certs-dir` holds one.
//!
//! Passwords are read without echo on a terminal, else one line of stdin;
//! they are never taken as command-line arguments (shell history, `ps`).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use serde_json::json;

use super::data::print_ok;
use crate::client::{Client, ClientOptions};
use crate::error::{Error, Result};
use crate::proto::Access;

/// Lifetime of the token a command with `RANGEDB_PASSWORD` logs in for.
const SCRIPT_TOKEN_TTL_SECS: u64 = 300;

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user (asks for its password).
    Add { name: String },
    /// Change a user's password (yours, or anyone's as root); its tokens stop working.
    Passwd { name: String },
    /// Remove a user; its tokens stop working.
    Remove { name: String },
    /// List users and their roles.
    List,
    /// Give a user a role ("root" is every right).
    Grant { name: String, role: String },
    /// Take a role away from a user.
    Revoke { name: String, role: String },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessArg {
    Read,
    Readwrite,
}

#[derive(Subcommand, Debug)]
pub enum RoleCommand {
    /// Add a role (with no permissions yet).
    Add { name: String },
    /// Remove a role (users lose it).
    Remove { name: String },
    /// List roles and their permissions.
    List,
    /// Let a role read (or read and write) every key starting with PREFIX
    /// ("" is every key).
    Grant {
        name: String,
        access: AccessArg,
        prefix: String,
    },
    /// Take back a role's permission on PREFIX.
    Revoke { name: String, prefix: String },
}

#[derive(Subcommand, Debug)]
pub enum AuthCommand {
    /// Require a login or a client certificate for every request (needs
    /// TLS and a root user).
    Enable,
    /// Let every client with a certificate do anything again.
    Disable,
    /// Whether authentication is on, and who you are.
    Status,
}

fn token_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("RANGEDB_TOKEN_DIR") {
        return Some(PathBuf::from(d));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".rangedb"))
}

fn token_file(user: &str) -> Option<PathBuf> {
    crate::security::auth::check_name(user, "user").ok()?;
    token_dir().map(|d| d.join(format!("token.{user}")))
}

/// The cached token of `user`, if any and not expired.
fn cached_token(user: &str) -> Option<String> {
    let text = std::fs::read_to_string(token_file(user)?).ok()?;
    let mut lines = text.lines();
    let token = lines.next()?.trim().to_string();
    let expires: u64 = lines.next()?.trim().parse().ok()?;
    (super::txn::unix_ms() < expires && !token.is_empty()).then_some(token)
}

fn save_token(user: &str, token: &str, expires_ms: u64) -> Result<PathBuf> {
    let path = token_file(user).ok_or_else(|| {
        Error::Config("no place for the token: set HOME or RANGEDB_TOKEN_DIR".into())
    })?;
    let io = |e: std::io::Error| Error::Config(format!("cannot write {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    writeln!(f, "{token}\n{expires_ms}").map_err(io)?;
    Ok(path)
}

/// Reads a password: without echo on a terminal, else one line of stdin.
pub fn read_password(prompt: &str) -> Result<String> {
    let pw = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(prompt)
            .map_err(|e| Error::Config(format!("cannot read the password: {e}")))?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| Error::Config(format!("cannot read the password from stdin: {e}")))?;
        line.trim_end_matches(['\n', '\r']).to_string()
    };
    crate::security::auth::password::check_password(&pw)?;
    Ok(pw)
}

/// A new password, asked twice on a terminal.
fn new_password(user: &str) -> Result<String> {
    let pw = read_password(&format!("New password for {user}: "))?;
    if std::io::stdin().is_terminal() && read_password("Again: ")? != pw {
        return Err(Error::InvalidArgument("the passwords differ".into()));
    }
    Ok(pw)
}

/// The token a client command should send as `user`, if any (see the
/// module doc). `base` reaches the cluster without one.
pub async fn token_for(
    base: &ClientOptions,
    endpoints: &[String],
    user: &str,
) -> Result<Option<String>> {
    if let Ok(pw) = std::env::var("RANGEDB_PASSWORD") {
        let c = Client::new(endpoints.to_vec(), base.clone())?;
        return match c.login(user, &pw, SCRIPT_TOKEN_TTL_SECS).await {
            Ok(r) => Ok(Some(r.token)),
            // Authentication is off: nothing to log in to.
            Err(Error::FailedPrecondition(_)) => Ok(None),
            Err(e) => Err(e),
        };
    }
    Ok(cached_token(user))
}

/// Whether the caller has a way to authenticate besides a certificate.
pub fn has_password_or_token(user: &str) -> bool {
    std::env::var_os("RANGEDB_PASSWORD").is_some() || cached_token(user).is_some()
}

pub(super) async fn login(
    out: &mut impl Write,
    client: &Client,
    user: &str,
    ttl_secs: u64,
    json: bool,
) -> Result<ExitCode> {
    let pw = match std::env::var("RANGEDB_PASSWORD") {
        Ok(pw) => pw,
        Err(_) => read_password(&format!("Password for {user}: "))?,
    };
    let r = client.login(user, &pw, ttl_secs).await?;
    let path = save_token(user, &r.token, r.expires_at_ms)?;
    if json {
        let _ = writeln!(
            out,
            "{}",
            json!({"user": user, "expires_at_ms": r.expires_at_ms, "token_file": path})
        );
    } else {
        let secs = ttl_secs_left(r.expires_at_ms);
        let _ = writeln!(
            out,
            "Logged in as {user} for {secs} s (token in {})",
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn ttl_secs_left(expires_ms: u64) -> u64 {
    expires_ms
        .saturating_sub(super::txn::unix_ms())
        .div_ceil(1000)
}

pub(super) fn logout(out: &mut impl Write, user: &str, json: bool) -> Result<ExitCode> {
    if let Some(p) = token_file(user) {
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::Config(format!("cannot remove {}: {e}", p.display()))),
        }
    }
    print_ok(out, json);
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn run_user(
    out: &mut impl Write,
    client: &Client,
    cmd: UserCommand,
    json: bool,
) -> Result<ExitCode> {
    match cmd {
        UserCommand::Add { name } => {
            crate::security::auth::check_name(&name, "user")?;
            let pw = new_password(&name)?;
            client.user_add(&name, &pw).await?;
        }
        UserCommand::Passwd { name } => {
            crate::security::auth::check_name(&name, "user")?;
            let pw = new_password(&name)?;
            client.user_passwd(&name, &pw).await?;
        }
        UserCommand::Remove { name } => client.user_remove(&name).await?,
        UserCommand::Grant { name, role } => client.user_role(&name, &role, false).await?,
        UserCommand::Revoke { name, role } => client.user_role(&name, &role, true).await?,
        UserCommand::List => {
            let users = client.user_list().await?;
            for u in &users {
                // The user root holds the root role whether granted or not.
                let mut roles = u.roles.clone();
                if u.name == crate::security::auth::ROOT && !roles.iter().any(|r| r == "root") {
                    roles.insert(0, "root".into());
                }
                if json {
                    let _ = writeln!(out, "{}", json!({"name": u.name, "roles": roles}));
                } else {
                    let _ = writeln!(out, "{}: {}", u.name, roles_text(&roles));
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
    }
    print_ok(out, json);
    Ok(ExitCode::SUCCESS)
}

fn roles_text(roles: &[String]) -> String {
    if roles.is_empty() {
        "(no roles)".into()
    } else {
        roles.join(", ")
    }
}

pub(super) async fn run_role(
    out: &mut impl Write,
    client: &Client,
    cmd: RoleCommand,
    json: bool,
) -> Result<ExitCode> {
    match cmd {
        RoleCommand::Add { name } => {
            crate::security::auth::check_name(&name, "role")?;
            client.role_add(&name).await?
        }
        RoleCommand::Remove { name } => client.role_remove(&name).await?,
        RoleCommand::Grant {
            name,
            access,
            prefix,
        } => {
            client
                .role_permission(
                    &name,
                    prefix.as_bytes(),
                    access == AccessArg::Readwrite,
                    false,
                )
                .await?
        }
        RoleCommand::Revoke { name, prefix } => {
            client
                .role_permission(&name, prefix.as_bytes(), false, true)
                .await?
        }
        RoleCommand::List => {
            for r in client.role_list().await? {
                let perms: Vec<(String, &str)> = r
                    .permissions
                    .iter()
                    .map(|p| {
                        let access = match Access::try_from(p.access) {
                            Ok(Access::ReadWrite) => "readwrite",
                            _ => "read",
                        };
                        (String::from_utf8_lossy(&p.prefix).into_owned(), access)
                    })
                    .collect();
                if json {
                    let perms: Vec<_> = perms
                        .iter()
                        .map(|(p, a)| json!({"prefix": p, "access": a}))
                        .collect();
                    let _ = writeln!(out, "{}", json!({"name": r.name, "permissions": perms}));
                } else if perms.is_empty() {
                    let _ = writeln!(out, "{}: (no permissions)", r.name);
                } else {
                    let list: Vec<String> =
                        perms.iter().map(|(p, a)| format!("{a} {p:?}")).collect();
                    let _ = writeln!(out, "{}: {}", r.name, list.join(", "));
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
    }
    print_ok(out, json);
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn run_admin(
    out: &mut impl Write,
    client: &Client,
    cmd: AuthCommand,
    json: bool,
) -> Result<ExitCode> {
    let s = match cmd {
        AuthCommand::Enable => client.set_auth_enabled(true).await?,
        AuthCommand::Disable => client.set_auth_enabled(false).await?,
        AuthCommand::Status => client.auth_status().await?,
    };
    if json {
        let _ = writeln!(
            out,
            "{}",
            json!({"enabled": s.enabled, "user": s.principal, "roles": s.roles})
        );
    } else {
        let state = if s.enabled { "on" } else { "off" };
        match s.principal.as_str() {
            "" => {
                let _ = writeln!(out, "authentication: {state}");
            }
            p => {
                let _ = writeln!(
                    out,
                    "authentication: {state}; you are {p} ({})",
                    roles_text(&s.roles)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
