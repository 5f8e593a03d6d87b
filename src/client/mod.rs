//! The Rust client SDK: a list of endpoints, routing with a range cache,
//! retries with jittered backoff under one overall deadline.
//!
//! Routing: the server routes each request by key to the range holding it;
//! a node that does not lead that range answers `NotLeader` with the range's
//! span and the leader's address. The SDK caches span -> leader and sends the
//! next request for any key in that span straight to the leader; after a
//! few redirects it loads the whole cache from one node (`locate.rs`,
//! `Kv/Locate`) rather than learning one range per redirect. A range that
//! split under a request answers `KeyNotInRange` with its new span. Scans
//! that cross ranges continue from the `resume_key` the server returns, so
//! they stream in key order across any number of ranges. A batch whose keys
//! span several ranges commits as one transaction (`transaction.rs`).
//!
//! Writes are retried only when they certainly were not applied (not the
//! leader, connection refused, proposal dropped); an ambiguous failure (a
//! timeout, a connection lost mid-request) is returned to the caller as
//! `Timeout`/`Indeterminate`, because a blind retry could apply the write a
//! second time after other clients' writes (found by the simulator, seed 76).
//! Reads are retried on any retryable error. Uses only the API (proto), the
//! public contract (`api`: limits, `_/` names, route keys), the status
//! codec (`wire`) and the shared error type — never the server's layers.
//!
//! Route keys (`api::route`) order keys the way ranges do (system keys
//! first); the server sends range spans as route keys, so the SDK's cache
//! never depends on the engine's key layout.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use conn::{Conn, Creds};
use tonic::transport::Channel;
use tonic::Status;

use crate::error::{overlaps, Error, Result, Span};
use crate::tls::TlsMaterial;
use crate::wire::{from_status, is_server_status};

mod admin;
mod auth;
mod backup;
pub mod conn;
pub mod faults;
mod gc_pin;
mod kv;
mod lease;
mod locate;
pub mod transaction;
pub mod tso;
mod txn_rpc;
pub mod watch;

pub use faults::{CommitFaults, CommitPoint, Fault};
pub use transaction::{Transaction, TxnOptions, TxnRecord};
pub use tso::{TimestampSource, TsoBatcher};
pub use txn_rpc::TxnState;
pub use watch::{WatchOptions, WatchUpdate, Watcher};

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Overall time budget of one call, retries included.
    pub deadline: Duration,
    /// Budget of one attempt (must exceed the server's request timeout).
    pub rpc_timeout: Duration,
    pub connect_timeout: Duration,
    /// TLS: the CA to trust and the identity to present (`crate::tls`);
    /// `None`: plaintext.
    pub tls: Option<Arc<TlsMaterial>>,
    /// A login token (`Client::login`) sent with every request.
    pub token: Option<String>,
}

/// First retry waits this long (plus jitter), doubling up to MAX_BACKOFF.
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// Leader hints followed in a row without backing off.
const MAX_HINT_HOPS: usize = 8;
/// Rounds over every endpoint, all refusing connections, before the SDK
/// reports the cluster unreachable.
const UNREACHABLE_ROUNDS: usize = 3;

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            deadline: Duration::from_secs(15),
            rpc_timeout: Duration::from_secs(6),
            connect_timeout: Duration::from_secs(1),
            tls: None,
            token: None,
        }
    }
}

/// A cached range: its end and, if known, its leader's address.
type CachedRange = (Vec<u8>, Option<String>);

#[derive(Default)]
struct State {
    channels: BTreeMap<String, Channel>,
    /// Known ranges: start -> (end, leader address), route keys.
    ranges: BTreeMap<Vec<u8>, CachedRange>,
    /// Endpoint to try when no range is known for a key.
    next: usize,
    /// Loading the range cache in bulk (`locate.rs`).
    locating: locate::Locating,
}

/// A handle on the cluster; clones share one connection pool, range cache
/// and background work.
#[derive(Clone)]
pub struct Client(Arc<Inner>);

pub struct Inner {
    endpoints: Vec<String>,
    opts: ClientOptions,
    /// `opts.token` as request metadata.
    creds: Creds,
    state: Mutex<State>,
    /// Test hook for the transaction coordinator (`faults.rs`).
    faults: Option<Arc<dyn CommitFaults>>,
    /// Work a call left running after it answered (committing a
    /// transaction's secondaries): one permit each, so it is bounded and
    /// `flush` can wait for all of it.
    background: Arc<Semaphore>,
    /// Transactions whose secondaries all committed, waiting to be marked
    /// on their primaries in one batch (`txn_rpc::queue_done_mark`).
    done_marks: Mutex<DoneMarks>,
    /// Open transactions and the client's GC pin (`gc_pin.rs`).
    open_txns: Mutex<gc_pin::OpenTxns>,
}

/// The pending secondaries-done marks, and whether a batch is scheduled.
#[derive(Default)]
struct DoneMarks {
    pending: Vec<(Vec<u8>, crate::api::Timestamp)>,
    scheduled: bool,
}

impl std::ops::Deref for Client {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Background tasks in flight at most (more wait for a permit).
const MAX_BACKGROUND: u32 = 1024;

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
    /// Idempotent transaction steps: retried like reads (ambiguous failures
    /// too), and a `KeyNotInRange` goes back to the caller like a batch's.
    Steps,
}

impl Retry {
    /// Whether an attempt whose outcome is unknown may be repeated.
    fn idempotent(self) -> bool {
        matches!(self, Retry::Idempotent | Retry::Steps)
    }
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
        let creds = Creds::of(opts.token.as_deref(), opts.tls.as_deref())?;
        Ok(Client(Arc::new(Inner {
            endpoints,
            opts,
            creds,
            state: Mutex::new(State::default()),
            faults: None,
            background: Arc::new(Semaphore::new(MAX_BACKGROUND as usize)),
            done_marks: Mutex::default(),
            open_txns: Mutex::default(),
        })))
    }

    /// Installs a coordinator fault hook (tests and simulation only; see
    /// `faults.rs`); before the client is cloned (a clone keeps none).
    pub fn with_commit_faults(mut self, faults: Arc<dyn CommitFaults>) -> Client {
        if let Some(inner) = Arc::get_mut(&mut self.0) {
            inner.faults = Some(faults);
        }
        self
    }

    /// Runs `work` after the call that started it answered, counted so
    /// `flush` can wait for it (waits for a permit when too much runs).
    async fn in_background(&self, work: impl Future<Output = ()> + Send + 'static) {
        let Ok(permit) = self.background.clone().acquire_owned().await else {
            return; // never closed
        };
        tokio::spawn(async move {
            work.await;
            drop(permit);
        });
    }

    /// Waits until the work calls left running has finished (a process
    /// about to exit calls this, so no transaction leaves locks behind).
    pub async fn flush(&self) {
        if let Ok(all) = self.background.acquire_many(MAX_BACKGROUND).await {
            drop(all);
        }
        self.send_done_marks().await;
        self.release_idle_pin().await;
    }

    /// The options this client was made with.
    pub fn options(&self) -> ClientOptions {
        self.opts.clone()
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn channel(&self, addr: &str) -> Result<Conn> {
        let mut st = self.lock();
        if let Some(c) = st.channels.get(addr) {
            return Ok(Conn {
                ch: c.clone(),
                creds: self.creds.clone(),
            });
        }
        let ch = crate::tls::endpoint(addr, self.opts.tls.as_deref())?
            .connect_timeout(self.opts.connect_timeout)
            .timeout(self.opts.rpc_timeout)
            .connect_lazy();
        st.channels.insert(addr.to_string(), ch.clone());
        Ok(Conn {
            ch,
            creds: self.creds.clone(),
        })
    }

    fn cached<'a>(st: &'a mut State, key: &[u8]) -> Option<(&'a Vec<u8>, &'a mut CachedRange)> {
        st.ranges
            .range_mut(..=key.to_vec())
            .next_back()
            .filter(|(_, (end, _))| key < end.as_slice())
    }

    /// Where to send a request for route key `key`.
    fn pick(&self, key: &[u8]) -> String {
        let mut st = self.lock();
        if let Some((_, (_, Some(addr)))) = Self::cached(&mut st, key) {
            return addr.clone();
        }
        self.endpoints[st.next % self.endpoints.len()].clone()
    }

    /// Records a range's span and leader, replacing what it overlaps.
    fn learn(&self, span: &Span, leader: Option<String>) {
        Client::learn_into(&mut self.lock(), span, leader);
    }

    /// `learn` under the lock: the cached ranges `span` overlaps (those
    /// starting inside it, and the one before it if it reaches in) go.
    fn learn_into(st: &mut State, span: &Span, leader: Option<String>) {
        if !span.is_known() || span.start >= span.end {
            return;
        }
        let mut stale: Vec<Vec<u8>> = st
            .ranges
            .range(span.start.clone()..span.end.clone())
            .map(|(s, _)| s.clone())
            .collect();
        if let Some((s, (e, _))) = st.ranges.range(..span.start.clone()).next_back() {
            if overlaps(s, e, &span.start, &span.end) {
                stale.push(s.clone());
            }
        }
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

    /// One call to the node at `addr` itself (no routing, no retry): its
    /// answer; `Unavailable` when it cannot be reached, `Timeout` when it
    /// does not answer within one attempt's budget.
    async fn call_at<T, F, Fut>(&self, addr: &str, call: F) -> Result<T>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        let ch = self.channel(addr)?;
        match tokio::time::timeout(self.opts.rpc_timeout, call(ch)).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) if !is_server_status(&s) => Err(Error::Unavailable(format!(
                "cannot reach {addr}: {}",
                transport_message(&s)
            ))),
            Ok(Err(s)) => Err(from_status(&s)),
            Err(_) => Err(Error::Timeout(format!("{addr} did not answer"))),
        }
    }

    /// Runs `call` against the node that should serve `key` (a route key),
    /// following hints and retrying what `retry` allows until the deadline.
    async fn with_retry<T, F, Fut>(&self, key: &[u8], retry: Retry, call: F) -> Result<T>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = std::result::Result<T, Status>>,
    {
        let start = tokio::time::Instant::now();
        let mut st = Attempts {
            backoff: FIRST_BACKOFF,
            unreachable_in_a_row: 0,
            hops: 0,
        };
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
                Ok(Err(status)) => match self.after_failure(key, &addr, retry, &status, &mut st) {
                    Next::Fail(e) => return Err(e),
                    Next::Follow(to) => {
                        hinted = Some(to);
                        continue; // follow the hint at once
                    }
                    Next::Retry(e) => e,
                },
                Err(_) => {
                    self.demote(key, &addr);
                    let e = Error::Timeout(format!(
                        "{addr} did not answer within {:?}",
                        self.opts.rpc_timeout
                    ));
                    if !retry.idempotent() {
                        return Err(e);
                    }
                    e
                }
            };
            self.back_off(start, &mut st, err).await?;
        }
    }

    /// What to do after `addr` answered `status`.
    fn after_failure(
        &self,
        key: &[u8],
        addr: &str,
        retry: Retry,
        status: &Status,
        st: &mut Attempts,
    ) -> Next {
        if !is_server_status(status) {
            self.demote(key, addr);
            let reason = transport_message(status);
            if let Some(why) = tls_mismatch(&reason, self.opts.tls.is_some()) {
                // Nothing was sent, and every node of a cluster is set up
                // alike: say so at once rather than retry until the deadline.
                return Next::Fail(Error::Unauthenticated(format!("{addr}: {why}")));
            }
            if !never_sent(&reason) && !retry.idempotent() {
                return Next::Fail(Error::Indeterminate(format!(
                    "connection to {addr} failed during the write: {reason}"
                )));
            }
            st.unreachable_in_a_row += 1;
            return Next::Retry(Error::Unavailable(format!("cannot reach {addr}: {reason}")));
        }
        st.unreachable_in_a_row = 0;
        let e = from_status(status);
        if !e.is_retryable() || (!retry.idempotent() && e.is_ambiguous()) {
            return Next::Fail(e);
        }
        match &e {
            Error::NotLeader { leader, span, .. } => {
                let to = leader.as_ref().and_then(|h| h.client_address.clone());
                self.learn(span, to.clone());
                self.note_redirect(addr);
                match to {
                    Some(to) if to != addr && st.hops < MAX_HINT_HOPS => {
                        st.hops += 1;
                        return Next::Follow(to);
                    }
                    _ => self.demote(key, addr),
                }
            }
            // Frozen for a merge, or changed under the write: back off and
            // retry (a batch re-splits on the KeyNotInRange the retry gets
            // if the range shrank).
            Error::EpochMismatch { current, .. } => self.learn(current, None),
            Error::KeyNotInRange { span, .. } => {
                self.learn(span, Some(addr.to_string()));
                self.note_redirect(addr);
                if matches!(retry, Retry::Batch | Retry::Steps) {
                    return Next::Fail(e);
                }
            }
            // The leader is overloaded, not wrong: back off, ask it again.
            Error::Busy(_) => {}
            _ => self.demote(key, addr),
        }
        Next::Retry(e)
    }

    /// Sleeps before the next attempt, or gives up: every endpoint refused
    /// connections repeatedly (the cluster is down), or the deadline is near.
    async fn back_off(
        &self,
        start: tokio::time::Instant,
        st: &mut Attempts,
        err: Error,
    ) -> Result<()> {
        if st.unreachable_in_a_row >= UNREACHABLE_ROUNDS * self.endpoints.len() {
            return Err(Error::Unavailable(format!(
                "cannot reach the cluster at {} ({})",
                self.endpoints.join(","),
                err.to_string().trim_start_matches("unavailable: ")
            )));
        }
        if start.elapsed() + st.backoff >= self.opts.deadline {
            return Err(match err {
                Error::Unavailable(m) => {
                    Error::Unavailable(format!("gave up after {:?}: {m}", self.opts.deadline))
                }
                e => e,
            });
        }
        // The runtime's RNG (seeded in simulation).
        let jitter = madsim::rand::random::<u64>() % (st.backoff.as_millis() as u64 / 2 + 1);
        tokio::time::sleep(st.backoff + Duration::from_millis(jitter)).await;
        st.backoff = (st.backoff * 2).min(MAX_BACKOFF);
        Ok(())
    }
}

/// Retry state of one call.
struct Attempts {
    backoff: Duration,
    unreachable_in_a_row: usize,
    hops: usize,
}

/// What to do after a failed attempt.
enum Next {
    Fail(Error),
    /// Follow a leader hint at once.
    Follow(String),
    /// Back off, then try again.
    Retry(Error),
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
        // The name did not resolve (e.g. a stopped container's): nothing
        // was sent; the next endpoint may answer.
        || reason.contains("dns error")
}

/// A connection that failed because the two ends disagree on TLS (or the
/// certificates do not chain to the client's CA): what to tell the user.
/// The handshake failed, so no request was sent.
fn tls_mismatch(reason: &str, tls: bool) -> Option<String> {
    const TLS_FAILURES: &[&str] = &[
        "invalid peer certificate",
        "received corrupt message",
        "peer is incompatible",
        "received fatal alert",
        "HandshakeFailure",
        "CertificateRequired",
    ];
    if tls && TLS_FAILURES.iter().any(|m| reason.contains(m)) {
        return Some(format!(
            "the TLS handshake failed ({reason}): is the node serving plaintext, or are these \
             certificates from another cluster's CA?"
        ));
    }
    // A TLS server's answer read as HTTP/2 frames.
    if !tls && reason.contains("frame with invalid size") {
        return Some(format!(
            "the node does not speak plaintext ({reason}): the cluster probably uses TLS; \
             give --certs-dir (or RANGEDB_CERTS_DIR)"
        ));
    }
    None
}

/// A short human reason for a transport-level failure.
fn transport_message(s: &Status) -> String {
    use std::error::Error as _;
    let mut parts = vec![s.message().to_string()];
    let mut cur = s.source();
    while let Some(e) = cur {
        // Error chains repeat themselves ("dns error: dns error: ..."):
        // keep what no earlier part said already.
        let part = e.to_string();
        if !parts.iter().any(|p| p.contains(part.as_str())) {
            parts.push(part);
        }
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
