//! The list-append checker's tests: valid histories pass, each anomaly
//! kind is found with its cycle.

use super::AnomalyKind::*;
use super::*;

fn ap(k: &str, v: u64) -> Mop {
    Mop::Append {
        key: k.into(),
        value: v,
    }
}
fn rd(k: &str, l: &[u64]) -> Mop {
    Mop::Read {
        key: k.into(),
        value: Some(l.to_vec()),
    }
}
fn t(invoke_us: u64, complete_us: u64, mops: Vec<Mop>) -> Txn {
    Txn {
        client: 0,
        invoke_us,
        complete_us,
        mops,
        outcome: TxnOutcome::Committed,
    }
}
fn with(outcome: TxnOutcome, txn: Txn) -> Txn {
    Txn { outcome, ..txn }
}
/// Distinct anomaly kinds found (empty if Ok).
fn kinds(h: &[Txn]) -> Vec<AnomalyKind> {
    let mut k: Vec<_> = check(h)
        .err()
        .unwrap_or_default()
        .into_iter()
        .map(|a| a.kind)
        .collect();
    k.dedup();
    k
}
/// The sorted cycle of the first anomaly of `kind`.
fn cycle(h: &[Txn], kind: AnomalyKind) -> Vec<usize> {
    let all = check(h).expect_err("expected anomalies");
    let a = all.iter().find(|a| a.kind == kind).expect("kind missing");
    assert!(
        a.explanation.starts_with(&format!("T{}", a.cycle[0])),
        "{a}"
    );
    let mut c = a.cycle.clone();
    c.sort_unstable();
    c
}

#[test]
fn clean_serial_history() {
    let h = [
        t(0, 5, vec![ap("x", 1)]),
        t(10, 15, vec![rd("x", &[1]), ap("y", 1)]),
        t(20, 25, vec![rd("x", &[1]), rd("y", &[1])]),
    ];
    assert_eq!(
        check(&h).unwrap(),
        Stats {
            txns: 3,
            committed: 3,
            edges: 3,
            keys: 2
        }
    );
}

#[test]
fn concurrent_but_serializable() {
    // Serial order T1, T0, T2, T3; T0..T2 overlap in real time.
    let h = [
        t(0, 100, vec![ap("x", 1)]),
        t(0, 100, vec![rd("x", &[]), ap("y", 1), rd("y", &[1])]),
        t(0, 100, vec![rd("y", &[1]), rd("x", &[1])]),
        t(200, 300, vec![rd("x", &[1]), rd("y", &[1])]),
    ];
    assert!(check(&h).is_ok(), "{:?}", check(&h));
}

#[test]
fn g0_write_cycle() {
    let h = [
        t(0, 100, vec![ap("x", 1), ap("y", 1)]),
        t(0, 100, vec![ap("x", 2), ap("y", 2)]),
        t(200, 300, vec![rd("x", &[1, 2]), rd("y", &[2, 1])]),
    ];
    assert_eq!(kinds(&h), vec![G0]);
    assert_eq!(cycle(&h, G0), vec![0, 1]);
}

#[test]
fn g1a_aborted_read() {
    let h = [
        with(TxnOutcome::Aborted, t(0, 5, vec![ap("x", 1)])),
        t(10, 15, vec![rd("x", &[1])]),
    ];
    assert_eq!(kinds(&h), vec![G1a]);
}

#[test]
fn g1b_intermediate_read() {
    let h = [
        t(0, 5, vec![ap("x", 1), ap("x", 2)]),
        t(0, 15, vec![rd("x", &[1])]),
    ];
    assert_eq!(kinds(&h), vec![G1b]);
}

#[test]
fn g1c_circular_information_flow() {
    let h = [
        t(0, 100, vec![ap("x", 1), rd("y", &[1])]),
        t(0, 100, vec![ap("y", 1), rd("x", &[1])]),
    ];
    assert_eq!(kinds(&h), vec![G1c]);
    assert_eq!(cycle(&h, G1c), vec![0, 1]);
}

#[test]
fn g_single_read_skew() {
    let h = [
        t(0, 100, vec![ap("x", 1), ap("y", 1)]),
        t(0, 100, vec![rd("x", &[]), rd("y", &[1])]),
        t(200, 300, vec![rd("x", &[1])]),
    ];
    assert_eq!(kinds(&h), vec![GSingle]);
    let a = &check(&h).unwrap_err()[0];
    assert_eq!(
        a.explanation,
        "T0 -wr(y: 1)-> T1 -rw(x: read [] before 1)-> T0"
    );
}

#[test]
fn g_single_lost_update() {
    // Both read x = [1] and append; T2's read puts T0's append first.
    let h = [
        t(0, 5, vec![ap("x", 1)]),
        t(10, 100, vec![rd("x", &[1]), ap("x", 2)]),
        t(10, 100, vec![rd("x", &[1]), ap("x", 3)]),
        t(200, 300, vec![rd("x", &[1, 2, 3])]),
    ];
    assert_eq!(kinds(&h), vec![GSingle]);
    assert_eq!(cycle(&h, GSingle), vec![1, 2]);
}

#[test]
fn g2_item_write_skew() {
    let h = [
        t(0, 100, vec![rd("x", &[]), rd("y", &[]), ap("x", 1)]),
        t(0, 100, vec![rd("x", &[]), rd("y", &[]), ap("y", 1)]),
        t(200, 300, vec![rd("x", &[1]), rd("y", &[1])]),
    ];
    assert_eq!(kinds(&h), vec![G2Item]);
    assert_eq!(cycle(&h, G2Item), vec![0, 1]);
}

#[test]
fn least_bad_cycle_is_reported() {
    // One SCC {T0, T1, T2} holding write skew (T0, T1) and read skew (T0, T2): G-single wins,
    // although a shortest-cycle search from T0 would find the write skew first.
    let skew = [
        t(
            0,
            100,
            vec![rd("x", &[]), rd("y", &[]), ap("x", 1), ap("z", 1)],
        ),
        t(0, 100, vec![rd("x", &[]), rd("y", &[]), ap("y", 1)]),
        t(0, 100, vec![rd("x", &[]), rd("z", &[1])]),
        t(200, 300, vec![rd("x", &[1]), rd("y", &[1])]),
    ];
    assert_eq!(kinds(&skew), vec![GSingle]);
    assert_eq!(cycle(&skew, GSingle), vec![0, 2]);
    // Write skew (T0, T2) plus G0-realtime (T0 -rt-> T1 -ww(w)-> T0), which a search from T0
    // would find first: cycles without rt edges come first.
    let rt = [
        t(
            0,
            100,
            vec![rd("x", &[]), rd("y", &[]), ap("x", 1), ap("w", 1)],
        ),
        t(200, 210, vec![ap("w", 2)]),
        t(0, 100, vec![rd("x", &[]), rd("y", &[]), ap("y", 1)]),
        t(
            300,
            310,
            vec![rd("x", &[1]), rd("y", &[1]), rd("w", &[2, 1])],
        ),
    ];
    assert_eq!(kinds(&rt), vec![G2Item]);
    assert_eq!(cycle(&rt, G2Item), vec![0, 2]);
}

#[test]
fn g0_realtime() {
    let h = [
        t(0, 10, vec![ap("x", 1)]),
        t(20, 30, vec![ap("x", 2)]),
        t(40, 50, vec![rd("x", &[2, 1])]),
    ];
    assert_eq!(kinds(&h), vec![G0Realtime]);
}

#[test]
fn g1c_realtime_future_read() {
    let h = [t(0, 10, vec![rd("y", &[1])]), t(20, 30, vec![ap("y", 1)])];
    assert_eq!(kinds(&h), vec![G1cRealtime]);
}

#[test]
fn g_single_realtime_stale_read() {
    let stale = |read_invoke| {
        [
            t(0, 10, vec![ap("x", 1)]),
            t(read_invoke, 30, vec![rd("x", &[])]),
            t(40, 50, vec![rd("x", &[1])]),
        ]
    };
    assert_eq!(kinds(&stale(20)), vec![GSingleRealtime]);
    assert_eq!(cycle(&stale(20), GSingleRealtime), vec![0, 1]);
    // Overlapping the append, the empty read is fine (serializable and strict).
    assert!(check(&stale(5)).is_ok());
    // Equal times are not real-time ordered.
    assert!(check(&stale(10)).is_ok());
}

#[test]
fn g2_item_realtime() {
    // T0 -rt-> T1 -rw(x)-> T2 -rw(y)-> T0, with T2 concurrent to both.
    let h = [
        t(0, 10, vec![ap("y", 1)]),
        t(20, 30, vec![rd("x", &[])]),
        t(0, 100, vec![rd("y", &[]), ap("x", 1)]),
        t(200, 300, vec![rd("x", &[1]), rd("y", &[1])]),
    ];
    assert_eq!(kinds(&h), vec![G2ItemRealtime]);
    assert_eq!(cycle(&h, G2ItemRealtime), vec![0, 1, 2]);
}

#[test]
fn incompatible_observations() {
    let cases: [Vec<Txn>; 5] = [
        // Not prefixes of each other.
        vec![
            t(0, 9, vec![ap("x", 1)]),
            t(0, 9, vec![ap("x", 2)]),
            t(10, 19, vec![rd("x", &[1, 2])]),
            t(10, 19, vec![rd("x", &[2])]),
        ],
        // Duplicate in a list.
        vec![t(0, 9, vec![ap("x", 1)]), t(10, 19, vec![rd("x", &[1, 1])])],
        // A value nobody appended.
        vec![t(0, 9, vec![ap("x", 1)]), t(10, 19, vec![rd("x", &[1, 7])])],
        // Internal: a txn does not see its own append, or its reads disagree.
        vec![
            t(0, 9, vec![ap("x", 1), rd("x", &[])]),
            t(0, 9, vec![ap("y", 2)]),
            t(10, 19, vec![rd("y", &[2]), ap("y", 1), rd("y", &[2])]),
        ],
        // The same value appended twice.
        vec![t(0, 9, vec![ap("x", 1)]), t(10, 19, vec![ap("x", 1)])],
    ];
    for (i, h) in cases.iter().enumerate() {
        assert_eq!(kinds(h), vec![Incompatible], "case {i}: {:?}", check(h));
    }
}

#[test]
fn unknown_txn_observed_is_committed() {
    let unknown = |mops| with(TxnOutcome::Unknown, t(0, u64::MAX, mops));
    // T0's outcome is unknown but T2 saw it: a node. T1 was never seen: ignored.
    let ok = [
        unknown(vec![ap("x", 1)]),
        unknown(vec![ap("x", 2)]),
        t(10, 20, vec![rd("x", &[1])]),
    ];
    assert_eq!(
        check(&ok).unwrap(),
        Stats {
            txns: 3,
            committed: 2,
            edges: 1,
            keys: 1
        }
    );
    // Read skew against an Unknown txn is still caught.
    let skew = [
        unknown(vec![ap("x", 1), ap("y", 1)]),
        t(0, 100, vec![rd("x", &[1]), rd("y", &[])]),
        t(200, 300, vec![rd("y", &[1])]),
    ];
    assert_eq!(kinds(&skew), vec![GSingle]);
    assert_eq!(cycle(&skew, GSingle), vec![0, 1]);
}

struct XorShift(u64);
impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A serial execution of `n` txns over 10 keys; ~5% aborted, ~5% unknown (half applied).
fn serial_history(seed: u64, n: usize) -> Vec<Txn> {
    let mut rng = XorShift(seed);
    let mut state: Vec<Vec<u64>> = vec![Vec::new(); 10];
    let (mut next_value, mut now, mut h) = (1, 0, Vec::new());
    for i in 0..n {
        let outcome = match rng.below(20) {
            0 => TxnOutcome::Aborted,
            1 => TxnOutcome::Unknown,
            _ => TxnOutcome::Committed,
        };
        let mut local = state.clone();
        let mut mops = Vec::new();
        for _ in 0..=rng.below(4) {
            let k = rng.below(10) as usize;
            let key = format!("/l/{k}");
            if rng.below(2) == 0 {
                local[k].push(next_value);
                mops.push(ap(&key, next_value));
                next_value += 1;
            } else {
                let value = (outcome == TxnOutcome::Committed).then(|| local[k].clone());
                mops.push(Mop::Read { key, value });
            }
        }
        if outcome == TxnOutcome::Committed || (outcome == TxnOutcome::Unknown && rng.below(2) == 0)
        {
            state = local;
        }
        let invoke_us = now + 1 + rng.below(5);
        now = invoke_us + 1 + rng.below(10);
        let complete_us = if outcome == TxnOutcome::Unknown {
            u64::MAX
        } else {
            now
        };
        h.push(Txn {
            client: i % 5,
            invoke_us,
            complete_us,
            mops,
            outcome,
        });
    }
    h
}

#[test]
fn random_serial_history_and_stale_tamper() {
    let mut h = serial_history(0x9e37_79b9_7f4a_7c15, 2000);
    let started = std::time::Instant::now();
    let stats = check(&h).unwrap_or_else(|a| panic!("{}", a[0]));
    let elapsed = started.elapsed();
    eprintln!("2000-txn check: {elapsed:?}, {stats:?}");
    assert!(elapsed.as_millis() < 1000, "{elapsed:?}");
    assert_eq!((stats.txns, stats.keys), (2000, 10));
    assert!(stats.committed > 1700 && stats.edges > 2000, "{stats:?}");

    // Make a read stale: drop the last element of a read in a read-only txn, choosing the
    // most recent write possible (so that only real time orders writer and reader) whose
    // writer committed, on a key that a later txn reads again (so the order stays known).
    let mut writer = HashMap::new();
    let mut last_read = HashMap::new();
    for (t, x) in h.iter().enumerate() {
        for m in &x.mops {
            match m {
                Mop::Append { value, .. } => {
                    writer.insert(*value, t);
                }
                Mop::Read {
                    key,
                    value: Some(_),
                } => {
                    last_read.insert(key.clone(), t);
                }
                Mop::Read { .. } => {}
            }
        }
    }
    let mut candidates = Vec::new();
    for (i, x) in h.iter().enumerate().skip(1000) {
        for (j, m) in x.mops.iter().enumerate() {
            if let Mop::Read {
                key,
                value: Some(l),
            } = m
            {
                let Some(&w) = l.last().map(|v| &writer[v]) else {
                    continue;
                };
                let read_only = x.mops.iter().all(|m| matches!(m, Mop::Read { .. }));
                if read_only && h[w].outcome == TxnOutcome::Committed && last_read[key] > i {
                    candidates.push((i - w, i, j));
                }
            }
        }
    }
    let (_, i, j) = *candidates.iter().min().expect("no read to tamper with");
    if let Mop::Read { value: Some(l), .. } = &mut h[i].mops[j] {
        l.pop();
    }
    let found = check(&h).expect_err("stale read not caught");
    assert!(
        found
            .iter()
            .any(|a| a.kind == GSingleRealtime && a.cycle.contains(&i)),
        "{found:?}"
    );
}
