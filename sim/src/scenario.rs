//! One simulation run: a cluster with seed-drawn knobs, concurrent workload
//! clients, a nemesis, then healing and every checker. Everything is drawn
//! from the seed, so `run` with the same options replays exactly.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rangedb::chaos::{self, Canary};

use crate::checks::{check_registers, check_scans, check_set, check_timestamps, RaftSafety};
use crate::cluster::{Cluster, ClusterOptions};
use crate::history::{History, Op, Outcome};
use crate::nemesis::{Fault, Nemesis};
use crate::workload::{self, WorkloadOptions, SET_PREFIX};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub seed: u64,
    pub canary: Option<Canary>,
    /// Cluster size; drawn from the seed (3 or 5) when None.
    pub nodes: Option<usize>,
    /// How long clients and the nemesis run (simulated).
    pub chaos: Duration,
    pub clients: usize,
    pub faults: Vec<Fault>,
    /// BUGGIFY on or off; drawn from the seed when None.
    pub buggify: Option<bool>,
}

impl RunOptions {
    pub fn new(seed: u64) -> RunOptions {
        RunOptions {
            seed,
            canary: None,
            nodes: None,
            chaos: Duration::from_secs(20),
            clients: 4,
            faults: Fault::ALL.to_vec(),
            buggify: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunReport {
    pub seed: u64,
    pub violations: Vec<String>,
    pub schedule: Vec<String>,
    pub knobs: String,
    pub summary: String,
    pub trace_hash: u64,
    pub sim_secs: f64,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

fn fnv(h: &mut u64, s: &str) {
    for b in s.bytes() {
        *h ^= b as u64;
        *h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
}

pub async fn run(opts: RunOptions) -> RunReport {
    let started = tokio::time::Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x5eed_5eed_5eed_5eed);
    let nodes = opts.nodes.unwrap_or(if rng.gen_bool(0.25) { 5 } else { 3 });
    let election_ticks = rng.gen_range(5..=15);
    let heartbeat_ticks = rng.gen_range(1..=3).min(election_ticks - 1);
    let log_compact_entries = *[10u64, 40, 200, 2000].choose(&mut rng).unwrap_or(&2000);
    let max_msgs_per_loop = *[1usize, 8, 64, 4096].choose(&mut rng).unwrap_or(&4096);
    let buggify = opts.buggify.unwrap_or_else(|| rng.gen_bool(0.5));
    // Small ranges make the Store split by size on its own during the run.
    let range_max_bytes = *[None, Some(2048u64), Some(8192)]
        .choose(&mut rng)
        .unwrap_or(&None);
    // In half the 5-node runs, node 5 joins the running cluster as a new node.
    // (Its own RNG, so adding this knob did not change earlier seeds' runs.)
    let joiners =
        usize::from(nodes == 5 && ChaCha8Rng::seed_from_u64(opts.seed ^ 0x10e5).gen_bool(0.5));
    // GC within the run in two thirds of the seeds (its own RNG).
    let gc_ttl = *[None, Some(1u64), Some(3)]
        .choose(&mut ChaCha8Rng::seed_from_u64(opts.seed ^ 0x6c_77))
        .unwrap_or(&None);
    let knobs = format!(
        "nodes={nodes} election_ticks={election_ticks} heartbeat_ticks={heartbeat_ticks} \
         log_compact_entries={log_compact_entries} max_msgs_per_loop={max_msgs_per_loop} buggify={buggify} \
         range_max_bytes={range_max_bytes:?} joiners={joiners} gc_ttl={gc_ttl:?} canary={}",
        opts.canary.map(|c| c.name()).unwrap_or("none")
    );

    chaos::set_canary(opts.canary);
    chaos::enable_buggify(buggify);
    let safety = RaftSafety::new(nodes.min(3));
    let sink = safety.clone();
    chaos::set_raft_hook(Some(Box::new(move |e| sink.observe(e))));

    let cluster = Arc::new(Cluster::start_with(ClusterOptions {
        nodes,
        log_compact_entries,
        election_ticks,
        heartbeat_ticks,
        max_msgs_per_loop,
        joiners,
        tls: false,
    }));
    let history = History::new();
    let txn_history = crate::txn_workload::TxnHistory::default();
    let mut violations = Vec::new();
    let mut schedule = Vec::new();

    if !wait_for_leaders(&cluster, Duration::from_secs(30)).await {
        violations
            .push("liveness: the new cluster elected no leader for every range within 30s".into());
    } else {
        {
            // Repair within the run: replicas of a node dead for 3s are replaced.
            let client = cluster.client(Duration::from_secs(10));
            let set = cluster
                .client_host
                .spawn(async move { client.set_config("dead_node_timeout", "3").await })
                .await;
            if !matches!(set, Ok(Ok(_))) {
                violations.push(format!(
                    "liveness: could not set dead_node_timeout: {set:?}"
                ));
            }
        }
        if let Some(ttl) = gc_ttl {
            let client = cluster.client(Duration::from_secs(10));
            let set = cluster
                .client_host
                .spawn(async move { client.set_config("gc_ttl", &ttl.to_string()).await })
                .await;
            if !matches!(set, Ok(Ok(_))) {
                violations.push(format!("liveness: could not set gc_ttl: {set:?}"));
            }
        }
        if let Some(max) = range_max_bytes {
            let client = cluster.client(Duration::from_secs(10));
            let set = cluster
                .client_host
                .spawn(async move { client.set_config("range_max_bytes", &max.to_string()).await })
                .await;
            if !matches!(set, Ok(Ok(_))) {
                violations.push(format!("liveness: could not set range_max_bytes: {set:?}"));
            }
        }
        // Chaos phase: clients and nemesis together.
        let stop_us = history.now_us() + opts.chaos.as_micros() as u64;
        let mut clients = Vec::new();
        for id in 0..opts.clients {
            let client = cluster.client(Duration::from_secs(10));
            let (h, crng) = (history.clone(), ChaCha8Rng::seed_from_u64(rng.gen()));
            clients.push(cluster.client_host.spawn(workload::client_loop(
                id,
                client,
                h,
                crng,
                WorkloadOptions::default(),
                stop_us,
            )));
        }
        // One oracle client, on its own RNG.
        {
            let client = cluster.client(Duration::from_secs(10));
            let trng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x7500_7500);
            clients.push(cluster.client_host.spawn(workload::tso_loop(
                opts.clients,
                client,
                history.clone(),
                trng,
                stop_us,
            )));
        }
        // Transaction clients, on their own RNG.
        for i in 0..2 {
            let mut xrng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x7a7a_0000 ^ i as u64);
            let faults = crate::txn_workload::SimFaults::draw(&mut xrng);
            let client = cluster
                .client(Duration::from_secs(10))
                .with_commit_faults(Arc::new(faults));
            clients.push(cluster.client_host.spawn(crate::txn_workload::txn_loop(
                opts.clients + 1 + i,
                client,
                history.clone(),
                txn_history.clone(),
                xrng,
                stop_us,
            )));
        }
        let nemesis = Nemesis::new(
            cluster.clone(),
            ChaCha8Rng::seed_from_u64(rng.gen()),
            opts.faults.clone(),
            history.clone(),
        );
        schedule = nemesis.run(opts.chaos).await;
        for c in clients {
            let _ = c.await;
        }
        chaos::enable_buggify(false);

        // Liveness: after healing, every client makes progress within 30s.
        let mut probes = Vec::new();
        for id in 0..opts.clients {
            let client = cluster.client(Duration::from_secs(30));
            let h = history.clone();
            probes.push(cluster.client_host.spawn(async move {
                let t0 = h.now_us();
                let key = format!("/live/c{id}");
                // An ambiguous failure is not a lack of progress: an
                // application checks and tries again, within the bound.
                let mut put = client.put(key.as_bytes(), b"ok").await;
                while put.as_ref().is_err_and(|e| e.is_ambiguous()) && h.now_us() - t0 < 30_000_000 {
                    put = client.put(key.as_bytes(), b"ok").await;
                }
                let get = client.get(key.as_bytes()).await;
                let secs = (h.now_us() - t0) as f64 / 1e6;
                match (put, get) {
                    (Ok(()), Ok(Some(_))) => None,
                    (p, g) => Some(format!(
                        "liveness: client {id} made no progress within 30s after healing ({secs:.1}s): put {p:?}, get {g:?}"
                    )),
                }
            }));
        }
        for p in probes {
            if let Ok(Some(v)) = p.await {
                violations.push(v);
            }
        }
    }

    // The final checks compare the directory and every replica against each
    // other: they need the layout to hold still. Stop starting merges (those
    // under way finish); the chaos phase exercised them.
    if violations.is_empty() {
        let client = cluster.client(Duration::from_secs(10));
        let set = cluster
            .client_host
            .spawn(async move { client.set_config("merge_max_bytes", "0").await })
            .await;
        if !matches!(set, Ok(Ok(_))) {
            violations.push(format!("liveness: could not set merge_max_bytes: {set:?}"));
        }
    }

    // Final state of the set, through a linearizable scan.
    let entries = history.entries();
    let final_keys = if violations.is_empty() {
        let client = cluster.client(Duration::from_secs(30));
        let scan = Op::Scan {
            prefix: SET_PREFIX.into(),
        };
        match cluster
            .client_host
            .spawn(async move { workload::execute(&client, &scan).await })
            .await
        {
            Ok(Outcome::Scanned(keys)) => Some(keys.into_iter().collect::<BTreeSet<String>>()),
            other => {
                violations.push(format!("liveness: final scan failed: {other:?}"));
                None
            }
        }
    } else {
        None
    };

    // Final state of the transaction workloads (locks left by crashed
    // coordinators are resolved on the way).
    let final_txn_state = if violations.is_empty() {
        let client = cluster.client(Duration::from_secs(30));
        match cluster
            .client_host
            .spawn(async move { crate::txn_workload::final_state(&client).await })
            .await
        {
            Ok(Ok(f)) => Some(f),
            other => {
                violations.push(format!(
                    "liveness: final read of the transaction workloads failed: {other:?}"
                ));
                None
            }
        }
    } else {
        None
    };

    let regs = check_registers(&entries);
    violations.extend(regs.violations.iter().cloned());
    if let Some(keys) = &final_keys {
        violations.extend(check_set(&entries, keys));
    }
    violations.extend(check_scans(&entries));
    let (tso_violations, timestamps) = check_timestamps(&entries);
    violations.extend(tso_violations);
    let (txn_violations, txn_summary) =
        crate::txn_workload::check(&txn_history, final_txn_state.as_ref());
    violations.extend(txn_violations);

    let mut dumps = Vec::new();
    if violations.is_empty() {
        // Replication must be back to replication_factor (repair and
        // up-replication by the placement driver) within the bound.
        let rf = nodes.min(3);
        match cluster.converge(Duration::from_secs(60), Some(rf)).await {
            Ok(d) => dumps = d,
            Err(e) => violations.push(format!("convergence: {e}")),
        }
    }
    if violations.is_empty() {
        if let Err(e) = check_directory(&cluster, Duration::from_secs(15)).await {
            violations.push(e);
        }
    }
    violations.extend(safety.violations());
    chaos::set_raft_hook(None);
    chaos::set_canary(None);

    let ranges = cluster
        .statuses()
        .await
        .first()
        .map(|s| s.ranges.len())
        .unwrap_or(0);
    let acked = entries
        .iter()
        .filter(|e| e.outcome == Outcome::Written)
        .count();
    let unknown = entries
        .iter()
        .filter(|e| matches!(e.outcome, Outcome::Unknown(_)))
        .count();
    let deletes = entries
        .iter()
        .filter(|e| matches!(e.op, Op::Delete { .. }))
        .count();
    let summary = format!(
        "{} ops ({acked} acknowledged writes, {deletes} deletes, {unknown} unknown outcomes); {} register keys / {} ops checked \
         for linearizability ({} hit the search bound: unverified); {timestamps} oracle timestamps checked; {} raft events checked; {} faults; \
         {ranges} ranges at the end; {txn_summary}",
        entries.len(),
        regs.keys,
        regs.ops,
        regs.unknown.len(),
        safety.events(),
        schedule.len().saturating_sub(1)
    );

    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for e in &entries {
        fnv(&mut h, &format!("{e:?}"));
    }
    for s in &schedule {
        fnv(&mut h, s);
    }
    for d in &dumps {
        fnv(&mut h, &format!("{d:?}"));
    }
    fnv(&mut h, &format!("{violations:?}"));
    RunReport {
        seed: opts.seed,
        violations,
        schedule,
        knobs,
        summary,
        trace_hash: h,
        sim_secs: started.elapsed().as_secs_f64(),
    }
}

/// The range directory (`_/partitions/`) must come to describe exactly the
/// ranges the replicas hold (same ids, spans and epochs).
async fn check_directory(cluster: &Cluster, limit: Duration) -> Result<(), String> {
    let start = tokio::time::Instant::now();
    loop {
        let st = cluster.statuses().await;
        // Every range, as its leader describes it.
        let mut want: Vec<(u64, String, String, u64, u64)> = st
            .iter()
            .flat_map(|s| s.ranges.iter().filter(|r| r.is_leader))
            .map(|r| {
                (
                    r.range_id,
                    hex(&r.start_key),
                    hex(&r.end_key),
                    r.version,
                    r.conf_ver,
                )
            })
            .collect();
        want.sort();
        want.dedup();
        want.sort();
        let client = cluster.client(Duration::from_secs(5));
        let listed = cluster
            .client_host
            .spawn(async move {
                client
                    .scan(b"_/partitions/", b"_/partitions0", 100_000, false)
                    .await
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        let mut got: Vec<(u64, String, String, u64, u64)> = Vec::new();
        if let Ok(pairs) = &listed {
            for (_, v) in pairs {
                let j: serde_json::Value = serde_json::from_slice(v).unwrap_or_default();
                got.push((
                    j["range_id"].as_u64().unwrap_or(0),
                    j["start"].as_str().unwrap_or("").to_string(),
                    j["end"].as_str().unwrap_or("").to_string(),
                    j["version"].as_u64().unwrap_or(0),
                    j["conf_ver"].as_u64().unwrap_or(0),
                ));
            }
        }
        got.sort();
        if got == want {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(format!(
                "directory: _/partitions/ does not match the replicas after {limit:?}: replicas {want:?}, directory {got:?} ({:?})",
                listed.err()
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn wait_for_leaders(cluster: &Cluster, limit: Duration) -> bool {
    let start = tokio::time::Instant::now();
    while start.elapsed() < limit {
        let st = cluster.statuses().await;
        if st.len() == cluster.nodes.len() && crate::cluster::all_ranges_led(&st) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}
