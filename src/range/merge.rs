//! Merges, as a range sees them: a right range R is frozen (`FreezeCmd` on
//! R: from then on it takes no reads, writes, splits or membership changes
//! and its data is final; it is never thawed), then its left neighbour L
//! proposes a `MergeCmd` carrying R's descriptor and final data. Every
//! replica of L applies it at one log position — replacing whatever it held
//! in R's span — and reports R as absorbed, so the Store drops its replica
//! of R (and any stale replica inside R's span) in the same batch.

use super::command::{Command, FreezeCmd, Kind, MergeCmd};
use super::replica::{Admit, Replica};
use super::state_machine::{Absorbed, ApplyCtx, Effects, SizeChange};
use super::{RangeDescriptor, SYSTEM_RANGE_ID};
use crate::error::{Error, Result};
use crate::keys;
use crate::storage::{KvPair, Pair};

impl Replica {
    /// The command freezing this range for a merge, or `None` if it is
    /// frozen already (idempotent).
    pub(super) fn prepare_freeze(&self, expected_version: u64) -> Result<Option<Command>> {
        self.admit(Admit {
            frozen_ok: true,
            ..Admit::LEADER
        })?;
        if self.desc.frozen {
            return Ok(None);
        }
        if self.desc.range_id == SYSTEM_RANGE_ID {
            return Err(Error::InvalidArgument(
                "the system range does not merge".into(),
            ));
        }
        Ok(Some(Command::new(Kind::Freeze(FreezeCmd {
            expected_version,
        }))))
    }

    /// The command absorbing the frozen right neighbour `rhs` with its data,
    /// or `None` if this range covers `rhs` already (merged earlier).
    pub(super) fn prepare_merge(
        &self,
        expected_version: u64,
        rhs: RangeDescriptor,
        pairs: Vec<KvPair>,
    ) -> Result<Option<Command>> {
        self.admit(Admit {
            frozen_ok: true,
            ..Admit::LEADER
        })?;
        let d = &self.desc;
        if d.start_key <= rhs.start_key && rhs.end_key <= d.end_key && !rhs.end_key.is_empty() {
            return Ok(None);
        }
        self.admit(Admit {
            version: Some(expected_version),
            ..Admit::LEADER
        })?;
        if d.end_key != rhs.start_key || !rhs.frozen || d.range_id == SYSTEM_RANGE_ID {
            return Err(Error::InvalidArgument(format!(
                "range {} cannot absorb range {}: not its frozen right neighbour",
                d.range_id, rhs.range_id
            )));
        }
        Ok(Some(Command::new(Kind::Merge(MergeCmd {
            expected_version,
            rhs: Some(rhs),
            pairs: pairs
                .into_iter()
                .map(|(key, value)| Pair { key, value })
                .collect(),
        }))))
    }

    /// A frozen range's final descriptor (its data is final too: the caller
    /// reads it from the engine).
    pub fn frozen_descriptor(&self) -> Result<RangeDescriptor> {
        if !self.desc.frozen {
            return Err(Error::Unavailable(format!(
                "range {} is not frozen",
                self.desc.range_id
            )));
        }
        Ok(self.desc.clone())
    }
}

/// Freeze, on every replica (idempotent).
pub(super) fn apply_freeze(freeze: &FreezeCmd, ctx: &ApplyCtx) -> Result<Effects> {
    let mut fx = Effects::default();
    if ctx.desc.frozen {
        return Ok(fx);
    }
    if freeze.expected_version != ctx.desc.version {
        return Err(ctx.desc.epoch_mismatch());
    }
    let mut desc = ctx.desc.clone();
    desc.frozen = true;
    desc.version += 1;
    fx.writes
        .put(keys::descriptor_key(desc.range_id), desc.encode());
    fx.desc = Some(desc);
    Ok(fx)
}

/// Merge, on every replica of the left range: take the right range's span
/// and its frozen data.
pub(super) fn apply_merge(merge: &MergeCmd, ctx: &ApplyCtx) -> Result<Effects> {
    let Some(rhs) = &merge.rhs else {
        return Err(Error::InvalidArgument("merge without a right range".into()));
    };
    let d = ctx.desc;
    if d.frozen || merge.expected_version != d.version {
        return Err(d.epoch_mismatch());
    }
    if d.end_key != rhs.start_key
        || !rhs.frozen
        || rhs.end_key <= rhs.start_key
        || rhs.range_id == d.range_id
        || merge
            .pairs
            .iter()
            .any(|p| p.key < rhs.start_key || p.key >= rhs.end_key)
    {
        return Err(Error::InvalidArgument(
            "merge of a range that is not the frozen right neighbour".into(),
        ));
    }
    let mut fx = Effects::default();
    fx.writes
        .delete_range(rhs.start_key.clone(), rhs.end_key.clone());
    let mut bytes = 0u64;
    for p in &merge.pairs {
        bytes += (p.key.len() + p.value.len()) as u64;
        fx.writes.put(p.key.clone(), p.value.clone());
    }
    let mut desc = d.clone();
    desc.end_key = rhs.end_key.clone();
    desc.version = desc.version.max(rhs.version) + 1;
    desc.gc_horizon = desc.gc_horizon.max(rhs.gc_horizon);
    fx.writes
        .put(keys::descriptor_key(desc.range_id), desc.encode());
    fx.desc = Some(desc);
    fx.size = SizeChange::Grew(bytes);
    fx.absorbed = Some(Absorbed {
        range_id: rhs.range_id,
        start: rhs.start_key.clone(),
        end: rhs.end_key.clone(),
        version: rhs.version,
    });
    Ok(fx)
}
