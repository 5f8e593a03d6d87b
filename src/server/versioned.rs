//! User data through MVCC on the server: every write takes a fresh
//! timestamp from the oracle and lands as one timestamped command
//! (`range::OnePcCmd`); reads see the newest versions.
//!
//! Why plain reads need no timestamp: a read of the newest versions after a
//! ReadIndex round sees a prefix of the range's log, and a write never lands
//! below a version that exists (`mvcc::one_pc` refuses it), so what it saw
//! is never changed underneath it — it is linearizable, and a transaction
//! that starts after it takes a larger timestamp and sees the same or newer.
//!
//! The write loop (bounded): a range leader that needs a newer timestamp
//! (`StaleTimestamp`: it served a later read, or its term is new) or a
//! version at or above ours (`WriteConflict`: a concurrent write won) gets
//! the write again at a fresh timestamp — nothing was written, so this is
//! no blind retry. A lock (a transaction between prewrite and commit) is
//! waited out with backoff.
//!
//! Locks (a transaction between prewrite and commit) in the way of a read
//! or write are resolved here (`resolving`): the owner is settled from its
//! primary through the cluster (`Client::resolve_lock`), a live owner is
//! waited out with backoff. Transactions' age is checked here too
//! (`check_age`): older than `txn_max_duration` fails with `TxnTooOld`
//! (below a range's GC horizon, the range refuses it).
//!
//! The node's oracle client (`NodeOracle`) asks this node's own oracle
//! first and the system range's leader otherwise; one `TsoBatcher` shares
//! each request among every write waiting at the same time.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;

use super::tso::TsoService;
use crate::api::Timestamp;
use crate::client::{Client, ClientOptions, TimestampSource, TsoBatcher};
use crate::clock::NodeClock;
use crate::config::ClusterSettings;
use crate::error::{Error, Result};
use crate::node::{PeerAddresses, StoreHandle};
use crate::range::{KeySpan, OnePcCmd, Op};
use crate::tls::TlsMaterial;

/// Attempts of one write before it gives up (each with a fresh timestamp).
const MAX_WRITE_ATTEMPTS: u32 = 12;

/// Rounds of lock resolution one request waits through before it gives up.
const MAX_LOCK_ROUNDS: u32 = 40;

/// The server's path for user data.
#[derive(Clone)]
pub struct Versioned {
    store: StoreHandle,
    tso: TsoBatcher,
    peers: Arc<PeerClient>,
    settings: watch::Receiver<ClusterSettings>,
    clock: NodeClock,
}

/// What a timestamped write is: a plain write (at one fresh timestamp) or
/// a one-range transaction's commit (reads validated since `start`).
pub struct Commit {
    pub ops: Vec<Op>,
    pub start: Option<Timestamp>,
    pub reads: Vec<Vec<u8>>,
    pub spans: Vec<KeySpan>,
}

impl Versioned {
    pub fn new(
        store: StoreHandle,
        local: Arc<TsoService>,
        peers: PeerAddresses,
        settings: watch::Receiver<ClusterSettings>,
        clock: NodeClock,
        tls: Option<Arc<TlsMaterial>>,
    ) -> Versioned {
        let peers = Arc::new(PeerClient {
            peers,
            tls,
            cached: Mutex::new(None),
        });
        let oracle = NodeOracle {
            local,
            local_refused: Mutex::new(None),
            peers: peers.clone(),
        };
        Versioned {
            store,
            tso: TsoBatcher::new(Arc::new(oracle)),
            peers,
            settings,
            clock,
        }
    }

    /// A fresh timestamp from the oracle.
    pub async fn timestamp(&self) -> Result<Timestamp> {
        self.tso.timestamp().await
    }

    /// Milliseconds on this node's clock.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The settings in effect.
    pub fn settings(&self) -> ClusterSettings {
        self.settings.borrow().clone()
    }

    /// A client of the whole cluster (over the peer addresses).
    pub fn cluster(&self) -> Result<Arc<Client>> {
        self.peers.client()
    }

    /// Fails with `TxnTooOld` a transaction started at `start` that ran
    /// past `txn_max_duration` (on this node's clock). Below the GC horizon
    /// the range itself refuses it (`RangeDescriptor::check_gc_horizon`).
    pub fn check_age(&self, start: Timestamp) -> Result<()> {
        let s = self.settings();
        let now = self.clock.now_ms();
        let age = now.saturating_sub(start.physical_ms());
        let max = s.txn_max_duration.as_millis() as u64;
        if age > max {
            return Err(Error::TxnTooOld(format!(
                "it has run {:.1} s; txn_max_duration is {} s",
                age as f64 / 1000.0,
                max / 1000
            )));
        }
        // No gc_ttl check here: the range's replicated GC horizon refuses
        // exactly the transactions GC passed (pinned ones it does not pass).
        Ok(())
    }

    /// Runs `f` until it does not meet a lock: each lock in the way is
    /// resolved through its owner's primary; a live owner is waited out.
    pub async fn resolving<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut last = None;
        for round in 0..MAX_LOCK_ROUNDS {
            match f().await {
                Err(e @ Error::KeyLocked { .. }) => {
                    if !self.resolve(&e).await? {
                        let ms = (5u64 << round.min(6)).min(200);
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    last = Some(e);
                }
                r => return r,
            }
        }
        Err(Error::Unavailable(format!(
            "a lock stayed in the way{}",
            last.map(|e| format!(" ({e})")).unwrap_or_default()
        )))
    }

    /// Resolves the lock `e` names; `false` if its owner is alive.
    pub async fn resolve(&self, e: &Error) -> Result<bool> {
        let Error::KeyLocked {
            key,
            primary,
            start_ts,
            ..
        } = e
        else {
            return Ok(true);
        };
        self.cluster()?.resolve_lock(key, primary, *start_ts).await
    }

    /// Writes `ops` (puts and deletes of user data keys, one range)
    /// atomically at one fresh timestamp.
    pub async fn write(&self, ops: Vec<Op>) -> Result<()> {
        self.commit(Commit {
            ops,
            start: None,
            reads: Vec::new(),
            spans: Vec::new(),
        })
        .await
        .map(drop)
    }

    /// Commits `c` in one command at a fresh timestamp; the timestamp.
    /// A transaction's (`start` set) conflict fails it with `TxnConflict`;
    /// a plain write retries at a fresh timestamp instead (it read nothing).
    pub async fn commit(&self, c: Commit) -> Result<Timestamp> {
        let mut seed_term = None;
        let mut last = None;
        for attempt in 0..MAX_WRITE_ATTEMPTS {
            let ts = self.tso.timestamp().await?;
            if let Some(start) = c.start {
                self.check_age(start)?;
            }
            let cmd = OnePcCmd {
                ops: c.ops.clone(),
                start_ts: c.start.unwrap_or(ts).0,
                commit_ts: ts.0,
                reads: c.reads.clone(),
                spans: c.spans.clone(),
            };
            match self.store.write_at(cmd, seed_term).await {
                Ok(()) => return Ok(ts),
                // This timestamp was taken before the refusal; the next one
                // is taken after it, as seeding requires.
                Err(Error::StaleTimestamp { term, .. }) => seed_term = Some(term),
                Err(Error::WriteConflict { key, committed }) if c.start.is_some() => {
                    return Err(Error::TxnConflict {
                        key,
                        reason: format!(
                            "another transaction wrote it at {} after this one began",
                            Timestamp(committed)
                        ),
                    })
                }
                Err(Error::TxnAborted { key }) => {
                    return Err(Error::TxnConflict {
                        key,
                        reason: "the transaction was rolled back".into(),
                    })
                }
                Err(e @ Error::WriteConflict { .. }) => last = Some(e),
                Err(e @ Error::KeyLocked { .. }) => {
                    if !self.resolve(&e).await? {
                        let ms = (5u64 << attempt.min(6)).min(200);
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Unavailable(format!(
            "the write found no usable timestamp in {MAX_WRITE_ATTEMPTS} attempts{}",
            last.map(|e| format!(" (last: {e})")).unwrap_or_default()
        )))
    }
}

/// A client of the cluster over the peer addresses, rebuilt when they change.
struct PeerClient {
    peers: PeerAddresses,
    /// The node's TLS identity, if any.
    tls: Option<Arc<TlsMaterial>>,
    cached: Mutex<Option<(Vec<String>, Arc<Client>)>>,
}

impl PeerClient {
    fn client(&self) -> Result<Arc<Client>> {
        let addrs = self.peers.all();
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((a, c)) = cached.as_ref() {
            if *a == addrs {
                return Ok(c.clone());
            }
        }
        let opts = ClientOptions {
            tls: self.tls.clone(),
            ..ORACLE_OPTIONS
        };
        let c = Arc::new(Client::new(addrs.clone(), opts)?);
        *cached = Some((addrs, c.clone()));
        Ok(c)
    }
}

/// This node's oracle when it leads the system range, the leader's otherwise.
struct NodeOracle {
    local: Arc<TsoService>,
    /// When this node's own oracle last said it does not lead: for a while
    /// requests go straight to the leader (whose client may route back
    /// here), instead of asking the local Store first every time.
    local_refused: Mutex<Option<tokio::time::Instant>>,
    peers: Arc<PeerClient>,
}

/// How long after its own oracle refused a node asks the leader directly.
const LOCAL_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Bounds of one oracle call from a node (under a client's deadline).
const ORACLE_OPTIONS: ClientOptions = ClientOptions {
    deadline: Duration::from_secs(4),
    rpc_timeout: Duration::from_secs(2),
    connect_timeout: Duration::from_millis(500),
    tls: None,
    token: None,
};

impl TimestampSource for NodeOracle {
    fn fetch(&self, count: u64) -> BoxFuture<'_, Result<Timestamp>> {
        Box::pin(async move {
            let recently_refused = self
                .local_refused
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some_and(|t| t.elapsed() < LOCAL_RETRY_AFTER);
            if recently_refused {
                return self.peers.client()?.timestamps(count).await;
            }
            match self.local.allocate(count).await {
                Ok(ts) => Ok(ts),
                Err(Error::NotLeader { .. }) | Err(Error::RangeNotFound(_)) => {
                    *self.local_refused.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(tokio::time::Instant::now());
                    self.peers.client()?.timestamps(count).await
                }
                Err(e) => Err(e),
            }
        })
    }
}
