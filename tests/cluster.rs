//! Three real `rangedb server` processes on loopback: write 1,000 keys while
//! the leader is kill -9'd and restarted; then every acknowledged write must
//! be on every node (read from each node's own replica).
#![cfg(not(madsim))]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rangedb::client::{Client, ClientOptions, ReadConsistency};

const KEYS: usize = 1000;
const WRITERS: usize = 8;

fn start_cluster(dir: &std::path::Path) -> Vec<Server> {
    let peers: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let clients: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let list = peers.join(",");
    (0..3)
        .map(|i| {
            let mut args = vec![
                "server".to_string(),
                format!("--peer-address={}", peers[i]),
                format!("--client-address={}", clients[i]),
                format!("--data-dir={}", dir.join(format!("n{}", i + 1)).display()),
            ];
            if i == 0 {
                args.push(format!("--peers={list}"));
                args.push("--cluster-init".into());
            } else {
                args.push(format!("--join={list}"));
            }
            Server::start(
                args,
                clients[i].clone(),
                peers[i].clone(),
                dir.join(format!("n{}.log", i + 1)),
            )
        })
        .collect()
}

async fn user_leader(client: &Client, addrs: &[String]) -> Option<usize> {
    for (i, a) in addrs.iter().enumerate() {
        if let Ok(st) = client.node_status(a).await {
            if st.ranges.iter().any(|r| r.range_id == 2 && r.is_leader) {
                return Some(i);
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_leader_during_writes_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut servers = start_cluster(dir.path());
    let endpoints: Vec<String> = servers.iter().map(|s| s.client_address.clone()).collect();
    let opts = ClientOptions {
        deadline: Duration::from_secs(30),
        ..Default::default()
    };
    let client = Arc::new(Client::new(endpoints.clone(), opts.clone()).unwrap());

    // Wait for the cluster to form.
    let start = Instant::now();
    while client.put(b"/it/probe", b"1").await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "cluster did not form"
        );
    }

    let next = Arc::new(AtomicUsize::new(0));
    let acked: Arc<Mutex<Vec<(usize, Instant)>>> = Arc::default();
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let (client, next, acked) = (client.clone(), next.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= KEYS {
                    return;
                }
                let (k, v) = (format!("/it/{i:04}"), format!("value-{i}"));
                if client.put(k.as_bytes(), v.as_bytes()).await.is_ok() {
                    acked.lock().unwrap().push((i, Instant::now()));
                }
            }
        }));
    }

    // Once a third is written, kill -9 the leader of the user range.
    while acked.lock().unwrap().len() < KEYS / 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let probe = Client::new(endpoints.clone(), opts.clone()).unwrap();
    let leader = user_leader(&probe, &endpoints)
        .await
        .expect("a leader while writes succeed");
    servers[leader].kill();
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    servers[leader].spawn();

    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let first_after = acked
        .iter()
        .map(|(_, t)| *t)
        .filter(|t| *t > killed_at)
        .min();
    let recovery = first_after.map(|t| t - killed_at);
    println!("leader node {} killed; first acknowledged write after {:?}; {} of {KEYS} writes acknowledged", leader + 1, recovery, acked.len());
    assert!(
        acked.len() >= KEYS * 9 / 10,
        "too many writes failed: {} of {KEYS} acknowledged",
        acked.len()
    );
    assert!(
        recovery.is_some(),
        "no write succeeded after the leader was killed"
    );

    // Every acknowledged write is on every node, including the restarted one.
    for s in &servers {
        let local = Client::new(vec![s.client_address.clone()], opts.clone()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut missing: Vec<usize> = acked.iter().map(|(i, _)| *i).collect();
        while !missing.is_empty() {
            let mut still = Vec::new();
            for &i in &missing {
                let k = format!("/it/{i:04}");
                match local.get_with(k.as_bytes(), ReadConsistency::Local).await {
                    Ok(Some(v)) => {
                        assert_eq!(v, format!("value-{i}").into_bytes(), "wrong value for {k}")
                    }
                    _ => still.push(i),
                }
            }
            missing = still;
            if !missing.is_empty() {
                assert!(
                    Instant::now() < deadline,
                    "node at {} is missing {} acknowledged writes, e.g. /it/{:04}\nlog:\n{}",
                    s.client_address,
                    missing.len(),
                    missing[0],
                    s.log_text()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
