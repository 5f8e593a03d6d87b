//! New range ids, unique across the cluster by construction: a per-store
//! counter times (MAX_NODE_ID + 1) plus this node's id — no round trip to
//! the placement driver on the split path.
//!
//! The counter is reserved in blocks: `RANGE_ID_BLOCK` ids are written
//! (synced, as part of a Ready round's batch) before the first of them is
//! used, so a restart never hands out an id a split already proposed — a
//! leader sends its appends before its own fsync, so followers may hold a
//! split whose id this node must never reuse. A restart skips the rest of
//! the block (ids are sparse anyway).

use crate::api::MAX_NODE_ID;
use crate::error::Result;
use crate::keys;
use crate::storage::{Engine, WriteBatch};

/// Ids reserved per synced counter write.
pub const RANGE_ID_BLOCK: u64 = 64;

#[derive(Debug)]
pub struct RangeIds {
    node_id: u64,
    /// Counter values up to and including this one are used or reserved.
    next: u64,
    /// Counter values up to this one are durably reserved.
    reserved: u64,
    /// A reservation is wanted (ids ran out) / staged in a batch.
    wanted: bool,
    staged: bool,
}

impl RangeIds {
    pub fn load(engine: &dyn Engine, node_id: u64) -> Result<RangeIds> {
        let counter = match engine.get(keys::RANGE_COUNTER_KEY)? {
            Some(b) => keys::decode_counter(&b)?,
            None => 0,
        };
        Ok(RangeIds {
            node_id,
            next: counter,
            reserved: counter,
            wanted: false,
            staged: false,
        })
    }

    /// A fresh range id, or `None` until a reservation is durable.
    pub fn take(&mut self) -> Option<u64> {
        if self.next < self.reserved {
            self.next += 1;
            Some(self.next * (MAX_NODE_ID + 1) + self.node_id)
        } else {
            self.wanted = true;
            None
        }
    }

    /// Stages the next reservation into a round's batch; returns whether it
    /// did (the batch must then be synced).
    pub fn stage(&mut self, wb: &mut WriteBatch) -> bool {
        if !self.wanted || self.staged {
            return false;
        }
        wb.put(
            keys::RANGE_COUNTER_KEY.to_vec(),
            keys::encode_counter(self.reserved + RANGE_ID_BLOCK),
        );
        self.staged = true;
        true
    }

    /// The batch holding the staged reservation is durable.
    pub fn written(&mut self) -> bool {
        if !self.staged {
            return false;
        }
        self.reserved += RANGE_ID_BLOCK;
        self.staged = false;
        self.wanted = false;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemEngine;

    #[test]
    fn ids_are_reserved_durably_before_use_and_never_reused() {
        let e = MemEngine::new();
        let mut ids = RangeIds::load(&e, 3).unwrap();
        assert_eq!(ids.take(), None, "nothing reserved yet");
        let mut wb = WriteBatch::new();
        assert!(ids.stage(&mut wb));
        assert!(!ids.stage(&mut wb), "one reservation at a time");
        e.write(&wb, true).unwrap();
        assert!(ids.written());
        assert_eq!(ids.take(), Some(1003));
        assert_eq!(ids.take(), Some(2003));
        // A restart skips what is left of the block.
        let mut again = RangeIds::load(&e, 3).unwrap();
        assert_eq!(again.take(), None);
        let mut wb = WriteBatch::new();
        again.stage(&mut wb);
        e.write(&wb, true).unwrap();
        again.written();
        assert_eq!(again.take(), Some((RANGE_ID_BLOCK + 1) * 1000 + 3));
    }
}
