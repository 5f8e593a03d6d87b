//! Transactions under kill -9, with real processes: 3 servers, the keys
//! split into 12 ranges, 8 SDK clients (4 doing bank transfers between 8
//! accounts in 8 ranges, 4 appending to two lists in different ranges per
//! transaction), a server killed -9 and restarted mid-run, and a client
//! process (`rangedb bench --workload bank` on the same accounts) killed
//! -9 while it commits. Afterwards: the accounts still total their initial
//! sum; every list is a valid history (each committed read a prefix of the
//! final list, no duplicates, every committed append present, no aborted
//! one, nothing nobody appended); and once the lock TTL has passed, no lock
//! is left alive — a snapshot read of every key finishes at once, without
//! waiting for a live owner.
#![cfg(not(madsim))]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rangedb::client::transaction::LOCK_TTL;
use rangedb::client::{Client, ClientOptions, TxnOptions};
use rangedb::error::Error;

const ACCOUNTS: usize = 8;
/// The bench's key format, so the bench process moves money between the
/// same accounts (`--prefix /tb/ --keys 8`).
const BANK_PREFIX: &str = "/tb/";
const LISTS: usize = 4;
const INITIAL: i64 = 100;
const RUN: Duration = Duration::from_secs(10);

fn account(i: usize) -> Vec<u8> {
    format!("{BANK_PREFIX}{i:010}").into_bytes()
}

fn list_key(i: usize) -> Vec<u8> {
    format!("/tl/{i}").into_bytes()
}

fn parse_list(v: Option<Vec<u8>>) -> Vec<u64> {
    let s = v
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default();
    s.split(',').filter_map(|x| x.parse().ok()).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Committed,
    Aborted,
    Unknown,
}

/// One list transaction: appended `value` to two lists, having read them.
#[derive(Debug, Clone)]
struct Append {
    keys: [usize; 2],
    value: u64,
    read: [Vec<u64>; 2],
    outcome: Outcome,
}

async fn append_txn(client: &Client, keys: [usize; 2], value: u64) -> Append {
    let mut read = [Vec::new(), Vec::new()];
    let r = async {
        let mut t = client.begin().await?;
        for (i, k) in keys.iter().enumerate() {
            let mut l = parse_list(t.get(&list_key(*k)).await?);
            read[i] = l.clone();
            l.push(value);
            let s: Vec<String> = l.iter().map(u64::to_string).collect();
            t.put(&list_key(*k), s.join(",").as_bytes())?;
        }
        t.commit().await
    }
    .await;
    let outcome = match r {
        Ok(_) => Outcome::Committed,
        Err(e) if e.is_ambiguous() => Outcome::Unknown,
        Err(_) => Outcome::Aborted,
    };
    Append {
        keys,
        value,
        read,
        outcome,
    }
}

async fn balance(t: &mut rangedb::client::Transaction<'_>, i: usize) -> Result<i64, Error> {
    Ok(t.get(&account(i))
        .await?
        .map(|v| String::from_utf8_lossy(&v).parse().expect("a balance"))
        .unwrap_or(INITIAL))
}

async fn transfer(client: &Client, a: usize, b: usize) -> Result<(), Error> {
    client
        .transact(&TxnOptions::default(), |t| {
            Box::pin(async move {
                let (x, y) = (balance(t, a).await?, balance(t, b).await?);
                if x >= 5 {
                    t.put(&account(a), (x - 5).to_string().as_bytes())?;
                    t.put(&account(b), (y + 5).to_string().as_bytes())?;
                }
                Ok(())
            })
        })
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_and_lists_survive_kill9_of_a_server_and_a_client() {
    let dir = tempfile::tempdir().unwrap();
    let mut servers = start_cluster_n(dir.path(), 3);
    let endpoints = client_endpoints(&servers);
    let opts = ClientOptions {
        deadline: Duration::from_secs(30),
        ..Default::default()
    };
    let client = Arc::new(
        Client::new(
            endpoints.split(',').map(String::from).collect(),
            opts.clone(),
        )
        .unwrap(),
    );
    let t0 = Instant::now();
    while client.put(b"/probe", b"1").await.is_err() {
        assert!(t0.elapsed() < Duration::from_secs(60), "no cluster");
    }
    // 12 ranges: every account and every list in a range of its own.
    for k in (1..ACCOUNTS)
        .map(account)
        .chain((0..LISTS).map(list_key))
        .chain([b"/tm".to_vec()])
    {
        client.split(&k, false).await.expect("split");
    }

    let started = Instant::now();
    let appends: Arc<Mutex<Vec<Append>>> = Arc::default();
    let transfers: Arc<Mutex<(u64, u64)>> = Arc::default();
    let mut tasks = Vec::new();
    for c in 0..8u64 {
        let (client, appends, transfers) = (client.clone(), appends.clone(), transfers.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while started.elapsed() < RUN {
                n += 1;
                let x = (c * 7 + n * 13) as usize;
                if c < 4 {
                    let (a, b) = (x % ACCOUNTS, (x / ACCOUNTS + 1 + x) % ACCOUNTS);
                    let r = if a == b {
                        Ok(())
                    } else {
                        transfer(&client, a, b).await
                    };
                    let mut t = transfers.lock().unwrap();
                    if r.is_ok() {
                        t.0 += 1
                    } else {
                        t.1 += 1
                    }
                } else {
                    let keys = [x % LISTS, (x + 1 + n as usize % (LISTS - 1)) % LISTS];
                    let a = append_txn(&client, keys, c << 32 | n).await;
                    appends.lock().unwrap().push(a);
                }
            }
        }));
    }

    // A client process killed -9 mid-run (its commits in flight).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut bench = Command::new(BIN)
        .args(["--endpoints", &endpoints, "bench", "--workload", "bank"])
        .args(["--keys", "8", "--prefix", BANK_PREFIX, "--clients", "8"])
        .args(["--duration", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the bench client");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    bench.kill().expect("kill -9 the client process");
    let _ = bench.wait();

    // A server killed -9, restarted two seconds later.
    servers[1].kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    servers[1].spawn();

    for t in tasks {
        t.await.unwrap();
    }
    let (ok, failed) = *transfers.lock().unwrap();
    let appends = appends.lock().unwrap().clone();
    let committed = appends
        .iter()
        .filter(|a| a.outcome == Outcome::Committed)
        .count();
    eprintln!(
        "{ok} transfers committed ({failed} failed), {} list transactions ({committed} committed)",
        appends.len()
    );
    assert!(ok > 10, "too few transfers committed: {ok}");
    assert!(committed > 10, "too few list transactions committed");

    // Past every lock's TTL (the killed client's included): a snapshot read
    // of every key rolls dead locks forward or back and meets no live one.
    tokio::time::sleep(LOCK_TTL + Duration::from_secs(1)).await;
    let reader = Client::new(
        endpoints.split(',').map(String::from).collect(),
        ClientOptions {
            deadline: Duration::from_secs(10),
            ..Default::default()
        },
    )
    .unwrap();
    let read_start = Instant::now();
    let mut t = reader.begin().await.expect("begin the final read");
    let mut total = 0;
    for i in 0..ACCOUNTS {
        total += balance(&mut t, i).await.expect("read an account");
    }
    let mut lists = BTreeMap::new();
    for i in 0..LISTS {
        lists.insert(
            i,
            parse_list(t.get(&list_key(i)).await.expect("read a list")),
        );
    }
    let read_took = read_start.elapsed();
    assert_eq!(total, INITIAL * ACCOUNTS as i64, "the bank's total changed");
    assert!(
        read_took < Duration::from_secs(5),
        "the final read waited {read_took:?}: a lock outlived its TTL"
    );
    check_lists(&appends, &lists);
}

/// Every list a valid history of the appends (see the module docs).
fn check_lists(appends: &[Append], lists: &BTreeMap<usize, Vec<u64>>) {
    let appended: BTreeSet<u64> = appends.iter().map(|a| a.value).collect();
    for (k, l) in lists {
        let distinct: BTreeSet<&u64> = l.iter().collect();
        assert_eq!(distinct.len(), l.len(), "list {k} has duplicates: {l:?}");
        for v in l {
            assert!(
                appended.contains(v),
                "list {k} holds {v}, which nobody appended"
            );
        }
    }
    for a in appends {
        let present = a.keys.map(|k| lists[&k].contains(&a.value));
        match a.outcome {
            Outcome::Committed => {
                assert!(present[0] && present[1], "committed append lost: {a:?}");
                for (i, k) in a.keys.iter().enumerate() {
                    assert!(
                        lists[k].starts_with(&a.read[i]),
                        "a committed read of list {k} is not a prefix of it: {a:?} vs {:?}",
                        lists[k]
                    );
                }
            }
            Outcome::Aborted => assert!(
                !present[0] && !present[1],
                "an aborted append is in the lists: {a:?}"
            ),
            Outcome::Unknown => assert_eq!(
                present[0], present[1],
                "half of a transaction's appends: {a:?}"
            ),
        }
    }
}
