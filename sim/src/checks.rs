//! Checkers over a finished run: per-key linearizability of the registers,
//! the insert-only set (no acknowledged insert lost, nothing unwritten
//! appears), scan consistency, and Raft safety from the server's hooks (at
//! most one leader per term; an applied index never changes its entry).
//! Each returns human-readable violations; empty means it passed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use rangedb::chaos::RaftEvent;

use crate::history::{Entry, Op, Outcome};
use crate::linearizability::{check_key, Verdict};
use crate::workload::{REGISTER_PREFIX, SET_PREFIX};

/// Search bound per key (steps of the Wing–Gong search).
pub const LINEARIZABILITY_MAX_STEPS: u64 = 2_000_000;

#[derive(Debug, Default, Clone)]
pub struct RegisterReport {
    pub keys: usize,
    pub ops: usize,
    /// Keys whose search hit the bound (not verified, not failed).
    pub unknown: Vec<String>,
    pub violations: Vec<String>,
}

pub fn check_registers(entries: &[Entry]) -> RegisterReport {
    let mut by_key: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
    for e in entries {
        let key = match &e.op {
            Op::Write { key, .. } | Op::Read { key } | Op::Delete { key } => key,
            Op::Scan { .. } | Op::Split { .. } | Op::Timestamps { .. } => continue,
        };
        if key.starts_with(REGISTER_PREFIX) {
            by_key.entry(key).or_default().push(e);
        }
    }
    let mut report = RegisterReport {
        keys: by_key.len(),
        ..Default::default()
    };
    for (key, es) in by_key {
        report.ops += es.len();
        match check_key(key, &es, LINEARIZABILITY_MAX_STEPS) {
            Verdict::Ok => {}
            Verdict::Unknown => report.unknown.push(key.to_string()),
            Verdict::Violation(v) => report.violations.push(format!("linearizability: {v}")),
        }
    }
    report
}

/// Removals of set members: key -> (removal entries).
fn removals(entries: &[Entry]) -> BTreeMap<&str, Vec<&Entry>> {
    let mut m: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
    for e in entries {
        if let Op::Delete { key } = &e.op {
            if key.starts_with(SET_PREFIX) {
                m.entry(key).or_default().push(e);
            }
        }
    }
    m
}

/// The set (members are inserted once, and may be removed once after their
/// insert was acknowledged): every acknowledged insert is in the final state
/// unless a removal of it was tried; no acknowledged removal is undone;
/// every key in the final state was inserted by someone.
pub fn check_set(entries: &[Entry], final_keys: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut attempted = BTreeSet::new();
    let removed = removals(entries);
    for e in entries {
        if let Op::Write { key, .. } = &e.op {
            if key.starts_with(SET_PREFIX) {
                attempted.insert(key.clone());
                let removal_tried = removed
                    .get(key.as_str())
                    .is_some_and(|r| r.iter().any(|d| !matches!(d.outcome, Outcome::Failed(_))));
                if e.outcome == Outcome::Written && !removal_tried && !final_keys.contains(key) {
                    out.push(format!(
                        "lost write: insert of {key} was acknowledged at {}us but is gone",
                        e.complete_us
                    ));
                }
            }
        }
    }
    for (key, rs) in &removed {
        if let Some(d) = rs.iter().find(|d| d.outcome == Outcome::Written) {
            if final_keys.contains(*key) {
                out.push(format!(
                    "resurrected: removal of {key} was acknowledged at {}us but it is back",
                    d.complete_us
                ));
            }
        }
    }
    for k in final_keys.iter().filter(|k| k.starts_with(SET_PREFIX)) {
        if !attempted.contains(k) {
            out.push(format!("phantom: {k} is present but nobody inserted it"));
        }
    }
    out
}

/// A scan must contain every insert acknowledged before it began (unless a
/// removal of it began before the scan ended), no key whose removal was
/// acknowledged before it began, and only keys whose insert began before it
/// ended.
pub fn check_scans(entries: &[Entry]) -> Vec<String> {
    let inserts: Vec<&Entry> = entries
        .iter()
        .filter(|e| matches!(&e.op, Op::Write { key, .. } if key.starts_with(SET_PREFIX)))
        .collect();
    let removed = removals(entries);
    let mut out = Vec::new();
    for s in entries {
        let Outcome::Scanned(keys) = &s.outcome else {
            continue;
        };
        let seen: BTreeSet<&String> = keys.iter().collect();
        for i in &inserts {
            let Op::Write { key, .. } = &i.op else {
                continue;
            };
            let removing = removed.get(key.as_str()).is_some_and(|r| {
                r.iter().any(|d| {
                    !matches!(d.outcome, Outcome::Failed(_)) && d.invoke_us < s.complete_us
                })
            });
            if i.outcome == Outcome::Written
                && i.complete_us < s.invoke_us
                && !removing
                && !seen.contains(key)
            {
                out.push(format!(
                    "stale scan by c{} at [{}..{}]us misses {key}, acknowledged at {}us",
                    s.client, s.invoke_us, s.complete_us, i.complete_us
                ));
                break;
            }
        }
        for k in keys {
            let gone = removed.get(k.as_str()).and_then(|r| {
                r.iter()
                    .find(|d| d.outcome == Outcome::Written && d.complete_us < s.invoke_us)
            });
            if let Some(d) = gone {
                out.push(format!(
                    "scan by c{} at [{}..{}]us returned {k}, whose removal was acknowledged at {}us",
                    s.client, s.invoke_us, s.complete_us, d.complete_us
                ));
                break;
            }
            let began = inserts.iter().any(|i| {
                matches!(&i.op, Op::Write { key, .. } if key == k) && i.invoke_us < s.complete_us
            });
            if !began {
                out.push(format!(
                    "scan by c{} at [{}..{}]us returned {k} before anyone inserted it",
                    s.client, s.invoke_us, s.complete_us
                ));
                break;
            }
        }
    }
    out.truncate(10);
    out
}

/// Collects Raft events from the server hooks and checks safety on the fly.
#[derive(Clone, Default)]
pub struct RaftSafety {
    inner: Arc<Mutex<SafetyState>>,
}

#[derive(Default)]
struct SafetyState {
    leaders: BTreeMap<(u64, u64), u64>,
    applied: BTreeMap<(u64, u64), (u64, u64, u64)>,
    /// (range, voter) -> the last (term, candidate) it granted.
    votes: BTreeMap<(u64, u64), (u64, u64)>,
    violations: Vec<String>,
    events: u64,
    /// The cluster's replication factor, for the membership check.
    rf: usize,
}

impl RaftSafety {
    pub fn new(rf: usize) -> RaftSafety {
        let s = RaftSafety::default();
        s.inner.lock().unwrap().rf = rf;
        s
    }

    pub fn observe(&self, e: RaftEvent) {
        let mut st = self.inner.lock().unwrap();
        st.events += 1;
        match e {
            RaftEvent::BecameLeader {
                range_id,
                term,
                node_id,
            } => {
                if let Some(&other) = st.leaders.get(&(range_id, term)) {
                    if other != node_id {
                        st.violations.push(format!(
                            "raft safety: two leaders in range {range_id} term {term}: nodes {other} and {node_id}"
                        ));
                    }
                } else {
                    st.leaders.insert((range_id, term), node_id);
                }
            }
            RaftEvent::VoteGranted {
                range_id,
                node_id,
                term,
                candidate,
            } => {
                if let Some(&(t, c)) = st.votes.get(&(range_id, node_id)) {
                    if t == term && c != candidate {
                        st.violations.push(format!(
                            "raft safety: node {node_id} voted twice in range {range_id} term {term}: for {c} and for {candidate}"
                        ));
                    }
                }
                st.votes.insert((range_id, node_id), (term, candidate));
            }
            RaftEvent::Recovered {
                range_id,
                node_id,
                term,
                vote,
            } => {
                if let Some(&(t, c)) = st.votes.get(&(range_id, node_id)) {
                    if term < t || (term == t && vote != c) {
                        st.violations.push(format!(
                            "durability: node {node_id} restarted with term {term} vote {vote} in range {range_id}, \
                             but before the crash it had granted its vote in term {t} to node {c}"
                        ));
                    }
                }
            }
            // Repair adds and promotes the replacement before it removes:
            // a removal never leaves fewer voters than the replication
            // factor (or than there were).
            RaftEvent::MembershipApplied {
                range_id,
                node_id,
                voters_before,
                voters_after,
            } => {
                let floor = st.rf.min(voters_before.len());
                let removed = voters_before.iter().any(|v| !voters_after.contains(v));
                if removed && voters_after.len() < floor {
                    let rf = st.rf;
                    st.violations.push(format!(
                        "repair: range {range_id} went from voters {voters_before:?} to {voters_after:?} (seen on node {node_id}): a voter was removed before its replacement caught up and was promoted, leaving fewer than replication_factor {rf} voters"
                    ));
                }
            }
            RaftEvent::Applied {
                range_id,
                node_id,
                index,
                term,
                hash,
            } => match st.applied.get(&(range_id, index)) {
                Some(&(t, h, first)) if (t, h) != (term, hash) => {
                    st.violations.push(format!(
                        "raft safety: range {range_id} index {index} applied as term {t} on node {first} \
                         but as term {term} (different entry) on node {node_id}"
                    ));
                }
                Some(_) => {}
                None => {
                    st.applied.insert((range_id, index), (term, hash, node_id));
                }
            },
        }
    }

    pub fn violations(&self) -> Vec<String> {
        let mut v = self.inner.lock().unwrap().violations.clone();
        v.truncate(10);
        v
    }

    pub fn events(&self) -> u64 {
        self.inner.lock().unwrap().events
    }
}

/// The timestamp oracle: no timestamp is handed out twice, and timestamps
/// follow real time — an allocation that completed before another began
/// gave only smaller timestamps (what strict serializability rests on).
/// Returns (violations, timestamps checked).
pub fn check_timestamps(entries: &[Entry]) -> (Vec<String>, u64) {
    // (invoke, complete, first, last, client)
    let mut got: Vec<(u64, u64, u64, u64, usize)> = entries
        .iter()
        .filter_map(|e| match e.outcome {
            Outcome::Timestamps { first, count } if count > 0 => Some((
                e.invoke_us,
                e.complete_us,
                first,
                first.saturating_add(count - 1),
                e.client,
            )),
            _ => None,
        })
        .collect();
    let total = got.iter().map(|g| g.3 - g.2 + 1).sum();
    let mut out = Vec::new();
    // Uniqueness: sorted by first timestamp, no batch overlaps the previous.
    let mut by_ts = got.clone();
    by_ts.sort_by_key(|g| (g.2, g.3));
    for w in by_ts.windows(2) {
        if w[1].2 <= w[0].3 {
            out.push(format!(
                "oracle: timestamp {} handed out twice: to c{} at [{}..{}]us (batch {}..={}) and to c{} at [{}..{}]us (batch {}..={})",
                w[1].2, w[0].4, w[0].0, w[0].1, w[0].2, w[0].3, w[1].4, w[1].0, w[1].1, w[1].2, w[1].3
            ));
            break;
        }
    }
    // Real time: sweep by invoke time, keeping the largest timestamp of
    // every allocation that completed before it.
    got.sort_by_key(|g| g.0);
    let mut completed: Vec<(u64, u64, usize, u64)> =
        got.iter().map(|g| (g.1, g.3, g.4, g.0)).collect();
    completed.sort_by_key(|c| c.0);
    let mut best: Option<(u64, u64, usize, u64)> = None;
    let mut i = 0;
    for g in &got {
        while i < completed.len() && completed[i].0 < g.0 {
            if best.is_none_or(|b| completed[i].1 > b.1) {
                best = Some(completed[i]);
            }
            i += 1;
        }
        if let Some((done, last, client, began)) = best {
            if g.2 <= last {
                out.push(format!(
                    "oracle: went back in real time: c{client} got up to {last} at [{began}..{done}]us, \
                     then c{} asked at {}us and got {} (batch {}..={})",
                    g.4, g.0, g.2, g.2, g.3
                ));
                break;
            }
        }
    }
    (out, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(client: usize, invoke_us: u64, complete_us: u64, first: u64, count: u64) -> Entry {
        Entry {
            client,
            op: Op::Timestamps { count },
            invoke_us,
            complete_us,
            outcome: Outcome::Timestamps { first, count },
        }
    }

    #[test]
    fn the_timestamp_checker_passes_increasing_and_concurrent_batches() {
        // Concurrent requests may be served in either order.
        let h = [
            ts(0, 0, 10, 100, 2),
            ts(1, 5, 20, 50, 1),
            ts(0, 30, 40, 200, 7),
        ];
        assert_eq!(check_timestamps(&h), (vec![], 10));
    }

    #[test]
    fn the_timestamp_checker_catches_reuse_and_going_back() {
        let dup = [ts(0, 0, 10, 100, 5), ts(1, 3, 8, 104, 1)];
        let (v, _) = check_timestamps(&dup);
        assert!(v[0].contains("handed out twice"), "{v:?}");
        let back = [ts(0, 0, 10, 100, 1), ts(1, 11, 12, 90, 1)];
        let (v, _) = check_timestamps(&back);
        assert!(v[0].contains("went back in real time"), "{v:?}");
    }
}
