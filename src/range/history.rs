//! The range's part of a watch: the history of a span's user keys in
//! `(since, ts]` (`ReadOp::History`), read like any linearizable read at a
//! timestamp (so no write at or below `ts` can still land unseen, except
//! under a lock the answer reports). Also the reads that answer keys with
//! their metadata (`GetItem`, `ScanItems`: etcd's revisions and version).
//!
//! Invariant: `since` is at or above the range's GC horizon, so every
//! version above `since` and each one's predecessor are still here; below
//! it the answer is `Compacted`, naming the oldest revision still readable.

use super::read::{is_user_data, ReadResult};
use super::replica::Replica;
use super::timestamped::txn_error;
use crate::api::Timestamp;
use crate::chaos::{self, Canary};
use crate::error::{Error, Result};
use crate::mvcc::{Reader, Seen, TxnError};

impl Replica {
    /// Refuses a history that starts below the GC horizon. The error
    /// speaks of first revisions (`since + 1`): the oldest a watch may
    /// start from is just above the horizon.
    pub(super) fn check_compacted(&self, since: u64) -> Result<()> {
        if since < self.desc.gc_horizon {
            return Err(Error::Compacted {
                requested: since + 1,
                oldest: self.desc.gc_horizon + 1,
            });
        }
        Ok(())
    }

    /// The part of a history inside this range, and where it continues.
    pub(super) fn history(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        since: Timestamp,
        prev: bool,
        ts: Option<Timestamp>,
    ) -> Result<ReadResult> {
        let d = &self.desc;
        let Some(at) = ts else {
            return Err(Error::Internal("a history read without a timestamp".into()));
        };
        self.scan_moved(start, end, false)?;
        let (s, e) = self.clip(start, end);
        if !is_user_data(s) {
            return Err(Error::InvalidArgument("watches read user keys only".into()));
        }
        let mut h = Reader::new(&self.engine.as_ref()).history(s, e, since, at, limit, prev)?;
        // The canary a watch checker must catch: the first key of a range
        // that was split off loses its events.
        if chaos::canary(Canary::WatchDropsAtSplit) && !d.start_key.is_empty() {
            h.events
                .retain(|ev| ev.key.as_slice() != d.start_key.as_slice());
        }
        let resume = if h.resume.is_some() {
            None
        } else {
            self.scan_resume(start, end, false)
        };
        Ok(ReadResult::History(h, resume))
    }

    /// A user key with its metadata at `ts`.
    pub(super) fn get_item(&self, key: &[u8], ts: Option<Timestamp>) -> Result<ReadResult> {
        if !self.desc.contains(key) {
            return Err(Error::KeyNotInRange {
                range_id: self.desc.range_id,
                span: self.span(),
            });
        }
        if !is_user_data(key) {
            return Err(Error::InvalidArgument(
                "metadata is kept for user keys only".into(),
            ));
        }
        let at = ts.unwrap_or(Timestamp::MAX);
        match Reader::new(&self.engine.as_ref()).get_item(key, at)? {
            Seen::Item(i) => Ok(ReadResult::Items(
                i.map(|i| (key.to_vec(), i)).into_iter().collect(),
                None,
            )),
            Seen::Locked(lock) => Err(txn_error(TxnError::Locked {
                key: key.to_vec(),
                lock,
            })),
        }
    }

    /// The part of a forward scan with metadata inside this range.
    pub(super) fn scan_items(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        ts: Option<Timestamp>,
    ) -> Result<ReadResult> {
        let (s, e) = self.clip(start, end);
        self.scan_moved(start, end, false)?;
        if !is_user_data(s) {
            return Err(Error::InvalidArgument(
                "metadata is kept for user keys only".into(),
            ));
        }
        let at = ts.unwrap_or(Timestamp::MAX);
        let items = match Reader::new(&self.engine.as_ref()).scan_items(s, e, at, limit, false)? {
            Ok(items) => items,
            Err((key, lock)) => return Err(txn_error(TxnError::Locked { key, lock })),
        };
        let resume = if items.len() >= limit {
            None
        } else {
            self.scan_resume(start, end, false)
        };
        Ok(ReadResult::Items(items, resume))
    }
}
