//! The Txn service: the steps of a transaction coordinated by the SDK
//! (reads at a start timestamp, one-range commits, prewrite, validation,
//! commit/rollback, settling a transaction from its primary). Input is
//! checked before anything is written; keys are user keys on the wire and
//! data keys below. Locks met on the way are resolved (`Versioned::resolving`);
//! a lock whose owner is alive, a newer write, or a rolled-back
//! transaction fails the step with `TxnConflict` (the SDK runs the
//! transaction again).

use tonic::{Request, Response, Status};

use super::convert::status;
use super::kv::{check_key, check_value, check_writable_key, scan_bounds, KvService};
use super::versioned::Commit;
use crate::api::{self, Timestamp, MAX_SCAN_LIMIT, MAX_TXN_BYTES, MAX_TXN_KEYS};
use crate::error::{Error, Result};
use crate::keys;
use crate::metrics;
use crate::mvcc::TxnStatus;
use crate::node::Consistency;
use crate::proto::txn_server::Txn;
use crate::proto::txn_status_response::State;
use crate::proto::*;
use crate::range::{
    CheckTxnCmd, FinishCmd, HeartbeatCmd, KeySpan, Kind, Op, PrewriteCmd, ReadOp, ReadResult,
};
use crate::security::auth::{principal, Principal};

/// Reading every key and span a transaction validates (or commits in 1PC).
fn check_reads(who: &Principal, reads: &[Vec<u8>], spans: &[ReadSpan]) -> Result<()> {
    for k in reads {
        who.check_read_key(k)?;
    }
    for s in spans {
        who.check_scan(&s.start, &s.end)?;
    }
    Ok(())
}

/// Validates a transaction's mutations and turns them into data-key ops.
fn mutation_ops(muts: Vec<Mutation>) -> Result<Vec<Op>> {
    if muts.len() > MAX_TXN_KEYS {
        return Err(Error::InvalidArgument(format!(
            "the transaction writes {} keys; the limit is {MAX_TXN_KEYS}",
            muts.len()
        )));
    }
    let bytes: usize = muts.iter().map(|m| m.key.len() + m.value.len()).sum();
    if bytes > MAX_TXN_BYTES {
        return Err(Error::InvalidArgument(format!(
            "the transaction writes {bytes} bytes; the limit is {MAX_TXN_BYTES}"
        )));
    }
    muts.into_iter()
        .map(|m| {
            check_writable_key(&m.key)?;
            if m.delete {
                Ok(Op::delete(keys::data_key(&m.key)))
            } else {
                check_value(&m.value)?;
                Ok(Op::put_leased(keys::data_key(&m.key), m.value, m.lease))
            }
        })
        .collect()
}

/// A key a transaction reads: a user key (`_/` is not transactional).
fn read_key(key: &[u8]) -> Result<Vec<u8>> {
    check_key(key)?;
    if api::is_system_key(key) {
        return Err(Error::InvalidArgument(
            "transactions read and write user keys only (not \"_/\")".into(),
        ));
    }
    Ok(keys::data_key(key))
}

/// A scanned span in data keys (user keyspace only).
fn read_span(start: &[u8], end: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    if api::is_system_key(start) {
        return Err(Error::InvalidArgument(
            "transactions read and write user keys only (not \"_/\")".into(),
        ));
    }
    Ok(scan_bounds(start, end))
}

/// A key's metadata on the wire.
fn key_meta(item: &crate::mvcc::Item) -> KeyMeta {
    KeyMeta {
        mod_revision: item.mod_ts.0,
        create_revision: item.create_ts.0,
        version: item.version,
        lease: item.lease,
    }
}

fn start_ts(ts: u64) -> Result<Timestamp> {
    if ts == 0 {
        return Err(Error::InvalidArgument(
            "a transaction step needs its start timestamp".into(),
        ));
    }
    Ok(Timestamp(ts))
}

/// A refusal of a transaction step, as the transaction's conflict.
fn conflict(e: Error) -> Error {
    match e {
        Error::WriteConflict { key, committed } => Error::TxnConflict {
            key,
            reason: format!(
                "another transaction wrote it at {} after this one began",
                Timestamp(committed)
            ),
        },
        Error::KeyLocked { key, start_ts, .. } => Error::TxnConflict {
            key,
            reason: format!(
                "locked by the live transaction started at {}",
                Timestamp(start_ts)
            ),
        },
        Error::TxnAborted { key } => Error::TxnConflict {
            key,
            reason: "the transaction was rolled back (its locks expired)".into(),
        },
        e => e,
    }
}

fn status_response(s: Option<TxnStatus>) -> TxnStatusResponse {
    let mut r = TxnStatusResponse::default();
    match s {
        None => r.set_state(State::Unknown),
        Some(TxnStatus::Locked { ttl_ms }) => {
            r.set_state(State::Locked);
            r.ttl_ms = ttl_ms;
        }
        Some(TxnStatus::Committed { commit_ts }) => {
            r.set_state(State::Committed);
            r.commit_ts = commit_ts.0;
        }
        Some(TxnStatus::RolledBack) => r.set_state(State::RolledBack),
    }
    r
}

impl KvService {
    /// Counts a transaction step refused for a conflict.
    fn count<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(Error::TxnConflict { .. } | Error::WriteConflict { .. }) = &r {
            self.store.metrics().txn_conflicts.inc();
        }
        r
    }

    /// A linearizable read of user data at `ts`, locks in the way resolved.
    async fn read_at(&self, op: ReadOp, ts: Timestamp) -> Result<ReadResult> {
        self.versioned
            .resolving(|| {
                self.store
                    .read_at(op.clone(), Consistency::Linearizable, ts)
            })
            .await
    }

    /// A changes scan (`TxnScanRequest::changes_since`): changed pairs, and
    /// the keys deleted, in `deleted`.
    async fn changes(&self, op: ReadOp, ts: Timestamp) -> Result<ScanResponse> {
        let r = self.read_at(op, ts).await?;
        let ReadResult::Changes(changes, resume) = r else {
            return Err(Error::Internal("unexpected read result".into()));
        };
        let mut resp = ScanResponse::default();
        for (k, v) in changes {
            let Some(key) = keys::user_key(&k) else {
                continue;
            };
            match v {
                Some(value) => resp.pairs.push(KeyValue {
                    key,
                    value,
                    meta: None,
                }),
                None => resp.deleted.push(key),
            }
        }
        let ns_end = keys::user_data_bounds().1;
        resp.resume_key = resume
            .filter(|r| *r != ns_end)
            .and_then(|r| keys::user_key(&r))
            .unwrap_or_default();
        Ok(resp)
    }

    /// A snapshot scan answering each key's metadata (`with_meta`).
    async fn scan_items(
        &self,
        start: Vec<u8>,
        end: Vec<u8>,
        limit: usize,
        ts: Timestamp,
    ) -> Result<ScanResponse> {
        let r = self
            .read_at(ReadOp::ScanItems { start, end, limit }, ts)
            .await?;
        let ReadResult::Items(items, resume) = r else {
            return Err(Error::Internal("unexpected read result".into()));
        };
        let ns_end = keys::user_data_bounds().1;
        Ok(ScanResponse {
            pairs: items
                .into_iter()
                .filter_map(|(k, item)| {
                    let key = keys::user_key(&k)?;
                    Some(KeyValue {
                        key,
                        meta: Some(key_meta(&item)),
                        value: item.value,
                    })
                })
                .collect(),
            resume_key: resume
                .filter(|r| *r != ns_end)
                .and_then(|r| keys::user_key(&r))
                .unwrap_or_default(),
            deleted: Vec::new(),
        })
    }

    /// Runs a step that may meet a lock: a dead owner's lock is resolved
    /// and the step repeated; a live owner's fails it as a conflict.
    async fn step(&self, kind: Kind) -> Result<()> {
        for _ in 0..8 {
            match self.store.txn_step(kind.clone()).await {
                Err(e @ Error::KeyLocked { .. }) => {
                    if !self.versioned.resolve(&e).await? {
                        return Err(conflict(e));
                    }
                }
                r => return r.map_err(conflict),
            }
        }
        Err(Error::Unavailable("locks kept reappearing".into()))
    }

    async fn txn_status_of(&self, primary: &[u8], start: Timestamp) -> Result<TxnStatusResponse> {
        let op = ReadOp::TxnStatus {
            primary: keys::data_key(primary),
            start_ts: start.0,
        };
        match self.store.read(op, Consistency::Linearizable).await? {
            ReadResult::Txn(s) => Ok(status_response(s)),
            _ => Err(Error::Internal("unexpected read result".into())),
        }
    }
}

#[tonic::async_trait]
impl Txn for KvService {
    async fn get(&self, request: Request<TxnGetRequest>) -> Result<Response<GetResponse>, Status> {
        let who = principal(&request).map_err(status)?;
        let req = request.into_inner();
        who.check_read_key(&req.key).map_err(status)?;
        let run = async {
            let key = read_key(&req.key)?;
            let ts = start_ts(req.start_ts)?;
            self.versioned.check_age(ts)?;
            let op = if req.with_meta {
                ReadOp::GetItem(key)
            } else {
                ReadOp::Get(key)
            };
            let r = self
                .versioned
                .resolving(|| {
                    self.store
                        .read_at(op.clone(), Consistency::Linearizable, ts)
                })
                .await?;
            match r {
                ReadResult::Value(v) => Ok(GetResponse {
                    found: v.is_some(),
                    value: v.unwrap_or_default(),
                    meta: None,
                }),
                ReadResult::Items(mut items, _) => Ok(match items.pop() {
                    Some((_, item)) => GetResponse {
                        found: true,
                        meta: Some(key_meta(&item)),
                        value: item.value,
                    },
                    None => GetResponse::default(),
                }),
                _ => Err(Error::Internal("unexpected read result".into())),
            }
        };
        run.await.map(Response::new).map_err(status)
    }

    async fn scan(
        &self,
        request: Request<TxnScanRequest>,
    ) -> Result<Response<ScanResponse>, Status> {
        let who = principal(&request).map_err(status)?;
        let req = request.into_inner();
        who.check_scan(&req.start, &req.end).map_err(status)?;
        let run = async {
            let ts = start_ts(req.start_ts)?;
            // A snapshot read is bounded by the GC horizon alone.
            if !req.snapshot {
                self.versioned.check_age(ts)?;
            }
            let (start, end) = read_span(&req.start, &req.end)?;
            let limit = match req.limit as usize {
                0 => api::DEFAULT_SCAN_LIMIT,
                n => n.min(MAX_SCAN_LIMIT),
            };
            if req.changes_since != 0 {
                if !req.snapshot || req.changes_since >= ts.0 {
                    return Err(Error::InvalidArgument(
                        "changes_since needs a snapshot read at a later timestamp".into(),
                    ));
                }
                let op = ReadOp::Changes {
                    start,
                    end,
                    limit,
                    since: req.changes_since,
                };
                return self.changes(op, ts).await;
            }
            if req.with_meta {
                return self.scan_items(start, end, limit, ts).await;
            }
            let op = ReadOp::Scan {
                start,
                end,
                limit,
                reverse: false,
            };
            let r = self.read_at(op, ts).await?;
            let ReadResult::Pairs(pairs, resume) = r else {
                return Err(Error::Internal("unexpected read result".into()));
            };
            let ns_end = keys::user_data_bounds().1;
            Ok(ScanResponse {
                pairs: pairs
                    .into_iter()
                    .filter_map(|(k, value)| {
                        keys::user_key(&k).map(|key| KeyValue {
                            key,
                            value,
                            meta: None,
                        })
                    })
                    .collect(),
                resume_key: resume
                    .filter(|r| *r != ns_end)
                    .and_then(|r| keys::user_key(&r))
                    .unwrap_or_default(),
                deleted: Vec::new(),
            })
        };
        self.count(run.await).map(Response::new).map_err(status)
    }

    async fn commit_one_pc(
        &self,
        request: Request<OnePcRequest>,
    ) -> Result<Response<OnePcResponse>, Status> {
        let _permit = self.admit_write(prost::Message::encoded_len(request.get_ref()))?;
        let who = principal(&request).map_err(status)?;
        let req = request.into_inner();
        who.check_write(req.mutations.iter().map(|m| m.key.as_slice()))
            .and_then(|_| check_reads(&who, &req.reads, &req.spans))
            .map_err(status)?;
        let run = async {
            let start = start_ts(req.start_ts)?;
            let ops = mutation_ops(req.mutations)?;
            if ops.is_empty() {
                return Err(Error::InvalidArgument("a commit with no writes".into()));
            }
            let reads = req
                .reads
                .iter()
                .map(|k| read_key(k))
                .collect::<Result<Vec<_>>>()?;
            let spans = req
                .spans
                .iter()
                .map(|s| read_span(&s.start, &s.end).map(|(start, end)| KeySpan { start, end }))
                .collect::<Result<Vec<_>>>()?;
            self.versioned.check_age(start)?;
            let commit_ts = self
                .versioned
                .commit(Commit {
                    ops,
                    start: Some(start),
                    reads,
                    spans,
                })
                .await?;
            Ok(OnePcResponse {
                commit_ts: commit_ts.0,
            })
        };
        let r = self.count(run.await);
        if r.is_ok() {
            self.store.metrics().txn_commit(metrics::ONE_PHASE);
        }
        r.map(Response::new).map_err(status)
    }

    async fn prewrite(
        &self,
        request: Request<PrewriteRequest>,
    ) -> Result<Response<PrewriteResponse>, Status> {
        let _permit = self.admit_write(prost::Message::encoded_len(request.get_ref()))?;
        let who = principal(&request).map_err(status)?;
        let req = request.into_inner();
        who.check_write(req.mutations.iter().map(|m| m.key.as_slice()))
            .map_err(status)?;
        let run = async {
            let start = start_ts(req.start_ts)?;
            check_writable_key(&req.primary)?;
            let ops = mutation_ops(req.mutations)?;
            self.versioned.check_age(start)?;
            self.step(Kind::Prewrite(PrewriteCmd {
                ops,
                primary: keys::data_key(&req.primary),
                start_ts: start.0,
                ttl_ms: req.ttl_ms,
            }))
            .await?;
            Ok(PrewriteResponse {})
        };
        self.count(run.await).map(Response::new).map_err(status)
    }

    async fn validate(
        &self,
        request: Request<ValidateRequest>,
    ) -> Result<Response<ValidateResponse>, Status> {
        let who = principal(&request).map_err(status)?;
        let req = request.into_inner();
        check_reads(&who, &req.reads, req.span.as_slice()).map_err(status)?;
        let run = async {
            let start = start_ts(req.start_ts)?;
            if req.commit_ts <= start.0 {
                return Err(Error::InvalidArgument(
                    "the commit timestamp must be above the start".into(),
                ));
            }
            let reads = req
                .reads
                .iter()
                .map(|k| read_key(k))
                .collect::<Result<Vec<_>>>()?;
            let span = match &req.span {
                Some(s) => Some(read_span(&s.start, &s.end)?),
                None => None,
            };
            let op = ReadOp::Validate {
                reads,
                span,
                start_ts: start.0,
            };
            let commit = Timestamp(req.commit_ts);
            let mut result = None;
            for _ in 0..8 {
                match self
                    .store
                    .read_at(op.clone(), Consistency::Linearizable, commit)
                    .await
                {
                    Err(e @ Error::KeyLocked { .. }) if self.versioned.resolve(&e).await? => {}
                    r => {
                        result = Some(r.map_err(conflict)?);
                        break;
                    }
                }
            }
            let Some(ReadResult::Pairs(_, resume)) = result else {
                return Err(Error::Unavailable("locks kept reappearing".into()));
            };
            let ns_end = keys::user_data_bounds().1;
            Ok(ValidateResponse {
                resume_key: resume
                    .filter(|r| *r != ns_end)
                    .and_then(|r| keys::user_key(&r))
                    .unwrap_or_default(),
            })
        };
        self.count(run.await).map(Response::new).map_err(status)
    }

    async fn finish(
        &self,
        request: Request<FinishRequest>,
    ) -> Result<Response<FinishResponse>, Status> {
        let who = principal(&request).map_err(status)?;
        let req = request.into_inner();
        who.check_write(req.keys.iter().map(|k| k.as_slice()))
            .map_err(status)?;
        let (commit_ts, primary_of_many, secondaries_done) =
            (req.commit_ts, req.primary_of_many, req.secondaries_done);
        let run = async {
            let start = start_ts(req.start_ts)?;
            if req.commit_ts != 0 && req.commit_ts <= start.0 {
                return Err(Error::InvalidArgument(
                    "the commit timestamp must be above the start".into(),
                ));
            }
            let many = &req.done_start_ts;
            if !many.is_empty()
                && (!req.secondaries_done || many.len() != req.keys.len() || many.contains(&0))
            {
                return Err(Error::InvalidArgument(
                    "done_start_ts needs secondaries_done and one start timestamp per key".into(),
                ));
            }
            let keys = req
                .keys
                .iter()
                .map(|k| {
                    check_writable_key(k)?;
                    Ok(keys::data_key(k))
                })
                .collect::<Result<Vec<_>>>()?;
            self.store
                .txn_step(Kind::Finish(FinishCmd {
                    keys,
                    start_ts: start.0,
                    commit_ts: req.commit_ts,
                    primary_of_many: req.primary_of_many,
                    secondaries_done: req.secondaries_done,
                    done_starts: req.done_start_ts,
                }))
                .await?;
            Ok(FinishResponse {})
        };
        let r = run.await;
        if r.is_ok() {
            let m = self.store.metrics();
            if commit_ts != 0 && primary_of_many {
                m.txn_commit(metrics::TWO_PHASE);
            } else if commit_ts == 0 && !secondaries_done {
                m.txn_aborts.inc();
            }
        }
        r.map(Response::new).map_err(status)
    }

    async fn check_txn(
        &self,
        request: Request<CheckTxnRequest>,
    ) -> Result<Response<TxnStatusResponse>, Status> {
        let who = principal(&request).map_err(status)?;
        let req = request.into_inner();
        who.check_read_key(&req.primary).map_err(status)?;
        let run = async {
            let start = start_ts(req.start_ts)?;
            check_writable_key(&req.primary)?;
            let now = self.versioned.timestamp().await?;
            self.store
                .txn_step(Kind::CheckTxn(CheckTxnCmd {
                    primary: keys::data_key(&req.primary),
                    start_ts: start.0,
                    now_ts: now.0,
                    lost_reply: req.lost_reply,
                }))
                .await?;
            self.txn_status_of(&req.primary, start).await
        };
        run.await.map(Response::new).map_err(status)
    }

    async fn status(
        &self,
        request: Request<CheckTxnRequest>,
    ) -> Result<Response<TxnStatusResponse>, Status> {
        let who = principal(&request).map_err(status)?;
        let req = request.into_inner();
        who.check_read_key(&req.primary).map_err(status)?;
        let run = async {
            let start = start_ts(req.start_ts)?;
            check_writable_key(&req.primary)?;
            self.txn_status_of(&req.primary, start).await
        };
        run.await.map(Response::new).map_err(status)
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let who = principal(&request).map_err(status)?;
        let req = request.into_inner();
        who.check_write([req.primary.as_slice()]).map_err(status)?;
        let run = async {
            let start = start_ts(req.start_ts)?;
            check_writable_key(&req.primary)?;
            self.store
                .txn_step(Kind::Heartbeat(HeartbeatCmd {
                    primary: keys::data_key(&req.primary),
                    start_ts: start.0,
                    ttl_ms: req.ttl_ms,
                }))
                .await?;
            Ok(HeartbeatResponse {})
        };
        run.await.map(Response::new).map_err(status)
    }
}
