//! `backup restore` and `backup verify`.
//!
//! Restore: resolve the chain (an incremental names its parent's directory
//! and id), cut it at `--as-of`, verify every file's checksum before
//! writing anything, refuse a cluster whose user keyspace is not empty
//! (unless `--replace`), pre-split along the full backup's spans, write
//! each backup's records in bounded batches (puts batched, deletions one
//! by one), and end by reading the restored keyspace and comparing its
//! digest with the newest backup's `state`.

use std::path::{Path, PathBuf};

use super::format::{self, Manifest, SpanReader, StateDigest};
use super::progress::Progress;
use crate::api::{MAX_BATCH_BYTES, MAX_BATCH_PAIRS};
use crate::client::Client;
use crate::error::{Error, Result};

/// Batches written at once.
const BATCHES_IN_FLIGHT: usize = 4;
/// Keys per page when reading the cluster back (values may be 1 MiB).
const PAGE_KEYS: u32 = 100;
/// Keys deleted at once (`--replace`, incremental deletions).
const DELETES_IN_FLIGHT: usize = 32;

pub struct RestoreArgs<'a> {
    pub dir: &'a Path,
    pub replace: bool,
    pub as_of: Option<&'a str>,
    pub quiet: bool,
}

/// What a restore did.
pub struct Restored {
    pub chain: Vec<Manifest>,
    pub rows: u64,
    pub deletes: u64,
    pub bytes: u64,
    pub seconds: f64,
}

/// The chain ending at `dir`, full backup first.
pub fn chain(dir: &Path) -> Result<Vec<(PathBuf, Manifest)>> {
    let mut out = vec![(dir.to_path_buf(), format::read_manifest(dir)?)];
    while let Some(p) = out.last().and_then(|(_, m)| m.parent.clone()) {
        if out.len() > 10_000 {
            return Err(Error::Corruption("the backup chain loops".into()));
        }
        let pdir = PathBuf::from(&p.dir);
        let pm = format::read_manifest(&pdir).map_err(|e| {
            Error::InvalidArgument(format!(
                "the parent of {} is not available: {e}",
                out.last()
                    .map(|(d, _)| d.display().to_string())
                    .unwrap_or_default()
            ))
        })?;
        if pm.id != p.id || pm.timestamp != p.timestamp {
            return Err(Error::InvalidArgument(format!(
                "{} holds backup {}, not {} (the parent the incremental backup was taken from)",
                pdir.display(),
                pm.id,
                p.id
            )));
        }
        out.push((pdir, pm));
    }
    out.reverse();
    Ok(out)
}

/// Keeps the chain up to the newest backup taken at or before `as_of`.
fn cut(chain: &mut Vec<(PathBuf, Manifest)>, as_of: &str) -> Result<()> {
    let ms = format::parse_time(as_of).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "--as-of {as_of:?} is not a time (e.g. 2026-12-05T17:22:33Z)"
        ))
    })?;
    let keep = chain
        .iter()
        .take_while(|(_, m)| crate::api::Timestamp(m.timestamp).physical_ms() <= ms)
        .count();
    if keep == 0 {
        return Err(Error::InvalidArgument(format!(
            "--as-of {as_of} is before the full backup ({})",
            chain
                .first()
                .map(|(_, m)| m.time.clone())
                .unwrap_or_default()
        )));
    }
    chain.truncate(keep);
    Ok(())
}

/// Checks every file of every backup (size, checksum, spans) and, deeper,
/// decodes every record: keys in order inside their span, counts as the
/// manifest says, and a full backup's digest equal to its `state`.
pub fn verify(dir: &Path, quiet: bool) -> Result<Vec<Manifest>> {
    let chain = chain(dir)?;
    let total = chain.iter().map(|(_, m)| m.bytes()).sum();
    let mut progress = Progress::new("verify", total, quiet);
    for (d, m) in &chain {
        format::verify_files(d, m, |_| {})?;
        let mut digest = StateDigest::default();
        for s in &m.spans {
            let (start, end) = (hexed(&s.start)?, hexed(&s.end)?);
            let mut r = SpanReader::open(&d.join(&s.file))?;
            let (mut rows, mut deletes) = (0, 0);
            let mut last: Option<Vec<u8>> = None;
            while let Some((k, v)) = r.next_record()? {
                let outside = k < start || (!end.is_empty() && k >= end);
                if outside || last.as_ref().is_some_and(|l| *l >= k) {
                    return Err(Error::Corruption(format!(
                        "backup {} is damaged: {} has a key out of order or outside its span",
                        d.display(),
                        s.file
                    )));
                }
                match &v {
                    Some(v) => {
                        rows += 1;
                        digest.add(&k, v);
                    }
                    None => deletes += 1,
                }
                last = Some(k);
            }
            if (rows, deletes) != (s.rows, s.deletes) {
                return Err(Error::Corruption(format!(
                    "backup {} is damaged: {} holds {rows} pairs and {deletes} deletions, \
                     the manifest says {} and {}",
                    d.display(),
                    s.file,
                    s.rows,
                    s.deletes
                )));
            }
            progress.advance(s.bytes);
            progress.span_done();
        }
        if !m.is_incremental() && m.state.as_ref() != Some(&digest.finish()) {
            return Err(Error::Corruption(format!(
                "backup {} is damaged: its data does not match the manifest's state digest",
                d.display()
            )));
        }
    }
    progress.finish();
    Ok(chain.into_iter().map(|(_, m)| m).collect())
}

fn hexed(s: &str) -> Result<Vec<u8>> {
    format::unhex(s).ok_or_else(|| Error::Corruption(format!("bad hex key {s:?} in the manifest")))
}

/// Restores the chain ending at `args.dir` into the cluster.
pub async fn restore(client: &Client, args: RestoreArgs<'_>) -> Result<Restored> {
    let mut chain = chain(args.dir)?;
    if let Some(as_of) = args.as_of {
        cut(&mut chain, as_of)?;
    }
    let (first, _) = client
        .snapshot_page(b"", b"", 1, client.timestamps(1).await?, None)
        .await?;
    if let Some((k, _)) = first.first() {
        if !args.replace {
            return Err(Error::InvalidArgument(format!(
                "the cluster already holds user data (first key {:?}); restore into an empty \
                 cluster, or pass --replace to delete every user key first",
                String::from_utf8_lossy(k)
            )));
        }
    }
    // Every checksum before the first write (or deletion).
    let total: u64 = chain.iter().map(|(_, m)| m.bytes()).sum();
    let mut checking = Progress::new("checksums", total, args.quiet);
    for (d, m) in &chain {
        format::verify_files(d, m, |b| checking.advance(b))?;
    }
    checking.finish();
    if !first.is_empty() {
        delete_all(client, args.quiet).await?;
    }
    if let Some((_, full)) = chain.first() {
        presplit(client, full).await;
    }
    let mut progress = Progress::new("restore", total, args.quiet);
    let (mut rows, mut deletes) = (0, 0);
    for (d, m) in &chain {
        for s in &m.spans {
            let (r, del) = write_span(client, &d.join(&s.file)).await?;
            rows += r;
            deletes += del;
            progress.advance(s.bytes);
            progress.span_done();
        }
    }
    let took = progress.finish();
    let newest = chain.last().map(|(_, m)| m.clone());
    if let Some(want) = newest.as_ref().and_then(|m| m.state.clone()) {
        let got = state_now(client).await?;
        if got != want {
            return Err(Error::Corruption(format!(
                "the restored data does not match the backup: {} pairs ({} expected), digest {} \
                 ({} expected)",
                got.rows, want.rows, got.sha256, want.sha256
            )));
        }
    }
    Ok(Restored {
        chain: chain.into_iter().map(|(_, m)| m).collect(),
        rows,
        deletes,
        bytes: total,
        seconds: took.as_secs_f64(),
    })
}

/// Splits the cluster's ranges where the backup's spans start (best
/// effort: a split that fails only costs speed).
async fn presplit(client: &Client, m: &Manifest) {
    for s in m.spans.iter().skip(1) {
        let Some(key) = format::unhex(&s.start) else {
            continue;
        };
        if let Err(e) = client.split(&key, false).await {
            tracing::debug!(%e, "pre-split skipped");
        }
    }
}

/// Writes one data file: pairs in batches within the API's limits,
/// several in flight; deletions (incremental backups) after them.
async fn write_span(client: &Client, path: &Path) -> Result<(u64, u64)> {
    let mut r = SpanReader::open(path)?;
    let (mut rows, mut deleted) = (0u64, Vec::new());
    let mut batch: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut batch_bytes = 0usize;
    let mut ready: Vec<Vec<(Vec<u8>, Vec<u8>)>> = Vec::new();
    loop {
        let rec = r.next_record()?;
        let full = batch.len() >= MAX_BATCH_PAIRS
            || rec.as_ref().is_some_and(|(k, v)| {
                batch_bytes + k.len() + v.as_ref().map_or(0, Vec::len) > MAX_BATCH_BYTES
            });
        if (full || rec.is_none()) && !batch.is_empty() {
            ready.push(std::mem::take(&mut batch));
            batch_bytes = 0;
        }
        if ready.len() >= BATCHES_IN_FLIGHT || (rec.is_none() && !ready.is_empty()) {
            let writes = ready.drain(..).map(|b| client.batch_put(b));
            for res in futures::future::join_all(writes).await {
                res?;
            }
        }
        match rec {
            None => break,
            Some((k, Some(v))) => {
                rows += 1;
                batch_bytes += k.len() + v.len();
                batch.push((k, v));
            }
            Some((k, None)) => deleted.push(k),
        }
    }
    let n = deleted.len() as u64;
    delete_keys(client, deleted).await?;
    Ok((rows, n))
}

async fn delete_keys(client: &Client, keys: Vec<Vec<u8>>) -> Result<()> {
    for chunk in keys.chunks(DELETES_IN_FLIGHT) {
        let dels = chunk.iter().map(|k| client.delete(k));
        for res in futures::future::join_all(dels).await {
            res?;
        }
    }
    Ok(())
}

/// `--replace`: deletes every user key.
async fn delete_all(client: &Client, quiet: bool) -> Result<()> {
    if !quiet {
        eprintln!("--replace: deleting the cluster's user keys first");
    }
    loop {
        let ts = client.timestamps(1).await?;
        let (page, _) = client.snapshot_page(b"", b"", PAGE_KEYS, ts, None).await?;
        if page.is_empty() {
            return Ok(());
        }
        delete_keys(client, page.into_iter().map(|(k, _)| k).collect()).await?;
    }
}

/// The digest of the cluster's user keyspace now.
async fn state_now(client: &Client) -> Result<format::State> {
    let ts = client.timestamps(1).await?;
    let mut d = StateDigest::default();
    let mut from = Some(Vec::new());
    while let Some(cur) = from {
        let (page, next) = client.snapshot_page(&cur, b"", PAGE_KEYS, ts, None).await?;
        for (k, v) in &page {
            if let Some(v) = v {
                d.add(k, v);
            }
        }
        from = next;
    }
    Ok(d.finish())
}
