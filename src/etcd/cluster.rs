//! Enough of etcd's Cluster and Maintenance services for clients to
//! connect and for `etcdctl member list` / `endpoint status` to answer:
//! this gateway's node as the member, and a status whose revision is a
//! fresh oracle timestamp. Membership changes, alarms, defragmentation,
//! hashes, snapshots and leader moves are RangeDB's own (`rangedb admin`)
//! and answer Unimplemented here.

use tonic::{Request, Response, Status};

use super::{etcd_status, Gateway};
use crate::etcdpb::etcdserverpb::cluster_server::Cluster;
use crate::etcdpb::etcdserverpb::maintenance_server::Maintenance;
use crate::etcdpb::etcdserverpb::*;

/// The etcd version clients are told (the API level the gateway speaks).
pub const ETCD_VERSION: &str = "3.5.0";

impl Gateway {
    fn member(&self) -> Member {
        Member {
            id: self.info.node_id,
            name: format!("rangedb-{}", self.info.node_id),
            peer_ur_ls: vec![format!("http://{}", self.info.peer_address)],
            client_ur_ls: vec![format!("http://{}", self.info.etcd_address)],
            is_learner: false,
        }
    }
}

fn unimplemented<T>(what: &str) -> Result<Response<T>, Status> {
    Err(Status::unimplemented(format!(
        "{what} is not part of RangeDB's etcd gateway (use `rangedb admin`)"
    )))
}

#[tonic::async_trait]
impl Cluster for Gateway {
    async fn member_list(
        &self,
        _: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let now = self.client.timestamps(1).await.map_err(etcd_status)?;
        Ok(Response::new(MemberListResponse {
            header: Some(self.header(now)),
            members: vec![self.member()],
        }))
    }
    async fn member_add(
        &self,
        _: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        unimplemented("MemberAdd")
    }
    async fn member_remove(
        &self,
        _: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        unimplemented("MemberRemove")
    }
    async fn member_update(
        &self,
        _: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        unimplemented("MemberUpdate")
    }
    async fn member_promote(
        &self,
        _: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        unimplemented("MemberPromote")
    }
}

#[tonic::async_trait]
impl Maintenance for Gateway {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let now = self.client.timestamps(1).await.map_err(etcd_status)?;
        Ok(Response::new(StatusResponse {
            header: Some(self.header(now)),
            version: ETCD_VERSION.to_string(),
            db_size: 0,
            leader: self.info.node_id,
            raft_index: 0,
            raft_term: 0,
            raft_applied_index: 0,
            errors: Vec::new(),
            db_size_in_use: 0,
            is_learner: false,
        }))
    }
    async fn alarm(&self, _: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        let now = self.client.timestamps(1).await.map_err(etcd_status)?;
        Ok(Response::new(AlarmResponse {
            header: Some(self.header(now)),
            alarms: Vec::new(),
        }))
    }
    async fn defragment(
        &self,
        _: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        unimplemented("Defragment")
    }
    async fn hash(&self, _: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        unimplemented("Hash")
    }
    async fn hash_kv(&self, _: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        unimplemented("HashKV")
    }
    type SnapshotStream = futures::stream::Empty<Result<SnapshotResponse, Status>>;
    async fn snapshot(
        &self,
        _: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        unimplemented("Snapshot (use `rangedb backup`)")
    }
    async fn move_leader(
        &self,
        _: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        unimplemented("MoveLeader")
    }
}
