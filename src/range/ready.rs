//! The Ready pipeline of one replica, in raft-rs' documented order, split in
//! the two phases the Store drives for all replicas at once:
//! 1. `collect_ready`: messages that may leave before the write (a leader's
//!    appends), then the snapshot, committed entries, new entries and hard
//!    state staged into the loop's batch;
//! 2. `finish_ready`, after that batch is durable: messages that needed
//!    persistence, then the light ready's commit index and entries.
//!
//! Applying an entry: `entry.index == applied + 1` (asserted by LogStore),
//! the applied index is staged in the same batch as the entry's effects,
//! and a failure of this node while applying (see `state_machine`) returns
//! an error: the Store stops before anything of the round is written.

use raft::eraftpb::{Entry, EntryType, Message, MessageType};
use raft::{Ready, StateRole};

use super::replica::{Completion, Replica};
use super::state_machine::{self, ApplyCtx, Effects, SizeChange};
use super::{Command, Kind, RangeDescriptor};
use crate::chaos::{self, RaftEvent};
use crate::error::{Error, Result};
use crate::keys;
use crate::storage::{Overlay, WriteBatch};

impl Replica {
    /// Phase 1: stage the snapshot, committed entries, new entries and hard
    /// state into `wb`; collect messages that may go out before the write.
    /// Returns the Ready and whether the write must be synced.
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
            self.metrics.leader_changes.inc();
            let (range_id, term, node_id) =
                (self.desc.range_id, self.group.raft.term, self.node_id);
            chaos::raft_event(|| RaftEvent::BecameLeader {
                range_id,
                term,
                node_id,
            });
        }
        let sent = msgs.len();
        msgs.extend(rd.take_messages());
        self.note_sent(&msgs[sent..]);
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
            self.read_index_done(&rs.request_ctx, rs.index);
        }
        let sync = rd.must_sync();
        Ok(Some((rd, sync)))
    }

    /// Phase 2, after phase 1's batch is durable: messages that needed
    /// persistence, then the light ready's commit and entries into `wb`.
    pub fn finish_ready(
        &mut self,
        mut rd: Ready,
        wb: &mut WriteBatch,
        msgs: &mut Vec<Message>,
        completions: &mut Vec<Completion>,
    ) -> Result<()> {
        let persisted = rd.take_persisted_messages();
        for m in persisted
            .iter()
            .filter(|m| m.get_msg_type() == MessageType::MsgRequestVoteResponse && !m.reject)
        {
            let (range_id, node_id, term, candidate) =
                (self.desc.range_id, self.node_id, m.term, m.to);
            chaos::raft_event(|| RaftEvent::VoteGranted {
                range_id,
                node_id,
                term,
                candidate,
            });
        }
        let sent = msgs.len();
        msgs.extend(persisted);
        let mut light = self.group.advance(rd);
        if let Some(c) = light.commit_index() {
            self.group.mut_store().set_commit(c, wb)?;
        }
        msgs.extend(light.take_messages());
        self.note_sent(&msgs[sent..]);
        for e in light.take_committed_entries() {
            self.apply_entry(e, wb, completions)?;
        }
        self.group.advance_apply();
        self.maybe_compact(wb)
    }

    /// After every write of the loop landed: answer reads that are now
    /// safe, start reads that waited for the leader's first commit, and
    /// fail waiters if leadership was lost.
    pub fn after_write(&mut self, completions: &mut Vec<Completion>) {
        self.serve_reads(completions);
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
        for (_, _, done) in self.early_reads.drain(..) {
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
        let desc = RangeDescriptor::decode(&kv.value)?;
        // The snapshot's data span is its descriptor's: the replica's span
        // lies inside its range, exactly.
        let data_span = (data.start.clone(), data.end.clone());
        assert_eq!(
            (desc.start_key.clone(), desc.end_key.clone()),
            data_span,
            "range {}: a snapshot's data span differs from its descriptor",
            desc.range_id
        );
        self.set_descriptor(desc);
        Ok(())
    }

    fn apply_entry(
        &mut self,
        e: Entry,
        wb: &mut WriteBatch,
        completions: &mut Vec<Completion>,
    ) -> Result<()> {
        // The proposal's span (a traced request's), with the apply inside it.
        let proposed = self
            .proposals
            .get(&e.index)
            .filter(|p| !p.span.is_disabled())
            .map(|p| p.span.clone());
        let _proposed = proposed.as_ref().map(|s| s.enter());
        let applying = proposed.as_ref().map(|_| {
            tracing::debug_span!("raft.apply", range_id = self.desc.range_id, index = e.index)
        });
        let _applying = applying.as_ref().map(|s| s.enter());
        let outcome = match e.get_entry_type() {
            // An empty entry: a new leader's first, or a dropped conf change.
            EntryType::EntryNormal if e.data.is_empty() => None,
            EntryType::EntryNormal => Some(self.apply_command(&e.data, wb)?),
            EntryType::EntryConfChange => {
                self.apply_conf_change_v1(&e, wb)?;
                None
            }
            EntryType::EntryConfChangeV2 => Some((self.apply_conf_change_v2(&e, wb)?, Ok(()))),
        };
        let (index, term) = (e.index, e.term);
        self.group.mut_store().set_applied(index, term, &e.data, wb);
        self.metrics.entries_applied.inc();
        let (range_id, node_id) = (self.desc.range_id, self.node_id);
        chaos::raft_event(|| RaftEvent::Applied {
            range_id,
            node_id,
            index,
            term,
            hash: crate::raft::chain_hash(0, index, term, &e.data),
        });
        self.answer_proposals(index, outcome, completions);
        Ok(())
    }

    /// Applies a replicated command; returns its proposal id and answer.
    /// An error is this node's failure (see `state_machine`).
    fn apply_command(&mut self, data: &[u8], wb: &mut WriteBatch) -> Result<(u64, Result<()>)> {
        let cmd = Command::decode(data).map_err(|e| {
            Error::Corruption(format!(
                "range {}: a committed entry does not decode: {e}",
                self.desc.range_id
            ))
        })?;
        let seen = match &cmd.kind {
            Some(Kind::OnePc(c)) => c.commit_ts,
            Some(Kind::Finish(f)) => f.commit_ts.max(f.start_ts),
            Some(Kind::Prewrite(p)) => p.start_ts,
            Some(Kind::CheckTxn(c)) => c.now_ts,
            Some(Kind::Heartbeat(h)) => h.start_ts,
            _ => 0,
        };
        self.saw_timestamp(seen);
        let applied = {
            let cs = self.group.store().conf_state();
            let ctx = ApplyCtx {
                node_id: self.node_id,
                desc: &self.desc,
                voters: &cs.voters,
                learners: &cs.learners,
                reader: Overlay::new(wb, self.engine.as_ref()),
            };
            state_machine::apply(&cmd, &ctx)?
        };
        self.take_effects(applied.effects, wb);
        Ok((cmd.id, applied.response))
    }

    /// Carries out an applied command's effects.
    fn take_effects(&mut self, fx: Effects, wb: &mut WriteBatch) {
        wb.append(fx.writes);
        if let Some(d) = fx.desc {
            self.set_descriptor(d);
        }
        if let Some(right) = fx.created {
            let parent_leader = self.is_leader();
            self.new_ranges.push((right, parent_leader));
        }
        if let Some(a) = fx.absorbed {
            self.unseed();
            self.merged_away.push(a);
        }
        match fx.size {
            SizeChange::Unchanged => {}
            SizeChange::Grew(b) => self.approx_bytes += b,
            SizeChange::Halved => self.approx_bytes /= 2,
        }
    }

    /// Answers the waiter of entry `index`; waiters below it can no longer
    /// be answered by their own entry.
    fn answer_proposals(
        &mut self,
        index: u64,
        outcome: Option<(u64, Result<()>)>,
        completions: &mut Vec<Completion>,
    ) {
        while let Some(entry) = self.proposals.first_entry() {
            if *entry.key() >= index {
                break;
            }
            let p = entry.remove();
            self.metrics.proposals_failed.inc();
            // Its index was covered by a snapshot: the entry may be in it or not.
            let err =
                Error::Indeterminate("the write's log position was replaced by a snapshot".into());
            completions.push(Completion::Write(p.done, Err(err)));
        }
        if let Some(p) = self.proposals.remove(&index) {
            let result = match outcome {
                Some((id, res)) if id == p.id => {
                    self.metrics
                        .proposal_duration
                        .observe(p.at.elapsed().as_secs_f64());
                    res
                }
                _ => {
                    self.metrics.proposals_failed.inc();
                    Err(Error::Unavailable(
                        "proposal replaced by a new leader's entry; not applied".into(),
                    ))
                }
            };
            completions.push(Completion::Write(p.done, result));
        }
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
