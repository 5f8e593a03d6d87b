//! The first simulation: 3 nodes, concurrent clients doing puts and gets, the
//! leader cut off by a partition and healed, a node crashed (losing its
//! unsynced writes) and restarted. Afterwards every acknowledged write is
//! readable, nothing unwritten appears, and all replicas hold the same data.
//!
//! Run with `make sim`; replay one seed with `MADSIM_TEST_SEED=<seed> make sim`.
#![cfg(madsim)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rangedb_sim::{replay_hint, Cluster};

const CLIENTS: usize = 4;
const WORKLOAD: Duration = Duration::from_secs(14);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// Failed or timed out: may or may not have been applied.
    Unknown,
}

#[madsim::test]
async fn partition_crash_restart_keeps_acknowledged_writes() {
    let cluster = Arc::new(Cluster::start(3));
    let seed = cluster.seed();
    cluster.wait_for_leaders(Duration::from_secs(20)).await;

    // Workload: each client inserts unique keys and reads back earlier ones.
    let writes: Arc<Mutex<BTreeMap<String, (String, Outcome)>>> = Arc::default();
    let stale_reads: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let client = cluster.client(Duration::from_secs(10));
        let writes = writes.clone();
        let stale = stale_reads.clone();
        let rng_seed: u64 = madsim::rand::random();
        tasks.push(cluster.client_host.spawn(async move {
            let mut rng = ChaCha8Rng::seed_from_u64(rng_seed);
            let start = tokio::time::Instant::now();
            let mut acked: Vec<(String, String)> = Vec::new();
            let mut n = 0;
            while start.elapsed() < WORKLOAD {
                if rng.gen_bool(0.6) || acked.is_empty() {
                    n += 1;
                    let (k, v) = (format!("/sim/c{c}/{n:05}"), format!("v{c}-{n}"));
                    let r = client.put(k.as_bytes(), v.as_bytes()).await;
                    let outcome = if r.is_ok() {
                        Outcome::Ok
                    } else {
                        Outcome::Unknown
                    };
                    if r.is_ok() {
                        acked.push((k.clone(), v.clone()));
                    }
                    writes.lock().unwrap().insert(k, (v, outcome));
                } else {
                    // A linearizable read of an acknowledged write must see it.
                    let (k, v) = acked[rng.gen_range(0..acked.len())].clone();
                    if let Ok(got) = client.get(k.as_bytes()).await {
                        if got.as_deref() != Some(v.as_bytes()) {
                            stale
                                .lock()
                                .unwrap()
                                .push(format!("{k}: read {got:?}, acknowledged {v}"));
                        }
                    }
                }
            }
        }));
    }

    // Nemesis: isolate the user range's leader, heal; crash a node, restart it.
    let mut rng = ChaCha8Rng::seed_from_u64(madsim::rand::random());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut schedule = Vec::new();
    if let Some(leader) = cluster.leader(2).await {
        let secs = rng.gen_range(2..5);
        schedule.push(format!("isolate leader node {leader} for {secs}s"));
        cluster.isolate(leader);
        tokio::time::sleep(Duration::from_secs(secs)).await;
        cluster.heal();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let victim = rng.gen_range(1..=3u64);
    let down = rng.gen_range(1..4);
    schedule.push(format!("crash node {victim} for {down}s"));
    cluster.kill(victim);
    tokio::time::sleep(Duration::from_secs(down)).await;
    cluster.restart(victim);
    let schedule = schedule.join(", ");

    for t in tasks {
        t.await.expect("client task");
    }
    cluster.heal();

    // Checks.
    let stale = stale_reads.lock().unwrap().clone();
    assert!(
        stale.is_empty(),
        "stale reads: {stale:?}\n{}",
        replay_hint(seed) + "\nfaults: " + &schedule
    );
    let writes = writes.lock().unwrap().clone();
    let acked = writes.values().filter(|(_, o)| *o == Outcome::Ok).count();
    assert!(
        acked > 20,
        "too few acknowledged writes ({acked}): the cluster made no progress\n{}",
        replay_hint(seed) + "\nfaults: " + &schedule
    );

    let client = cluster.client(Duration::from_secs(30));
    let found = cluster
        .client_host
        .spawn(async move { client.scan(b"/sim/", b"/sim0", 100_000, false).await })
        .await
        .expect("client task")
        .unwrap_or_else(|e| {
            panic!(
                "final scan failed: {e}\n{}",
                replay_hint(seed) + "\nfaults: " + &schedule
            )
        });
    let found: BTreeMap<String, String> = found
        .into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(&k).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect();
    for (k, (v, outcome)) in &writes {
        match (outcome, found.get(k)) {
            (Outcome::Ok, Some(got)) if got == v => {}
            (Outcome::Ok, got) => panic!(
                "acknowledged write lost: {k}={v}, found {got:?}\n{}",
                replay_hint(seed) + "\nfaults: " + &schedule
            ),
            (Outcome::Unknown, Some(got)) if got != v => panic!(
                "{k} holds {got}, never written\n{}",
                replay_hint(seed) + "\nfaults: " + &schedule
            ),
            (Outcome::Unknown, _) => {}
        }
    }
    for k in found.keys() {
        assert!(
            writes.contains_key(k),
            "{k} appeared but was never written\n{}",
            replay_hint(seed) + "\nfaults: " + &schedule
        );
    }

    let dumps = cluster.wait_converged(Duration::from_secs(30)).await;
    for (i, d) in dumps.iter().enumerate().skip(1) {
        assert!(
            d == &dumps[0],
            "replica data differs between node 1 ({} keys) and node {} ({} keys)\n{}",
            dumps[0].len(),
            i + 1,
            d.len(),
            replay_hint(seed)
        );
    }
    println!(
        "seed {seed}: {} writes ({acked} acknowledged), {} keys on every replica; faults: {schedule}",
        writes.len(),
        dumps[0].len()
    );
}
