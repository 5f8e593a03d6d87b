//! Ticks and node-level liveness: only awake replicas tick (a sleeping range
//! costs nothing); peer nodes are pinged every heartbeat so a follower whose
//! leader's node fell silent for an election timeout wakes up and can
//! elect a new leader (see `range::hibernate` for how ranges fall asleep).

use raft::eraftpb::{Message, MessageType};

use super::raft_in::PING_RANGE_ID;
use super::store::Store;

/// The peer set to ping is recomputed this often (in ticks), or when empty.
const PEER_REFRESH_TICKS: u64 = 100;

impl Store {
    /// One tick of this node's clock.
    pub fn tick(&mut self) {
        self.tick_awake();
        let silent_after = self.cfg.election_ticks as u64;
        // A scan of every replica: twice per election timeout only.
        if self.ticks.is_multiple_of((silent_after / 2).max(1)) {
            self.wake_orphans(silent_after);
        }
        if self
            .ticks
            .is_multiple_of(self.cfg.heartbeat_ticks.max(1) as u64)
        {
            self.ping_peers();
        }
        self.ticks += 1;
        self.tick_split_checks();
        self.tick_gc();
    }

    /// Ticks every awake replica; queues the messages of ranges going to
    /// sleep.
    fn tick_awake(&mut self) {
        let awake: Vec<u64> = self.awake.iter().copied().collect();
        for id in awake {
            let Some(r) = self.replicas.get_mut(&id) else {
                self.awake.remove(&id);
                continue;
            };
            for m in r.tick() {
                self.outbox.push((id, m));
            }
            self.dirty.insert(id);
            if r.is_quiesced() {
                self.awake.remove(&id);
            }
        }
    }

    /// Wakes sleeping followers whose leader's node fell silent.
    fn wake_orphans(&mut self, silent_after: u64) {
        let now = self.ticks;
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

    fn ping_peers(&mut self) {
        if self.ticks.is_multiple_of(PEER_REFRESH_TICKS) || self.peers.is_empty() {
            let me = self.cfg.node_id;
            self.peers = self
                .replicas
                .values()
                .flat_map(|r| r.descriptor().replicas.clone())
                .filter(|n| *n != me)
                .collect();
        }
        for &to in &self.peers {
            let mut m = Message::default();
            m.set_msg_type(MessageType::MsgHeartbeat);
            m.to = to;
            m.from = self.cfg.node_id;
            self.outbox.push((PING_RANGE_ID, m));
        }
    }
}
