//! A linearizability checker for per-key read/write registers: Wing & Gong's
//! search with Lowe's memoization (the algorithm of Porcupine), on one key's
//! history at a time (P-compositionality: a history is linearizable iff each
//! key's sub-history is).
//!
//! Writes carry unique values; a delete writes "absent" (value 0). A write whose outcome is unknown may take
//! effect at any point after its invocation or never; it is modelled with an
//! infinite completion time, which the search may linearize last (= never
//! observed). Reads whose outcome is unknown carry no information and are
//! dropped. The search is bounded: past `max_steps` the verdict is `Unknown`,
//! never `Ok`.

use std::collections::HashSet;

use crate::history::{Entry, Op, Outcome};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Violation(String),
    /// The search bound was hit before a verdict.
    Unknown,
}

#[derive(Debug, Clone)]
struct RegOp {
    call: u64,
    ret: u64,
    write: Option<u32>,
    /// For reads: the value id observed (0 = absent).
    read: u32,
    desc: String,
}

/// Checks one key's operations.
pub fn check_key(key: &str, entries: &[&Entry], max_steps: u64) -> Verdict {
    // Value ids: 0 = absent, 1.. = distinct written values.
    let mut values: Vec<String> = Vec::new();
    let id_of = |v: &str, values: &mut Vec<String>| -> u32 {
        match values.iter().position(|x| x == v) {
            Some(i) => i as u32 + 1,
            None => {
                values.push(v.to_string());
                values.len() as u32
            }
        }
    };
    let mut ops = Vec::new();
    for e in entries {
        match (&e.op, &e.outcome) {
            (Op::Write { value, .. }, Outcome::Written) => ops.push(RegOp {
                call: e.invoke_us,
                ret: e.complete_us,
                write: Some(id_of(value, &mut values)),
                read: 0,
                desc: format!(
                    "c{} write {value} [{}..{}]us ok",
                    e.client, e.invoke_us, e.complete_us
                ),
            }),
            (Op::Write { value, .. }, Outcome::Unknown(_)) => ops.push(RegOp {
                call: e.invoke_us,
                ret: u64::MAX,
                write: Some(id_of(value, &mut values)),
                read: 0,
                desc: format!("c{} write {value} [{}..]us unknown", e.client, e.invoke_us),
            }),
            (Op::Delete { .. }, Outcome::Written) => ops.push(RegOp {
                call: e.invoke_us,
                ret: e.complete_us,
                write: Some(0),
                read: 0,
                desc: format!(
                    "c{} delete [{}..{}]us ok",
                    e.client, e.invoke_us, e.complete_us
                ),
            }),
            (Op::Delete { .. }, Outcome::Unknown(_)) => ops.push(RegOp {
                call: e.invoke_us,
                ret: u64::MAX,
                write: Some(0),
                read: 0,
                desc: format!("c{} delete [{}..]us unknown", e.client, e.invoke_us),
            }),
            (Op::Read { .. }, Outcome::Read(v)) => {
                let read = v.as_deref().map(|v| id_of(v, &mut values)).unwrap_or(0);
                ops.push(RegOp {
                    call: e.invoke_us,
                    ret: e.complete_us,
                    write: None,
                    read,
                    desc: format!(
                        "c{} read -> {:?} [{}..{}]us",
                        e.client, v, e.invoke_us, e.complete_us
                    ),
                });
            }
            _ => {}
        }
    }
    search(key, &ops, max_steps)
}

fn search(key: &str, ops: &[RegOp], max_steps: u64) -> Verdict {
    let n = ops.len();
    if n == 0 {
        return Verdict::Ok;
    }
    // Events: (time, is_return, op). Calls sort before returns at equal times.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.call, false, i));
        events.push((op.ret, true, i));
    }
    events.sort();
    let mut ret_pos = vec![0; n];
    for (pos, ev) in events.iter().enumerate() {
        if ev.1 {
            ret_pos[ev.2] = pos;
        }
    }
    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut removed = vec![false; events.len()];
    let mut state: u32 = 0;
    let mut stack: Vec<(usize, u32)> = Vec::new();
    let mut cache: HashSet<(Vec<u64>, u32)> = HashSet::new();
    let mut steps = 0u64;
    let next_live = |removed: &[bool], from: usize| (from..removed.len()).find(|&i| !removed[i]);
    let mut cur = next_live(&removed, 0);
    let mut deepest = 0usize;
    loop {
        steps += 1;
        if steps > max_steps {
            return Verdict::Unknown;
        }
        let Some(pos) = cur else { return Verdict::Ok };
        let (_, is_ret, i) = events[pos];
        if !is_ret {
            let op = &ops[i];
            let (ok, next_state) = match op.write {
                Some(v) => (true, v),
                None => (op.read == state, state),
            };
            if ok {
                linearized[i / 64] |= 1 << (i % 64);
                if cache.insert((linearized.clone(), next_state)) {
                    stack.push((pos, state));
                    deepest = deepest.max(stack.len());
                    state = next_state;
                    removed[pos] = true;
                    removed[ret_pos[i]] = true;
                    cur = next_live(&removed, 0);
                    continue;
                }
                linearized[i / 64] &= !(1 << (i % 64));
            }
            cur = next_live(&removed, pos + 1);
        } else {
            // An operation returned before we could linearize it: backtrack.
            let Some((call_pos, prev)) = stack.pop() else {
                return Verdict::Violation(report(key, ops, deepest, &values_of(ops)));
            };
            let j = events[call_pos].2;
            linearized[j / 64] &= !(1 << (j % 64));
            removed[call_pos] = false;
            removed[ret_pos[j]] = false;
            state = prev;
            cur = next_live(&removed, call_pos + 1);
        }
    }
}

fn values_of(_ops: &[RegOp]) -> Vec<String> {
    Vec::new()
}

/// A short explanation: a stale read (a read that returned a value although a
/// later write had completed before the read began), else the first ops.
fn report(key: &str, ops: &[RegOp], deepest: usize, _values: &[String]) -> String {
    for r in ops.iter().filter(|o| o.write.is_none()) {
        let source = ops.iter().find(|w| w.write == Some(r.read));
        if r.read != 0 && source.is_none() {
            return format!("key {key}: {} returned a value nobody wrote", r.desc);
        }
        if let Some(w1) = source {
            if w1.call > r.ret {
                return format!(
                    "key {key}: {} returned the value of a later write: {}",
                    r.desc, w1.desc
                );
            }
            let newer = ops
                .iter()
                .find(|w2| w2.write.is_some() && w2.call > w1.ret && w2.ret < r.call);
            if let Some(w2) = newer {
                return format!(
                    "key {key}: stale read: {}\n      returned the value of: {}\n      but this write completed after it and before the read began: {}",
                    r.desc, w1.desc, w2.desc
                );
            }
        } else if r.read == 0 {
            if let Some(w) = ops.iter().find(|w| w.write.is_some() && w.ret < r.call) {
                return format!(
                    "key {key}: stale read: {} found nothing, after {}",
                    r.desc, w.desc
                );
            }
        }
    }
    let mut sorted: Vec<&RegOp> = ops.iter().collect();
    sorted.sort_by_key(|o| o.call);
    let shown: Vec<String> = sorted
        .iter()
        .take(30)
        .map(|o| format!("    {}", o.desc))
        .collect();
    format!(
        "key {key}: no linearization of {} operations (longest valid prefix: {deepest}); first operations:\n{}{}",
        ops.len(),
        shown.join("\n"),
        if ops.len() > 30 { "\n    …" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(c: usize, v: &str, a: u64, b: Option<u64>) -> Entry {
        Entry {
            client: c,
            op: Op::Write {
                key: "k".into(),
                value: v.into(),
            },
            invoke_us: a,
            complete_us: b.unwrap_or(u64::MAX),
            outcome: if b.is_some() {
                Outcome::Written
            } else {
                Outcome::Unknown("timeout".into())
            },
        }
    }
    fn r(c: usize, v: Option<&str>, a: u64, b: u64) -> Entry {
        Entry {
            client: c,
            op: Op::Read { key: "k".into() },
            invoke_us: a,
            complete_us: b,
            outcome: Outcome::Read(v.map(str::to_string)),
        }
    }
    fn check(es: &[Entry]) -> Verdict {
        check_key("k", &es.iter().collect::<Vec<_>>(), 1_000_000)
    }

    #[test]
    fn sequential_history_is_linearizable() {
        assert_eq!(
            check(&[
                r(0, None, 0, 1),
                w(0, "a", 2, Some(3)),
                r(1, Some("a"), 4, 5)
            ]),
            Verdict::Ok
        );
    }

    #[test]
    fn stale_read_is_a_violation() {
        let v = check(&[
            w(0, "a", 0, Some(1)),
            w(0, "b", 2, Some(3)),
            r(1, Some("a"), 4, 5),
        ]);
        assert!(matches!(v, Verdict::Violation(_)), "{v:?}");
    }

    #[test]
    fn concurrent_ops_may_reorder() {
        // The read overlaps the write of b: either value is fine.
        assert_eq!(
            check(&[
                w(0, "a", 0, Some(1)),
                w(0, "b", 2, Some(6)),
                r(1, Some("a"), 3, 5)
            ]),
            Verdict::Ok
        );
        assert_eq!(
            check(&[
                w(0, "a", 0, Some(1)),
                w(0, "b", 2, Some(6)),
                r(1, Some("b"), 3, 5)
            ]),
            Verdict::Ok
        );
    }

    #[test]
    fn unknown_writes_may_or_may_not_happen() {
        assert_eq!(
            check(&[w(0, "a", 0, None), r(1, Some("a"), 5, 6)]),
            Verdict::Ok
        );
        assert_eq!(check(&[w(0, "a", 0, None), r(1, None, 5, 6)]), Verdict::Ok);
        // ...but not un-happen once observed.
        let v = check(&[w(0, "a", 0, None), r(1, Some("a"), 5, 6), r(1, None, 7, 8)]);
        assert!(matches!(v, Verdict::Violation(_)), "{v:?}");
    }

    #[test]
    fn a_value_never_written_is_a_violation() {
        let v = check(&[w(0, "a", 0, Some(1)), r(1, Some("zzz"), 2, 3)]);
        assert!(matches!(v, Verdict::Violation(_)), "{v:?}");
    }

    #[test]
    fn the_bound_gives_unknown_not_ok() {
        let mut es = Vec::new();
        for i in 0..40 {
            es.push(w(i, &format!("v{i}"), 0, Some(1000)));
        }
        es.push(r(99, Some("nope"), 2000, 2001));
        assert_eq!(
            check_key("k", &es.iter().collect::<Vec<_>>(), 50),
            Verdict::Unknown
        );
    }
}
