//! The Kv and Admin services: validate input (nothing is written for bad
//! input), translate user keys into the data keyspace, hand requests to the
//! Store, and map errors to statuses.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tonic::{Request, Response, Status};

use crate::config::{
    DEFAULT_SCAN_LIMIT, MAX_BATCH_BYTES, MAX_BATCH_PAIRS, MAX_KEY_BYTES, MAX_SCAN_LIMIT,
    MAX_VALUE_BYTES, SCAN_CHUNK_PAIRS,
};
use crate::error::{Error, Result};
use crate::keys;
use crate::node::{Consistency, StoreHandle};
use crate::proto::admin_server::Admin;
use crate::proto::kv_server::Kv;
use crate::proto::*;
use crate::range::{Op, ReadOp, ReadResult};
use crate::wire::to_status;

pub struct NodeInfo {
    pub node_id: u64,
    pub cluster_id: String,
    pub peer_address: String,
    pub client_address: String,
}

#[derive(Clone)]
pub struct KvService {
    store: StoreHandle,
    info: Arc<NodeInfo>,
}

impl KvService {
    pub fn new(store: StoreHandle, info: Arc<NodeInfo>) -> Self {
        KvService { store, info }
    }
}

const RESERVED: &str =
    "keys under \"_/\" are reserved for cluster metadata and cannot be written through the \
     Kv API; read them with `rangedb admin meta get|list` or `rangedb admin config get`";

fn check_key(key: &[u8]) -> Result<()> {
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

fn check_writable_key(key: &[u8]) -> Result<()> {
    check_key(key)?;
    if keys::is_system_key(key) {
        return Err(Error::InvalidArgument(RESERVED.into()));
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<()> {
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
    if keys::is_system_key(start) {
        let (_, sys_end) = keys::system_data_bounds();
        let e = if end.is_empty() {
            sys_end.clone()
        } else {
            keys::data_key(end).min(sys_end)
        };
        (keys::data_key(start), e)
    } else {
        let (u0, u1) = keys::user_data_bounds();
        let mut s = u0.clone();
        s.extend_from_slice(start);
        let e = if end.is_empty() {
            u1
        } else {
            let mut e = u0;
            e.extend_from_slice(end);
            e
        };
        (s, e)
    }
}

type ScanStream = Pin<Box<dyn Stream<Item = Result<ScanResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let req = request.into_inner();
        check_key(&req.key).map_err(to_status)?;
        let c = consistency(req.consistency).map_err(to_status)?;
        match self
            .store
            .read(ReadOp::Get(keys::data_key(&req.key)), c)
            .await
            .map_err(to_status)?
        {
            ReadResult::Value(Some(value)) => Ok(Response::new(GetResponse { found: true, value })),
            ReadResult::Value(None) => Ok(Response::new(GetResponse {
                found: false,
                value: Vec::new(),
            })),
            ReadResult::Pairs(..) => Err(Status::internal("unexpected read result")),
        }
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = request.into_inner();
        check_writable_key(&req.key)
            .and_then(|_| check_value(&req.value))
            .map_err(to_status)?;
        self.store
            .write(vec![Op::put(keys::data_key(&req.key), req.value)])
            .await
            .map_err(to_status)?;
        Ok(Response::new(PutResponse {}))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let req = request.into_inner();
        check_writable_key(&req.key).map_err(to_status)?;
        self.store
            .write(vec![Op::delete(keys::data_key(&req.key))])
            .await
            .map_err(to_status)?;
        Ok(Response::new(DeleteResponse {}))
    }

    type ScanStream = ScanStream;

    async fn scan(
        &self,
        request: Request<ScanRequest>,
    ) -> Result<Response<Self::ScanStream>, Status> {
        let req = request.into_inner();
        for k in [&req.start, &req.end] {
            if k.len() > MAX_KEY_BYTES {
                return Err(to_status(Error::InvalidArgument(format!(
                    "scan bound is {} bytes; the limit is {MAX_KEY_BYTES}",
                    k.len()
                ))));
            }
        }
        let limit = match req.limit as usize {
            0 => DEFAULT_SCAN_LIMIT,
            n if n > MAX_SCAN_LIMIT => {
                return Err(to_status(Error::InvalidArgument(format!(
                    "scan limit {n} exceeds the maximum {MAX_SCAN_LIMIT}"
                ))))
            }
            n => n,
        };
        let c = consistency(req.consistency).map_err(to_status)?;
        let (start, end) = scan_bounds(&req.start, &req.end);
        let op = ReadOp::Scan {
            start,
            end,
            limit,
            reverse: req.reverse,
        };
        let (pairs, resume) = match self.store.read(op, c).await.map_err(to_status)? {
            ReadResult::Pairs(p, r) => (p, r),
            ReadResult::Value(_) => return Err(Status::internal("unexpected read result")),
        };
        // Resume only inside the namespace being scanned (its end is no key).
        let ns_end = if keys::is_system_key(&req.start) {
            keys::system_data_bounds().1
        } else {
            keys::user_data_bounds().1
        };
        let resume_key = resume
            .filter(|r| *r != ns_end)
            .and_then(|r| keys::user_key(&r).map(<[u8]>::to_vec))
            .unwrap_or_default();
        let mut chunks = Vec::new();
        let mut it = pairs.into_iter().peekable();
        while it.peek().is_some() {
            let chunk: Vec<KeyValue> = it
                .by_ref()
                .take(SCAN_CHUNK_PAIRS)
                .filter_map(|(k, value)| {
                    keys::user_key(&k).map(|key| KeyValue {
                        key: key.to_vec(),
                        value,
                    })
                })
                .collect();
            chunks.push(Ok(ScanResponse {
                pairs: chunk,
                resume_key: Vec::new(),
            }));
        }
        if !resume_key.is_empty() {
            chunks.push(Ok(ScanResponse {
                pairs: Vec::new(),
                resume_key,
            }));
        }
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn batch_put(
        &self,
        request: Request<BatchPutRequest>,
    ) -> Result<Response<BatchPutResponse>, Status> {
        let ops = batch_ops(request.into_inner().pairs).map_err(to_status)?;
        self.store.write(ops).await.map_err(to_status)?;
        Ok(Response::new(BatchPutResponse {}))
    }
}

impl KvService {
    fn registry_key(node_id: u64) -> Vec<u8> {
        keys::data_key(format!("_/cluster/nodes/{node_id}").as_bytes())
    }

    /// A node's registry entry (linearizable), if registered.
    async fn registry_entry(&self, node_id: u64) -> Result<Option<serde_json::Value>, Status> {
        match self
            .store
            .read(
                ReadOp::Get(Self::registry_key(node_id)),
                Consistency::Linearizable,
            )
            .await
            .map_err(to_status)?
        {
            ReadResult::Value(Some(v)) => Ok(Some(serde_json::from_slice(&v).unwrap_or_default())),
            _ => Ok(None),
        }
    }

    async fn put_registry_entry(
        &self,
        node_id: u64,
        entry: &serde_json::Value,
    ) -> Result<(), Status> {
        let op = Op::put(Self::registry_key(node_id), entry.to_string().into_bytes());
        self.store.write(vec![op]).await.map_err(to_status)
    }

    async fn cluster_id(&self) -> String {
        match self
            .store
            .read(
                ReadOp::Get(keys::data_key(b"_/cluster/id")),
                Consistency::Local,
            )
            .await
        {
            Ok(ReadResult::Value(Some(v))) => String::from_utf8_lossy(&v).into_owned(),
            _ => self.info.cluster_id.clone(),
        }
    }
}

#[tonic::async_trait]
impl Admin for KvService {
    async fn publish_range(
        &self,
        request: Request<RangeDescriptorMsg>,
    ) -> Result<Response<PublishRangeResponse>, Status> {
        let m = request.into_inner();
        if m.range_id == 0 || m.end_key.is_empty() || m.start_key >= m.end_key {
            return Err(to_status(Error::InvalidArgument(
                "malformed range descriptor".into(),
            )));
        }
        let desc = crate::range::RangeDescriptor::from(m);
        self.store
            .write(vec![Op::put_range_meta(&desc)])
            .await
            .map_err(to_status)?;
        Ok(Response::new(PublishRangeResponse {}))
    }

    async fn change_replicas(
        &self,
        request: Request<ChangeReplicasRequest>,
    ) -> Result<Response<ChangeReplicasResponse>, Status> {
        use crate::proto::change_replicas_request::Kind;
        use crate::range::ReplicaChange;
        let req = request.into_inner();
        let change = match Kind::try_from(req.kind) {
            Ok(Kind::AddLearner) => ReplicaChange::AddLearner(req.node_id),
            Ok(Kind::Promote) => ReplicaChange::Promote(req.node_id),
            Ok(Kind::Remove) => ReplicaChange::Remove(req.node_id),
            Ok(Kind::TransferLeader) => ReplicaChange::TransferLeader(req.node_id),
            Err(_) => {
                return Err(to_status(Error::InvalidArgument(format!(
                    "unknown change kind {}",
                    req.kind
                ))))
            }
        };
        if req.node_id == 0 {
            return Err(to_status(Error::InvalidArgument("node id 0".into())));
        }
        self.store
            .change_replicas(req.range_id, change, req.expected_conf_ver)
            .await
            .map_err(to_status)?;
        Ok(Response::new(ChangeReplicasResponse {}))
    }

    async fn decommission_node(
        &self,
        request: Request<DecommissionNodeRequest>,
    ) -> Result<Response<DecommissionNodeResponse>, Status> {
        let id = request.into_inner().node_id;
        let Some(mut entry) = self.registry_entry(id).await? else {
            return Err(to_status(Error::InvalidArgument(format!(
                "node {id} is not registered"
            ))));
        };
        entry["decommissioning"] = serde_json::Value::Bool(true);
        self.put_registry_entry(id, &entry).await?;
        Ok(Response::new(DecommissionNodeResponse {}))
    }

    async fn gc_replica(
        &self,
        request: Request<GcReplicaRequest>,
    ) -> Result<Response<GcReplicaResponse>, Status> {
        let req = request.into_inner();
        self.store
            .gc_replica(req.range_id, req.conf_ver, req.merged)
            .await
            .map_err(to_status)?;
        Ok(Response::new(GcReplicaResponse {}))
    }

    async fn join_cluster(
        &self,
        request: Request<JoinClusterRequest>,
    ) -> Result<Response<JoinClusterResponse>, Status> {
        let req = request.into_inner();
        if req.peer_address.is_empty()
            || req.client_address.is_empty()
            || !req.peer_address.contains(':')
        {
            return Err(to_status(Error::InvalidArgument(
                "a joining node needs host:port peer and client addresses".into(),
            )));
        }
        let entries = crate::placement::registry_entries(&self.store, Consistency::Linearizable)
            .await
            .map_err(to_status)?;
        let mut max = 0;
        for (id, entry) in entries {
            // Joining again (e.g. after a crash before it saved its id): same id.
            if entry["peer_address"]
                .as_str()
                .is_some_and(|p| crate::config::same_address(p, &req.peer_address))
            {
                return Ok(Response::new(JoinClusterResponse {
                    node_id: id,
                    cluster_id: self.cluster_id().await,
                }));
            }
            max = max.max(id);
        }
        for id in max + 1..max + 6 {
            if id >= 1000 {
                return Err(to_status(Error::InvalidArgument(
                    "a cluster holds at most 999 nodes".into(),
                )));
            }
            let key = keys::data_key(format!("_/cluster/nodes/{id}").as_bytes());
            let value = serde_json::json!({ "peer_address": req.peer_address, "client_address": req.client_address });
            match self
                .store
                .write(vec![Op::put_if_absent(key, value.to_string().into_bytes())])
                .await
            {
                Ok(()) => {
                    return Ok(Response::new(JoinClusterResponse {
                        node_id: id,
                        cluster_id: self.cluster_id().await,
                    }))
                }
                Err(Error::InvalidArgument(_)) => continue, // taken meanwhile: next id
                Err(e) => return Err(to_status(e)),
            }
        }
        Err(to_status(Error::Unavailable(
            "could not allocate a node id; retry".into(),
        )))
    }

    async fn register_node(
        &self,
        request: Request<RegisterNodeRequest>,
    ) -> Result<Response<RegisterNodeResponse>, Status> {
        let req = request.into_inner();
        if req.node_id == 0 || req.peer_address.is_empty() || req.client_address.is_empty() {
            return Err(to_status(Error::InvalidArgument(
                "node id and addresses are required".into(),
            )));
        }
        let mut value = serde_json::json!({ "peer_address": req.peer_address, "client_address": req.client_address });
        // A restart must not undo a decommission.
        if let Ok(Some(old)) = self.registry_entry(req.node_id).await {
            if old["decommissioning"].as_bool() == Some(true) {
                value["decommissioning"] = serde_json::Value::Bool(true);
            }
        }
        self.put_registry_entry(req.node_id, &value).await?;
        Ok(Response::new(RegisterNodeResponse {}))
    }

    async fn set_config(
        &self,
        request: Request<SetConfigRequest>,
    ) -> Result<Response<SetConfigResponse>, Status> {
        let req = request.into_inner();
        let key = crate::config::validate_setting(&req.key, &req.value).map_err(to_status)?;
        let value = req.value.trim().as_bytes().to_vec();
        self.store
            .write(vec![Op::put(keys::data_key(key.as_bytes()), value)])
            .await
            .map_err(to_status)?;
        Ok(Response::new(SetConfigResponse { key }))
    }

    async fn split_range(
        &self,
        request: Request<SplitRangeRequest>,
    ) -> Result<Response<SplitRangeResponse>, Status> {
        let req = request.into_inner();
        check_writable_key(&req.key).map_err(to_status)?;
        self.store
            .split(keys::data_key(&req.key), req.sticky)
            .await
            .map_err(to_status)?;
        Ok(Response::new(SplitRangeResponse {}))
    }

    async fn freeze_range(
        &self,
        request: Request<FreezeRangeRequest>,
    ) -> Result<Response<FreezeRangeResponse>, Status> {
        let req = request.into_inner();
        let (desc, pairs) = self
            .store
            .freeze(req.range_id, req.expected_version)
            .await
            .map_err(to_status)?;
        Ok(Response::new(FreezeRangeResponse {
            descriptor: Some(desc.into()),
            pairs: pairs
                .into_iter()
                .map(|(key, value)| KeyValue { key, value })
                .collect(),
        }))
    }

    async fn merge_ranges(
        &self,
        request: Request<MergeRangesRequest>,
    ) -> Result<Response<MergeRangesResponse>, Status> {
        let req = request.into_inner();
        let rhs = req.rhs.ok_or_else(|| {
            to_status(Error::InvalidArgument("merge without a right range".into()))
        })?;
        let pairs = req.pairs.into_iter().map(|kv| (kv.key, kv.value)).collect();
        self.store
            .merge(req.range_id, req.expected_version, rhs.into(), pairs)
            .await
            .map_err(to_status)?;
        Ok(Response::new(MergeRangesResponse {}))
    }

    async fn node_status(
        &self,
        _: Request<NodeStatusRequest>,
    ) -> Result<Response<NodeStatusResponse>, Status> {
        let s = self.store.status().await.map_err(to_status)?;
        // The cluster id is system data: a joining node learns it with its first snapshot.
        let cluster_id = match self
            .store
            .read(
                ReadOp::Get(keys::data_key(b"_/cluster/id")),
                Consistency::Local,
            )
            .await
        {
            Ok(ReadResult::Value(Some(v))) => String::from_utf8_lossy(&v).into_owned(),
            _ => self.info.cluster_id.clone(),
        };
        let ranges = s
            .ranges
            .into_iter()
            .map(|r| RangeStatus {
                range_id: r.range_id,
                leader_id: r.leader_id,
                term: r.term,
                is_leader: r.is_leader,
                commit: r.commit,
                applied: r.applied,
                last_index: r.last_index,
                truncated_index: r.truncated_index,
                apply_hash: r.apply_hash,
                start_key: r.descriptor.start_key,
                end_key: r.descriptor.end_key,
                version: r.descriptor.version,
                conf_ver: r.descriptor.conf_ver,
                approx_bytes: r.approx_bytes,
                frozen: r.descriptor.frozen,
                sticky: r.descriptor.sticky,
                qps: r.qps,
                quiesced: r.quiesced,
                learners: r.learners,
                progress: r
                    .progress
                    .iter()
                    .map(|&(node_id, matched)| PeerProgress { node_id, matched })
                    .collect(),
                voters: r.voters,
            })
            .collect();
        Ok(Response::new(NodeStatusResponse {
            node_id: self.info.node_id,
            cluster_id,
            peer_address: self.info.peer_address.clone(),
            client_address: self.info.client_address.clone(),
            ranges,
            client_addresses: self.store.directory().all().into_iter().collect(),
        }))
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
