//! `Replica`: one range's Raft group on this node, its state machine, and the
//! proposals and reads waiting on it. Synchronous; the node's Store drives it
//! through the two Ready phases and owns all IO.

use std::collections::BTreeMap;
use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeV2, EntryType, Message};
use raft::{RawNode, Ready, StateRole};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::oneshot;

use super::command::{FreezeCmd, MergeCmd, Pair};
use super::{Command, Op, RangeDescriptor, SplitCmd};
use crate::error::{Error, LeaderHint, Result};
use crate::keys;
use crate::raft::{group_config, raft_logger, LogStore};
use crate::storage::{Engine, KvPair, WriteBatch};

/// Where a request's answer goes.
pub type Responder<T> = oneshot::Sender<Result<T>>;

/// A change to a range's replica set, one voter at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaChange {
    /// Add `node` as a learner (it receives a snapshot, then the log).
    AddLearner(u64),
    /// Make learner `node` a voter.
    Promote(u64),
    /// Remove `node` (voter or learner).
    Remove(u64),
    /// Hand leadership to voter `node` (not a membership change).
    TransferLeader(u64),
}

fn unreachable_transfer() -> (u64, raft::eraftpb::ConfChangeType) {
    // Handled before the match; kept total without panicking.
    (0, raft::eraftpb::ConfChangeType::AddLearnerNode)
}

/// A read, over internal data keys.
#[derive(Debug, Clone)]
pub enum ReadOp {
    Get(Vec<u8>),
    Scan {
        start: Vec<u8>,
        end: Vec<u8>,
        limit: usize,
        reverse: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadResult {
    Value(Option<Vec<u8>>),
    /// Pairs, and where to resume if this range ended before the scan's
    /// bounds (forward: the range end; reverse: the range start).
    Pairs(Vec<KvPair>, Option<Vec<u8>>),
}

/// An answer to send once the engine write that makes it true has landed.
pub enum Completion {
    Write(Responder<()>, Result<()>),
    Read(Responder<ReadResult>, Result<ReadResult>),
}

impl Completion {
    pub fn send(self) {
        // A receiver that gave up (timed out) is not an error.
        match self {
            Completion::Write(tx, r) => drop(tx.send(r)),
            Completion::Read(tx, r) => drop(tx.send(r)),
        }
    }
}

struct Proposal {
    id: u64,
    done: Responder<()>,
}

struct PendingRead {
    ctx: u64,
    op: ReadOp,
    done: Responder<ReadResult>,
    /// Set when the ReadIndex round finished: serve once applied >= index.
    index: Option<u64>,
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
    /// Hibernating (see `Replica::tick`).
    pub quiesced: bool,
}

pub struct Replica {
    node_id: u64,
    desc: RangeDescriptor,
    group: RawNode<LogStore>,
    engine: Arc<dyn Engine>,
    /// Waiting writes by log index.
    proposals: BTreeMap<u64, Proposal>,
    reads: Vec<PendingRead>,
    /// Reads that arrived before this leader committed an entry of its term.
    early_reads: Vec<(ReadOp, Responder<ReadResult>)>,
    next_ctx: u64,
    next_cmd_id: u64,
    was_leader: bool,
    log_compact_entries: u64,
    /// Ticks each follower has spent waiting for a snapshot (leader only).
    snapshot_ticks: BTreeMap<u64, usize>,
    /// Seeded source of election timeouts (see `group_config`).
    rng: ChaCha8Rng,
    /// (term, role) when the election timeout was last drawn.
    timeout_drawn_at: (u64, StateRole),
    /// Ranges created by splits applied since the Store last looked, with
    /// whether this replica was the parent's leader.
    new_ranges: Vec<(RangeDescriptor, bool)>,
    /// Approximate bytes written into this range (for size-based splits).
    approx_bytes: u64,
    /// This node was removed from the range: the Store destroys the replica.
    removed: bool,
    /// The newest membership version known to exclude this node (from the
    /// placement driver's collection of a stale replica).
    removed_at: u64,
    /// Ranges this replica absorbed by merges since the Store last looked,
    /// with the spans they had: the Store drops its replicas of them, and
    /// of any other range inside those spans (their data now lives here).
    merged_away: Vec<(u64, Vec<u8>, Vec<u8>, u64)>,
    /// A snapshot was applied since the Store last looked (its span may
    /// cover stale replicas of ranges merged into this one).
    snapshot_applied: bool,
    /// Hibernating: an idle range stops ticking (no heartbeats, no
    /// elections) until activity or a silent leader node wakes it.
    quiesced: bool,
    /// Ticks this leader has been idle.
    idle_ticks: usize,
    /// Something happened to this replica since the Store last handled its
    /// Ready (a step, tick, proposal or read): it may have a new one.
    touched: bool,
}

/// Context of the heartbeat a leader sends when its range goes quiet.
const QUIESCE_CTX: &[u8] = b"quiesce";

/// Whether `m` is part of putting a range to sleep (and must not wake it).
fn is_quiesce_message(m: &Message) -> bool {
    use raft::eraftpb::MessageType::{MsgHeartbeat, MsgHeartbeatResponse};
    matches!(m.get_msg_type(), MsgHeartbeat | MsgHeartbeatResponse) && m.context == QUIESCE_CTX
}

/// A follower stuck this long in snapshot state gets its snapshot again
/// (the MsgSnapshot may have been dropped on the way).
const SNAPSHOT_RETRY_TICKS: usize = 50;

impl Replica {
    /// Opens the replica of `range_id` stored in `engine` (empty if new).
    /// `seed` must come from the runtime's seeded RNG (election timeouts and
    /// proposal ids derive from it).
    pub fn open(
        node_id: u64,
        range_id: u64,
        engine: Arc<dyn Engine>,
        heartbeat_tick: usize,
        election_tick: usize,
        log_compact_entries: u64,
        seed: u64,
    ) -> Result<Replica> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let desc = match engine.get(&keys::descriptor_key(range_id))? {
            Some(b) => <RangeDescriptor as prost::Message>::decode(b.as_slice())?,
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
        )?;
        let cfg = group_config(
            node_id,
            store.applied_index(),
            heartbeat_tick,
            election_tick,
        );
        let group = RawNode::new(&cfg, store, &raft_logger(node_id, range_id))?;
        let next_cmd_id = rng.gen();
        let mut replica = Replica {
            node_id,
            desc,
            group,
            engine,
            proposals: BTreeMap::new(),
            reads: Vec::new(),
            early_reads: Vec::new(),
            next_ctx: 1,
            next_cmd_id,
            was_leader: false,
            log_compact_entries,
            snapshot_ticks: BTreeMap::new(),
            rng,
            timeout_drawn_at: (u64::MAX, StateRole::Follower),
            new_ranges: Vec::new(),
            approx_bytes: 0,
            removed: false,
            removed_at: 0,
            merged_away: Vec::new(),
            snapshot_applied: false,
            quiesced: false,
            idle_ticks: 0,
            touched: true,
        };
        replica.reseed_election_timeout();
        let hs = replica.group.store().hard_state().clone();
        crate::chaos::raft_event(|| crate::chaos::RaftEvent::Recovered {
            range_id,
            node_id,
            term: hs.term,
            vote: hs.vote,
        });
        Ok(replica)
    }

    /// Replaces raft-rs' unseeded election-timeout draw with a seeded one
    /// whenever the term or role changed (raft-rs draws anew exactly then).
    fn reseed_election_timeout(&mut self) {
        let now = (self.group.raft.term, self.group.raft.state);
        if now == self.timeout_drawn_at {
            return;
        }
        self.timeout_drawn_at = now;
        // Same bounds as group_config: [election_tick, 2 * election_tick).
        let base = self.group.raft.election_timeout();
        let (lo, hi) = (base, 2 * base);
        let t = self.rng.gen_range(lo..hi);
        self.group.raft.set_randomized_election_timeout(t);
    }

    /// Stages a new range's descriptor and initial Raft state.
    pub fn bootstrap(wb: &mut WriteBatch, desc: &RangeDescriptor) {
        wb.put(
            keys::descriptor_key(desc.range_id),
            prost::Message::encode_to_vec(desc),
        );
        LogStore::bootstrap(wb, desc.range_id, desc.replicas.clone());
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
    /// Ranges absorbed by merges since the last call, with their spans and
    /// final versions (see `merged_away`).
    pub fn take_merged_away(&mut self) -> Vec<(u64, Vec<u8>, Vec<u8>, u64)> {
        std::mem::take(&mut self.merged_away)
    }

    /// Whether a snapshot was applied since the last call.
    pub fn take_snapshot_applied(&mut self) -> bool {
        std::mem::take(&mut self.snapshot_applied)
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

    pub fn status(&self) -> ReplicaStatus {
        let store = self.group.store();
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
            progress: if self.is_leader() {
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
            },
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
    pub fn span(&self) -> crate::error::Span {
        crate::error::Span::new(self.desc.start_key.clone(), self.desc.end_key.clone())
    }

    pub fn is_quiesced(&self) -> bool {
        self.quiesced
    }

    /// Ends hibernation (a message, or the leader's node fell silent).
    pub fn wake(&mut self) {
        self.quiesced = false;
        self.touched = true;
    }

    /// A request: wake, and count idleness from now.
    fn activity(&mut self) {
        self.wake();
        self.idle_ticks = 0;
    }

    pub fn is_touched(&self) -> bool {
        self.touched
    }

    pub fn touch(&mut self) {
        self.touched = true;
    }

    /// Whether the replica was touched since the last call.
    pub fn take_touched(&mut self) -> bool {
        std::mem::take(&mut self.touched)
    }

    /// One tick, unless hibernating. Returns the messages that put the
    /// range to sleep when this leader found it idle long enough.
    pub fn tick(&mut self) -> Vec<Message> {
        if self.quiesced {
            return Vec::new();
        }
        self.touched = true;
        self.tick_awake();
        self.maybe_quiesce()
    }

    /// A leader puts its range to sleep after `2 * election_tick` idle
    /// ticks once every member has the whole log: it tells the followers
    /// (a heartbeat marked QUIESCE_CTX) and stops ticking; so do they.
    fn maybe_quiesce(&mut self) -> Vec<Message> {
        if !self.is_leader() || !self.is_idle() {
            self.idle_ticks = 0;
            return Vec::new();
        }
        self.idle_ticks += 1;
        if self.idle_ticks < 2 * self.group.raft.election_timeout() {
            return Vec::new();
        }
        let raft = &self.group.raft;
        let last = raft.raft_log.last_index();
        let caught_up = raft.prs().iter().all(|(id, pr)| {
            *id == self.node_id
                || (pr.matched == last && pr.state == raft::ProgressState::Replicate)
        });
        if !caught_up || raft.lead_transferee.is_some() {
            return Vec::new();
        }
        let msgs = raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != self.node_id)
            .map(|(id, _)| {
                let mut m = Message::default();
                m.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
                m.to = *id;
                m.from = self.node_id;
                m.term = raft.term;
                m.commit = last;
                m.context = QUIESCE_CTX.to_vec().into();
                m
            })
            .collect();
        self.quiesced = true;
        msgs
    }

    /// Nothing in flight: no waiters, everything committed is applied,
    /// and the log holds nothing uncommitted. (A pending Ready with only
    /// heartbeats in it is fine: sleeping only stops ticking.)
    fn is_idle(&self) -> bool {
        let raft = &self.group.raft;
        self.proposals.is_empty()
            && self.reads.is_empty()
            && self.early_reads.is_empty()
            && raft.raft_log.committed == raft.raft_log.last_index()
            && self.group.store().applied_index() == raft.raft_log.committed
    }

    fn tick_awake(&mut self) {
        self.group.tick();
        self.reseed_election_timeout();
        self.retry_stuck_snapshots();
        // Drop waiters whose clients gave up.
        self.proposals.retain(|_, p| !p.done.is_closed());
        self.reads.retain(|r| !r.done.is_closed());
        self.early_reads.retain(|(_, d)| !d.is_closed());
    }

    fn retry_stuck_snapshots(&mut self) {
        if !self.is_leader() {
            self.snapshot_ticks.clear();
            return;
        }
        let mut waiting: Vec<u64> = self
            .group
            .raft
            .prs()
            .iter()
            .filter(|(_, pr)| pr.state == raft::ProgressState::Snapshot)
            .map(|(id, _)| *id)
            .collect();
        waiting.sort_unstable();
        self.snapshot_ticks.retain(|id, _| waiting.contains(id));
        for id in waiting {
            let t = self.snapshot_ticks.entry(id).or_insert(0);
            *t += 1;
            if *t > SNAPSHOT_RETRY_TICKS {
                self.snapshot_ticks.remove(&id);
                self.group
                    .report_snapshot(id, raft::SnapshotStatus::Failure);
            }
        }
    }

    pub fn step(&mut self, msg: Message) -> Result<()> {
        let quiesce = is_quiesce_message(&msg);
        if !quiesce {
            self.wake();
        }
        self.touched = true;
        let (from, commit) = (msg.from, msg.commit);
        let is_heartbeat = msg.get_msg_type() == raft::eraftpb::MessageType::MsgHeartbeat;
        let r = self.group.step(msg);
        self.reseed_election_timeout();
        if quiesce && is_heartbeat {
            // The leader put the range to sleep: follow if this replica
            // agrees it leads and has the whole log (the heartbeat's answer
            // and applying the last entries may still be pending: sleeping
            // only stops ticking).
            let raft = &self.group.raft;
            let whole_log =
                raft.raft_log.last_index() == commit && raft.raft_log.committed == commit;
            if raft.state == StateRole::Follower
                && raft.leader_id == from
                && whole_log
                && self.proposals.is_empty()
                && self.reads.is_empty()
                && self.early_reads.is_empty()
            {
                self.quiesced = true;
            }
        }
        Ok(r?)
    }

    pub fn campaign(&mut self) -> Result<()> {
        self.activity();
        let r = self.group.campaign();
        self.reseed_election_timeout();
        Ok(r?)
    }

    /// Proposes a write; `done` is answered once it is applied (or fails).
    pub fn propose(&mut self, ops: Vec<Op>, done: Responder<()>) {
        self.activity();
        if !self.is_leader() {
            let _ = done.send(Err(self.not_leader()));
            return;
        }
        if self.desc.frozen && !crate::chaos::canary(crate::chaos::Canary::MergeLosesWrites) {
            let _ = done.send(Err(self.desc.epoch_mismatch()));
            return;
        }
        if ops.iter().any(|op| !self.desc.contains(&op.key)) {
            let _ = done.send(Err(Error::KeyNotInRange {
                range_id: self.desc.range_id,
                span: self.span(),
            }));
            return;
        }
        self.propose_command(
            Command {
                id: 0,
                ops,
                ..Default::default()
            },
            done,
        );
    }

    /// Proposes splitting this range at `split_key` (an internal data key).
    pub fn propose_split(
        &mut self,
        split_key: Vec<u8>,
        new_range_id: u64,
        sticky: bool,
        done: Responder<()>,
    ) {
        if !self.is_leader() {
            let _ = done.send(Err(self.not_leader()));
            return;
        }
        if self.desc.frozen {
            let _ = done.send(Err(self.desc.epoch_mismatch()));
            return;
        }
        if split_key <= self.desc.start_key || split_key >= self.desc.end_key {
            let _ = done.send(Err(Error::InvalidArgument(format!(
                "split key {:?} is not strictly inside range {}",
                String::from_utf8_lossy(keys::user_key(&split_key).unwrap_or(&split_key)),
                self.desc.range_id
            ))));
            return;
        }
        let split = SplitCmd {
            split_key,
            new_range_id,
            expected_version: self.desc.version,
            sticky,
        };
        self.propose_command(
            Command {
                id: 0,
                ops: Vec::new(),
                split: Some(split),
                ..Default::default()
            },
            done,
        );
    }

    /// Proposes one membership change (ConfChangeV2, a single voter at most).
    pub fn propose_change(
        &mut self,
        change: ReplicaChange,
        expected_conf_ver: u64,
        done: Responder<()>,
    ) {
        use raft::eraftpb::{ConfChangeSingle, ConfChangeTransition, ConfChangeType};
        self.activity();
        if !self.is_leader() {
            let _ = done.send(Err(self.not_leader()));
            return;
        }
        if expected_conf_ver != 0 && expected_conf_ver != self.desc.conf_ver {
            let _ = done.send(Err(Error::Unavailable(format!(
                "range {} membership changed (conf_ver {} != expected {expected_conf_ver})",
                self.desc.range_id, self.desc.conf_ver
            ))));
            return;
        }
        let cs = self.group.store().conf_state().clone();
        if self.desc.frozen && !matches!(change, ReplicaChange::TransferLeader(_)) {
            let _ = done.send(Err(Error::Unavailable(format!(
                "range {} is frozen for a merge; its membership no longer changes",
                self.desc.range_id
            ))));
            return;
        }
        if let ReplicaChange::TransferLeader(n) = change {
            if !cs.voters.contains(&n) {
                let _ = done.send(Err(Error::InvalidArgument(format!(
                    "node {n} is not a voter of range {}",
                    self.desc.range_id
                ))));
                return;
            }
            if n != self.node_id {
                self.group.transfer_leader(n);
            }
            let _ = done.send(Ok(()));
            return;
        }
        let (node, kind) = match change {
            ReplicaChange::TransferLeader(_) => unreachable_transfer(),
            ReplicaChange::AddLearner(n) => {
                if cs.voters.contains(&n) || cs.learners.contains(&n) {
                    let _ = done.send(Ok(()));
                    return;
                }
                (n, ConfChangeType::AddLearnerNode)
            }
            ReplicaChange::Promote(n) => {
                if cs.voters.contains(&n) {
                    let _ = done.send(Ok(()));
                    return;
                }
                if !cs.learners.contains(&n) {
                    let _ = done.send(Err(Error::InvalidArgument(format!(
                        "node {n} is not a learner of range {}",
                        self.desc.range_id
                    ))));
                    return;
                }
                (n, ConfChangeType::AddNode)
            }
            ReplicaChange::Remove(n) => {
                if !cs.voters.contains(&n) && !cs.learners.contains(&n) {
                    let _ = done.send(Ok(()));
                    return;
                }
                if n == self.node_id {
                    // raft-rs cannot remove its own leader (it panics when the
                    // leader later acks its own log): hand leadership to the
                    // most caught-up other voter first; the caller retries.
                    let next = cs
                        .voters
                        .iter()
                        .copied()
                        .filter(|v| *v != n)
                        .max_by_key(|v| {
                            (
                                self.group
                                    .raft
                                    .prs()
                                    .get(*v)
                                    .map(|p| p.matched)
                                    .unwrap_or(0),
                                std::cmp::Reverse(*v),
                            )
                        });
                    if let Some(to) = next {
                        self.group.transfer_leader(to);
                    }
                    let _ = done.send(Err(Error::Unavailable(format!(
                        "node {n} leads range {}; moving leadership before removing it",
                        self.desc.range_id
                    ))));
                    return;
                }
                if cs.voters == [n] {
                    let _ = done.send(Err(Error::InvalidArgument(
                        "cannot remove the last voter of a range".into(),
                    )));
                    return;
                }
                (n, ConfChangeType::RemoveNode)
            }
        };
        let mut single = ConfChangeSingle {
            node_id: node,
            ..Default::default()
        };
        single.set_change_type(kind);
        let mut cc = ConfChangeV2::default();
        cc.set_changes(vec![single].into());
        cc.set_transition(ConfChangeTransition::Auto);
        self.next_cmd_id = self.next_cmd_id.wrapping_add(1);
        let id = self.next_cmd_id;
        let before = self.group.raft.raft_log.last_index();
        if let Err(e) = self
            .group
            .propose_conf_change(id.to_be_bytes().to_vec(), cc)
        {
            let _ = done.send(Err(Error::Unavailable(format!(
                "membership change dropped: {e}"
            ))));
            return;
        }
        let index = self.group.raft.raft_log.last_index();
        if index == before {
            let _ = done.send(Err(Error::Unavailable("membership change dropped".into())));
            return;
        }
        self.track(index, Proposal { id, done });
    }

    /// Waits for `index` to apply. An older proposal this leader made at the
    /// same index (in an earlier term) was truncated away: it never applies.
    fn track(&mut self, index: u64, p: Proposal) {
        if let Some(old) = self.proposals.insert(index, p) {
            let err = Error::Unavailable(
                "proposal replaced by a newer entry at its log index; not applied".into(),
            );
            let _ = old.done.send(Err(err));
        }
    }

    fn propose_command(&mut self, mut cmd: Command, done: Responder<()>) {
        self.activity();
        self.next_cmd_id = self.next_cmd_id.wrapping_add(1);
        let id = self.next_cmd_id;
        cmd.id = id;
        let data = cmd.encode();
        let before = self.group.raft.raft_log.last_index();
        if let Err(e) = self.group.propose(vec![], data) {
            let _ = done.send(Err(Error::Unavailable(format!("proposal dropped: {e}"))));
            return;
        }
        let index = self.group.raft.raft_log.last_index();
        if index == before {
            let _ = done.send(Err(Error::Unavailable(
                "proposal dropped (leader busy)".into(),
            )));
            return;
        }
        self.track(index, Proposal { id, done });
    }

    /// A linearizable read through ReadIndex.
    pub fn read(&mut self, op: ReadOp, done: Responder<ReadResult>) {
        self.activity();
        if crate::chaos::canary(crate::chaos::Canary::ReadWithoutReadIndex) {
            let _ = done.send(self.execute(&op));
            return;
        }
        if !self.is_leader() {
            let _ = done.send(Err(self.not_leader()));
            return;
        }
        if !self.group.raft.commit_to_current_term() {
            // raft-rs silently drops ReadIndex until the leader commits in its term.
            self.early_reads.push((op, done));
            return;
        }
        let ctx = self.next_ctx;
        self.next_ctx += 1;
        self.group.read_index(ctx.to_be_bytes().to_vec());
        self.reads.push(PendingRead {
            ctx,
            op,
            done,
            index: None,
        });
    }

    /// A read of this replica's local state, possibly stale.
    pub fn read_local(&self, op: &ReadOp) -> Result<ReadResult> {
        self.execute(op)
    }

    fn execute(&self, op: &ReadOp) -> Result<ReadResult> {
        // A frozen range's keys may already be served (and written) by the
        // range that absorbed it.
        if self.desc.frozen {
            return Err(self.desc.epoch_mismatch());
        }
        match op {
            ReadOp::Get(key) => {
                if !self.desc.contains(key) {
                    return Err(Error::Internal(format!(
                        "get outside range {}",
                        self.desc.range_id
                    )));
                }
                Ok(ReadResult::Value(self.engine.get(key)?))
            }
            ReadOp::Scan {
                start,
                end,
                limit,
                reverse,
            } => {
                let d = &self.desc;
                let s = start.clone().max(d.start_key.clone());
                let e = if end.is_empty() {
                    d.end_key.clone()
                } else {
                    end.clone().min(d.end_key.clone())
                };
                // The range split while the read waited: the scan's start (or,
                // reversed, its end) is no longer here. Let the client re-route.
                let moved = if *reverse {
                    !end.is_empty() && end.as_slice() <= d.start_key.as_slice()
                } else {
                    start.as_slice() >= d.end_key.as_slice()
                };
                if moved {
                    return Err(Error::KeyNotInRange {
                        range_id: d.range_id,
                        span: self.span(),
                    });
                }
                let pairs = self.engine.scan(&s, &e, *limit, *reverse)?;
                let resume = if pairs.len() >= *limit {
                    None
                } else if *reverse {
                    (d.start_key > *start).then(|| d.start_key.clone())
                } else {
                    (end.is_empty() || d.end_key < *end).then(|| d.end_key.clone())
                };
                Ok(ReadResult::Pairs(pairs, resume))
            }
        }
    }

    /// Ready phase 1: stage the snapshot, committed entries, new entries and
    /// hard state into `wb`; collect messages that may go out before the
    /// write. Returns the Ready and whether the write must be synced.
    pub fn collect_ready(
        &mut self,
        wb: &mut WriteBatch,
        msgs: &mut Vec<Message>,
        completions: &mut Vec<Completion>,
    ) -> Result<Option<(Ready, bool)>> {
        if !self.group.has_ready() {
            return Ok(None);
        }
        let mut rd = self.group.ready();
        if rd.ss().is_some_and(|ss| ss.raft_state == StateRole::Leader) {
            let (range_id, term, node_id) =
                (self.desc.range_id, self.group.raft.term, self.node_id);
            crate::chaos::raft_event(|| crate::chaos::RaftEvent::BecameLeader {
                range_id,
                term,
                node_id,
            });
        }
        msgs.extend(rd.take_messages());
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            self.group.mut_store().apply_snapshot(&snap, wb)?;
            self.reload_descriptor_from(&snap)?;
            self.snapshot_applied = true;
        }
        for e in rd.take_committed_entries() {
            self.apply_entry(e, wb, completions)?;
        }
        self.group.mut_store().append(rd.entries(), wb)?;
        if let Some(hs) = rd.hs() {
            self.group.mut_store().set_hard_state(hs, wb)?;
        }
        for rs in rd.take_read_states() {
            let ctx = rs
                .request_ctx
                .as_slice()
                .try_into()
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            if let Some(r) = self.reads.iter_mut().find(|r| r.ctx == ctx) {
                r.index = Some(rs.index);
            }
        }
        let sync = rd.must_sync();
        Ok(Some((rd, sync)))
    }

    /// Ready phase 2, after phase 1's batch is durable: messages that needed
    /// persistence, then the light ready's commit and entries into `wb`.
    pub fn finish_ready(
        &mut self,
        mut rd: Ready,
        wb: &mut WriteBatch,
        msgs: &mut Vec<Message>,
        completions: &mut Vec<Completion>,
    ) -> Result<()> {
        let persisted = rd.take_persisted_messages();
        for m in persisted.iter().filter(|m| {
            m.get_msg_type() == raft::eraftpb::MessageType::MsgRequestVoteResponse && !m.reject
        }) {
            let (range_id, node_id, term, candidate) =
                (self.desc.range_id, self.node_id, m.term, m.to);
            crate::chaos::raft_event(|| crate::chaos::RaftEvent::VoteGranted {
                range_id,
                node_id,
                term,
                candidate,
            });
        }
        msgs.extend(persisted);
        let mut light = self.group.advance(rd);
        if let Some(c) = light.commit_index() {
            self.group.mut_store().set_commit(c, wb)?;
        }
        msgs.extend(light.take_messages());
        for e in light.take_committed_entries() {
            self.apply_entry(e, wb, completions)?;
        }
        self.group.advance_apply();
        self.maybe_compact(wb)?;
        Ok(())
    }

    /// After every write of the loop landed: answer reads that are now
    /// safe, start reads that were waiting for the leader's first commit, and
    /// fail waiters if leadership was lost.
    pub fn after_write(&mut self, completions: &mut Vec<Completion>) {
        let leader = self.is_leader();
        let span = self.span();
        if self.was_leader && !leader {
            for r in self.reads.drain(..) {
                completions.push(Completion::Read(
                    r.done,
                    Err(Error::NotLeader {
                        range_id: self.desc.range_id,
                        leader: None,
                        span: span.clone(),
                    }),
                ));
            }
        }
        self.was_leader = leader;
        if !leader {
            for (_, done) in self.early_reads.drain(..) {
                let err = Error::NotLeader {
                    range_id: self.desc.range_id,
                    leader: None,
                    span: span.clone(),
                };
                completions.push(Completion::Read(done, Err(err)));
            }
        } else if !self.early_reads.is_empty() && self.group.raft.commit_to_current_term() {
            for (op, done) in std::mem::take(&mut self.early_reads) {
                self.read(op, done);
            }
        }
        let applied = self.group.store().applied_index();
        let mut i = 0;
        while i < self.reads.len() {
            if self.reads[i].index.is_some_and(|idx| idx <= applied) {
                let r = self.reads.swap_remove(i);
                let result = self.execute(&r.op);
                completions.push(Completion::Read(r.done, result));
            } else {
                i += 1;
            }
        }
    }

    /// Fails every waiter (shutdown). Proposed writes may still commit.
    pub fn fail_all(&mut self, completions: &mut Vec<Completion>) {
        for (_, p) in std::mem::take(&mut self.proposals) {
            let err =
                Error::Indeterminate("the node shut down while the write was in flight".into());
            completions.push(Completion::Write(p.done, Err(err)));
        }
        for r in self.reads.drain(..) {
            completions.push(Completion::Read(r.done, Err(Error::ShuttingDown)));
        }
        for (_, done) in self.early_reads.drain(..) {
            completions.push(Completion::Read(done, Err(Error::ShuttingDown)));
        }
    }

    fn reload_descriptor_from(&mut self, snap: &raft::eraftpb::Snapshot) -> Result<()> {
        let data = <crate::raft::SnapshotData as prost::Message>::decode(snap.get_data())?;
        let key = keys::descriptor_key(self.desc.range_id);
        let kv = data.pairs.iter().find(|kv| kv.key == key).ok_or_else(|| {
            Error::Corruption(format!(
                "snapshot of range {} has no descriptor",
                self.desc.range_id
            ))
        })?;
        self.desc = <RangeDescriptor as prost::Message>::decode(kv.value.as_slice())?;
        Ok(())
    }

    fn apply_entry(
        &mut self,
        e: raft::eraftpb::Entry,
        wb: &mut WriteBatch,
        completions: &mut Vec<Completion>,
    ) -> Result<()> {
        let (index, term) = (e.index, e.term);
        let mut outcome: Option<(u64, Result<()>)> = None;
        match e.get_entry_type() {
            EntryType::EntryNormal => {
                if !e.data.is_empty() {
                    let cmd = Command::decode(&e.data)?;
                    let res = match (&cmd.split, &cmd.freeze, &cmd.merge) {
                        (Some(split), _, _) => self.apply_split(split, wb),
                        (_, Some(freeze), _) => self.apply_freeze(freeze, wb),
                        (_, _, Some(merge)) => self.apply_merge(merge, wb),
                        _ => {
                            let r = cmd.apply(&self.desc, self.engine.as_ref(), wb);
                            if r.is_ok() {
                                let bytes: usize =
                                    cmd.ops.iter().map(|o| o.key.len() + o.value.len()).sum();
                                self.approx_bytes += bytes as u64;
                            }
                            r
                        }
                    };
                    outcome = Some((cmd.id, res));
                }
            }
            EntryType::EntryConfChange => {
                let cc = ConfChange::parse_from_bytes(&e.data)?;
                let cs = self.group.apply_conf_change(&cc)?;
                self.group.mut_store().set_conf_state(cs, wb)?;
            }
            EntryType::EntryConfChangeV2 => {
                let cc = ConfChangeV2::parse_from_bytes(&e.data)?;
                let voters_before = self.group.store().conf_state().voters.clone();
                let cs = self.group.apply_conf_change(&cc)?;
                let (range_id, node_id, voters_after) =
                    (self.desc.range_id, self.node_id, cs.voters.clone());
                crate::chaos::raft_event(|| crate::chaos::RaftEvent::MembershipApplied {
                    range_id,
                    node_id,
                    voters_before,
                    voters_after,
                });
                let mut members: Vec<u64> = cs
                    .voters
                    .iter()
                    .chain(cs.learners.iter())
                    .chain(cs.voters_outgoing.iter())
                    .chain(cs.learners_next.iter())
                    .copied()
                    .collect();
                members.sort_unstable();
                members.dedup();
                self.group.mut_store().set_conf_state(cs, wb)?;
                self.desc.replicas = members.clone();
                self.desc.conf_ver += 1;
                wb.put(
                    keys::descriptor_key(self.desc.range_id),
                    prost::Message::encode_to_vec(&self.desc),
                );
                if !members.contains(&self.node_id) {
                    self.removed = true;
                }
                let id = e
                    .context
                    .as_ref()
                    .try_into()
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
                outcome = Some((id, Ok(())));
            }
        }
        self.group.mut_store().set_applied(index, term, &e.data, wb);
        let (range_id, node_id) = (self.desc.range_id, self.node_id);
        crate::chaos::raft_event(|| crate::chaos::RaftEvent::Applied {
            range_id,
            node_id,
            index,
            term,
            hash: crate::raft::chain_hash(0, index, term, &e.data),
        });
        // Older waiters can no longer be answered by their own entry.
        while let Some(entry) = self.proposals.first_entry() {
            if *entry.key() >= index {
                break;
            }
            let p = entry.remove();
            // Its index was covered by a snapshot: the entry may be in it or not.
            let err =
                Error::Indeterminate("the write's log position was replaced by a snapshot".into());
            completions.push(Completion::Write(p.done, Err(err)));
        }
        if let Some(p) = self.proposals.remove(&index) {
            let result = match outcome {
                Some((id, res)) if id == p.id => res,
                _ => Err(Error::Unavailable(
                    "proposal replaced by a new leader's entry; not applied".into(),
                )),
            };
            completions.push(Completion::Write(p.done, result));
        }
        Ok(())
    }

    /// The split state machine: deterministic on every replica. The left
    /// part keeps this range's id; the right part becomes `new_range_id`
    /// with the same voters, starting from an empty log at INIT_INDEX. Data
    /// stays where it is: only the descriptors change.
    fn apply_split(&mut self, split: &SplitCmd, wb: &mut WriteBatch) -> Result<()> {
        let key = &split.split_key;
        if split.expected_version != self.desc.version || self.desc.frozen {
            return Err(self.desc.epoch_mismatch());
        }
        if key <= &self.desc.start_key
            || key >= &self.desc.end_key
            || split.new_range_id == self.desc.range_id
        {
            return Err(Error::InvalidArgument("split key outside the range".into()));
        }
        let mut left = self.desc.clone();
        left.end_key = key.clone();
        left.version += 1;
        let right = RangeDescriptor {
            range_id: split.new_range_id,
            start_key: key.clone(),
            end_key: self.desc.end_key.clone(),
            conf_ver: self.desc.conf_ver,
            version: left.version,
            replicas: self.desc.replicas.clone(),
            frozen: false,
            sticky: split.sticky,
        };
        wb.put(
            keys::descriptor_key(left.range_id),
            prost::Message::encode_to_vec(&left),
        );
        // This node may already hold the new range: empty (created by an
        // early Raft message, possibly having voted) or initialized by a
        // snapshot from the new range's leader (then it is ahead: keep it).
        let existing_apply = self.engine.get(&keys::apply_state_key(right.range_id))?;
        let initialized = match existing_apply {
            Some(b) => {
                let a = <crate::raft::ApplyState as prost::Message>::decode(b.as_slice())?;
                let cs = <raft::eraftpb::ConfState as protobuf::Message>::parse_from_bytes(
                    &a.conf_state,
                )?;
                !cs.voters.is_empty()
            }
            None => false,
        };
        // A node the parent's membership no longer includes (it is being
        // removed, seed 485) does not create the new range: it would hold a
        // replica of a range it is no member of.
        let cs = self.group.store().conf_state();
        let member = cs.voters.contains(&self.node_id) || cs.learners.contains(&self.node_id);
        // Replaying the split after a restart, on a node that since dropped
        // the new range (merged away or removed, seed 191): it stays gone,
        // or a fresh replica would forget the votes it cast.
        let dropped = self
            .engine
            .get(&keys::tombstone_key(right.range_id))?
            .is_some();
        let initialized = initialized || !member || dropped;
        if !initialized {
            // The newest hard state: staged earlier in this very batch (the
            // empty replica voted in this loop), else persisted.
            let hs_key = keys::hard_state_key(right.range_id);
            let staged = wb.last_put(&hs_key).map(<[u8]>::to_vec);
            let hs = match staged.or(self.engine.get(&hs_key)?) {
                Some(b) => {
                    Some(<raft::eraftpb::HardState as protobuf::Message>::parse_from_bytes(&b)?)
                }
                None => None,
            };
            wb.put(
                keys::descriptor_key(right.range_id),
                prost::Message::encode_to_vec(&right),
            );
            // The new range has the parent's exact membership, learners too
            // (a learner of the parent applies this split as well).
            let cs = self.group.store().conf_state();
            let (voters, learners) = (cs.voters.clone(), cs.learners.clone());
            crate::raft::LogStore::bootstrap_keeping_vote(
                wb,
                right.range_id,
                voters,
                learners,
                hs.as_ref(),
            );
            if crate::chaos::canary(crate::chaos::Canary::SplitDropsRightHalf) {
                wb.delete_range(right.start_key.clone(), right.end_key.clone());
            }
        }
        self.desc = left;
        self.group
            .mut_store()
            .set_span((self.desc.start_key.clone(), self.desc.end_key.clone()));
        self.approx_bytes /= 2;
        if !initialized {
            self.new_ranges.push((right, self.is_leader()));
        }
        Ok(())
    }

    /// Freezes this range for a merge (idempotent: `done` gets Ok once the
    /// freeze applied on this leader, or at once if it had).
    pub fn propose_freeze(&mut self, expected_version: u64, done: Responder<()>) {
        if !self.is_leader() {
            let _ = done.send(Err(self.not_leader()));
            return;
        }
        if self.desc.frozen {
            let _ = done.send(Ok(()));
            return;
        }
        if self.desc.range_id == super::SYSTEM_RANGE_ID {
            let _ = done.send(Err(Error::InvalidArgument(
                "the system range does not merge".into(),
            )));
            return;
        }
        let freeze = FreezeCmd { expected_version };
        self.propose_command(
            Command {
                freeze: Some(freeze),
                ..Default::default()
            },
            done,
        );
    }

    /// A frozen range's final descriptor and data (for a merge).
    pub fn frozen_data(&self) -> Result<(RangeDescriptor, Vec<KvPair>)> {
        if !self.desc.frozen {
            return Err(Error::Unavailable(format!(
                "range {} is not frozen",
                self.desc.range_id
            )));
        }
        let d = &self.desc;
        let pairs = self
            .engine
            .scan(&d.start_key, &d.end_key, usize::MAX, false)?;
        Ok((d.clone(), pairs))
    }

    /// Proposes absorbing the frozen right neighbour `rhs` with its data.
    /// Ok at once if this range already covers `rhs` (merged earlier).
    pub fn propose_merge(
        &mut self,
        expected_version: u64,
        rhs: RangeDescriptor,
        pairs: Vec<KvPair>,
        done: Responder<()>,
    ) {
        if !self.is_leader() {
            let _ = done.send(Err(self.not_leader()));
            return;
        }
        let d = &self.desc;
        if d.start_key <= rhs.start_key && rhs.end_key <= d.end_key && !rhs.end_key.is_empty() {
            let _ = done.send(Ok(()));
            return;
        }
        if d.frozen || d.version != expected_version {
            let _ = done.send(Err(d.epoch_mismatch()));
            return;
        }
        if d.end_key != rhs.start_key || !rhs.frozen || d.range_id == super::SYSTEM_RANGE_ID {
            let _ = done.send(Err(Error::InvalidArgument(format!(
                "range {} cannot absorb range {}: not its frozen right neighbour",
                d.range_id, rhs.range_id
            ))));
            return;
        }
        let merge = MergeCmd {
            expected_version,
            rhs: Some(rhs),
            pairs: pairs
                .into_iter()
                .map(|(key, value)| Pair { key, value })
                .collect(),
        };
        self.propose_command(
            Command {
                merge: Some(merge),
                ..Default::default()
            },
            done,
        );
    }

    /// Freeze, on every replica: from here on the range takes no reads,
    /// writes, splits or membership changes (see `RangeDescriptor::frozen`).
    fn apply_freeze(&mut self, freeze: &FreezeCmd, wb: &mut WriteBatch) -> Result<()> {
        if self.desc.frozen {
            return Ok(());
        }
        if freeze.expected_version != self.desc.version {
            return Err(self.desc.epoch_mismatch());
        }
        self.desc.frozen = true;
        self.desc.version += 1;
        wb.put(
            keys::descriptor_key(self.desc.range_id),
            prost::Message::encode_to_vec(&self.desc),
        );
        Ok(())
    }

    /// Merge, on every replica of the left range: take the right range's
    /// span and its frozen data (replacing whatever this node held there).
    /// The Store then drops this node's replica of the right range.
    fn apply_merge(&mut self, merge: &MergeCmd, wb: &mut WriteBatch) -> Result<()> {
        let Some(rhs) = &merge.rhs else {
            return Err(Error::InvalidArgument("merge without a right range".into()));
        };
        if self.desc.frozen || merge.expected_version != self.desc.version {
            return Err(self.desc.epoch_mismatch());
        }
        if self.desc.end_key != rhs.start_key
            || !rhs.frozen
            || rhs.end_key <= rhs.start_key
            || rhs.range_id == self.desc.range_id
            || merge
                .pairs
                .iter()
                .any(|p| p.key < rhs.start_key || p.key >= rhs.end_key)
        {
            return Err(Error::InvalidArgument(
                "merge of a range that is not the frozen right neighbour".into(),
            ));
        }
        wb.delete_range(rhs.start_key.clone(), rhs.end_key.clone());
        let mut bytes = 0u64;
        for p in &merge.pairs {
            bytes += (p.key.len() + p.value.len()) as u64;
            wb.put(p.key.clone(), p.value.clone());
        }
        self.desc.end_key = rhs.end_key.clone();
        self.desc.version = self.desc.version.max(rhs.version) + 1;
        wb.put(
            keys::descriptor_key(self.desc.range_id),
            prost::Message::encode_to_vec(&self.desc),
        );
        self.group
            .mut_store()
            .set_span((self.desc.start_key.clone(), self.desc.end_key.clone()));
        self.approx_bytes += bytes;
        self.merged_away.push((
            rhs.range_id,
            rhs.start_key.clone(),
            rhs.end_key.clone(),
            rhs.version,
        ));
        Ok(())
    }

    fn maybe_compact(&mut self, wb: &mut WriteBatch) -> Result<()> {
        let store = self.group.store();
        let (applied, truncated) = (store.applied_index(), store.truncated_index());
        if applied > truncated + self.log_compact_entries {
            // Keep a tail so briefly lagging followers catch up from the log.
            let to = applied - self.log_compact_entries / 2;
            self.group.mut_store().compact(to, wb)?;
        }
        Ok(())
    }
}
