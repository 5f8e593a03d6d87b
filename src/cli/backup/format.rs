//! The on-disk format of a backup directory, and its checks.
//!
//! ```text
//! <dir>/data/span-00000.rdb   one data file per span of the user keyspace
//! <dir>/progress.json         while it runs: what is done (for resuming)
//! <dir>/manifest.json         written last (temp file + rename): complete
//! ```
//!
//! A data file is the header `RANGEDB-BACKUP 1\n` and then records, in key
//! order: `P` u32-BE key length, key, u32-BE value length, value (a pair
//! at the backup's timestamp); or `D` u32-BE key length, key (deleted
//! since the parent backup: incremental backups only). Each file's sha256
//! is computed from the written file.
//!
//! `state` in the manifest describes the whole user keyspace at the
//! backup's timestamp (what a restore of the chain must produce): its pair
//! count, bytes, and the sha256 of its `P` records in key order. For a full
//! backup that is the concatenation of its files' records; an incremental
//! backup reads it at the timestamp. A restore recomputes it from the
//! restored cluster and compares.
//!
//! Invariants: a directory with a manifest is complete and never written
//! again; every file the manifest names exists with its checksum; spans
//! tile `[first, "")` in order.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

pub const FORMAT: &str = "rangedb-backup";
pub const VERSION: u32 = 1;
pub const MANIFEST: &str = "manifest.json";
pub const PROGRESS: &str = "progress.json";
pub const DATA_DIR: &str = "data";
const HEADER: &[u8] = b"RANGEDB-BACKUP 1\n";
const PUT: u8 = b'P';
const DELETE: u8 = b'D';

/// One span's data file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SpanFile {
    /// Hex of the first user key of the span (inclusive).
    pub start: String,
    /// Hex of the end (exclusive); "" = the end of the keyspace.
    pub end: String,
    /// Relative to the backup directory.
    pub file: String,
    pub rows: u64,
    pub deletes: u64,
    /// The file's size.
    pub bytes: u64,
    pub sha256: String,
}

/// The keyspace's state at the backup's timestamp.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    pub rows: u64,
    /// Keys and values.
    pub bytes: u64,
    pub sha256: String,
}

/// The parent of an incremental backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Parent {
    pub id: String,
    pub timestamp: u64,
    /// As given to `--incremental-from` (absolute).
    pub dir: String,
}

/// What `manifest.json` and `progress.json` hold (the latter without
/// `state` and with the spans done so far).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub id: String,
    pub cluster_id: String,
    /// The MVCC timestamp every span was read at.
    pub timestamp: u64,
    /// Its wall time (RFC 3339, UTC).
    pub time: String,
    /// "full" or "incremental".
    pub kind: String,
    pub parent: Option<Parent>,
    pub spans: Vec<SpanFile>,
    pub state: Option<State>,
    /// Which rangedb wrote it.
    pub tool: String,
}

impl Manifest {
    pub fn rows(&self) -> u64 {
        self.spans.iter().map(|s| s.rows).sum()
    }
    pub fn deletes(&self) -> u64 {
        self.spans.iter().map(|s| s.deletes).sum()
    }
    pub fn bytes(&self) -> u64 {
        self.spans.iter().map(|s| s.bytes).sum()
    }
    pub fn is_incremental(&self) -> bool {
        self.parent.is_some()
    }
}

pub use crate::wire::{hex, unhex};

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::DataDir(format!("{what} {}: {e}", path.display()))
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| io("cannot create", &tmp, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| io("cannot write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("cannot rename", &tmp, e))
}

pub fn write_json(path: &Path, m: &Manifest) -> Result<()> {
    let text = serde_json::to_vec_pretty(m)
        .map_err(|e| Error::Internal(format!("cannot encode the manifest: {e}")))?;
    write_atomic(path, &text)
}

/// Reads a manifest (or progress) file; a clear error for a file that is
/// not one of ours.
pub fn read_json(path: &Path) -> Result<Manifest> {
    let bytes = std::fs::read(path).map_err(|e| io("cannot read", path, e))?;
    let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
        Error::InvalidArgument(format!(
            "{} is not a RangeDB backup manifest: {e}",
            path.display()
        ))
    })?;
    if m.format != FORMAT {
        return Err(Error::InvalidArgument(format!(
            "{} is not a RangeDB backup manifest (format {:?})",
            path.display(),
            m.format
        )));
    }
    if m.version != VERSION {
        return Err(Error::InvalidArgument(format!(
            "{} has backup format version {}; this rangedb reads version {VERSION}",
            path.display(),
            m.version
        )));
    }
    Ok(m)
}

/// The complete backup in `dir`, or why it is not one.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    if !path.exists() {
        let why = if dir.join(PROGRESS).exists() {
            "the backup there is incomplete (run `backup create` again to resume it)"
        } else if dir.exists() {
            "it holds no manifest.json"
        } else {
            "it does not exist"
        };
        return Err(Error::InvalidArgument(format!(
            "{} is not a complete RangeDB backup: {why}",
            dir.display()
        )));
    }
    read_json(&path)
}

/// Writes one span's data file.
pub struct SpanWriter {
    path: PathBuf,
    out: BufWriter<File>,
    pub rows: u64,
    pub deletes: u64,
    pub bytes: u64,
}

impl SpanWriter {
    pub fn create(path: PathBuf) -> Result<SpanWriter> {
        let f = File::create(&path).map_err(|e| io("cannot create", &path, e))?;
        let mut w = SpanWriter {
            out: BufWriter::with_capacity(1 << 20, f),
            path,
            rows: 0,
            deletes: 0,
            bytes: HEADER.len() as u64,
        };
        w.write(HEADER)?;
        Ok(w)
    }

    fn write(&mut self, b: &[u8]) -> Result<()> {
        self.out
            .write_all(b)
            .map_err(|e| io("cannot write", &self.path, e))
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let rec = put_record(key, value);
        self.write(&rec)?;
        self.rows += 1;
        self.bytes += rec.len() as u64;
        Ok(())
    }

    pub fn delete(&mut self, key: &[u8]) -> Result<()> {
        let mut rec = Vec::with_capacity(5 + key.len());
        rec.push(DELETE);
        rec.extend_from_slice(&(key.len() as u32).to_be_bytes());
        rec.extend_from_slice(key);
        self.write(&rec)?;
        self.deletes += 1;
        self.bytes += rec.len() as u64;
        Ok(())
    }

    /// Flushes and fsyncs the file; its checksum, computed from the file
    /// as written.
    pub fn finish(mut self) -> Result<String> {
        self.out
            .flush()
            .map_err(|e| io("cannot write", &self.path, e))?;
        let f = self
            .out
            .into_inner()
            .map_err(|e| Error::DataDir(format!("cannot write {}: {e}", self.path.display())))?;
        f.sync_all().map_err(|e| io("cannot sync", &self.path, e))?;
        file_sha256(&self.path)
    }
}

/// The record of a pair (also what the state digest hashes).
pub fn put_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut rec = Vec::with_capacity(9 + key.len() + value.len());
    rec.push(PUT);
    rec.extend_from_slice(&(key.len() as u32).to_be_bytes());
    rec.extend_from_slice(key);
    rec.extend_from_slice(&(value.len() as u32).to_be_bytes());
    rec.extend_from_slice(value);
    rec
}

pub fn file_sha256(path: &Path) -> Result<String> {
    let f = File::open(path).map_err(|e| io("cannot open", path, e))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).map_err(|e| io("cannot read", path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// One record of a data file: a pair, or a key deleted (`None`).
pub type Record = (Vec<u8>, Option<Vec<u8>>);

/// Reads the records of a data file in order.
pub struct SpanReader {
    path: PathBuf,
    input: BufReader<File>,
}

impl SpanReader {
    pub fn open(path: &Path) -> Result<SpanReader> {
        let f = File::open(path).map_err(|e| io("cannot open", path, e))?;
        let mut input = BufReader::with_capacity(1 << 20, f);
        let mut head = vec![0u8; HEADER.len()];
        input
            .read_exact(&mut head)
            .map_err(|e| io("cannot read", path, e))?;
        if head != HEADER {
            return Err(Error::Corruption(format!(
                "{} is not a RangeDB backup data file",
                path.display()
            )));
        }
        Ok(SpanReader {
            path: path.to_path_buf(),
            input,
        })
    }

    fn bad(&self, why: &str) -> Error {
        Error::Corruption(format!("{}: {why}", self.path.display()))
    }

    fn chunk(&mut self) -> Result<Vec<u8>> {
        let mut len = [0u8; 4];
        self.input
            .read_exact(&mut len)
            .map_err(|_| self.bad("truncated record"))?;
        let n = u32::from_be_bytes(len) as usize;
        if n > crate::api::MAX_VALUE_BYTES.max(crate::api::MAX_KEY_BYTES) {
            return Err(self.bad("record longer than any key or value"));
        }
        let mut b = vec![0u8; n];
        self.input
            .read_exact(&mut b)
            .map_err(|_| self.bad("truncated record"))?;
        Ok(b)
    }

    /// The next record, `None` at the end.
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        let mut tag = [0u8; 1];
        match self.input.read(&mut tag) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(e) => return Err(io("cannot read", &self.path.clone(), e)),
        }
        match tag[0] {
            PUT => {
                let k = self.chunk()?;
                let v = self.chunk()?;
                Ok(Some((k, Some(v))))
            }
            DELETE => Ok(Some((self.chunk()?, None))),
            t => Err(self.bad(&format!("unknown record tag {t:#04x}"))),
        }
    }
}

/// The running digest of a keyspace's pairs in key order (`State`).
#[derive(Default)]
pub struct StateDigest {
    h: Sha256,
    rows: u64,
    bytes: u64,
}

impl StateDigest {
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        self.h.update(put_record(key, value));
        self.rows += 1;
        self.bytes += (key.len() + value.len()) as u64;
    }

    pub fn finish(self) -> State {
        State {
            rows: self.rows,
            bytes: self.bytes,
            sha256: hex(&self.h.finalize()),
        }
    }
}

/// Checks every file `m` names in `dir`: present, with its size and
/// checksum. `on_file` hears each checked file's size (progress).
pub fn verify_files(dir: &Path, m: &Manifest, mut on_file: impl FnMut(u64)) -> Result<()> {
    for s in &m.spans {
        let path = dir.join(&s.file);
        let meta = std::fs::metadata(&path).map_err(|e| {
            Error::Corruption(format!(
                "backup {} is damaged: {} is missing ({e})",
                dir.display(),
                s.file
            ))
        })?;
        if meta.len() != s.bytes {
            return Err(Error::Corruption(format!(
                "backup {} is damaged: {} is {} bytes, the manifest says {}",
                dir.display(),
                s.file,
                meta.len(),
                s.bytes
            )));
        }
        let sum = file_sha256(&path)?;
        if sum != s.sha256 {
            return Err(Error::Corruption(format!(
                "backup {} is damaged: the checksum of {} does not match the manifest",
                dir.display(),
                s.file
            )));
        }
        on_file(s.bytes);
    }
    check_tiling(dir, m)
}

/// The spans are in order, each starting where the previous one ended.
pub fn check_tiling(dir: &Path, m: &Manifest) -> Result<()> {
    for w in m.spans.windows(2) {
        if w[0].end.is_empty() || w[0].end != w[1].start {
            return Err(Error::Corruption(format!(
                "backup {} is damaged: spans {} and {} do not meet",
                dir.display(),
                w[0].file,
                w[1].file
            )));
        }
    }
    if m.spans.last().is_some_and(|s| !s.end.is_empty()) {
        return Err(Error::Corruption(format!(
            "backup {} is damaged: its spans stop short of the end of the keyspace",
            dir.display()
        )));
    }
    Ok(())
}

/// RFC 3339 (UTC, milliseconds) of Unix milliseconds.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, mo, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Unix milliseconds of an RFC 3339 time (`2026-12-05T17:22:33Z`, with
/// optional fraction, `Z` or a `+hh:mm` offset) or of a bare date.
pub fn parse_time(s: &str) -> Option<u64> {
    let s = s.trim();
    let (date, rest) = s.split_at(s.find(['T', ' ']).unwrap_or(s.len()));
    let mut it = date.split('-');
    let y: i64 = it.next()?.parse().ok()?;
    let mo: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.parse().ok()?;
    if it.next().is_some() || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    let mut ms = days * 86_400_000;
    if !rest.is_empty() {
        let t = &rest[1..];
        let (clock, offset_ms) = if let Some(c) = t.strip_suffix('Z') {
            (c, 0i64)
        } else if let Some(i) = t.rfind(['+', '-']) {
            let (c, off) = t.split_at(i);
            let sign = if off.starts_with('-') { -1 } else { 1 };
            let (oh, om) = off[1..].split_once(':')?;
            let o: i64 = oh.parse::<i64>().ok()? * 3_600_000 + om.parse::<i64>().ok()? * 60_000;
            (c, sign * o)
        } else {
            (t, 0)
        };
        let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
        let mut p = hms.split(':');
        let h: i64 = p.next()?.parse().ok()?;
        let mi: i64 = p.next()?.parse().ok()?;
        let se: i64 = p.next().unwrap_or("0").parse().ok()?;
        let frac_ms: i64 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<3}").get(..3)?.parse().ok()?
        };
        ms += h * 3_600_000 + mi * 60_000 + se * 1000 + frac_ms - offset_ms;
    }
    u64::try_from(ms).ok()
}

// Howard Hinnant's civil-date algorithms.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp as i64 + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        let ms = 1_796_491_353_123;
        let s = rfc3339(ms);
        assert_eq!(parse_time(&s), Some(ms), "{s}");
        assert_eq!(parse_time("1970-01-01"), Some(0));
        assert_eq!(parse_time("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_time("2026-13-01"), None);
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn data_files_round_trip_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.rdb");
        let mut w = SpanWriter::create(path.clone()).unwrap();
        w.put(b"a", b"1").unwrap();
        w.delete(b"b").unwrap();
        let (rows, deletes, bytes) = (w.rows, w.deletes, w.bytes);
        let sum = w.finish().unwrap();
        assert_eq!((rows, deletes), (1, 1));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), bytes);
        assert_eq!(file_sha256(&path).unwrap(), sum);
        let mut r = SpanReader::open(&path).unwrap();
        assert_eq!(
            r.next_record().unwrap(),
            Some((b"a".to_vec(), Some(b"1".to_vec())))
        );
        assert_eq!(r.next_record().unwrap(), Some((b"b".to_vec(), None)));
        assert_eq!(r.next_record().unwrap(), None);
        // Truncated: named as damage, not a panic.
        let all = std::fs::read(&path).unwrap();
        std::fs::write(&path, &all[..all.len() - 1]).unwrap();
        let mut r = SpanReader::open(&path).unwrap();
        r.next_record().unwrap();
        let e = r.next_record().unwrap_err().to_string();
        assert!(e.contains("truncated record"), "{e}");
        assert_eq!(unhex(&hex(b"\x00\xffz")), Some(b"\x00\xffz".to_vec()));
    }
}
