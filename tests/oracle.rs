//! The timestamp oracle on three real processes: clients take batches of
//! timestamps while the leader of the system range (where the oracle runs)
//! is kill -9'd and restarted. No timestamp may be handed out twice, and a
//! request that began after another finished must get larger timestamps —
//! across the failover, whatever the clocks say.
#![cfg(not(madsim))]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rangedb::client::{Client, ClientOptions};

/// (began, finished, first timestamp, count)
type Got = (Instant, Instant, u64, u64);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_stay_unique_and_ordered_across_an_oracle_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mut servers = start_cluster_n(dir.path(), 3);
    let endpoints: Vec<String> = servers.iter().map(|s| s.client_address.clone()).collect();
    let opts = ClientOptions {
        deadline: Duration::from_secs(30),
        ..Default::default()
    };
    let client = Arc::new(Client::new(endpoints.clone(), opts.clone()).unwrap());
    let start = Instant::now();
    while client.timestamps(1).await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(60), "no oracle");
    }

    let got: Arc<Mutex<Vec<Got>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..4u64 {
        let (client, got, stop) = (client.clone(), got.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut errors = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let n = 1 + c * 3;
                let began = Instant::now();
                match client.timestamps(n).await {
                    Ok(first) => got
                        .lock()
                        .unwrap()
                        .push((began, Instant::now(), first.0, n)),
                    Err(_) => errors += 1,
                }
            }
            errors
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leader = range_leader(&client, &endpoints, 1)
        .await
        .expect("a system range leader");
    servers[leader].kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    servers[leader].spawn();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut errors = 0;
    for t in tasks {
        errors += t.await.unwrap();
    }
    let mut got = got.lock().unwrap().clone();
    println!(
        "{} oracle requests answered ({errors} failed during the failover of node {})",
        got.len(),
        leader + 1
    );
    assert!(got.len() > 100, "too few answers: {}", got.len());

    // Unique: no two batches overlap.
    got.sort_by_key(|g| g.2);
    for w in got.windows(2) {
        assert!(
            w[0].2 + w[0].3 <= w[1].2,
            "timestamp {} handed out twice",
            w[1].2
        );
    }
    // Real-time order: a request that began after another finished got
    // larger timestamps.
    got.sort_by_key(|g| g.0);
    let mut done: Vec<&Got> = got.iter().collect();
    done.sort_by_key(|g| g.1);
    let mut highest = 0u64;
    let mut j = 0;
    for g in &got {
        while j < done.len() && done[j].1 < g.0 {
            highest = highest.max(done[j].2 + done[j].3 - 1);
            j += 1;
        }
        assert!(
            g.2 > highest,
            "timestamp {} was handed out after {} had been",
            g.2,
            highest
        );
    }
}
