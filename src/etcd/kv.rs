//! etcd's KV service over RangeDB transactions: Range, Put, DeleteRange,
//! Txn (compares on value, version, create/mod revision and lease, nested
//! success/failure ops) and Compact.
//!
//! Every write request is one RangeDB transaction (`Client::transact`:
//! conflicts are run again, so an etcd client never sees one), and its
//! response header carries the transaction's commit timestamp as the
//! revision; a read-only request reads a snapshot at a fresh oracle
//! timestamp (or at the revision asked for) and answers that. A Txn's
//! compares read inside the transaction, so the chosen branch and its ops
//! commit atomically, strictly serializably.

use std::future::Future;
use std::pin::Pin;

use tonic::{Request, Response, Status};

use super::{etcd_status, Gateway};
use crate::api::Timestamp;
use crate::client::{Client, Transaction, TxnOptions};
use crate::error::{Error, Result};
use crate::etcdpb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::etcdpb::etcdserverpb::kv_server::Kv;
use crate::etcdpb::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::etcdpb::etcdserverpb::request_op::Request as Op;
use crate::etcdpb::etcdserverpb::response_op::Response as OpResponse;
use crate::etcdpb::etcdserverpb::*;
use crate::etcdpb::mvccpb;
use crate::proto::KeyValue;

/// Keys one Range or DeleteRange reads at most (etcd has no limit; a
/// bigger span fails with a clear error rather than a partial answer).
pub const MAX_RANGE_KEYS: u32 = 100_000;

/// etcd's key/range_end convention as a span `[start, end)` of RangeDB
/// keys (`end` empty: to the end of the keyspace), and whether it is one
/// key (the Range, DeleteRange, compare and watch convention alike).
pub(super) fn span(key: &[u8], range_end: &[u8]) -> (Vec<u8>, Vec<u8>, bool) {
    match range_end {
        [] => {
            let mut end = key.to_vec();
            end.push(0);
            (key.to_vec(), end, true)
        }
        // "\0": every key at or after `key` ("\0" and "\0": every key).
        [0] => {
            let start = if key == [0] { Vec::new() } else { key.to_vec() };
            (start, Vec::new(), false)
        }
        end => (key.to_vec(), end.to_vec(), false),
    }
}

/// A RangeDB pair with metadata as etcd's KeyValue.
fn to_etcd(kv: KeyValue, keys_only: bool) -> mvccpb::KeyValue {
    let meta = kv.meta.unwrap_or_default();
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: meta.create_revision as i64,
        mod_revision: meta.mod_revision as i64,
        version: meta.version as i64,
        value: if keys_only { Vec::new() } else { kv.value },
        lease: meta.lease as i64,
    }
}

fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidArgument(
            "etcdserver: key is not provided".into(),
        ));
    }
    if crate::api::is_system_key(key) {
        return Err(Error::InvalidArgument(
            "keys under \"_/\" are RangeDB's cluster metadata".into(),
        ));
    }
    Ok(())
}

/// The keys of a span as the transaction sees them (its own writes too).
async fn read_span(
    txn: &mut Transaction<'_>,
    key: &[u8],
    range_end: &[u8],
) -> Result<Vec<KeyValue>> {
    let (start, end, one) = span(key, range_end);
    if one {
        return Ok(match txn.get_meta(key).await? {
            Some((value, meta)) => vec![KeyValue {
                key: key.to_vec(),
                value,
                meta,
            }],
            None => Vec::new(),
        });
    }
    let kvs = txn.scan_meta(&start, &end, MAX_RANGE_KEYS + 1).await?;
    if kvs.len() > MAX_RANGE_KEYS as usize {
        return Err(Error::InvalidArgument(format!(
            "the range holds more than {MAX_RANGE_KEYS} keys: narrow it"
        )));
    }
    Ok(kvs)
}

/// Range, inside a transaction.
async fn range(txn: &mut Transaction<'_>, req: &RangeRequest) -> Result<RangeResponse> {
    if req.key.is_empty() {
        return Err(Error::InvalidArgument(
            "etcdserver: key is not provided".into(),
        ));
    }
    let mut kvs: Vec<KeyValue> = read_span(txn, &req.key, &req.range_end)
        .await?
        .into_iter()
        .filter(|kv| {
            let m = kv.meta.unwrap_or_default();
            let (md, cr) = (m.mod_revision as i64, m.create_revision as i64);
            (req.min_mod_revision == 0 || md >= req.min_mod_revision)
                && (req.max_mod_revision == 0 || md <= req.max_mod_revision)
                && (req.min_create_revision == 0 || cr >= req.min_create_revision)
                && (req.max_create_revision == 0 || cr <= req.max_create_revision)
        })
        .collect();
    let order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
    let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
    // etcd: a target other than the key with no order means ascending.
    let order = match (order, target) {
        (SortOrder::None, SortTarget::Key) => SortOrder::None,
        (SortOrder::None, _) => SortOrder::Ascend,
        (o, _) => o,
    };
    if order != SortOrder::None {
        let meta = |kv: &KeyValue| kv.meta.unwrap_or_default();
        kvs.sort_by(|a, b| match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => meta(a).version.cmp(&meta(b).version),
            SortTarget::Create => meta(a).create_revision.cmp(&meta(b).create_revision),
            SortTarget::Mod => meta(a).mod_revision.cmp(&meta(b).mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        });
        if order == SortOrder::Descend {
            kvs.reverse();
        }
    }
    let count = kvs.len() as i64;
    let mut more = false;
    if req.limit > 0 && kvs.len() > req.limit as usize {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    Ok(RangeResponse {
        header: None,
        kvs: if req.count_only {
            Vec::new()
        } else {
            kvs.into_iter()
                .map(|kv| to_etcd(kv, req.keys_only))
                .collect()
        },
        more,
        count,
    })
}

/// Put, inside a transaction (`client`: to attach a leased key first).
async fn put(txn: &mut Transaction<'_>, client: &Client, req: &PutRequest) -> Result<PutResponse> {
    check_key(&req.key)?;
    if req.lease < 0 {
        return Err(Error::NotFound("lease".into()));
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(Error::InvalidArgument(
            "etcdserver: lease is provided when ignore_lease is set".into(),
        ));
    }
    let prev = if req.prev_kv || req.ignore_value || req.ignore_lease {
        read_span(txn, &req.key, &[]).await?.pop()
    } else {
        None
    };
    let value = if req.ignore_value {
        match &prev {
            Some(kv) => kv.value.clone(),
            None => return Err(Error::InvalidArgument("etcdserver: key not found".into())),
        }
    } else {
        req.value.clone()
    };
    let lease = if req.ignore_lease {
        prev.as_ref()
            .and_then(|kv| kv.meta.as_ref())
            .map_or(0, |m| m.lease)
    } else {
        req.lease as u64
    };
    if lease != 0 {
        client.lease_attach(lease, vec![req.key.clone()]).await?;
    }
    txn.put_leased(&req.key, &value, lease)?;
    Ok(PutResponse {
        header: None,
        prev_kv: if req.prev_kv {
            prev.map(|kv| to_etcd(kv, false))
        } else {
            None
        },
    })
}

/// DeleteRange, inside a transaction.
async fn delete_range(
    txn: &mut Transaction<'_>,
    req: &DeleteRangeRequest,
) -> Result<DeleteRangeResponse> {
    if req.key.is_empty() {
        return Err(Error::InvalidArgument(
            "etcdserver: key is not provided".into(),
        ));
    }
    let kvs = read_span(txn, &req.key, &req.range_end).await?;
    for kv in &kvs {
        check_key(&kv.key)?;
        txn.delete(&kv.key)?;
    }
    Ok(DeleteRangeResponse {
        header: None,
        deleted: kvs.len() as i64,
        prev_kvs: if req.prev_kv {
            kvs.into_iter().map(|kv| to_etcd(kv, false)).collect()
        } else {
            Vec::new()
        },
    })
}

/// Whether one compare holds, read inside the transaction.
async fn compare(txn: &mut Transaction<'_>, c: &Compare) -> Result<bool> {
    let target = CompareTarget::try_from(c.target)
        .map_err(|_| Error::InvalidArgument(format!("unknown compare target {}", c.target)))?;
    let result = CompareResult::try_from(c.result)
        .map_err(|_| Error::InvalidArgument(format!("unknown compare result {}", c.result)))?;
    let kvs = read_span(txn, &c.key, &c.range_end).await?;
    let holds = |ord: std::cmp::Ordering| match result {
        CompareResult::Equal => ord.is_eq(),
        CompareResult::Greater => ord.is_gt(),
        CompareResult::Less => ord.is_lt(),
        CompareResult::NotEqual => !ord.is_eq(),
    };
    let one = |kv: Option<&KeyValue>| -> bool {
        let meta = kv.and_then(|kv| kv.meta).unwrap_or_default();
        match (&c.target_union, target) {
            (Some(TargetUnion::Value(v)), CompareTarget::Value) => {
                kv.is_some_and(|kv| holds(kv.value.as_slice().cmp(v.as_slice())))
            }
            (Some(TargetUnion::Version(v)), CompareTarget::Version) => {
                holds((meta.version as i64).cmp(v))
            }
            (Some(TargetUnion::CreateRevision(v)), CompareTarget::Create) => {
                holds((meta.create_revision as i64).cmp(v))
            }
            (Some(TargetUnion::ModRevision(v)), CompareTarget::Mod) => {
                holds((meta.mod_revision as i64).cmp(v))
            }
            (Some(TargetUnion::Lease(v)), CompareTarget::Lease) => {
                holds((meta.lease as i64).cmp(v))
            }
            // An unset value compares as etcd's zero values.
            (None, CompareTarget::Value) => {
                kv.is_some_and(|kv| holds(kv.value.as_slice().cmp(&[])))
            }
            (None, _) => holds(0i64.cmp(&0)),
            _ => false,
        }
    };
    if kvs.is_empty() {
        // etcd: a value compare on a missing key fails; the rest compare
        // against zero.
        return Ok(target != CompareTarget::Value && one(None));
    }
    Ok(kvs.iter().all(|kv| one(Some(kv))))
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// Txn, inside a transaction (nested Txns recurse).
fn txn_ops<'a, 't>(
    txn: &'a mut Transaction<'t>,
    client: &'a Client,
    req: &'a TxnRequest,
) -> Boxed<'a, TxnResponse>
where
    't: 'a,
{
    Box::pin(async move {
        let mut succeeded = true;
        for c in &req.compare {
            if !compare(txn, c).await? {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let r = match &op.request {
                Some(Op::RequestRange(r)) => OpResponse::ResponseRange(range(txn, r).await?),
                Some(Op::RequestPut(r)) => OpResponse::ResponsePut(put(txn, client, r).await?),
                Some(Op::RequestDeleteRange(r)) => {
                    OpResponse::ResponseDeleteRange(delete_range(txn, r).await?)
                }
                Some(Op::RequestTxn(r)) => OpResponse::ResponseTxn(txn_ops(txn, client, r).await?),
                None => return Err(Error::InvalidArgument("an empty txn op".into())),
            };
            responses.push(ResponseOp { response: Some(r) });
        }
        Ok(TxnResponse {
            header: None,
            succeeded,
            responses,
        })
    })
}

/// Every (lease, key) a Txn's puts (either branch, nested too) attach.
fn leased_puts(req: &TxnRequest) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    for op in req.success.iter().chain(&req.failure) {
        match &op.request {
            Some(Op::RequestPut(p)) if p.lease > 0 => out.push((p.lease as u64, p.key.clone())),
            Some(Op::RequestTxn(t)) => out.extend(leased_puts(t)),
            _ => {}
        }
    }
    out
}

/// Puts the header on every nested response.
fn stamp_txn(g: &Gateway, r: &mut TxnResponse, rev: Timestamp) {
    r.header = Some(g.header(rev));
    for op in &mut r.responses {
        match &mut op.response {
            Some(OpResponse::ResponseRange(x)) => x.header = Some(g.header(rev)),
            Some(OpResponse::ResponsePut(x)) => x.header = Some(g.header(rev)),
            Some(OpResponse::ResponseDeleteRange(x)) => x.header = Some(g.header(rev)),
            Some(OpResponse::ResponseTxn(x)) => stamp_txn(g, x, rev),
            None => {}
        }
    }
}

impl Gateway {
    /// After a commit that attached keys to leases: fails (having deleted
    /// them) if a lease ended meanwhile (`Client::lease_recheck`).
    async fn recheck(&self, leased: Vec<(u64, Vec<u8>)>) -> std::result::Result<(), Status> {
        for (lease, key) in leased {
            self.client
                .lease_recheck(lease, &[key])
                .await
                .map_err(super::lease::lease_status)?;
        }
        Ok(())
    }

    /// Runs `f` as one transaction (conflicts run it again); its answer
    /// and the revision it took effect at (the commit timestamp, or the
    /// snapshot's for a transaction that wrote nothing).
    async fn in_txn<T, F>(&self, f: F) -> Result<(T, Timestamp)>
    where
        T: Send,
        F: for<'a, 't> Fn(&'a mut Transaction<'t>) -> Boxed<'a, T>,
    {
        self.client
            .transact(&TxnOptions::default(), |txn| f(txn))
            .await
    }
}

#[tonic::async_trait]
impl Kv for Gateway {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> std::result::Result<Response<RangeResponse>, Status> {
        let req = request.into_inner();
        if req.revision > 0 {
            let now = self.client.timestamps(1).await.map_err(etcd_status)?;
            if req.revision as u64 > now.0 {
                return Err(Status::out_of_range(
                    "etcdserver: mvcc: required revision is a future revision",
                ));
            }
        }
        let run = async {
            // A read-only snapshot: at the revision asked for, or now.
            let mut txn = if req.revision > 0 {
                self.client.resume(
                    crate::client::TxnRecord {
                        start_ts: req.revision as u64,
                        ..Default::default()
                    },
                    std::time::Duration::ZERO,
                )
            } else {
                self.client.begin().await?
            };
            let at = txn.start_ts();
            let mut resp = range(&mut txn, &req).await?;
            resp.header = Some(self.header(at));
            Ok(resp)
        };
        run.await.map(Response::new).map_err(etcd_status)
    }

    async fn put(
        &self,
        request: Request<PutRequest>,
    ) -> std::result::Result<Response<PutResponse>, Status> {
        let req = std::sync::Arc::new(request.into_inner());
        let client = self.client.clone();
        let (mut resp, rev) = {
            let req = req.clone();
            self.in_txn(move |txn| {
                let (req, client) = (req.clone(), client.clone());
                Box::pin(async move { put(txn, &client, &req).await })
            })
            .await
            .map_err(super::lease::lease_status)?
        };
        if req.lease > 0 {
            self.recheck(vec![(req.lease as u64, req.key.clone())])
                .await?;
        }
        resp.header = Some(self.header(rev));
        Ok(Response::new(resp))
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> std::result::Result<Response<DeleteRangeResponse>, Status> {
        let req = std::sync::Arc::new(request.into_inner());
        let (mut resp, rev) = self
            .in_txn(move |txn| {
                let req = req.clone();
                Box::pin(async move { delete_range(txn, &req).await })
            })
            .await
            .map_err(etcd_status)?;
        resp.header = Some(self.header(rev));
        Ok(Response::new(resp))
    }

    async fn txn(
        &self,
        request: Request<TxnRequest>,
    ) -> std::result::Result<Response<TxnResponse>, Status> {
        let req = std::sync::Arc::new(request.into_inner());
        let client = self.client.clone();
        let (mut resp, rev) = {
            let req = req.clone();
            self.in_txn(move |txn| {
                let (req, client) = (req.clone(), client.clone());
                Box::pin(async move { txn_ops(txn, &client, &req).await })
            })
            .await
            .map_err(super::lease::lease_status)?
        };
        self.recheck(leased_puts(&req)).await?;
        stamp_txn(self, &mut resp, rev);
        Ok(Response::new(resp))
    }

    /// Compaction is RangeDB's own (MVCC GC behind `gc_ttl`): a compact
    /// request is answered, and changes nothing.
    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> std::result::Result<Response<CompactionResponse>, Status> {
        let req = request.into_inner();
        let now = self.client.timestamps(1).await.map_err(etcd_status)?;
        if req.revision as u64 > now.0 {
            return Err(Status::out_of_range(
                "etcdserver: mvcc: required revision is a future revision",
            ));
        }
        Ok(Response::new(CompactionResponse {
            header: Some(self.header(now)),
        }))
    }
}
