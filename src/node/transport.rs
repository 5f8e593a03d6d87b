//! Outgoing Raft traffic: one task per peer node, one long-lived client stream
//! per peer, messages batched by whatever is queued when the stream is ready.
//! A full queue drops messages (Raft retransmits); a broken stream reconnects
//! with backoff. Every batch names its sender and the sender's client address,
//! which receivers record in the `Directory` for leader hints.
//!
//! Snapshots take a second stream per peer: cut into SNAPSHOT_CHUNK_BYTES
//! chunks and paced at SNAPSHOT_BYTES_PER_SEC, so a large snapshot neither
//! floods the link nor delays heartbeats. A snapshot whose stream breaks is
//! lost whole; the leader sends it again (see `Replica::tick`).
//!
//! With TLS material (`crate::tls`) every stream is mutual TLS: the node's
//! certificate is what lets the receiver believe the sender's claimed id
//! and addresses (`security::peer`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::Message;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::proto::raft_transport_client::RaftTransportClient;
use crate::proto::{RaftBatch, RaftEnvelope, SnapshotChunk};
use crate::tls::TlsMaterial;

/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 8192;
/// Snapshots queued per peer before new ones are dropped.
const SNAPSHOT_QUEUE: usize = 4;

/// This node as senders name it: (node id, client address, peer address),
/// and the TLS identity that proves it (`crate::tls`; none: plaintext).
type Identity = (u64, String, String, Option<Arc<TlsMaterial>>);

/// Where a peer's snapshots wait: (range id, encoded MsgSnapshot).
type SnapshotQueue = mpsc::Sender<(u64, Vec<u8>)>;
/// Most envelopes in one batch.
const MAX_BATCH: usize = 1024;
/// A broken peer stream reconnects after this, doubling up to RECONNECT_MAX.
const RECONNECT_FIRST: Duration = Duration::from_millis(50);
const RECONNECT_MAX: Duration = Duration::from_secs(1);
/// A snapshot stream that broke reconnects after this.
const SNAPSHOT_RECONNECT: Duration = Duration::from_millis(200);
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Batches queued on a peer's Raft stream (and snapshot chunks on its
/// snapshot stream) while gRPC sends the previous ones.
const STREAM_QUEUE_BATCHES: usize = 16;
const SNAPSHOT_STREAM_CHUNKS: usize = 2;
/// In simulation, a batch is delayed up to BUGGIFY_DELAY this often.
const BUGGIFY_PROBABILITY: f64 = 0.01;
const BUGGIFY_DELAY: Duration = Duration::from_millis(100);

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
    /// Every known peer address, by node id.
    pub fn all(&self) -> Vec<String> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// What became of a Raft message handed to `Transport::send`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Addressed to this node (never sent).
    Local,
    Queued,
    /// A snapshot of this many bytes, queued for its chunked stream.
    Snapshot(usize),
    /// Unknown address, full queue, or not encodable.
    Dropped,
}

pub struct Transport {
    node_id: u64,
    client_address: String,
    peer_address: String,
    addresses: PeerAddresses,
    tls: Option<Arc<TlsMaterial>>,
    shutdown: watch::Receiver<bool>,
    senders: Mutex<BTreeMap<u64, mpsc::Sender<RaftEnvelope>>>,
    /// Per peer: (range id, encoded MsgSnapshot) to chunk and pace.
    snapshot_senders: Mutex<BTreeMap<u64, SnapshotQueue>>,
}

impl Transport {
    /// A transport that opens one sender task per peer the first time a
    /// message goes to it, at the address `addresses` knows for it.
    pub fn start(
        node_id: u64,
        client_address: String,
        peer_address: String,
        addresses: PeerAddresses,
        tls: Option<Arc<TlsMaterial>>,
        shutdown: watch::Receiver<bool>,
    ) -> Transport {
        Transport {
            node_id,
            client_address,
            peer_address,
            addresses,
            tls,
            shutdown,
            senders: Mutex::new(BTreeMap::new()),
            snapshot_senders: Mutex::new(BTreeMap::new()),
        }
    }

    /// The queue to peer `to` in `lanes`, starting its sender task (`run`,
    /// given this node's identity, the peer's address and the queue's
    /// receiving end) the first time.
    fn lane<T, F>(
        &self,
        lanes: &Mutex<BTreeMap<u64, mpsc::Sender<T>>>,
        to: u64,
        capacity: usize,
        run: impl FnOnce(Identity, String, mpsc::Receiver<T>, watch::Receiver<bool>) -> F,
    ) -> Option<mpsc::Sender<T>>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut lanes = lanes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = lanes.get(&to) {
            return Some(tx.clone());
        }
        let addr = self.addresses.get(to)?;
        let (tx, rx) = mpsc::channel(capacity);
        lanes.insert(to, tx.clone());
        let me = (
            self.node_id,
            self.client_address.clone(),
            self.peer_address.clone(),
            self.tls.clone(),
        );
        tokio::spawn(run(me, addr, rx, self.shutdown.clone()).in_current_span());
        Some(tx)
    }

    fn snapshot_sender(&self, to: u64) -> Option<SnapshotQueue> {
        self.lane(&self.snapshot_senders, to, SNAPSHOT_QUEUE, snapshot_loop)
    }

    fn sender(&self, to: u64) -> Option<mpsc::Sender<RaftEnvelope>> {
        self.lane(&self.senders, to, PEER_QUEUE, peer_loop)
    }

    /// Queues a Raft message of `range_id`; never blocks.
    pub fn send(&self, range_id: u64, msg: Message) -> Sent {
        if msg.to == self.node_id {
            return Sent::Local;
        }
        let Some(tx) = self.sender(msg.to) else {
            tracing::debug!(
                to = msg.to,
                range_id,
                "raft message to a node of unknown address dropped"
            );
            return Sent::Dropped;
        };
        let bytes = match msg.write_to_bytes() {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(%e, "cannot encode raft message");
                return Sent::Dropped;
            }
        };
        if msg.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot {
            let len = bytes.len();
            let queued = self
                .snapshot_sender(msg.to)
                .is_some_and(|stx| stx.try_send((range_id, bytes)).is_ok());
            if !queued {
                tracing::debug!(to = msg.to, range_id, "snapshot queue full; dropped");
                return Sent::Dropped;
            }
            return Sent::Snapshot(len);
        }
        match tx.try_send(RaftEnvelope {
            range_id,
            message: bytes,
            chunk: None,
        }) {
            Ok(()) => Sent::Queued,
            Err(_) => Sent::Dropped,
        }
    }
}

async fn peer_loop(
    (node_id, client_address, peer_address, tls): Identity,
    addr: String,
    mut rx: mpsc::Receiver<RaftEnvelope>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = RECONNECT_FIRST;
    loop {
        let endpoint = match crate::tls::endpoint(&addr, tls.as_deref()) {
            Ok(e) => e.connect_timeout(PEER_CONNECT_TIMEOUT),
            Err(e) => {
                tracing::error!(%addr, %e, "bad peer address; raft traffic to it is dropped");
                return;
            }
        };
        let mut client = RaftTransportClient::new(endpoint.connect_lazy());
        let (btx, brx) = mpsc::channel::<RaftBatch>(STREAM_QUEUE_BATCHES);
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
                    let delay = crate::chaos::buggify_delay(BUGGIFY_PROBABILITY, BUGGIFY_DELAY);
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
                    backoff = RECONNECT_FIRST;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}

/// Sends snapshots to one peer on their own stream, in chunks, paced.
async fn snapshot_loop(
    (node_id, client_address, peer_address, tls): Identity,
    addr: String,
    mut rx: mpsc::Receiver<(u64, Vec<u8>)>,
    mut shutdown: watch::Receiver<bool>,
) {
    use crate::config::{SNAPSHOT_BYTES_PER_SEC, SNAPSHOT_CHUNK_BYTES};
    let mut next_id = 0u64;
    'connect: loop {
        let endpoint = match crate::tls::endpoint(&addr, tls.as_deref()) {
            Ok(e) => e.connect_timeout(PEER_CONNECT_TIMEOUT),
            Err(_) => return,
        };
        let mut client = RaftTransportClient::new(endpoint.connect_lazy());
        let (btx, brx) = mpsc::channel::<RaftBatch>(SNAPSHOT_STREAM_CHUNKS);
        let stream =
            futures::stream::unfold(brx, |mut r| async move { r.recv().await.map(|b| (b, r)) });
        let mut call = Box::pin(client.stream(stream));
        loop {
            let (range_id, bytes) = tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                _ = &mut call => break,
                next = rx.recv() => match next {
                    Some(s) => s,
                    None => return,
                },
            };
            next_id += 1;
            let total = bytes.len().div_ceil(SNAPSHOT_CHUNK_BYTES).max(1) as u32;
            for (index, piece) in bytes.chunks(SNAPSHOT_CHUNK_BYTES.max(1)).enumerate() {
                let batch = RaftBatch {
                    from_node: node_id,
                    from_client_address: client_address.clone(),
                    messages: vec![RaftEnvelope {
                        range_id,
                        message: piece.to_vec(),
                        chunk: Some(SnapshotChunk {
                            snapshot_id: next_id,
                            index: index as u32,
                            total,
                        }),
                    }],
                    from_peer_address: peer_address.clone(),
                };
                let pace =
                    Duration::from_secs_f64(piece.len() as f64 / SNAPSHOT_BYTES_PER_SEC as f64);
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => return,
                    _ = &mut call => {
                        tracing::debug!(%addr, range_id, "snapshot stream broke; the leader will resend");
                        tokio::time::sleep(SNAPSHOT_RECONNECT).await;
                        continue 'connect;
                    }
                    sent = btx.send(batch) => if sent.is_err() { continue 'connect; },
                }
                tokio::time::sleep(pace).await;
            }
        }
        tokio::time::sleep(SNAPSHOT_RECONNECT).await;
    }
}

/// The most bytes one snapshot may take while it is reassembled (the Raft
/// batch limit): a peer claiming an endless snapshot cannot grow a node's
/// memory past it.
pub const MAX_SNAPSHOT_BYTES: usize = 1 << 30;

/// Reassembles snapshot chunks arriving on one stream (in order).
#[derive(Default)]
pub struct SnapshotAssembler {
    current: Option<(u64, u32, Vec<u8>)>,
}

impl SnapshotAssembler {
    /// Adds a chunk; returns the whole encoded message once complete.
    /// A chunk out of order, one whose index is not below its total, or
    /// one that would pass MAX_SNAPSHOT_BYTES drops the partial snapshot
    /// (the leader resends it).
    pub fn add(&mut self, chunk: &SnapshotChunk, data: Vec<u8>) -> Option<Vec<u8>> {
        if chunk.index >= chunk.total {
            self.current = None;
            return None;
        }
        if chunk.index == 0 {
            self.current = Some((chunk.snapshot_id, 0, Vec::new()));
        }
        let (id, next, buf) = self.current.as_mut()?;
        if *id != chunk.snapshot_id
            || *next != chunk.index
            || buf.len().saturating_add(data.len()) > MAX_SNAPSHOT_BYTES
        {
            self.current = None;
            return None;
        }
        buf.extend_from_slice(&data);
        *next += 1;
        if *next == chunk.total {
            return self.current.take().map(|(_, _, b)| b);
        }
        None
    }

    /// Bytes of the snapshot being reassembled.
    pub fn buffered(&self) -> usize {
        self.current.as_ref().map_or(0, |(_, _, b)| b.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_reassemble_in_order_and_gaps_drop_the_snapshot() {
        let chunk = |id, index, total| SnapshotChunk {
            snapshot_id: id,
            index,
            total,
        };
        let mut a = SnapshotAssembler::default();
        assert_eq!(a.add(&chunk(1, 0, 3), b"ab".to_vec()), None);
        assert_eq!(a.add(&chunk(1, 1, 3), b"cd".to_vec()), None);
        assert_eq!(
            a.add(&chunk(1, 2, 3), b"e".to_vec()),
            Some(b"abcde".to_vec())
        );
        // A lost chunk: the rest is ignored until the next snapshot starts.
        assert_eq!(a.add(&chunk(2, 0, 3), b"x".to_vec()), None);
        assert_eq!(a.add(&chunk(2, 2, 3), b"z".to_vec()), None);
        assert_eq!(a.add(&chunk(2, 1, 3), b"y".to_vec()), None);
        assert_eq!(a.add(&chunk(3, 0, 1), b"w".to_vec()), Some(b"w".to_vec()));
    }
}
