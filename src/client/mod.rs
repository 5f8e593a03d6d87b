//! The Rust client SDK: a list of endpoints, routing with a range cache,
//! retries with jittered backoff under one overall deadline.
//!
//! Routing: the server routes each request by key to the range holding it;
//! a node that does not lead that range answers `NotLeader` with the range's
//! span and the leader's address. The SDK caches span -> leader and sends the
//! next request for any key in that span straight to the leader. A range that
//! split under a request answers `KeyNotInRange` with its new span. Scans
//! that cross ranges continue from the `resume_key` the server returns, so
//! they stream in key order across any number of ranges. A batch whose keys
//! span several ranges is split into one atomic batch per range (CAVEAT:
//! atomic per range, not across ranges, until transactions land).
//!
//! Writes are retried only when they certainly were not applied (not the
//! leader, connection refused, proposal dropped); an ambiguous failure (a
//! timeout, a connection lost mid-request) is returned to the caller as
//! `Timeout`/`Indeterminate`, because a blind retry could apply the write a
//! second time after other clients' writes (found by the simulator, seed 76).
//! Reads are retried on any retryable error. Uses only the API (proto), the
//! keyspace encoding and the shared error type.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use crate::config::MAX_ADMIN_MESSAGE;
use crate::error::{Error, Result, Span};
use crate::keys::data_key;
use crate::proto::admin_client::AdminClient;
use crate::proto::kv_client::KvClient;
use crate::proto::*;
use crate::wire::{from_status, is_server_status};

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Overall time budget of one call, retries included.
    pub deadline: Duration,
    /// Budget of one attempt (must exceed the server's request timeout).
    pub rpc_timeout: Duration,
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            deadline: Duration::from_secs(15),
            rpc_timeout: Duration::from_secs(6),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

/// A cached range: its end and, if known, its leader's address.
type CachedRange = (Vec<u8>, Option<String>);

#[derive(Default)]
struct State {
    channels: BTreeMap<String, Channel>,
    /// Known ranges: start -> (end, leader address), internal keys.
    ranges: BTreeMap<Vec<u8>, CachedRange>,
    /// Endpoint to try when no range is known for a key.
    next: usize,
}

pub struct Client {
    endpoints: Vec<String>,
    opts: ClientOptions,
    state: Mutex<State>,
}

/// A read's consistency (see `ReadConsistency` in the proto).
pub use crate::proto::ReadConsistency;

/// How a call may be retried.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Reads: any retryable error.
    Idempotent,
    /// Writes: only failures that certainly did not apply.
    Write,
    /// Batches: like writes, and a `KeyNotInRange` goes back to the caller,
    /// which splits the batch.
    Batch,
}

impl Client {
    pub fn new(endpoints: Vec<String>, opts: ClientOptions) -> Result<Client> {
        let endpoints: Vec<String> = endpoints
            .into_iter()
            .map(|e| e.trim().trim_start_matches("http://").to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(Error::Config("no endpoints given".into()));
        }
        for e in &endpoints {
            if !e.contains(':') {
                return Err(Error::Config(format!(
                    "endpoint {e:?} has no port (want host:port)"
                )));
            }
        }
        Ok(Client {
            endpoints,
            opts,
            state: Mutex::new(State::default()),
        })
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn channel(&self, addr: &str) -> Result<Channel> {
        let mut st = self.lock();
        if let Some(c) = st.channels.get(addr) {
            return Ok(c.clone());
        }
        let ch = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Error::Config(format!("bad endpoint {addr}: {e}")))?
            .connect_timeout(self.opts.connect_timeout)
            .timeout(self.opts.rpc_timeout)
            .connect_lazy();
        st.channels.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }

    fn cached<'a>(st: &'a mut State, key: &[u8]) -> Option<(&'a Vec<u8>, &'a mut CachedRange)> {
        st.ranges
            .range_mut(..=key.to_vec())
            .next_back()
            .filter(|(_, (end, _))| key < end.as_slice())
    }

    /// Where to send a request for internal key `key`.
    fn pick(&self, key: &[u8]) -> String {
        let mut st = self.lock();
        if let Some((_, (_, Some(addr)))) = Self::cached(&mut st, key) {
            return addr.clone();
        }
        self.endpoints[st.next % self.endpoints.len()].clone()
    }

    /// Records a range's span and leader, replacing what it overlaps.
    fn learn(&self, span: &Span, leader: Option<String>) {
        if !span.is_known() {
            return;
        }
        let mut st = self.lock();
        let stale: Vec<Vec<u8>> = st
            .ranges
            .iter()
            .filter(|(s, (e, _))| {
                s.as_slice() < span.end.as_slice() && span.start.as_slice() < e.as_slice()
            })
            .map(|(s, _)| s.clone())
            .collect();
        for s in stale {
            st.ranges.remove(&s);
        }
        st.ranges
            .insert(span.start.clone(), (span.end.clone(), leader));
    }

    /// `addr` answered for `key`: prefer it next time.
    fn remember(&self, key: &[u8], addr: &str) {
        let mut st = self.lock();
        if let Some((_, entry)) = Self::cached(&mut st, key) {
            entry.1 = Some(addr.to_string());
        } else if let Some(i) = self.endpoints.iter().position(|e| e == addr) {
            st.next = i;
        }
    }

    /// `addr` failed for `key`: forget it as leader and move on.
    fn demote(&self, key: &[u8], addr: &str) {
        let mut st = self.lock();
        if let Some((_, entry)) = Self::cached(&mut st, key) {
            if entry.1.as_deref() == Some(addr) {
                entry.1 = None;
            }
        }
        st.next = match self.endpoints.iter().position(|e| e == addr) {
            Some(i) => i + 1,
            None => st.next + 1,
        };
    }

    /// Runs `call` against the node that should serve `key` (internal),
    /// following hints and retrying what `retry` allows until the deadline.
    async fn with_retry<T, F, Fut>(&self, key: &[u8], retry: Retry, call: F) -> Result<T>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = std::result::Result<T, Status>>,
    {
        let start = tokio::time::Instant::now();
        let mut backoff = Duration::from_millis(20);
        let mut unreachable_in_a_row = 0usize;
        let mut hops = 0usize;
        // A hint to follow on the next attempt (also when the span is unknown).
        let mut hinted: Option<String> = None;
        loop {
            let addr = hinted.take().unwrap_or_else(|| self.pick(key));
            let channel = self.channel(&addr)?;
            let outcome = tokio::time::timeout(self.opts.rpc_timeout, call(channel)).await;
            let err = match outcome {
                Ok(Ok(v)) => {
                    self.remember(key, &addr);
                    return Ok(v);
                }
                Ok(Err(status)) if !is_server_status(&status) => {
                    self.demote(key, &addr);
                    let reason = transport_message(&status);
                    if !never_sent(&reason) && retry != Retry::Idempotent {
                        return Err(Error::Indeterminate(format!(
                            "connection to {addr} failed during the write: {reason}"
                        )));
                    }
                    unreachable_in_a_row += 1;
                    Error::Unavailable(format!("cannot reach {addr}: {reason}"))
                }
                Ok(Err(status)) => {
                    unreachable_in_a_row = 0;
                    let e = from_status(&status);
                    if !e.is_retryable() || (retry != Retry::Idempotent && e.is_ambiguous()) {
                        return Err(e);
                    }
                    match &e {
                        Error::NotLeader { leader, span, .. } => {
                            let to = leader.as_ref().and_then(|h| h.client_address.clone());
                            self.learn(span, to.clone());
                            match to {
                                Some(to) if to != addr && hops < 8 => {
                                    hops += 1;
                                    hinted = Some(to);
                                    continue; // follow the hint at once
                                }
                                _ => self.demote(key, &addr),
                            }
                        }
                        // Frozen for a merge, or changed under the write:
                        // back off and retry (a batch re-splits on the
                        // KeyNotInRange the retry gets if the range shrank).
                        Error::EpochMismatch { current, .. } => {
                            self.learn(current, None);
                        }
                        Error::KeyNotInRange { span, .. } => {
                            self.learn(span, Some(addr.clone()));
                            if retry == Retry::Batch {
                                return Err(e);
                            }
                        }
                        _ => self.demote(key, &addr),
                    }
                    e
                }
                Err(_) => {
                    self.demote(key, &addr);
                    let e = Error::Timeout(format!(
                        "{addr} did not answer within {:?}",
                        self.opts.rpc_timeout
                    ));
                    if retry != Retry::Idempotent {
                        return Err(e);
                    }
                    e
                }
            };
            // Every endpoint refused connections, repeatedly: the cluster is down.
            if unreachable_in_a_row >= 3 * self.endpoints.len() {
                return Err(Error::Unavailable(format!(
                    "cannot reach the cluster at {} ({})",
                    self.endpoints.join(","),
                    err.to_string().trim_start_matches("unavailable: ")
                )));
            }
            let elapsed = start.elapsed();
            if elapsed + backoff >= self.opts.deadline {
                return Err(match err {
                    Error::Unavailable(m) => {
                        Error::Unavailable(format!("gave up after {:?}: {m}", self.opts.deadline))
                    }
                    e => e,
                });
            }
            // The runtime's RNG (seeded in simulation).
            let jitter = madsim::rand::random::<u64>() % (backoff.as_millis() as u64 / 2 + 1);
            tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get_with(key, ReadConsistency::Linearizable).await
    }

    pub async fn get_with(
        &self,
        key: &[u8],
        consistency: ReadConsistency,
    ) -> Result<Option<Vec<u8>>> {
        let req = GetRequest {
            key: key.to_vec(),
            consistency: consistency as i32,
        };
        let resp = self
            .with_retry(&data_key(key), Retry::Idempotent, |ch| {
                let req = req.clone();
                async move { KvClient::new(ch).get(req).await }
            })
            .await?
            .into_inner();
        Ok(resp.found.then_some(resp.value))
    }

    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let req = PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
        };
        self.with_retry(&data_key(key), Retry::Write, |ch| {
            let req = req.clone();
            async move { KvClient::new(ch).put(req).await }
        })
        .await?;
        Ok(())
    }

    pub async fn delete(&self, key: &[u8]) -> Result<()> {
        let req = DeleteRequest { key: key.to_vec() };
        self.with_retry(&data_key(key), Retry::Write, |ch| {
            let req = req.clone();
            async move { KvClient::new(ch).delete(req).await }
        })
        .await?;
        Ok(())
    }

    /// Writes every pair; atomically when they share a range (see module docs).
    pub async fn batch_put(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        let mut queue = vec![pairs];
        let mut rounds = 0;
        while let Some(batch) = queue.pop() {
            let Some(first) = batch.first().map(|(k, _)| data_key(k)) else {
                continue;
            };
            let req = BatchPutRequest {
                pairs: batch
                    .iter()
                    .map(|(key, value)| KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                    })
                    .collect(),
            };
            let result = self
                .with_retry(&first, Retry::Batch, |ch| {
                    let req = req.clone();
                    async move { KvClient::new(ch).batch_put(req).await }
                })
                .await;
            match result {
                Ok(_) => {}
                Err(Error::KeyNotInRange { span, .. }) if span.is_known() && rounds < 1000 => {
                    rounds += 1;
                    let (inside, rest): (Vec<_>, Vec<_>) = batch
                        .into_iter()
                        .partition(|(k, _)| span.contains(&data_key(k)));
                    if !rest.is_empty() {
                        queue.push(rest);
                    }
                    if !inside.is_empty() {
                        queue.push(inside);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Pairs with `start <= key < end` (empty `end`: to the end), at most
    /// `limit` (0: server default), in key order or reversed.
    pub async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u32,
        reverse: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scan_with(start, end, limit, reverse, ReadConsistency::Linearizable)
            .await
    }

    pub async fn scan_with(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u32,
        reverse: bool,
        consistency: ReadConsistency,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let want = if limit == 0 {
            crate::config::DEFAULT_SCAN_LIMIT
        } else {
            limit as usize
        };
        let (mut start, mut end) = (start.to_vec(), end.to_vec());
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        loop {
            let remaining = (want - out.len()) as u32;
            let req = ScanRequest {
                start: start.clone(),
                end: end.clone(),
                limit: remaining,
                reverse,
                consistency: consistency as i32,
            };
            // Route by the key the scan begins at: the start, or (reverse) the end.
            let route = if reverse && !end.is_empty() {
                predecessor(&data_key(&end))
            } else {
                data_key(&start)
            };
            let (pairs, resume) = self
                .with_retry(&route, Retry::Idempotent, |ch| {
                    let req = req.clone();
                    async move {
                        let mut stream = KvClient::new(ch).scan(req).await?.into_inner();
                        let mut pairs = Vec::new();
                        let mut resume = Vec::new();
                        while let Some(chunk) = stream.message().await? {
                            pairs.extend(chunk.pairs.into_iter().map(|kv| (kv.key, kv.value)));
                            if !chunk.resume_key.is_empty() {
                                resume = chunk.resume_key;
                            }
                        }
                        Ok((pairs, resume))
                    }
                })
                .await?;
            out.extend(pairs);
            if resume.is_empty() || out.len() >= want {
                out.truncate(want);
                return Ok(out);
            }
            if reverse {
                end = resume;
            } else {
                start = resume;
            }
        }
    }

    /// One membership change of the range starting at `start_key` (internal).
    pub async fn change_replicas(
        &self,
        start_key: &[u8],
        range_id: u64,
        change: crate::range::ReplicaChange,
        expected_conf_ver: u64,
    ) -> Result<()> {
        use crate::proto::change_replicas_request::Kind;
        use crate::range::ReplicaChange;
        let (kind, node_id) = match change {
            ReplicaChange::AddLearner(n) => (Kind::AddLearner, n),
            ReplicaChange::Promote(n) => (Kind::Promote, n),
            ReplicaChange::Remove(n) => (Kind::Remove, n),
            ReplicaChange::TransferLeader(n) => (Kind::TransferLeader, n),
        };
        let req = ChangeReplicasRequest {
            range_id,
            kind: kind as i32,
            node_id,
            expected_conf_ver,
        };
        self.with_retry(start_key, Retry::Idempotent, |ch| async move {
            AdminClient::new(ch).change_replicas(req).await
        })
        .await?;
        Ok(())
    }

    /// Starts draining node `node_id` (the placement driver moves its replicas).
    pub async fn decommission_node(&self, node_id: u64) -> Result<()> {
        let req = DecommissionNodeRequest { node_id };
        self.with_retry(
            &data_key(b"_/cluster/nodes/"),
            Retry::Idempotent,
            |ch| async move { AdminClient::new(ch).decommission_node(req).await },
        )
        .await?;
        Ok(())
    }

    /// Asks the cluster for a node id for a new node: (node id, cluster id).
    pub async fn join_cluster(
        &self,
        peer_address: &str,
        client_address: &str,
    ) -> Result<(u64, String)> {
        let req = JoinClusterRequest {
            peer_address: peer_address.into(),
            client_address: client_address.into(),
        };
        let r = self
            .with_retry(&data_key(b"_/cluster/nodes/"), Retry::Idempotent, |ch| {
                let req = req.clone();
                async move { AdminClient::new(ch).join_cluster(req).await }
            })
            .await?
            .into_inner();
        Ok((r.node_id, r.cluster_id))
    }

    /// Records this node's addresses in the registry.
    pub async fn register_node(
        &self,
        node_id: u64,
        peer_address: &str,
        client_address: &str,
    ) -> Result<()> {
        let req = RegisterNodeRequest {
            node_id,
            peer_address: peer_address.into(),
            client_address: client_address.into(),
        };
        self.with_retry(&data_key(b"_/cluster/nodes/"), Retry::Idempotent, |ch| {
            let req = req.clone();
            async move { AdminClient::new(ch).register_node(req).await }
        })
        .await?;
        Ok(())
    }

    /// Changes a cluster setting; returns the full key written.
    pub async fn set_config(&self, key: &str, value: &str) -> Result<String> {
        let req = SetConfigRequest {
            key: key.to_string(),
            value: value.to_string(),
        };
        // Setting a key to a value is idempotent: an ambiguous failure (the
        // leader removed mid-write, seed 2513) is safely retried.
        let resp = self
            .with_retry(&data_key(b"_/cluster/config/"), Retry::Idempotent, |ch| {
                let req = req.clone();
                async move { AdminClient::new(ch).set_config(req).await }
            })
            .await?;
        Ok(resp.into_inner().key)
    }

    /// Records a range descriptor in the range directory (idempotent: the
    /// directory keeps the newest epoch).
    pub async fn publish_range(&self, desc: RangeDescriptorMsg) -> Result<()> {
        self.with_retry(&data_key(b"_/partitions/"), Retry::Idempotent, |ch| {
            let req = desc.clone();
            async move { AdminClient::new(ch).publish_range(req).await }
        })
        .await?;
        Ok(())
    }

    /// Splits the range holding `key` at `key` (an admin operation). A
    /// `sticky` split is never merged away by the placement driver.
    pub async fn split(&self, key: &[u8], sticky: bool) -> Result<()> {
        let req = SplitRangeRequest {
            key: key.to_vec(),
            sticky,
        };
        self.with_retry(&data_key(key), Retry::Idempotent, |ch| {
            let req = req.clone();
            async move { AdminClient::new(ch).split_range(req).await }
        })
        .await?;
        Ok(())
    }

    /// Freezes range `range_id` (starting at internal key `start_key`) for a
    /// merge: its final descriptor and data.
    pub async fn freeze_range(
        &self,
        start_key: &[u8],
        range_id: u64,
        expected_version: u64,
    ) -> Result<FreezeRangeResponse> {
        let req = FreezeRangeRequest {
            range_id,
            expected_version,
        };
        let resp = self
            .with_retry(start_key, Retry::Idempotent, |ch| async move {
                AdminClient::new(ch)
                    .max_decoding_message_size(MAX_ADMIN_MESSAGE)
                    .freeze_range(req)
                    .await
            })
            .await?;
        Ok(resp.into_inner())
    }

    /// Merges the frozen right neighbour (from `freeze_range`) into range
    /// `range_id` (starting at internal key `start_key`).
    pub async fn merge_ranges(
        &self,
        start_key: &[u8],
        range_id: u64,
        expected_version: u64,
        frozen: FreezeRangeResponse,
    ) -> Result<()> {
        let req = MergeRangesRequest {
            range_id,
            expected_version,
            rhs: frozen.descriptor,
            pairs: frozen.pairs,
        };
        self.with_retry(start_key, Retry::Idempotent, |ch| {
            let req = req.clone();
            async move {
                AdminClient::new(ch)
                    .max_encoding_message_size(MAX_ADMIN_MESSAGE)
                    .merge_ranges(req)
                    .await
            }
        })
        .await?;
        Ok(())
    }

    /// Tells the node at `addr` that its replica of `range_id` is stale.
    pub async fn gc_replica(
        &self,
        addr: &str,
        range_id: u64,
        conf_ver: u64,
        merged: bool,
    ) -> Result<()> {
        let ch = self.channel(addr)?;
        let req = GcReplicaRequest {
            range_id,
            conf_ver,
            merged,
        };
        match tokio::time::timeout(self.opts.rpc_timeout, AdminClient::new(ch).gc_replica(req))
            .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(s)) => Err(from_status(&s)),
            Err(_) => Err(Error::Timeout(format!("{addr} did not answer"))),
        }
    }

    /// The status of the node at `addr` (no routing).
    pub async fn node_status(&self, addr: &str) -> Result<NodeStatusResponse> {
        let ch = self.channel(addr)?;
        match tokio::time::timeout(
            self.opts.rpc_timeout,
            AdminClient::new(ch)
                .max_decoding_message_size(MAX_ADMIN_MESSAGE)
                .node_status(NodeStatusRequest {}),
        )
        .await
        {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) if !is_server_status(&s) => Err(Error::Unavailable(format!(
                "cannot reach {addr}: {}",
                transport_message(&s)
            ))),
            Ok(Err(s)) => Err(from_status(&s)),
            Err(_) => Err(Error::Timeout(format!("{addr} did not answer"))),
        }
    }
}

/// A key just below `key` for routing a reverse scan to the range holding
/// the last key before `key`.
fn predecessor(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    match k.last_mut() {
        Some(0) => {
            k.pop();
            k
        }
        Some(b) => {
            *b -= 1;
            k.extend_from_slice(&[0xff; 8]);
            k
        }
        None => k,
    }
}

/// Whether a transport failure happened before the request left (so a write
/// certainly was not applied).
fn never_sent(reason: &str) -> bool {
    reason == "connection refused"
        || reason.contains("tcp connect")
        || reason.contains("connect error")
}

/// A short human reason for a transport-level failure.
fn transport_message(s: &Status) -> String {
    use std::error::Error as _;
    let mut parts = vec![s.message().to_string()];
    let mut cur = s.source();
    while let Some(e) = cur {
        parts.push(e.to_string());
        cur = e.source();
    }
    let text = parts.join(": ");
    if text.contains("Connection refused") || text.contains("ConnectionRefused") {
        "connection refused".into()
    } else if text.trim().is_empty() {
        format!("{:?}", s.code())
    } else {
        text
    }
}
