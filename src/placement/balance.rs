//! Balancing when nothing needs repair (pure): move a replica from the node
//! holding the most to the one holding the fewest (add a learner there;
//! once promoted, the extra voter is removed from the most loaded node), or
//! else hand a leadership from the node leading the most ranges to one
//! leading the fewest. Differences of one are left alone, and a move is
//! made only when it narrows the gap (no ping-pong).

use std::collections::{BTreeMap, BTreeSet};

use super::{Action, RangeView};
use crate::api::ReplicaChange;

/// Per node: how many of something it has (replicas, leaderships).
type Counts = BTreeMap<u64, usize>;

fn count(
    ranges: &[RangeView],
    live: &BTreeSet<u64>,
    pick: impl Fn(&RangeView) -> Vec<u64>,
) -> Counts {
    let mut m: Counts = live.iter().map(|n| (*n, 0)).collect();
    for r in ranges {
        for n in pick(r) {
            if let Some(c) = m.get_mut(&n) {
                *c += 1;
            }
        }
    }
    m
}

/// (busiest node, count), (idlest node, count).
fn extremes(m: &Counts) -> Option<((u64, usize), (u64, usize))> {
    let max = m
        .iter()
        .max_by_key(|(n, c)| (**c, std::cmp::Reverse(**n)))
        .map(|(n, c)| (*n, *c));
    let min = m
        .iter()
        .min_by_key(|(n, c)| (**c, **n))
        .map(|(n, c)| (*n, *c));
    max.zip(min)
}

fn healthy(r: &RangeView, live: &BTreeSet<u64>, rf: usize) -> bool {
    r.learners.is_empty() && r.voters.len() == rf && r.voters.iter().all(|v| live.contains(v))
}

/// Hands range `r`'s leadership to its voter leading the fewest ranges, if
/// that narrows the gap: swapping who leads more (2 vs 1 → 1 vs 2) would
/// ping-pong, and when `r` is the system range it moves the placement
/// driver each time, which restarts its dead-node timeouts.
fn transfer(r: &RangeView, leaders: &Counts, why: String) -> Option<Action> {
    let from = leaders.get(&r.leader).copied().unwrap_or(0);
    let to = r
        .voters
        .iter()
        .copied()
        .filter(|v| *v != r.leader && leaders.get(v).is_some_and(|c| c + 1 < from))
        .min_by_key(|v| (leaders.get(v).copied().unwrap_or(0), *v))?;
    Some(Action::new(r, ReplicaChange::TransferLeader(to), why))
}

/// A replica move toward the node holding the fewest replicas. The
/// busiest nodes first; a range led from the busy node first hands its
/// leadership to another voter, then moves next round.
fn replica_move(
    ranges: &[RangeView],
    live: &BTreeSet<u64>,
    rf: usize,
    leaders: &Counts,
) -> Option<Action> {
    let replicas = count(ranges, live, |r| {
        r.voters.iter().chain(r.learners.iter()).copied().collect()
    });
    let (_, (lo, lc)) = extremes(&replicas)?;
    let mut busy: Vec<(u64, usize)> = replicas
        .iter()
        .map(|(n, c)| (*n, *c))
        .filter(|(_, c)| *c > lc + 1)
        .collect();
    busy.sort_by_key(|(n, c)| (std::cmp::Reverse(*c), *n));
    let movable = |hi: u64| -> Vec<&RangeView> {
        ranges
            .iter()
            .filter(|r| healthy(r, live, rf))
            .filter(|r| r.voters.contains(&hi) && !r.voters.contains(&lo))
            .collect()
    };
    for &(hi, hc) in &busy {
        if let Some(r) = movable(hi).into_iter().find(|r| r.leader != hi) {
            let why = format!("rebalance: node {hi} holds {hc} replicas, node {lo} {lc}");
            return Some(Action::new(r, ReplicaChange::AddLearner(lo), why));
        }
    }
    for &(hi, _) in &busy {
        let first = movable(hi).into_iter().next();
        if let Some(a) = first.and_then(|r| {
            transfer(
                r,
                leaders,
                format!("rebalance: free range {} to leave node {hi}", r.range_id),
            )
        }) {
            return Some(a);
        }
    }
    None
}

/// A leadership move from the node leading the most ranges.
fn leader_move(
    ranges: &[RangeView],
    live: &BTreeSet<u64>,
    rf: usize,
    leaders: &Counts,
) -> Option<Action> {
    let ((hi, hc), (_, lc)) = extremes(leaders)?;
    if hc <= lc + 1 {
        return None;
    }
    for r in ranges
        .iter()
        .filter(|r| healthy(r, live, rf))
        .filter(|r| r.leader == hi)
    {
        let why = format!("rebalance leaders: node {hi} leads {hc} ranges");
        if let Some(a) = transfer(r, leaders, why) {
            if matches!(a.change, ReplicaChange::TransferLeader(to) if leaders.get(&to).copied().unwrap_or(0) + 1 < hc)
            {
                return Some(a);
            }
        }
    }
    None
}

/// One balancing step (see the module docs).
pub fn balance(ranges: &[RangeView], live: &BTreeSet<u64>, rf: usize) -> Option<Action> {
    if live.len() < 2 {
        return None;
    }
    let leaders = count(ranges, live, |r| vec![r.leader]);
    replica_move(ranges, live, rf, &leaders).or_else(|| leader_move(ranges, live, rf, &leaders))
}

/// Up to `max` balancing steps on distinct ranges, each planned as if the
/// previous ones had happened.
pub fn balance_many(
    ranges: &[RangeView],
    live: &BTreeSet<u64>,
    rf: usize,
    max: usize,
) -> Vec<Action> {
    let mut views = ranges.to_vec();
    let mut out = Vec::new();
    while out.len() < max {
        let Some(a) = balance(&views, live, rf) else {
            break;
        };
        if let Some(v) = views.iter_mut().find(|v| v.range_id == a.range_id) {
            match a.change {
                ReplicaChange::AddLearner(n) => v.learners.push(n),
                ReplicaChange::TransferLeader(n) => {
                    v.leader = n;
                    v.learners.push(0); // one step per range per round
                }
                _ => {}
            }
        }
        out.push(a);
    }
    out
}
