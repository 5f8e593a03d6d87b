//! Merges, as the placement driver decides them: which adjacent ranges to
//! merge (`plan_merge`) and which replicas a merge left behind
//! (`merged_replicas`); the steps run at the server edge
//! (`server::placement_loop`).
//!
//! A merge absorbs a right range R into its left neighbour L:
//! 1. freeze R (a Raft command of R: from then on R serves nothing and its
//!    data is final) and read its data from R's leader;
//! 2. propose on L a merge command carrying R's descriptor and data; every
//!    replica of L applies it (replacing whatever it held in R's span), and
//!    drops its own replica of R;
//! 3. drop R's remaining replicas (on nodes without L, or lagging) and R's
//!    directory entry.
//!
//! A frozen range is never thawed: if step 2 fails (L split, changed or lost
//! its leader), a later round absorbs R into whatever range then ends where
//! R starts. Step 1 and 2 are idempotent, so a new placement driver simply
//! continues. Hysteresis: only non-sticky (not manually split), cold ranges
//! that together hold less than a quarter of `range_max_bytes` merge, after
//! qualifying for `MERGE_ROUNDS` rounds in a row.

use std::collections::BTreeMap;

use super::RangeView;
use crate::range::SYSTEM_RANGE_ID;

/// Rounds in a row a pair must qualify before it merges.
pub const MERGE_ROUNDS: u32 = 5;
/// Live ranges starting at or before a key that are looked at to see
/// whether one covers it (one round's views may overlap while a leader has
/// not applied a change yet).
const NEAREST_COVERING: usize = 16;

/// Thresholds for starting a merge.
#[derive(Debug, Clone, Copy)]
pub struct MergeLimits {
    /// Largest combined size (already capped at range_max_bytes / 4); 0: never.
    pub max_bytes: u64,
    /// Largest combined load in requests per second.
    pub max_qps: u64,
}

/// One merge step: freeze `rhs` (if not yet) and merge it into `lhs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeStep {
    pub lhs: u64,
    pub rhs: u64,
}

/// A replica some node holds: (node, range, start key, end key, version).
pub type Held = (u64, u64, Vec<u8>, Vec<u8>, u64);

/// Replicas of ranges that were merged away: a live range (as its leader
/// reports it) other than theirs covers their start key with a newer
/// version. Versions only grow along the ranges that hold a key over time
/// and a split keeps a range's start, so only a merge can explain it.
///
/// With `guard`, a node that still holds the left neighbour as it was
/// before the merge (ending where the merged range starts, and behind its
/// leader) keeps its replica until that neighbour applies the merge, which
/// drops it: meanwhile it stops a newer range's snapshot from landing in the
/// span the lagging merge will write (seed 212). Directory entries need no
/// guard.
pub fn merged_replicas(held: &[Held], ranges: &[RangeView], guard: bool) -> Vec<(u64, u64)> {
    // O(n log n): thousands of ranges are checked every round.
    // The newest version of each range anyone reports: a leader's view can
    // be older than its followers' replicas (a cut-off leader that has not
    // applied the merge yet, seed 14295), and a replica behind any other
    // replica of its range is lagging.
    let mut current: BTreeMap<u64, u64> = ranges.iter().map(|v| (v.range_id, v.version)).collect();
    for (_, id, _, _, version) in held {
        if let Some(v) = current.get_mut(id) {
            *v = (*v).max(*version);
        }
    }
    let ends: std::collections::BTreeSet<(u64, &[u8], u64)> = held
        .iter()
        .filter(|(_, id, _, _, version)| current.get(id).is_none_or(|v| v > version))
        .map(|(n, id, _, end, _)| (*n, end.as_slice(), *id))
        .collect();
    let mut live: Vec<&RangeView> = ranges.iter().filter(|v| !v.frozen).collect();
    live.sort_by(|a, b| a.start_key.cmp(&b.start_key));
    // Live ranges covering `key` start at or before it; the views of one
    // round may overlap (a leader that has not applied a change yet), so
    // look at the nearest few.
    let newer_covers = |key: &[u8], id: u64, version: u64| -> bool {
        let i = live.partition_point(|v| v.start_key.as_slice() <= key);
        live[..i]
            .iter()
            .rev()
            .take(NEAREST_COVERING)
            .any(|v| key < v.end_key.as_slice() && v.range_id != id && v.version > version)
    };
    held.iter()
        .filter(|(node, id, start, _, _)| {
            !guard
                || !ends
                    .range((*node, start.as_slice(), 0)..=(*node, start.as_slice(), u64::MAX))
                    .any(|(_, _, other)| other != id)
        })
        .filter(|(_, id, start, _, version)| newer_covers(start, *id, *version))
        .map(|(node, id, _, _, _)| (*node, *id))
        .collect()
}

/// The next merge step: finishing a frozen range first, else starting one
/// for a pair that qualified `MERGE_ROUNDS` rounds in a row (`streaks`
/// counts, per (left, right) pair, and forgets pairs that stop qualifying).
pub fn plan_merge(
    ranges: &[RangeView],
    limits: MergeLimits,
    streaks: &mut BTreeMap<(u64, u64), u32>,
) -> Option<MergeStep> {
    let mut by_start: Vec<&RangeView> = ranges.iter().filter(|r| !r.frozen).collect();
    by_start.sort_by(|a, b| a.start_key.cmp(&b.start_key));
    let covering = |key: &[u8]| {
        by_start
            .iter()
            .find(|r| r.start_key.as_slice() <= key && key < r.end_key.as_slice())
            .copied()
    };
    // Frozen ranges are unavailable until absorbed: they go first. One a
    // live range covers was absorbed already (see `merged_replicas`).
    for r in ranges.iter().filter(|r| r.frozen) {
        if covering(&r.start_key).is_some() {
            continue;
        }
        if let Some(l) = by_start.iter().find(|l| l.end_key == r.start_key) {
            return Some(MergeStep {
                lhs: l.range_id,
                rhs: r.range_id,
            });
        }
    }
    let mut qualified = std::collections::BTreeSet::new();
    if limits.max_bytes > 0 {
        for pair in by_start.windows(2) {
            let (l, r) = (pair[0], pair[1]);
            let ok = l.end_key == r.start_key
                && l.range_id != SYSTEM_RANGE_ID
                && r.range_id != SYSTEM_RANGE_ID
                && !r.sticky
                && l.learners.is_empty()
                && r.learners.is_empty()
                && l.approx_bytes + r.approx_bytes <= limits.max_bytes
                && l.qps + r.qps <= limits.max_qps;
            if ok {
                qualified.insert((l.range_id, r.range_id));
            }
        }
    }
    streaks.retain(|k, _| qualified.contains(k));
    let mut start = None;
    for k in qualified {
        let n = streaks.entry(k).or_insert(0);
        *n += 1;
        if *n >= MERGE_ROUNDS && start.is_none() {
            start = Some(k);
        }
    }
    let (lhs, rhs) = start?;
    streaks.remove(&(lhs, rhs));
    Some(MergeStep { lhs, rhs })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: u64, start: u8, end: u8, bytes: u64) -> RangeView {
        RangeView {
            range_id: id,
            start_key: vec![0x11, start],
            end_key: vec![0x11, end],
            voters: vec![1, 2, 3],
            learners: vec![],
            leader: 1,
            last_index: 10,
            matched: Default::default(),
            conf_ver: 1,
            version: 2,
            frozen: false,
            sticky: false,
            approx_bytes: bytes,
            qps: 0,
        }
    }
    const LIMITS: MergeLimits = MergeLimits {
        max_bytes: 1000,
        max_qps: 100,
    };

    #[test]
    fn small_cold_neighbours_merge_after_a_streak() {
        let ranges = vec![view(2, 0, 10, 100), view(5, 10, 20, 100)];
        let mut streaks = BTreeMap::new();
        for _ in 1..MERGE_ROUNDS {
            assert_eq!(plan_merge(&ranges, LIMITS, &mut streaks), None);
        }
        assert_eq!(
            plan_merge(&ranges, LIMITS, &mut streaks),
            Some(MergeStep { lhs: 2, rhs: 5 })
        );
    }

    #[test]
    fn big_hot_sticky_or_moving_ranges_do_not_merge() {
        let mut streaks = BTreeMap::new();
        let big = vec![view(2, 0, 10, 600), view(5, 10, 20, 600)];
        let mut hot = vec![view(2, 0, 10, 1), view(5, 10, 20, 1)];
        hot[1].qps = 500;
        let mut sticky = vec![view(2, 0, 10, 1), view(5, 10, 20, 1)];
        sticky[1].sticky = true;
        let mut moving = vec![view(2, 0, 10, 1), view(5, 10, 20, 1)];
        moving[0].learners = vec![4];
        for ranges in [big, hot, sticky, moving] {
            for _ in 0..2 * MERGE_ROUNDS {
                assert_eq!(plan_merge(&ranges, LIMITS, &mut streaks), None);
            }
        }
        // A pair that stops qualifying starts its streak over.
        let ok = vec![view(2, 0, 10, 1), view(5, 10, 20, 1)];
        let mut hot = ok.clone();
        hot[0].qps = 1000;
        for _ in 1..MERGE_ROUNDS {
            plan_merge(&ok, LIMITS, &mut streaks);
        }
        assert_eq!(plan_merge(&hot, LIMITS, &mut streaks), None);
        assert_eq!(plan_merge(&ok, LIMITS, &mut streaks), None);
    }

    #[test]
    fn frozen_ranges_are_finished_first_or_cleaned_up() {
        let mut streaks = BTreeMap::new();
        let mut ranges = vec![view(2, 0, 10, 1), view(5, 10, 20, 1), view(7, 20, 30, 1)];
        ranges[2].frozen = true;
        ranges[2].version = 3;
        assert_eq!(
            plan_merge(&ranges, LIMITS, &mut streaks),
            Some(MergeStep { lhs: 5, rhs: 7 })
        );
        // Range 5 absorbed it (a newer version covers its start): its
        // leftover replicas go; range 5's own replicas stay.
        let mut done = ranges.clone();
        done[1].end_key = vec![0x11, 30];
        done[1].version = 4;
        let held = vec![
            (1, 7, vec![0x11, 20], vec![0x11, 30], 3),
            (2, 5, vec![0x11, 10], vec![0x11, 30], 4),
            (3, 5, vec![0x11, 10], vec![0x11, 20], 2),
            (3, 7, vec![0x11, 20], vec![0x11, 30], 3),
        ];
        // Node 3's replica of range 5 has not applied the merge yet: its
        // replica of range 7 stays until it does.
        assert_eq!(merged_replicas(&held, &done, true), vec![(1, 7)]);
        assert_eq!(merged_replicas(&held, &done, false), vec![(1, 7), (3, 7)]);
        // Range 5 on node 3 caught up, and later split exactly where range 7
        // started: nothing lags, node 3's replica of range 7 goes.
        let mut split_again = held.clone();
        split_again[2].4 = 4;
        assert_eq!(
            merged_replicas(&split_again, &done, true),
            vec![(1, 7), (3, 7)]
        );
        assert!(!matches!(
            plan_merge(&done, LIMITS, &mut streaks),
            Some(MergeStep { rhs: 7, .. })
        ));
        // A stale view (older version) covering it proves nothing.
        done[1].version = 1;
        assert_eq!(merged_replicas(&held, &done, true), vec![]);
    }

    #[test]
    fn a_stale_leader_view_does_not_lift_the_guard() {
        // Range 5 absorbed range 7 (version 4 on node 2), but the view the
        // placement driver got for range 5 came from node 3, a cut-off
        // leader that has not applied the merge (version 2, seed 14295).
        // Range 9 (the merged span's new owner, split off later) covers 7.
        let mut ranges = vec![view(2, 0, 10, 1), view(5, 10, 20, 1), view(9, 20, 30, 1)];
        ranges[2].version = 5;
        let held = vec![
            (2, 5, vec![0x11, 10], vec![0x11, 20], 4),
            (3, 5, vec![0x11, 10], vec![0x11, 20], 2),
            (3, 7, vec![0x11, 20], vec![0x11, 30], 3),
        ];
        // Node 3's range 5 is behind node 2's: its replica of 7 stays.
        assert_eq!(merged_replicas(&held, &ranges, true), vec![]);
        assert_eq!(merged_replicas(&held, &ranges, false), vec![(3, 7)]);
    }
}
