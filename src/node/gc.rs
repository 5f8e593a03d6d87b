//! MVCC garbage collection, scheduled by the Store: every GC_CHECK_TICKS
//! the next user range this node leads (round robin) is scanned off the
//! Store task with a horizon `gc_ttl` behind the node clock; the keys the
//! scan names are collected by one replicated GC command (`range/gc.rs`).
//!
//! CAVEATS: the horizon comes from the node clock; nothing reads at an old
//! timestamp yet (plain reads see the newest versions), so a skewed clock
//! only collects early. Transactions and backups will pin the horizon
//! (the oldest active timestamp, leased on the placement driver).

use super::store::Store;
use crate::api::Timestamp;
use crate::range::{GcCmd, Request, SYSTEM_RANGE_ID};

/// How often (in ticks) a leader looks for garbage in one of its ranges.
pub const GC_CHECK_TICKS: u64 = 20;
/// Keys one GC command collects at most (more wait for the next round).
pub const GC_KEYS_PER_COMMAND: usize = 1024;

impl Store {
    pub(super) fn tick_gc(&mut self) {
        // Off the split checks' ticks: a range being measured is skipped.
        if self.ticks % GC_CHECK_TICKS != GC_CHECK_TICKS / 2 + 1 {
            return;
        }
        let next = self
            .replicas
            .range(self.gc_cursor + 1..)
            .chain(self.replicas.range(..=self.gc_cursor))
            .find(|(id, r)| {
                **id != SYSTEM_RANGE_ID && r.is_leader() && r.is_initialized() && !r.is_frozen()
            })
            .map(|(id, _)| *id);
        let Some(id) = next else { return };
        self.gc_cursor = id;
        let ttl_ms = self.settings.gc_ttl.as_millis() as u64;
        let horizon = self.cfg.clock.now_ms().saturating_sub(ttl_ms);
        self.request_measure_gc(id, true, None, Some(Timestamp::new(horizon, 0)));
    }

    /// The scan of `range_id` (at epoch `version`) named `keys`.
    pub(super) fn propose_gc(
        &mut self,
        range_id: u64,
        version: u64,
        horizon: Timestamp,
        keys: Vec<Vec<u8>>,
    ) {
        if keys.is_empty() {
            return;
        }
        let Some(r) = self.replicas.get_mut(&range_id) else {
            return;
        };
        if !r.is_leader() || r.descriptor().version != version {
            return;
        }
        tracing::debug!(range_id, keys = keys.len(), "collecting MVCC garbage");
        let (done, _rx) = tokio::sync::oneshot::channel();
        r.propose(
            Request::Gc(GcCmd {
                horizon: horizon.0,
                keys,
            }),
            done,
        );
        self.note(range_id);
    }
}
