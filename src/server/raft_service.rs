//! RaftTransport: receives batched Raft messages from peers and hands them to
//! the Store. With TLS, a batch's claimed sender is checked against the
//! connection's certificate (`security::peer`) before any message in it
//! is decoded; a stream that lies is ended with PermissionDenied.

use protobuf::Message as _;
use raft::eraftpb::Message;
use tonic::{Request, Response, Status, Streaming};

use crate::node::{StoreHandle, StoreMsg};
use crate::proto::raft_transport_server::RaftTransport;
use crate::proto::{RaftBatch, RaftDone};
use crate::security::peer::{check_raft_sender, PeerIdentity};

pub struct RaftService {
    store: StoreHandle,
    addresses: crate::node::PeerAddresses,
    /// Whether the listener is mutual TLS (senders prove who they are).
    tls: bool,
}

impl RaftService {
    pub fn new(store: StoreHandle, addresses: crate::node::PeerAddresses, tls: bool) -> Self {
        RaftService {
            store,
            addresses,
            tls,
        }
    }

    /// Who is at the other end of `req`'s connection.
    fn identity<T>(&self, req: &Request<T>) -> Result<PeerIdentity, Status> {
        if !self.tls {
            return Ok(PeerIdentity::Unverified);
        }
        #[cfg(not(madsim))]
        let id = crate::security::server_tls::identity(req);
        #[cfg(madsim)]
        let id = {
            let _ = req;
            Some(PeerIdentity::Unverified)
        };
        id.ok_or_else(|| Status::unauthenticated("Raft traffic needs a node certificate"))
    }
}

#[tonic::async_trait]
impl RaftTransport for RaftService {
    async fn stream(
        &self,
        request: Request<Streaming<RaftBatch>>,
    ) -> Result<Response<RaftDone>, Status> {
        let identity = self.identity(&request)?;
        let mut stream = request.into_inner();
        let tx = self.store.raft_sender();
        let mut snapshots = crate::node::SnapshotAssembler::default();
        while let Some(batch) = stream.message().await? {
            let known = self.addresses.get(batch.from_node);
            if let Err(why) = check_raft_sender(
                &identity,
                batch.from_node,
                &batch.from_peer_address,
                &batch.from_client_address,
                known.as_deref(),
            ) {
                tracing::warn!(from_node = batch.from_node, %why, "raft traffic refused");
                return Err(Status::permission_denied(why));
            }
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
                // rust-protobuf 2 recurses without limit on groups.
                if let Err(why) = crate::raft::wire_guard::check_message(&bytes) {
                    return Err(Status::invalid_argument(format!("bad raft message: {why}")));
                }
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
