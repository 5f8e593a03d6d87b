//! Splits: the leader proposes one (`prepare_split`), every replica applies
//! it (`apply`). The left part keeps the range's id; the right part becomes
//! `new_range_id` with the same members, starting from an empty log at
//! INIT_INDEX. Data stays where it is: only descriptors change.
//!
//! The node that applies a split may already hold the new range: empty
//! (created by an early Raft message, possibly having voted — its term and
//! vote are kept, seed 1) or initialized by a snapshot from the new range's
//! leader (then it is ahead and stays). A node the parent no longer counts
//! as a member (it is being removed, seed 485) or that dropped the new
//! range since (a split replayed after a restart, seed 191) creates nothing.

use super::command::{Command, Kind, SplitCmd};
use super::replica::{Admit, Replica};
use super::state_machine::{ApplyCtx, Effects, SizeChange};
use super::RangeDescriptor;
use crate::chaos::{self, Canary};
use crate::error::{Error, Result};
use crate::keys;
use crate::raft::{ApplyState, LogStore};

impl Replica {
    /// The command splitting this range at `split_key` (an internal data
    /// key) into a new range `new_range_id`.
    pub(super) fn prepare_split(
        &self,
        split_key: Vec<u8>,
        new_range_id: u64,
        sticky: bool,
    ) -> Result<Command> {
        self.admit(Admit::LEADER)?;
        if split_key <= self.desc.start_key || split_key >= self.desc.end_key {
            return Err(Error::InvalidArgument(format!(
                "split key {:?} is not strictly inside range {}",
                keys::display(&split_key),
                self.desc.range_id
            )));
        }
        Ok(Command::new(Kind::Split(SplitCmd {
            split_key,
            new_range_id,
            expected_version: self.desc.version,
            sticky,
        })))
    }
}

/// Applies a split (deterministic on every replica).
pub(super) fn apply(split: &SplitCmd, ctx: &ApplyCtx) -> Result<Effects> {
    let desc = ctx.desc;
    let key = &split.split_key;
    if split.expected_version != desc.version || desc.frozen {
        return Err(desc.epoch_mismatch());
    }
    if key <= &desc.start_key || key >= &desc.end_key || split.new_range_id == desc.range_id {
        return Err(Error::InvalidArgument("split key outside the range".into()));
    }
    let mut left = desc.clone();
    left.end_key = key.clone();
    left.version += 1;
    let right = RangeDescriptor {
        range_id: split.new_range_id,
        start_key: key.clone(),
        end_key: desc.end_key.clone(),
        conf_ver: desc.conf_ver,
        version: left.version,
        replicas: desc.replicas.clone(),
        frozen: false,
        sticky: split.sticky,
        gc_horizon: desc.gc_horizon,
    };
    let mut fx = Effects::default();
    fx.writes
        .put(keys::descriptor_key(left.range_id), left.encode());
    if creates_right(&right, ctx)? {
        // The newest hard state of an empty replica that may have voted.
        let hs = match ctx.reader.get(&keys::hard_state_key(right.range_id))? {
            Some(b) => Some(<raft::eraftpb::HardState as protobuf::Message>::parse_from_bytes(&b)?),
            None => None,
        };
        fx.writes
            .put(keys::descriptor_key(right.range_id), right.encode());
        // The new range has the parent's exact membership, learners too
        // (a learner of the parent applies this split as well).
        LogStore::bootstrap_keeping_vote(
            &mut fx.writes,
            right.range_id,
            ctx.voters.to_vec(),
            ctx.learners.to_vec(),
            hs.as_ref(),
        );
        if chaos::canary(Canary::SplitDropsRightHalf) {
            fx.writes
                .delete_range(right.start_key.clone(), right.end_key.clone());
        }
        fx.created = Some(right);
    }
    fx.desc = Some(left);
    fx.size = SizeChange::Halved;
    Ok(fx)
}

/// Whether applying the split creates the right range on this node (see
/// the module docs for when it does not).
fn creates_right(right: &RangeDescriptor, ctx: &ApplyCtx) -> Result<bool> {
    let initialized = match ctx.reader.get(&keys::apply_state_key(right.range_id))? {
        Some(b) => {
            let a = <ApplyState as prost::Message>::decode(b.as_slice())?;
            let cs =
                <raft::eraftpb::ConfState as protobuf::Message>::parse_from_bytes(&a.conf_state)?;
            !cs.voters.is_empty()
        }
        None => false,
    };
    let member = ctx.voters.contains(&ctx.node_id) || ctx.learners.contains(&ctx.node_id);
    let dropped = ctx
        .reader
        .get(&keys::tombstone_key(right.range_id))?
        .is_some();
    Ok(!initialized && member && !dropped)
}
