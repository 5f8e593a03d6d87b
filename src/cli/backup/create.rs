//! `backup create`: a consistent snapshot of every user key at one MVCC
//! timestamp, written to a local directory (`format.rs`).
//!
//! The timestamp `T` comes from the oracle; a GC pin leased on `T` (renewed
//! while the backup runs) keeps every version a read at `T` needs. Spans
//! are read in key order with snapshot reads at `T` (locks in the way are
//! resolved by the server, so transactions in flight cannot tear it) and cut
//! into files of about `--span-bytes`. After each span, `progress.json`
//! records it, so an interrupted backup resumes at the next span (at the
//! same `T`, while its pin or the GC TTL keeps it readable). The manifest is
//! written last; then the backup is recorded under `_/backups/<id>`.
//!
//! An incremental backup (`--incremental-from <dir>`) copies only keys
//! written in `(T_parent, T]` (deletions as `D` records); the servers
//! refuse it, and it says so, when `T_parent` is older than the GC horizon.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::format::{self, Manifest, Parent, SpanFile, SpanWriter, StateDigest};
use super::progress::Progress;
use crate::api::{meta, Timestamp};
use crate::client::Client;
use crate::error::{Error, Result};

/// The pin's lease, and how often it is renewed.
const PIN_LEASE: Duration = Duration::from_secs(60);
const PIN_RENEW: Duration = Duration::from_secs(10);
/// Pages aim at this many bytes; their key count adapts between bounds.
const PAGE_BYTES: usize = 1 << 20;
const PAGE_KEYS_FIRST: u32 = 16;
const PAGE_KEYS_MAX: u32 = 1000;

pub struct CreateArgs<'a> {
    pub dir: &'a Path,
    pub parent: Option<&'a Path>,
    pub span_bytes: u64,
    pub quiet: bool,
}

/// Reads pages of a span at `T`, renewing the pin as it goes.
struct Reader<'a> {
    client: &'a Client,
    pin_id: String,
    ts: Timestamp,
    since: Option<Timestamp>,
    renewed: Instant,
    page_keys: u32,
}

impl Reader<'_> {
    /// The next page from `from`: about `PAGE_BYTES` (its key count adapts
    /// to the sizes it sees).
    async fn page(&mut self, from: &[u8]) -> Result<(Vec<format::Record>, Option<Vec<u8>>)> {
        if self.renewed.elapsed() >= PIN_RENEW {
            self.client
                .pin_lease(&self.pin_id, self.ts, PIN_LEASE)
                .await?;
            self.renewed = Instant::now();
        }
        let (page, next) = self
            .client
            .snapshot_page(from, b"", self.page_keys, self.ts, self.since)
            .await
            .map_err(|e| too_old(e, self.since))?;
        let bytes: usize = page
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
            .sum();
        if !page.is_empty() {
            let avg = (bytes / page.len()).max(1);
            self.page_keys = ((PAGE_BYTES / avg) as u32).clamp(1, PAGE_KEYS_MAX);
        }
        Ok((page, next))
    }
}

/// A read refused below the GC horizon, said in the backup's terms.
fn too_old(e: Error, since: Option<Timestamp>) -> Error {
    match e {
        Error::TxnTooOld(why) if since.is_some() => Error::InvalidArgument(format!(
            "the parent backup is older than the GC horizon ({why}): its changes since are \
             no longer all kept; take a full backup instead"
        )),
        Error::TxnTooOld(why) => Error::InvalidArgument(format!(
            "the backup's timestamp is older than the GC horizon ({why}); it cannot be \
             resumed: remove the directory and start again"
        )),
        e => e,
    }
}

/// Runs (or resumes) a backup into `args.dir`; its manifest.
pub async fn create(client: &Client, args: CreateArgs<'_>) -> Result<Manifest> {
    let dir = args.dir;
    if dir.join(format::MANIFEST).exists() {
        return Err(Error::InvalidArgument(format!(
            "{} already holds a complete backup; choose a new directory",
            dir.display()
        )));
    }
    let cluster_id = client
        .get(meta::CLUSTER_ID.as_bytes())
        .await?
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default();
    let parent = match args.parent {
        Some(p) => Some(parent_of(p, &cluster_id)?),
        None => None,
    };
    let mut m = match resume_point(dir, &cluster_id, parent.as_ref())? {
        Some(m) => m,
        None => start(client, dir, cluster_id, parent).await?,
    };
    let ts = Timestamp(m.timestamp);
    let since = m.parent.as_ref().map(|p| Timestamp(p.timestamp));
    let pin_id = format!("backup-{}", m.id);
    client.pin_lease(&pin_id, ts, PIN_LEASE).await?;
    let mut reader = Reader {
        client,
        pin_id: pin_id.clone(),
        ts,
        since,
        renewed: Instant::now(),
        page_keys: PAGE_KEYS_FIRST,
    };
    let estimate = if since.is_some() {
        0
    } else {
        estimate_bytes(client).await
    };
    let resumed = m.bytes();
    let mut progress = Progress::new("backup", estimate.max(resumed), args.quiet);
    progress.advance(resumed);
    if !m.spans.is_empty() && !args.quiet {
        eprintln!(
            "resuming backup {} at span {} ({} spans already written)",
            m.id,
            m.spans.len(),
            m.spans.len()
        );
    }
    let data = dir.join(format::DATA_DIR);
    std::fs::create_dir_all(&data)
        .map_err(|e| Error::DataDir(format!("cannot create {}: {e}", data.display())))?;
    let start = match m.spans.last() {
        None => Some(Vec::new()),
        Some(s) if s.end.is_empty() => None,
        Some(s) => Some(unhex(&s.end)?),
    };
    if let Some(start) = start {
        // Pages fill spans; a span full after a record ends where the next
        // record begins.
        let mut span = OpenSpan::new(dir, m.spans.len(), start)?;
        let mut cur = Some(span.start.clone());
        while let Some(from) = cur {
            let (page, next) = reader.page(&from).await?;
            for (k, v) in &page {
                if span.w.bytes >= args.span_bytes && span.w.rows + span.w.deletes > 0 {
                    let fresh = OpenSpan::new(dir, m.spans.len() + 1, k.clone())?;
                    let full = std::mem::replace(&mut span, fresh);
                    m.spans.push(full.close(Some(k))?);
                    format::write_json(&dir.join(format::PROGRESS), &m)?;
                    progress.span_done();
                }
                let before = span.w.bytes;
                match v {
                    Some(v) => span.w.put(k, v)?,
                    None => span.w.delete(k)?,
                }
                progress.advance(span.w.bytes - before);
            }
            cur = next;
        }
        m.spans.push(span.close(None)?);
        format::write_json(&dir.join(format::PROGRESS), &m)?;
        progress.span_done();
    }
    let took = progress.finish();
    m.state = Some(match since {
        None => state_from_files(dir, &m)?,
        Some(_) => state_at(&mut reader).await?,
    });
    format::write_json(&dir.join(format::MANIFEST), &m)?;
    let _ = std::fs::remove_file(dir.join(format::PROGRESS));
    let record = record_of(&m, dir, took);
    client
        .record_backup(&m.id, record.to_string().into_bytes())
        .await?;
    if let Err(e) = client.release_pin(&pin_id).await {
        tracing::debug!(%e, "backup pin not released (it expires with its lease)");
    }
    Ok(m)
}

/// The span being written: its start and file.
struct OpenSpan {
    start: Vec<u8>,
    file: String,
    w: SpanWriter,
}

impl OpenSpan {
    /// Span number `n`, from `start`.
    fn new(dir: &Path, n: usize, start: Vec<u8>) -> Result<OpenSpan> {
        let file = format!("{}/span-{n:05}.rdb", format::DATA_DIR);
        let w = SpanWriter::create(dir.join(&file))?;
        Ok(OpenSpan { start, file, w })
    }

    /// Finishes the file; the span ends at `end` (`None`: the keyspace's end).
    fn close(self, end: Option<&[u8]>) -> Result<SpanFile> {
        let (rows, deletes, bytes) = (self.w.rows, self.w.deletes, self.w.bytes);
        let sha256 = self.w.finish()?;
        Ok(SpanFile {
            start: format::hex(&self.start),
            end: end.map(format::hex).unwrap_or_default(),
            file: self.file,
            rows,
            deletes,
            bytes,
            sha256,
        })
    }
}

fn unhex(s: &str) -> Result<Vec<u8>> {
    format::unhex(s).ok_or_else(|| Error::Corruption(format!("bad hex key {s:?} in progress.json")))
}

/// The complete parent of an incremental backup, from this cluster.
fn parent_of(dir: &Path, cluster_id: &str) -> Result<Parent> {
    let p = format::read_manifest(dir)?;
    if p.cluster_id != cluster_id {
        return Err(Error::InvalidArgument(format!(
            "{} is a backup of cluster {}, not of this cluster ({cluster_id})",
            dir.display(),
            p.cluster_id
        )));
    }
    let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    Ok(Parent {
        id: p.id,
        timestamp: p.timestamp,
        dir: abs.display().to_string(),
    })
}

/// The interrupted backup in `dir` to resume, its files checked (a damaged
/// span and those after it are written again); `None` to start afresh.
fn resume_point(dir: &Path, cluster_id: &str, parent: Option<&Parent>) -> Result<Option<Manifest>> {
    let path = dir.join(format::PROGRESS);
    if !path.exists() {
        return Ok(None);
    }
    let mut m = format::read_json(&path)?;
    if m.cluster_id != cluster_id {
        return Err(Error::InvalidArgument(format!(
            "{} holds an unfinished backup of cluster {}, not of this one",
            dir.display(),
            m.cluster_id
        )));
    }
    if m.parent.as_ref().map(|p| &p.id) != parent.map(|p| &p.id) {
        return Err(Error::InvalidArgument(format!(
            "{} holds an unfinished {} backup; resume it with the same --incremental-from",
            dir.display(),
            m.kind
        )));
    }
    let good = m
        .spans
        .iter()
        .take_while(|s| format::file_sha256(&dir.join(&s.file)).is_ok_and(|h| h == s.sha256))
        .count();
    m.spans.truncate(good);
    Ok(Some(m))
}

/// A new backup: the directory (empty or new), its timestamp and id.
async fn start(
    client: &Client,
    dir: &Path,
    cluster_id: String,
    parent: Option<Parent>,
) -> Result<Manifest> {
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir)
            .map_err(|e| Error::DataDir(format!("cannot read {}: {e}", dir.display())))?;
        if entries.next().is_some() {
            return Err(Error::InvalidArgument(format!(
                "{} is not empty and holds no backup; choose an empty or new directory",
                dir.display()
            )));
        }
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::DataDir(format!("cannot create {}: {e}", dir.display())))?;
    let ts = client.timestamps(1).await?;
    if let Some(p) = &parent {
        if p.timestamp >= ts.0 {
            return Err(Error::InvalidArgument(
                "the parent backup is not older than now".into(),
            ));
        }
    }
    let ms = ts.physical_ms();
    let time = format::rfc3339(ms);
    let compact: String = time[..19].chars().filter(|c| c.is_ascii_digit()).collect();
    // Unique: the oracle hands a timestamp out once (millisecond and counter).
    let id = format!(
        "{}T{}Z-{:03}{:x}",
        &compact[..8],
        &compact[8..],
        ms % 1000,
        ts.0 & ((1 << crate::api::LOGICAL_BITS) - 1)
    );
    let m = Manifest {
        format: format::FORMAT.into(),
        version: format::VERSION,
        id,
        cluster_id,
        timestamp: ts.0,
        time,
        kind: if parent.is_some() {
            "incremental"
        } else {
            "full"
        }
        .into(),
        parent,
        spans: Vec::new(),
        state: None,
        tool: format!("rangedb {}", env!("CARGO_PKG_VERSION")),
    };
    format::write_json(&dir.join(format::PROGRESS), &m)?;
    Ok(m)
}

/// Roughly how many bytes the user data holds (for the ETA): the size of
/// the ranges the first reachable node holds.
async fn estimate_bytes(client: &Client) -> u64 {
    for ep in client.endpoints() {
        if let Ok(s) = client.node_status(ep).await {
            return s.ranges.iter().map(|r| r.approx_bytes).sum();
        }
    }
    0
}

/// The state of a full backup: its files' pairs, in order.
pub fn state_from_files(dir: &Path, m: &Manifest) -> Result<format::State> {
    let mut d = StateDigest::default();
    for s in &m.spans {
        let mut r = format::SpanReader::open(&dir.join(&s.file))?;
        while let Some((k, v)) = r.next_record()? {
            if let Some(v) = v {
                d.add(&k, &v);
            }
        }
    }
    Ok(d.finish())
}

/// The state at the backup's timestamp, read from the cluster (an
/// incremental backup holds only changes).
async fn state_at(reader: &mut Reader<'_>) -> Result<format::State> {
    reader.since = None;
    let mut d = StateDigest::default();
    let mut from = Some(Vec::new());
    while let Some(cur) = from {
        let (page, next) = reader.page(&cur).await?;
        for (k, v) in &page {
            if let Some(v) = v {
                d.add(k, v);
            }
        }
        from = next;
    }
    Ok(d.finish())
}

/// What `_/backups/<id>` keeps of a backup.
fn record_of(m: &Manifest, dir: &Path, took: Duration) -> serde_json::Value {
    let abs: PathBuf = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    serde_json::json!({
        "id": m.id,
        "kind": m.kind,
        "timestamp": m.timestamp,
        "time": m.time,
        "parent": m.parent.as_ref().map(|p| p.id.clone()),
        "dir": abs.display().to_string(),
        "host": hostname(),
        "spans": m.spans.len(),
        "rows": m.rows(),
        "deletes": m.deletes(),
        "bytes": m.bytes(),
        "seconds": (took.as_secs_f64() * 1000.0).round() / 1000.0,
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
