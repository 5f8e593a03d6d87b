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
//! The node's oracle client (`NodeOracle`) asks this node's own oracle
//! first and the system range's leader otherwise; one `TsoBatcher` shares
//! each request among every write waiting at the same time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;

use super::tso::TsoService;
use crate::api::Timestamp;
use crate::client::{Client, ClientOptions, TimestampSource, TsoBatcher};
use crate::error::{Error, Result};
use crate::node::{PeerAddresses, StoreHandle};
use crate::range::{OnePcCmd, Op};

/// Attempts of one write before it gives up (each with a fresh timestamp).
const MAX_WRITE_ATTEMPTS: u32 = 12;

/// The server's path for user data.
#[derive(Clone)]
pub struct Versioned {
    store: StoreHandle,
    tso: TsoBatcher,
}

impl Versioned {
    pub fn new(store: StoreHandle, local: Arc<TsoService>, peers: PeerAddresses) -> Versioned {
        let oracle = NodeOracle {
            local,
            local_refused: Mutex::new(None),
            peers,
            remote: Mutex::new(None),
        };
        Versioned {
            store,
            tso: TsoBatcher::new(Arc::new(oracle)),
        }
    }

    /// Writes `ops` (puts and deletes of user data keys, one range)
    /// atomically at one fresh timestamp.
    pub async fn write(&self, ops: Vec<Op>) -> Result<()> {
        let mut seed_term = None;
        let mut last = None;
        for attempt in 0..MAX_WRITE_ATTEMPTS {
            let ts = self.tso.timestamp().await?;
            let cmd = OnePcCmd {
                ops: ops.clone(),
                start_ts: ts.0,
                commit_ts: ts.0,
                ..Default::default()
            };
            match self.store.write_at(cmd, seed_term).await {
                Ok(()) => return Ok(()),
                // This timestamp was taken before the refusal; the next one
                // is taken after it, as seeding requires.
                Err(Error::StaleTimestamp { term, .. }) => seed_term = Some(term),
                Err(e @ Error::WriteConflict { .. }) => last = Some(e),
                Err(e @ Error::KeyLocked { .. }) => {
                    last = Some(e);
                    let ms = 5u64 << attempt.min(6);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
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

/// This node's oracle when it leads the system range, the leader's otherwise.
struct NodeOracle {
    local: Arc<TsoService>,
    /// When this node's own oracle last said it does not lead: for a while
    /// requests go straight to the leader (whose client may route back
    /// here), instead of asking the local Store first every time.
    local_refused: Mutex<Option<tokio::time::Instant>>,
    peers: PeerAddresses,
    /// A client over the peer addresses, rebuilt when they change.
    remote: Mutex<Option<(Vec<String>, Arc<Client>)>>,
}

/// How long after its own oracle refused a node asks the leader directly.
const LOCAL_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Bounds of one oracle call from a node (under a client's deadline).
const ORACLE_OPTIONS: ClientOptions = ClientOptions {
    deadline: Duration::from_secs(4),
    rpc_timeout: Duration::from_secs(2),
    connect_timeout: Duration::from_millis(500),
};

impl NodeOracle {
    fn remote(&self) -> Result<Arc<Client>> {
        let addrs = self.peers.all();
        let mut cached = self.remote.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((a, c)) = cached.as_ref() {
            if *a == addrs {
                return Ok(c.clone());
            }
        }
        let c = Arc::new(Client::new(addrs.clone(), ORACLE_OPTIONS)?);
        *cached = Some((addrs, c.clone()));
        Ok(c)
    }
}

impl TimestampSource for NodeOracle {
    fn fetch(&self, count: u64) -> BoxFuture<'_, Result<Timestamp>> {
        Box::pin(async move {
            let recently_refused = self
                .local_refused
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some_and(|t| t.elapsed() < LOCAL_RETRY_AFTER);
            if recently_refused {
                return self.remote()?.timestamps(count).await;
            }
            match self.local.allocate(count).await {
                Ok(ts) => Ok(ts),
                Err(Error::NotLeader { .. }) | Err(Error::RangeNotFound(_)) => {
                    *self.local_refused.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(tokio::time::Instant::now());
                    self.remote()?.timestamps(count).await
                }
                Err(e) => Err(e),
            }
        })
    }
}
