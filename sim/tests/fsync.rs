//! A failed fsync stops the node (issue 13, bad disks): the leader of the
//! user range starts failing every synced write while clients write; it
//! must stop within seconds rather than retry and go on (after a failed
//! fsync the kernel may have dropped the dirty pages), the others go on,
//! and once its disk is replaced and it restarts, every acknowledged write
//! is there and every replica holds the same data.
#![cfg(madsim)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rangedb_sim::{replay_hint, Cluster};

const WORKLOAD: Duration = Duration::from_secs(14);

#[madsim::test]
async fn a_failed_fsync_stops_the_node_and_loses_nothing() {
    let cluster = Arc::new(Cluster::start(3));
    let seed = cluster.seed();
    cluster.wait_for_leaders(Duration::from_secs(20)).await;

    // Writers: unique keys; what was acknowledged.
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let mut tasks = Vec::new();
    for c in 0..3 {
        let client = cluster.client(Duration::from_secs(10));
        let acked = acked.clone();
        tasks.push(cluster.client_host.spawn(async move {
            let start = tokio::time::Instant::now();
            let mut n = 0;
            while start.elapsed() < WORKLOAD {
                n += 1;
                let (k, v) = (format!("/sim/c{c}/{n:05}"), format!("v{n}"));
                if client.put(k.as_bytes(), v.as_bytes()).await.is_ok() {
                    acked.lock().unwrap().insert(k, v);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, victim) = cluster
        .leader_of_key(b"/sim/x")
        .await
        .unwrap_or_else(|| panic!("no leader of /sim/\n{}", replay_hint(seed)));
    let before = acked.lock().unwrap().len();
    cluster.node(victim).engine.fail_syncs(true);
    let failed_at = tokio::time::Instant::now();
    while !cluster.stopped(victim) {
        assert!(
            failed_at.elapsed() < Duration::from_secs(5),
            "node {victim} goes on with a disk whose fsyncs fail\n{}",
            replay_hint(seed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopped_after = failed_at.elapsed();
    // The others go on without it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = acked.lock().unwrap().len();
    assert!(
        during > before + 10,
        "the cluster made no progress without node {victim} ({before} -> {during})\n{}",
        replay_hint(seed)
    );
    // A new disk (same data), restarted as a supervisor would.
    cluster.node(victim).engine.fail_syncs(false);
    assert!(cluster.restart_if_stopped(victim));
    for t in tasks {
        t.await.expect("client task");
    }

    let client = cluster.client(Duration::from_secs(30));
    let found = cluster
        .client_host
        .spawn(async move { client.scan(b"/sim/", b"/sim0", 100_000, false).await })
        .await
        .expect("client task")
        .unwrap_or_else(|e| panic!("final scan failed: {e}\n{}", replay_hint(seed)));
    let found: BTreeMap<Vec<u8>, Vec<u8>> = found.into_iter().collect();
    let acked = acked.lock().unwrap().clone();
    for (k, v) in &acked {
        assert_eq!(
            found.get(k.as_bytes()).map(|v| v.as_slice()),
            Some(v.as_bytes()),
            "acknowledged write {k} lost\n{}",
            replay_hint(seed)
        );
    }
    let dumps = cluster.wait_converged(Duration::from_secs(30)).await;
    for (i, d) in dumps.iter().enumerate().skip(1) {
        assert!(
            d == &dumps[0],
            "replica data differs between node 1 and node {}\n{}",
            i + 1,
            replay_hint(seed)
        );
    }
    println!(
        "seed {seed}: node {victim} stopped {stopped_after:?} after its fsyncs began to fail; {} writes acknowledged, all present",
        acked.len()
    );
}
