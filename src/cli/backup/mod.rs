//! `rangedb admin backup …`: consistent backups of the user keyspace at
//! one MVCC timestamp into a local directory, incremental backups, verify,
//! list, and restore. Files: `format.rs` (the directory's format and its
//! checks), `create.rs`, `restore.rs` (restore and verify), `progress.rs`.
//! Uses only the SDK.

mod create;
mod format;
mod progress;
mod restore;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use indicatif::HumanBytes;
use serde_json::{json, Value};

use crate::client::Client;
use crate::error::Result;

/// Default size of a span's data file.
const DEFAULT_SPAN_BYTES: u64 = 64 << 20;

#[derive(Subcommand, Debug)]
pub enum BackupCommand {
    /// Back up every user key at one timestamp into DIR (on this machine).
    ///
    /// The data in flight does not matter: the backup equals a snapshot
    /// read at its timestamp, which is pinned against garbage collection
    /// while the backup runs. Interrupted, it resumes when run again with
    /// the same DIR. The manifest (timestamp, cluster id, spans, row and
    /// byte counts, sha256 of every file) is written last.
    Create {
        dir: PathBuf,
        /// Copy only what changed since the backup in this directory
        /// (which must be newer than the GC horizon).
        #[arg(long, value_name = "PARENT_DIR")]
        incremental_from: Option<PathBuf>,
        /// Start a new data file after this many bytes.
        #[arg(long, default_value_t = DEFAULT_SPAN_BYTES, hide = true)]
        span_bytes: u64,
    },
    /// Restore the backup in DIR (with its chain of parents) into the cluster.
    ///
    /// Every checksum is verified before anything is written; a cluster
    /// holding user data is refused unless --replace is given. Ends by
    /// comparing the restored data with the backup's digest.
    Restore {
        dir: PathBuf,
        /// Delete every user key in the cluster first.
        #[arg(long)]
        replace: bool,
        /// Restore the chain only up to the newest backup taken at or
        /// before this time (RFC 3339, e.g. 2026-12-05T17:22:33Z).
        #[arg(long, value_name = "TIME")]
        as_of: Option<String>,
    },
    /// Check a backup (and its parents): files, checksums, every record.
    Verify { dir: PathBuf },
    /// Backups recorded in the cluster (`_/backups/`).
    List,
}

pub async fn run(
    out: &mut impl Write,
    client: &Client,
    cmd: BackupCommand,
    json: bool,
) -> Result<ExitCode> {
    match cmd {
        BackupCommand::Create {
            dir,
            incremental_from,
            span_bytes,
        } => {
            let m = create::create(
                client,
                create::CreateArgs {
                    dir: &dir,
                    parent: incremental_from.as_deref(),
                    span_bytes: span_bytes.max(1),
                    quiet: json,
                },
            )
            .await?;
            if json {
                let _ = writeln!(out, "{}", summary(&m));
            } else {
                let _ = writeln!(
                    out,
                    "Backup {} ({}) complete: {} pairs{}, {} in {} files, at {} (timestamp {}) in {}",
                    m.id,
                    m.kind,
                    m.rows(),
                    deletions(m.deletes()),
                    HumanBytes(m.bytes()),
                    m.spans.len(),
                    m.time,
                    m.timestamp,
                    dir.display()
                );
            }
        }
        BackupCommand::Restore {
            dir,
            replace,
            as_of,
        } => {
            let r = restore::restore(
                client,
                restore::RestoreArgs {
                    dir: &dir,
                    replace,
                    as_of: as_of.as_deref(),
                    quiet: json,
                },
            )
            .await?;
            let newest = r.chain.last().cloned();
            let rate = r.bytes as f64 / r.seconds.max(0.001);
            if json {
                let _ = writeln!(
                    out,
                    "{}",
                    json!({
                        "restored": newest.as_ref().map(|m| m.id.clone()),
                        "time": newest.as_ref().map(|m| m.time.clone()),
                        "backups": r.chain.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
                        "rows": r.rows,
                        "deletes": r.deletes,
                        "bytes": r.bytes,
                        "seconds": r.seconds,
                        "verified": true,
                    })
                );
            } else if let Some(m) = newest {
                let _ = writeln!(
                    out,
                    "Restored {} (as of {}; {} backup{}): {} pairs{}, {} in {:.1} s ({}/s); verified against the backup's digest",
                    m.id,
                    m.time,
                    r.chain.len(),
                    if r.chain.len() == 1 { "" } else { "s" },
                    r.rows,
                    deletions(r.deletes),
                    HumanBytes(r.bytes),
                    r.seconds,
                    HumanBytes(rate as u64),
                );
            }
        }
        BackupCommand::Verify { dir } => {
            let chain = restore::verify(&dir, json)?;
            let newest = chain.last();
            if json {
                let _ = writeln!(
                    out,
                    "{}",
                    json!({"ok": true, "backups": chain.iter().map(summary).collect::<Vec<_>>()})
                );
            } else if let Some(m) = newest {
                let _ = writeln!(
                    out,
                    "OK: backup {} ({}) at {}: {} files, {} pairs{}, {}; {} backup{} checked",
                    m.id,
                    m.kind,
                    m.time,
                    m.spans.len(),
                    m.rows(),
                    deletions(m.deletes()),
                    HumanBytes(m.bytes()),
                    chain.len(),
                    if chain.len() == 1 { "" } else { "s" }
                );
            }
        }
        BackupCommand::List => {
            let records = crate::status::backups(client).await?;
            if json {
                let _ = writeln!(out, "{}", Value::Array(records));
            } else if records.is_empty() {
                let _ = writeln!(out, "No backups recorded.");
            } else {
                for r in &records {
                    let _ = writeln!(
                        out,
                        "{}  {:<11}  {}  {} pairs  {}  {}:{}",
                        r["id"].as_str().unwrap_or("?"),
                        r["kind"].as_str().unwrap_or("?"),
                        r["time"].as_str().unwrap_or("?"),
                        r["rows"].as_u64().unwrap_or(0),
                        HumanBytes(r["bytes"].as_u64().unwrap_or(0)),
                        r["host"].as_str().unwrap_or(""),
                        r["dir"].as_str().unwrap_or("?"),
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn deletions(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" and {n} deletions")
    }
}

fn summary(m: &format::Manifest) -> Value {
    json!({
        "id": m.id,
        "kind": m.kind,
        "timestamp": m.timestamp,
        "time": m.time,
        "parent": m.parent.as_ref().map(|p| p.id.clone()),
        "files": m.spans.len(),
        "rows": m.rows(),
        "deletes": m.deletes(),
        "bytes": m.bytes(),
        "state": m.state,
    })
}
