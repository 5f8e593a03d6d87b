//! grpc.health.v1. The overall service ("") and `rangedb.Kv` report SERVING
//! when this node is not draining, holds a range and knows a leader for
//! every range it holds (`readiness`, which the HTTP `/readyz` shares), NOT_SERVING
//! otherwise. Generated with madsim-tonic-build so it also runs in simulation
//! (the tonic-health crate is bound to real tonic).

use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status};

use crate::node::{NodeStatus, StoreHandle};

/// Whether a node with status `s` serves: it holds a range and knows a
/// leader for each; else why not.
pub fn readiness(s: &NodeStatus) -> Result<(), String> {
    if s.ranges.is_empty() {
        return Err("this node holds no range yet (starting or joining)".into());
    }
    let leaderless: Vec<String> = s
        .ranges
        .iter()
        .filter(|r| r.leader_id == 0)
        .map(|r| r.range_id.to_string())
        .collect();
    if leaderless.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "no known leader for range(s) {}",
            leaderless.join(", ")
        ))
    }
}

pub mod pb {
    tonic::include_proto!("grpc.health.v1");
}

use pb::health_check_response::ServingStatus;
use pb::health_server::Health;
use pb::{HealthCheckRequest, HealthCheckResponse};

#[derive(Clone)]
pub struct HealthService {
    store: StoreHandle,
}

impl HealthService {
    pub fn new(store: StoreHandle) -> Self {
        HealthService { store }
    }

    async fn status(&self, service: &str) -> Result<ServingStatus, Status> {
        if !matches!(
            service,
            "" | "rangedb.Kv" | "rangedb.RaftTransport" | "rangedb.Admin"
        ) {
            return Err(Status::not_found(format!("unknown service {service:?}")));
        }
        if self.store.is_draining() {
            return Ok(ServingStatus::NotServing);
        }
        Ok(match self.store.status().await {
            Ok(s) if readiness(&s).is_ok() => ServingStatus::Serving,
            _ => ServingStatus::NotServing,
        })
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let status = self.status(&request.get_ref().service).await?;
        Ok(Response::new(HealthCheckResponse {
            status: status as i32,
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // Sends the current status once; clients re-watch to poll.
        let status = self.status(&request.get_ref().service).await?;
        let item = Ok(HealthCheckResponse {
            status: status as i32,
        });
        Ok(Response::new(Box::pin(futures::stream::iter(vec![item]))))
    }
}
