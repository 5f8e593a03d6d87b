//! Membership changes (ConfChangeV2, one voter at a time) and leader
//! transfers: proposal on the leader and apply on every replica.
//!
//! Rules the placement driver relies on: a change names the membership
//! version (`conf_ver`) it was planned against and is refused when the
//! range changed since; a frozen range's membership no longer changes; the
//! leader never removes itself (raft-rs would panic acking its own log): it
//! hands leadership to the most caught-up voter and the caller retries.

use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState,
    Entry,
};

use super::replica::{Admit, Proposal, Replica, Responder};
use super::ReplicaChange;
use crate::error::{Error, Result};
use crate::keys;
use crate::storage::WriteBatch;

impl Replica {
    /// Proposes one membership change, or transfers leadership.
    pub(super) fn propose_change(
        &mut self,
        change: ReplicaChange,
        expected_conf_ver: u64,
        done: Responder<()>,
    ) {
        match self.plan_change(change, expected_conf_ver) {
            Ok(Some((node, kind))) => self.propose_conf_change(node, kind, done),
            Ok(None) => drop(done.send(Ok(()))),
            Err(e) => drop(done.send(Err(e))),
        }
    }

    /// The conf change to propose, `None` if there is nothing to do (the
    /// change is in place already, or it was a leader transfer).
    fn plan_change(
        &mut self,
        change: ReplicaChange,
        expected_conf_ver: u64,
    ) -> Result<Option<(u64, ConfChangeType)>> {
        self.admit(Admit {
            frozen_ok: true,
            ..Admit::LEADER
        })?;
        let range_id = self.desc.range_id;
        if expected_conf_ver != 0 && expected_conf_ver != self.desc.conf_ver {
            return Err(Error::Unavailable(format!(
                "range {range_id} membership changed (conf_ver {} != expected {expected_conf_ver})",
                self.desc.conf_ver
            )));
        }
        if self.desc.frozen && !matches!(change, ReplicaChange::TransferLeader(_)) {
            return Err(Error::Unavailable(format!(
                "range {range_id} is frozen for a merge; its membership no longer changes"
            )));
        }
        let cs = self.group.store().conf_state().clone();
        let member = |n: &u64| cs.voters.contains(n) || cs.learners.contains(n);
        match change {
            ReplicaChange::TransferLeader(n) => {
                if !cs.voters.contains(&n) {
                    return Err(Error::InvalidArgument(format!(
                        "node {n} is not a voter of range {range_id}"
                    )));
                }
                if n != self.node_id {
                    self.group.transfer_leader(n);
                }
                Ok(None)
            }
            ReplicaChange::AddLearner(n) if member(&n) => Ok(None),
            ReplicaChange::AddLearner(n) => Ok(Some((n, ConfChangeType::AddLearnerNode))),
            ReplicaChange::Promote(n) if cs.voters.contains(&n) => Ok(None),
            ReplicaChange::Promote(n) if !cs.learners.contains(&n) => Err(Error::InvalidArgument(
                format!("node {n} is not a learner of range {range_id}"),
            )),
            ReplicaChange::Promote(n) => Ok(Some((n, ConfChangeType::AddNode))),
            ReplicaChange::Remove(n) if !member(&n) => Ok(None),
            ReplicaChange::Remove(n) if n == self.node_id => Err(self.step_down_for_removal(&cs)),
            ReplicaChange::Remove(n) if cs.voters == [n] => Err(Error::InvalidArgument(
                "cannot remove the last voter of a range".into(),
            )),
            ReplicaChange::Remove(n) => Ok(Some((n, ConfChangeType::RemoveNode))),
        }
    }

    /// raft-rs cannot remove its own leader: hand leadership to the most
    /// caught-up other voter first; the caller retries.
    fn step_down_for_removal(&mut self, cs: &ConfState) -> Error {
        let me = self.node_id;
        let matched = |v: u64| self.group.raft.prs().get(v).map_or(0, |p| p.matched);
        let next = cs
            .voters
            .iter()
            .copied()
            .filter(|v| *v != me)
            .max_by_key(|v| (matched(*v), std::cmp::Reverse(*v)));
        if let Some(to) = next {
            self.group.transfer_leader(to);
        }
        Error::Unavailable(format!(
            "node {me} leads range {}; moving leadership before removing it",
            self.desc.range_id
        ))
    }

    fn propose_conf_change(&mut self, node: u64, kind: ConfChangeType, done: Responder<()>) {
        let mut single = ConfChangeSingle {
            node_id: node,
            ..Default::default()
        };
        single.set_change_type(kind);
        let mut cc = ConfChangeV2::default();
        cc.set_changes(vec![single].into());
        cc.set_transition(ConfChangeTransition::Auto);
        let id = self.next_command_id();
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
            // raft-rs turns a conf change it cannot take now into an empty
            // entry, or drops it.
            let _ = done.send(Err(Error::Unavailable("membership change dropped".into())));
            return;
        }
        self.metrics.proposals.inc();
        self.track(index, Proposal::new(id, done));
    }

    /// Applies a v1 conf change entry (only ever the empty one raft-rs
    /// appends itself).
    pub(super) fn apply_conf_change_v1(&mut self, e: &Entry, wb: &mut WriteBatch) -> Result<()> {
        let cc = ConfChange::parse_from_bytes(&e.data)?;
        let cs = self.group.apply_conf_change(&cc)?;
        // The quorum that promised the lease may not be one any more.
        self.lease.reset();
        self.group.mut_store().set_conf_state(cs, wb)
    }

    /// Applies a membership change: the group's configuration, the
    /// descriptor's replicas and `conf_ver`. Returns the proposal id.
    pub(super) fn apply_conf_change_v2(&mut self, e: &Entry, wb: &mut WriteBatch) -> Result<u64> {
        let cc = ConfChangeV2::parse_from_bytes(&e.data)?;
        let voters_before = self.group.store().conf_state().voters.clone();
        let cs = self.group.apply_conf_change(&cc)?;
        self.lease.reset();
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
        let mut desc = self.desc.clone();
        desc.replicas = members.clone();
        desc.conf_ver += 1;
        wb.put(keys::descriptor_key(desc.range_id), desc.encode());
        self.set_descriptor(desc);
        if !members.contains(&self.node_id) {
            self.removed = true;
        }
        let id = e
            .context
            .as_ref()
            .try_into()
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        Ok(id)
    }
}
