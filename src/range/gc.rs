//! MVCC garbage collection as a replicated command: the leader names keys
//! (found off the Store task by `mvcc::GarbageFinder`) and a horizon; every
//! replica computes each key's deletes from its own replicated state
//! (`mvcc::gc_key`), so replicas stay identical even when the list is stale.
//!
//! Applying one raises the descriptor's `gc_horizon`; transactions that
//! started below it are refused on this range from then on (reads at such
//! a timestamp could miss collected versions, and a validation or prewrite
//! could miss a collected conflicting write). Clock-independent: node
//! clocks only decide when GC is proposed, never whether a read is safe.

use super::command::{Command, GcCmd, Kind};
use super::replica::{Admit, Replica};
use super::state_machine::{ApplyCtx, Effects, SizeChange};
use crate::api::Timestamp;
use crate::error::Result;
use crate::keys;
use crate::mvcc::{gc_key, Reader};

impl Replica {
    pub(super) fn prepare_gc(&self, cmd: GcCmd) -> Result<Command> {
        self.admit(Admit::LEADER)?;
        Ok(Command::new(Kind::Gc(cmd)))
    }
}

/// Applies a GC command: keys outside the range (it split) are skipped.
pub(super) fn apply(cmd: &GcCmd, ctx: &ApplyCtx) -> Result<Effects> {
    let mut fx = Effects::default();
    if ctx.desc.frozen {
        return Ok(fx);
    }
    let reader = Reader::new(&ctx.reader);
    let horizon = Timestamp(cmd.horizon);
    // The horizon first: from here on no transaction below it reads here.
    if cmd.horizon > ctx.desc.gc_horizon {
        let mut desc = ctx.desc.clone();
        desc.gc_horizon = cmd.horizon;
        fx.writes
            .put(keys::descriptor_key(desc.range_id), desc.encode());
        fx.desc = Some(desc);
    }
    for key in cmd.keys.iter().filter(|k| ctx.desc.contains(k)) {
        fx.writes.append(gc_key(&reader, key, horizon)?);
    }
    fx.size = SizeChange::Unchanged;
    Ok(fx)
}
