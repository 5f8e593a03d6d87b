//! Reads over MVCC records: the newest committed version at or below a
//! timestamp, the lock that may hide one, and the facts the transaction
//! actions decide on (the newest write, a transaction's own commit). Reads
//! go through a `Source` — an engine, an engine snapshot, or, while a
//! command applies, the loop's batch staged over the engine.
//!
//! A lock hides a key from a read at `ts` only when the lock's transaction
//! started at or below `ts` (it may still commit below `ts`); a lock that
//! started above `ts` commits above it and is invisible to the read.

use super::records::{Lock, Write, WriteKind};
use super::Timestamp;
use crate::error::{Error, Result};
use crate::keys::{self, MvccRecord};
use crate::storage::{Engine, KvPair, Overlay, Snapshot, Step, Visitor};

/// Where MVCC reads come from.
pub trait Source {
    fn fetch(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Same contract as `Engine::scan`.
    fn range(&self, start: &[u8], end: &[u8], limit: usize, reverse: bool) -> Result<Vec<KvPair>>;
    /// Same contract as `Engine::visit`.
    fn visit(&self, start: &[u8], end: &[u8], f: &mut Visitor) -> Result<()>;
}

impl Source for Overlay<'_> {
    fn fetch(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get(key)
    }
    fn range(&self, start: &[u8], end: &[u8], limit: usize, reverse: bool) -> Result<Vec<KvPair>> {
        self.scan(start, end, limit, reverse)
    }
    fn visit(&self, start: &[u8], end: &[u8], f: &mut Visitor) -> Result<()> {
        Overlay::visit(self, start, end, f)
    }
}

impl Source for dyn Snapshot + '_ {
    fn fetch(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get(key)
    }
    fn range(&self, start: &[u8], end: &[u8], limit: usize, reverse: bool) -> Result<Vec<KvPair>> {
        self.scan(start, end, limit, reverse)
    }
    fn visit(&self, start: &[u8], end: &[u8], f: &mut Visitor) -> Result<()> {
        Snapshot::visit(self, start, end, f)
    }
}

impl Source for &dyn Engine {
    fn fetch(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get(key)
    }
    fn range(&self, start: &[u8], end: &[u8], limit: usize, reverse: bool) -> Result<Vec<KvPair>> {
        self.scan(start, end, limit, reverse)
    }
    fn visit(&self, start: &[u8], end: &[u8], f: &mut Visitor) -> Result<()> {
        Engine::visit(*self, start, end, f)
    }
}

impl<T: Engine> Source for T {
    fn fetch(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get(key)
    }
    fn range(&self, start: &[u8], end: &[u8], limit: usize, reverse: bool) -> Result<Vec<KvPair>> {
        self.scan(start, end, limit, reverse)
    }
    fn visit(&self, start: &[u8], end: &[u8], f: &mut Visitor) -> Result<()> {
        Engine::visit(self, start, end, f)
    }
}

/// Records a read passes with `Next` before it seeks past the rest (a
/// seek costs more than a step; RocksDB's own iterators use 8).
const SKIP_BY_NEXT: usize = 8;

/// A key changed since an earlier timestamp: its value now, or `None`
/// when it was deleted (`Reader::changes`).
pub type Change = (Vec<u8>, Option<Vec<u8>>);

/// A data key and what a read sees of it.
pub type KeyItem = (Vec<u8>, Item);

/// A lock a scan met, and the data key it locks.
pub type LockedKey = (Vec<u8>, Lock);

/// One key's raw records in a scan chunk.
type Records<'a> = Vec<(MvccRecord, &'a [u8])>;

/// Raw records read per engine call while scanning.
const SCAN_CHUNK: usize = 256;

/// Whether `lock` hides its key from a read at `ts`: its transaction
/// started at or below `ts`, so it may still commit below it.
fn hides(lock: &Lock, ts: Timestamp) -> bool {
    lock.start() <= ts && !crate::chaos::canary(crate::chaos::Canary::ReadsIgnoreLocks)
}

/// Whether one record decides what a read at `ts` sees of its key, fed
/// in engine order (the lock first, then versions newest first): a lock
/// that hides the key, or the newest put or delete at or below `ts`.
fn decide(rec: MvccRecord, v: &[u8], ts: Timestamp) -> Result<Option<Seen>> {
    Ok(match rec {
        MvccRecord::Lock => {
            let lock = Lock::decode(v)?;
            hides(&lock, ts).then_some(Seen::Locked(lock))
        }
        MvccRecord::Version(t) if Timestamp(t) <= ts => {
            let w = Write::decode(v)?;
            match w.write_kind()? {
                WriteKind::Rollback => None,
                WriteKind::Put => Some(Seen::Item(Some(Item::of(Timestamp(t), w)))),
                WriteKind::Delete => Some(Seen::Item(None)),
            }
        }
        MvccRecord::Version(_) => None,
    })
}

/// What a read at `ts` sees of one key, from all of its records (any order).
fn seen_in(mut recs: Records, ts: Timestamp) -> Result<Seen> {
    recs.sort_by_key(|(r, _)| match r {
        MvccRecord::Lock => (0, 0),
        MvccRecord::Version(t) => (1, !*t),
    });
    for (rec, v) in recs {
        if let Some(seen) = decide(rec, v, ts)? {
            return Ok(seen);
        }
    }
    Ok(Seen::Item(None))
}

/// A read's answer: the value (or absence) at the timestamp, or the lock
/// that must be resolved first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visible {
    Value(Option<Vec<u8>>),
    Locked(Lock),
}

/// A value as a read at a timestamp sees it, with the key's metadata (as
/// etcd defines it: `mod_ts` = mod_revision, `create_ts` =
/// create_revision, `version`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub value: Vec<u8>,
    pub mod_ts: Timestamp,
    pub create_ts: Timestamp,
    pub version: u64,
    /// The lease the key is attached to (0: none).
    pub lease: u64,
}

impl Item {
    pub(super) fn of(at: Timestamp, w: Write) -> Item {
        let (create_ts, version) = w.meta(at);
        Item {
            value: w.value,
            mod_ts: at,
            create_ts,
            version,
            lease: w.lease,
        }
    }
}

/// `Visible` with metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Item(Option<Item>),
    Locked(Lock),
}

impl From<Seen> for Visible {
    fn from(s: Seen) -> Visible {
        match s {
            Seen::Item(i) => Visible::Value(i.map(|i| i.value)),
            Seen::Locked(l) => Visible::Locked(l),
        }
    }
}

/// A key's lock and newest Put or Delete (`Reader::head`).
#[derive(Debug, Default)]
pub struct Head {
    pub lock: Option<Lock>,
    pub newest: Option<(Timestamp, Write)>,
}

pub struct Reader<'a> {
    src: &'a dyn Source,
}

impl<'a> Reader<'a> {
    pub fn new(src: &'a dyn Source) -> Reader<'a> {
        Reader { src }
    }

    /// Where the reads come from.
    pub(super) fn source(&self) -> &'a dyn Source {
        self.src
    }

    /// The key's lock, if any.
    pub fn lock(&self, data_key: &[u8]) -> Result<Option<Lock>> {
        self.src
            .fetch(&keys::lock_key(data_key))?
            .map(|b| Lock::decode(&b))
            .transpose()
    }

    /// Every write record of the key committed at or below `at`, newest
    /// first, until `f` says stop (returns `Some`).
    pub(super) fn walk<T>(
        &self,
        data_key: &[u8],
        at: Timestamp,
        mut f: impl FnMut(Timestamp, Write) -> Result<Option<T>>,
    ) -> Result<Option<T>> {
        let (_, end) = keys::versions_bounds(data_key);
        let mut found = None;
        self.src
            .visit(&keys::version_key(data_key, at.0), &end, &mut |k, v| {
                let Some((_, MvccRecord::Version(ts))) = keys::split_mvcc(k) else {
                    return Err(Error::Corruption(format!("not a version record: {k:02x?}")));
                };
                found = f(Timestamp(ts), Write::decode(v)?)?;
                Ok(if found.is_some() {
                    Step::Stop
                } else {
                    Step::Next
                })
            })?;
        Ok(found)
    }

    /// The newest committed value at or below `ts` (rollbacks skipped).
    pub fn value_at(&self, data_key: &[u8], ts: Timestamp) -> Result<Option<Vec<u8>>> {
        Ok(self.item_at(data_key, ts)?.map(|i| i.value))
    }

    /// `value_at`, with the key's metadata.
    pub fn item_at(&self, data_key: &[u8], ts: Timestamp) -> Result<Option<Item>> {
        let found = self.walk(data_key, ts, |at, w| match w.write_kind()? {
            WriteKind::Rollback => Ok(None),
            WriteKind::Put => Ok(Some(Some(Item::of(at, w)))),
            WriteKind::Delete => Ok(Some(None)),
        })?;
        Ok(found.flatten())
    }

    /// What a read at `ts` sees of the key.
    pub fn get(&self, data_key: &[u8], ts: Timestamp) -> Result<Visible> {
        self.get_item(data_key, ts).map(Visible::from)
    }

    /// `get`, with the key's metadata.
    pub fn get_item(&self, data_key: &[u8], ts: Timestamp) -> Result<Seen> {
        // One cursor: the lock (if any) sorts first, then the versions,
        // newest first; the first record that decides ends the read.
        let (_, end) = keys::versions_bounds(data_key);
        let mut seen = None;
        let mut above = 0;
        self.src
            .visit(&keys::lock_key(data_key), &end, &mut |k, v| {
                let rec = match keys::split_mvcc(k) {
                    Some((dk, rec)) if dk == data_key => rec,
                    _ => return Err(Error::Corruption(format!("not an MVCC record: {k:02x?}"))),
                };
                if let MvccRecord::Version(t) = rec {
                    if Timestamp(t) > ts {
                        // Newer than the read: after a few, jump to `ts`.
                        above += 1;
                        return Ok(if above < SKIP_BY_NEXT {
                            Step::Next
                        } else {
                            Step::Seek(keys::version_key(data_key, ts.0))
                        });
                    }
                }
                seen = decide(rec, v, ts)?;
                Ok(if seen.is_some() {
                    Step::Stop
                } else {
                    Step::Next
                })
            })?;
        Ok(seen.unwrap_or(Seen::Item(None)))
    }

    /// The key's lock and its newest Put or Delete at any timestamp: what a
    /// blind write checks. The lock is a point read (a disk that fails
    /// reads fails here whether or not the key exists: the simulator's
    /// read-fault nemesis counts on it), the versions one cursor.
    pub fn head(&self, data_key: &[u8]) -> Result<Head> {
        Ok(Head {
            lock: self.lock(data_key)?,
            newest: self.walk(data_key, Timestamp::MAX, |ts, w| match w.write_kind()? {
                WriteKind::Rollback => Ok(None),
                _ => Ok(Some((ts, w))),
            })?,
        })
    }

    /// The newest write record of the key (any kind) at or below `at`.
    pub fn newest_at_or_below(
        &self,
        data_key: &[u8],
        at: Timestamp,
    ) -> Result<Option<(Timestamp, Write)>> {
        self.walk(data_key, at, |ts, w| Ok(Some((ts, w))))
    }

    /// The newest Put or Delete committed above `after` (a conflict for a
    /// transaction that read the key at `after`).
    pub fn committed_after(&self, data_key: &[u8], after: Timestamp) -> Result<Option<Timestamp>> {
        self.walk(data_key, Timestamp::MAX, |ts, w| {
            if ts <= after {
                return Ok(Some(None));
            }
            match w.write_kind()? {
                WriteKind::Rollback => Ok(None),
                _ => Ok(Some(Some(ts))),
            }
        })
        .map(Option::flatten)
    }

    /// The record the transaction started at `start_ts` left on the key:
    /// its commit (Put/Delete at the commit timestamp) or its rollback.
    pub fn by_txn(
        &self,
        data_key: &[u8],
        start_ts: Timestamp,
    ) -> Result<Option<(Timestamp, Write)>> {
        // Its records are at or above its start (a rollback sits exactly
        // at the start timestamp).
        self.walk(data_key, Timestamp::MAX, |ts, w| {
            if ts < start_ts {
                return Ok(Some(None));
            }
            if w.start_ts == start_ts.0 {
                return Ok(Some(Some((ts, w))));
            }
            Ok(None)
        })
        .map(Option::flatten)
    }

    /// The user keys in `[start, end)` (data keys) visible at `ts`, with
    /// their values, at most `limit`, in order or reversed; or the first
    /// lock in the way (and its key). Reads the records in chunks and stops at `limit`,
    /// so its cost follows what it returns (and the versions GC left), not
    /// the size of the span.
    pub fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        ts: Timestamp,
        limit: usize,
        reverse: bool,
    ) -> Result<Result<Vec<KvPair>, LockedKey>> {
        Ok(self
            .scan_items(start, end, ts, limit, reverse)?
            .map(|items| items.into_iter().map(|(k, i)| (k, i.value)).collect()))
    }

    /// `scan`, with each key's metadata.
    pub fn scan_items(
        &self,
        start: &[u8],
        end: &[u8],
        ts: Timestamp,
        limit: usize,
        reverse: bool,
    ) -> Result<Result<Vec<KeyItem>, LockedKey>> {
        if !reverse {
            return self.scan_forward(start, end, ts, limit);
        }
        // Reversed: records below `hi`, in chunks (a key's versions come
        // oldest first, so they are all read).
        let mut out = Vec::new();
        let mut hi = end.to_vec();
        while out.len() < limit {
            let chunk = self.src.range(start, &hi, SCAN_CHUNK, true)?;
            let full = chunk.len() == SCAN_CHUNK;
            let mut groups: Vec<(Vec<u8>, Records)> = Vec::new();
            for (k, v) in &chunk {
                let Some((data_key, rec)) = keys::split_mvcc(k) else {
                    return Err(Error::Corruption(format!("not an MVCC record: {k:02x?}")));
                };
                match groups.last_mut() {
                    Some((dk, recs)) if dk.as_slice() == data_key => recs.push((rec, v)),
                    _ => groups.push((data_key.to_vec(), vec![(rec, v.as_slice())])),
                }
            }
            let n = groups.len();
            for (i, (data_key, recs)) in groups.into_iter().enumerate() {
                if out.len() >= limit {
                    break;
                }
                // The chunk may have cut the last key's records short: read
                // that one key on its own.
                let seen = if full && i + 1 == n {
                    self.get_item(&data_key, ts)?
                } else {
                    seen_in(recs, ts)?
                };
                match seen {
                    Seen::Locked(lock) => return Ok(Err((data_key, lock))),
                    Seen::Item(Some(item)) => out.push((data_key.clone(), item)),
                    Seen::Item(None) => {}
                }
                hi = data_key;
            }
            if !full {
                break;
            }
        }
        Ok(Ok(out))
    }

    /// `scan_items` in order, on one cursor: once a key's visible version
    /// is found, its older versions are stepped over (a few) or sought
    /// past, never read.
    fn scan_forward(
        &self,
        start: &[u8],
        end: &[u8],
        ts: Timestamp,
        limit: usize,
    ) -> Result<Result<Vec<KeyItem>, LockedKey>> {
        let mut out: Vec<KeyItem> = Vec::new();
        if limit == 0 {
            return Ok(Ok(out));
        }
        let mut locked = None;
        // The key being read, whether it is decided, records passed since.
        let mut cur: Option<Vec<u8>> = None;
        let (mut decided, mut passed) = (false, 0);
        self.src.visit(start, end, &mut |k, v| {
            let Some((dk, rec)) = keys::split_mvcc(k) else {
                return Err(Error::Corruption(format!("not an MVCC record: {k:02x?}")));
            };
            if cur.as_deref() != Some(dk) {
                let key = cur.get_or_insert_with(Vec::new);
                key.clear();
                key.extend_from_slice(dk);
                (decided, passed) = (false, 0);
            } else if decided {
                passed += 1;
                return Ok(if passed < SKIP_BY_NEXT {
                    Step::Next
                } else {
                    Step::Seek(keys::versions_bounds(dk).1)
                });
            }
            match decide(rec, v, ts)? {
                None => Ok(Step::Next),
                Some(Seen::Locked(lock)) => {
                    locked = Some((dk.to_vec(), lock));
                    Ok(Step::Stop)
                }
                Some(Seen::Item(item)) => {
                    decided = true;
                    if let Some(item) = item {
                        out.push((dk.to_vec(), item));
                        if out.len() >= limit {
                            return Ok(Step::Stop);
                        }
                    }
                    Ok(Step::Next)
                }
            }
        })?;
        Ok(match locked {
            Some(l) => Err(l),
            None => Ok(out),
        })
    }

    /// Every data key with records in `[start, end)`, in order or reversed.
    pub fn keys_in(&self, start: &[u8], end: &[u8], reverse: bool) -> Result<Vec<Vec<u8>>> {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for (k, _) in self.src.range(start, end, usize::MAX, false)? {
            let Some((data_key, _)) = keys::split_mvcc(&k) else {
                return Err(Error::Corruption(format!("not an MVCC record: {k:02x?}")));
            };
            if keys.last().map(Vec::as_slice) != Some(data_key) {
                keys.push(data_key.to_vec());
            }
        }
        if reverse {
            keys.reverse();
        }
        Ok(keys)
    }

    /// The keys in `[start, end)` with a Put or Delete committed in
    /// `(since, at]`, each with its value at `at` (`None`: deleted), at
    /// most `limit`, in order; or the first lock that hides a key from a
    /// read at `at`. What an incremental backup copies.
    pub fn changes(
        &self,
        start: &[u8],
        end: &[u8],
        since: Timestamp,
        at: Timestamp,
        limit: usize,
    ) -> Result<Result<Vec<Change>, LockedKey>> {
        let mut out = Vec::new();
        let mut lo = start.to_vec();
        while out.len() < limit {
            let chunk = self.src.range(&lo, end, SCAN_CHUNK, false)?;
            let full = chunk.len() == SCAN_CHUNK;
            let mut keys: Vec<Vec<u8>> = Vec::new();
            for (k, _) in &chunk {
                let Some((data_key, _)) = keys::split_mvcc(k) else {
                    return Err(Error::Corruption(format!("not an MVCC record: {k:02x?}")));
                };
                if keys.last().map(Vec::as_slice) != Some(data_key) {
                    keys.push(data_key.to_vec());
                }
            }
            // Each key is read on its own (a chunk may cut its records).
            for data_key in keys {
                if out.len() >= limit {
                    break;
                }
                let value = match self.get(&data_key, at)? {
                    Visible::Locked(lock) => return Ok(Err((data_key, lock))),
                    Visible::Value(v) => v,
                };
                let changed = self.walk(&data_key, at, |ts, w| {
                    if ts <= since {
                        return Ok(Some(false));
                    }
                    match w.write_kind()? {
                        WriteKind::Rollback => Ok(None),
                        _ => Ok(Some(true)),
                    }
                })?;
                if changed == Some(true) {
                    out.push((data_key.clone(), value));
                }
                lo = keys::versions_bounds(&data_key).1;
            }
            if !full {
                break;
            }
        }
        Ok(Ok(out))
    }
}
