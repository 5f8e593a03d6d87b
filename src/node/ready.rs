//! The Ready pipeline for all replicas of a node: one round is
//! 1. `begin_round`: destroy removed replicas, reserve range ids, and
//!    collect every touched replica's Ready into ONE batch (group commit);
//!    the messages a leader may send before its own fsync go out now;
//! 2. the caller writes that batch (synced if any Ready needs it);
//! 3. `persisted`: each Ready's second phase (persisted messages, the light
//!    ready's commit and entries) into a second, unsynced batch;
//! 4. the caller writes it;
//! 5. `finish_round`: send the late messages, drop replicas made stale by
//!    merges and snapshots this round, re-index changed spans, open ranges
//!    splits created, answer reads and writes.
//!
//! Replicas inside a span another replica took this round (`Covers`) are
//! skipped from the moment the merge or snapshot applied, so none of their
//! older writes lands after the merged data; their Raft state is dropped in
//! the same batch and a `merged` tombstone ignores their traffic.

use std::collections::BTreeSet;

use raft::eraftpb::Message;
use raft::Ready;

use super::cover::Covers;
use super::lifecycle::stage_merged_away;
use super::store::Store;
use crate::chaos::{self, Canary};
use crate::error::Result;
use crate::range::Completion;
use crate::storage::WriteBatch;

/// One round in flight (see the module docs).
#[derive(Default)]
pub struct Round {
    batch: WriteBatch,
    /// Whether the phase-1 batch must be synced.
    sync: bool,
    readies: Vec<(u64, Ready)>,
    completions: Vec<Completion>,
    covers: Covers,
    /// `covers` as phase 1 left it.
    mark: usize,
    gone: BTreeSet<u64>,
    staged_gone: BTreeSet<u64>,
    /// Replicas whose Ready this round looked at.
    looked_at: Vec<u64>,
    /// Messages that wait for the second write.
    late: Vec<(u64, Vec<Message>)>,
    reserved_ids: bool,
}

impl Round {
    /// Phase 1's batch and whether it must be synced.
    pub fn take_batch(&mut self) -> (WriteBatch, bool) {
        (std::mem::take(&mut self.batch), self.sync)
    }
}

impl Store {
    /// Phase 1 (see the module docs); `None` when there is nothing to do.
    pub fn begin_round(&mut self) -> Result<Option<Round>> {
        let mut round = Round {
            batch: std::mem::take(&mut self.staged),
            ..Default::default()
        };
        // Destroying replicas and reserving ids must be durable: synced
        // even with the AckBeforeFsync canary on.
        let mut must_sync = std::mem::take(&mut self.staged_sync);
        must_sync |= self.destroy_removed(&mut round.batch, &mut round.completions)?;
        round.reserved_ids = self.ids.stage(&mut round.batch);
        must_sync |= round.reserved_ids;
        let mut raft_sync = false;
        for id in std::mem::take(&mut self.dirty) {
            let Some(r) = self.replicas.get_mut(&id) else {
                continue;
            };
            if round.covers.covers(r) {
                round.gone.insert(id);
            }
            if round.gone.contains(&id) || !r.take_touched() {
                continue;
            }
            round.looked_at.push(id);
            let mut msgs = Vec::new();
            if let Some((rd, s)) =
                r.collect_ready(&mut round.batch, &mut msgs, &mut round.completions)?
            {
                raft_sync |= s;
                round.readies.push((id, rd));
            }
            // Leaders may send appends before their own fsync (Raft thesis 10.2.1).
            self.outbox.extend(msgs.into_iter().map(|m| (id, m)));
            round.gone.extend(round.covers.absorb(r));
        }
        if !round.covers.is_empty() {
            // Replicas before the taker in this round's order (rare).
            for (&id, r) in self.replicas.iter() {
                if round.covers.covers(r) {
                    round.gone.insert(id);
                }
            }
        }
        let gone = &round.gone;
        round.readies.retain(|(id, _)| !gone.contains(id));
        for &id in &round.gone {
            stage_merged_away(&mut round.batch, id);
            round.staged_gone.insert(id);
        }
        if round.readies.is_empty() && round.completions.is_empty() && round.batch.is_empty() {
            return Ok(None);
        }
        round.sync = must_sync || (raft_sync && !chaos::canary(Canary::AckBeforeFsync));
        round.mark = round.covers.mark();
        Ok(Some(round))
    }

    /// Phase 2, after phase 1's batch is durable: returns the second batch.
    pub fn persisted(&mut self, round: &mut Round) -> Result<WriteBatch> {
        if round.reserved_ids {
            self.ids.written();
        }
        let mut wb = WriteBatch::new();
        for (id, rd) in std::mem::take(&mut round.readies) {
            let Some(r) = self.replicas.get_mut(&id) else {
                continue;
            };
            if round.covers.covers_since(r, round.mark) {
                round.gone.insert(id);
            }
            if round.gone.contains(&id) {
                continue;
            }
            let mut msgs = Vec::new();
            r.finish_ready(rd, &mut wb, &mut msgs, &mut round.completions)?;
            round.gone.extend(round.covers.absorb(r));
            round.late.push((id, msgs));
        }
        if round.covers.mark() > round.mark {
            for (&id, r) in self.replicas.iter() {
                if round.covers.covers_since(r, round.mark) {
                    round.gone.insert(id);
                }
            }
        }
        for &id in round.gone.difference(&round.staged_gone) {
            stage_merged_away(&mut wb, id);
        }
        Ok(wb)
    }

    /// Phase 3, after the second batch is written.
    pub fn finish_round(&mut self, mut round: Round) -> Result<()> {
        for (id, msgs) in std::mem::take(&mut round.late) {
            self.outbox.extend(msgs.into_iter().map(|m| (id, m)));
        }
        self.retire_merged(&round.gone, &mut round.completions);
        for &id in &round.looked_at {
            self.reindex(id);
        }
        self.adopt_new_ranges(&round.looked_at)?;
        for &id in &round.looked_at {
            let Some(r) = self.replicas.get_mut(&id) else {
                continue;
            };
            r.after_write(&mut round.completions);
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
        if round.reserved_ids {
            self.retry_pending_splits();
        }
        round.completions.into_iter().for_each(Completion::send);
        Ok(())
    }
}
