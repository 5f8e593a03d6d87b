//! `rangedb watch`: every change of a key, a prefix or a span as it is
//! committed, one line per event (`PUT key = value`, `DELETE key`, each
//! with its revision), in commit order, until interrupted (or `--count`
//! events). A transaction's writes print together, under one revision.
//! Retryable failures (a node down, an election) are retried without
//! losing or repeating an event; `Compacted` (a `--from-revision` older
//! than the GC horizon) exits 6 naming the oldest revision available.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use super::data::lossy;
use crate::api::Timestamp;
use crate::client::{Client, WatchOptions, WatchUpdate};
use crate::error::{Error, Result};

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The key to watch (with END: the start of the span [KEY, END)).
    #[arg(required_unless_present = "prefix")]
    pub key: Option<String>,
    /// The end of the span (exclusive).
    #[arg(requires = "key")]
    pub end: Option<String>,
    /// Watch every key starting with this prefix instead.
    #[arg(long, conflicts_with_all = ["key", "end"])]
    pub prefix: Option<String>,
    /// Start with the changes committed at this revision (a revision an
    /// event or `--progress` printed); default: changes from now on.
    #[arg(long)]
    pub from_revision: Option<u64>,
    /// Also print each key's value before the change.
    #[arg(long)]
    pub prev_value: bool,
    /// Print a PROGRESS line (how far the watch is caught up) every second
    /// while nothing changes.
    #[arg(long)]
    pub progress: bool,
    /// Exit after this many events.
    #[arg(long)]
    pub count: Option<u64>,
}

impl WatchArgs {
    fn options(&self) -> WatchOptions {
        let mut o = match (&self.prefix, &self.key, &self.end) {
            (Some(p), _, _) => WatchOptions::prefix(p.as_bytes()),
            (None, Some(k), Some(e)) => WatchOptions::span(k.as_bytes(), e.as_bytes()),
            (None, Some(k), None) => WatchOptions::key(k.as_bytes()),
            (None, None, _) => WatchOptions::prefix(b""),
        };
        o.from_revision = self.from_revision.map(Timestamp);
        o.prev_value = self.prev_value;
        if !self.progress {
            o.progress_every = None;
        }
        o
    }
}

pub(super) async fn run(
    out: &mut impl Write,
    client: &Client,
    args: WatchArgs,
    json: bool,
) -> Result<ExitCode> {
    let mut watcher = client.watch(args.options()).await?;
    let mut printed = 0u64;
    loop {
        if args.count.is_some_and(|n| printed >= n) {
            return Ok(ExitCode::SUCCESS);
        }
        let update = match watcher.next().await {
            Ok(u) => u,
            Err(e) if e.is_retryable() => {
                eprintln!(
                    "watch: {e}; retrying from revision {}",
                    watcher.revision().0
                );
                continue;
            }
            Err(e) => return Err(e),
        };
        match update {
            WatchUpdate::Progress { revision } => {
                let _ = if json {
                    writeln!(out, "{}", serde_json::json!({"progress": revision.0}))
                } else {
                    writeln!(out, "PROGRESS revision {}", revision.0)
                };
            }
            WatchUpdate::Events { revision, events } => {
                for e in events {
                    print_event(out, &e, revision.0, args.prev_value, json);
                    printed += 1;
                }
            }
        }
        if out.flush().is_err() {
            // The reader went away (a closed pipe): stop quietly.
            return Ok(ExitCode::SUCCESS);
        }
    }
}

fn print_event(
    out: &mut impl Write,
    e: &crate::proto::WatchEvent,
    revision: u64,
    prev: bool,
    json: bool,
) {
    let kind = if e.delete { "DELETE" } else { "PUT" };
    if json {
        let mut v = serde_json::json!({
            "type": kind,
            "key": lossy(&e.key),
            "revision": revision,
        });
        if !e.delete {
            v["value"] = lossy(&e.value).into();
        }
        if prev {
            v["prev_value"] = if e.has_prev {
                lossy(&e.prev_value).into()
            } else {
                serde_json::Value::Null
            };
        }
        let _ = writeln!(out, "{v}");
        return;
    }
    let mut line = format!("{kind} {}", lossy(&e.key));
    if !e.delete {
        line.push_str(&format!(" = {}", lossy(&e.value)));
    }
    if prev {
        if e.has_prev {
            line.push_str(&format!(" (was {})", lossy(&e.prev_value)));
        } else {
            line.push_str(" (was absent)");
        }
    }
    let _ = writeln!(out, "{line}  [revision {revision}]");
}

/// Refuses a watch of the reserved namespace before connecting.
pub(super) fn check(args: &WatchArgs) -> Result<()> {
    let start = args.prefix.as_deref().or(args.key.as_deref()).unwrap_or("");
    if crate::api::is_system_key(start.as_bytes()) {
        return Err(Error::InvalidArgument(
            "watches cover user keys only (not \"_/\")".into(),
        ));
    }
    Ok(())
}
