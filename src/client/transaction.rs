//! Transactions in the SDK: the client is the coordinator (Percolator with
//! read validation; docs/transactions.md).
//!
//! A `Transaction` takes a start timestamp from the oracle, reads the
//! snapshot at it (the server resolves locks in the way), and buffers its
//! writes (reads see them: read-your-writes). Nothing is locked before
//! `commit`, so an abandoned transaction blocks nobody. Commit:
//! - no writes: nothing to do — the reads were one snapshot taken after the
//!   transaction began (strictly serializable at `start_ts`);
//! - every key written, read and scanned in one range: one Raft command
//!   (`CommitOnePc`) that validates the reads and writes at a fresh
//!   timestamp;
//! - otherwise two-phase: prewrite (lock) every written key (a request
//!   per range, in parallel; the first key is the primary), take
//!   `commit_ts`, validate every read key and scanned span (nothing
//!   committed in `(start_ts, commit_ts]`, no foreign lock; the check
//!   registers the read at `commit_ts`, so no later write lands below it),
//!   commit the primary (the commit point) and answer; then, in the
//!   background (`Client::flush` waits for it), commit the secondaries
//!   (readers roll forward any left behind) and tell the primary they are
//!   done: until then GC keeps the primary's commit record, from which a
//!   reader decides the fate of a secondary lock. The transaction is serialized at
//!   `commit_ts`, taken between its invocation and its reply. While it
//!   runs, heartbeats keep the primary's lock alive (`LOCK_TTL`), so a
//!   slow commit is not rolled back by readers; a coordinator that died
//!   leaves locks that expire and are resolved by whoever meets them.
//!
//! No ambiguous commits: when the primary's commit reply is lost, the
//! coordinator rolls its primary back itself, which either succeeds
//! (aborted: a late commit then fails on the rollback record) or finds it
//! committed; a lost one-command commit is settled the same way from its
//! first key. Only a cluster unreachable for the whole deadline leaves
//! `Indeterminate`.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::faults::{CommitPoint, Fault};
use super::{Client, TxnState};
use crate::api::{self, Timestamp, MAX_KEY_BYTES, MAX_TXN_BYTES, MAX_TXN_KEYS, MAX_VALUE_BYTES};
use crate::chaos::{self, Canary};
use crate::error::{Error, Result};
use crate::proto::{KeyMeta, KeyValue, Mutation, OnePcRequest, ReadSpan};

/// A lock's lifetime past the moment it is written (or last renewed by a
/// heartbeat; locks are only held during `commit`).
pub const LOCK_TTL: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct TxnOptions {
    /// `Client::transact`: overall time for every attempt.
    pub deadline: Duration,
    /// `Client::transact`: attempts at most.
    pub max_attempts: u32,
}

impl Default for TxnOptions {
    fn default() -> Self {
        TxnOptions {
            deadline: Duration::from_secs(30),
            max_attempts: 20,
        }
    }
}

/// Everything a transaction is before it commits: what the CLI keeps
/// between commands (serializable), and what `Client::resume` takes back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRecord {
    pub start_ts: u64,
    /// Buffered writes, in key order (`None`: a delete).
    pub writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Keys read (validated at commit).
    pub reads: Vec<Vec<u8>>,
    /// Spans scanned `[start, end)` (end empty: to the end).
    pub spans: Vec<(Vec<u8>, Vec<u8>)>,
}

/// An open transaction (see the module docs).
pub struct Transaction<'c> {
    client: &'c Client,
    start_ts: Timestamp,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    write_bytes: usize,
    reads: BTreeSet<Vec<u8>>,
    spans: Vec<(Vec<u8>, Vec<u8>)>,
    /// Buffered puts attached to a lease (`put_leased`), by key.
    leases: BTreeMap<Vec<u8>, u64>,
    /// When this process began or resumed it, less the time it had run.
    began: tokio::time::Instant,
    /// Its registration among the client's open transactions (GC pin).
    ticket: u64,
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        self.client.txn_closed(self.ticket);
    }
}

fn check_write(key: &[u8], value: Option<&[u8]>) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidArgument("key must not be empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::InvalidArgument(format!(
            "key is {} bytes; the limit is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    if api::is_system_key(key) {
        return Err(Error::InvalidArgument(
            "keys under \"_/\" are reserved for cluster metadata and cannot be written".into(),
        ));
    }
    if let Some(v) = value {
        if v.len() > MAX_VALUE_BYTES {
            return Err(Error::InvalidArgument(format!(
                "value is {} bytes; the limit is {MAX_VALUE_BYTES}",
                v.len()
            )));
        }
    }
    Ok(())
}

impl Client {
    /// Begins a transaction: a fresh start timestamp from the oracle.
    pub async fn begin(&self) -> Result<Transaction<'_>> {
        let start_ts = self.timestamps(1).await?;
        Ok(self.resume(
            TxnRecord {
                start_ts: start_ts.0,
                ..Default::default()
            },
            Duration::ZERO,
        ))
    }

    /// Takes back a transaction from its record (another process began
    /// it); `elapsed`: how long it has run.
    pub fn resume(&self, rec: TxnRecord, elapsed: Duration) -> Transaction<'_> {
        let now = tokio::time::Instant::now();
        let write_bytes = rec
            .writes
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
            .sum();
        Transaction {
            client: self,
            start_ts: Timestamp(rec.start_ts),
            writes: rec.writes.into_iter().collect(),
            write_bytes,
            reads: rec.reads.into_iter().collect(),
            spans: rec.spans,
            leases: BTreeMap::new(),
            began: now.checked_sub(elapsed).unwrap_or(now),
            ticket: self.txn_opened(Timestamp(rec.start_ts)),
        }
    }

    /// Runs `f` in a transaction and commits it, running it again (with
    /// backoff) while it fails with a conflict, within `opts`' deadline.
    /// `f` must be safe to run more than once (it sees a fresh snapshot
    /// each time). Returns `f`'s answer and the commit timestamp.
    pub async fn transact<T, F>(&self, opts: &TxnOptions, mut f: F) -> Result<(T, Timestamp)>
    where
        F: for<'t> FnMut(
            &'t mut Transaction<'_>,
        ) -> Pin<Box<dyn Future<Output = Result<T>> + Send + 't>>,
    {
        let begun = tokio::time::Instant::now();
        let mut backoff = Duration::from_millis(10);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut txn = self.begin().await?;
            let result = match f(&mut txn).await {
                Ok(v) => txn.commit().await.map(|ts| (v, ts)),
                Err(e) => Err(e),
            };
            match result {
                Err(e)
                    if e.is_txn_retryable()
                        && attempt < opts.max_attempts
                        && begun.elapsed() + backoff < opts.deadline =>
                {
                    let jitter = madsim::rand::random::<u64>() % (backoff.as_millis() as u64 + 1);
                    tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                r => return r,
            }
        }
    }
}

impl<'c> Transaction<'c> {
    pub fn start_ts(&self) -> Timestamp {
        self.start_ts
    }

    /// The transaction's state (for `Client::resume`).
    pub fn record(&self) -> TxnRecord {
        TxnRecord {
            start_ts: self.start_ts.0,
            writes: self
                .writes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            reads: self.reads.iter().cloned().collect(),
            spans: self.spans.clone(),
        }
    }

    /// How many writes are buffered.
    pub fn write_count(&self) -> usize {
        self.writes.len()
    }

    /// Reads `key` in the transaction (its own writes first).
    pub async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.writes.get(key) {
            return Ok(v.clone());
        }
        let v = self.client.txn_get(key, self.start_ts).await?;
        self.reads.insert(key.to_vec());
        Ok(v)
    }

    /// `get` with the key's metadata (`None` for the transaction's own
    /// buffered write: it has no revision until it commits).
    pub async fn get_meta(&mut self, key: &[u8]) -> Result<Option<(Vec<u8>, Option<KeyMeta>)>> {
        if let Some(v) = self.writes.get(key) {
            return Ok(v.clone().map(|v| (v, None)));
        }
        let v = self.client.txn_get_meta(key, self.start_ts, true).await?;
        self.reads.insert(key.to_vec());
        Ok(v)
    }

    /// `scan` with each key's metadata (`None` for the transaction's own
    /// writes).
    pub async fn scan_meta(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: u32,
    ) -> Result<Vec<KeyValue>> {
        self.scan_kvs(start, end, limit, true).await
    }

    /// The scan both answer: read at the start timestamp (the span
    /// recorded for validation), merged with the buffered writes.
    async fn scan_kvs(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: u32,
        with_meta: bool,
    ) -> Result<Vec<KeyValue>> {
        let want = if limit == 0 {
            api::DEFAULT_SCAN_LIMIT
        } else {
            limit as usize
        };
        // Fetch enough to survive buffered deletes in the span.
        let deletes = self
            .writes
            .range(start.to_vec()..)
            .take_while(|(k, _)| end.is_empty() || k.as_slice() < end)
            .filter(|(_, v)| v.is_none())
            .count();
        let fetch = (want + deletes).min(api::MAX_SCAN_LIMIT) as u32;
        let (kvs, covered) = self
            .client
            .txn_scan_meta(start, end, fetch, self.start_ts, with_meta)
            .await?;
        self.spans.push((start.to_vec(), covered.clone()));
        let mut merged: BTreeMap<Vec<u8>, KeyValue> =
            kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
        for (k, v) in self
            .writes
            .range(start.to_vec()..)
            .take_while(|(k, _)| covered.is_empty() || k.as_slice() < covered.as_slice())
        {
            match v {
                Some(v) => merged.insert(
                    k.clone(),
                    KeyValue {
                        key: k.clone(),
                        value: v.clone(),
                        meta: None,
                    },
                ),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_values().take(want).collect())
    }

    /// Pairs with `start <= key < end` (end empty: to the end), at most
    /// `limit` (0: the default), the transaction's own writes included.
    pub async fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: u32,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let kvs = self.scan_kvs(start, end, limit, false).await?;
        Ok(kvs.into_iter().map(|kv| (kv.key, kv.value)).collect())
    }

    /// Buffers a write of `key` (checked now; written at commit).
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        check_write(key, Some(value))?;
        self.leases.remove(key);
        self.buffer(key, Some(value.to_vec()))
    }

    /// Buffers a write of `key` attached to `lease` (the caller attached
    /// the key first: `Client::attach`; see `client/lease.rs`).
    pub fn put_leased(&mut self, key: &[u8], value: &[u8], lease: u64) -> Result<()> {
        check_write(key, Some(value))?;
        self.buffer(key, Some(value.to_vec()))?;
        if lease != 0 {
            self.leases.insert(key.to_vec(), lease);
        }
        Ok(())
    }

    /// The leases the buffered writes are attached to, with their keys.
    pub fn leased_writes(&self) -> Vec<(u64, Vec<u8>)> {
        self.leases.iter().map(|(k, l)| (*l, k.clone())).collect()
    }

    /// Buffers a delete of `key`.
    pub fn delete(&mut self, key: &[u8]) -> Result<()> {
        check_write(key, None)?;
        self.leases.remove(key);
        self.buffer(key, None)
    }

    fn buffer(&mut self, key: &[u8], value: Option<Vec<u8>>) -> Result<()> {
        let add = key.len() + value.as_ref().map_or(0, Vec::len);
        let old = self
            .writes
            .get(key)
            .map(|v| key.len() + v.as_ref().map_or(0, Vec::len));
        if old.is_none() && self.writes.len() >= MAX_TXN_KEYS {
            return Err(Error::InvalidArgument(format!(
                "a transaction writes at most {MAX_TXN_KEYS} keys"
            )));
        }
        let bytes = self.write_bytes - old.unwrap_or(0) + add;
        if bytes > MAX_TXN_BYTES {
            return Err(Error::InvalidArgument(format!(
                "a transaction writes at most {MAX_TXN_BYTES} bytes (this write makes {bytes})"
            )));
        }
        self.write_bytes = bytes;
        self.writes.insert(key.to_vec(), value);
        Ok(())
    }

    /// Drops the transaction (nothing was locked: it wrote nothing yet).
    pub fn rollback(self) {}

    fn mutations(&self) -> Vec<Mutation> {
        self.writes
            .iter()
            .map(|(k, v)| Mutation {
                key: k.clone(),
                value: v.clone().unwrap_or_default(),
                delete: v.is_none(),
                lease: self.leases.get(k).copied().unwrap_or(0),
            })
            .collect()
    }

    /// Keys read but not written (written keys are checked by the prewrite).
    fn read_only_keys(&self) -> Vec<Vec<u8>> {
        self.reads
            .iter()
            .filter(|k| !self.writes.contains_key(*k))
            .cloned()
            .collect()
    }

    /// Commits; the commit timestamp (the start timestamp for a
    /// transaction that wrote nothing).
    pub async fn commit(mut self) -> Result<Timestamp> {
        let r = self.commit_once().await;
        if matches!(r, Err(Error::TxnConflict { .. })) && chaos::canary(Canary::BlindRetry) {
            // The canary: send the same writes again at a fresh snapshot
            // without reading again (what a correct retry must never do).
            self.start_ts = self.client.timestamps(1).await?;
            self.reads.clear();
            self.spans.clear();
            return self.commit_once().await;
        }
        r
    }

    async fn commit_once(&self) -> Result<Timestamp> {
        if self.writes.is_empty() {
            return Ok(self.start_ts);
        }
        if self.one_range() {
            match self.commit_one_pc().await {
                Err(Error::KeyNotInRange { .. }) => {} // it spans ranges after all
                r => return r,
            }
        }
        self.commit_two_pc().await
    }

    /// Whether every key the transaction touched lies in one range the
    /// client knows of (or it knows none, and the server will tell).
    fn one_range(&self) -> bool {
        let mut st = self.client.lock();
        let mut range: Option<Option<Vec<u8>>> = None;
        let keys = self
            .writes
            .keys()
            .chain(self.reads.iter())
            .chain(self.spans.iter().map(|(s, _)| s));
        for k in keys {
            let rk = api::route::key(k);
            let here = Client::cached(&mut st, &rk).map(|(s, (e, _))| (s.clone(), e.clone()));
            let start = here.as_ref().map(|(s, _)| s.clone());
            match &range {
                None => range = Some(start),
                Some(r) if *r != start => return false,
                _ => {}
            }
        }
        true
    }

    async fn commit_one_pc(&self) -> Result<Timestamp> {
        let req = OnePcRequest {
            start_ts: self.start_ts.0,
            mutations: self.mutations(),
            reads: self.read_only_keys(),
            spans: self
                .spans
                .iter()
                .map(|(s, e)| ReadSpan {
                    start: s.clone(),
                    end: e.clone(),
                })
                .collect(),
        };
        let first = req.mutations[0].key.clone();
        let lost = self
            .client
            .faults
            .as_ref()
            .is_some_and(|f| f.at(CommitPoint::OnePcSent) == Fault::Crash);
        if lost {
            // The reply is lost with the request in flight: settle now.
            let settling = async {
                tokio::time::sleep(Duration::from_millis(1)).await;
                settle(self.client, &first, self.start_ts).await
            };
            let (_, decided) = futures::future::join(self.client.txn_one_pc(req), settling).await;
            return decided;
        }
        match self.client.txn_one_pc(req).await {
            Err(e) if e.is_ambiguous() => settle(self.client, &first, self.start_ts).await,
            r => r,
        }
    }

    /// The lock TTL this client uses (a fault hook may shorten it).
    fn lock_ttl(&self) -> Duration {
        self.client
            .faults
            .as_ref()
            .and_then(|f| f.lock_ttl())
            .unwrap_or(LOCK_TTL)
    }

    /// A lock's TTL counted from the transaction's start: alive `ttl` from now.
    fn ttl_ms(&self, ttl: Duration) -> u64 {
        (self.began.elapsed() + ttl).as_millis() as u64
    }

    /// The two-phase commit, with the primary's lock kept alive by
    /// heartbeats (every third of its TTL) while it runs.
    async fn commit_two_pc(&self) -> Result<Timestamp> {
        let primary = self
            .writes
            .keys()
            .next()
            .cloned()
            .ok_or_else(|| Error::Internal("a two-phase commit with no writes".into()))?;
        let ttl = self.lock_ttl();
        let stalled = AtomicBool::new(false);
        let steps = Box::pin(self.two_pc_steps(&primary, ttl, &stalled));
        let beats = Box::pin(async {
            loop {
                tokio::time::sleep(ttl / 3).await;
                if stalled.load(Ordering::Relaxed) {
                    continue; // a paused process sends nothing
                }
                let ttl_ms = self.ttl_ms(ttl);
                if let Err(e) = self
                    .client
                    .txn_heartbeat(&primary, self.start_ts, ttl_ms)
                    .await
                {
                    tracing::debug!(%e, "transaction heartbeat failed");
                }
            }
        });
        let out = match futures::future::select(steps, beats).await {
            futures::future::Either::Left((r, _)) => r,
            futures::future::Either::Right(_) => {
                Err(Error::Internal("the heartbeat loop ended".into()))
            }
        };
        out
    }

    /// A fault point (`faults.rs`): a crash ends the commit here with
    /// nothing cleaned up; a stall pauses it (and the heartbeats).
    async fn fault(&self, point: CommitPoint, stalled: &AtomicBool) -> Result<()> {
        let Some(f) = self.client.faults.as_ref() else {
            return Ok(());
        };
        match f.at(point) {
            Fault::Continue => Ok(()),
            Fault::Crash => Err(Error::Indeterminate(format!(
                "the client crashed at {point:?} (injected)"
            ))),
            Fault::Stall(d) => {
                stalled.store(true, Ordering::Relaxed);
                tokio::time::sleep(d).await;
                stalled.store(false, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    async fn two_pc_steps(
        &self,
        primary: &[u8],
        ttl: Duration,
        stalled: &AtomicBool,
    ) -> Result<Timestamp> {
        let keys: Vec<Vec<u8>> = self.writes.keys().cloned().collect();
        // Every key at once, a request per range (a reader meeting a
        // secondary's lock before the primary's finds no primary and rolls
        // the transaction back: safe, it only aborts this commit).
        let prewritten = self
            .client
            .txn_prewrite(primary, self.start_ts, self.ttl_ms(ttl), self.mutations())
            .await;
        if let Err(e) = prewritten {
            self.abandon(keys).await;
            return Err(e);
        }
        self.fault(CommitPoint::AfterPrewrite, stalled).await?;
        let checked = async {
            let commit_ts = self.client.timestamps(1).await?;
            self.client
                .txn_validate(
                    self.start_ts,
                    commit_ts,
                    self.read_only_keys(),
                    self.spans.clone(),
                )
                .await?;
            Ok(commit_ts)
        };
        let commit_ts = match checked.await {
            Ok(ts) => ts,
            Err(e) => {
                self.abandon(keys).await;
                return Err(e);
            }
        };
        let secondaries: Vec<Vec<u8>> = keys.into_iter().filter(|k| k != primary).collect();
        if chaos::canary(Canary::SecondariesBeforePrimary) && !secondaries.is_empty() {
            let _ = self
                .client
                .txn_finish(secondaries.clone(), self.start_ts, Some(commit_ts))
                .await;
        }
        self.fault(CommitPoint::BeforeCommitPrimary, stalled)
            .await?;
        // The commit point. The primary's record stays (GC keeps it) until
        // every secondary is committed: readers resolving them need it.
        let committed = if secondaries.is_empty() {
            let only = vec![primary.to_vec()];
            self.client
                .txn_finish(only, self.start_ts, Some(commit_ts))
                .await
        } else {
            self.client
                .txn_commit_primary(primary, self.start_ts, commit_ts)
                .await
        };
        match committed {
            Ok(()) => {}
            Err(Error::TxnAborted { .. }) if chaos::canary(Canary::CommitAfterLockLost) => {}
            Err(Error::TxnAborted { key }) => {
                return Err(Error::TxnConflict {
                    key,
                    reason: "its locks expired and were rolled back before it committed".into(),
                })
            }
            Err(e) if e.is_ambiguous() || e.is_retryable() => {
                settle_own(self.client, primary, self.start_ts).await?;
            }
            // Nothing of it left below the GC horizon: an earlier attempt
            // may have committed it (its record since collected).
            Err(Error::TxnTooOld(m)) => {
                return Err(Error::Indeterminate(format!(
                    "the commit's outcome can no longer be told: {m}"
                )))
            }
            Err(e) => return Err(e),
        }
        self.fault(CommitPoint::AfterCommitPrimary, stalled).await?;
        // Committed. The secondaries are committed after the answer (readers
        // roll forward any left behind, and the primary's record stays until
        // they are done; see `mvcc::Write`).
        if !secondaries.is_empty() {
            let (client, start, primary) = (self.client.clone(), self.start_ts, primary.to_vec());
            let finish = async move {
                match client.txn_finish(secondaries, start, Some(commit_ts)).await {
                    Ok(()) => client.queue_done_mark(primary, start),
                    Err(e) => tracing::debug!(%e, "secondaries left for readers to resolve"),
                }
            };
            self.client.in_background(finish).await;
        }
        Ok(commit_ts)
    }

    /// Rolls back what a failed commit may have locked (best effort: an
    /// expired lock is rolled back by whoever meets it).
    async fn abandon(&self, keys: Vec<Vec<u8>>) {
        if let Err(e) = self.client.txn_finish(keys, self.start_ts, None).await {
            tracing::debug!(%e, "locks of an aborted transaction left to expire");
        }
    }
}

/// The outcome of our own two-phase commit whose primary commit's reply
/// was lost: roll the primary back ourselves. That succeeds (aborted: a
/// late commit now fails on the rollback record) or finds it committed.
async fn settle_own(client: &Client, primary: &[u8], start: Timestamp) -> Result<Timestamp> {
    match client.txn_finish(vec![primary.to_vec()], start, None).await {
        Ok(()) => Err(Error::TxnConflict {
            key: primary.to_vec(),
            reason: "its commit was interrupted and it was rolled back".into(),
        }),
        Err(Error::TxnCommitted { commit_ts, .. }) => Ok(Timestamp(commit_ts)),
        Err(e) => Err(Error::Indeterminate(format!(
            "the commit's outcome could not be read back: {e}"
        ))),
    }
}

/// The outcome of the transaction (`primary`, `start`) whose commit's
/// reply was lost: a one-command commit's, or anyone's from the primary.
pub async fn settle(client: &Client, primary: &[u8], start: Timestamp) -> Result<Timestamp> {
    for _ in 0..100 {
        let state = client
            .txn_check_lost_reply(primary, start)
            .await
            .map_err(|e| {
                Error::Indeterminate(format!("the commit's outcome could not be read back: {e}"))
            })?;
        match state {
            TxnState::Committed { commit_ts } => return Ok(commit_ts),
            TxnState::RolledBack | TxnState::Unknown => {
                return Err(Error::TxnConflict {
                    key: primary.to_vec(),
                    reason: "its commit was interrupted and it was rolled back".into(),
                })
            }
            TxnState::Locked { .. } => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    Err(Error::Indeterminate(
        "the transaction's primary lock neither committed nor expired".into(),
    ))
}
