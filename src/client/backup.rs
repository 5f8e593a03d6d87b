//! What backups need of the SDK: snapshot and changes scans at a fixed
//! timestamp, a GC pin held as a renewable lease, and the record of a
//! finished backup (`_/backups/<id>`).

use std::time::Duration;

use super::{Client, Retry};
use crate::api::{meta, route, Timestamp, MAX_ADMIN_MESSAGE_BYTES};
use crate::error::Result;
use crate::proto::*;
use crate::trace_context as trace;

/// A key changed since an earlier timestamp: its value, or `None` when it
/// was deleted.
pub type Change = (Vec<u8>, Option<Vec<u8>>);

impl Client {
    /// One page of a snapshot read of user keys in `[start, end)` ("" =
    /// unbounded) at `ts`: at most `limit` pairs, and where the next page
    /// starts (`None`: the span is done). `changes_since`: only keys written
    /// after it, deletions included (`None` values).
    pub async fn snapshot_page(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u32,
        ts: Timestamp,
        changes_since: Option<Timestamp>,
    ) -> Result<(Vec<Change>, Option<Vec<u8>>)> {
        let mut from = start.to_vec();
        let mut out: Vec<Change> = Vec::new();
        loop {
            let req = TxnScanRequest {
                start: from.clone(),
                end: end.to_vec(),
                limit: limit.saturating_sub(out.len() as u32),
                reverse: false,
                start_ts: ts.0,
                snapshot: true,
                changes_since: changes_since.map_or(0, |t| t.0),
                with_meta: false,
            };
            let resp = self
                .with_retry(&route::key(&from), Retry::Idempotent, |ch| {
                    let req = req.clone();
                    async move {
                        ch.txn()
                            .max_decoding_message_size(MAX_ADMIN_MESSAGE_BYTES)
                            .scan(trace::request(req))
                            .await
                    }
                })
                .await?
                .into_inner();
            let mut page: Vec<Change> = resp
                .pairs
                .into_iter()
                .map(|kv| (kv.key, Some(kv.value)))
                .chain(resp.deleted.into_iter().map(|k| (k, None)))
                .collect();
            page.sort_by(|a, b| a.0.cmp(&b.0));
            out.extend(page);
            if out.len() as u32 >= limit {
                let mut next = out.last().map(|(k, _)| k.clone()).unwrap_or_default();
                next.push(0);
                return Ok((out, Some(next)));
            }
            if resp.resume_key.is_empty() {
                return Ok((out, None));
            }
            from = resp.resume_key;
        }
    }

    /// Pins `ts` against MVCC GC as a lease of `lease` from now (renew it
    /// by calling again; `release_pin` ends it).
    pub async fn pin_lease(&self, id: &str, ts: Timestamp, lease: Duration) -> Result<()> {
        let lease_ms = lease.as_millis().max(1) as u64;
        self.pin_step(id, ts.0, false, lease_ms).await
    }

    /// Records a finished backup (`record`: its JSON summary).
    pub async fn record_backup(&self, id: &str, record: Vec<u8>) -> Result<()> {
        let req = RecordBackupRequest {
            id: id.to_string(),
            record,
        };
        self.with_retry(
            &route::key(meta::backup_key(id).as_bytes()),
            Retry::Idempotent,
            |ch| {
                let req = req.clone();
                async move { ch.admin().record_backup(trace::request(req)).await }
            },
        )
        .await
        .map(drop)
    }
}
