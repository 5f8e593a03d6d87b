//! `rangedb txn …`: transactions across separate shell commands. The SDK
//! buffers a transaction's writes until commit, so between commands a
//! transaction is only a record on this machine — its start timestamp, its
//! writes, the keys and spans it read — in a state directory
//! (`$RANGEDB_TXN_DIR`, else `~/.rangedb/txns`): `<id>.json` per
//! transaction and `current` naming the one `txn` commands use when neither
//! `--txn` nor `RANGEDB_TXN` picks one. An abandoned transaction locks
//! nothing and blocks nobody; it fails with `TxnTooOld` once it is older
//! than `txn_max_duration`. Any server may crash or restart between two
//! commands: the record is here, and commit validates everything it read.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use serde::{Deserialize, Serialize};

use super::data::{lossy, print_ok, print_pairs};
use crate::api::Timestamp;
use crate::client::{Client, TxnRecord};
use crate::error::{Error, Result};

#[derive(Subcommand, Debug)]
pub enum TxnCommand {
    /// Begin a transaction and make it the current one: prints "Transaction started: <id>".
    Begin,
    /// Buffer a write in the transaction (written atomically at commit).
    Put { key: String, value: String },
    /// Read a key in the transaction (its snapshot, plus its own writes); exits 1 if missing.
    Get { key: String },
    /// Buffer a delete in the transaction.
    Delete { key: String },
    /// List keys in [start, end) in the transaction, as "key: value" lines.
    Range {
        start: String,
        end: String,
        /// At most this many pairs (default 1000).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Commit: prints "Transaction <id> committed"; a conflict exits with code 4 (run it again).
    Commit,
    /// Abandon the transaction (nothing of it was written).
    Rollback,
    /// Show a transaction's state (default: the current one).
    Status { id: Option<String> },
    /// List the transactions on this machine.
    List,
}

/// Where a transaction stands in its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Open,
    Committed,
    RolledBack,
    Aborted,
}

/// A transaction between commands (one JSON file).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    pub id: String,
    /// Wall-clock milliseconds when it began (for its age).
    pub began_unix_ms: u64,
    pub state: State,
    #[serde(default)]
    pub commit_ts: u64,
    #[serde(default)]
    pub error: String,
    pub record: TxnRecord,
}

/// A transaction's short id: 8 hex digits derived from its start timestamp.
pub fn txn_id(start_ts: u64) -> String {
    let mut z = start_ts.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    format!("{:08x}", (z ^ (z >> 31)) as u32)
}

/// Wall-clock milliseconds: a CLI transaction spans processes, so how long
/// it has run is measured between wall-clock readings saved in its state
/// file (no monotonic clock outlives a process). CLI-only: never part of
/// a simulated node.
pub(super) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Saved {
    pub fn new(start_ts: Timestamp) -> Saved {
        Saved {
            id: txn_id(start_ts.0),
            began_unix_ms: unix_ms(),
            state: State::Open,
            commit_ts: 0,
            error: String::new(),
            record: TxnRecord {
                start_ts: start_ts.0,
                ..Default::default()
            },
        }
    }

    pub fn elapsed(&self) -> Duration {
        Duration::from_millis(unix_ms().saturating_sub(self.began_unix_ms))
    }

    fn ensure_open(&self) -> Result<()> {
        match self.state {
            State::Open => Ok(()),
            s => Err(Error::InvalidArgument(format!(
                "transaction {} is {} (begin a new one with `rangedb txn begin`)",
                self.id,
                state_name(s)
            ))),
        }
    }
}

fn state_name(s: State) -> &'static str {
    match s {
        State::Open => "open",
        State::Committed => "committed",
        State::RolledBack => "rolled back",
        State::Aborted => "aborted",
    }
}

/// One step of an open transaction through the SDK: resume it, act, keep
/// what it learned (reads, writes) in `saved`.
pub async fn put(client: &Client, saved: &mut Saved, key: &str, value: Option<&str>) -> Result<()> {
    saved.ensure_open()?;
    let mut t = client.resume(saved.record.clone(), saved.elapsed());
    match value {
        Some(v) => t.put(key.as_bytes(), v.as_bytes())?,
        None => t.delete(key.as_bytes())?,
    }
    saved.record = t.record();
    Ok(())
}

pub async fn get(client: &Client, saved: &mut Saved, key: &str) -> Result<Option<Vec<u8>>> {
    saved.ensure_open()?;
    let mut t = client.resume(saved.record.clone(), saved.elapsed());
    let v = t.get(key.as_bytes()).await?;
    saved.record = t.record();
    Ok(v)
}

pub async fn range(
    client: &Client,
    saved: &mut Saved,
    start: &str,
    end: &str,
    limit: u32,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    saved.ensure_open()?;
    let mut t = client.resume(saved.record.clone(), saved.elapsed());
    let pairs = t.scan(start.as_bytes(), end.as_bytes(), limit).await?;
    saved.record = t.record();
    Ok(pairs)
}

/// Begins a transaction and pins its start against MVCC GC (best effort:
/// unpinned, it still runs, and fails with `TxnTooOld` if GC passes it).
pub async fn begin(client: &Client) -> Result<Saved> {
    let start = client.timestamps(1).await?;
    let saved = Saved::new(start);
    if let Err(e) = client.pin_timestamp(&saved.id, start).await {
        tracing::warn!(%e, "the transaction's GC pin was not recorded");
    }
    Ok(saved)
}

/// Ends the transaction's GC pin (best effort: it expires anyway).
pub async fn release(client: &Client, saved: &Saved) {
    if let Err(e) = client.release_pin(&saved.id).await {
        tracing::debug!(%e, "the transaction's GC pin is left to expire");
    }
}

/// Commits; the record says how it ended either way (unless the outcome
/// is unknown, when it stays open so `commit` can be asked again).
pub async fn commit(client: &Client, saved: &mut Saved) -> Result<Timestamp> {
    saved.ensure_open()?;
    let t = client.resume(saved.record.clone(), saved.elapsed());
    let r = commit_record(t.commit().await, saved);
    if saved.state != State::Open {
        release(client, saved).await;
    }
    r
}

fn commit_record(r: Result<Timestamp>, saved: &mut Saved) -> Result<Timestamp> {
    match r {
        Ok(ts) => {
            saved.state = State::Committed;
            saved.commit_ts = ts.0;
            Ok(ts)
        }
        Err(e) if e.is_ambiguous() => Err(e),
        Err(e) => {
            if !matches!(e, Error::InvalidArgument(_)) {
                saved.state = State::Aborted;
                saved.error = e.to_string();
            }
            Err(e)
        }
    }
}

/// The state directory.
pub fn state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RANGEDB_TXN_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".rangedb").join("txns")
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Config(format!("cannot {what} {}: {e}", path.display()))
}

fn valid_id(id: &str) -> Result<()> {
    if id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{id:?} is not a transaction id (8 hex digits, as `rangedb txn begin` prints)"
        )))
    }
}

struct Store {
    dir: PathBuf,
}

impl Store {
    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn save(&self, s: &Saved) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io_err("create", &self.dir, e))?;
        let path = self.path(&s.id);
        let tmp = self.dir.join(format!(".{}.tmp", s.id));
        let body = serde_json::to_vec(s).map_err(|e| Error::Internal(e.to_string()))?;
        std::fs::write(&tmp, body).map_err(|e| io_err("write", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io_err("write", &path, e))
    }

    fn load(&self, id: &str) -> Result<Saved> {
        valid_id(id)?;
        let path = self.path(id);
        let body = std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::InvalidArgument(format!(
                    "no transaction {id} in {} (see `rangedb txn list`)",
                    self.dir.display()
                ))
            } else {
                io_err("read", &path, e)
            }
        })?;
        serde_json::from_slice(&body)
            .map_err(|e| Error::Config(format!("{} is damaged: {e}", path.display())))
    }

    fn current(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("current"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    fn set_current(&self, id: Option<&str>) -> Result<()> {
        let path = self.dir.join("current");
        match id {
            Some(id) => std::fs::write(&path, id).map_err(|e| io_err("write", &path, e)),
            None => match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(io_err("remove", &path, e))
                }
                _ => Ok(()),
            },
        }
    }

    /// The transaction a command acts on: `--txn`/`RANGEDB_TXN`, else current.
    fn pick(&self, explicit: Option<&str>) -> Result<Saved> {
        let id = match explicit {
            Some(id) => id.to_string(),
            None => self.current().ok_or_else(|| {
                Error::InvalidArgument(
                    "no current transaction: start one with `rangedb txn begin` (or pick one with --txn <id>)".into(),
                )
            })?,
        };
        self.load(&id)
    }

    fn list(&self) -> Result<Vec<Saved>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("read", &self.dir, e)),
        };
        let mut out: Vec<Saved> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let id = name.strip_suffix(".json")?.to_string();
                self.load(&id).ok()
            })
            .collect();
        out.sort_by_key(|s| s.began_unix_ms);
        Ok(out)
    }
}

pub(super) async fn run(
    out: &mut impl Write,
    client: &Client,
    cmd: TxnCommand,
    explicit: Option<&str>,
    json: bool,
) -> Result<ExitCode> {
    let store = Store { dir: state_dir() };
    match cmd {
        TxnCommand::Begin => {
            let saved = begin(client).await?;
            let start = Timestamp(saved.record.start_ts);
            store.save(&saved)?;
            store.set_current(Some(&saved.id))?;
            if json {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::json!({"id": saved.id, "start_ts": start.0})
                );
            } else {
                let _ = writeln!(out, "Transaction started: {}", saved.id);
            }
        }
        TxnCommand::Put { key, value } => {
            let mut saved = store.pick(explicit)?;
            put(client, &mut saved, &key, Some(&value)).await?;
            store.save(&saved)?;
            print_ok(out, json);
        }
        TxnCommand::Delete { key } => {
            let mut saved = store.pick(explicit)?;
            put(client, &mut saved, &key, None).await?;
            store.save(&saved)?;
            print_ok(out, json);
        }
        TxnCommand::Get { key } => {
            let mut saved = store.pick(explicit)?;
            let v = get(client, &mut saved, &key).await?;
            store.save(&saved)?;
            match v {
                Some(v) if json => {
                    let _ = writeln!(
                        out,
                        "{}",
                        serde_json::json!({"key": key, "value": lossy(&v)})
                    );
                }
                Some(v) => {
                    let _ = out.write_all(&v);
                    let _ = writeln!(out);
                }
                None => {
                    eprintln!("Error: key not found: {key}");
                    return Ok(ExitCode::from(1));
                }
            }
        }
        TxnCommand::Range { start, end, limit } => {
            let mut saved = store.pick(explicit)?;
            let pairs = range(client, &mut saved, &start, &end, limit.unwrap_or(0)).await?;
            store.save(&saved)?;
            print_pairs(out, &pairs, json);
        }
        TxnCommand::Commit => {
            let mut saved = store.pick(explicit)?;
            let result = commit(client, &mut saved).await;
            store.save(&saved)?;
            if saved.state != State::Open && store.current().as_deref() == Some(&saved.id) {
                store.set_current(None)?;
            }
            let ts = result?;
            if json {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::json!({"id": saved.id, "committed": true, "commit_ts": ts.0})
                );
            } else {
                let _ = writeln!(out, "Transaction {} committed", saved.id);
            }
        }
        TxnCommand::Rollback => {
            let mut saved = store.pick(explicit)?;
            saved.ensure_open()?;
            saved.state = State::RolledBack;
            store.save(&saved)?;
            release(client, &saved).await;
            if store.current().as_deref() == Some(&saved.id) {
                store.set_current(None)?;
            }
            if json {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::json!({"id": saved.id, "rolled_back": true})
                );
            } else {
                let _ = writeln!(out, "Transaction {} rolled back", saved.id);
            }
        }
        TxnCommand::Status { id } => {
            let saved = store.pick(id.as_deref().or(explicit))?;
            print_status(
                out,
                &saved,
                store.current().as_deref() == Some(&saved.id),
                json,
            );
        }
        TxnCommand::List => {
            let current = store.current();
            let all = store.list()?;
            if json {
                let items: Vec<_> = all
                    .iter()
                    .map(|s| status_json(s, current.as_deref() == Some(&s.id)))
                    .collect();
                let _ = writeln!(out, "{}", serde_json::Value::Array(items));
            } else if all.is_empty() {
                let _ = writeln!(out, "No transactions in {}", store.dir.display());
            } else {
                for s in &all {
                    let mark = if current.as_deref() == Some(&s.id) {
                        "*"
                    } else {
                        " "
                    };
                    let _ = writeln!(
                        out,
                        "{mark} {}  {:<11}  {} writes  {} reads  began {:.0} s ago",
                        s.id,
                        state_name(s.state),
                        s.record.writes.len(),
                        s.record.reads.len() + s.record.spans.len(),
                        s.elapsed().as_secs_f64()
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn status_json(s: &Saved, current: bool) -> serde_json::Value {
    serde_json::json!({
        "id": s.id,
        "state": state_name(s.state),
        "current": current,
        "start_ts": s.record.start_ts,
        "commit_ts": s.commit_ts,
        "writes": s.record.writes.len(),
        "reads": s.record.reads.len(),
        "spans": s.record.spans.len(),
        "age_seconds": s.elapsed().as_secs(),
        "error": s.error,
    })
}

fn print_status(out: &mut impl Write, s: &Saved, current: bool, json: bool) {
    if json {
        let _ = writeln!(out, "{}", status_json(s, current));
        return;
    }
    let _ = writeln!(
        out,
        "Transaction {}{}",
        s.id,
        if current { " (current)" } else { "" }
    );
    let _ = writeln!(out, "  State: {}", state_name(s.state));
    let _ = writeln!(out, "  Start timestamp: {}", Timestamp(s.record.start_ts));
    if s.state == State::Committed {
        let _ = writeln!(out, "  Commit timestamp: {}", Timestamp(s.commit_ts));
    }
    let _ = writeln!(out, "  Writes: {}", s.record.writes.len());
    let _ = writeln!(
        out,
        "  Reads: {} keys, {} spans",
        s.record.reads.len(),
        s.record.spans.len()
    );
    let _ = writeln!(out, "  Age: {:.1} s", s.elapsed().as_secs_f64());
    if !s.error.is_empty() {
        let _ = writeln!(out, "  Error: {}", s.error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_eight_hex_digits_and_spread() {
        let a = txn_id(1 << 18);
        let b = txn_id((1 << 18) + 1);
        assert_eq!(a.len(), 8);
        assert!(valid_id(&a).is_ok());
        assert_ne!(a, b);
        assert!(valid_id("xyz").is_err());
        assert!(valid_id("../../etc").is_err());
    }
}
