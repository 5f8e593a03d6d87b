//! RaftTransport: receives batched Raft messages from peers and hands them to
//! the Store.

use protobuf::Message as _;
use raft::eraftpb::Message;
use tonic::{Request, Response, Status, Streaming};

use crate::node::{StoreHandle, StoreMsg};
use crate::proto::raft_transport_server::RaftTransport;
use crate::proto::{RaftBatch, RaftDone};

pub struct RaftService {
    store: StoreHandle,
    addresses: crate::node::PeerAddresses,
}

impl RaftService {
    pub fn new(store: StoreHandle, addresses: crate::node::PeerAddresses) -> Self {
        RaftService { store, addresses }
    }
}

#[tonic::async_trait]
impl RaftTransport for RaftService {
    async fn stream(
        &self,
        request: Request<Streaming<RaftBatch>>,
    ) -> Result<Response<RaftDone>, Status> {
        let mut stream = request.into_inner();
        let tx = self.store.raft_sender();
        let mut snapshots = crate::node::SnapshotAssembler::default();
        while let Some(batch) = stream.message().await? {
            self.store
                .directory()
                .insert(batch.from_node, batch.from_client_address);
            self.addresses
                .insert(batch.from_node, batch.from_peer_address);
            let mut msgs = Vec::with_capacity(batch.messages.len());
            for env in batch.messages {
                let bytes = match &env.chunk {
                    Some(chunk) => match snapshots.add(chunk, env.message) {
                        Some(whole) => {
                            let m = self.store.metrics();
                            m.snapshot(crate::metrics::RECEIVED, whole.len());
                            whole
                        }
                        None => continue,
                    },
                    None => env.message,
                };
                match Message::parse_from_bytes(&bytes) {
                    Ok(m) => msgs.push((env.range_id, m)),
                    Err(e) => {
                        return Err(Status::invalid_argument(format!("bad raft message: {e}")))
                    }
                }
            }
            if tx
                .send(StoreMsg::Raft {
                    from: batch.from_node,
                    msgs,
                })
                .await
                .is_err()
            {
                return Err(Status::unavailable("node is shutting down"));
            }
        }
        Ok(Response::new(RaftDone {}))
    }
}
