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
            Op::Write { key, .. } | Op::Read { key } => key,
            Op::Scan { .. } | Op::Split { .. } => continue,
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

/// The set: every acknowledged insert is in the final state; every key in the
/// final state was inserted by someone.
pub fn check_set(entries: &[Entry], final_keys: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut attempted = BTreeSet::new();
    for e in entries {
        if let Op::Write { key, .. } = &e.op {
            if key.starts_with(SET_PREFIX) {
                attempted.insert(key.clone());
                if e.outcome == Outcome::Written && !final_keys.contains(key) {
                    out.push(format!(
                        "lost write: insert of {key} was acknowledged at {}us but is gone",
                        e.complete_us
                    ));
                }
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

/// A scan must contain every insert acknowledged before it began, and only
/// keys whose insert began before it ended.
pub fn check_scans(entries: &[Entry]) -> Vec<String> {
    let inserts: Vec<&Entry> = entries
        .iter()
        .filter(|e| matches!(&e.op, Op::Write { key, .. } if key.starts_with(SET_PREFIX)))
        .collect();
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
            if i.outcome == Outcome::Written && i.complete_us < s.invoke_us && !seen.contains(key) {
                out.push(format!(
                    "stale scan by c{} at [{}..{}]us misses {key}, acknowledged at {}us",
                    s.client, s.invoke_us, s.complete_us, i.complete_us
                ));
                break;
            }
        }
        for k in keys {
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
