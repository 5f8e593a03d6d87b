//! `Kv/History`, the server's part of a watch: one range's history of a
//! span at an oracle timestamp (`ReadOp::History`). The watch itself — the
//! polling, the merge of ranges' answers into commit order, progress — is
//! the SDK's (`client/watch.rs`), so a watch holds no state on a server
//! and survives splits, merges, leader changes and replica moves by being
//! routed again like any read.
//!
//! Invariants: the read is linearizable at `at` (it registers on the read
//! floor, so no write can later commit at or below `at` unseen); a lock of
//! a transaction that may still commit at or below `at` is never read
//! through: it lowers `final_through`, and a dead owner's lock is resolved
//! here so the next poll moves on.

use tonic::{Request, Response, Status};

use super::convert::status;
use super::kv::{scan_bounds, KvService};
use crate::api::{self, Timestamp, MAX_SCAN_LIMIT};
use crate::error::{Error, Result};
use crate::keys;
use crate::mvcc::{History, TxnError};
use crate::node::Consistency;
use crate::proto::*;
use crate::range::{txn_error, ReadOp, ReadResult};
use crate::security::auth::principal;

/// Events per answer unless the request asks for fewer.
const DEFAULT_HISTORY_LIMIT: usize = 1_000;
/// Locks one answer tries to resolve (dead owners only).
const MAX_RESOLVE: usize = 8;
/// How far past this node's clock `at` may be (the oracle's timestamps
/// are at most the cluster's clock skew ahead).
const MAX_FUTURE_MS: u64 = 10_000;

impl KvService {
    pub(super) async fn serve_history(
        &self,
        request: Request<HistoryRequest>,
    ) -> std::result::Result<Response<HistoryResponse>, Status> {
        let who = principal(&request).map_err(status)?;
        let req = request.into_inner();
        who.check_scan(&req.start, &req.end).map_err(status)?;
        self.history(req).await.map(Response::new).map_err(status)
    }

    async fn history(&self, req: HistoryRequest) -> Result<HistoryResponse> {
        if api::is_system_key(&req.start) {
            return Err(Error::InvalidArgument(
                "watches cover user keys only (not \"_/\")".into(),
            ));
        }
        if req.at == 0 || req.at <= req.since {
            return Err(Error::InvalidArgument(
                "a history read needs at above since".into(),
            ));
        }
        let at = Timestamp(req.at);
        let now = self.versioned.now_ms();
        if at.physical_ms() > now.saturating_add(MAX_FUTURE_MS) {
            return Err(Error::InvalidArgument(format!(
                "at {at} is ahead of this node's clock: take it from the oracle"
            )));
        }
        let (start, end) = scan_bounds(&req.start, &req.end);
        let limit = match req.limit as usize {
            0 => DEFAULT_HISTORY_LIMIT,
            n => n.min(MAX_SCAN_LIMIT),
        };
        let op = ReadOp::History {
            start,
            end,
            limit,
            since: req.since,
            prev: req.prev_value,
        };
        let (mut h, mut resume) = self.read_history(op.clone(), at).await?;
        // Dead owners' locks are settled and the range read again, so a
        // crashed coordinator holds a watch back only until its TTL.
        let mut settled = false;
        for (key, lock) in h.locks.iter().take(MAX_RESOLVE) {
            let e = txn_error(TxnError::Locked {
                key: key.clone(),
                lock: lock.clone(),
            });
            settled |= self.versioned.resolve(&e).await.unwrap_or(false);
        }
        if settled {
            (h, resume) = self.read_history(op, at).await?;
        }
        let final_through = h.held(at).0;
        let ns_end = keys::user_data_bounds().1;
        // Within the range: just after the last key read; past it: the
        // range's end.
        let resume_key = match &h.resume {
            Some(last) => keys::user_key(last).map(|mut k| {
                k.push(0);
                k
            }),
            None => resume
                .filter(|r| *r != ns_end)
                .and_then(|r| keys::user_key(&r)),
        }
        .unwrap_or_default();
        Ok(HistoryResponse {
            events: h
                .events
                .into_iter()
                .filter_map(|e| {
                    let key = keys::user_key(&e.key)?;
                    Some(WatchEvent {
                        key,
                        revision: e.ts.0,
                        delete: e.value.is_none(),
                        value: e.value.unwrap_or_default(),
                        has_prev: e.prev.is_some(),
                        prev_meta: e.prev.as_ref().map(|i| KeyMeta {
                            mod_revision: i.mod_ts.0,
                            create_revision: i.create_ts.0,
                            version: i.version,
                            lease: i.lease,
                        }),
                        lease: e.lease,
                        prev_value: e.prev.map(|i| i.value).unwrap_or_default(),
                        create_revision: e.create_ts.0,
                        version: e.version,
                    })
                })
                .collect(),
            final_through,
            resume_key,
        })
    }

    async fn read_history(&self, op: ReadOp, at: Timestamp) -> Result<(History, Option<Vec<u8>>)> {
        match self
            .store
            .read_at(op, Consistency::Linearizable, at)
            .await?
        {
            ReadResult::History(h, resume) => Ok((h, resume)),
            _ => Err(Error::Internal("unexpected read result".into())),
        }
    }
}
