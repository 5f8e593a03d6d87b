//! Replica lifecycle on a node: created by a split (`adopt_new_ranges`) or
//! by incoming traffic (`raft_in`), destroyed when a membership change or
//! the placement driver removes it (`destroy_removed`), dropped when a
//! merge or snapshot makes it stale (`retire_merged`).
//!
//! Destruction is staged into the next round's batch (synced) before the
//! replica can be recreated: it deletes the range's data (unless another
//! replica holds that span), its Raft state and log, and leaves a tombstone
//! — keeping the term and vote, so a replica added back never votes twice
//! in a term.

use std::collections::BTreeSet;

use super::store::Store;
use crate::error::Result;
use crate::keys::{self, Tombstone};
use crate::range::Completion;
use crate::storage::WriteBatch;

impl Store {
    /// Marks a stale replica for destruction (see `StoreHandle::gc_replica`).
    pub(super) fn gc_replica(&mut self, range_id: u64, conf_ver: u64, merged: bool) {
        let Some(r) = self.replicas.get_mut(&range_id) else {
            return;
        };
        self.removal_pending = true;
        if merged {
            tracing::info!(range_id, "replica of a merged range will be dropped");
            self.merged_gc.insert(range_id);
            r.mark_removed_if_older(u64::MAX);
        } else if r.mark_removed_if_older(conf_ver) {
            tracing::info!(range_id, conf_ver, "stale replica will be removed");
        }
    }

    /// Stages the destruction of every removed replica into `wb` (which
    /// must be synced); their waiters fail into `completions`.
    pub(super) fn destroy_removed(
        &mut self,
        wb: &mut WriteBatch,
        completions: &mut Vec<Completion>,
    ) -> Result<bool> {
        if !std::mem::take(&mut self.removal_pending) {
            return Ok(false);
        }
        let removed: Vec<u64> = self
            .replicas
            .values()
            .filter(|r| r.is_removed())
            .map(|r| r.range_id())
            .collect();
        for &range_id in &removed {
            let Some(mut r) = self.remove_replica(range_id) else {
                continue;
            };
            r.fail_all(completions);
            let d = r.descriptor().clone();
            if !d.end_key.is_empty()
                && !self
                    .router
                    .overlaps_other(range_id, &d.start_key, &d.end_key)
            {
                wb.delete_range(d.start_key.clone(), d.end_key.clone());
            }
            stage_state_deletion(wb, range_id);
            let tombstone = if self.merged_gc.remove(&range_id) {
                self.merged.insert(range_id);
                Tombstone::Merged
            } else {
                self.tombstones.insert(range_id, r.removed_at());
                Tombstone::Removed {
                    conf_ver: r.removed_at(),
                }
            };
            wb.put(keys::tombstone_key(range_id), tombstone.encode());
            // Keep the term and vote: if this node is added back, its new
            // replica must not vote again in a term it already voted in.
            let mut hs = r.hard_state();
            hs.commit = 0;
            wb.put(
                keys::hard_state_key(range_id),
                protobuf::Message::write_to_bytes(&hs)?,
            );
            self.no_vote.remove(&range_id);
            self.dirty.remove(&range_id);
            self.awake.remove(&range_id);
            tracing::info!(range_id, "replica removed from this node");
        }
        Ok(!removed.is_empty())
    }

    /// Drops the replicas of ranges merged into another one this round
    /// (their data now belongs to that range: it stays). Their Raft state
    /// and a tombstone were staged with the round's batch.
    pub(super) fn retire_merged(
        &mut self,
        gone: &BTreeSet<u64>,
        completions: &mut Vec<Completion>,
    ) {
        for &id in gone {
            if let Some(mut r) = self.remove_replica(id) {
                // Writes of the merged range that were still waiting: the
                // merge carried whatever of them had applied.
                r.fail_all(completions);
            }
            self.merged.insert(id);
            self.dirty.remove(&id);
            self.awake.remove(&id);
            tracing::info!(range_id = id, "replica dropped: its range was merged");
        }
    }

    /// Opens the replicas that splits applied this round (by the replicas
    /// in `round`) created on this node.
    pub(super) fn adopt_new_ranges(&mut self, round: &[u64]) -> Result<()> {
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
            // state in the same batch, after the split's bootstrap: LogStore
            // keeps its (newer) term and vote but raises the commit index
            // to what the bootstrap applied (seed 98).
            self.remove_replica(desc.range_id);
            let mut r = self.open_replica(desc.range_id)?;
            // The parent's leader campaigns at once so the new range is not
            // leaderless for an election timeout. Only a voter of the new
            // range may campaign: a leader that is being removed from the
            // parent (seed 485) is not one.
            let voters = r.voters().to_vec();
            let me = self.cfg.node_id;
            if voters.contains(&me) && (parent_leader || voters == [me]) {
                r.campaign()?;
            }
            tracing::info!(range_id = desc.range_id, "range created by a split");
            self.insert_replica(r);
            self.unmeasured.insert(desc.range_id);
            self.note(desc.range_id);
        }
        Ok(())
    }
}

/// Stages dropping a range's Raft state: its metadata and its log.
pub(super) fn stage_state_deletion(wb: &mut WriteBatch, range_id: u64) {
    let (m0, m1) = keys::range_meta_span(range_id);
    wb.delete_range(m0, m1);
    let (l0, l1) = keys::log_bounds(range_id);
    wb.delete_range(l0, l1);
}

/// Stages dropping the Raft state of a replica whose range was merged into
/// another one, and a tombstone that ignores its traffic from now on.
pub(super) fn stage_merged_away(wb: &mut WriteBatch, range_id: u64) {
    stage_state_deletion(wb, range_id);
    wb.put(keys::tombstone_key(range_id), Tombstone::Merged.encode());
}
