//! Scans of user data served off the Store task.
//!
//! A linearizable scan is ready once its ReadIndex is applied; until now it
//! then ran on the Store task, the one thread that also drives every Raft
//! group of the node, so concurrent scans queued behind each other and
//! behind Raft (measured: a node's CPU stayed at ~63% under 64 scanning
//! clients). Now the Store task does the checks that need the replica
//! (epoch, GC horizon, where the range ends), takes an engine snapshot —
//! the engine exactly as the read would have seen it there — and the scan
//! itself runs on a runtime worker against that snapshot.
//!
//! Invariant: a deferred scan returns exactly what the inline scan would
//! have returned at the moment the snapshot was taken, which lies between
//! the read's arrival and its answer (so it stays linearizable).
//! Simulation builds never defer (`Replica::defer_scan` answers `None`):
//! madsim runs one task at a time and MemEngine snapshots copy.

use super::read::{is_user_data, ReadOp, ReadResult};
use super::replica::{Replica, Responder};
use super::timestamped::txn_error;
use crate::api::Timestamp;
use crate::error::Result;
use crate::mvcc::{Reader, Source, TxnError};
use crate::storage::{KvPair, Snapshot};

/// A scan of user data to run on `snap` (bounds already clipped to the
/// range), answering `Pairs(pairs, resume)`.
pub struct DeferredScan {
    pub(super) snap: Box<dyn Snapshot>,
    pub(super) start: Vec<u8>,
    pub(super) end: Vec<u8>,
    pub(super) limit: usize,
    pub(super) reverse: bool,
    pub(super) at: Timestamp,
    /// Where the scan resumes if this range gives fewer than `limit` pairs.
    pub(super) resume_if_short: Option<Vec<u8>>,
}

impl DeferredScan {
    /// Runs the scan (on whichever thread calls it).
    pub fn run(self) -> Result<ReadResult> {
        let src = SnapshotSource(self.snap.as_ref());
        let r = Reader::new(&src);
        let pairs = match r.scan(&self.start, &self.end, self.at, self.limit, self.reverse)? {
            Ok(pairs) => pairs,
            Err((key, lock)) => return Err(txn_error(TxnError::Locked { key, lock })),
        };
        let resume = if pairs.len() >= self.limit {
            None
        } else {
            self.resume_if_short
        };
        Ok(ReadResult::Pairs(pairs, resume))
    }

    /// Runs the scan on a runtime worker and answers `done`; inline where
    /// no runtime runs (the synchronous golden-script harness).
    pub fn answer(self, done: Responder<ReadResult>) {
        #[cfg(not(madsim))]
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { drop(done.send(self.run())) });
            return;
        }
        drop(done.send(self.run()));
    }
}

/// An engine snapshot as MVCC's source of records.
struct SnapshotSource<'a>(&'a dyn Snapshot);

impl Source for SnapshotSource<'_> {
    fn fetch(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.0.get(key)
    }
    fn range(&self, start: &[u8], end: &[u8], limit: usize, reverse: bool) -> Result<Vec<KvPair>> {
        self.0.scan(start, end, limit, reverse)
    }
    fn visit(&self, start: &[u8], end: &[u8], f: &mut crate::storage::Visitor) -> Result<()> {
        self.0.visit(start, end, f)
    }
}

impl Replica {
    /// A ready scan of user data as a `DeferredScan`, with every check the
    /// inline path makes done here, in the same order (`execute`, `scan`);
    /// `None`: serve the read inline (other reads; simulation builds).
    pub(super) fn defer_scan(
        &self,
        op: &ReadOp,
        ts: Option<Timestamp>,
    ) -> Option<Result<DeferredScan>> {
        if cfg!(madsim) {
            return None;
        }
        let ReadOp::Scan {
            start,
            end,
            limit,
            reverse,
        } = op
        else {
            return None;
        };
        let (s, e) = self.clip(start, end);
        if !is_user_data(s) {
            return None;
        }
        Some(self.deferred_scan(start, end, (s, e), *limit, *reverse, ts))
    }

    fn deferred_scan(
        &self,
        start: &[u8],
        end: &[u8],
        (s, e): (&[u8], &[u8]),
        limit: usize,
        reverse: bool,
        ts: Option<Timestamp>,
    ) -> Result<DeferredScan> {
        let d = &self.desc;
        if d.frozen {
            return Err(d.epoch_mismatch());
        }
        if let Some(ts) = ts {
            d.check_gc_horizon(ts.0)?;
        }
        self.scan_moved(start, end, reverse)?;
        let resume_if_short = self.scan_resume(start, end, reverse);
        Ok(DeferredScan {
            snap: self.engine.snapshot()?,
            start: s.to_vec(),
            end: e.to_vec(),
            limit,
            reverse,
            at: ts.unwrap_or(Timestamp::MAX),
            resume_if_short,
        })
    }
}
