//! `Covers`: the spans replicas took over during one Ready round, and which
//! other replicas that makes stale.
//!
//! A replica takes a span by applying a merge (the absorbed range's span)
//! or a snapshot (its whole span: a snapshot taken after a merge may cover
//! ranges this node never saw merged). Any other initialized replica inside
//! such a span holds data that now belongs to the taker, and must be dropped
//! in the same round, before it applies old writes over the merged data.
//!
//! A merge covers more than its right-hand range when this node's replica
//! of that range lagged: a range merged into it earlier may still have a
//! replica here that never saw that merge (seed 8562). Only replicas older
//! than the merged range are stale: a newer range split off the merged one
//! later may already live in that span.

use crate::error::overlaps;
use crate::range::Replica;

/// A span some replica took this round, and the version below which other
/// replicas inside it are stale.
#[derive(Debug, Clone)]
struct Cover {
    taker: u64,
    start: Vec<u8>,
    end: Vec<u8>,
    below_version: u64,
}

/// The spans taken so far this round.
#[derive(Debug, Default)]
pub struct Covers {
    list: Vec<Cover>,
}

impl Covers {
    /// Notes what replica `r` just absorbed (merges it applied, a snapshot
    /// it applied); returns the ranges merged into it.
    pub fn absorb(&mut self, r: &mut Replica) -> Vec<u64> {
        let mut merged = Vec::new();
        for a in r.take_merged_away() {
            merged.push(a.range_id);
            self.list.push(Cover {
                taker: r.range_id(),
                start: a.start,
                end: a.end,
                below_version: a.version,
            });
        }
        if r.take_snapshot_applied() {
            let d = r.descriptor();
            self.list.push(Cover {
                taker: d.range_id,
                start: d.start_key.clone(),
                end: d.end_key.clone(),
                below_version: u64::MAX,
            });
        }
        merged
    }

    /// A position to ask `covers_since` about.
    pub fn mark(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Whether initialized replica `r` lies in a span taken this round.
    pub fn covers(&self, r: &Replica) -> bool {
        self.covers_since(r, 0)
    }

    /// Whether `r` lies in a span taken since `mark`.
    pub fn covers_since(&self, r: &Replica, mark: usize) -> bool {
        let d = r.descriptor();
        r.is_initialized()
            && self.list[mark.min(self.list.len())..].iter().any(|c| {
                c.taker != d.range_id
                    && overlaps(&c.start, &c.end, &d.start_key, &d.end_key)
                    && d.version < c.below_version
            })
    }
}
