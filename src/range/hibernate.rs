//! Ticking, and hibernation: an idle range stops ticking (no heartbeats, no
//! elections) until a request, a Raft message or a silent leader node wakes
//! it, so thousands of idle ranges cost nothing per tick.
//!
//! A leader idle for `2 * election_timeout` ticks whose followers hold the
//! whole log sends each a heartbeat marked QUIESCE_CTX and sleeps; a
//! follower that agrees it leads and has the whole log sleeps too. The
//! Store wakes followers whose leader's node fell silent (node pings).

use raft::eraftpb::{Message, MessageType};
use raft::StateRole;
use rand::Rng;

use super::replica::Replica;
use crate::error::Result;

/// Context of the heartbeat a leader sends when its range goes quiet.
const QUIESCE_CTX: &[u8] = b"quiesce";

/// A follower stuck this long in snapshot state gets its snapshot again
/// (the MsgSnapshot may have been dropped on the way).
const SNAPSHOT_RETRY_TICKS: usize = 50;

/// Whether `m` is part of putting a range to sleep (and must not wake it).
fn is_quiesce_message(m: &Message) -> bool {
    matches!(
        m.get_msg_type(),
        MessageType::MsgHeartbeat | MessageType::MsgHeartbeatResponse
    ) && m.context == QUIESCE_CTX
}

impl Replica {
    pub fn is_quiesced(&self) -> bool {
        self.quiesced
    }

    /// Ends hibernation (a message, or the leader's node fell silent).
    pub fn wake(&mut self) {
        self.quiesced = false;
        self.touched = true;
    }

    /// A request: wake, and count idleness from now.
    pub(super) fn activity(&mut self) {
        self.wake();
        self.idle_ticks = 0;
    }

    /// One tick, unless hibernating. Returns the messages that put the
    /// range to sleep when this leader found it idle long enough.
    pub fn tick(&mut self) -> Vec<Message> {
        if self.quiesced {
            return Vec::new();
        }
        self.touched = true;
        self.group.tick();
        self.reseed_election_timeout();
        self.renew_lease();
        self.retry_stuck_snapshots();
        // Drop waiters whose clients gave up.
        self.proposals.retain(|_, p| !p.done.is_closed());
        self.reads.retain(|r| !r.done.is_closed());
        self.early_reads.retain(|(_, _, d)| !d.is_closed());
        self.maybe_quiesce()
    }

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
                m.set_msg_type(MessageType::MsgHeartbeat);
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
        self.no_waiters()
            && raft.raft_log.committed == raft.raft_log.last_index()
            && self.group.store().applied_index() == raft.raft_log.committed
    }

    fn no_waiters(&self) -> bool {
        self.proposals.is_empty() && self.reads.is_empty() && self.early_reads.is_empty()
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

    /// Steps a Raft message into the group. A quiesce heartbeat puts a
    /// follower to sleep if it agrees the sender leads and it has the whole
    /// log (the heartbeat's answer and applying the last entries may still
    /// be pending: sleeping only stops ticking).
    pub fn step(&mut self, msg: Message) -> Result<()> {
        let quiesce = is_quiesce_message(&msg);
        if !quiesce {
            self.wake();
        }
        self.touched = true;
        let (from, commit) = (msg.from, msg.commit);
        let is_heartbeat = msg.get_msg_type() == MessageType::MsgHeartbeat;
        let r = self.group.step(msg);
        self.reseed_election_timeout();
        if quiesce && is_heartbeat {
            let raft = &self.group.raft;
            let whole_log =
                raft.raft_log.last_index() == commit && raft.raft_log.committed == commit;
            if raft.state == StateRole::Follower
                && raft.leader_id == from
                && whole_log
                && self.no_waiters()
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

    /// Replaces raft-rs' unseeded election-timeout draw with a seeded one
    /// whenever the term or role changed (raft-rs draws anew exactly then).
    pub(super) fn reseed_election_timeout(&mut self) {
        let now = (self.group.raft.term, self.group.raft.state);
        if now == self.timeout_drawn_at {
            return;
        }
        self.timeout_drawn_at = now;
        // Same bounds as group_config: [election_tick, 2 * election_tick).
        let base = self.group.raft.election_timeout();
        let t = self.rng.gen_range(base..2 * base);
        self.group.raft.set_randomized_election_timeout(t);
    }
}
