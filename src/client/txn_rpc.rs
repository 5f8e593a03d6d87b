//! The transaction steps through the SDK (the `Txn` service), each routed
//! like a Kv request by its first key. Steps are idempotent (a prewrite,
//! commit or rollback repeated by the same transaction changes nothing), so
//! they are retried on any retryable failure, ambiguous ones included; a
//! request whose keys turn out to span ranges is split along the span the
//! server names and sent again per range.
//!
//! Also the lock resolver every reader and writer uses when it meets a lock
//! (`resolve_lock`): settle the owner from its primary, then roll the lock
//! forward or back. The server calls it too (its Kv paths meet locks).

use std::collections::BTreeMap;

use super::{Client, Retry};
use crate::api::{route, Timestamp};
use crate::error::{Error, Result, Span};
use crate::proto::txn_status_response::State;
use crate::proto::*;
use crate::trace_context as trace;

/// How long a secondaries-done mark waits for others to go with it.
const DONE_MARK_BATCH: std::time::Duration = std::time::Duration::from_millis(20);

/// A transaction's status as its primary says (`None`: nothing there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    Unknown,
    Locked { ttl_ms: u64 },
    Committed { commit_ts: Timestamp },
    RolledBack,
}

impl From<TxnStatusResponse> for TxnState {
    fn from(r: TxnStatusResponse) -> Self {
        match r.state() {
            State::Unknown => TxnState::Unknown,
            State::Locked => TxnState::Locked { ttl_ms: r.ttl_ms },
            State::Committed => TxnState::Committed {
                commit_ts: Timestamp(r.commit_ts),
            },
            State::RolledBack => TxnState::RolledBack,
        }
    }
}

/// Splits `items` by the range each key (`key_of`) lies in, as the client's
/// range cache knows it: one group per cached range, unknown keys together.
fn group<T>(client: &Client, items: Vec<T>, key_of: impl Fn(&T) -> &[u8]) -> Vec<Vec<T>> {
    let mut groups: BTreeMap<Vec<u8>, Vec<T>> = BTreeMap::new();
    {
        let mut st = client.lock();
        for it in items {
            let rk = route::key(key_of(&it));
            let start = Client::cached(&mut st, &rk)
                .map(|(s, _)| s.clone())
                .unwrap_or_default();
            groups.entry(start).or_default().push(it);
        }
    }
    groups.into_values().collect()
}

/// Splits a refused group along the span the server named.
fn split_along<T>(batch: Vec<T>, span: &Span, key_of: impl Fn(&T) -> &[u8]) -> Vec<Vec<T>> {
    let (inside, rest): (Vec<T>, Vec<T>) = batch
        .into_iter()
        .partition(|it| span.contains(&route::key(key_of(it))));
    [inside, rest]
        .into_iter()
        .filter(|g| !g.is_empty())
        .collect()
}

impl Client {
    /// Sends `items` in per-range requests made by `send` (given one
    /// group), all ranges at once, splitting a group again whenever a
    /// range refuses it (the refused parts go out in the next wave).
    async fn per_range<T, F, Fut>(
        &self,
        items: Vec<T>,
        key_of: impl Fn(&T) -> &[u8] + Copy,
        send: F,
    ) -> Result<()>
    where
        T: Clone,
        F: Fn(Vec<u8>, Vec<T>) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let mut wave = group(self, items, key_of);
        let mut rounds = 0;
        wave.retain(|b| !b.is_empty());
        while !wave.is_empty() {
            let sends = wave.iter().map(|batch| {
                let first = batch.first().map(|it| route::key(key_of(it)));
                send(first.unwrap_or_default(), batch.clone())
            });
            let results = futures::future::join_all(sends).await;
            let mut next = Vec::new();
            let mut failed = None;
            for (batch, r) in wave.into_iter().zip(results) {
                match r {
                    Ok(()) => {}
                    Err(Error::KeyNotInRange { span, .. }) if span.is_known() && rounds < 1000 => {
                        next.extend(split_along(batch, &span, key_of));
                    }
                    Err(e) => failed = failed.or(Some(e)),
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
            rounds += 1;
            wave = next;
            wave.retain(|b| !b.is_empty());
        }
        Ok(())
    }

    /// A read at `start_ts` (locks in the way are resolved by the server).
    pub async fn txn_get(&self, key: &[u8], start_ts: Timestamp) -> Result<Option<Vec<u8>>> {
        Ok(self
            .txn_get_meta(key, start_ts, false)
            .await?
            .map(|(v, _)| v))
    }

    /// `txn_get`, with the key's metadata when `with_meta`.
    pub async fn txn_get_meta(
        &self,
        key: &[u8],
        start_ts: Timestamp,
        with_meta: bool,
    ) -> Result<Option<(Vec<u8>, Option<KeyMeta>)>> {
        let req = TxnGetRequest {
            key: key.to_vec(),
            start_ts: start_ts.0,
            with_meta,
        };
        let resp = self
            .with_retry(&route::key(key), Retry::Idempotent, |ch| {
                let req = req.clone();
                async move { ch.txn().get(trace::request(req)).await }
            })
            .await?
            .into_inner();
        Ok(resp.found.then_some((resp.value, resp.meta)))
    }

    /// A scan at `start_ts` (forward; see `Client::scan`), and the end of
    /// the span it covered: `end` when it completed, else just past the
    /// last key returned.
    pub async fn txn_scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u32,
        start_ts: Timestamp,
    ) -> Result<(Vec<(Vec<u8>, Vec<u8>)>, Vec<u8>)> {
        let (kvs, covered) = self
            .txn_scan_meta(start, end, limit, start_ts, false)
            .await?;
        Ok((
            kvs.into_iter().map(|kv| (kv.key, kv.value)).collect(),
            covered,
        ))
    }

    /// `txn_scan`, with each key's metadata when `with_meta`.
    pub async fn txn_scan_meta(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u32,
        start_ts: Timestamp,
        with_meta: bool,
    ) -> Result<(Vec<KeyValue>, Vec<u8>)> {
        let want = if limit == 0 {
            crate::api::DEFAULT_SCAN_LIMIT
        } else {
            limit as usize
        };
        let mut from = start.to_vec();
        let mut out: Vec<KeyValue> = Vec::new();
        loop {
            let req = TxnScanRequest {
                start: from.clone(),
                end: end.to_vec(),
                limit: (want - out.len()) as u32,
                reverse: false,
                start_ts: start_ts.0,
                with_meta,
                ..Default::default()
            };
            let resp = self
                .with_retry(&route::key(&from), Retry::Idempotent, |ch| {
                    let req = req.clone();
                    async move { ch.txn().scan(trace::request(req)).await }
                })
                .await?
                .into_inner();
            out.extend(resp.pairs);
            if out.len() >= want {
                out.truncate(want);
                let mut covered = out.last().map(|kv| kv.key.clone()).unwrap_or_default();
                covered.push(0);
                return Ok((out, covered));
            }
            if resp.resume_key.is_empty() {
                return Ok((out, end.to_vec()));
            }
            from = resp.resume_key;
        }
    }

    /// Commits a transaction whose every key lies in one range in one
    /// step; the commit timestamp. `KeyNotInRange` if they do not.
    pub async fn txn_one_pc(&self, req: OnePcRequest) -> Result<Timestamp> {
        let first = req
            .mutations
            .first()
            .map(|m| m.key.clone())
            .ok_or_else(|| Error::InvalidArgument("a commit with no writes".into()))?;
        let resp = self
            .with_retry(&route::key(&first), Retry::Batch, |ch| {
                let req = req.clone();
                async move { ch.txn().commit_one_pc(trace::request(req)).await }
            })
            .await?
            .into_inner();
        Ok(Timestamp(resp.commit_ts))
    }

    /// Locks every mutation for the transaction (`primary`, `start_ts`).
    pub async fn txn_prewrite(
        &self,
        primary: &[u8],
        start_ts: Timestamp,
        ttl_ms: u64,
        mutations: Vec<Mutation>,
    ) -> Result<()> {
        self.per_range(
            mutations,
            |m| &m.key,
            |first, muts| {
                let req = PrewriteRequest {
                    primary: primary.to_vec(),
                    start_ts: start_ts.0,
                    ttl_ms,
                    mutations: muts,
                };
                async move {
                    self.with_retry(&first, Retry::Steps, |ch| {
                        let req = req.clone();
                        async move { ch.txn().prewrite(trace::request(req)).await }
                    })
                    .await
                    .map(drop)
                }
            },
        )
        .await
    }

    /// Commits (`commit_ts` set) or rolls back the transaction's locks on `keys`.
    pub async fn txn_finish(
        &self,
        keys: Vec<Vec<u8>>,
        start_ts: Timestamp,
        commit_ts: Option<Timestamp>,
    ) -> Result<()> {
        let template = FinishRequest {
            start_ts: start_ts.0,
            commit_ts: commit_ts.map_or(0, |t| t.0),
            ..Default::default()
        };
        self.finish_step(keys, template).await
    }

    /// Commits a two-phase transaction's primary at `commit_ts` (the commit
    /// point); its record is kept from GC until `txn_secondaries_done`.
    pub async fn txn_commit_primary(
        &self,
        primary: &[u8],
        start_ts: Timestamp,
        commit_ts: Timestamp,
    ) -> Result<()> {
        let template = FinishRequest {
            start_ts: start_ts.0,
            commit_ts: commit_ts.0,
            primary_of_many: true,
            ..Default::default()
        };
        self.finish_step(vec![primary.to_vec()], template).await
    }

    /// Every secondary of the transaction (`primary`, `start`) committed:
    /// its primary's record may be collected. Marks wait `DONE_MARK_BATCH`
    /// and go out together, a request per range (one Raft write marks
    /// every transaction that finished meanwhile, instead of one each).
    pub(super) fn queue_done_mark(&self, primary: Vec<u8>, start: Timestamp) {
        let schedule = {
            let mut m = self.done_marks.lock().unwrap_or_else(|e| e.into_inner());
            m.pending.push((primary, start));
            !std::mem::replace(&mut m.scheduled, true)
        };
        if !schedule {
            return;
        }
        // Not counted as background work: the caller holds a permit
        // already, and waiting for another behind a `flush` (which takes
        // them all) would deadlock; `flush` sends what is pending itself.
        let client = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(DONE_MARK_BATCH).await;
            client.send_done_marks().await;
        });
    }

    /// Sends the pending secondaries-done marks (whoever takes them).
    pub(super) async fn send_done_marks(&self) {
        let marks = {
            let mut m = self.done_marks.lock().unwrap_or_else(|e| e.into_inner());
            m.scheduled = false;
            std::mem::take(&mut m.pending)
        };
        if marks.is_empty() {
            return;
        }
        if let Err(e) = self.txn_secondaries_done_many(marks).await {
            // Records left pending stay (GC keeps them): harmless.
            tracing::debug!(%e, "secondaries-done marks not sent");
        }
    }

    /// Every secondary of each transaction (primary, start) is committed:
    /// one request per range for all of them.
    pub async fn txn_secondaries_done_many(&self, marks: Vec<(Vec<u8>, Timestamp)>) -> Result<()> {
        self.per_range(
            marks,
            |m| &m.0,
            |first, marks| {
                let req = FinishRequest {
                    start_ts: marks.first().map_or(0, |m| m.1 .0),
                    secondaries_done: true,
                    done_start_ts: marks.iter().map(|m| m.1 .0).collect(),
                    keys: marks.into_iter().map(|m| m.0).collect(),
                    ..Default::default()
                };
                self.finish_one(first, req)
            },
        )
        .await
    }

    /// A `Finish` step on `keys`, a request per range made from `template`.
    async fn finish_step(&self, keys: Vec<Vec<u8>>, template: FinishRequest) -> Result<()> {
        self.per_range(
            keys,
            |k| k,
            |first, keys| {
                let req = FinishRequest {
                    keys,
                    ..template.clone()
                };
                self.finish_one(first, req)
            },
        )
        .await
    }

    /// One `Finish` request, to the range holding route key `first`.
    async fn finish_one(&self, first: Vec<u8>, req: FinishRequest) -> Result<()> {
        self.with_retry(&first, Retry::Steps, |ch| {
            let req = req.clone();
            async move { ch.txn().finish(trace::request(req)).await }
        })
        .await
        .map(drop)
    }

    /// Validates the transaction's reads (`reads`: keys, `spans`: scanned
    /// spans, end empty = to the end) at `commit_ts`.
    pub async fn txn_validate(
        &self,
        start_ts: Timestamp,
        commit_ts: Timestamp,
        reads: Vec<Vec<u8>>,
        spans: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<()> {
        let req_for = |reads: Vec<Vec<u8>>, span: Option<ReadSpan>| ValidateRequest {
            start_ts: start_ts.0,
            commit_ts: commit_ts.0,
            reads,
            span,
        };
        self.per_range(
            reads,
            |k| k,
            |first, reads| {
                let req = req_for(reads, None);
                async move {
                    self.with_retry(&first, Retry::Steps, |ch| {
                        let req = req.clone();
                        async move { ch.txn().validate(trace::request(req)).await }
                    })
                    .await
                    .map(drop)
                }
            },
        )
        .await?;
        for (start, end) in spans {
            let mut from = start;
            loop {
                let req = req_for(
                    Vec::new(),
                    Some(ReadSpan {
                        start: from.clone(),
                        end: end.clone(),
                    }),
                );
                let resp = self
                    .with_retry(&route::key(&from), Retry::Idempotent, |ch| {
                        let req = req.clone();
                        async move { ch.txn().validate(trace::request(req)).await }
                    })
                    .await?
                    .into_inner();
                if resp.resume_key.is_empty() {
                    break;
                }
                from = resp.resume_key;
            }
        }
        Ok(())
    }

    /// Keeps the primary lock of the transaction (`primary`, `start_ts`)
    /// alive for `ttl_ms` from its start; `TxnAborted` if it is gone.
    pub async fn txn_heartbeat(
        &self,
        primary: &[u8],
        start_ts: Timestamp,
        ttl_ms: u64,
    ) -> Result<()> {
        let req = HeartbeatRequest {
            primary: primary.to_vec(),
            start_ts: start_ts.0,
            ttl_ms,
        };
        self.with_retry(&route::key(primary), Retry::Steps, |ch| {
            let req = req.clone();
            async move { ch.txn().heartbeat(trace::request(req)).await }
        })
        .await
        .map(drop)
    }

    /// Settles the transaction from its primary (an expired lock is rolled
    /// back; nothing there becomes a rollback) and returns its status.
    pub async fn txn_check(&self, primary: &[u8], start_ts: Timestamp) -> Result<TxnState> {
        self.check_txn_step(primary, start_ts, false).await
    }

    /// Like `txn_check`, settling a commit whose reply was lost: below the
    /// GC horizon an absent transaction fails with `TxnTooOld` (it may
    /// have committed a record since collected) instead of rolling back.
    pub async fn txn_check_lost_reply(
        &self,
        primary: &[u8],
        start_ts: Timestamp,
    ) -> Result<TxnState> {
        self.check_txn_step(primary, start_ts, true).await
    }

    async fn check_txn_step(
        &self,
        primary: &[u8],
        start_ts: Timestamp,
        lost_reply: bool,
    ) -> Result<TxnState> {
        let req = CheckTxnRequest {
            primary: primary.to_vec(),
            start_ts: start_ts.0,
            lost_reply,
        };
        let resp = self
            .with_retry(&route::key(primary), Retry::Steps, |ch| {
                let req = req.clone();
                async move { ch.txn().check_txn(trace::request(req)).await }
            })
            .await?
            .into_inner();
        Ok(resp.into())
    }

    /// The transaction's status from its primary (changes nothing).
    pub async fn txn_status(&self, primary: &[u8], start_ts: Timestamp) -> Result<TxnState> {
        let req = CheckTxnRequest {
            primary: primary.to_vec(),
            start_ts: start_ts.0,
            ..Default::default()
        };
        let resp = self
            .with_retry(&route::key(primary), Retry::Idempotent, |ch| {
                let req = req.clone();
                async move { ch.txn().status(trace::request(req)).await }
            })
            .await?
            .into_inner();
        Ok(resp.into())
    }

    /// Resolves the lock a transaction (`primary`, `start_ts`) holds on
    /// `key`: settles the owner from its primary, then commits or rolls
    /// back the lock. `false`: the owner is alive (wait and try again).
    pub async fn resolve_lock(&self, key: &[u8], primary: &[u8], start_ts: u64) -> Result<bool> {
        let start = Timestamp(start_ts);
        match self.txn_check(primary, start).await? {
            TxnState::Locked { .. } => Ok(false),
            TxnState::Committed { commit_ts } => {
                if key != primary {
                    self.txn_finish(vec![key.to_vec()], start, Some(commit_ts))
                        .await?;
                }
                Ok(true)
            }
            TxnState::RolledBack | TxnState::Unknown => {
                if key != primary {
                    // TxnTooOld: nothing of it is left there (resolved
                    // already, and GC took the record).
                    match self.txn_finish(vec![key.to_vec()], start, None).await {
                        Ok(()) | Err(Error::TxnCommitted { .. }) | Err(Error::TxnTooOld(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(true)
            }
        }
    }
}
