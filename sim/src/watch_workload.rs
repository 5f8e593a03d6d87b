//! The watch simulation: writers put, delete and batch-write (across
//! ranges: a transaction) a few keys under `w/` while watchers follow them,
//! the keyspace splits at written keys and merges back while writers
//! pause, and the nemesis cuts nodes off, crashes them and moves leaders.
//! Checked afterwards, for every watcher (`check`):
//!
//! - completeness: every acknowledged put in its span appears once;
//! - no phantoms or duplicates: every event is a write someone attempted
//!   on that key, and appears once;
//! - order: revisions strictly increase from update to update, keys within
//!   one; a write invoked after another was acknowledged has a higher
//!   revision (real-time order: the watch is strictly serializable);
//! - atomicity: a batch's two writes appear together, at one revision;
//! - the final state: replaying a watcher's events gives what a read finds;
//! - previous values chain: each event's prev is the key's previous event;
//! - a watcher started later from an old revision sees exactly what the
//!   live one saw (catch-up reads history, the live one polled it);
//! - liveness: every watcher catches up with a revision taken at the end.
//!
//! Canary: `WatchDropsAtSplit` (events of a split's first key lost).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rangedb::api::Timestamp;
use rangedb::client::{Client, WatchOptions, WatchUpdate};
use rangedb::proto::WatchEvent;
use rangedb::Error;
use tokio::time::Instant;

use crate::cluster::Cluster;

const KEYS: usize = 8;
/// Writers write for `PHASE`, pause for `PAUSE` (cold ranges merge), and
/// write for `PHASE` again.
const PHASE: Duration = Duration::from_secs(15);
const PAUSE: Duration = Duration::from_secs(12);
/// A watcher must reach the final revision within this.
const CATCH_UP: Duration = Duration::from_secs(60);

fn key(i: usize) -> String {
    format!("w/k{i}")
}

/// One attempted write of a unique value.
#[derive(Clone, Debug)]
struct Attempt {
    key: String,
    invoked: Instant,
    /// When it was acknowledged (`None`: failed or unknown).
    acked: Option<Instant>,
    /// The value written with it in one batch, if any.
    partner: Option<String>,
}

#[derive(Default)]
struct Record {
    /// value -> attempt (values are unique).
    attempts: HashMap<String, Attempt>,
    deletes: usize,
    failed: usize,
    /// When the writers started (for reports).
    start: Option<Instant>,
}

/// What a watcher saw.
#[derive(Default, Debug)]
struct Seen {
    name: String,
    start: String,
    end: String,
    updates: Vec<(u64, Vec<WatchEvent>)>,
    progress: usize,
    reached: u64,
    error: Option<String>,
}

async fn writer(c: usize, client: Client, rec: Arc<Mutex<Record>>, seed: u64, ends: [Instant; 3]) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut n = 0u64;
    loop {
        let now = Instant::now();
        if now >= ends[2] {
            return;
        }
        if now >= ends[0] && now < ends[1] {
            tokio::time::sleep_until(ends[1]).await;
            continue;
        }
        n += 1;
        let k = key(rng.gen_range(0..KEYS));
        let invoked = Instant::now();
        match rng.gen_range(0..10) {
            0 => {
                let r = client.delete(k.as_bytes()).await;
                let mut g = rec.lock().unwrap();
                match r {
                    Ok(()) => g.deletes += 1,
                    Err(_) => g.failed += 1,
                }
            }
            1..=2 => {
                let k2 = key(rng.gen_range(0..KEYS));
                if k2 == k {
                    continue;
                }
                let (va, vb) = (format!("c{c}n{n}a"), format!("c{c}n{n}b"));
                {
                    let mut g = rec.lock().unwrap();
                    for (kk, v, p) in [(&k, &va, &vb), (&k2, &vb, &va)] {
                        g.attempts.insert(
                            v.clone(),
                            Attempt {
                                key: kk.clone(),
                                invoked,
                                acked: None,
                                partner: Some(p.clone()),
                            },
                        );
                    }
                }
                let pairs = vec![
                    (k.clone().into_bytes(), va.clone().into_bytes()),
                    (k2.into_bytes(), vb.clone().into_bytes()),
                ];
                let r = client.batch_put(pairs).await;
                let mut g = rec.lock().unwrap();
                match r {
                    Ok(()) => {
                        let at = Instant::now();
                        for v in [&va, &vb] {
                            if let Some(a) = g.attempts.get_mut(v) {
                                a.acked = Some(at);
                            }
                        }
                    }
                    Err(_) => g.failed += 1,
                }
            }
            _ => {
                let v = format!("c{c}n{n}");
                rec.lock().unwrap().attempts.insert(
                    v.clone(),
                    Attempt {
                        key: k.clone(),
                        invoked,
                        acked: None,
                        partner: None,
                    },
                );
                let r = client.put(k.as_bytes(), v.as_bytes()).await;
                let mut g = rec.lock().unwrap();
                match r {
                    Ok(()) => {
                        if let Some(a) = g.attempts.get_mut(&v) {
                            a.acked = Some(Instant::now());
                        }
                    }
                    Err(_) => g.failed += 1,
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(5..50))).await;
    }
}

/// Follows `opts` until it has reached `stop` (set at the end).
async fn watcher(
    name: &str,
    client: Client,
    mut opts: WatchOptions,
    stop: Arc<Mutex<Option<u64>>>,
) -> Seen {
    let mut seen = Seen {
        name: name.to_string(),
        start: String::from_utf8_lossy(&opts.start).into_owned(),
        end: String::from_utf8_lossy(&opts.end).into_owned(),
        ..Default::default()
    };
    opts.progress_every = Some(Duration::from_millis(500));
    opts.poll_interval = Duration::from_millis(50);
    let mut w = loop {
        match client.watch(opts.clone()).await {
            Ok(w) => break w,
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => {
                seen.error = Some(format!("start: {e}"));
                return seen;
            }
        }
    };
    let mut stop_at: Option<Instant> = None;
    loop {
        if let Some(target) = *stop.lock().unwrap() {
            if w.revision().0 >= target {
                seen.reached = w.revision().0;
                return seen;
            }
            let deadline = *stop_at.get_or_insert_with(|| Instant::now() + CATCH_UP);
            if Instant::now() > deadline {
                seen.reached = w.revision().0;
                seen.error = Some(format!(
                    "did not reach revision {target} within {CATCH_UP:?} (at {})",
                    w.revision().0
                ));
                return seen;
            }
        }
        match w.next().await {
            Ok(WatchUpdate::Events { revision, events }) => seen.updates.push((revision.0, events)),
            Ok(WatchUpdate::Progress { .. }) => seen.progress += 1,
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => {
                seen.error = Some(e.to_string());
                seen.reached = w.revision().0;
                return seen;
            }
        }
    }
}

/// One event of a key as a watcher saw it: revision, value (`None`: a
/// delete) and previous value.
type Seen1 = (u64, Option<String>, Option<String>);

fn in_span(k: &str, s: &Seen) -> bool {
    k >= s.start.as_str() && (s.end.is_empty() || k < s.end.as_str())
}

/// Every violation `seen` shows against what writers did and the final
/// state `data`.
fn check(s: &Seen, rec: &Record, data: &BTreeMap<String, String>, out: &mut Vec<String>) {
    let name = &s.name;
    if let Some(e) = &s.error {
        out.push(format!("{name}: {e}"));
    }
    let mut rev_of: HashMap<String, u64> = HashMap::new();
    let mut last_rev = 0u64;
    // Per key: the events in order (value or None for a delete, and prev).
    let mut per_key: BTreeMap<String, Vec<Seen1>> = BTreeMap::new();
    for (rev, events) in &s.updates {
        if *rev <= last_rev {
            out.push(format!("{name}: revision {rev} after {last_rev}"));
        }
        last_rev = *rev;
        for w in events.windows(2) {
            if w[0].key >= w[1].key {
                out.push(format!(
                    "{name}: revision {rev}: keys out of order or repeated"
                ));
            }
        }
        for e in events {
            let k = String::from_utf8_lossy(&e.key).into_owned();
            if e.revision != *rev {
                out.push(format!(
                    "{name}: an event of {k} at {} in update {rev}",
                    e.revision
                ));
            }
            if !in_span(&k, s) {
                out.push(format!("{name}: {k} is outside the span"));
            }
            let prev = e
                .has_prev
                .then(|| String::from_utf8_lossy(&e.prev_value).into_owned());
            if e.delete {
                per_key.entry(k).or_default().push((*rev, None, prev));
                continue;
            }
            let v = String::from_utf8_lossy(&e.value).into_owned();
            match rec.attempts.get(&v) {
                None => out.push(format!("{name}: {k} = {v} was never written")),
                Some(a) if a.key != k => out.push(format!(
                    "{name}: {k} = {v}, but {v} was written to {}",
                    a.key
                )),
                Some(_) => {}
            }
            if rev_of.insert(v.clone(), *rev).is_some() {
                out.push(format!("{name}: {k} = {v} reported twice"));
            }
            per_key.entry(k).or_default().push((*rev, Some(v), prev));
        }
    }
    for (v, a) in &rec.attempts {
        if !in_span(&a.key, s) {
            continue;
        }
        let got = rev_of.get(v);
        if let (Some(acked), None) = (a.acked, got) {
            let at = |t: Instant| {
                rec.start
                    .map(|s| t.saturating_duration_since(s))
                    .unwrap_or_default()
            };
            out.push(format!(
                "{name}: the acknowledged {} = {v} is missing (invoked at {:?}, acknowledged at {:?})",
                a.key,
                at(a.invoked),
                at(acked)
            ));
        }
        if let Some(p) = &a.partner {
            let pk = &rec.attempts[p].key;
            if in_span(pk, s) && got.is_some() && rev_of.get(p) != got {
                out.push(format!(
                    "{name}: batch {} = {v} at {got:?}, its partner {pk} = {p} at {:?}",
                    a.key,
                    rev_of.get(p)
                ));
            }
        }
    }
    // Real-time order among the writes this watcher saw: no write has a
    // lower revision than one acknowledged before it was invoked. In
    // revision order, the latest invocation among lower revisions must
    // not follow a write's acknowledgement.
    let mut by_rev: Vec<(u64, &Attempt)> = rev_of
        .iter()
        .filter_map(|(v, r)| rec.attempts.get(v).map(|a| (*r, a)))
        .collect();
    by_rev.sort_by_key(|(r, _)| *r);
    let mut latest_below: Option<(Instant, u64, &str)> = None;
    let mut i = 0;
    while i < by_rev.len() {
        let rev = by_rev[i].0;
        let group: Vec<&Attempt> = by_rev[i..]
            .iter()
            .take_while(|(r, _)| *r == rev)
            .map(|(_, a)| *a)
            .collect();
        i += group.len();
        for a in &group {
            if let (Some(acked), Some((inv, r2, k2))) = (a.acked, latest_below) {
                if inv > acked {
                    out.push(format!(
                        "{name}: {} (revision {rev}) was acknowledged before {k2} (revision {r2}, lower) was invoked",
                        a.key
                    ));
                }
            }
        }
        for a in group {
            if latest_below.is_none_or(|(t, _, _)| a.invoked > t) {
                latest_below = Some((a.invoked, rev, a.key.as_str()));
            }
        }
    }
    // Final state and previous values.
    for (k, evs) in &per_key {
        if let Some((_, last, _)) = evs.last() {
            if data.get(k) != last.as_ref() {
                out.push(format!(
                    "{name}: replaying {k} gives {last:?}, a read gives {:?}",
                    data.get(k)
                ));
            }
        }
        if s.name.contains("prev") {
            for w in evs.windows(2) {
                if w[1].2 != w[0].1 {
                    out.push(format!(
                        "{name}: {k} at {}: prev {:?}, the previous event was {:?}",
                        w[1].0, w[1].2, w[0].1
                    ));
                }
            }
        }
    }
}

/// Moves a range leader now and then, cuts a node off or crashes one,
/// until `until`.
async fn faults(cluster: &Cluster, rng: &mut ChaCha8Rng, until: Instant, log: &mut Vec<String>) {
    let n = cluster.nodes.len() as u64;
    let start = Instant::now();
    loop {
        let pause = Duration::from_millis(rng.gen_range(800..2500));
        if Instant::now() + pause + Duration::from_millis(2500) > until {
            return;
        }
        tokio::time::sleep(pause).await;
        let victim = rng.gen_range(1..=n);
        match rng.gen_range(0..10) {
            0..=1 => {
                log.push(format!("{:?} crash {victim}", start.elapsed()));
                cluster.kill(victim);
                tokio::time::sleep(Duration::from_millis(rng.gen_range(300..1500))).await;
                cluster.restart(victim);
            }
            2..=5 => {
                log.push(format!("{:?} isolate {victim}", start.elapsed()));
                cluster.isolate(victim);
                tokio::time::sleep(Duration::from_millis(rng.gen_range(300..2000))).await;
                cluster.heal();
            }
            _ => {
                let k = key(rng.gen_range(0..KEYS));
                if let Some((range, leader)) = cluster.leader_of_key(k.as_bytes()).await {
                    let to = leader % n + 1;
                    if cluster.transfer_leader(range, to).await.is_ok() {
                        log.push(format!("{:?} move {k}'s leader to {to}", start.elapsed()));
                    }
                }
            }
        }
    }
}

/// What one run found.
pub struct WatchReport {
    pub violations: Vec<String>,
    pub summary: String,
}

/// How many ranges cover `w/`.
async fn ranges_under_w(cluster: &Cluster) -> usize {
    let (lo, hi) = (key(0), key(KEYS));
    let mut starts = std::collections::BTreeSet::new();
    for st in cluster.statuses().await {
        for r in st.ranges.iter().filter(|r| r.is_leader) {
            let s = rangedb::keys::user_key(&r.start_key).unwrap_or_default();
            if s > lo.as_bytes().to_vec() && s < hi.as_bytes().to_vec() {
                starts.insert(s);
            }
        }
    }
    starts.len()
}

/// One run on a 3-node cluster.
pub async fn run(cluster: Arc<Cluster>) -> WatchReport {
    let mut rng = ChaCha8Rng::seed_from_u64(madsim::rand::random());
    cluster.wait_for_leaders(Duration::from_secs(30)).await;
    let client = || cluster.client(Duration::from_secs(8));
    let stop: Arc<Mutex<Option<u64>>> = Arc::default();

    // Live watchers, started before anything is written.
    let first = {
        let c = client();
        cluster
            .client_host
            .spawn(async move { c.timestamps(1).await })
            .await
            .expect("task")
            .expect("a first timestamp")
    };
    let mut watchers = Vec::new();
    let mut live = WatchOptions::prefix(b"w/");
    live.prev_value = true;
    live.from_revision = Some(Timestamp(first.0 + 1));
    let mut mid = WatchOptions::span(key(2).as_bytes(), key(5).as_bytes());
    mid.from_revision = Some(Timestamp(first.0 + 1));
    for (name, opts) in [("live-prev", live.clone()), ("span k2..k5", mid)] {
        let (c, stop) = (client(), stop.clone());
        watchers.push(
            cluster
                .client_host
                .spawn(async move { watcher(name, c, opts, stop).await }),
        );
    }

    let rec: Arc<Mutex<Record>> = Arc::default();
    let start = Instant::now();
    rec.lock().unwrap().start = Some(start);
    let ends = [
        start + PHASE,
        start + PHASE + PAUSE,
        start + 2 * PHASE + PAUSE,
    ];
    let mut tasks = Vec::new();
    for c in 0..3 {
        tasks.push(
            cluster
                .client_host
                .spawn(writer(c, client(), rec.clone(), rng.gen(), ends)),
        );
    }
    // Splits at written keys (not sticky: they merge back while writers
    // pause), again in the second phase.
    let mut log = Vec::new();
    let splitter = {
        let c = client();
        cluster.client_host.spawn(async move {
            let mut done = Vec::new();
            for (at, k) in [(2, 3), (4, 6), (PHASE.as_secs() + PAUSE.as_secs() + 2, 5)] {
                tokio::time::sleep_until(start + Duration::from_secs(at)).await;
                let r = c.split(key(k).as_bytes(), false).await;
                done.push(format!(
                    "split at {} {}",
                    key(k),
                    if r.is_ok() { "ok" } else { "failed" }
                ));
            }
            done
        })
    };
    faults(&cluster, &mut rng, ends[0], &mut log).await;
    let split_ranges = ranges_under_w(&cluster).await;
    tokio::time::sleep_until(ends[1] - Duration::from_secs(1)).await;
    let paused_ranges = ranges_under_w(&cluster).await;
    // A watcher that starts late and catches up from the first revision.
    {
        let (c, stop) = (client(), stop.clone());
        let mut late = WatchOptions::prefix(b"w/");
        late.from_revision = Some(Timestamp(first.0 + 1));
        watchers.push(
            cluster
                .client_host
                .spawn(async move { watcher("late", c, late, stop).await }),
        );
    }
    faults(&cluster, &mut rng, ends[2], &mut log).await;
    for t in tasks {
        let _ = t.await;
    }
    log.extend(splitter.await.unwrap_or_default());
    cluster.heal();

    // The end: a revision above every write; every watcher must reach it.
    let c = client();
    let (last, pairs) = cluster
        .client_host
        .spawn(async move {
            let t0 = Instant::now();
            loop {
                let r = async {
                    let ts = c.timestamps(1).await?;
                    let pairs = c.scan(b"w/", b"w0", 10_000, false).await?;
                    Ok::<_, Error>((ts, pairs))
                }
                .await;
                match r {
                    Ok(x) => return x,
                    Err(e) if t0.elapsed() > Duration::from_secs(60) => panic!("final read: {e}"),
                    Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
                }
            }
        })
        .await
        .expect("final read task");
    *stop.lock().unwrap() = Some(last.0);
    let mut seen = Vec::new();
    for w in watchers {
        seen.push(w.await.expect("watcher task"));
    }
    let data: BTreeMap<String, String> = pairs
        .into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(&k).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect();

    let rec = rec.lock().unwrap();
    let mut violations = Vec::new();
    for s in &seen {
        check(s, &rec, &data, &mut violations);
    }
    // The late watcher read history; the live one polled: the same stream.
    let stream = |s: &Seen| -> Vec<(u64, Vec<u8>, bool, Vec<u8>)> {
        s.updates
            .iter()
            .flat_map(|(_, evs)| evs.iter())
            .map(|e| (e.revision, e.key.clone(), e.delete, e.value.clone()))
            .collect()
    };
    if seen[0].error.is_none() && seen[2].error.is_none() && stream(&seen[0]) != stream(&seen[2]) {
        violations.push(format!(
            "the late watcher saw {} events, the live one {}: not the same stream",
            stream(&seen[2]).len(),
            stream(&seen[0]).len()
        ));
    }
    violations.truncate(12);
    let acked = rec.attempts.values().filter(|a| a.acked.is_some()).count();
    WatchReport {
        violations,
        summary: format!(
            "writes acked {acked} (attempted {}), deletes {}, failed {}; events seen {}; progress updates {}; ranges under w/: {split_ranges} split, {paused_ranges} after the pause; {}",
            rec.attempts.len(),
            rec.deletes,
            rec.failed,
            seen.iter()
                .map(|s| format!("{} {}", s.name, s.updates.iter().map(|u| u.1.len()).sum::<usize>()))
                .collect::<Vec<_>>()
                .join(", "),
            seen.iter().map(|s| s.progress).sum::<usize>(),
            log.join(", ")
        ),
    }
}
