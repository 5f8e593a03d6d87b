//! The placement driver's decisions, as pure functions over what the
//! leaders of all ranges report (`RangeView`). The driver loop itself —
//! which node runs it, probing nodes, carrying out actions — lives at the
//! server edge (`server::placement_loop`), so this module does no IO.
//!
//! Repair (`plan`), one membership change at a time per range:
//! 1. a learner that caught up with its leader is promoted; a dead learner
//!    is removed;
//! 2. a range with a dead voter gets a replacement learner on the live node
//!    holding the fewest replicas — and only after that replacement has been
//!    promoted is the dead voter removed (never remove first);
//! 3. a range with fewer voters than `replication_factor` gets a learner;
//!    one with more loses its replica on the most loaded node.
//!
//! Ranges with the fewest live voters go first. A range that cannot reach
//! `replication_factor` (too few nodes) is reported by `blocked` and
//! up-replicated as soon as nodes join.
//!
//! When nothing needs repair it balances replicas and leaders (`balance`)
//! and merges small cold neighbours (`merge`). It also runs the timestamp
//! oracle (`tso`: the allocation rule; the server persists its mark).

use std::collections::{BTreeMap, BTreeSet};

pub mod balance;
pub mod merge;
pub mod tso;

pub use balance::{balance, balance_many};

use crate::api::ReplicaChange;
use crate::chaos::{self, Canary};

/// Balancing steps (replica or leader moves) per round.
pub const BALANCE_STEPS_PER_ROUND: usize = 32;
/// Repair actions per round.
pub const REPAIRS_PER_ROUND: usize = 8;
/// A learner this close to the leader's last index (in entries) is caught up.
const CATCH_UP_SLACK_ENTRIES: u64 = 10;

/// What the PD knows about one range (from its leader).
#[derive(Debug, Clone)]
pub struct RangeView {
    pub range_id: u64,
    pub start_key: Vec<u8>,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub leader: u64,
    pub last_index: u64,
    /// peer -> matched index
    pub matched: BTreeMap<u64, u64>,
    pub conf_ver: u64,
    pub end_key: Vec<u8>,
    pub version: u64,
    pub frozen: bool,
    pub sticky: bool,
    pub approx_bytes: u64,
    pub qps: u64,
}

impl RangeView {
    /// A leader's view of its range (followers report nothing).
    pub fn from_status(r: &crate::range::ReplicaStatus) -> Option<RangeView> {
        r.is_leader.then(|| RangeView {
            range_id: r.range_id,
            start_key: r.descriptor.start_key.clone(),
            voters: r.voters.clone(),
            learners: r.learners.clone(),
            leader: r.leader_id,
            last_index: r.last_index,
            matched: r.progress.iter().copied().collect(),
            conf_ver: r.descriptor.conf_ver,
            end_key: r.descriptor.end_key.clone(),
            version: r.descriptor.version,
            frozen: r.descriptor.frozen,
            sticky: r.descriptor.sticky,
            approx_bytes: r.approx_bytes,
            qps: r.qps,
        })
    }
}

/// One decided action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub range_id: u64,
    /// The range's start (internal data key).
    pub start_key: Vec<u8>,
    /// The membership epoch this decision was based on.
    pub conf_ver: u64,
    pub change: ReplicaChange,
    pub why: String,
}

impl Action {
    pub fn new(r: &RangeView, change: ReplicaChange, why: String) -> Action {
        Action {
            range_id: r.range_id,
            start_key: r.start_key.clone(),
            conf_ver: r.conf_ver,
            change,
            why,
        }
    }
}

/// How many ranges lack replicas (`underreplicated`: fewer live voters
/// than the replication factor) or a quorum (`unavailable`: fewer live
/// voters than a majority of the voters).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplicationHealth {
    pub underreplicated: usize,
    pub unavailable: usize,
}

/// `ReplicationHealth` of the ranges the PD sees (those with a leader).
pub fn replication_health(
    ranges: &[RangeView],
    live: &BTreeSet<u64>,
    rf: usize,
) -> ReplicationHealth {
    let mut h = ReplicationHealth::default();
    for r in ranges {
        let live_voters = r.voters.iter().filter(|v| live.contains(v)).count();
        if live_voters < rf {
            h.underreplicated += 1;
        }
        if live_voters < r.voters.len() / 2 + 1 {
            h.unavailable += 1;
        }
    }
    h
}

/// Repairs that cannot proceed, and why (shown by `admin cluster status`).
pub fn blocked(
    ranges: &[RangeView],
    live: &BTreeSet<u64>,
    dead: &BTreeSet<u64>,
    rf: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    for r in ranges {
        let members: BTreeSet<u64> = r.voters.iter().chain(r.learners.iter()).copied().collect();
        let spare = live.iter().any(|n| !members.contains(n));
        let live_voters = r.voters.iter().filter(|v| !dead.contains(v)).count();
        if live_voters < rf && !spare && r.learners.is_empty() {
            out.push(format!(
                "range {}: {live_voters} live voters < replication_factor {rf}, and no live node without a replica \
                 can take one (live nodes: {})",
                r.range_id,
                live.len()
            ));
        }
    }
    out
}

/// Decides this round's membership changes (pure; deterministic order).
/// `dead` holds nodes whose replicas must be replaced (dead or being
/// decommissioned); `live` the nodes that may receive replicas.
pub fn plan(
    ranges: &[RangeView],
    live: &BTreeSet<u64>,
    dead: &BTreeSet<u64>,
    rf: usize,
    max_actions: usize,
) -> Vec<Action> {
    let mut load: BTreeMap<u64, usize> = live.iter().map(|n| (*n, 0)).collect();
    for r in ranges {
        for n in r.voters.iter().chain(r.learners.iter()) {
            if let Some(c) = load.get_mut(n) {
                *c += 1;
            }
        }
    }
    let mut order: Vec<&RangeView> = ranges.iter().collect();
    order.sort_by_key(|r| {
        (
            r.voters.iter().filter(|v| live.contains(v)).count(),
            r.range_id,
        )
    });
    let mut out = Vec::new();
    for r in order {
        if out.len() >= max_actions {
            break;
        }
        if let Some(a) = plan_range(r, dead, rf, &mut load) {
            out.push(a);
        }
    }
    out
}

/// The next repair step of one range; `load` counts replicas per live node
/// (a chosen target counts one more).
fn plan_range(
    r: &RangeView,
    dead: &BTreeSet<u64>,
    rf: usize,
    load: &mut BTreeMap<u64, usize>,
) -> Option<Action> {
    let act = |change, why: String| Some(Action::new(r, change, why));
    if let Some(&l) = r.learners.iter().find(|l| dead.contains(l)) {
        return act(ReplicaChange::Remove(l), format!("learner {l} is dead"));
    }
    if let Some(&l) = r.learners.first() {
        if chaos::canary(Canary::RepairRemovesEarly) {
            if let Some(&d) = r.voters.iter().find(|v| dead.contains(v)) {
                let why = format!("voter {d} is dead (canary: learner {l} not caught up)");
                return act(ReplicaChange::Remove(d), why);
            }
        }
        let matched = r.matched.get(&l).copied().unwrap_or(0);
        if matched + CATCH_UP_SLACK_ENTRIES >= r.last_index && matched > 0 {
            let why = format!("learner {l} caught up ({matched}/{})", r.last_index);
            return act(ReplicaChange::Promote(l), why);
        }
        return None; // wait for the learner
    }
    let members: BTreeSet<u64> = r.voters.iter().chain(r.learners.iter()).copied().collect();
    let dead_voters: Vec<u64> = r
        .voters
        .iter()
        .copied()
        .filter(|v| dead.contains(v))
        .collect();
    let mut add = |why: String| {
        let t = load
            .iter()
            .filter(|(n, _)| !members.contains(n))
            .min_by_key(|(n, c)| (**c, **n))
            .map(|(n, _)| *n)?;
        *load.entry(t).or_insert(0) += 1;
        act(ReplicaChange::AddLearner(t), why)
    };
    let live_voters = r.voters.len() - dead_voters.len();
    if let Some(&d) = dead_voters.first() {
        if live_voters >= rf {
            let why = format!("voter {d} is dead and a replacement is in place");
            return act(ReplicaChange::Remove(d), why);
        }
        return add(format!("replacing dead voter {d}"));
    }
    if r.voters.len() < rf {
        return add(format!(
            "{} voters < replication_factor {rf}",
            r.voters.len()
        ));
    }
    if r.voters.len() > rf {
        let victim = r
            .voters
            .iter()
            .copied()
            .filter(|v| *v != r.leader)
            .max_by_key(|v| (load.get(v).copied().unwrap_or(0), *v))?;
        let why = format!("{} voters > replication_factor {rf}", r.voters.len());
        return act(ReplicaChange::Remove(victim), why);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: u64, voters: &[u64], learners: &[u64], matched: &[(u64, u64)]) -> RangeView {
        RangeView {
            range_id: id,
            start_key: vec![id as u8],
            voters: voters.to_vec(),
            learners: learners.to_vec(),
            leader: voters[0],
            last_index: 100,
            matched: matched.iter().copied().collect(),
            conf_ver: 1,
            end_key: vec![id as u8 + 1],
            version: 1,
            frozen: false,
            sticky: false,
            approx_bytes: 0,
            qps: 0,
        }
    }
    fn set(v: &[u64]) -> BTreeSet<u64> {
        v.iter().copied().collect()
    }

    #[test]
    fn a_dead_voter_is_replaced_before_it_is_removed() {
        let live = set(&[1, 2, 4]);
        let dead = set(&[3]);
        let a = plan(&[view(7, &[1, 2, 3], &[], &[])], &live, &dead, 3, 8);
        assert_eq!(a[0].change, ReplicaChange::AddLearner(4), "{a:?}");
        // The learner has not caught up: wait, remove nothing.
        assert!(plan(&[view(7, &[1, 2, 3], &[4], &[(4, 20)])], &live, &dead, 3, 8).is_empty());
        let a = plan(
            &[view(7, &[1, 2, 3], &[4], &[(4, 100)])],
            &live,
            &dead,
            3,
            8,
        );
        assert_eq!(a[0].change, ReplicaChange::Promote(4));
        let a = plan(&[view(7, &[1, 2, 3, 4], &[], &[])], &live, &dead, 3, 8);
        assert_eq!(a[0].change, ReplicaChange::Remove(3));
        assert!(
            plan(&[view(7, &[1, 2, 4], &[], &[])], &live, &dead, 3, 8).is_empty(),
            "done"
        );
    }

    #[test]
    fn replication_factor_up_and_down() {
        let live = set(&[1, 2, 3, 4, 5]);
        let a = plan(&[view(1, &[1, 2, 3], &[], &[])], &live, &set(&[]), 5, 8);
        assert_eq!(a[0].change, ReplicaChange::AddLearner(4));
        let a = plan(
            &[view(1, &[1, 2, 3, 4, 5], &[], &[])],
            &live,
            &set(&[]),
            3,
            8,
        );
        assert!(
            matches!(a[0].change, ReplicaChange::Remove(n) if n != 1),
            "never the leader: {a:?}"
        );
    }

    #[test]
    fn balance_moves_replicas_then_leaders() {
        let live = set(&[1, 2, 3, 4]);
        // Node 4 is empty: a replica moves there from the busiest non-leader node.
        let ranges: Vec<RangeView> = (1..=4).map(|i| view(i, &[1, 2, 3], &[], &[])).collect();
        let a = balance(&ranges, &live, 3).expect("a move");
        assert_eq!(a.change, ReplicaChange::AddLearner(4));
        // Balanced replicas, but node 1 leads everything: hand one leadership off.
        let ranges = vec![
            view(1, &[1, 2, 3], &[], &[]),
            view(2, &[1, 2, 4], &[], &[]),
            view(3, &[1, 3, 4], &[], &[]),
            view(4, &[1, 2, 4], &[], &[]),
        ];
        let a = balance(&ranges, &set(&[1, 2, 3, 4]), 3).expect("a leader move");
        assert!(
            matches!(a.change, ReplicaChange::TransferLeader(n) if n != 1),
            "{a:?}"
        );
        // Within one of each other: nothing to do.
        let ranges = vec![
            view(1, &[1, 2, 3], &[], &[]),
            view(2, &[4, 2, 3], &[], &[]),
            view(3, &[2, 1, 4], &[], &[]),
            view(4, &[3, 4, 1], &[], &[]),
        ];
        assert_eq!(balance(&ranges, &set(&[1, 2, 3, 4]), 3), None);
    }

    #[test]
    fn fewest_live_voters_first_and_bounded() {
        let live = set(&[1, 4, 5]);
        let dead = set(&[2, 3]);
        let ranges = [view(1, &[1, 2, 4], &[], &[]), view(2, &[1, 2, 3], &[], &[])];
        let a = plan(&ranges, &live, &dead, 3, 1);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].range_id, 2, "the range with one live voter goes first");
    }
}
