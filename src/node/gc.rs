//! MVCC garbage collection, scheduled by the Store: every GC_CHECK_TICKS
//! the next user range this node leads (round robin) is scanned off the
//! Store task with a horizon `gc_ttl` behind the newest oracle timestamp
//! the range or the node has seen (the server tells the Store a fresh one
//! every few seconds, for quiet ranges), and behind the node clock; the
//! keys the scan
//! names are collected by one replicated GC command (`range/gc.rs`), which
//! also raises the range's GC horizon: transactions that started below it
//! are refused there from then on (`TxnTooOld`), so a read never misses a
//! collected version.
//!
//! Open CLI and REPL transactions pin their start timestamp
//! (`_/txn/pins/<id>`, until they could no longer commit); the server's
//! metadata refresher passes the oldest live pin to the Store, and the
//! horizon never passes it.
//!
//! CAVEATS: a pin reaches the Store within a refresh (2 s), so with a
//! `gc_ttl` shorter than that a transaction can still be passed (it then
//! fails with `TxnTooOld`; never a wrong read); SDK transactions do not pin
//! unless their caller does (`Client::pin_timestamp`). A pin is live for
//! `txn_max_duration` (as set now) from its start; the nodes remove
//! expired ones.

use super::store::Store;
use crate::api::Timestamp;
use crate::range::{GcCmd, Request, SYSTEM_RANGE_ID};

/// How often (in ticks) a leader looks for garbage in one of its ranges.
pub const GC_CHECK_TICKS: u64 = 20;
/// Simulation only: the chance, per tick, of a GC round off its schedule.
const BUGGIFY_GC_PROBABILITY: f64 = 0.2;
/// Keys one GC command collects at most (more wait for the next round).
pub const GC_KEYS_PER_COMMAND: usize = 1024;

impl Store {
    pub(super) fn tick_gc(&mut self) {
        // Off the split checks' ticks: a range being measured is skipped.
        // BUGGIFY: in simulation, GC also runs at random other ticks.
        if self.ticks % GC_CHECK_TICKS != GC_CHECK_TICKS / 2 + 1
            && !crate::chaos::buggify(BUGGIFY_GC_PROBABILITY)
        {
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
        // Oracle time as this replica knows it (a lower bound), never ahead
        // of the node clock either: a skewed clock must not collect what a
        // running transaction still reads.
        let seen = self.replicas[&id]
            .newest_timestamp()
            .max(self.oracle_seen)
            .physical_ms();
        let now = seen.min(self.cfg.clock.now_ms());
        if now <= ttl_ms {
            return; // nothing seen yet
        }
        // Never past the oldest pinned open transaction.
        let horizon = match self.gc_pin {
            Some(pin) => (now - ttl_ms).min(pin.physical_ms()),
            None => now - ttl_ms,
        };
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
