//! Incoming Raft traffic: which messages reach a replica, and the replicas
//! such traffic creates.
//!
//! Rules (each a bug the simulator found):
//! - traffic of a range merged into another is ignored for good;
//! - a range removed from this node (tombstoned) is recreated, empty, only
//!   by a leader's traffic (append, heartbeat, snapshot), and such a
//!   replica does not vote until it holds a membership newer than the one
//!   that removed it (seeds 382, 1811);
//! - a snapshot for an empty replica that overlaps another initialized
//!   replica here waits (that range has not applied the split that created
//!   the snapshot's range yet, and its older entries could overwrite the
//!   snapshot's newer data);
//! - with leases, no replica votes in the first election timeout after
//!   the node starts (`range::lease`: a restart forgets the promise);
//! - a heartbeat's commit index is clamped to the replica's last index (a
//!   deposed leader's late heartbeat can name a commit from this node's
//!   previous membership, which raft-rs would accept into an empty log and
//!   panic: seed 9).

use raft::eraftpb::{Message, MessageType};

use super::store::Store;
use crate::keys;

/// Raft traffic on this pseudo-range is a node-to-node liveness ping: it
/// lets hibernating followers notice that their leader's node went silent.
pub const PING_RANGE_ID: u64 = 0;

impl Store {
    pub(super) fn on_raft(&mut self, from: u64, msgs: Vec<(u64, Message)>) {
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
            if !self.admit_after_removal(range_id, &m) || !self.ensure_replica(range_id, from) {
                continue;
            }
            if self.refuse_vote(range_id, &m) {
                continue;
            }
            if self.snapshot_overlaps(range_id, &m) {
                tracing::debug!(
                    range_id,
                    "snapshot overlaps a range not yet split here; dropped"
                );
                continue;
            }
            self.step(range_id, m);
            self.note(range_id);
        }
    }

    /// Whether traffic for a range removed from this node may recreate it:
    /// only a leader's traffic can mean this node was added again (an
    /// empty replica answers, is found behind, gets a snapshot).
    fn admit_after_removal(&mut self, range_id: u64, m: &Message) -> bool {
        if !self.tombstones.contains_key(&range_id) || self.replicas.contains_key(&range_id) {
            return true;
        }
        use MessageType::*;
        if !matches!(m.get_msg_type(), MsgAppend | MsgHeartbeat | MsgSnapshot) {
            return false;
        }
        let removed_at = self.tombstones.remove(&range_id).unwrap_or(0);
        // The old replica's log died with it: an empty replica that votes
        // could hand a candidate whose log lacks the membership change that
        // removed this node a majority of that stale membership (seed 382),
        // and so could one a stale leader initialized with a snapshot of
        // that membership (seed 1811).
        self.no_vote.insert(range_id, removed_at);
        true
    }

    /// Creates an empty replica for traffic of a range this node does not
    /// hold yet (the leader will send a snapshot). False if that failed.
    fn ensure_replica(&mut self, range_id: u64, from: u64) -> bool {
        if self.replicas.contains_key(&range_id) {
            return true;
        }
        match self.open_replica(range_id) {
            Ok(r) => {
                tracing::info!(range_id, from, "created replica for incoming raft traffic");
                self.insert_replica(r);
                self.note(range_id);
                true
            }
            Err(e) => {
                tracing::error!(range_id, %e, "cannot create replica");
                false
            }
        }
    }

    /// Whether a replica must not answer this (pre-)vote yet: any replica
    /// in the first election timeout after this node started, with leases
    /// on (it forgot whose lease it promised; `range::lease`), unless the
    /// leader itself handed over; a recreated replica until it holds a
    /// newer membership (then it is a member again: its tombstone is
    /// cleared with the next round's batch).
    fn refuse_vote(&mut self, range_id: u64, m: &Message) -> bool {
        let vote = matches!(
            m.get_msg_type(),
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
        );
        if vote
            && self.cfg.read_lease.is_some()
            && self.ticks < self.cfg.election_ticks as u64
            && m.context != raft::CAMPAIGN_TRANSFER
        {
            return true;
        }
        let Some(&removed_at) = self.no_vote.get(&range_id) else {
            return false;
        };
        let member_again = self
            .replicas
            .get(&range_id)
            .is_some_and(|r| r.is_initialized() && r.descriptor().conf_ver > removed_at);
        if member_again {
            self.no_vote.remove(&range_id);
            self.staged.delete(keys::tombstone_key(range_id));
            return false;
        }
        vote
    }

    /// Whether a snapshot for an empty replica would overlap another range
    /// this node still holds (see the module docs).
    fn snapshot_overlaps(&self, range_id: u64, m: &Message) -> bool {
        if m.get_msg_type() != MessageType::MsgSnapshot {
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
        // The router indexes every initialized replica.
        self.router.overlaps_other(range_id, &data.start, &data.end)
    }

    fn step(&mut self, range_id: u64, mut m: Message) {
        let Some(r) = self.replicas.get_mut(&range_id) else {
            return;
        };
        if m.get_msg_type() == MessageType::MsgHeartbeat {
            m.commit = m.commit.min(r.last_index());
        }
        if let Err(e) = r.step(m) {
            tracing::debug!(range_id, %e, "raft step failed");
        }
    }
}
