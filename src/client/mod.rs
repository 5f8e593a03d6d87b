//! The Rust client SDK: a list of endpoints, leader routing with a cache,
//! retries with jittered backoff under one overall deadline — for retryable
//! errors only (`Error::is_retryable`); bad input fails at once.
//!
//! Routing: the cluster answers `NotLeader` with the leader's client address
//! when it knows it; the SDK goes there next and remembers it per key
//! namespace (system `_/` vs user keys, which are separate ranges).
//!
//! Writes are retried only when they certainly were not applied (not the
//! leader, connection refused, proposal dropped); an ambiguous failure (a
//! timeout, a connection lost mid-request) is returned to the caller as
//! `Timeout`/`Indeterminate`, because a blind retry could apply the write a
//! second time after other clients' writes (found by the simulator, seed 80).
//! Reads are retried on any retryable error. Uses only the API (proto) and
//! the shared error type.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use crate::error::{Error, Result};
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

/// Which range family a key belongs to (they may have different leaders).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    System,
    User,
}

fn family(key: &[u8]) -> Family {
    if crate::keys::is_system_key(key) {
        Family::System
    } else {
        Family::User
    }
}

#[derive(Default)]
struct State {
    channels: BTreeMap<String, Channel>,
    leaders: BTreeMap<Family, String>,
    next: usize,
}

pub struct Client {
    endpoints: Vec<String>,
    opts: ClientOptions,
    state: Mutex<State>,
}

/// A read's consistency (see `ReadConsistency` in the proto).
pub use crate::proto::ReadConsistency;

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

    fn pick(&self, fam: Family) -> String {
        let st = self.lock();
        if let Some(l) = st.leaders.get(&fam) {
            return l.clone();
        }
        let i = st.next % self.endpoints.len();
        self.endpoints[i].clone()
    }

    fn demote(&self, fam: Family, addr: &str) {
        let mut st = self.lock();
        if st.leaders.get(&fam).map(String::as_str) == Some(addr) {
            st.leaders.remove(&fam);
        }
        if let Some(i) = self.endpoints.iter().position(|e| e == addr) {
            st.next = i + 1;
        } else {
            st.next += 1;
        }
    }

    fn remember(&self, fam: Family, addr: &str) {
        self.lock().leaders.insert(fam, addr.to_string());
    }

    /// Runs `call` against the right node, following hints and retrying
    /// retryable failures until the deadline. For writes (`idempotent` false)
    /// an ambiguous failure — the write may have been applied — is returned at
    /// once instead of retried, so a write never lands twice.
    async fn with_retry<T, F, Fut>(&self, fam: Family, idempotent: bool, call: F) -> Result<T>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = std::result::Result<T, Status>>,
    {
        let start = tokio::time::Instant::now();
        let mut backoff = Duration::from_millis(20);
        let mut unreachable_in_a_row = 0usize;
        loop {
            let addr = self.pick(fam);
            let channel = self.channel(&addr)?;
            let outcome = tokio::time::timeout(self.opts.rpc_timeout, call(channel)).await;
            let err = match outcome {
                Ok(Ok(v)) => {
                    self.remember(fam, &addr);
                    return Ok(v);
                }
                Ok(Err(status)) if !is_server_status(&status) => {
                    self.demote(fam, &addr);
                    let reason = transport_message(&status);
                    if !never_sent(&reason) && !idempotent {
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
                    if !e.is_retryable() || (!idempotent && e.is_ambiguous()) {
                        return Err(e);
                    }
                    match &e {
                        Error::NotLeader {
                            leader: Some(h), ..
                        } if h.client_address.is_some() => {
                            let to = h.client_address.clone().unwrap_or_default();
                            if to != addr {
                                self.remember(fam, &to);
                                continue; // follow the hint at once
                            }
                            self.demote(fam, &addr);
                        }
                        _ => self.demote(fam, &addr),
                    }
                    e
                }
                Err(_) => {
                    self.demote(fam, &addr);
                    let e = Error::Timeout(format!(
                        "{addr} did not answer within {:?}",
                        self.opts.rpc_timeout
                    ));
                    if !idempotent {
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
            let jitter = madsim::rand::thread_rng().gen_range(0..=backoff.as_millis() as u64 / 2);
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
            .with_retry(family(key), true, |ch| {
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
        self.with_retry(family(key), false, |ch| {
            let req = req.clone();
            async move { KvClient::new(ch).put(req).await }
        })
        .await?;
        Ok(())
    }

    pub async fn delete(&self, key: &[u8]) -> Result<()> {
        let req = DeleteRequest { key: key.to_vec() };
        self.with_retry(family(key), false, |ch| {
            let req = req.clone();
            async move { KvClient::new(ch).delete(req).await }
        })
        .await?;
        Ok(())
    }

    /// Writes every pair atomically.
    pub async fn batch_put(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        let fam = pairs
            .first()
            .map(|(k, _)| family(k))
            .unwrap_or(Family::User);
        let req = BatchPutRequest {
            pairs: pairs
                .into_iter()
                .map(|(key, value)| KeyValue { key, value })
                .collect(),
        };
        self.with_retry(fam, false, |ch| {
            let req = req.clone();
            async move { KvClient::new(ch).batch_put(req).await }
        })
        .await?;
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
        let req = ScanRequest {
            start: start.to_vec(),
            end: end.to_vec(),
            limit,
            reverse,
            consistency: consistency as i32,
        };
        self.with_retry(family(start), true, |ch| {
            let req = req.clone();
            async move {
                let mut stream = KvClient::new(ch).scan(req).await?.into_inner();
                let mut out = Vec::new();
                while let Some(chunk) = stream.message().await? {
                    out.extend(chunk.pairs.into_iter().map(|kv| (kv.key, kv.value)));
                }
                Ok(out)
            }
        })
        .await
    }

    /// The status of the node at `addr` (no routing).
    pub async fn node_status(&self, addr: &str) -> Result<NodeStatusResponse> {
        let ch = self.channel(addr)?;
        match tokio::time::timeout(
            self.opts.rpc_timeout,
            AdminClient::new(ch).node_status(NodeStatusRequest {}),
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
