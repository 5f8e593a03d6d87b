//! `rangedb lease grant|keep-alive|revoke|list|ttl` and `put --lease`:
//! keys written with a lease are deleted, atomically, when it ends
//! (its TTL passes without a keep-alive, or it is revoked). Lease ids
//! print and parse as hex, as etcdctl shows them.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use crate::client::Client;
use crate::error::{Error, Result};

#[derive(Subcommand, Debug)]
pub enum LeaseCommand {
    /// Grant a lease that lives TTL seconds unless kept alive.
    Grant { ttl: i64 },
    /// Keep a lease alive (every third of its TTL) until interrupted, or
    /// once with --once; exits 1 when the lease has ended.
    KeepAlive {
        id: String,
        #[arg(long)]
        once: bool,
    },
    /// End a lease now, deleting its keys.
    Revoke { id: String },
    /// List live leases.
    List,
    /// A lease's TTL and time left (--keys: and its keys).
    Ttl {
        id: String,
        #[arg(long)]
        keys: bool,
    },
}

/// A lease id as typed (hex, as printed; a 0x prefix is allowed).
pub fn parse_id(s: &str) -> Result<u64> {
    let t = s.trim_start_matches("0x");
    u64::from_str_radix(t, 16)
        .ok()
        .filter(|id| *id != 0)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{s:?} is not a lease id (hex, as `lease grant` prints it)"
            ))
        })
}

pub(super) async fn run(
    out: &mut impl Write,
    client: &Client,
    cmd: LeaseCommand,
    json: bool,
) -> Result<ExitCode> {
    match cmd {
        LeaseCommand::Grant { ttl } => {
            let l = client.lease_grant(ttl, 0).await?;
            let _ = if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"id": format!("{:016x}", l.id), "ttl": l.granted_ttl_secs})
                )
            } else {
                writeln!(
                    out,
                    "lease {:016x} granted with TTL({}s)",
                    l.id, l.granted_ttl_secs
                )
            };
        }
        LeaseCommand::KeepAlive { id, once } => {
            let id = parse_id(&id)?;
            loop {
                let l = client.lease_keep_alive(id).await?;
                let _ = if json {
                    writeln!(
                        out,
                        "{}",
                        serde_json::json!({"id": format!("{id:016x}"), "ttl": l.ttl_secs})
                    )
                } else {
                    writeln!(out, "lease {id:016x} keepalived with TTL({})", l.ttl_secs)
                };
                let _ = out.flush();
                if once {
                    break;
                }
                let every = Duration::from_millis((l.granted_ttl_secs.max(1) as u64 * 1000) / 3);
                tokio::time::sleep(every).await;
            }
        }
        LeaseCommand::Revoke { id } => {
            let id = parse_id(&id)?;
            let n = client.lease_revoke(id).await?;
            let _ = if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"id": format!("{id:016x}"), "deleted": n})
                )
            } else {
                writeln!(out, "lease {id:016x} revoked ({n} keys deleted)")
            };
        }
        LeaseCommand::List => {
            let leases = client.lease_list().await?;
            if json {
                let v: Vec<_> = leases
                    .iter()
                    .map(|l| serde_json::json!({"id": format!("{:016x}", l.id), "ttl": l.ttl_secs, "granted_ttl": l.granted_ttl_secs}))
                    .collect();
                let _ = writeln!(out, "{}", serde_json::Value::Array(v));
            } else {
                let _ = writeln!(out, "found {} leases", leases.len());
                for l in leases {
                    let _ = writeln!(out, "{:016x}", l.id);
                }
            }
        }
        LeaseCommand::Ttl { id, keys } => {
            let id = parse_id(&id)?;
            let l = client.lease_time_to_live(id, keys).await?;
            let names: Vec<String> = l
                .keys
                .iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            let _ = if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"id": format!("{id:016x}"), "granted_ttl": l.granted_ttl_secs, "ttl": l.ttl_secs, "keys": names})
                )
            } else if keys {
                writeln!(
                    out,
                    "lease {id:016x} granted with TTL({}s), remaining({}s), attached keys([{}])",
                    l.granted_ttl_secs,
                    l.ttl_secs,
                    names.join(" ")
                )
            } else {
                writeln!(
                    out,
                    "lease {id:016x} granted with TTL({}s), remaining({}s)",
                    l.granted_ttl_secs, l.ttl_secs
                )
            };
        }
    }
    Ok(ExitCode::SUCCESS)
}
