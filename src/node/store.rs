//! `Store`: the task that owns all replicas of this node (see `node` docs).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use raft::eraftpb::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::{mpsc, oneshot, watch};

use super::transport::{Directory, Transport};
use crate::error::{Error, LeaderHint, Result};
use crate::keys;
use crate::range::{
    Completion, Op, RangeDescriptor, ReadOp, ReadResult, Replica, ReplicaChange, ReplicaStatus,
    Responder, SYSTEM_RANGE_ID, USER_RANGE_ID,
};
use crate::storage::{Engine, WriteBatch};

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Served by the leader after a ReadIndex round.
    Linearizable,
    /// Served from this node's replica as applied so far.
    Local,
}

pub enum StoreMsg {
    Raft {
        from: u64,
        msgs: Vec<(u64, Message)>,
    },
    Write {
        ops: Vec<Op>,
        done: Responder<()>,
    },
    Read {
        op: ReadOp,
        consistency: Consistency,
        done: Responder<ReadResult>,
    },
    Status {
        done: oneshot::Sender<NodeStatus>,
    },
    /// Descriptors of the initialized, unfrozen ranges this node leads.
    LedDescriptors {
        done: oneshot::Sender<Vec<RangeDescriptor>>,
    },
    /// Split the range holding `key` (an internal data key) at `key`.
    Split {
        key: Vec<u8>,
        sticky: bool,
        done: Responder<()>,
    },
    /// Freeze a range this node leads for a merge into its left neighbour.
    Freeze {
        range_id: u64,
        expected_version: u64,
        done: Responder<()>,
    },
    /// A frozen range's final descriptor and data.
    FrozenData {
        range_id: u64,
        done: Responder<(RangeDescriptor, Vec<crate::storage::KvPair>)>,
    },
    /// Absorb the frozen right neighbour `rhs` into `range_id` (led here).
    Merge {
        range_id: u64,
        expected_version: u64,
        rhs: RangeDescriptor,
        pairs: Vec<crate::storage::KvPair>,
        done: Responder<()>,
    },
    /// Drop a stale replica (see `StoreHandle::gc_replica`).
    GcReplica {
        range_id: u64,
        conf_ver: u64,
        merged: bool,
        done: Responder<()>,
    },
    /// Change the replica set of a range this node leads.
    ChangeReplicas {
        range_id: u64,
        change: ReplicaChange,
        expected_conf_ver: u64,
        done: Responder<()>,
    },
}

/// What a node reports about itself.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub node_id: u64,
    pub ranges: Vec<ReplicaStatus>,
}

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
}

/// A cheap, cloneable handle for sending requests to the Store.
#[derive(Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<StoreMsg>,
    directory: Directory,
    request_timeout: Duration,
    node_id: u64,
    /// Rotates the "try another node" hints for ranges this node lacks.
    next_hint: Arc<std::sync::atomic::AtomicUsize>,
}

impl StoreHandle {
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    pub fn raft_sender(&self) -> mpsc::Sender<StoreMsg> {
        self.tx.clone()
    }

    async fn call<T>(&self, make: impl FnOnce(Responder<T>) -> StoreMsg) -> Result<T> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(make(done))
            .await
            .map_err(|_| Error::ShuttingDown)?;
        let result = match tokio::time::timeout(self.request_timeout, rx).await {
            Err(_) => Err(Error::Timeout(format!(
                "no answer within {:?}; a write may or may not have been applied",
                self.request_timeout
            ))),
            Ok(Err(_)) => Err(Error::Indeterminate(
                "the node stopped before answering".into(),
            )),
            Ok(Ok(r)) => r,
        };
        result.map_err(|e| self.add_hint(e))
    }

    fn add_hint(&self, e: Error) -> Error {
        match e {
            Error::NotLeader {
                range_id,
                leader:
                    Some(LeaderHint {
                        node_id,
                        client_address: None,
                    }),
                span,
            } => Error::NotLeader {
                range_id,
                leader: Some(LeaderHint {
                    node_id,
                    client_address: self.directory.get(node_id),
                }),
                span,
            },
            // This node holds no replica of the range (e.g. it just joined):
            // point the client at another node, which serves it or knows the
            // leader. Hints rotate so a chain of such nodes is walked.
            Error::RangeNotFound(range_id) => {
                let others: Vec<(u64, String)> = self
                    .directory
                    .all()
                    .into_iter()
                    .filter(|(id, _)| *id != self.node_id)
                    .collect();
                if others.is_empty() {
                    return Error::RangeNotFound(range_id);
                }
                let i = self
                    .next_hint
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    % others.len();
                let (node_id, addr) = others[i].clone();
                Error::NotLeader {
                    range_id,
                    leader: Some(LeaderHint {
                        node_id,
                        client_address: Some(addr),
                    }),
                    span: Default::default(),
                }
            }
            e => e,
        }
    }

    /// Replicates `ops` (all in one range) atomically.
    pub async fn write(&self, ops: Vec<Op>) -> Result<()> {
        self.call(|done| StoreMsg::Write { ops, done }).await
    }

    pub async fn read(&self, op: ReadOp, consistency: Consistency) -> Result<ReadResult> {
        self.call(|done| StoreMsg::Read {
            op,
            consistency,
            done,
        })
        .await
    }

    /// Destroys this node's replica of `range_id` if its membership is older
    /// than `conf_ver` (the caller saw a newer membership without this node),
    /// or, with `merged`, because the range was merged into its left
    /// neighbour (the caller saw the merged range).
    pub async fn gc_replica(&self, range_id: u64, conf_ver: u64, merged: bool) -> Result<()> {
        self.call(|done| StoreMsg::GcReplica {
            range_id,
            conf_ver,
            merged,
            done,
        })
        .await
    }

    /// One membership change on a range this node leads.
    pub async fn change_replicas(
        &self,
        range_id: u64,
        change: ReplicaChange,
        expected_conf_ver: u64,
    ) -> Result<()> {
        self.call(|done| StoreMsg::ChangeReplicas {
            range_id,
            change,
            expected_conf_ver,
            done,
        })
        .await
    }

    /// Splits the range holding `key` (internal data key) at `key`; this
    /// node must lead that range.
    /// A `sticky` split is never merged away by the placement driver.
    pub async fn split(&self, key: Vec<u8>, sticky: bool) -> Result<()> {
        self.call(|done| StoreMsg::Split { key, sticky, done })
            .await
    }

    /// Freezes `range_id` (led here) for a merge, then returns its final
    /// descriptor and data. Idempotent.
    pub async fn freeze(
        &self,
        range_id: u64,
        expected_version: u64,
    ) -> Result<(RangeDescriptor, Vec<crate::storage::KvPair>)> {
        self.call(|done| StoreMsg::Freeze {
            range_id,
            expected_version,
            done,
        })
        .await?;
        self.call(|done| StoreMsg::FrozenData { range_id, done })
            .await
    }

    /// Merges the frozen `rhs` (with its data) into `range_id`, led here.
    pub async fn merge(
        &self,
        range_id: u64,
        expected_version: u64,
        rhs: RangeDescriptor,
        pairs: Vec<crate::storage::KvPair>,
    ) -> Result<()> {
        self.call(|done| StoreMsg::Merge {
            range_id,
            expected_version,
            rhs,
            pairs,
            done,
        })
        .await
    }

    /// Descriptors of the initialized ranges this node leads, frozen ones
    /// left out (they are about to disappear into their left neighbour).
    pub async fn led_descriptors(&self) -> Result<Vec<RangeDescriptor>> {
        self.ask(|done| StoreMsg::LedDescriptors { done }).await
    }

    pub async fn status(&self) -> Result<NodeStatus> {
        self.ask(|done| StoreMsg::Status { done }).await
    }

    /// A question the Store answers at once (no Raft round, no timeout):
    /// only a stopped Store leaves it unanswered.
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> StoreMsg) -> Result<T> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(make(done))
            .await
            .map_err(|_| Error::ShuttingDown)?;
        rx.await.map_err(|_| Error::ShuttingDown)
    }
}

pub struct Store {
    cfg: StoreConfig,
    engine: Arc<dyn Engine>,
    replicas: BTreeMap<u64, Replica>,
    transport: Transport,
    rx: mpsc::Receiver<StoreMsg>,
    rng: ChaCha8Rng,
    ticks: u64,
    /// Ranges whose replica was removed from this node, with the
    /// membership version (conf_ver) that excluded it.
    tombstones: BTreeMap<u64, u64>,
    /// Replicas recreated over a tombstone: they must not vote until they
    /// hold a membership newer than the one that removed this node (see
    /// `handle`); their tombstone stays on disk until then.
    no_vote: BTreeMap<u64, u64>,
    /// Request load per range, for load-based splits.
    load: BTreeMap<u64, RangeLoad>,
    /// Ranges merged into another range: their traffic is ignored for good
    /// (range ids are never reused).
    merged: std::collections::BTreeSet<u64>,
    /// Stale replicas the placement driver reported as merged away: their
    /// tombstones say so (see `destroy_removed`).
    merged_gc: std::collections::BTreeSet<u64>,
    /// The range `measure_next_range` measured last.
    size_cursor: u64,
    /// Some replica may have been removed (see `destroy_removed`).
    removal_pending: bool,
    /// Replicas something happened to since their last round (only these
    /// can have a Ready), and replicas not hibernating (only these tick):
    /// thousands of sleeping ranges cost nothing per loop.
    dirty: std::collections::BTreeSet<u64>,
    awake: std::collections::BTreeSet<u64>,
    /// The tick at which each peer node was last heard from (any message).
    last_heard: BTreeMap<u64, u64>,
    /// Nodes holding replicas of our ranges (pinged while ranges sleep).
    peers: std::collections::BTreeSet<u64>,
}

/// Raft traffic on this pseudo-range is a node-to-node liveness ping: it
/// lets hibernating followers notice that their leader's node went silent.
const PING_RANGE_ID: u64 = 0;

/// Requests a range served since the last split check, how many checks in
/// a row it ran hot, and a sample of the keys it was asked for.
#[derive(Default)]
struct RangeLoad {
    requests: u64,
    hot_checks: u32,
    sample: Vec<Vec<u8>>,
    /// Requests per second over the last check.
    qps: u64,
}

/// Checks in a row a range must exceed `split_qps` before it splits by load.
const LOAD_SPLIT_CHECKS: u32 = 10;
/// Keys kept per range to choose a load-split point.
const LOAD_SAMPLE_KEYS: usize = 64;

/// The membership version a removal tombstone records (empty: written by
/// an older version, which recorded none).
fn removal_conf_ver(v: &[u8]) -> u64 {
    v.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

/// The value of a tombstone left by a merge (a removal records the
/// membership version that removed the replica).
const MERGED_TOMBSTONE: &[u8] = b"merged";

/// Key of the per-store counter behind new range ids.
const RANGE_COUNTER_KEY: &[u8] = b"\x02range-counter";
/// Ranges with more pairs than this are not measured exactly (see
/// `measure_next_range`).
const SIZE_SCAN_PAIRS: usize = 4096;
/// How often (in ticks) leaders look for ranges to split by size.
const SPLIT_CHECK_TICKS: u64 = 5;

impl Store {
    /// Opens every replica found in the engine. `rng_seed` must come from the
    /// runtime's seeded RNG so that simulations replay exactly.
    pub fn open(
        cfg: StoreConfig,
        engine: Arc<dyn Engine>,
        transport: Transport,
        directory: Directory,
        rng_seed: u64,
    ) -> Result<(Store, StoreHandle)> {
        let (tx, rx) = mpsc::channel(cfg.max_msgs_per_loop.max(64));
        let handle = StoreHandle {
            tx,
            directory,
            request_timeout: cfg.request_timeout,
            node_id: cfg.node_id,
            next_hint: Default::default(),
        };
        let mut store = Store {
            cfg,
            engine,
            replicas: BTreeMap::new(),
            transport,
            rx,
            rng: ChaCha8Rng::seed_from_u64(rng_seed),
            ticks: 0,
            tombstones: Default::default(),
            no_vote: Default::default(),
            load: BTreeMap::new(),
            merged: Default::default(),
            merged_gc: Default::default(),
            size_cursor: 0,
            removal_pending: true,
            dirty: Default::default(),
            awake: Default::default(),
            last_heard: BTreeMap::new(),
            peers: Default::default(),
        };
        let (lo, hi) = keys::descriptor_scan_bounds();
        for (k, v) in store.engine.scan(&lo, &hi, usize::MAX, false)? {
            if let Some(range_id) = keys::tombstone_range_id(&k) {
                if v == MERGED_TOMBSTONE {
                    store.merged.insert(range_id);
                } else {
                    store.tombstones.insert(range_id, removal_conf_ver(&v));
                }
            }
            if let Some(range_id) = keys::descriptor_range_id(&k) {
                let mut r = store.open_replica(range_id)?;
                let d = r.descriptor().clone();
                let size: usize = store
                    .engine
                    .scan(&d.start_key, &d.end_key, usize::MAX, false)?
                    .iter()
                    .map(|(k, v)| k.len() + v.len())
                    .sum();
                r.set_approx_bytes(size as u64);
                store.replicas.insert(range_id, r);
            }
        }
        // A replica recreated over its tombstone that had not yet become a
        // member again before the restart: still no vote (see `handle`).
        let recreated: Vec<(u64, u64)> = store
            .tombstones
            .iter()
            .filter(|(id, _)| store.replicas.contains_key(id))
            .map(|(&id, &at)| (id, at))
            .collect();
        for (id, at) in recreated {
            store.tombstones.remove(&id);
            store.no_vote.insert(id, at);
        }
        store.dirty = store.replicas.keys().copied().collect();
        store.awake = store.dirty.clone();
        // A group of one elects itself at once instead of waiting a timeout.
        let me = store.cfg.node_id;
        for r in store.replicas.values_mut() {
            if r.status().voters == [me] {
                r.campaign()?;
            }
        }
        Ok((store, handle))
    }

    fn open_replica(&mut self, range_id: u64) -> Result<Replica> {
        Replica::open(
            self.cfg.node_id,
            range_id,
            self.engine.clone(),
            self.cfg.heartbeat_ticks,
            self.cfg.election_ticks,
            self.cfg.log_compact_entries,
            self.rng.gen(),
        )
    }

    /// Runs until `shutdown` flips or every handle is dropped.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        // Ticks follow this node's clock, so a drifting clock ticks faster or slower.
        let mut next_tick = tokio::time::Instant::now() + self.cfg.clock.to_true(self.cfg.tick);
        let result = loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => break Ok(()),
                _ = tokio::time::sleep_until(next_tick) => {
                    next_tick = tokio::time::Instant::now() + self.cfg.clock.to_true(self.cfg.tick);
                    self.tick_all();
                    self.ticks += 1;
                    if self.ticks % SPLIT_CHECK_TICKS == 0 {
                        self.split_large_ranges();
                        self.split_hot_ranges();
                        self.measure_next_range();
                    }
                }
                msg = self.rx.recv() => {
                    let Some(msg) = msg else { break Ok(()) };
                    self.handle(msg);
                    for _ in 1..self.cfg.max_msgs_per_loop {
                        match self.rx.try_recv() {
                            Ok(m) => self.handle(m),
                            Err(_) => break,
                        }
                    }
                }
            }
            let pause = crate::chaos::buggify_delay(0.005, Duration::from_millis(50));
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            // A round can create more work (e.g. reads started after a commit).
            let mut failed = None;
            for _ in 0..3 {
                if let Err(e) = self.process_readies().await {
                    failed = Some(e);
                    break;
                }
                if self.dirty.is_empty() {
                    break;
                }
            }
            if let Some(e) = failed {
                tracing::error!(%e, "store stopped: cannot persist raft state");
                break Err(e);
            }
        };
        let mut completions = Vec::new();
        for r in self.replicas.values_mut() {
            r.fail_all(&mut completions);
        }
        completions.into_iter().for_each(Completion::send);
        result
    }

    /// The range a scan starts in: the one holding `start`, or for a
    /// reverse scan the one holding the last key before `end`.
    fn route_scan(&self, start: &[u8], end: &[u8], reverse: bool) -> Result<u64> {
        if !reverse || end.is_empty() {
            return self.route(start);
        }
        if let Some(r) = self.replicas.values().find(|r| {
            let d = r.descriptor();
            d.start_key.as_slice() < end && end <= d.end_key.as_slice() && !d.end_key.is_empty()
        }) {
            return Ok(r.range_id());
        }
        self.route(start)
    }

    /// A new cluster-unique range id: a persisted per-store counter times
    /// 1000 plus this node's id (node ids are < 1000).
    fn allocate_range_id(&mut self) -> Result<u64> {
        let current = match self.engine.get(RANGE_COUNTER_KEY)? {
            Some(b) => u64::from_be_bytes(
                b.as_slice()
                    .try_into()
                    .map_err(|_| Error::Corruption("range counter".into()))?,
            ),
            None => 0,
        };
        let next = current + 1;
        let mut wb = WriteBatch::new();
        wb.put(RANGE_COUNTER_KEY.to_vec(), next.to_be_bytes().to_vec());
        self.engine.write(&wb, true)?;
        Ok(next * 1000 + self.cfg.node_id)
    }

    /// Something happened to replica `id`: look at it next round, and tick
    /// it while it is awake.
    fn note(&mut self, id: u64) {
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

    fn propose_split(&mut self, key: Vec<u8>, sticky: bool, done: Responder<()>) {
        let range_id = match self.route(&key) {
            Ok(id) => id,
            Err(e) => {
                let _ = done.send(Err(e));
                return;
            }
        };
        self.note(range_id);
        if self
            .replicas
            .get(&range_id)
            .is_some_and(|r| r.descriptor().start_key == key)
        {
            let _ = done.send(Ok(())); // already split here
            return;
        }
        if range_id == SYSTEM_RANGE_ID {
            let _ = done.send(Err(Error::InvalidArgument(
                "the system range (keys under _/) does not split".into(),
            )));
            return;
        }
        let is_leader = self.replicas.get(&range_id).is_some_and(|r| r.is_leader());
        if !is_leader {
            if let Some(r) = self.replicas.get(&range_id) {
                let _ = done.send(Err(r.not_leader()));
            }
            return;
        }
        let new_id = match self.allocate_range_id() {
            Ok(id) => id,
            Err(e) => {
                let _ = done.send(Err(e));
                return;
            }
        };
        if let Some(r) = self.replicas.get_mut(&range_id) {
            r.propose_split(key, new_id, sticky, done);
        }
    }

    /// Leaders split user ranges that grew past `range_max_bytes` (read from
    /// `_/cluster/config/range_max_bytes`, default 64 MiB) at their middle key.
    fn split_large_ranges(&mut self) {
        let max = self
            .engine
            .get(&keys::data_key(b"_/cluster/config/range_max_bytes"))
            .ok()
            .flatten()
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(crate::config::DEFAULT_RANGE_MAX_BYTES);
        let candidates: Vec<(u64, RangeDescriptor, u64)> = self
            .replicas
            .values()
            .filter(|r| r.is_leader() && r.range_id() != SYSTEM_RANGE_ID && r.approx_bytes() > max)
            .map(|r| (r.range_id(), r.descriptor().clone(), r.approx_bytes()))
            .collect();
        for (range_id, d, _) in candidates {
            let Ok(pairs) = self
                .engine
                .scan(&d.start_key, &d.end_key, usize::MAX, false)
            else {
                continue;
            };
            let total: u64 = pairs.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
            if let Some(r) = self.replicas.get_mut(&range_id) {
                r.set_approx_bytes(total);
            }
            if total <= max || pairs.len() < 2 {
                continue;
            }
            let mut acc = 0u64;
            let mut split_key = None;
            for (k, v) in &pairs[1..] {
                acc += (k.len() + v.len()) as u64;
                if acc * 2 >= total {
                    split_key = Some(k.clone());
                    break;
                }
            }
            if let Some(key) = split_key {
                tracing::info!(
                    range_id,
                    bytes = total,
                    "range is over range_max_bytes; splitting"
                );
                let (done, _rx) = oneshot::channel();
                self.propose_split(key, false, done);
            }
        }
    }

    /// Ticks every awake replica; sends the messages of ranges going to
    /// sleep; pings peer nodes; wakes sleeping followers whose leader's node
    /// fell silent for an election timeout.
    fn tick_all(&mut self) {
        let now = self.ticks;
        let silent_after = self.cfg.election_ticks as u64;
        let awake: Vec<u64> = self.awake.iter().copied().collect();
        for id in awake {
            let Some(r) = self.replicas.get_mut(&id) else {
                self.awake.remove(&id);
                continue;
            };
            for m in r.tick() {
                self.transport.send(id, m);
            }
            self.dirty.insert(id);
            if r.is_quiesced() {
                self.awake.remove(&id);
            }
        }
        // Sleeping followers whose leader's node fell silent (a scan of
        // every replica, so twice per election timeout only).
        if now % (silent_after / 2).max(1) == 0 {
            for (&id, r) in self.replicas.iter_mut() {
                if !r.is_quiesced() {
                    continue;
                }
                let leader = r.leader_id();
                let heard = self.last_heard.get(&leader).copied().unwrap_or(0);
                if leader == self.cfg.node_id || now.saturating_sub(heard) <= silent_after {
                    continue;
                }
                tracing::debug!(
                    range_id = id,
                    leader,
                    "leader's node is silent; waking range"
                );
                r.wake();
                self.awake.insert(id);
                self.dirty.insert(id);
            }
        }
        if now % self.cfg.heartbeat_ticks.max(1) as u64 == 0 {
            if now % 100 == 0 || self.peers.is_empty() {
                self.peers = self
                    .replicas
                    .values()
                    .flat_map(|r| r.descriptor().replicas.clone())
                    .filter(|n| *n != self.cfg.node_id)
                    .collect();
            }
            for &to in &self.peers {
                let mut m = Message::default();
                m.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
                m.to = to;
                m.from = self.cfg.node_id;
                self.transport.send(PING_RANGE_ID, m);
            }
        }
    }

    /// Measures the exact size of one range this node leads, round robin:
    /// `approx_bytes` only grows with writes (an overwrite or delete adds
    /// to it), and the placement driver merges ranges by size. Ranges with
    /// more than SIZE_SCAN_PAIRS pairs keep their estimate.
    fn measure_next_range(&mut self) {
        let next = self
            .replicas
            .range(self.size_cursor + 1..)
            .chain(self.replicas.range(..=self.size_cursor))
            .find(|(_, r)| r.is_leader() && r.is_initialized() && !r.is_frozen())
            .map(|(id, r)| (*id, r.descriptor().clone()));
        let Some((range_id, d)) = next else {
            return;
        };
        self.size_cursor = range_id;
        let Ok(pairs) = self
            .engine
            .scan(&d.start_key, &d.end_key, SIZE_SCAN_PAIRS, false)
        else {
            return;
        };
        if pairs.len() < SIZE_SCAN_PAIRS {
            let total: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
            if let Some(r) = self.replicas.get_mut(&range_id) {
                r.set_approx_bytes(total as u64);
            }
        }
    }

    /// Deletes the replicas that membership changes removed from this node:
    /// their data, their Raft state, and leaves a tombstone.
    fn destroy_removed(&mut self) -> Result<()> {
        if !std::mem::take(&mut self.removal_pending) {
            return Ok(());
        }
        let removed: Vec<u64> = self
            .replicas
            .values()
            .filter(|r| r.is_removed())
            .map(|r| r.range_id())
            .collect();
        for range_id in removed {
            let Some(mut r) = self.replicas.remove(&range_id) else {
                continue;
            };
            let mut completions = Vec::new();
            r.fail_all(&mut completions);
            completions.into_iter().for_each(Completion::send);
            let d = r.descriptor().clone();
            let mut wb = WriteBatch::new();
            let overlapped = self.replicas.values().any(|o| {
                o.is_initialized()
                    && o.descriptor().start_key < d.end_key
                    && d.start_key < o.descriptor().end_key
            });
            if !d.end_key.is_empty() && !overlapped {
                wb.delete_range(d.start_key.clone(), d.end_key.clone());
            }
            let (lo, hi) = keys::range_local_bounds(range_id);
            wb.delete_range(lo, hi);
            if self.merged_gc.remove(&range_id) {
                wb.put(keys::tombstone_key(range_id), MERGED_TOMBSTONE.to_vec());
            } else {
                wb.put(
                    keys::tombstone_key(range_id),
                    r.removed_at().to_be_bytes().to_vec(),
                );
            }
            // Keep the term and vote: if this node is added back, its new
            // replica must not vote again in a term it already voted in.
            let mut hs = r.hard_state();
            hs.commit = 0;
            wb.put(
                keys::hard_state_key(range_id),
                protobuf::Message::write_to_bytes(&hs)?,
            );
            self.engine.write(&wb, true)?;
            if wb.last_put(&keys::tombstone_key(range_id)) == Some(MERGED_TOMBSTONE) {
                self.merged.insert(range_id);
            } else {
                self.tombstones.insert(range_id, r.removed_at());
            }
            self.no_vote.remove(&range_id);
            tracing::info!(range_id, "replica removed from this node");
        }
        Ok(())
    }

    fn record_load(&mut self, range_id: u64, key: &[u8]) {
        let l = self.load.entry(range_id).or_default();
        l.requests += 1;
        // Every 8th key, in a ring: a cheap, deterministic sample.
        if l.requests % 8 == 1 {
            let i = (l.requests / 8) as usize % LOAD_SAMPLE_KEYS;
            if i < l.sample.len() {
                l.sample[i] = key.to_vec();
            } else {
                l.sample.push(key.to_vec());
            }
        }
    }

    /// Leaders split user ranges that served more than `split_qps`
    /// (`_/cluster/config/split_qps`, default 2500; 0 disables) for
    /// LOAD_SPLIT_CHECKS checks in a row, at the median of the sampled keys.
    fn split_hot_ranges(&mut self) {
        let qps_limit = self
            .engine
            .get(&keys::data_key(b"_/cluster/config/split_qps"))
            .ok()
            .flatten()
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(crate::config::DEFAULT_SPLIT_QPS);
        let window = self.cfg.tick.as_secs_f64() * SPLIT_CHECK_TICKS as f64;
        let mut splits = Vec::new();
        for (&range_id, l) in self.load.iter_mut() {
            let qps = l.requests as f64 / window.max(1e-3);
            l.requests = 0;
            l.qps = qps as u64;
            let leader = self.replicas.get(&range_id).is_some_and(|r| r.is_leader());
            if qps_limit == 0 || range_id == SYSTEM_RANGE_ID || !leader || qps <= qps_limit as f64 {
                l.hot_checks = 0;
                continue;
            }
            l.hot_checks += 1;
            if l.hot_checks >= LOAD_SPLIT_CHECKS {
                let mut keys: Vec<Vec<u8>> = std::mem::take(&mut l.sample);
                keys.sort();
                keys.dedup();
                l.hot_checks = 0;
                if let Some(mid) = keys.get(keys.len() / 2) {
                    splits.push((range_id, mid.clone(), qps));
                }
            }
        }
        for (range_id, key, qps) in splits {
            let inside = self.replicas.get(&range_id).is_some_and(|r| {
                let d = r.descriptor();
                key > d.start_key && key < d.end_key
            });
            if inside {
                tracing::info!(
                    range_id,
                    qps = qps as u64,
                    "range is over split_qps; splitting by load"
                );
                let (done, _rx) = oneshot::channel();
                self.propose_split(key, false, done);
            }
        }
    }

    /// Opens the replicas that splits applied this round (by the replicas
    /// in `round`) created on this node.
    fn adopt_new_ranges(&mut self, round: &[u64]) -> Result<()> {
        let mut created = Vec::new();
        for id in round {
            if let Some(r) = self.replicas.get_mut(id) {
                created.extend(r.take_new_ranges());
            }
        }
        for (desc, parent_leader) in created {
            if self
                .replicas
                .get(&desc.range_id)
                .is_some_and(|r| r.is_initialized())
            {
                continue;
            }
            // Split and merged away again within one round (a replay after
            // a restart, seed 191): the range lives on inside its neighbour.
            if self.merged.contains(&desc.range_id) {
                continue;
            }
            // An empty replica of the new range may have persisted its hard
            // state in the same batch, after the split's bootstrap: keep its
            // (newer) term and vote, but the commit index of the bootstrap.
            let hs_key = keys::hard_state_key(desc.range_id);
            if let Some(b) = self.engine.get(&hs_key)? {
                let mut hs = <raft::eraftpb::HardState as protobuf::Message>::parse_from_bytes(&b)?;
                if hs.commit < crate::raft::INIT_INDEX || hs.term < crate::raft::INIT_TERM {
                    hs.commit = hs.commit.max(crate::raft::INIT_INDEX);
                    hs.term = hs.term.max(crate::raft::INIT_TERM);
                    let mut wb = WriteBatch::new();
                    wb.put(hs_key, protobuf::Message::write_to_bytes(&hs)?);
                    self.engine.write(&wb, true)?;
                }
            }
            let mut r = self.open_replica(desc.range_id)?;
            // The parent's leader campaigns at once so the new range is not
            // leaderless for an election timeout.
            // Only a voter of the new range may campaign: a leader that is
            // being removed from the parent (seed 485) is not one.
            let voters = r.status().voters;
            if voters.contains(&self.cfg.node_id) && (parent_leader || voters == [self.cfg.node_id])
            {
                r.campaign()?;
            }
            tracing::info!(range_id = desc.range_id, "range created by a split");
            self.replicas.insert(desc.range_id, r);
            self.note(desc.range_id);
        }
        Ok(())
    }

    /// Whether a snapshot for an empty replica would overlap another range
    /// this node still holds (that range has not applied the split that
    /// created the snapshot's range yet): then it must wait, or older entries
    /// of the parent could overwrite the snapshot's newer data.
    fn snapshot_overlaps(&self, range_id: u64, m: &Message) -> bool {
        if m.get_msg_type() != raft::eraftpb::MessageType::MsgSnapshot {
            return false;
        }
        if self
            .replicas
            .get(&range_id)
            .is_some_and(|r| r.is_initialized())
        {
            return false;
        }
        let Ok(data) =
            <crate::raft::SnapshotData as prost::Message>::decode(m.get_snapshot().get_data())
        else {
            return true;
        };
        self.replicas.values().any(|r| {
            let d = r.descriptor();
            r.range_id() != range_id
                && r.is_initialized()
                && d.start_key < data.end
                && data.start < d.end_key
        })
    }

    fn route(&self, key: &[u8]) -> Result<u64> {
        if let Some(r) = self
            .replicas
            .values()
            .find(|r| r.descriptor().contains(key))
        {
            return Ok(r.range_id());
        }
        // No initialized replica holds the key (yet): say which range would.
        let range_id = if key.first() == Some(&keys::SYSTEM_DATA) {
            SYSTEM_RANGE_ID
        } else {
            USER_RANGE_ID
        };
        Err(Error::RangeNotFound(range_id))
    }

    fn handle(&mut self, msg: StoreMsg) {
        match msg {
            StoreMsg::Raft { from, msgs } => {
                self.last_heard.insert(from, self.ticks);
                for (range_id, m) in msgs {
                    if range_id == PING_RANGE_ID {
                        continue;
                    }
                    if m.to != self.cfg.node_id {
                        tracing::warn!(to = m.to, from, "raft message for another node dropped");
                        continue;
                    }
                    if self.merged.contains(&range_id) {
                        continue; // the range lives on inside another one
                    }
                    if self.tombstones.contains_key(&range_id)
                        && !self.replicas.contains_key(&range_id)
                    {
                        // Removed from this node earlier. Only a leader's
                        // traffic can mean this node was added again (an empty
                        // replica answers, is found behind, gets a snapshot);
                        // stale votes are dropped. A heartbeat's commit index
                        // is clamped below, so a late one is harmless.
                        use raft::eraftpb::MessageType::*;
                        if !matches!(m.get_msg_type(), MsgAppend | MsgHeartbeat | MsgSnapshot) {
                            continue;
                        }
                        let removed_at = self.tombstones.remove(&range_id).unwrap_or(0);
                        // The old replica's log died with it. An empty
                        // replica that votes could hand a candidate whose
                        // log lacks the membership change that removed this
                        // node a majority of that stale membership (seed 382:
                        // two leaders, lost writes). So could one that a
                        // stale leader (still counting this node as a voter)
                        // initialized with a snapshot of that membership
                        // (seed 1811). It votes again only once it holds a
                        // membership newer than the one that removed it.
                        self.no_vote.insert(range_id, removed_at);
                    }
                    if !self.replicas.contains_key(&range_id) {
                        // A replica of a range we do not hold yet: create it
                        // empty; the leader will send a snapshot.
                        match self.open_replica(range_id) {
                            Ok(r) => {
                                tracing::info!(
                                    range_id,
                                    from,
                                    "created replica for incoming raft traffic"
                                );
                                self.replicas.insert(range_id, r);
                                self.note(range_id);
                            }
                            Err(e) => {
                                tracing::error!(range_id, %e, "cannot create replica");
                                continue;
                            }
                        }
                    }
                    if let Some(&removed_at) = self.no_vote.get(&range_id) {
                        use raft::eraftpb::MessageType::*;
                        let member_again = self.replicas.get(&range_id).is_some_and(|r| {
                            r.is_initialized() && r.descriptor().conf_ver > removed_at
                        });
                        if member_again {
                            self.no_vote.remove(&range_id);
                            let mut wb = WriteBatch::new();
                            wb.delete(keys::tombstone_key(range_id));
                            if let Err(e) = self.engine.write(&wb, true) {
                                tracing::error!(%e, "cannot clear a tombstone");
                            }
                        } else if matches!(m.get_msg_type(), MsgRequestVote | MsgRequestPreVote) {
                            continue;
                        }
                    }
                    if self.snapshot_overlaps(range_id, &m) {
                        tracing::debug!(
                            range_id,
                            "snapshot overlaps a range not yet split here; dropped"
                        );
                        continue;
                    }
                    if let Some(r) = self.replicas.get_mut(&range_id) {
                        let mut m = m;
                        if m.get_msg_type() == raft::eraftpb::MessageType::MsgHeartbeat {
                            // A heartbeat from a deposed leader can name a commit
                            // index from this node's previous membership, which
                            // raft-rs would accept into an empty log and panic.
                            m.commit = m.commit.min(r.last_index());
                        }
                        if let Err(e) = r.step(m) {
                            tracing::debug!(range_id, %e, "raft step failed");
                        }
                    }
                    self.note(range_id);
                }
            }
            StoreMsg::Write { ops, done } => {
                let Some(first) = ops.first() else {
                    let _ = done.send(Ok(()));
                    return;
                };
                match self.route(&first.key) {
                    Ok(id) => {
                        let key = first.key.clone();
                        self.record_load(id, &key);
                        if let Some(r) = self.replicas.get_mut(&id) {
                            r.propose(ops, done);
                        }
                        self.note(id);
                    }
                    Err(e) => drop(done.send(Err(e))),
                }
            }
            StoreMsg::Read {
                op,
                consistency,
                done,
            } => {
                let route = match &op {
                    ReadOp::Get(k) => self.route(k),
                    ReadOp::Scan {
                        start,
                        end,
                        reverse,
                        ..
                    } => self.route_scan(start, end, *reverse),
                };
                match route {
                    Ok(id) => {
                        let key = match &op {
                            ReadOp::Get(k) => k.clone(),
                            ReadOp::Scan { start, .. } => start.clone(),
                        };
                        self.record_load(id, &key);
                        if let Some(r) = self.replicas.get_mut(&id) {
                            match consistency {
                                Consistency::Linearizable => r.read(op, done),
                                Consistency::Local => drop(done.send(r.read_local(&op))),
                            }
                        }
                        self.note(id);
                    }
                    Err(e) => drop(done.send(Err(e))),
                }
            }
            StoreMsg::Split { key, sticky, done } => self.propose_split(key, sticky, done),
            StoreMsg::Freeze {
                range_id,
                expected_version,
                done,
            } => {
                match self.replicas.get_mut(&range_id) {
                    Some(r) => r.propose_freeze(expected_version, done),
                    None => drop(done.send(Err(Error::RangeNotFound(range_id)))),
                }
                self.note(range_id);
            }
            StoreMsg::FrozenData { range_id, done } => {
                let r = match self.replicas.get(&range_id) {
                    Some(r) => r.frozen_data(),
                    None => Err(Error::RangeNotFound(range_id)),
                };
                let _ = done.send(r);
            }
            StoreMsg::Merge {
                range_id,
                expected_version,
                rhs,
                pairs,
                done,
            } => {
                match self.replicas.get_mut(&range_id) {
                    Some(r) => r.propose_merge(expected_version, rhs, pairs, done),
                    None => drop(done.send(Err(Error::RangeNotFound(range_id)))),
                }
                self.note(range_id);
            }
            StoreMsg::GcReplica {
                range_id,
                conf_ver,
                merged,
                done,
            } => {
                if let Some(r) = self.replicas.get_mut(&range_id) {
                    self.removal_pending = true;
                    if merged {
                        tracing::info!(range_id, "replica of a merged range will be dropped");
                        self.merged_gc.insert(range_id);
                        r.mark_removed_if_older(u64::MAX);
                    } else if r.mark_removed_if_older(conf_ver) {
                        tracing::info!(range_id, conf_ver, "stale replica will be removed");
                    }
                }
                let _ = done.send(Ok(()));
            }
            StoreMsg::ChangeReplicas {
                range_id,
                change,
                expected_conf_ver,
                done,
            } => {
                match self.replicas.get_mut(&range_id) {
                    Some(r) => r.propose_change(change, expected_conf_ver, done),
                    None => drop(done.send(Err(Error::RangeNotFound(range_id)))),
                }
                self.note(range_id);
            }
            StoreMsg::LedDescriptors { done } => {
                let led = self
                    .replicas
                    .values()
                    .filter(|r| r.is_leader() && r.is_initialized() && !r.is_frozen())
                    .map(|r| r.descriptor().clone())
                    .collect();
                let _ = done.send(led);
            }
            StoreMsg::Status { done } => {
                let ranges = self
                    .replicas
                    .values()
                    .map(|r| {
                        let mut s = r.status();
                        s.qps = self.load.get(&s.range_id).map_or(0, |l| l.qps);
                        s
                    })
                    .collect();
                let _ = done.send(NodeStatus {
                    node_id: self.cfg.node_id,
                    ranges,
                });
            }
        }
    }

    /// One engine write. In production it runs on the blocking pool (an
    /// fsync must not stall the reactor); in simulation MemEngine never
    /// blocks and madsim forbids blocking tasks, so it runs inline.
    async fn write(&self, wb: WriteBatch, sync: bool) -> Result<()> {
        #[cfg(madsim)]
        {
            self.engine.write(&wb, sync)?;
            let slow = self.engine.sync_latency();
            if sync && !slow.is_zero() {
                tokio::time::sleep(slow).await;
            }
            Ok(())
        }
        #[cfg(not(madsim))]
        {
            let engine = self.engine.clone();
            match tokio::task::spawn_blocking(move || engine.write(&wb, sync)).await {
                Ok(r) => r,
                Err(e) => Err(Error::Internal(format!("engine write task failed: {e}"))),
            }
        }
    }

    fn send_all(&self, msgs: Vec<(u64, Vec<Message>)>) {
        for (range_id, ms) in msgs {
            for m in ms {
                self.transport.send(range_id, m);
            }
        }
    }

    /// Handles every replica's Ready with one synced engine write (see module docs).
    async fn process_readies(&mut self) -> Result<()> {
        // Replicas marked stale by the placement driver may have no Ready.
        self.destroy_removed()?;
        // Spans taken by snapshots this round: replicas they cover are stale.
        let mut covered: Vec<Cover> = Vec::new();
        // Replicas of ranges merged into another one this round: skipped
        // from the moment the merge (or a snapshot covering them) applied,
        // so none of their older writes lands after the merged data.
        let mut gone = std::collections::BTreeSet::new();
        let mut wb = WriteBatch::new();
        let mut sync = false;
        let mut early = Vec::new();
        let mut readies = Vec::new();
        let mut completions = Vec::new();
        // Only replicas something happened to can have a Ready: thousands
        // of sleeping ranges cost a flag check each.
        let mut round = Vec::new();
        for id in std::mem::take(&mut self.dirty) {
            let Some(r) = self.replicas.get_mut(&id) else {
                continue;
            };
            if is_covered(r, &covered) {
                gone.insert(id);
            }
            if gone.contains(&id) || !r.take_touched() {
                continue;
            }
            round.push(id);
            let mut msgs = Vec::new();
            if let Some((rd, must_sync)) = r.collect_ready(&mut wb, &mut msgs, &mut completions)? {
                sync |= must_sync;
                readies.push((id, rd));
            }
            early.push((id, msgs));
            absorbed_by(r, &mut covered, &mut gone);
        }
        if !covered.is_empty() {
            // Replicas before the snapshot's in this round's order (rare).
            for (&id, r) in self.replicas.iter() {
                if is_covered(r, &covered) {
                    gone.insert(id);
                }
            }
        }
        readies.retain(|(id, _)| !gone.contains(id));
        let mut staged = std::collections::BTreeSet::new();
        for &id in &gone {
            stage_merged_away(&mut wb, id);
            staged.insert(id);
        }
        // Leaders may send appends before their own fsync (Raft thesis 10.2.1).
        self.send_all(early);
        if readies.is_empty() && completions.is_empty() {
            return Ok(());
        }
        if !wb.is_empty() || sync {
            let sync = sync && !crate::chaos::canary(crate::chaos::Canary::AckBeforeFsync);
            self.write(wb, sync).await?;
        }
        let mut wb = WriteBatch::new();
        let mut late = Vec::new();
        let covered_before = covered.len();
        for (id, rd) in readies {
            let Some(r) = self.replicas.get_mut(&id) else {
                continue;
            };
            if is_covered(r, &covered[covered_before..]) {
                gone.insert(id);
            }
            if gone.contains(&id) {
                continue;
            }
            let mut msgs = Vec::new();
            r.finish_ready(rd, &mut wb, &mut msgs, &mut completions)?;
            absorbed_by(r, &mut covered, &mut gone);
            late.push((id, msgs));
        }
        if covered.len() > covered_before {
            for (&id, r) in self.replicas.iter() {
                if is_covered(r, &covered[covered_before..]) {
                    gone.insert(id);
                }
            }
        }
        for &id in gone.difference(&staged) {
            stage_merged_away(&mut wb, id);
        }
        if !wb.is_empty() {
            self.write(wb, false).await?;
        }
        self.send_all(late);
        for id in gone {
            if let Some(mut r) = self.replicas.remove(&id) {
                // Writes of the merged range that were still waiting: the
                // merge carried whatever of them had applied.
                r.fail_all(&mut completions);
            }
            self.load.remove(&id);
            self.merged.insert(id);
            tracing::info!(range_id = id, "replica dropped: its range was merged");
        }
        self.adopt_new_ranges(&round)?;
        self.destroy_removed()?;
        for id in round {
            if let Some(r) = self.replicas.get_mut(&id) {
                r.after_write(&mut completions);
                if r.has_ready() {
                    r.touch();
                    self.dirty.insert(id);
                }
                if r.is_removed() {
                    self.removal_pending = true;
                }
                if r.is_quiesced() {
                    self.awake.remove(&id);
                } else {
                    self.awake.insert(id);
                }
            }
        }
        completions.into_iter().for_each(Completion::send);
        Ok(())
    }
}

/// Notes the ranges replica `r` just absorbed: merged by a command it
/// applied, or covered by a snapshot it applied (taken after a merge; the
/// replicas it overlaps are found with `is_covered`).
///
/// A merge covers more than its right-hand range when this node's replica
/// of that range lagged: a range merged into it earlier may still have a
/// replica here that never saw that merge (seed 8562). That replica is
/// stale and must go now, before it applies old writes over the merged
/// data.
fn absorbed_by(
    r: &mut Replica,
    covered: &mut Vec<Cover>,
    gone: &mut std::collections::BTreeSet<u64>,
) {
    for (id, start, end, version) in r.take_merged_away() {
        gone.insert(id);
        // Only replicas older than the merged range: a newer range split off
        // the merged one later may already live in that span.
        covered.push((r.range_id(), start, end, version));
    }
    if r.take_snapshot_applied() {
        let d = r.descriptor();
        covered.push((d.range_id, d.start_key.clone(), d.end_key.clone(), u64::MAX));
    }
}

/// Whether initialized replica `r` lies in a span another range took this
/// round — by a snapshot (taken after a merge), or by a merge whose right
/// range was newer than `r` — so `r` is a stale replica of a merged range.
fn is_covered(r: &Replica, covered: &[Cover]) -> bool {
    if covered.is_empty() {
        return false;
    }
    let d = r.descriptor();
    r.is_initialized()
        && covered.iter().any(|(id, s, e, below)| {
            *id != d.range_id && *s < d.end_key && d.start_key < *e && d.version < *below
        })
}

/// A span some replica took this round (range, start, end), and the
/// version below which other replicas inside it are stale.
type Cover = (u64, Vec<u8>, Vec<u8>, u64);

/// Stages dropping the Raft state of a replica whose range was merged into
/// another one (its data now belongs to that range: it stays), and a
/// tombstone that ignores the range's traffic from now on.
fn stage_merged_away(wb: &mut WriteBatch, range_id: u64) {
    let (lo, hi) = keys::range_local_bounds(range_id);
    wb.delete_range(lo, hi);
    wb.put(keys::tombstone_key(range_id), MERGED_TOMBSTONE.to_vec());
}
