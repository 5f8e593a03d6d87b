//! A span's history: every Put and Delete committed in `(since, at]`, one
//! event per version, and the locks that could still add versions at or
//! below `at` — what a watch reads (`Reader::history`).
//!
//! Invariants: events come in key order and, per key, in commit order;
//! a delete of a key that had no value is no event (it changed nothing);
//! a version's `prev` is the key's value just below it (the newest Put or
//! Delete under it, rollbacks skipped), which GC keeps while the version is
//! above the horizon. A lock started at or below `at` is reported, never
//! read through: its transaction may still commit at or below `at`, so the
//! caller may only trust events below the lock's start (`History::held`).

use super::reader::{Item, LockedKey, Reader};
use super::records::{Lock, WriteKind};
use super::Timestamp;
use crate::error::{Error, Result};
use crate::keys;

/// Raw records read per engine call while listing a span's keys.
const KEY_CHUNK: usize = 256;

/// One committed change of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The data key.
    pub key: Vec<u8>,
    /// Its commit timestamp (the watch revision).
    pub ts: Timestamp,
    /// The value written; `None`: a delete.
    pub value: Option<Vec<u8>>,
    /// A put's key metadata (`Item`): creation timestamp and version.
    pub create_ts: Timestamp,
    pub version: u64,
    pub lease: u64,
    /// With `prev`: the value just before, with its metadata (`None`:
    /// there was none).
    pub prev: Option<Item>,
}

/// What `Reader::history` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub events: Vec<Event>,
    /// Locks that hide their keys at `at`: a caller may trust only events
    /// below the oldest one's start.
    pub locks: Vec<LockedKey>,
    /// Set when `limit` events were gathered before the span's end: the
    /// last data key read; continue after it (same `since` and `at`).
    pub resume: Option<Vec<u8>>,
}

impl History {
    /// The newest timestamp this history is final at: `at`, or just below
    /// the oldest hiding lock's start.
    pub fn held(&self, at: Timestamp) -> Timestamp {
        self.locks
            .iter()
            .map(|(_, l): &(Vec<u8>, Lock)| Timestamp(l.start_ts.saturating_sub(1)))
            .fold(at, Timestamp::min)
    }
}

impl Reader<'_> {
    /// Every Put and Delete committed in `(since, at]` to the keys in
    /// `[start, end)` (data keys), key by key, each key's in commit order;
    /// with `prev`, each with the value before it. Stops after the key on
    /// which `limit` events were reached (`History::resume`).
    pub fn history(
        &self,
        start: &[u8],
        end: &[u8],
        since: Timestamp,
        at: Timestamp,
        limit: usize,
        prev: bool,
    ) -> Result<History> {
        let mut out = History::default();
        let mut lo = start.to_vec();
        loop {
            let chunk = self.source().range(&lo, end, KEY_CHUNK, false)?;
            let full = chunk.len() == KEY_CHUNK;
            let mut data_keys: Vec<Vec<u8>> = Vec::new();
            for (k, _) in &chunk {
                let Some((data_key, _)) = keys::split_mvcc(k) else {
                    return Err(Error::Corruption(format!("not an MVCC record: {k:02x?}")));
                };
                if data_keys.last().map(Vec::as_slice) != Some(data_key) {
                    data_keys.push(data_key.to_vec());
                }
            }
            for data_key in data_keys {
                self.key_history(&data_key, since, at, prev, &mut out)?;
                lo = keys::versions_bounds(&data_key).1;
                if out.events.len() >= limit {
                    out.resume = Some(data_key);
                    return Ok(out);
                }
            }
            if !full {
                return Ok(out);
            }
        }
    }

    /// One key's part of `history`, appended to `out`.
    fn key_history(
        &self,
        data_key: &[u8],
        since: Timestamp,
        at: Timestamp,
        prev: bool,
        out: &mut History,
    ) -> Result<()> {
        if let Some(lock) = self.lock(data_key)? {
            if lock.start() <= at {
                out.locks.push((data_key.to_vec(), lock));
            }
        }
        // Newest first: the versions in (since, at], then (with `prev`) the
        // first one at or below `since`, which is the oldest event's prev.
        let mut found: Vec<(Timestamp, Option<Item>)> = Vec::new();
        let mut before: Option<Option<Item>> = None;
        self.walk(data_key, at, |ts, w| {
            let value = match w.write_kind()? {
                WriteKind::Rollback => return Ok(None),
                WriteKind::Put => Some(Item::of(ts, w)),
                WriteKind::Delete => None,
            };
            if ts > since {
                found.push((ts, value));
                Ok(None)
            } else {
                before = Some(value);
                Ok(Some(()))
            }
        })?;
        let first = out.events.len();
        let mut below = before.flatten();
        for (ts, item) in found.into_iter().rev() {
            // Deleting an absent key changed nothing: no event (as etcd).
            if item.is_none() && below.is_none() {
                continue;
            }
            let p = if prev {
                std::mem::replace(&mut below, item.clone())
            } else {
                below = item.clone();
                None
            };
            let (create_ts, version, lease) = item.as_ref().map_or((Timestamp::ZERO, 0, 0), |i| {
                (i.create_ts, i.version, i.lease)
            });
            let value = item.map(|i| i.value);
            out.events.push(Event {
                key: data_key.to_vec(),
                ts,
                value,
                create_ts,
                version,
                lease,
                prev: p,
            });
        }
        debug_assert!(out.events[first..].windows(2).all(|w| w[0].ts < w[1].ts));
        Ok(())
    }
}
