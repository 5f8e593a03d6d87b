//! Outgoing Raft traffic: one task per peer node, one long-lived client stream
//! per peer, messages batched by whatever is queued when the stream is ready.
//! A full queue drops messages (Raft retransmits); a broken stream reconnects
//! with backoff. Every batch names its sender and the sender's client address,
//! which receivers record in the `Directory` for leader hints.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::Message;
use tokio::sync::{mpsc, watch};

use crate::proto::raft_transport_client::RaftTransportClient;
use crate::proto::{RaftBatch, RaftEnvelope};

/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 8192;
/// Most envelopes in one batch.
const MAX_BATCH: usize = 1024;

/// node id -> client address, learned from Raft traffic.
#[derive(Clone, Default)]
pub struct Directory {
    inner: Arc<Mutex<BTreeMap<u64, String>>>,
}

impl Directory {
    pub fn insert(&self, node_id: u64, client_address: String) {
        if client_address.is_empty() {
            return;
        }
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if m.get(&node_id) != Some(&client_address) {
            m.insert(node_id, client_address);
        }
    }
    pub fn get(&self, node_id: u64) -> Option<String> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&node_id)
            .cloned()
    }
    pub fn all(&self) -> BTreeMap<u64, String> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// node id -> peer address: the initial peer list, then whatever the
/// registry and incoming Raft traffic teach (nodes that joined later).
#[derive(Clone, Default)]
pub struct PeerAddresses {
    inner: Arc<Mutex<BTreeMap<u64, String>>>,
}

impl PeerAddresses {
    pub fn insert(&self, node_id: u64, addr: String) {
        if !addr.is_empty() {
            self.inner
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(node_id, addr);
        }
    }
    pub fn get(&self, node_id: u64) -> Option<String> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&node_id)
            .cloned()
    }
}

pub struct Transport {
    node_id: u64,
    client_address: String,
    peer_address: String,
    addresses: PeerAddresses,
    shutdown: watch::Receiver<bool>,
    senders: Mutex<BTreeMap<u64, mpsc::Sender<RaftEnvelope>>>,
}

impl Transport {
    /// A transport that opens one sender task per peer the first time a
    /// message goes to it, at the address `addresses` knows for it.
    pub fn start(
        node_id: u64,
        client_address: String,
        peer_address: String,
        addresses: PeerAddresses,
        shutdown: watch::Receiver<bool>,
    ) -> Transport {
        Transport {
            node_id,
            client_address,
            peer_address,
            addresses,
            shutdown,
            senders: Mutex::new(BTreeMap::new()),
        }
    }

    fn sender(&self, to: u64) -> Option<mpsc::Sender<RaftEnvelope>> {
        let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = senders.get(&to) {
            return Some(tx.clone());
        }
        let addr = self.addresses.get(to)?;
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        senders.insert(to, tx.clone());
        let me = (
            self.node_id,
            self.client_address.clone(),
            self.peer_address.clone(),
        );
        tokio::spawn(peer_loop(me, addr, rx, self.shutdown.clone()));
        Some(tx)
    }

    /// Queues a Raft message of `range_id`; never blocks.
    pub fn send(&self, range_id: u64, msg: Message) {
        if msg.to == self.node_id {
            return;
        }
        let Some(tx) = self.sender(msg.to) else {
            tracing::debug!(
                to = msg.to,
                range_id,
                "raft message to a node of unknown address dropped"
            );
            return;
        };
        let bytes = match msg.write_to_bytes() {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(%e, "cannot encode raft message");
                return;
            }
        };
        let _ = tx.try_send(RaftEnvelope {
            range_id,
            message: bytes,
        });
    }
}

async fn peer_loop(
    (node_id, client_address, peer_address): (u64, String, String),
    addr: String,
    mut rx: mpsc::Receiver<RaftEnvelope>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{addr}")) {
            Ok(e) => e.connect_timeout(Duration::from_secs(1)),
            Err(e) => {
                tracing::error!(%addr, %e, "bad peer address; raft traffic to it is dropped");
                return;
            }
        };
        let mut client = RaftTransportClient::new(endpoint.connect_lazy());
        let (btx, brx) = mpsc::channel::<RaftBatch>(16);
        let stream =
            futures::stream::unfold(brx, |mut r| async move { r.recv().await.map(|b| (b, r)) });
        let mut call = Box::pin(client.stream(stream));
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                res = &mut call => {
                    if let Err(status) = res {
                        tracing::debug!(%addr, %status, "raft stream to peer ended");
                    }
                    break;
                }
                env = rx.recv() => {
                    let Some(env) = env else { return };
                    let mut messages = vec![env];
                    while messages.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(m) => messages.push(m),
                            Err(_) => break,
                        }
                    }
                    let delay = crate::chaos::buggify_delay(0.01, Duration::from_millis(100));
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let batch = RaftBatch {
                        from_node: node_id,
                        from_client_address: client_address.clone(),
                        messages,
                        from_peer_address: peer_address.clone(),
                    };
                    if btx.send(batch).await.is_err() {
                        break;
                    }
                    backoff = Duration::from_millis(50);
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}
