//! `Store`: the synchronous core that owns all replicas of this node and the
//! one engine they share (see the `node` docs). It does no IO of its own:
//! engine writes come out of a round as batches for the caller to write,
//! Raft messages go to an outbox the caller sends. `StoreTask` is the async
//! caller in production and simulation; the golden-script harness drives
//! the same core synchronously.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use raft::eraftpb::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::handle::NodeStatus;
use super::range_ids::RangeIds;
use super::router::Router;
use super::split_check::{MeasureRequest, RangeLoad};
use crate::config::ClusterSettings;
use crate::error::{Error, Result};
use crate::keys::{self, RangeMeta, Tombstone};
use crate::raft::{SnapshotJob, SnapshotJobs};
use crate::range::{
    LeaseConfig, Replica, ReplicaConfig, Responder, SYSTEM_RANGE_ID, USER_RANGE_ID,
};
use crate::storage::{Engine, WriteBatch};

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub node_id: u64,
    pub tick: Duration,
    pub heartbeat_ticks: usize,
    pub election_ticks: usize,
    pub log_compact_entries: u64,
    pub max_msgs_per_loop: usize,
    pub request_timeout: Duration,
    pub clock: crate::clock::NodeClock,
    /// This node's metrics (one registry per node).
    pub metrics: Arc<crate::metrics::NodeMetrics>,
    /// How long a leader serves reads under its lease after a quorum
    /// confirmed it, on this node's clock (`range::lease_length`); `None`:
    /// no leases, every linearizable read asks a quorum.
    pub read_lease: Option<Duration>,
}

/// A split waiting for a range id reservation to become durable.
pub(super) struct PendingSplit {
    pub key: Vec<u8>,
    pub sticky: bool,
    pub done: Responder<()>,
}

pub struct Store {
    pub(super) cfg: StoreConfig,
    pub(super) engine: Arc<dyn Engine>,
    pub(super) replicas: BTreeMap<u64, Replica>,
    /// Key -> initialized replica.
    pub(super) router: Router,
    pub(super) rng: ChaCha8Rng,
    pub(super) ticks: u64,
    /// Ranges whose replica was removed from this node, with the
    /// membership version (conf_ver) that excluded it.
    pub(super) tombstones: BTreeMap<u64, u64>,
    /// Replicas recreated over a tombstone: they must not vote until they
    /// hold a membership newer than the one that removed this node (see
    /// `raft_in`); their tombstone stays on disk until then.
    pub(super) no_vote: BTreeMap<u64, u64>,
    /// Request load per range, for load-based splits.
    pub(super) load: BTreeMap<u64, RangeLoad>,
    /// Ranges merged into another range: their traffic is ignored for good
    /// (range ids are never reused).
    pub(super) merged: BTreeSet<u64>,
    /// Stale replicas the placement driver reported as merged away: their
    /// tombstones say so (see `destroy_removed`).
    pub(super) merged_gc: BTreeSet<u64>,
    /// Some replica may have been removed (see `destroy_removed`).
    pub(super) removal_pending: bool,
    /// Replicas something happened to since their last round (only these
    /// can have a Ready), and replicas not hibernating (only these tick):
    /// thousands of sleeping ranges cost nothing per loop.
    pub(super) dirty: BTreeSet<u64>,
    pub(super) awake: BTreeSet<u64>,
    /// The tick at which each peer node was last heard from (any message).
    pub(super) last_heard: BTreeMap<u64, u64>,
    /// Nodes holding replicas of our ranges (pinged while ranges sleep).
    pub(super) peers: BTreeSet<u64>,
    pub(super) ids: RangeIds,
    pub(super) pending_splits: Vec<PendingSplit>,
    /// Writes for the next round's batch, and whether it must be synced.
    pub(super) staged: WriteBatch,
    pub(super) staged_sync: bool,
    /// Raft messages for the caller to send: (range id, message).
    pub(super) outbox: Vec<(u64, Message)>,
    pub(super) settings: ClusterSettings,
    /// Size measurements for the caller to run off the Store task.
    pub(super) measure_out: Vec<MeasureRequest>,
    /// Ranges with a measurement in flight.
    pub(super) measuring: BTreeSet<u64>,
    /// Ranges whose size is unknown since this node started.
    pub(super) unmeasured: BTreeSet<u64>,
    /// The range the round-robin size measurement looked at last.
    pub(super) size_cursor: u64,
    /// The last range GC looked at (`gc.rs`).
    pub(super) gc_cursor: u64,
    /// The newest oracle timestamp the server told (`StoreMsg::OracleTime`).
    pub(super) oracle_seen: crate::api::Timestamp,
    /// The oldest start timestamp open transactions pinned (`StoreMsg::GcPin`).
    pub(super) gc_pin: Option<crate::api::Timestamp>,
    /// Snapshots raft-rs asked for, to build off the Store task.
    pub(super) snapshot_jobs: SnapshotJobs,
}

impl Store {
    /// Opens every replica found in the engine, reading only range
    /// metadata (never the Raft logs). `rng_seed` must come from the
    /// runtime's seeded RNG so that simulations replay exactly.
    pub fn open(cfg: StoreConfig, engine: Arc<dyn Engine>, rng_seed: u64) -> Result<Store> {
        let ids = RangeIds::load(engine.as_ref(), cfg.node_id)?;
        let mut store = Store {
            cfg,
            engine,
            replicas: BTreeMap::new(),
            router: Router::default(),
            rng: ChaCha8Rng::seed_from_u64(rng_seed),
            ticks: 0,
            tombstones: BTreeMap::new(),
            no_vote: BTreeMap::new(),
            load: BTreeMap::new(),
            merged: BTreeSet::new(),
            merged_gc: BTreeSet::new(),
            removal_pending: true,
            dirty: BTreeSet::new(),
            awake: BTreeSet::new(),
            last_heard: BTreeMap::new(),
            peers: BTreeSet::new(),
            ids,
            pending_splits: Vec::new(),
            staged: WriteBatch::new(),
            staged_sync: false,
            outbox: Vec::new(),
            settings: ClusterSettings::default(),
            measure_out: Vec::new(),
            measuring: BTreeSet::new(),
            unmeasured: BTreeSet::new(),
            size_cursor: 0,
            gc_cursor: 0,
            oracle_seen: crate::api::Timestamp::ZERO,
            gc_pin: None,
            snapshot_jobs: SnapshotJobs::default(),
        };
        store.load_ranges()?;
        Ok(store)
    }

    fn load_ranges(&mut self) -> Result<()> {
        let (lo, hi) = keys::range_meta_bounds();
        for (k, v) in self.engine.scan(&lo, &hi, usize::MAX, false)? {
            match keys::range_meta(&k) {
                Some((id, RangeMeta::Tombstone)) => match Tombstone::decode(id, &v)? {
                    Tombstone::Merged => {
                        self.merged.insert(id);
                    }
                    Tombstone::Removed { conf_ver } => {
                        self.tombstones.insert(id, conf_ver);
                    }
                },
                Some((id, RangeMeta::Descriptor)) => {
                    let r = self.open_replica(id)?;
                    self.insert_replica(r);
                }
                Some(_) => {}
                None => {
                    return Err(Error::Corruption(format!(
                        "unknown key {k:02x?} among range metadata"
                    )))
                }
            }
        }
        // A replica recreated over its tombstone that had not yet become a
        // member again before the restart: still no vote.
        let recreated: Vec<(u64, u64)> = self
            .tombstones
            .iter()
            .filter(|(id, _)| self.replicas.contains_key(id))
            .map(|(&id, &at)| (id, at))
            .collect();
        for (id, at) in recreated {
            self.tombstones.remove(&id);
            self.no_vote.insert(id, at);
        }
        self.dirty = self.replicas.keys().copied().collect();
        self.awake = self.dirty.clone();
        self.unmeasured = self.dirty.clone();
        // A group of one elects itself at once instead of waiting a timeout.
        let me = self.cfg.node_id;
        for r in self.replicas.values_mut() {
            if r.voters() == [me] {
                r.campaign()?;
            }
        }
        Ok(())
    }

    pub(super) fn open_replica(&mut self, range_id: u64) -> Result<Replica> {
        let cfg = ReplicaConfig {
            node_id: self.cfg.node_id,
            heartbeat_ticks: self.cfg.heartbeat_ticks,
            election_ticks: self.cfg.election_ticks,
            log_compact_entries: self.cfg.log_compact_entries,
            metrics: self.cfg.metrics.clone(),
            lease: self.cfg.read_lease.map(|length| LeaseConfig {
                length,
                clock: self.cfg.clock.clone(),
            }),
        };
        Replica::open(
            cfg,
            range_id,
            self.engine.clone(),
            self.snapshot_jobs.clone(),
            self.rng.gen(),
        )
    }

    /// Adds a replica (indexed for routing once initialized).
    pub(super) fn insert_replica(&mut self, mut r: Replica) {
        let id = r.range_id();
        r.take_span_changed();
        if r.is_initialized() {
            let d = r.descriptor();
            self.router.insert(id, &d.start_key, &d.end_key);
        }
        self.replicas.insert(id, r);
    }

    /// Removes a replica from memory and from routing.
    pub(super) fn remove_replica(&mut self, id: u64) -> Option<Replica> {
        self.router.remove(id);
        self.load.remove(&id);
        self.replicas.remove(&id)
    }

    /// Re-indexes a replica whose span changed (split, merge, snapshot).
    pub(super) fn reindex(&mut self, id: u64) {
        let Some(r) = self.replicas.get_mut(&id) else {
            return;
        };
        if !r.take_span_changed() {
            return;
        }
        let d = r.descriptor();
        if r.is_initialized() && d.start_key < d.end_key {
            let (s, e) = (d.start_key.clone(), d.end_key.clone());
            self.router.insert(id, &s, &e);
        } else {
            self.router.remove(id);
        }
    }

    /// Something happened to replica `id`: look at it next round, and tick
    /// it while it is awake.
    pub(super) fn note(&mut self, id: u64) {
        self.dirty.insert(id);
        match self.replicas.get(&id) {
            Some(r) if !r.is_quiesced() => {
                self.awake.insert(id);
            }
            _ => {
                self.awake.remove(&id);
            }
        }
    }

    /// The range holding `key` (an internal data key).
    pub(super) fn route(&self, key: &[u8]) -> Result<u64> {
        if let Some(id) = self.router.lookup(key) {
            return Ok(id);
        }
        // No initialized replica holds the key (yet): say which range would.
        let range_id = if key.first() == Some(&keys::SYSTEM_DATA) {
            SYSTEM_RANGE_ID
        } else {
            USER_RANGE_ID
        };
        Err(Error::RangeNotFound(range_id))
    }

    /// The range a scan starts in: the one holding `start`, or for a
    /// reverse scan the one holding the last key before `end`.
    pub(super) fn route_scan(&self, start: &[u8], end: &[u8], reverse: bool) -> Result<u64> {
        if reverse && !end.is_empty() {
            if let Some(id) = self.router.lookup_before(end) {
                return Ok(id);
            }
        }
        self.route(start)
    }

    /// Raft messages for the caller to send.
    pub fn take_outbox(&mut self) -> Vec<(u64, Message)> {
        std::mem::take(&mut self.outbox)
    }

    /// Size measurements for the caller to run off the Store task.
    pub fn take_measure_requests(&mut self) -> Vec<MeasureRequest> {
        std::mem::take(&mut self.measure_out)
    }

    /// Raft snapshots for the caller to build off the Store task
    /// (`raft::snapshot::build`), answered with `StoreMsg::SnapshotBuilt`.
    pub fn take_snapshot_jobs(&self) -> Vec<SnapshotJob> {
        self.snapshot_jobs.take()
    }

    /// The cluster settings in effect (split thresholds).
    pub fn set_settings(&mut self, s: ClusterSettings) {
        self.settings = s;
    }

    pub fn node_id(&self) -> u64 {
        self.cfg.node_id
    }

    /// Whether anything may produce a Ready, or writes wait to be written.
    pub fn has_work(&self) -> bool {
        !self.dirty.is_empty() || !self.staged.is_empty() || self.removal_pending
    }

    pub fn status(&self) -> NodeStatus {
        let ranges = self
            .replicas
            .values()
            .map(|r| {
                let mut s = r.status();
                s.qps = self.load.get(&s.range_id).map_or(0, |l| l.qps);
                s
            })
            .collect();
        NodeStatus {
            node_id: self.cfg.node_id,
            ranges,
        }
    }

    /// Fails every waiter (the Store is stopping).
    pub fn fail_all(&mut self) {
        let mut completions = Vec::new();
        for r in self.replicas.values_mut() {
            r.fail_all(&mut completions);
        }
        for p in self.pending_splits.drain(..) {
            let _ = p.done.send(Err(Error::ShuttingDown));
        }
        completions
            .into_iter()
            .for_each(crate::range::Completion::send);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemEngine;

    fn config() -> StoreConfig {
        StoreConfig {
            node_id: 1,
            tick: Duration::from_millis(100),
            heartbeat_ticks: 2,
            election_ticks: 10,
            log_compact_entries: 1000,
            max_msgs_per_loop: 64,
            request_timeout: Duration::from_secs(1),
            clock: Default::default(),
            metrics: Default::default(),
            read_lease: None,
        }
    }

    /// Defect (issue 9): a removal tombstone that did not decode read as
    /// conf_ver 0, lifting the no-vote rule for a recreated replica. Now
    /// the Store refuses to open. Failed before the fix: it opened.
    #[test]
    fn a_malformed_tombstone_is_an_error_not_conf_ver_0() {
        let e = MemEngine::new();
        let mut wb = WriteBatch::new();
        wb.put(keys::tombstone_key(3002), b"\x01\x02\x03".to_vec());
        e.write(&wb, true).unwrap();
        let r = Store::open(config(), Arc::new(e), 1);
        assert!(
            matches!(r, Err(Error::Corruption(ref m)) if m.contains("tombstone of range 3002")),
            "{:?}",
            r.err()
        );
        // A well-formed one opens, and is honoured.
        let e = MemEngine::new();
        let mut wb = WriteBatch::new();
        let t = Tombstone::Removed { conf_ver: 7 };
        wb.put(keys::tombstone_key(3002), t.encode());
        e.write(&wb, true).unwrap();
        let s = Store::open(config(), Arc::new(e), 1).unwrap();
        assert_eq!(s.tombstones.get(&3002), Some(&7));
    }

    #[test]
    fn a_corrupt_range_counter_is_an_error() {
        let e = MemEngine::new();
        let mut wb = WriteBatch::new();
        wb.put(keys::RANGE_COUNTER_KEY.to_vec(), b"x".to_vec());
        e.write(&wb, true).unwrap();
        assert!(matches!(
            Store::open(config(), Arc::new(e), 1),
            Err(Error::Corruption(_))
        ));
    }
}
