//! Elle-style checker (Kingsbury & Alvaro, VLDB'20) for **list-append** transaction histories,
//! checking **strict serializability**.
//!
//! This module owns the inference and the cycle search. It does not record histories; the
//! workload builds a `Vec<Txn>` and calls [`check`].
//!
//! Inference rules:
//! * Only reads of `Committed` txns count as observations. A txn counts as committed (is a graph
//!   node) if it is `Committed`, or if it is `Unknown` and a committed read saw one of its appends.
//! * Per key, the longest committed read is the version order. Every other read must be a prefix
//!   of it. Appends that no read saw have no known position and yield no ww/rw edges.
//! * ww `T1 -> T2`: T1's value comes immediately before T2's in the version order.
//!   wr `T1 -> T2`: T2 read a list whose last element T1 appended.
//!   rw `T1 -> T2`: T1 read a prefix of length `n`, and T2 appended element `n` of the order.
//!   rt `T1 -> T2`: T1 committed (with a known completion time) before T2 was invoked. These edges
//!   are a transitive reduction: a sweep over invoke/complete events keeps a frontier of the most
//!   recent completions that nothing has superseded yet.
//! * G1a: a read observes an aborted txn's append. G1b: a read ends at a value that is not the
//!   writer's final append to that key. Incompatible: reads that are not prefixes of one another,
//!   duplicates in a list, values nobody appended, a value appended twice, and internal
//!   inconsistency (a txn's read does not reflect its own earlier read and appends).
//! * Cycles: an iterative Tarjan finds the SCCs. Within each SCC a BFS looks for the least bad
//!   concrete cycle, without rt edges first: G0 (ww), G1c (ww+wr), G-single (exactly one rw),
//!   G2-item. Only then does it allow rt edges, which gives the `*Realtime` variants.
//!
//! Limits: Elle is sound but incomplete, and so is this checker. Unobserved appends give no
//! ordering. A key with incompatible reads or duplicate values adds no dependency edges. There
//! are no per-client (process) order edges; for clients that run one txn at a time, rt edges
//! cover them. Reads inside Aborted/Unknown txns are ignored even if they carry a value. Each SCC
//! reports one cycle: any cycle without rt edges beats every cycle that needs one (a G2-item
//! hides a G0-realtime in the same SCC). At most [`MAX_PER_KIND`] anomalies are kept per kind.
//! Dirty updates and predicate anomalies are not detected. Cost is about linear in the history
//! for valid histories; the cycle search in a failing SCC is O(rw edges x edges) at worst.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;

/// One micro-operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Mop {
    /// Append `value` to the list at `key`. Values are unique per key across the whole history.
    Append { key: String, value: u64 },
    /// Read the list at `key`: `None` if the read's result is not known (the txn did not commit
    /// or its outcome is unknown), `Some(list)` as observed (empty list = key absent).
    Read {
        key: String,
        value: Option<Vec<u64>>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnOutcome {
    Committed,
    Aborted,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    pub client: usize,
    /// Simulated microseconds: invocation and completion (real-time order: a completed before b
    /// invoked iff a.complete_us < b.invoke_us). For Unknown txns complete_us is ignored (an
    /// Unknown txn never completes for real-time purposes).
    pub invoke_us: u64,
    pub complete_us: u64,
    pub mops: Vec<Mop>,
    pub outcome: TxnOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnomalyKind {
    G0,
    G1a,
    G1b,
    G1c,
    GSingle,
    G2Item,
    G0Realtime,
    G1cRealtime,
    GSingleRealtime,
    G2ItemRealtime,
    /// Reads that are not prefixes of each other, duplicates in a list, a value appended by
    /// nobody (or twice), or a txn whose reads do not reflect its own appends ("internal").
    Incompatible,
}

#[derive(Debug, Clone)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    /// Indices into the history slice forming the cycle (first == the txn it starts at; the
    /// cycle closes back to it), empty for non-cycle anomalies (G1a, G1b, Incompatible).
    pub cycle: Vec<usize>,
    /// Human-readable explanation: each edge of the cycle with its type (ww/wr/rw/rt) and the key
    /// and values that justify it, e.g. "T3 -wr(/l/2: 7)-> T5 -rw(/l/1: read [1] before 4)-> T3".
    pub explanation: String,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.explanation)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub txns: usize,
    /// Graph nodes: committed txns plus Unknown txns whose appends were observed.
    pub committed: usize,
    /// Distinct (from, to) pairs in the dependency + real-time graph.
    pub edges: usize,
    pub keys: usize,
}

/// At most this many anomalies of each kind are returned.
pub const MAX_PER_KIND: usize = 8;

const WW: u8 = 1;
const WR: u8 = 2;
const RW: u8 = 4;
const RT: u8 = 8;
const ALL: u8 = WW | WR | RW | RT;

/// Cycle searches from least to most severe: (allowed edge mask, exactly one rw edge).
const SEARCHES: [(u8, bool); 8] = [
    (WW, false),
    (WW | WR, false),
    (WW | WR, true),
    (WW | WR | RW, false),
    (WW | RT, false),
    (WW | WR | RT, false),
    (WW | WR | RT, true),
    (ALL, false),
];

/// Why an edge exists (first justification per edge and type); keys are ids into `Keys::names`.
#[derive(Debug, Clone)]
enum Why {
    /// (key, earlier value, later value)
    Ww(usize, u64, u64),
    /// (key, last value read)
    Wr(usize, u64),
    /// (key, last value read if any, length read, next value in the version order)
    Rw(usize, Option<u64>, usize, u64),
    /// (completion of the earlier txn, invocation of the later one)
    Rt(u64, u64),
}

#[derive(Default)]
struct Graph {
    mask: BTreeMap<(usize, usize), u8>,
    why: HashMap<(usize, usize, u8), Why>,
    adj: Vec<Vec<(usize, u8)>>,
}

impl Graph {
    fn add(&mut self, from: usize, to: usize, ty: u8, why: Why) {
        if from != to {
            *self.mask.entry((from, to)).or_insert(0) |= ty;
            self.why.entry((from, to, ty)).or_insert(why);
        }
    }

    fn build_adj(&mut self, n: usize) {
        self.adj = vec![Vec::new(); n];
        for (&(a, b), &m) in &self.mask {
            self.adj[a].push((b, m));
        }
    }

    /// Real-time edges as a transitive reduction: a sweep over invocations and completions
    /// keeps a frontier of completed txns that no later completion has superseded; each txn
    /// links from the frontier at its invocation, and its completion removes those links'
    /// sources from the frontier. At equal times invocations sort first, since
    /// `a.complete_us == b.invoke_us` does not order a before b. Unknown txns never complete.
    fn add_realtime(&mut self, history: &[Txn], is_node: &[bool]) {
        let mut events: Vec<(u64, bool, usize)> = Vec::new();
        for (t, x) in history.iter().enumerate().filter(|&(t, _)| is_node[t]) {
            events.push((x.invoke_us, false, t));
            if x.outcome == TxnOutcome::Committed {
                events.push((x.complete_us, true, t));
            }
        }
        events.sort_unstable();
        let mut frontier: BTreeSet<usize> = BTreeSet::new();
        let mut preds: Vec<Vec<usize>> = vec![Vec::new(); history.len()];
        for (time, completes, t) in events {
            if completes {
                for p in &preds[t] {
                    frontier.remove(p);
                }
                frontier.insert(t);
            } else {
                preds[t] = frontier.iter().copied().collect();
                for &p in &preds[t] {
                    self.add(p, t, RT, Why::Rt(history[p].complete_us, time));
                }
            }
        }
    }

    /// One anomaly (the least bad concrete cycle) per non-trivial SCC of `nodes`.
    fn cycle_anomalies(&self, nodes: &[usize], keys: &[&str]) -> Vec<Anomaly> {
        let comps = self.sccs(nodes, ALL, |_| true);
        let mut comp_of = vec![usize::MAX; self.adj.len()];
        for (c, scc) in comps.iter().enumerate() {
            scc.iter().for_each(|&v| comp_of[v] = c);
        }
        let mut out = Vec::new();
        for (c, scc) in comps.iter().enumerate() {
            let Some((mut cycle, allowed)) = self.worst_cycle(scc, |v| comp_of[v] == c) else {
                continue;
            };
            let start = (0..cycle.len()).min_by_key(|&i| cycle[i]).unwrap_or(0);
            cycle.rotate_left(start);
            let mut labels = Vec::new();
            let mut explanation = format!("T{}", cycle[0]);
            for (i, &a) in cycle.iter().enumerate() {
                let b = cycle[(i + 1) % cycle.len()];
                let ty = label(self.mask[&(a, b)], allowed);
                labels.push(ty);
                let why = describe(ty, &self.why[&(a, b, ty)], keys);
                explanation += &format!(" -{why}-> T{b}");
            }
            let kind = classify(&labels);
            out.push(Anomaly {
                kind,
                cycle,
                explanation,
            });
        }
        out
    }

    /// Iterative Tarjan over `nodes`, following edges in `mask` to nodes `inside` accepts.
    /// Returns only the non-trivial components (there are no self-loops).
    fn sccs(&self, nodes: &[usize], mask: u8, inside: impl Fn(usize) -> bool) -> Vec<Vec<usize>> {
        const UNSEEN: usize = usize::MAX;
        let n = self.adj.len();
        let (mut index, mut low, mut on) = (vec![UNSEEN; n], vec![0; n], vec![false; n]);
        let (mut stack, mut out, mut next) = (Vec::new(), Vec::new(), 0);
        for &root in nodes {
            if index[root] != UNSEEN {
                continue;
            }
            let mut calls = vec![(root, 0usize)];
            index[root] = next;
            low[root] = next;
            next += 1;
            stack.push(root);
            on[root] = true;
            while let Some(frame) = calls.last_mut() {
                let u = frame.0;
                if let Some(&(v, m)) = self.adj[u].get(frame.1) {
                    frame.1 += 1;
                    if m & mask == 0 || !inside(v) {
                        continue;
                    }
                    if index[v] == UNSEEN {
                        index[v] = next;
                        low[v] = next;
                        next += 1;
                        stack.push(v);
                        on[v] = true;
                        calls.push((v, 0));
                    } else if on[v] {
                        low[u] = low[u].min(index[v]);
                    }
                    continue;
                }
                calls.pop();
                if let Some(&(p, _)) = calls.last() {
                    low[p] = low[p].min(low[u]);
                }
                if low[u] == index[u] {
                    let mut comp = Vec::new();
                    while let Some(v) = stack.pop() {
                        on[v] = false;
                        comp.push(v);
                        if v == u {
                            break;
                        }
                    }
                    if comp.len() > 1 {
                        comp.sort_unstable();
                        out.push(comp);
                    }
                }
            }
        }
        out
    }

    /// Shortest path `from ..= to` over `mask` edges among nodes `inside` accepts. With
    /// `from == to` it is a shortest cycle through `from` (whose last element repeats the first).
    fn bfs(
        &self,
        from: usize,
        to: usize,
        mask: u8,
        inside: &impl Fn(usize) -> bool,
    ) -> Option<Vec<usize>> {
        let mut parent: HashMap<usize, usize> = HashMap::new();
        if from != to {
            parent.insert(from, from);
        }
        let mut queue = VecDeque::from([from]);
        while let Some(u) = queue.pop_front() {
            for &(v, m) in &self.adj[u] {
                if m & mask == 0 || !inside(v) || parent.contains_key(&v) {
                    continue;
                }
                parent.insert(v, u);
                if v == to {
                    let (mut path, mut x) = (vec![to], u);
                    loop {
                        path.push(x);
                        if x == from {
                            break;
                        }
                        x = parent[&x];
                    }
                    path.reverse();
                    return Some(path);
                }
                queue.push_back(v);
            }
        }
        None
    }

    /// The least bad concrete cycle in `scc` and the edge mask it was searched with.
    fn worst_cycle(
        &self,
        scc: &[usize],
        inside: impl Fn(usize) -> bool,
    ) -> Option<(Vec<usize>, u8)> {
        for (mask, one_rw) in SEARCHES {
            if one_rw {
                for &a in scc {
                    for &(b, m) in &self.adj[a] {
                        if m & RW == 0 || !inside(b) {
                            continue;
                        }
                        if let Some(mut path) = self.bfs(b, a, mask, &inside) {
                            path.pop();
                            path.insert(0, a);
                            return Some((path, mask | RW));
                        }
                    }
                }
            } else if let Some(sub) = self.sccs(scc, mask, &inside).first() {
                let mut path = self.bfs(sub[0], sub[0], mask, &inside)?;
                path.pop();
                return Some((path, mask));
            }
        }
        None
    }
}

/// Least severe edge type of `m` allowed by `allowed` (WW < WR < RW < RT).
fn label(m: u8, allowed: u8) -> u8 {
    let x = m & allowed;
    x & x.wrapping_neg()
}

fn classify(labels: &[u8]) -> AnomalyKind {
    use AnomalyKind::*;
    let rw = labels.iter().filter(|&&l| l == RW).count();
    let (wr, rt) = (labels.contains(&WR), labels.contains(&RT));
    match (rw, wr, rt) {
        (0, false, false) => G0,
        (0, true, false) => G1c,
        (1, _, false) => GSingle,
        (_, _, false) => G2Item,
        (0, false, true) => G0Realtime,
        (0, true, true) => G1cRealtime,
        (1, _, true) => GSingleRealtime,
        _ => G2ItemRealtime,
    }
}

/// Shows a list, eliding all but its last few elements.
fn show(list: &[u64]) -> String {
    const TAIL: usize = 6;
    let tail: Vec<String> = list
        .iter()
        .skip(list.len().saturating_sub(TAIL))
        .map(u64::to_string)
        .collect();
    let dots = if list.len() > TAIL { ".., " } else { "" };
    format!("[{dots}{}]", tail.join(", "))
}

fn describe(ty: u8, why: &Why, keys: &[&str]) -> String {
    let name = match ty {
        WW => "ww",
        WR => "wr",
        RW => "rw",
        _ => "rt",
    };
    let body = match *why {
        Why::Ww(k, prev, next) => format!("{}: {prev} then {next}", keys[k]),
        Why::Wr(k, value) => format!("{}: {value}", keys[k]),
        Why::Rw(k, last, len, next) => {
            let read = match (last, len) {
                (None, _) => "[]".to_string(),
                (Some(v), 1) => format!("[{v}]"),
                (Some(v), _) => format!("[.., {v}]"),
            };
            format!("{}: read {read} before {next}", keys[k])
        }
        Why::Rt(complete, invoke) => format!("completed {complete}us < invoked {invoke}us"),
    };
    format!("{name}({body})")
}

#[derive(Default)]
struct Keys<'a> {
    ix: HashMap<&'a str, usize>,
    names: Vec<&'a str>,
}

impl<'a> Keys<'a> {
    fn id(&mut self, key: &'a str) -> usize {
        let next = self.names.len();
        let id = *self.ix.entry(key).or_insert(next);
        if id == next {
            self.names.push(key);
        }
        id
    }
}

/// A committed read: (reader, key id, observed list).
type Read<'a> = (usize, usize, &'a [u64]);

fn plain(kind: AnomalyKind, explanation: String) -> Anomaly {
    Anomaly {
        kind,
        cycle: Vec::new(),
        explanation,
    }
}

/// Checks the history; `Ok(stats)` if it is strictly serializable as far as list-append
/// inference can tell, `Err(anomalies)` (non-empty, sorted by kind, at most [`MAX_PER_KIND`] per
/// kind) otherwise.
pub fn check(history: &[Txn]) -> Result<Stats, Vec<Anomaly>> {
    use AnomalyKind::{G1a, G1b, Incompatible};
    let n = history.len();
    let mut bad = Vec::new();
    let mut keys = Keys::default();

    // Who appended what; each txn's final append per key.
    let mut writer: HashMap<(usize, u64), usize> = HashMap::new();
    let mut final_append: HashMap<(usize, usize), u64> = HashMap::new();
    for (t, txn) in history.iter().enumerate() {
        for mop in &txn.mops {
            match mop {
                Mop::Append { key, value } => {
                    let k = keys.id(key);
                    if let Some(&w) = writer.get(&(k, *value)) {
                        bad.push(plain(
                            Incompatible,
                            format!("{value} appended to {key} by both T{w} and T{t}"),
                        ));
                    } else {
                        writer.insert((k, *value), t);
                    }
                    final_append.insert((t, k), *value);
                }
                Mop::Read { key, .. } => {
                    keys.id(key);
                }
            }
        }
    }

    // Committed reads, and internal consistency: a read must be the txn's previous read of the
    // key followed by its appends since (or, without a previous read, end with those appends).
    let mut reads: Vec<Read> = Vec::new();
    for (t, txn) in history
        .iter()
        .enumerate()
        .filter(|(_, x)| x.outcome == TxnOutcome::Committed)
    {
        let mut state: HashMap<usize, (Option<&[u64]>, Vec<u64>)> = HashMap::new();
        for mop in &txn.mops {
            match mop {
                Mop::Append { key, value } => state.entry(keys.id(key)).or_default().1.push(*value),
                Mop::Read {
                    key,
                    value: Some(list),
                } => {
                    let k = keys.id(key);
                    let (prev, pending) = state.entry(k).or_default();
                    let ok = list.ends_with(pending)
                        && prev.is_none_or(|p| {
                            list.len() == p.len() + pending.len() && list.starts_with(p)
                        });
                    if !ok {
                        let seen = prev.map_or("nothing".to_string(), show);
                        bad.push(plain(
                            Incompatible,
                            format!(
                                "internal: T{t} read {key} = {} after reading {seen} and appending {:?}",
                                show(list),
                                pending
                            ),
                        ));
                    }
                    *prev = Some(list);
                    pending.clear();
                    reads.push((t, k, list));
                }
                Mop::Read { value: None, .. } => {}
            }
        }
    }

    // Value checks, observed writers, and the version order (longest read) per key.
    let nkeys = keys.names.len();
    let mut observed = vec![false; n];
    let mut broken = vec![false; nkeys];
    let mut longest: Vec<Option<&[u64]>> = vec![None; nkeys];
    for &(r, k, list) in &reads {
        let name = keys.names[k];
        let mut seen = HashSet::new();
        for &v in list {
            if !seen.insert(v) && !broken[k] {
                bad.push(plain(
                    Incompatible,
                    format!("T{r} read {name} = {}: duplicate {v}", show(list)),
                ));
                broken[k] = true;
            }
            match writer.get(&(k, v)) {
                None => bad.push(plain(
                    Incompatible,
                    format!("T{r} read {name} = {}: {v} was never appended", show(list)),
                )),
                Some(&w) if history[w].outcome == TxnOutcome::Aborted => bad.push(plain(
                    G1a,
                    format!(
                        "T{r} read {name} = {}: {v} was appended by aborted T{w}",
                        show(list)
                    ),
                )),
                Some(&w) => observed[w] = true,
            }
        }
        if let Some(&last) = list.last() {
            if let Some(&w) = writer.get(&(k, last)) {
                let fin = final_append[&(w, k)];
                if w != r && fin != last {
                    bad.push(plain(
                        G1b,
                        format!("T{r} read {name} = {}: {last} is an intermediate append of T{w} (its final is {fin})", show(list)),
                    ));
                }
            }
        }
        if longest[k].is_none_or(|l| list.len() > l.len()) {
            longest[k] = Some(list);
        }
    }
    for &(r, k, list) in &reads {
        let order = longest[k].unwrap_or_default();
        if !order.starts_with(list) {
            let name = keys.names[k];
            bad.push(plain(
                Incompatible,
                format!(
                    "T{r} read {name} = {}, not a prefix of the longest read {}",
                    show(list),
                    show(order)
                ),
            ));
            broken[k] = true;
        }
    }

    // Dependency edges.
    let is_node: Vec<bool> = history
        .iter()
        .enumerate()
        .map(|(t, x)| {
            x.outcome == TxnOutcome::Committed || (x.outcome == TxnOutcome::Unknown && observed[t])
        })
        .collect();
    let node_writer = |k: usize, v: u64| writer.get(&(k, v)).copied().filter(|&w| is_node[w]);
    let mut g = Graph::default();
    for (k, order) in longest.iter().enumerate() {
        if let (false, Some(order)) = (broken[k], order) {
            for w in order.windows(2) {
                if let (Some(a), Some(b)) = (node_writer(k, w[0]), node_writer(k, w[1])) {
                    g.add(a, b, WW, Why::Ww(k, w[0], w[1]));
                }
            }
        }
    }
    for &(r, k, list) in reads.iter().filter(|rd| !broken[rd.1]) {
        let last = list.last().copied();
        if let Some(w) = last.and_then(|v| node_writer(k, v)) {
            g.add(w, r, WR, Why::Wr(k, last.unwrap_or_default()));
        }
        let next = longest[k].and_then(|o| o.get(list.len())).copied();
        if let Some((w, next)) = next.and_then(|v| Some((node_writer(k, v)?, v))) {
            g.add(r, w, RW, Why::Rw(k, last, list.len(), next));
        }
    }

    g.add_realtime(history, &is_node);
    g.build_adj(n);
    let nodes: Vec<usize> = (0..n).filter(|&t| is_node[t]).collect();
    bad.extend(g.cycle_anomalies(&nodes, &keys.names));

    if bad.is_empty() {
        return Ok(Stats {
            txns: n,
            committed: nodes.len(),
            edges: g.mask.len(),
            keys: nkeys,
        });
    }
    bad.sort_by(|a, b| a.kind.cmp(&b.kind));
    let mut per_kind: HashMap<AnomalyKind, usize> = HashMap::new();
    bad.retain(|a| {
        let c = per_kind.entry(a.kind.clone()).or_insert(0);
        *c += 1;
        *c <= MAX_PER_KIND
    });
    Err(bad)
}

#[cfg(test)]
mod tests;
