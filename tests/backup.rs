//! Backups through the real binary (`rangedb admin backup …`): a backup
//! taken while 8 clients run bank transfers restores into a fresh cluster
//! with the bank total intact and every key equal to a snapshot read at the
//! backup's timestamp; an incremental backup restores on top of it; damaged,
//! partial and foreign directories are refused with nothing written.
#![cfg(not(madsim))]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rangedb::api::Timestamp;
use rangedb::client::{Client, ClientOptions, TxnOptions};

const ACCOUNTS: usize = 20;
const BALANCE: u64 = 100;

fn account(i: usize) -> Vec<u8> {
    format!("/bank/acct-{i:02}").into_bytes()
}

/// Every user pair at `ts`.
async fn snapshot(c: &Client, ts: Timestamp) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut from = Some(Vec::new());
    while let Some(cur) = from {
        let (page, next) = c.snapshot_page(&cur, b"", 500, ts, None).await.unwrap();
        out.extend(
            page.into_iter()
                .map(|(k, v)| (k, v.expect("a snapshot has no deletions"))),
        );
        from = next;
    }
    out
}

fn bank_total(pairs: &[(Vec<u8>, Vec<u8>)]) -> u64 {
    pairs
        .iter()
        .filter(|(k, _)| k.starts_with(b"/bank/"))
        .map(|(_, v)| String::from_utf8_lossy(v).parse::<u64>().unwrap())
        .sum()
}

/// Runs the CLI off the async runtime; its output as JSON (stdout).
async fn cli_json(ep: &str, args: &[&str]) -> serde_json::Value {
    let (ep, args): (String, Vec<String>) =
        (ep.into(), args.iter().map(|s| s.to_string()).collect());
    let out = tokio::task::spawn_blocking(move || {
        let mut all = vec![
            "--output".to_string(),
            "json".into(),
            "--timeout".into(),
            "60".into(),
        ];
        all.extend(args);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        cli(&ep, &refs)
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(stdout(&out).trim()).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)))
}

/// Eight clients moving money between accounts until `stop`.
fn start_transfers(
    ep: &str,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..8)
        .map(|w| {
            let (ep, stop, done) = (ep.to_string(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let eps = ep.split(',').map(str::to_string).collect();
                let c = Client::new(eps, ClientOptions::default()).unwrap();
                let mut n: usize = w;
                while !stop.load(Ordering::Relaxed) {
                    n = n.wrapping_mul(31).wrapping_add(7);
                    let (a, b) = (n % ACCOUNTS, (n / 7 + 1) % ACCOUNTS);
                    if a == b {
                        continue;
                    }
                    let r = c
                        .transact(&TxnOptions::default(), |t| {
                            Box::pin(async move {
                                let get = |v: Option<Vec<u8>>| -> u64 {
                                    String::from_utf8_lossy(&v.unwrap_or_default())
                                        .parse()
                                        .unwrap_or(0)
                                };
                                let x = get(t.get(&account(a)).await?);
                                let y = get(t.get(&account(b)).await?);
                                let amt = x.min(3);
                                t.put(&account(a), (x - amt).to_string().as_bytes())?;
                                t.put(&account(b), (y + amt).to_string().as_bytes())?;
                                Ok(())
                            })
                        })
                        .await;
                    match r {
                        Ok(_) => {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
        })
        .collect()
}

async fn wait_for_transfers(done: &AtomicU64, more: u64) {
    let target = done.load(Ordering::Relaxed) + more;
    for _ in 0..600 {
        if done.load(Ordering::Relaxed) >= target {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("transfers stalled");
}

fn restore_err(ep: &str, args: &[&str]) -> String {
    let out = cli(ep, args);
    assert!(!out.status.success(), "{}", stdout(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backups_under_bank_transfers_restore_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let (full, incr) = (dir.path().join("full"), dir.path().join("incr"));
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let source = start_cluster_n(&a_dir, 3);
    let ep = client_endpoints(&source);
    put_when_ready(&ep, "/other/x", "1");
    let c = Client::new(
        source.iter().map(|s| s.client_address.clone()).collect(),
        ClientOptions::default(),
    )
    .unwrap();
    c.batch_put(
        (0..ACCOUNTS)
            .map(|i| (account(i), BALANCE.to_string().into_bytes()))
            .collect(),
    )
    .await
    .unwrap();
    for i in 0..300 {
        c.put(format!("/data/{i:04}").as_bytes(), &vec![b'v'; 100 + i])
            .await
            .unwrap();
    }
    // Two ranges under the accounts: transfers are two-phase across them.
    let _ = cli(&ep, &["admin", "split", "/bank/acct-10"]);

    let (stop, done) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let workers = start_transfers(&ep, stop.clone(), done.clone());
    wait_for_transfers(&done, 20).await;
    // Small files: several spans.
    let f = full.display().to_string();
    let m1 = cli_json(
        &ep,
        &["admin", "backup", "create", &f, "--span-bytes", "8000"],
    )
    .await;
    let t1 = Timestamp(m1["timestamp"].as_u64().unwrap());
    assert!(m1["files"].as_u64().unwrap() >= 3, "{m1}");
    wait_for_transfers(&done, 20).await;
    // `--as-of` has millisecond precision, and a new oracle starts up to
    // its high-water window ahead of the wall clock: let the timestamps'
    // milliseconds move past the full backup's before the incremental.
    while c.timestamps(1).await.unwrap().physical_ms() <= t1.physical_ms() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.delete(b"/data/0007").await.unwrap();
    c.put(b"/data/new", b"n").await.unwrap();
    let i = incr.display().to_string();
    let m2 = cli_json(
        &ep,
        &["admin", "backup", "create", &i, "--incremental-from", &f],
    )
    .await;
    let t2 = Timestamp(m2["timestamp"].as_u64().unwrap());
    assert_eq!(m2["kind"], "incremental");
    assert!(m2["deletes"].as_u64().unwrap() >= 1, "{m2}");
    assert!(
        m2["rows"].as_u64().unwrap() < m1["rows"].as_u64().unwrap(),
        "{m2}"
    );
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let at1 = snapshot(&c, t1).await;
    let at2 = snapshot(&c, t2).await;
    assert_eq!(bank_total(&at1), ACCOUNTS as u64 * BALANCE);
    assert_ne!(at1, at2);

    // Listed in the source cluster; verified offline.
    let list = cli_json(&ep, &["admin", "backup", "list"]).await;
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    let v = cli_json(&ep, &["admin", "backup", "verify", &i]).await;
    assert_eq!(v["ok"], true);

    // A fresh cluster: the full backup restores to exactly the snapshot.
    let target = start_cluster_n(&b_dir, 3);
    let ep_b = client_endpoints(&target);
    wait_until(Duration::from_secs(60), "the new cluster", || {
        cli(&ep_b, &["get", "/nothing"]).status.code() == Some(1)
    });
    let cb = Client::new(
        target.iter().map(|s| s.client_address.clone()).collect(),
        ClientOptions::default(),
    )
    .unwrap();
    let r = cli_json(&ep_b, &["admin", "backup", "restore", &f]).await;
    assert_eq!(r["verified"], true, "{r}");
    let now = cb.timestamps(1).await.unwrap();
    let restored = snapshot(&cb, now).await;
    assert_eq!(bank_total(&restored), ACCOUNTS as u64 * BALANCE);
    assert!(
        restored == at1,
        "the restore differs from the snapshot at the backup's timestamp"
    );

    // Not empty now: refused without --replace, with nothing written.
    let err = restore_err(&ep_b, &["admin", "backup", "restore", &i]);
    assert!(err.contains("already holds user data"), "{err}");
    // The chain restores to the incremental's timestamp.
    cli_json(&ep_b, &["admin", "backup", "restore", &i, "--replace"]).await;
    let now = cb.timestamps(1).await.unwrap();
    assert!(
        snapshot(&cb, now).await == at2,
        "the chain's restore differs from the snapshot"
    );
    // --as-of within the chain: back to the full backup.
    let as_of = m1["time"].as_str().unwrap().to_string();
    let r = cli_json(
        &ep_b,
        &[
            "admin",
            "backup",
            "restore",
            &i,
            "--replace",
            "--as-of",
            &as_of,
        ],
    )
    .await;
    assert_eq!(r["backups"].as_array().map(Vec::len), Some(1), "{r}");
    let now = cb.timestamps(1).await.unwrap();
    assert_same(&snapshot(&cb, now).await, &at1, "--as-of");

    // Damaged, partial and foreign directories: refused, nothing written.
    let damaged = dir.path().join("damaged");
    copy_dir(&full, &damaged);
    let victim = damaged.join("data/span-00001.rdb");
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&victim, bytes).unwrap();
    let d = damaged.display().to_string();
    let err = restore_err(&ep_b, &["admin", "backup", "restore", &d, "--replace"]);
    assert!(
        err.contains("damaged") && err.contains("span-00001.rdb"),
        "{err}"
    );
    let err = restore_err(&ep_b, &["admin", "backup", "verify", &d]);
    assert!(err.contains("damaged"), "{err}");
    std::fs::remove_file(damaged.join("manifest.json")).unwrap();
    let err = restore_err(&ep_b, &["admin", "backup", "restore", &d, "--replace"]);
    assert!(err.contains("not a complete RangeDB backup"), "{err}");
    let foreign = dir.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("manifest.json"), "{\"hello\": 1}").unwrap();
    let err = restore_err(
        &ep_b,
        &["admin", "backup", "restore", &foreign.display().to_string()],
    );
    assert!(err.contains("not a RangeDB backup manifest"), "{err}");
    let now = cb.timestamps(1).await.unwrap();
    assert!(
        snapshot(&cb, now).await == at1,
        "a refused restore wrote something"
    );
    drop((source, target));
}

/// An interrupted backup resumes where it stopped, at its timestamp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_backup_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let server = single_node(dir.path());
    let ep = server.client_address.clone();
    put_when_ready(&ep, "/r/0", "x");
    let c = Client::new(vec![ep.clone()], ClientOptions::default()).unwrap();
    for i in 0..200 {
        c.put(format!("/r/{i:03}").as_bytes(), &[b'x'; 200])
            .await
            .unwrap();
    }
    let b = dir.path().join("bk");
    let bs = b.display().to_string();
    cli_json(
        &ep,
        &["admin", "backup", "create", &bs, "--span-bytes", "5000"],
    )
    .await;
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("manifest.json")).unwrap()).unwrap();
    assert!(m["spans"].as_array().unwrap().len() >= 4, "{m}");
    // Make it look interrupted after two spans: the manifest gone, the
    // progress file back, later files lost.
    let mut progress: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("manifest.json")).unwrap()).unwrap();
    progress["spans"].as_array_mut().unwrap().truncate(2);
    progress["state"] = serde_json::Value::Null;
    std::fs::write(b.join("progress.json"), progress.to_string()).unwrap();
    std::fs::remove_file(b.join("manifest.json")).unwrap();
    std::fs::remove_file(b.join("data/span-00003.rdb")).unwrap();
    let again = cli(
        &ep,
        &["admin", "backup", "create", &bs, "--span-bytes", "5000"],
    );
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("resuming backup"),
        "{}",
        stderr(&again)
    );
    let m2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m2["timestamp"], m["timestamp"]);
    assert_eq!(m2["state"], m["state"]);
    // The two spans kept, and the rest written again.
    let files = m2["spans"].as_array().unwrap();
    assert!(files.len() >= 3, "{m2}");
    assert_eq!(files[..2], m["spans"].as_array().unwrap()[..2]);
    let v = cli(&ep, &["admin", "backup", "verify", &bs]);
    assert!(
        stdout(&v).starts_with("OK: backup "),
        "{}{}",
        stdout(&v),
        stderr(&v)
    );
    drop(server);
}

fn assert_same(got: &[(Vec<u8>, Vec<u8>)], want: &[(Vec<u8>, Vec<u8>)], what: &str) {
    if got == want {
        return;
    }
    let show = |p: &[(Vec<u8>, Vec<u8>)]| -> std::collections::BTreeMap<String, String> {
        p.iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).chars().take(20).collect(),
                )
            })
            .collect()
    };
    let (g, w) = (show(got), show(want));
    let diff: Vec<String> = g
        .keys()
        .chain(w.keys())
        .filter(|k| g.get(*k) != w.get(*k))
        .map(|k| format!("{k}: {:?} (want {:?})", g.get(k), w.get(k)))
        .collect();
    panic!(
        "{what}: {} pairs, want {}; differences: {diff:?}",
        got.len(),
        want.len()
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("data")).unwrap();
    for entry in walk(from) {
        let rel = entry.strip_prefix(from).unwrap();
        std::fs::copy(&entry, to.join(rel)).unwrap();
    }
}

fn walk(d: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// An incremental backup whose parent is older than the GC horizon is
/// refused with one clear line (its changes are no longer all kept).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_from_a_parent_past_the_gc_horizon_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = single_node(dir.path());
    let ep = server.client_address.clone();
    put_when_ready(&ep, "/g/a", "1");
    let o = cli(&ep, &["admin", "config", "set", "gc_ttl", "10"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let full = dir.path().join("full").display().to_string();
    cli_json(&ep, &["admin", "backup", "create", &full]).await;
    // Garbage for GC to collect past the parent's timestamp.
    for v in ["2", "3", "4"] {
        assert!(cli(&ep, &["put", "/g/a", v]).status.success());
    }
    assert!(cli(&ep, &["delete", "/g/a"]).status.success());
    tokio::time::sleep(Duration::from_secs(14)).await;
    let incr = dir.path().join("incr").display().to_string();
    let err = restore_err(
        &ep,
        &[
            "admin",
            "backup",
            "create",
            &incr,
            "--incremental-from",
            &full,
        ],
    );
    assert!(
        err.contains("older than the GC horizon") && err.contains("full backup"),
        "{err}"
    );
    drop(server);
}
