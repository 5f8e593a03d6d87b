//! Lease expiry, decided on the clock of the node leading the system range
//! (the placement driver). Every node runs a keeper; only the one whose
//! replica leads the system range (confirmed by a linearizable LeaderTerm
//! read, so a deposed leader cannot extend or expire anything) holds the
//! live table: lease id -> TTL and deadline on its clock.
//!
//! Invariants:
//! - a lease's record (`_/leases/<id>`) is written through Raft before its
//!   grant is answered; keep-alives move only the in-memory deadline;
//! - a keeper that starts leading (a new term) loads every record and gives
//!   each lease its full TTL from then (as etcd does): a lease kept alive
//!   before a failover never ends earlier than its TTL after the last
//!   keep-alive the old leader answered (canary
//!   `LeaseExpiresEarlyAfterFailover` breaks exactly this);
//! - ending a lease first marks its record revoked (attaching and
//!   re-checking fail from then), then deletes, in one transaction, every
//!   attached key whose newest version still carries the lease, then drops
//!   the attachments and the record. A keeper that finds a record marked
//!   revoked finishes the job.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::registry::scan_prefix;
use super::versioned::Versioned;
use crate::api::meta;
use crate::chaos::{self, Canary};
use crate::clock::NodeClock;
use crate::error::{Error, Result};
use crate::keys;
use crate::node::{Consistency, StoreHandle};
use crate::range::{Op, ReadOp, ReadResult};

/// Longest TTL a lease may be granted.
pub const MAX_TTL_SECS: i64 = 86_400;
/// How often the leading keeper looks for expired leases.
const EXPIRY_TICK: Duration = Duration::from_millis(200);
/// Keys one lease may carry (its revocation is one transaction).
pub const MAX_LEASE_KEYS: usize = 10_000;

/// A lease's record, as stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseRecord {
    pub ttl_ms: u64,
    /// Set once its end began (keys are being deleted).
    #[serde(default)]
    pub revoked: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct Live {
    pub ttl_ms: u64,
    /// On this node's clock (milliseconds).
    pub deadline_ms: u64,
}

#[derive(Default)]
struct Table {
    /// The system range's term this table was loaded in (`None`: not
    /// leading, or not loaded yet).
    term: Option<u64>,
    leases: BTreeMap<u64, Live>,
}

/// The node's lease keeper (see the module docs).
#[derive(Clone)]
pub struct LeaseKeeper {
    store: StoreHandle,
    clock: NodeClock,
    versioned: Versioned,
    table: Arc<Mutex<Table>>,
    /// One change (grant, revoke, load) at a time.
    changing: Arc<tokio::sync::Mutex<()>>,
}

fn parse_id(key: &[u8]) -> Option<(u64, bool)> {
    let rest = key.strip_prefix(meta::LEASES_PREFIX.as_bytes())?;
    let id = u64::from_str_radix(std::str::from_utf8(rest.get(..16)?).ok()?, 16).ok()?;
    Some((id, rest.len() == 16))
}

impl LeaseKeeper {
    pub fn new(store: StoreHandle, clock: NodeClock, versioned: Versioned) -> LeaseKeeper {
        LeaseKeeper {
            store,
            clock,
            versioned,
            table: Arc::default(),
            changing: Arc::default(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The system range's term if this node leads it (confirmed by a
    /// quorum or the leader lease); NotLeader otherwise.
    async fn leader_term(&self) -> Result<u64> {
        let op = ReadOp::LeaderTerm(keys::system(meta::LEASES_PREFIX));
        match self.store.read(op, Consistency::Linearizable).await? {
            ReadResult::Term(t) => Ok(t),
            _ => Err(Error::Internal("unexpected read result".into())),
        }
    }

    /// Confirms leadership and loads the table if this term has not yet.
    pub async fn ready(&self) -> Result<()> {
        let term = self.leader_term().await?;
        if self.loaded_in(term) {
            return Ok(());
        }
        let _one = self.changing.lock().await;
        if self.loaded_in(term) {
            return Ok(());
        }
        let pairs =
            scan_prefix(&self.store, meta::LEASES_PREFIX, Consistency::Linearizable).await?;
        let now = self.now_ms();
        let mut leases = BTreeMap::new();
        for (k, v) in pairs {
            let Some((id, true)) = parse_id(&k) else {
                continue;
            };
            let rec: LeaseRecord = serde_json::from_slice(&v)
                .map_err(|e| Error::Corruption(format!("lease record {id:016x}: {e}")))?;
            // A new leader gives every lease its full TTL from now.
            let grace = if chaos::canary(Canary::LeaseExpiresEarlyAfterFailover) {
                rec.ttl_ms / 10
            } else {
                rec.ttl_ms
            };
            let deadline_ms = if rec.revoked { now } else { now + grace };
            leases.insert(
                id,
                Live {
                    ttl_ms: rec.ttl_ms,
                    deadline_ms,
                },
            );
        }
        tracing::info!(
            term,
            leases = leases.len(),
            "lease keeper leads: every lease runs its TTL from now"
        );
        if let Ok(mut t) = self.table.lock() {
            t.term = Some(term);
            t.leases = leases;
        }
        Ok(())
    }

    /// Whether the table was loaded in `term`.
    fn loaded_in(&self, term: u64) -> bool {
        self.table
            .lock()
            .map(|t| t.term == Some(term))
            .unwrap_or(false)
    }

    fn forget_term(&self) {
        if let Ok(mut t) = self.table.lock() {
            t.term = None;
            t.leases.clear();
        }
    }

    fn get(&self, id: u64) -> Option<Live> {
        self.table.lock().ok()?.leases.get(&id).copied()
    }

    fn not_found(id: u64) -> Error {
        Error::NotFound(format!(
            "lease {id:016x} not found (it expired or was revoked)"
        ))
    }

    /// Grants a lease of `ttl_secs` (id 0: a fresh one).
    pub async fn grant(&self, id: u64, ttl_secs: i64) -> Result<(u64, Live)> {
        if !(1..=MAX_TTL_SECS).contains(&ttl_secs) {
            return Err(Error::InvalidArgument(format!(
                "a lease's TTL is 1 to {MAX_TTL_SECS} seconds, not {ttl_secs}"
            )));
        }
        self.ready().await?;
        let id = match id {
            0 => self.versioned.timestamp().await?.0,
            id => id,
        };
        if id > i64::MAX as u64 {
            return Err(Error::InvalidArgument("lease ids are below 2^63".into()));
        }
        let _one = self.changing.lock().await;
        if self.get(id).is_some() {
            return Err(Error::AlreadyExists(format!("lease {id:016x} exists")));
        }
        let ttl_ms = ttl_secs as u64 * 1000;
        let rec = LeaseRecord {
            ttl_ms,
            revoked: false,
        };
        let bytes = serde_json::to_vec(&rec).map_err(|e| Error::Internal(e.to_string()))?;
        self.store
            .write(vec![Op::put(keys::system(&meta::lease_key(id)), bytes)])
            .await?;
        let live = Live {
            ttl_ms,
            deadline_ms: self.now_ms() + ttl_ms,
        };
        if let Ok(mut t) = self.table.lock() {
            t.leases.insert(id, live);
        }
        Ok((id, live))
    }

    /// Restarts the lease's TTL (on this node's clock, after confirming
    /// it still leads).
    pub async fn keep_alive(&self, id: u64) -> Result<Live> {
        self.ready().await?;
        let now = self.now_ms();
        let mut t = self
            .table
            .lock()
            .map_err(|_| Error::Internal("lease table poisoned".into()))?;
        let live = t.leases.get_mut(&id).ok_or_else(|| Self::not_found(id))?;
        if live.deadline_ms <= now {
            return Err(Self::not_found(id));
        }
        live.deadline_ms = now + live.ttl_ms;
        Ok(*live)
    }

    /// The lease's TTL and deadline; with `keys`, the keys attached to it.
    pub async fn time_to_live(&self, id: u64, with_keys: bool) -> Result<(Live, Vec<Vec<u8>>)> {
        self.ready().await?;
        let live = self.get(id).ok_or_else(|| Self::not_found(id))?;
        let keys = if with_keys {
            self.attached(id).await?
        } else {
            Vec::new()
        };
        Ok((live, keys))
    }

    /// Every live lease.
    pub async fn list(&self) -> Result<Vec<(u64, Live)>> {
        self.ready().await?;
        let t = self
            .table
            .lock()
            .map_err(|_| Error::Internal("lease table poisoned".into()))?;
        let mut v: Vec<(u64, Live)> = t.leases.iter().map(|(id, l)| (*id, *l)).collect();
        v.sort_by_key(|(id, _)| *id);
        Ok(v)
    }

    /// Records `keys` as attached to the lease (before they are written).
    pub async fn attach(&self, id: u64, user_keys: &[Vec<u8>]) -> Result<Live> {
        self.ready().await?;
        let live = self.get(id).ok_or_else(|| Self::not_found(id))?;
        if live.deadline_ms <= self.now_ms() {
            return Err(Self::not_found(id));
        }
        let prefix = meta::lease_keys_prefix(id);
        let ops = user_keys
            .iter()
            .map(|k| {
                let mut key = prefix.clone();
                key.extend_from_slice(k);
                Op::put(keys::data_key(&key), Vec::new())
            })
            .collect::<Vec<_>>();
        if !ops.is_empty() {
            self.store.write(ops).await?;
        }
        // Revoked while attaching: the caller's re-check will see it.
        self.get(id).ok_or_else(|| Self::not_found(id))
    }

    /// The user keys attached to the lease (recorded; some may have been
    /// written again since without it).
    async fn attached(&self, id: u64) -> Result<Vec<Vec<u8>>> {
        let prefix = String::from_utf8_lossy(&meta::lease_keys_prefix(id)).into_owned();
        let pairs = scan_prefix(&self.store, &prefix, Consistency::Linearizable).await?;
        Ok(pairs
            .into_iter()
            .filter_map(|(k, _)| k.strip_prefix(prefix.as_bytes()).map(<[u8]>::to_vec))
            .collect())
    }

    /// Ends the lease now: its record marked revoked, its keys deleted in
    /// one transaction (those whose newest version still carries it), then
    /// its attachments and record removed. The number of keys deleted.
    pub async fn revoke(&self, id: u64) -> Result<u64> {
        self.ready().await?;
        let live = self.get(id).ok_or_else(|| Self::not_found(id))?;
        let rec = LeaseRecord {
            ttl_ms: live.ttl_ms,
            revoked: true,
        };
        let bytes = serde_json::to_vec(&rec).map_err(|e| Error::Internal(e.to_string()))?;
        let record_key = keys::system(&meta::lease_key(id));
        self.store
            .write(vec![Op::put(record_key.clone(), bytes)])
            .await?;
        if let Ok(mut t) = self.table.lock() {
            if let Some(l) = t.leases.get_mut(&id) {
                l.deadline_ms = 0;
            }
        }
        let attached = self.attached(id).await?;
        let deleted = self.delete_attached(id, &attached).await?;
        let prefix = meta::lease_keys_prefix(id);
        let mut ops: Vec<Op> = attached
            .iter()
            .map(|k| {
                let mut key = prefix.clone();
                key.extend_from_slice(k);
                Op::delete(keys::data_key(&key))
            })
            .collect();
        ops.push(Op::delete(record_key));
        self.store.write(ops).await?;
        if let Ok(mut t) = self.table.lock() {
            t.leases.remove(&id);
        }
        tracing::info!(lease = id, deleted, "lease ended");
        Ok(deleted)
    }

    /// Deletes, atomically, the keys that still carry the lease.
    async fn delete_attached(&self, id: u64, attached: &[Vec<u8>]) -> Result<u64> {
        if attached.is_empty() {
            return Ok(0);
        }
        let client = self.versioned.cluster()?;
        let keys = attached.to_vec();
        let opts = crate::client::TxnOptions {
            deadline: Duration::from_secs(60),
            max_attempts: 50,
        };
        let (n, _) = client
            .transact(&opts, move |txn| {
                let keys = keys.clone();
                Box::pin(async move {
                    let mut n = 0u64;
                    for k in &keys {
                        if let Some((_, Some(meta))) = txn.get_meta(k).await? {
                            if meta.lease == id {
                                txn.delete(k)?;
                                n += 1;
                            }
                        }
                    }
                    Ok(n)
                })
            })
            .await?;
        Ok(n)
    }

    /// The leading keeper's loop: ends every lease whose deadline passed.
    /// Runs until `stop`.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            // Biased: an unbiased select draws from tokio's own RNG, which
            // the simulator does not seed (non-determinism, seed 1 of the
            // fsync test).
            tokio::select! {
                biased;
                _ = stop.changed() => return,
                _ = tokio::time::sleep(EXPIRY_TICK) => {}
            }
            if *stop.borrow() {
                return;
            }
            if self.ready().await.is_err() {
                self.forget_term();
                continue;
            }
            let now = self.now_ms();
            let due: Vec<u64> = match self.table.lock() {
                Ok(t) => t
                    .leases
                    .iter()
                    .filter(|(_, l)| l.deadline_ms <= now)
                    .map(|(id, _)| *id)
                    .collect(),
                Err(_) => continue,
            };
            for id in due {
                if let Err(e) = self.revoke(id).await {
                    tracing::warn!(lease = id, "ending an expired lease failed (retried): {e}");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_keys_parse() {
        assert_eq!(
            parse_id(meta::lease_key(0xabc).as_bytes()),
            Some((0xabc, true))
        );
        let mut attached = meta::lease_keys_prefix(7);
        attached.extend_from_slice(b"some/key");
        assert_eq!(parse_id(&attached), Some((7, false)));
        assert_eq!(parse_id(b"_/leases/zz"), None);
    }
}
