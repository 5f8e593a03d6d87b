//! The Lease service (`proto/rangedb.proto`): grant, keep-alive, revoke,
//! time-to-live, list and attach, each served by this node's keeper
//! (`lease_keeper.rs`) if it leads the system range, else answered
//! NotLeader so the SDK goes to the node that does.
//!
//! Authorization: with authentication on, managing leases needs a user
//! (any authenticated caller); attaching keys needs write access to each.

use tonic::{Request, Response, Status};

use super::convert::status;
use super::lease_keeper::{LeaseKeeper, Live};
use crate::error::Error;
use crate::proto::lease_server::Lease;
use crate::proto::*;
use crate::security::auth::principal;

#[derive(Clone)]
pub struct LeaseService {
    pub(super) keeper: LeaseKeeper,
    pub(super) clock: crate::clock::NodeClock,
}

impl LeaseService {
    fn info(&self, id: u64, live: Live, keys: Vec<Vec<u8>>) -> LeaseInfo {
        let left = live.deadline_ms.saturating_sub(self.clock.now_ms());
        LeaseInfo {
            id,
            granted_ttl_secs: (live.ttl_ms / 1000) as i64,
            ttl_secs: left.div_ceil(1000) as i64,
            keys,
        }
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseInfo>, Status> {
        principal(&request).map_err(status)?;
        let req = request.into_inner();
        let (id, live) = self
            .keeper
            .grant(req.id, req.ttl_secs)
            .await
            .map_err(status)?;
        Ok(Response::new(self.info(id, live, Vec::new())))
    }

    async fn revoke(
        &self,
        request: Request<LeaseIdRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        principal(&request).map_err(status)?;
        let id = request.into_inner().id;
        let deleted = self.keeper.revoke(id).await.map_err(status)?;
        Ok(Response::new(LeaseRevokeResponse { deleted }))
    }

    async fn keep_alive(
        &self,
        request: Request<LeaseIdRequest>,
    ) -> Result<Response<LeaseInfo>, Status> {
        principal(&request).map_err(status)?;
        let id = request.into_inner().id;
        let live = self.keeper.keep_alive(id).await.map_err(status)?;
        Ok(Response::new(self.info(id, live, Vec::new())))
    }

    async fn time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseInfo>, Status> {
        principal(&request).map_err(status)?;
        let req = request.into_inner();
        let (live, keys) = self
            .keeper
            .time_to_live(req.id, req.keys)
            .await
            .map_err(status)?;
        Ok(Response::new(self.info(req.id, live, keys)))
    }

    async fn list(
        &self,
        request: Request<LeaseListRequest>,
    ) -> Result<Response<LeaseListResponse>, Status> {
        principal(&request).map_err(status)?;
        let leases = self.keeper.list().await.map_err(status)?;
        Ok(Response::new(LeaseListResponse {
            leases: leases
                .into_iter()
                .map(|(id, live)| self.info(id, live, Vec::new()))
                .collect(),
        }))
    }

    async fn attach(
        &self,
        request: Request<LeaseAttachRequest>,
    ) -> Result<Response<LeaseInfo>, Status> {
        let who = principal(&request).map_err(status)?;
        let req = request.into_inner();
        for k in &req.keys {
            who.check_write([k.as_slice()]).map_err(status)?;
            if k.is_empty() || crate::api::is_system_key(k) {
                return Err(status(Error::InvalidArgument(
                    "only user keys can be attached to a lease".into(),
                )));
            }
        }
        if req.keys.len() > super::lease_keeper::MAX_LEASE_KEYS {
            return Err(status(Error::InvalidArgument(format!(
                "at most {} keys per lease",
                super::lease_keeper::MAX_LEASE_KEYS
            ))));
        }
        let live = self
            .keeper
            .attach(req.id, &req.keys)
            .await
            .map_err(status)?;
        Ok(Response::new(self.info(req.id, live, Vec::new())))
    }
}
