//! etcd's Lease service over RangeDB's (`client/lease.rs`): grant, revoke,
//! keep-alive (a bidirectional stream: one keep-alive per request), time
//! to live and the list. A lease that has ended answers keep-alives with
//! TTL 0 and time-to-live with TTL -1, as etcd does.

use std::pin::Pin;

use futures::Stream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::{etcd_status, Gateway};
use crate::api::Timestamp;
use crate::error::Error;
use crate::etcdpb::etcdserverpb::lease_server::Lease;
use crate::etcdpb::etcdserverpb::*;

/// etcd's answer for a lease that does not exist (clients match it).
pub const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";

/// A RangeDB lease error as etcd says it.
pub fn lease_status(e: Error) -> Status {
    match e {
        Error::NotFound(_) => Status::not_found(LEASE_NOT_FOUND),
        e => etcd_status(e),
    }
}

fn id_of(id: i64) -> Result<u64, Status> {
    u64::try_from(id)
        .ok()
        .filter(|id| *id != 0)
        .ok_or_else(|| Status::not_found(LEASE_NOT_FOUND))
}

impl Gateway {
    async fn now(&self) -> Timestamp {
        self.client.timestamps(1).await.unwrap_or(Timestamp::ZERO)
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for Gateway {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let req = request.into_inner();
        let id =
            u64::try_from(req.id).map_err(|_| Status::invalid_argument("negative lease ID"))?;
        let l = self
            .client
            .lease_grant(req.ttl.max(1), id)
            .await
            .map_err(|e| match e {
                Error::AlreadyExists(_) => {
                    Status::failed_precondition("etcdserver: lease already exists")
                }
                e => etcd_status(e),
            })?;
        Ok(Response::new(LeaseGrantResponse {
            header: Some(self.header(self.now().await)),
            id: l.id as i64,
            ttl: l.granted_ttl_secs,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let id = id_of(request.into_inner().id)?;
        self.client.lease_revoke(id).await.map_err(lease_status)?;
        Ok(Response::new(LeaseRevokeResponse {
            header: Some(self.header(self.now().await)),
        }))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let g = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(req)) = inbound.message().await {
                let ttl = match u64::try_from(req.id) {
                    Ok(id) if id != 0 => match g.client.lease_keep_alive(id).await {
                        Ok(l) => l.ttl_secs,
                        Err(Error::NotFound(_)) => 0,
                        Err(e) => {
                            let _ = tx.send(Err(etcd_status(e))).await;
                            return;
                        }
                    },
                    _ => 0,
                };
                let resp = LeaseKeepAliveResponse {
                    header: Some(g.header(g.now().await)),
                    id: req.id,
                    ttl,
                };
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let req = request.into_inner();
        let header = Some(self.header(self.now().await));
        let id = match u64::try_from(req.id) {
            Ok(id) if id != 0 => id,
            _ => {
                return Ok(Response::new(LeaseTimeToLiveResponse {
                    header,
                    id: req.id,
                    ttl: -1,
                    ..Default::default()
                }))
            }
        };
        match self.client.lease_time_to_live(id, req.keys).await {
            Ok(l) => Ok(Response::new(LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: l.ttl_secs,
                granted_ttl: l.granted_ttl_secs,
                keys: l.keys,
            })),
            Err(Error::NotFound(_)) => Ok(Response::new(LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: -1,
                ..Default::default()
            })),
            Err(e) => Err(etcd_status(e)),
        }
    }

    async fn lease_leases(
        &self,
        _: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let leases = self.client.lease_list().await.map_err(etcd_status)?;
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.header(self.now().await)),
            leases: leases
                .into_iter()
                .map(|l| LeaseStatus { id: l.id as i64 })
                .collect(),
        }))
    }
}
