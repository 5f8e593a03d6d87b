//! `Replica`: one range's Raft group on this node, its state machine, and the
//! proposals and reads waiting on it. Synchronous; the node's Store drives it
//! through the two Ready phases (`ready.rs`) and owns all IO.
//!
//! Every proposal goes through `propose` (one `Request` per operation, each
//! prepared by the operation's own file) and one admission check (`admit`:
//! leader? frozen? epoch?).

use std::collections::BTreeMap;
use std::sync::Arc;

use raft::{RawNode, StateRole};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::oneshot;

use super::read::{PendingRead, ReadOp, ReadResult};
use super::state_machine::Absorbed;
use super::{Command, Op, RangeDescriptor, ReplicaChange};
use crate::error::{Error, LeaderHint, Result, Span};
use crate::keys;
use crate::metrics::NodeMetrics;
use crate::raft::{group_config, raft_logger, LogStore, SnapshotJobs};
use crate::storage::{Engine, KvPair, WriteBatch};

/// Where a request's answer goes.
pub type Responder<T> = oneshot::Sender<Result<T>>;

/// An answer to send once the engine write that makes it true has landed.
pub enum Completion {
    Write(Responder<()>, Result<()>),
    Read(Responder<ReadResult>, Result<ReadResult>),
    /// A ready scan to run off the Store task (`deferred.rs`).
    Scan(Responder<ReadResult>, super::deferred::DeferredScan),
}

impl Completion {
    pub fn send(self) {
        // A receiver that gave up (timed out) is not an error.
        match self {
            Completion::Write(tx, r) => drop(tx.send(r)),
            Completion::Read(tx, r) => drop(tx.send(r)),
            Completion::Scan(tx, scan) => scan.answer(tx),
        }
    }
}

/// Something to propose to a range's log.
#[derive(Debug)]
pub enum Request {
    /// A client write (all keys in this range), applied atomically.
    Write(Vec<Op>),
    /// A two-phase-commit step (`txn.rs`): `Kind::Prewrite`, `Finish` or
    /// `CheckTxn`.
    Txn(super::command::Kind),
    /// Collect MVCC garbage (`gc.rs`).
    Gc(super::command::GcCmd),
    /// A timestamped write of user data (`timestamped.rs`).
    OnePc {
        cmd: super::command::OnePcCmd,
        seed_term: Option<u64>,
    },
    Split {
        key: Vec<u8>,
        new_range_id: u64,
        sticky: bool,
    },
    /// Freeze for a merge into the left neighbour (idempotent).
    Freeze { expected_version: u64 },
    /// Absorb the frozen right neighbour `rhs` with its data.
    Merge {
        expected_version: u64,
        rhs: RangeDescriptor,
        pairs: Vec<KvPair>,
    },
    /// A membership change or leader transfer.
    Change {
        change: ReplicaChange,
        expected_conf_ver: u64,
    },
}

impl Request {
    /// Its name on request log lines.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Request::Write(_) => "write",
            Request::Txn(_) => "txn",
            Request::Gc(_) => "gc",
            Request::OnePc { .. } => "one-pc",
            Request::Split { .. } => "split",
            Request::Freeze { .. } => "freeze",
            Request::Merge { .. } => "merge",
            Request::Change { .. } => "change",
        }
    }
}

/// What a proposal must be admitted with.
#[derive(Debug, Clone, Copy)]
pub(super) struct Admit {
    /// Also on a frozen range.
    pub frozen_ok: bool,
    /// Only at this epoch version.
    pub version: Option<u64>,
}

impl Admit {
    /// The leader of an unfrozen range, at any version.
    pub const LEADER: Admit = Admit {
        frozen_ok: false,
        version: None,
    };
}

pub(super) struct Proposal {
    pub id: u64,
    pub done: Responder<()>,
    /// When it was proposed (`raft_proposal_duration_seconds`).
    pub at: tokio::time::Instant,
    /// From proposal to apply (exported inside a traced request only).
    pub span: tracing::Span,
}

impl Proposal {
    pub fn new(id: u64, done: Responder<()>) -> Proposal {
        Proposal {
            id,
            done,
            at: tokio::time::Instant::now(),
            span: tracing::debug_span!(
                "raft.propose",
                proposal = id,
                range_id = tracing::field::Empty,
                index = tracing::field::Empty
            ),
        }
    }
}

/// Timing and sizes a replica runs with, and its node's metrics.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub node_id: u64,
    pub heartbeat_ticks: usize,
    pub election_ticks: usize,
    /// Compact the log once this many applied entries are kept.
    pub log_compact_entries: u64,
    pub metrics: Arc<NodeMetrics>,
    /// Leader leases for reads (`lease.rs`); `None`: every linearizable
    /// read asks a quorum (ReadIndex).
    pub lease: Option<super::LeaseConfig>,
}

/// A snapshot of a replica's Raft state, for status and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub range_id: u64,
    pub leader_id: u64,
    pub term: u64,
    pub is_leader: bool,
    pub commit: u64,
    pub applied: u64,
    pub last_index: u64,
    pub truncated_index: u64,
    pub apply_hash: u64,
    pub voters: Vec<u64>,
    pub descriptor: RangeDescriptor,
    pub approx_bytes: u64,
    pub learners: Vec<u64>,
    /// Leader only: (peer, matched index) for every other member.
    pub progress: Vec<(u64, u64)>,
    /// Requests per second this node served for the range, recently
    /// (filled in by the Store).
    pub qps: u64,
    /// Hibernating (see `hibernate.rs`).
    pub quiesced: bool,
}

pub struct Replica {
    pub(super) node_id: u64,
    pub(super) desc: RangeDescriptor,
    pub(super) group: RawNode<LogStore>,
    pub(super) engine: Arc<dyn Engine>,
    /// Waiting writes by log index.
    pub(super) proposals: BTreeMap<u64, Proposal>,
    pub(super) reads: Vec<PendingRead>,
    /// Reads that arrived before this leader committed an entry of its term.
    pub(super) early_reads: Vec<(ReadOp, Option<crate::api::Timestamp>, Responder<ReadResult>)>,
    pub(super) next_ctx: u64,
    next_cmd_id: u64,
    pub(super) was_leader: bool,
    pub(super) log_compact_entries: u64,
    pub(super) metrics: Arc<NodeMetrics>,
    /// Ticks each follower has spent waiting for a snapshot (leader only).
    pub(super) snapshot_ticks: BTreeMap<u64, usize>,
    /// Seeded source of election timeouts (see `group_config`).
    pub(super) rng: ChaCha8Rng,
    /// (term, role) when the election timeout was last drawn.
    pub(super) timeout_drawn_at: (u64, StateRole),
    /// Ranges created by splits applied since the Store last looked, with
    /// whether this replica was the parent's leader.
    pub(super) new_ranges: Vec<(RangeDescriptor, bool)>,
    /// Approximate bytes written into this range (for size-based splits).
    pub(super) approx_bytes: u64,
    /// This node was removed from the range: the Store destroys the replica.
    pub(super) removed: bool,
    /// The newest membership version known to exclude this node (from the
    /// placement driver's collection of a stale replica).
    removed_at: u64,
    /// Ranges this replica absorbed by merges since the Store last looked:
    /// the Store drops its replicas of them, and of any other range inside
    /// those spans (their data now lives here).
    pub(super) merged_away: Vec<Absorbed>,
    /// A snapshot was applied since the Store last looked (its span may
    /// cover stale replicas of ranges merged into this one).
    pub(super) snapshot_applied: bool,
    /// The descriptor's span changed since the Store last looked.
    span_changed: bool,
    /// Hibernating (see `hibernate.rs`).
    pub(super) quiesced: bool,
    /// Ticks this leader has been idle.
    pub(super) idle_ticks: usize,
    /// Something happened to this replica since the Store last handled its
    /// Ready (a step, tick, proposal or read): it may have a new one.
    pub(super) touched: bool,
    /// The leader's read floor (`timestamped.rs`).
    pub(super) floor: super::timestamped::ReadFloor,
    /// The leader's read lease (`lease.rs`) and what it needs.
    pub(super) lease: super::lease::ReadLease,
    pub(super) lease_cfg: Option<super::LeaseConfig>,
}

impl Replica {
    /// Opens the replica of `range_id` stored in `engine` (empty if new).
    /// `seed` must come from the runtime's seeded RNG (election timeouts and
    /// proposal ids derive from it).
    pub fn open(
        cfg: ReplicaConfig,
        range_id: u64,
        engine: Arc<dyn Engine>,
        snapshot_jobs: SnapshotJobs,
        seed: u64,
    ) -> Result<Replica> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let desc = match engine.get(&keys::descriptor_key(range_id))? {
            Some(b) => RangeDescriptor::decode(&b)?,
            None => RangeDescriptor {
                range_id,
                ..Default::default()
            },
        };
        let span = (desc.start_key.clone(), desc.end_key.clone());
        let store = LogStore::open(
            engine.clone(),
            range_id,
            span,
            vec![keys::descriptor_key(range_id)],
            snapshot_jobs,
        )?;
        let raft_cfg = group_config(
            cfg.node_id,
            store.applied_index(),
            cfg.heartbeat_ticks,
            cfg.election_ticks,
        );
        let group = RawNode::new(&raft_cfg, store, &raft_logger(cfg.node_id, range_id))?;
        let next_cmd_id = rng.gen();
        let mut replica = Replica {
            node_id: cfg.node_id,
            desc,
            group,
            engine,
            proposals: BTreeMap::new(),
            reads: Vec::new(),
            early_reads: Vec::new(),
            next_ctx: 1,
            next_cmd_id,
            was_leader: false,
            log_compact_entries: cfg.log_compact_entries,
            metrics: cfg.metrics,
            snapshot_ticks: BTreeMap::new(),
            rng,
            timeout_drawn_at: (u64::MAX, StateRole::Follower),
            new_ranges: Vec::new(),
            approx_bytes: 0,
            removed: false,
            removed_at: 0,
            merged_away: Vec::new(),
            snapshot_applied: false,
            span_changed: true,
            quiesced: false,
            idle_ticks: 0,
            touched: true,
            floor: Default::default(),
            lease: Default::default(),
            lease_cfg: cfg.lease,
        };
        replica.reseed_election_timeout();
        let hs = replica.group.store().hard_state().clone();
        crate::chaos::raft_event(|| crate::chaos::RaftEvent::Recovered {
            range_id,
            node_id: cfg.node_id,
            term: hs.term,
            vote: hs.vote,
        });
        Ok(replica)
    }

    /// Stages a new range's descriptor and initial Raft state.
    pub fn bootstrap(wb: &mut WriteBatch, desc: &RangeDescriptor) {
        wb.put(keys::descriptor_key(desc.range_id), desc.encode());
        LogStore::bootstrap(wb, desc.range_id, desc.replicas.clone());
    }

    /// Proposes `req`; `done` is answered once it is applied (or fails).
    pub fn propose(&mut self, req: Request, done: Responder<()>) {
        self.activity();
        let prepared = match req {
            Request::Write(ops) => self.prepare_write(ops).map(Some),
            Request::OnePc { cmd, seed_term } => self.prepare_one_pc(cmd, seed_term).map(Some),
            Request::Gc(cmd) => self.prepare_gc(cmd).map(Some),
            Request::Txn(kind) => self.prepare_txn(kind).map(Some),
            Request::Split {
                key,
                new_range_id,
                sticky,
            } => self.prepare_split(key, new_range_id, sticky).map(Some),
            Request::Freeze { expected_version } => self.prepare_freeze(expected_version),
            Request::Merge {
                expected_version,
                rhs,
                pairs,
            } => self.prepare_merge(expected_version, rhs, pairs),
            Request::Change {
                change,
                expected_conf_ver,
            } => return self.propose_change(change, expected_conf_ver, done),
        };
        match prepared {
            Ok(Some(cmd)) => self.propose_command(cmd, done),
            Ok(None) => drop(done.send(Ok(()))),
            Err(e) => drop(done.send(Err(e))),
        }
    }

    /// The one admission check for proposals: this replica leads the range,
    /// the range is not frozen (unless allowed), and it is at the expected
    /// epoch version (if one is given).
    pub(super) fn admit(&self, a: Admit) -> Result<()> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        if self.desc.frozen && !a.frozen_ok {
            return Err(self.desc.epoch_mismatch());
        }
        if a.version.is_some_and(|v| v != self.desc.version) {
            return Err(self.desc.epoch_mismatch());
        }
        Ok(())
    }

    pub(super) fn next_command_id(&mut self) -> u64 {
        self.next_cmd_id = self.next_cmd_id.wrapping_add(1);
        self.next_cmd_id
    }

    fn propose_command(&mut self, mut cmd: Command, done: Responder<()>) {
        let id = self.next_command_id();
        cmd.id = id;
        let before = self.group.raft.raft_log.last_index();
        self.metrics.proposals.inc();
        if let Err(e) = self.group.propose(vec![], cmd.encode()) {
            self.metrics.proposals_failed.inc();
            let _ = done.send(Err(Error::Unavailable(format!("proposal dropped: {e}"))));
            return;
        }
        let index = self.group.raft.raft_log.last_index();
        if index == before {
            self.metrics.proposals_failed.inc();
            let _ = done.send(Err(Error::Unavailable(
                "proposal dropped (leader busy)".into(),
            )));
            return;
        }
        self.track(index, Proposal::new(id, done));
    }

    /// Waits for `index` to apply. An older proposal this leader made at the
    /// same index (in an earlier term) was truncated away: it never applies
    /// (seed 847).
    pub(super) fn track(&mut self, index: u64, p: Proposal) {
        p.span.record("range_id", self.desc.range_id);
        p.span.record("index", index);
        if let Some(old) = self.proposals.insert(index, p) {
            self.metrics.proposals_failed.inc();
            let err = Error::Unavailable(
                "proposal replaced by a newer entry at its log index; not applied".into(),
            );
            let _ = old.done.send(Err(err));
        }
    }

    /// Replaces the descriptor. Epochs never go back, and the Raft group
    /// replicates exactly the descriptor's span.
    pub(super) fn set_descriptor(&mut self, d: RangeDescriptor) {
        assert!(
            d.range_id == self.desc.range_id
                && d.version >= self.desc.version
                && d.conf_ver >= self.desc.conf_ver,
            "range {}: epoch went back from (version {}, conf_ver {}) to (version {}, conf_ver {})",
            self.desc.range_id,
            self.desc.version,
            self.desc.conf_ver,
            d.version,
            d.conf_ver
        );
        if (d.start_key != self.desc.start_key) || (d.end_key != self.desc.end_key) {
            self.span_changed = true;
        }
        self.desc = d;
        let span = (self.desc.start_key.clone(), self.desc.end_key.clone());
        if self.group.store().span() != &span {
            self.group.mut_store().set_span(span);
        }
    }

    pub fn range_id(&self) -> u64 {
        self.desc.range_id
    }
    pub fn descriptor(&self) -> &RangeDescriptor {
        &self.desc
    }
    pub fn is_initialized(&self) -> bool {
        self.group.store().is_initialized()
    }
    /// Ranges absorbed by merges since the last call (see `merged_away`).
    pub fn take_merged_away(&mut self) -> Vec<Absorbed> {
        std::mem::take(&mut self.merged_away)
    }
    /// Whether a snapshot was applied since the last call.
    pub fn take_snapshot_applied(&mut self) -> bool {
        std::mem::take(&mut self.snapshot_applied)
    }
    /// Whether the span changed since the last call.
    pub fn take_span_changed(&mut self) -> bool {
        std::mem::take(&mut self.span_changed)
    }
    pub fn is_frozen(&self) -> bool {
        self.desc.frozen
    }
    /// Ranges created by splits since the last call (see `new_ranges`).
    pub fn take_new_ranges(&mut self) -> Vec<(RangeDescriptor, bool)> {
        std::mem::take(&mut self.new_ranges)
    }

    /// Marks this replica stale: a newer membership (`conf_ver`) excludes
    /// this node. Returns whether it was marked.
    pub fn mark_removed_if_older(&mut self, conf_ver: u64) -> bool {
        if self.desc.conf_ver < conf_ver {
            self.removed = true;
            if conf_ver != u64::MAX {
                self.removed_at = self.removed_at.max(conf_ver);
            }
        }
        self.removed
    }

    /// The membership version (conf_ver) known to exclude this node: a
    /// replica recreated here later must hold a newer one before it votes.
    pub fn removed_at(&self) -> u64 {
        self.removed_at.max(self.desc.conf_ver)
    }
    pub fn hard_state(&self) -> raft::eraftpb::HardState {
        self.group.raft.hard_state()
    }
    /// Whether a membership change removed this node from the range.
    pub fn is_removed(&self) -> bool {
        self.removed
    }
    pub fn last_index(&self) -> u64 {
        self.group.store().last_index_cached()
    }
    pub fn approx_bytes(&self) -> u64 {
        self.approx_bytes
    }
    pub fn set_approx_bytes(&mut self, b: u64) {
        self.approx_bytes = b;
    }
    pub fn has_ready(&self) -> bool {
        self.group.has_ready()
    }
    pub fn is_leader(&self) -> bool {
        self.group.raft.state == StateRole::Leader
    }
    pub fn leader_id(&self) -> u64 {
        self.group.raft.leader_id
    }
    pub fn voters(&self) -> &[u64] {
        &self.group.store().conf_state().voters
    }
    pub fn touch(&mut self) {
        self.touched = true;
    }

    /// A snapshot built off the Store task for this range (`None`: the
    /// build failed); raft-rs takes it when it next asks.
    pub fn snapshot_built(&mut self, snap: Option<raft::eraftpb::Snapshot>) {
        self.group.mut_store().snapshot_built(snap);
        self.touched = true;
    }
    /// Whether the replica was touched since the last call.
    pub fn take_touched(&mut self) -> bool {
        std::mem::take(&mut self.touched)
    }

    pub fn status(&self) -> ReplicaStatus {
        let store = self.group.store();
        let progress = if self.is_leader() {
            let mut p: Vec<(u64, u64)> = self
                .group
                .raft
                .prs()
                .iter()
                .filter(|(id, _)| **id != self.node_id)
                .map(|(id, pr)| (*id, pr.matched))
                .collect();
            p.sort_unstable();
            p
        } else {
            Vec::new()
        };
        ReplicaStatus {
            range_id: self.desc.range_id,
            leader_id: self.group.raft.leader_id,
            term: self.group.raft.term,
            is_leader: self.is_leader(),
            commit: self.group.raft.raft_log.committed,
            applied: store.applied_index(),
            last_index: store.last_index_cached(),
            truncated_index: store.truncated_index(),
            apply_hash: store.apply_hash(),
            descriptor: self.desc.clone(),
            approx_bytes: self.approx_bytes,
            learners: store.conf_state().learners.clone(),
            progress,
            voters: store.conf_state().voters.clone(),
            qps: 0,
            quiesced: self.quiesced,
        }
    }

    /// The error for a request that needs the leader, with a hint if known.
    pub fn not_leader(&self) -> Error {
        let leader = self.group.raft.leader_id;
        Error::NotLeader {
            range_id: self.desc.range_id,
            leader: (leader != 0 && leader != self.node_id).then_some(LeaderHint {
                node_id: leader,
                client_address: None,
            }),
            span: self.span(),
        }
    }

    /// This range's span, for routing errors.
    pub fn span(&self) -> Span {
        Span::new(self.desc.start_key.clone(), self.desc.end_key.clone())
    }
}
