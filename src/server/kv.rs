//! The Kv service: validate input (nothing is written for bad input),
//! translate user keys into the data keyspace, hand requests to the Store,
//! and map errors to statuses (spans as route keys).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tonic::{Request, Response, Status};

use super::convert::status;
use super::tso::TsoService;
use super::versioned::Versioned;
use crate::api::{
    self, DEFAULT_SCAN_LIMIT, MAX_BATCH_BYTES, MAX_BATCH_PAIRS, MAX_KEY_BYTES, MAX_SCAN_LIMIT,
    MAX_VALUE_BYTES,
};
use crate::error::{Error, Result};
use crate::keys;
use crate::node::{Consistency, StoreHandle};
use crate::proto::kv_server::Kv;
use crate::proto::*;
use crate::range::{Op, ReadOp, ReadResult};
use crate::security::auth::principal;

/// `Kv/Locate` answers at most this many ranges.
const MAX_LOCATE: usize = 10_000;

/// What a node says about itself in its status.
pub struct NodeInfo {
    pub node_id: u64,
    pub cluster_id: String,
    pub peer_address: String,
    pub client_address: String,
    /// How long `rangedb admin node drain` may take.
    pub drain_limit: std::time::Duration,
}

#[derive(Clone)]
pub struct KvService {
    pub(super) store: StoreHandle,
    pub(super) info: Arc<NodeInfo>,
    /// The timestamp oracle (it answers only while this node leads the
    /// system range).
    pub(super) tso: Arc<TsoService>,
    /// User data through MVCC.
    pub(super) versioned: Versioned,
    /// The byte budget of client requests in flight (`admission.rs`).
    pub(super) admission: super::admission::Admission,
}

impl KvService {
    pub fn new(
        store: StoreHandle,
        info: Arc<NodeInfo>,
        tso: Arc<TsoService>,
        versioned: Versioned,
        disk: super::admission::DiskRoom,
    ) -> Self {
        KvService {
            store,
            info,
            tso,
            versioned,
            admission: super::admission::Admission::default().with_disk(disk),
        }
    }

    /// Admits a client request of `bytes` encoded bytes (`admission.rs`).
    pub(super) fn admit(&self, bytes: usize) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        self.admission.admit(bytes).map_err(status)
    }

    /// Admits a client write (refused while the disk is short).
    pub(super) fn admit_write(
        &self,
        bytes: usize,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        self.admission.admit_write(bytes).map_err(status)
    }
}

/// Pairs per streamed Scan message.
const SCAN_CHUNK_PAIRS: usize = 256;

const RESERVED: &str =
    "keys under \"_/\" are reserved for cluster metadata and cannot be written through the \
     Kv API; read them with `rangedb admin meta get|list` or `rangedb admin config get`";

pub(super) fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidArgument("key must not be empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::InvalidArgument(format!(
            "key is {} bytes; the limit is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

pub(super) fn check_writable_key(key: &[u8]) -> Result<()> {
    check_key(key)?;
    if api::is_system_key(key) {
        return Err(Error::InvalidArgument(RESERVED.into()));
    }
    Ok(())
}

pub(super) fn check_value(value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(Error::InvalidArgument(format!(
            "value is {} bytes; the limit is {MAX_VALUE_BYTES}",
            value.len()
        )));
    }
    Ok(())
}

fn consistency(c: i32) -> Result<Consistency> {
    match ReadConsistency::try_from(c) {
        Ok(ReadConsistency::Linearizable) => Ok(Consistency::Linearizable),
        Ok(ReadConsistency::Local) => Ok(Consistency::Local),
        Err(_) => Err(Error::InvalidArgument(format!(
            "unknown read consistency {c}"
        ))),
    }
}

/// Validates a BatchPut and turns it into ops; nothing is written on error.
pub fn batch_ops(pairs: Vec<KeyValue>) -> Result<Vec<Op>> {
    if pairs.is_empty() {
        return Err(Error::InvalidArgument("batch is empty".into()));
    }
    if pairs.len() > MAX_BATCH_PAIRS {
        return Err(Error::InvalidArgument(format!(
            "batch has {} pairs; the limit is {MAX_BATCH_PAIRS}",
            pairs.len()
        )));
    }
    let total: usize = pairs.iter().map(|p| p.key.len() + p.value.len()).sum();
    if total > MAX_BATCH_BYTES {
        return Err(Error::InvalidArgument(format!(
            "batch is {total} bytes; the limit is {MAX_BATCH_BYTES}"
        )));
    }
    let mut ops = Vec::with_capacity(pairs.len());
    for (i, p) in pairs.into_iter().enumerate() {
        check_writable_key(&p.key)
            .and_then(|_| check_value(&p.value))
            .map_err(|e| {
                Error::InvalidArgument(format!(
                    "pair {}: {}",
                    i + 1,
                    e.to_string().trim_start_matches("invalid argument: ")
                ))
            })?;
        ops.push(Op::put(keys::data_key(&p.key), p.value));
    }
    Ok(ops)
}

/// The internal scan bounds for a user scan: the system namespace when
/// `start` is under `_/`, the user keyspace otherwise.
pub fn scan_bounds(start: &[u8], end: &[u8]) -> (Vec<u8>, Vec<u8>) {
    if api::is_system_key(start) {
        let (_, sys_end) = keys::system_data_bounds();
        let e = if end.is_empty() {
            sys_end.clone()
        } else {
            keys::data_key(end).min(sys_end)
        };
        (keys::data_key(start), e)
    } else {
        let (u0, u1) = keys::user_data_bounds();
        let s = if start.is_empty() {
            u0
        } else {
            keys::user_data_key(start)
        };
        let e = if end.is_empty() {
            u1
        } else {
            keys::user_data_key(end)
        };
        (s, e)
    }
}

type ScanStream = Pin<Box<dyn Stream<Item = Result<ScanResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let who = principal(&request).map_err(status)?;
        let req = request.into_inner();
        who.check_read_key(&req.key).map_err(status)?;
        let _permit = self.admit(req.key.len())?;
        check_key(&req.key).map_err(status)?;
        let c = consistency(req.consistency).map_err(status)?;
        let key = keys::data_key(&req.key);
        match self
            .versioned
            .resolving(|| self.store.read(ReadOp::Get(key.clone()), c))
            .await
            .map_err(status)?
        {
            ReadResult::Value(Some(value)) => Ok(Response::new(GetResponse {
                found: true,
                value,
                meta: None,
            })),
            ReadResult::Value(None) => Ok(Response::new(GetResponse {
                found: false,
                value: Vec::new(),
                meta: None,
            })),
            ReadResult::Pairs(..)
            | ReadResult::Txn(_)
            | ReadResult::Term(_)
            | ReadResult::Changes(..)
            | ReadResult::History(..)
            | ReadResult::Items(..) => Err(Status::internal("unexpected read result")),
        }
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let who = principal(&request).map_err(status)?;
        let req = request.into_inner();
        who.check_write([req.key.as_slice()]).map_err(status)?;
        let _permit = self.admit_write(req.key.len() + req.value.len())?;
        check_writable_key(&req.key)
            .and_then(|_| check_value(&req.value))
            .map_err(status)?;
        self.versioned
            .write(vec![Op::put_leased(
                keys::data_key(&req.key),
                req.value,
                req.lease,
            )])
            .await
            .map_err(status)?;
        Ok(Response::new(PutResponse {}))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let who = principal(&request).map_err(status)?;
        let req = request.into_inner();
        who.check_write([req.key.as_slice()]).map_err(status)?;
        let _permit = self.admit_write(req.key.len())?;
        check_writable_key(&req.key).map_err(status)?;
        self.versioned
            .write(vec![Op::delete(keys::data_key(&req.key))])
            .await
            .map_err(status)?;
        Ok(Response::new(DeleteResponse {}))
    }

    async fn history(
        &self,
        request: Request<HistoryRequest>,
    ) -> Result<Response<HistoryResponse>, Status> {
        self.serve_history(request).await
    }

    async fn locate(
        &self,
        request: Request<LocateRequest>,
    ) -> Result<Response<LocateResponse>, Status> {
        // Where ranges live is no one's data: any authenticated caller.
        principal(&request).map_err(status)?;
        let req = request.into_inner();
        let limit = match req.limit as usize {
            0 => MAX_LOCATE,
            n => n.min(MAX_LOCATE),
        };
        let run = async {
            let held = self.store.status().await?;
            let addresses = self.store.directory().all();
            let mut ranges: Vec<RangeLocation> = held
                .ranges
                .into_iter()
                .filter_map(|r| {
                    let leader = if r.is_leader {
                        self.info.client_address.clone()
                    } else {
                        addresses.get(&r.leader_id)?.clone()
                    };
                    let end = keys::route_key(&r.descriptor.end_key);
                    (end.as_slice() > req.from.as_slice()).then(|| RangeLocation {
                        start: keys::route_key(&r.descriptor.start_key),
                        end,
                        leader,
                    })
                })
                .collect();
            ranges.sort_by(|a, b| a.start.cmp(&b.start));
            ranges.truncate(limit);
            Ok::<_, Error>(LocateResponse { ranges })
        };
        run.await.map(Response::new).map_err(status)
    }

    type ScanStream = ScanStream;

    async fn scan(
        &self,
        request: Request<ScanRequest>,
    ) -> Result<Response<Self::ScanStream>, Status> {
        let who = principal(&request).map_err(status)?;
        let req = request.into_inner();
        who.check_scan(&req.start, &req.end).map_err(status)?;
        for k in [&req.start, &req.end] {
            if k.len() > MAX_KEY_BYTES {
                return Err(status(Error::InvalidArgument(format!(
                    "scan bound is {} bytes; the limit is {MAX_KEY_BYTES}",
                    k.len()
                ))));
            }
        }
        let limit = match req.limit as usize {
            0 => DEFAULT_SCAN_LIMIT,
            n if n > MAX_SCAN_LIMIT => {
                return Err(status(Error::InvalidArgument(format!(
                    "scan limit {n} exceeds the maximum {MAX_SCAN_LIMIT}"
                ))))
            }
            n => n,
        };
        let c = consistency(req.consistency).map_err(status)?;
        let (start, end) = scan_bounds(&req.start, &req.end);
        let op = ReadOp::Scan {
            start,
            end,
            limit,
            reverse: req.reverse,
        };
        let (pairs, resume) = match self
            .versioned
            .resolving(|| self.store.read(op.clone(), c))
            .await
            .map_err(status)?
        {
            ReadResult::Pairs(p, r) => (p, r),
            ReadResult::Value(_)
            | ReadResult::Txn(_)
            | ReadResult::Term(_)
            | ReadResult::Changes(..)
            | ReadResult::History(..)
            | ReadResult::Items(..) => return Err(Status::internal("unexpected read result")),
        };
        // Resume only inside the namespace being scanned (its end is no key).
        let ns_end = if api::is_system_key(&req.start) {
            keys::system_data_bounds().1
        } else {
            keys::user_data_bounds().1
        };
        let resume_key = resume
            .filter(|r| *r != ns_end)
            .and_then(|r| keys::user_key(&r))
            .unwrap_or_default();
        let mut chunks = Vec::new();
        let mut it = pairs.into_iter().peekable();
        while it.peek().is_some() {
            let chunk: Vec<KeyValue> = it
                .by_ref()
                .take(SCAN_CHUNK_PAIRS)
                .filter_map(|(k, value)| {
                    keys::user_key(&k).map(|key| KeyValue {
                        key,
                        value,
                        meta: None,
                    })
                })
                .collect();
            chunks.push(Ok(ScanResponse {
                pairs: chunk,
                ..Default::default()
            }));
        }
        if !resume_key.is_empty() {
            chunks.push(Ok(ScanResponse {
                resume_key,
                ..Default::default()
            }));
        }
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn batch_put(
        &self,
        request: Request<BatchPutRequest>,
    ) -> Result<Response<BatchPutResponse>, Status> {
        let who = principal(&request).map_err(status)?;
        let pairs = request.into_inner().pairs;
        // Every key before any write: a batch mixing permitted and
        // forbidden prefixes writes nothing.
        let checked = if crate::chaos::canary(crate::chaos::Canary::AuthBatchChecksFirstKey) {
            1
        } else {
            pairs.len()
        };
        who.check_write(pairs.iter().take(checked).map(|p| p.key.as_slice()))
            .map_err(status)?;
        let _permit = self.admit_write(pairs.iter().map(|p| p.key.len() + p.value.len()).sum())?;
        let ops = batch_ops(pairs).map_err(status)?;
        self.versioned.write(ops).await.map_err(status)?;
        Ok(Response::new(BatchPutResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_batches_are_rejected_whole() {
        let kv = |k: &str, v: &str| KeyValue {
            key: k.into(),
            value: v.into(),
            meta: None,
        };
        assert!(batch_ops(vec![]).is_err());
        let err = batch_ops(vec![kv("/a", "1"), kv("_/cluster/x", "2")]).unwrap_err();
        assert!(
            err.to_string().contains("pair 2") && err.to_string().contains("reserved"),
            "{err}"
        );
        assert!(batch_ops(vec![kv("/a", "1"), kv("", "2")]).is_err());
        let many: Vec<KeyValue> = (0..=MAX_BATCH_PAIRS)
            .map(|i| kv(&format!("/k{i}"), "v"))
            .collect();
        assert!(batch_ops(many).is_err());
        let big = KeyValue {
            key: b"/big".to_vec(),
            value: vec![0; MAX_VALUE_BYTES + 1],
            meta: None,
        };
        assert!(batch_ops(vec![big]).is_err());
        assert_eq!(
            batch_ops(vec![kv("/a", "1"), kv("/b", "2")]).unwrap().len(),
            2
        );
    }

    #[test]
    fn key_checks() {
        assert!(check_writable_key(b"").is_err());
        assert!(check_writable_key(&vec![b'a'; MAX_KEY_BYTES + 1]).is_err());
        assert!(check_writable_key(b"_/partitions/1").is_err());
        assert!(
            check_key(b"_/partitions/1").is_ok(),
            "system keys are readable"
        );
        assert!(check_writable_key(b"/user/1").is_ok());
        assert!(check_value(&vec![0; MAX_VALUE_BYTES + 1]).is_err());
    }

    #[test]
    fn scan_bounds_stay_in_one_namespace() {
        let (s, e) = scan_bounds(b"/user/", b"/user/z");
        assert_eq!(s, keys::data_key(b"/user/"));
        assert_eq!(e, keys::data_key(b"/user/z"));
        let (s, e) = scan_bounds(b"", b"");
        assert_eq!((s, e), keys::user_data_bounds());
        let (s, e) = scan_bounds(b"_/partitions/", b"");
        assert_eq!(s, keys::data_key(b"_/partitions/"));
        assert_eq!(e, keys::system_data_bounds().1);
        // A user scan whose end lies past "_/" still covers only user keys.
        let (s, e) = scan_bounds(b"/a", b"zzz");
        assert!(s < e && e < keys::user_data_bounds().1);
    }
}
