//! The etcd v3 gateway: etcd's gRPC API (KV, Watch, Lease, Cluster, Maintenance)
//! served on `--etcd-address`, so etcd clients, `etcdctl` and tools built
//! on etcd use RangeDB unchanged (docs/etcd-compatibility.md).
//!
//! It is an API adapter, like the CLI: it speaks to the cluster only
//! through the SDK (`client`), as a client of its own node, so it depends
//! on no server layer and every request it makes is routed, retried and
//! checked like any other client's. Revisions are MVCC commit timestamps:
//! monotone across the cluster but not dense.
//!
//! Invariants: a response header's revision is the commit timestamp of
//! the transaction that served a write, or the snapshot timestamp a read
//! was served at; every etcd write request is one RangeDB transaction.

mod cluster;
mod kv;
mod lease;
mod watch;

use std::net::SocketAddr;

use tonic::Status;

use crate::api::Timestamp;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::etcdpb::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer, ResponseHeader,
};

pub use kv::MAX_RANGE_KEYS;

/// What the gateway needs to know of its node.
#[derive(Clone, Debug)]
pub struct GatewayInfo {
    pub node_id: u64,
    pub cluster_id: String,
    /// The address etcd clients reach this gateway at.
    pub etcd_address: String,
    pub peer_address: String,
}

/// The gateway's services (all of them one value: a client and the
/// header facts).
#[derive(Clone)]
pub struct Gateway {
    client: Client,
    info: GatewayInfo,
    cluster_id: u64,
    /// Watches running on this gateway (all streams).
    watches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Gateway {
    pub fn new(client: Client, info: GatewayInfo) -> Gateway {
        // etcd's cluster id is a u64: a stable hash of ours (FNV-1a).
        let cluster_id = info
            .cluster_id
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        Gateway {
            client,
            info,
            cluster_id,
            watches: Default::default(),
        }
    }

    fn header(&self, revision: Timestamp) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.info.node_id,
            revision: revision.0 as i64,
            raft_term: 0,
        }
    }

    /// Serves etcd's API on `addr` until the process ends.
    pub async fn serve(self, addr: SocketAddr) -> Result<()> {
        let router = tonic::transport::Server::builder()
            .add_service(KvServer::new(self.clone()))
            .add_service(WatchServer::new(self.clone()))
            .add_service(LeaseServer::new(self.clone()))
            .add_service(ClusterServer::new(self.clone()))
            .add_service(MaintenanceServer::new(self));
        router
            .serve(addr)
            .await
            .map_err(|e| Error::Unavailable(format!("etcd gateway on {addr}: {e}")))
    }
}

/// A RangeDB error as etcd would say it (the messages etcd clients match).
pub fn etcd_status(e: Error) -> Status {
    match e {
        Error::Compacted { .. } | Error::TxnTooOld(_) => {
            Status::out_of_range("etcdserver: mvcc: required revision has been compacted")
        }
        Error::InvalidArgument(m) => Status::invalid_argument(m),
        Error::PermissionDenied(m) => Status::permission_denied(m),
        Error::Unauthenticated(m) => Status::unauthenticated(m),
        Error::NotFound(m) => Status::not_found(m),
        Error::Timeout(m) => Status::deadline_exceeded(m),
        Error::Busy(m) | Error::NoSpace(m) => Status::resource_exhausted(m),
        e if e.is_retryable() => Status::unavailable(e.to_string()),
        e => Status::internal(e.to_string()),
    }
}
