//! The Admin service: range directory updates, membership changes, splits
//! and merges, node registration and joining, settings, node status. Input
//! is validated first (nothing is written for bad input); errors leave as
//! statuses with spans as route keys.

use tonic::{Request, Response, Status};

use super::convert::status;
use super::kv::{check_writable_key, KvService};
use super::registry::read_registry;
use crate::api::{meta, NodeEntry, ReplicaChange, Timestamp, MAX_NODE_ID};
use crate::error::{Error, Result};
use crate::keys;
use crate::node::Consistency;
use crate::proto::admin_server::Admin;
use crate::proto::*;
use crate::range::{Op, RangeDescriptor, ReadOp, ReadResult};
use crate::security::auth::principal;

/// Ids tried per JoinCluster call when others take them meanwhile.
const JOIN_ID_ATTEMPTS: u64 = 5;

impl KvService {
    /// A node's registry entry (linearizable), if registered.
    async fn registry_entry(&self, node_id: u64) -> Result<Option<NodeEntry>> {
        let key = meta::node_key(node_id);
        match self
            .store
            .read(ReadOp::Get(keys::system(&key)), Consistency::Linearizable)
            .await?
        {
            ReadResult::Value(Some(v)) => NodeEntry::decode(key.as_bytes(), &v).map(Some),
            _ => Ok(None),
        }
    }

    async fn put_registry_entry(&self, node_id: u64, entry: &NodeEntry) -> Result<()> {
        let op = Op::put(keys::system(&meta::node_key(node_id)), entry.encode());
        self.store.write(vec![op]).await
    }

    async fn cluster_id(&self) -> String {
        match self
            .store
            .read(
                ReadOp::Get(keys::system(meta::CLUSTER_ID)),
                Consistency::Local,
            )
            .await
        {
            Ok(ReadResult::Value(Some(v))) => String::from_utf8_lossy(&v).into_owned(),
            _ => self.info.cluster_id.clone(),
        }
    }

    /// A node id for a new node at `peer_address` (the same id again if it
    /// joined before, e.g. it crashed before it saved its id).
    async fn allocate_node_id(&self, peer_address: &str, client_address: &str) -> Result<u64> {
        let registry = read_registry(&self.store, Consistency::Linearizable).await?;
        if let Some((&id, _)) = registry
            .entries
            .iter()
            .find(|(_, e)| crate::config::same_address(&e.peer_address, peer_address))
        {
            return Ok(id);
        }
        let first = registry.max_id() + 1;
        for id in first..first + JOIN_ID_ATTEMPTS {
            if id > MAX_NODE_ID {
                return Err(Error::InvalidArgument(format!(
                    "a cluster holds at most {MAX_NODE_ID} nodes"
                )));
            }
            let entry = NodeEntry::new(peer_address, Some(client_address));
            let op = Op::put_if_absent(keys::system(&meta::node_key(id)), entry.encode());
            match self.store.write(vec![op]).await {
                Ok(()) => return Ok(id),
                Err(Error::InvalidArgument(_)) => continue, // taken meanwhile: next id
                Err(e) => return Err(e),
            }
        }
        Err(Error::Unavailable(
            "could not allocate a node id; retry".into(),
        ))
    }

    async fn node_status_response(&self) -> Result<NodeStatusResponse> {
        let s = self.store.status().await?;
        // The cluster id is system data: a joining node learns it with its
        // first snapshot.
        let cluster_id = self.cluster_id().await;
        let ranges = s.ranges.into_iter().map(range_status).collect();
        Ok(NodeStatusResponse {
            node_id: self.info.node_id,
            cluster_id,
            peer_address: self.info.peer_address.clone(),
            client_address: self.info.client_address.clone(),
            ranges,
            client_addresses: self.store.directory().all().into_iter().collect(),
            draining: self.store.is_draining(),
        })
    }
}

fn range_status(r: crate::range::ReplicaStatus) -> RangeStatus {
    RangeStatus {
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
    }
}

fn replica_change(kind: i32, node_id: u64) -> Result<ReplicaChange> {
    use crate::proto::change_replicas_request::Kind;
    if node_id == 0 {
        return Err(Error::InvalidArgument("node id 0".into()));
    }
    match Kind::try_from(kind) {
        Ok(Kind::AddLearner) => Ok(ReplicaChange::AddLearner(node_id)),
        Ok(Kind::Promote) => Ok(ReplicaChange::Promote(node_id)),
        Ok(Kind::Remove) => Ok(ReplicaChange::Remove(node_id)),
        Ok(Kind::TransferLeader) => Ok(ReplicaChange::TransferLeader(node_id)),
        Err(_) => Err(Error::InvalidArgument(format!(
            "unknown change kind {kind}"
        ))),
    }
}

/// Ids of pins and backups name metadata keys: 1 to 64 of [0-9A-Za-z_-].
fn check_id(id: &str, what: &str) -> Result<()> {
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if id.is_empty() || id.len() > 64 || !id.chars().all(valid) {
        return Err(Error::InvalidArgument(format!(
            "a {what} id is 1 to 64 characters of [0-9A-Za-z_-]"
        )));
    }
    Ok(())
}

/// The largest backup record `_/backups/<id>` holds.
const MAX_BACKUP_RECORD_BYTES: usize = 64 * 1024;

#[tonic::async_trait]
impl Admin for KvService {
    async fn publish_range(
        &self,
        request: Request<RangeDescriptorMsg>,
    ) -> Result<Response<PublishRangeResponse>, Status> {
        principal(&request)
            .and_then(|p| p.check_root("publish range descriptors"))
            .map_err(status)?;
        let m = request.into_inner();
        if m.range_id == 0 || m.end_key.is_empty() || m.start_key >= m.end_key {
            return Err(status(Error::InvalidArgument(
                "malformed range descriptor".into(),
            )));
        }
        let desc = RangeDescriptor::from(m);
        self.store
            .write(vec![Op::put_range_meta(&desc)])
            .await
            .map_err(status)?;
        Ok(Response::new(PublishRangeResponse {}))
    }

    async fn change_replicas(
        &self,
        request: Request<ChangeReplicasRequest>,
    ) -> Result<Response<ChangeReplicasResponse>, Status> {
        principal(&request)
            .and_then(|p| p.check_root("change replicas"))
            .map_err(status)?;
        let req = request.into_inner();
        let change = replica_change(req.kind, req.node_id).map_err(status)?;
        match change {
            ReplicaChange::TransferLeader(to) => {
                super::drain::transfer_leader(
                    &self.store,
                    &self.tso,
                    req.range_id,
                    to,
                    req.expected_conf_ver,
                )
                .await
            }
            _ => {
                self.store
                    .change_replicas(req.range_id, change, req.expected_conf_ver)
                    .await
            }
        }
        .map_err(status)?;
        Ok(Response::new(ChangeReplicasResponse {}))
    }

    async fn decommission_node(
        &self,
        request: Request<DecommissionNodeRequest>,
    ) -> Result<Response<DecommissionNodeResponse>, Status> {
        principal(&request)
            .and_then(|p| p.check_root("decommission nodes"))
            .map_err(status)?;
        let id = request.into_inner().node_id;
        let Some(mut entry) = self.registry_entry(id).await.map_err(status)? else {
            return Err(status(Error::InvalidArgument(format!(
                "node {id} is not registered"
            ))));
        };
        entry.decommissioning = true;
        self.put_registry_entry(id, &entry).await.map_err(status)?;
        Ok(Response::new(DecommissionNodeResponse {}))
    }

    async fn gc_replica(
        &self,
        request: Request<GcReplicaRequest>,
    ) -> Result<Response<GcReplicaResponse>, Status> {
        principal(&request)
            .and_then(|p| p.check_root("collect replicas"))
            .map_err(status)?;
        let req = request.into_inner();
        self.store
            .gc_replica(req.range_id, req.conf_ver, req.merged)
            .await
            .map_err(status)?;
        Ok(Response::new(GcReplicaResponse {}))
    }

    async fn join_cluster(
        &self,
        request: Request<JoinClusterRequest>,
    ) -> Result<Response<JoinClusterResponse>, Status> {
        principal(&request)
            .and_then(|p| p.check_root("add nodes"))
            .map_err(status)?;
        let req = request.into_inner();
        if req.peer_address.is_empty()
            || req.client_address.is_empty()
            || !req.peer_address.contains(':')
        {
            return Err(status(Error::InvalidArgument(
                "a joining node needs host:port peer and client addresses".into(),
            )));
        }
        let node_id = self
            .allocate_node_id(&req.peer_address, &req.client_address)
            .await
            .map_err(status)?;
        Ok(Response::new(JoinClusterResponse {
            node_id,
            cluster_id: self.cluster_id().await,
        }))
    }

    async fn register_node(
        &self,
        request: Request<RegisterNodeRequest>,
    ) -> Result<Response<RegisterNodeResponse>, Status> {
        principal(&request)
            .and_then(|p| p.check_root("register nodes"))
            .map_err(status)?;
        let req = request.into_inner();
        if req.node_id == 0 || req.peer_address.is_empty() || req.client_address.is_empty() {
            return Err(status(Error::InvalidArgument(
                "node id and addresses are required".into(),
            )));
        }
        let mut entry = NodeEntry::new(&req.peer_address, Some(&req.client_address));
        // A restart must not undo a decommission. A corrupt entry is
        // replaced by the node's own (a decommission it recorded is lost).
        match self.registry_entry(req.node_id).await {
            Ok(Some(old)) => entry.decommissioning = old.decommissioning,
            Ok(None) => {}
            Err(e @ Error::Corruption(_)) => {
                tracing::warn!(node = req.node_id, %e, "replacing a corrupt registry entry")
            }
            Err(e) => return Err(status(e)),
        }
        self.put_registry_entry(req.node_id, &entry)
            .await
            .map_err(status)?;
        Ok(Response::new(RegisterNodeResponse {}))
    }

    async fn set_config(
        &self,
        request: Request<SetConfigRequest>,
    ) -> Result<Response<SetConfigResponse>, Status> {
        principal(&request)
            .and_then(|p| p.check_root("change cluster settings"))
            .map_err(status)?;
        let req = request.into_inner();
        let key = crate::config::validate_setting(&req.key, &req.value).map_err(status)?;
        let value = req.value.trim().as_bytes().to_vec();
        self.store
            .write(vec![Op::put(keys::system(&key), value)])
            .await
            .map_err(status)?;
        Ok(Response::new(SetConfigResponse { key }))
    }

    async fn split_range(
        &self,
        request: Request<SplitRangeRequest>,
    ) -> Result<Response<SplitRangeResponse>, Status> {
        principal(&request)
            .and_then(|p| p.check_root("split ranges"))
            .map_err(status)?;
        let req = request.into_inner();
        check_writable_key(&req.key).map_err(status)?;
        self.store
            .split(keys::data_key(&req.key), req.sticky)
            .await
            .map_err(status)?;
        Ok(Response::new(SplitRangeResponse {}))
    }

    async fn freeze_range(
        &self,
        request: Request<FreezeRangeRequest>,
    ) -> Result<Response<FreezeRangeResponse>, Status> {
        principal(&request)
            .and_then(|p| p.check_root("freeze ranges"))
            .map_err(status)?;
        let req = request.into_inner();
        let (desc, pairs) = self
            .store
            .freeze(req.range_id, req.expected_version)
            .await
            .map_err(status)?;
        Ok(Response::new(FreezeRangeResponse {
            descriptor: Some(desc.into()),
            pairs: pairs
                .into_iter()
                .map(|(key, value)| KeyValue {
                    key,
                    value,
                    meta: None,
                })
                .collect(),
        }))
    }

    async fn merge_ranges(
        &self,
        request: Request<MergeRangesRequest>,
    ) -> Result<Response<MergeRangesResponse>, Status> {
        principal(&request)
            .and_then(|p| p.check_root("merge ranges"))
            .map_err(status)?;
        let req = request.into_inner();
        let rhs = req
            .rhs
            .ok_or_else(|| status(Error::InvalidArgument("merge without a right range".into())))?;
        let pairs = req.pairs.into_iter().map(|kv| (kv.key, kv.value)).collect();
        self.store
            .merge(req.range_id, req.expected_version, rhs.into(), pairs)
            .await
            .map_err(status)?;
        Ok(Response::new(MergeRangesResponse {}))
    }

    async fn get_timestamps(
        &self,
        request: Request<GetTimestampsRequest>,
    ) -> Result<Response<GetTimestampsResponse>, Status> {
        principal(&request).map_err(status)?;
        let count = request.into_inner().count;
        let first = self.tso.allocate(count).await.map_err(status)?;
        Ok(Response::new(GetTimestampsResponse {
            first: first.0,
            count,
        }))
    }

    async fn pin_timestamp(
        &self,
        request: Request<PinTimestampRequest>,
    ) -> Result<Response<PinTimestampResponse>, Status> {
        principal(&request).map_err(status)?;
        let req = request.into_inner();
        check_id(&req.id, "pin").map_err(status)?;
        let key = keys::system(&meta::pin_key(&req.id));
        let op = if req.release {
            Op::delete(key)
        } else if req.lease_ms > 0 {
            let until = self.versioned.now_ms().saturating_add(req.lease_ms);
            Op::put(key, meta::lease_pin(req.start_ts, until).into_bytes())
        } else {
            Op::put(key, Timestamp(req.start_ts).0.to_string().into_bytes())
        };
        self.store.write(vec![op]).await.map_err(status)?;
        Ok(Response::new(PinTimestampResponse {}))
    }

    async fn drain_node(
        &self,
        request: Request<DrainNodeRequest>,
    ) -> Result<Response<DrainNodeResponse>, Status> {
        principal(&request)
            .and_then(|p| p.check_root("drain nodes"))
            .map_err(status)?;
        let want = request.into_inner().node_id;
        if want != self.info.node_id {
            return Err(status(Error::InvalidArgument(format!(
                "this is node {}, not node {want}: send the drain to the node itself",
                self.info.node_id
            ))));
        }
        let s = self.store.status().await.map_err(status)?;
        let leading = s.ranges.iter().filter(|r| r.is_leader).count() as u64;
        if !self.store.is_draining() {
            let (store, tso) = (self.store.clone(), self.tso.clone());
            let limit = self.info.drain_limit;
            tokio::spawn(async move {
                super::drain::drain(&store, &tso, limit).await;
                store.request_stop();
            });
        }
        Ok(Response::new(DrainNodeResponse { leading }))
    }

    async fn record_backup(
        &self,
        request: Request<RecordBackupRequest>,
    ) -> Result<Response<RecordBackupResponse>, Status> {
        principal(&request)
            .and_then(|p| p.check_root("record backups"))
            .map_err(status)?;
        let req = request.into_inner();
        check_id(&req.id, "backup").map_err(status)?;
        if req.record.len() > MAX_BACKUP_RECORD_BYTES
            || serde_json::from_slice::<serde_json::Value>(&req.record).is_err()
        {
            return Err(status(Error::InvalidArgument(format!(
                "a backup record is a JSON document of at most {MAX_BACKUP_RECORD_BYTES} bytes"
            ))));
        }
        let key = keys::system(&meta::backup_key(&req.id));
        self.store
            .write(vec![Op::put(key, req.record)])
            .await
            .map_err(status)?;
        Ok(Response::new(RecordBackupResponse {}))
    }

    async fn node_status(
        &self,
        request: Request<NodeStatusRequest>,
    ) -> Result<Response<NodeStatusResponse>, Status> {
        principal(&request).map_err(status)?;
        Ok(Response::new(
            self.node_status_response().await.map_err(status)?,
        ))
    }
}
