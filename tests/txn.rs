//! Transactions through the real binary: `rangedb txn …` as separate
//! processes across two ranges (atomic commit, read-your-writes, a
//! conflicting transaction's exit code 4, a server kill -9 and restart
//! between two commands), and `rangedb repl` through a real
//! pseudo-terminal printing the original README's session.
#![cfg(not(madsim))]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

/// Runs a `txn` CLI command with the state directory `dir`.
fn txn(ep: &str, dir: &Path, args: &[&str], env_txn: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rangedb"));
    c.arg("--endpoints").arg(ep).args(args);
    c.env("RANGEDB_TXN_DIR", dir).env_remove("RANGEDB_TXN");
    if let Some(id) = env_txn {
        c.env("RANGEDB_TXN", id);
    }
    c.output().expect("run rangedb")
}

/// A single node ready for transactions (`first` written), and the CLI's
/// transaction state directory.
fn txn_node(dir: &Path, first: (&str, &str)) -> (Server, String, std::path::PathBuf) {
    let server = single_node(dir);
    let ep = server.client_address.clone();
    put_when_ready(&ep, first.0, first.1);
    (server, ep, dir.join("txns"))
}

/// Sets a cluster setting through the CLI, which must succeed.
fn set_config(ep: &str, name: &str, value: &str) {
    let o = cli(ep, &["admin", "config", "set", name, value]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// `rangedb txn commit` of the current transaction `id` succeeds.
fn commits(ep: &str, state: &Path, id: &str) {
    let o = txn(ep, state, &["txn", "commit"], None);
    assert_eq!(
        stdout(&o),
        format!("Transaction {id} committed\n"),
        "{}",
        stderr(&o)
    );
}

fn id_of(o: &Output) -> String {
    let s = stdout(o);
    let id = s
        .trim()
        .strip_prefix("Transaction started: ")
        .unwrap_or_else(|| panic!("not a begin: {s:?} {}", stderr(o)));
    assert_eq!(id.len(), 8, "{id}");
    id.to_string()
}

#[test]
fn cli_transactions_across_processes_and_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, ep, state) = txn_node(dir.path(), ("/user/000", "first"));
    assert!(cli(&ep, &["admin", "split", "/user/456"]).status.success());

    // Two puts in two ranges, separate processes, commit atomically.
    let id = id_of(&txn(&ep, &state, &["txn", "begin"], None));
    for (k, v) in [("/user/123", "John"), ("/user/456", "Jane")] {
        let o = txn(&ep, &state, &["txn", "put", k, v], None);
        assert_eq!(stdout(&o), "OK\n", "{}", stderr(&o));
    }
    // Nothing is visible before commit; the transaction reads its writes.
    assert_eq!(cli(&ep, &["get", "/user/123"]).status.code(), Some(1));
    let o = txn(&ep, &state, &["txn", "get", "/user/456"], None);
    assert_eq!(stdout(&o), "Jane\n");
    let o = txn(&ep, &state, &["txn", "range", "/user/", "/user/z"], None);
    assert_eq!(
        stdout(&o),
        "/user/000: first\n/user/123: John\n/user/456: Jane\n"
    );
    commits(&ep, &state, &id);
    assert_eq!(stdout(&cli(&ep, &["get", "/user/123"])), "John\n");
    assert_eq!(stdout(&cli(&ep, &["get", "/user/456"])), "Jane\n");
    let o = txn(&ep, &state, &["txn", "status", &id], None);
    assert!(stdout(&o).contains("State: committed"), "{}", stdout(&o));
    // A committed transaction takes no more writes.
    let o = txn(
        &ep,
        &state,
        &["txn", "put", "--txn", &id, "/user/1", "x"],
        None,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("committed"), "{}", stderr(&o));

    // A reads /user/123 and writes /user/456; B (another shell) writes
    // /user/123 and commits first: A's commit is a conflict, exit code 4,
    // and nothing of A is written.
    let a = id_of(&txn(&ep, &state, &["txn", "begin"], None));
    let b = id_of(&txn(&ep, &state, &["txn", "begin"], None));
    assert_eq!(
        stdout(&txn(&ep, &state, &["txn", "get", "/user/123"], Some(&a))),
        "John\n"
    );
    assert!(
        txn(&ep, &state, &["txn", "put", "/user/456", "fromA"], Some(&a))
            .status
            .success()
    );
    assert!(
        txn(&ep, &state, &["txn", "put", "/user/123", "fromB"], Some(&b))
            .status
            .success()
    );
    assert!(txn(&ep, &state, &["txn", "commit"], Some(&b))
        .status
        .success());
    let o = txn(&ep, &state, &["txn", "commit", "--txn", &a], None);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("conflict on /user/123"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stdout(&cli(&ep, &["get", "/user/456"])), "Jane\n");
    let o = txn(&ep, &state, &["txn", "status", &a], None);
    assert!(stdout(&o).contains("State: aborted"), "{}", stdout(&o));

    // The server is killed (-9) and restarted between two commands of an
    // open transaction: it commits afterwards.
    let c = id_of(&txn(&ep, &state, &["txn", "begin"], None));
    assert!(
        txn(&ep, &state, &["txn", "put", "/user/777", "survives"], None)
            .status
            .success()
    );
    server.kill();
    server.spawn();
    wait_until(Duration::from_secs(60), "the restarted server", || {
        cli(&ep, &["get", "/user/000"]).status.success()
    });
    assert!(txn(&ep, &state, &["txn", "put", "/user/100", "too"], None)
        .status
        .success());
    let o = txn(&ep, &state, &["txn", "commit"], None);
    assert_eq!(
        stdout(&o),
        format!("Transaction {c} committed\n"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stdout(&cli(&ep, &["get", "/user/777"])), "survives\n");

    // Bad input: clear error, nothing written; no current transaction.
    let o = txn(&ep, &state, &["txn", "put", "/x", "y"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no current transaction"),
        "{}",
        stderr(&o)
    );
    let d = id_of(&txn(&ep, &state, &["txn", "begin"], None));
    let o = txn(&ep, &state, &["txn", "put", "_/cluster/x", "y"], None);
    assert!(stderr(&o).contains("reserved"), "{}", stderr(&o));
    let o = txn(&ep, &state, &["txn", "rollback"], None);
    assert_eq!(stdout(&o), format!("Transaction {d} rolled back\n"));
    let o = txn(&ep, &state, &["txn", "list"], None);
    assert_eq!(stdout(&o).lines().count(), 5, "{}", stdout(&o));

    // A batch across the two ranges is one transaction.
    let o = cli(&ep, &["batch", "put", "/user/200", "b1", "/user/900", "b2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&cli(&ep, &["get", "/user/900"])), "b2\n");
}

/// The original README's REPL session, typed at a real terminal.
#[test]
fn repl_session_prints_the_original_readme() {
    let dir = tempfile::tempdir().unwrap();
    let server = single_node(dir.path());
    let ep = server.client_address.clone();
    put_when_ready(&ep, "/ready", "1");
    assert!(cli(&ep, &["delete", "/ready"]).status.success());
    let script = concat!(
        "put /user/123 '{\"name\": \"John\", \"email\": \"john@example.com\"}'\n",
        "get /user/123\n",
        "begin\n",
        "put /user/456 '{\"name\": \"Jane\"}'\n",
        "commit\n",
        "range /user/ /user/z\n",
        "admin cluster status\n",
        "help\n",
        "exit\n",
    );
    let mut child = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/repl_pty.py"
        ))
        .arg(env!("CARGO_BIN_EXE_rangedb"))
        .arg(&ep)
        .env("HOME", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs the pty driver");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("Transaction started: "))
        .unwrap_or_else(|| panic!("no transaction: {text}"))
        .to_string();
    let (head, rest) = text
        .split_once("Cluster Status:\n")
        .expect("cluster status");
    let expected_head = format!(
        "rangedb> put /user/123 '{{\"name\": \"John\", \"email\": \"john@example.com\"}}'\n\
         OK\n\
         rangedb> get /user/123\n\
         {{\"name\": \"John\", \"email\": \"john@example.com\"}}\n\
         rangedb> begin\n\
         Transaction started: {id}\n\
         rangedb(txn:{id})> put /user/456 '{{\"name\": \"Jane\"}}'\n\
         OK\n\
         rangedb(txn:{id})> commit\n\
         Transaction {id} committed\n\
         rangedb> range /user/ /user/z\n\
         /user/123: {{\"name\": \"John\", \"email\": \"john@example.com\"}}\n\
         /user/456: {{\"name\": \"Jane\"}}\n\
         rangedb> admin cluster status\n"
    );
    assert_eq!(head, expected_head);
    let status: Vec<&str> = rest.lines().take(9).collect();
    let shapes = [
        "  Cluster ID: ",
        "  Replication Factor: ",
        "  Number of Partitions: ",
        "  Nodes (1):",
        "    1. ",
        "       Client Address: ",
        "       Peer Address: ",
        "       Status: NODE_RUNNING",
        "       Partitions: [",
    ];
    for (line, shape) in status.iter().zip(shapes) {
        assert!(line.starts_with(shape), "{line:?} is not {shape:?}\n{rest}");
    }
    let tail: String = rest.lines().skip(9).map(|l| format!("{l}\n")).collect();
    let help = "rangedb> help\n\
        Available commands:\n\
        \x20 get <key>                           Get value by key\n\
        \x20 put <key> <value>                   Put key-value pair\n\
        \x20 delete <key>                        Delete key\n\
        \x20 range <start> <end> [limit]         Get range of keys\n\
        \x20 begin                               Begin new transaction\n\
        \x20 commit                              Commit current transaction\n\
        \x20 rollback                            Rollback current transaction\n\
        \x20 admin cluster status                Show cluster status\n\
        \x20 help                                Show this help\n\
        \x20 exit                                Exit REPL\n\
        rangedb> exit\n\
        Goodbye!\n";
    assert_eq!(tail, help);
    assert!(dir.path().join(".rangedb/history").exists(), "history kept");
}

/// With standard input not a terminal the REPL runs what it reads and
/// exits non-zero if any line failed; errors never end the session.
#[test]
fn piped_repl_runs_every_line_and_reports_failure() {
    let dir = tempfile::tempdir().unwrap();
    let server = single_node(dir.path());
    let ep = server.client_address.clone();
    put_when_ready(&ep, "/ready", "1");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rangedb"))
        .args(["--endpoints", &ep, "repl"])
        .env("HOME", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"get /missing\nbegin\nput /a 1\nrollback\nget /ready\nbogus\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let s = stdout(&out);
    assert!(
        s.contains("Transaction started: ") && s.contains("rolled back\n1\n"),
        "{s}"
    );
    let e = stderr(&out);
    assert!(e.contains("Error: key not found: /missing"), "{e}");
    assert!(
        e.contains("Error: invalid argument: unrecognized subcommand"),
        "{e}"
    );
    assert_eq!(
        cli(&ep, &["get", "/a"]).status.code(),
        Some(1),
        "rolled back"
    );
}

/// An open transaction pins its start against MVCC GC: with `gc_ttl` 1 s
/// and its key overwritten after it began, GC runs for seconds and the
/// transaction still reads its snapshot (unpinned, GC would collect the
/// old version and the read would fail with `TxnTooOld`, exit code 5).
#[test]
fn an_open_transaction_pins_its_snapshot_against_gc() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ep, state) = txn_node(dir.path(), ("/pin/a", "old"));
    set_config(&ep, "gc_ttl", "1");
    let id = id_of(&txn(&ep, &state, &["txn", "begin"], None));
    for v in ["new1", "new2", "new3"] {
        assert!(cli(&ep, &["put", "/pin/a", v]).status.success());
    }
    // GC looks at the range every ~2 s; let it run past the begin.
    std::thread::sleep(Duration::from_secs(6));
    let o = txn(&ep, &state, &["txn", "get", "/pin/a"], None);
    assert_eq!(stdout(&o), "old\n", "{}", stderr(&o));
    commits(&ep, &state, &id);
    drop(server);
}

/// A transaction's GC pin goes when it commits, and an abandoned one's
/// once `txn_max_duration` has passed (the nodes remove expired pins).
#[test]
fn gc_pins_are_released_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ep, state) = txn_node(dir.path(), ("/ready", "1"));
    let pins = || stdout(&cli(&ep, &["admin", "meta", "list", "_/txn/pins/"]));
    let id = id_of(&txn(&ep, &state, &["txn", "begin"], None));
    assert!(pins().contains(&id), "pinned: {}", pins());
    commits(&ep, &state, &id);
    assert!(!pins().contains(&id), "released at commit: {}", pins());

    set_config(&ep, "txn_max_duration", "1");
    let abandoned = id_of(&txn(&ep, &state, &["txn", "begin"], None));
    assert!(pins().contains(&abandoned), "pinned: {}", pins());
    wait_until(Duration::from_secs(15), "the expired pin to go", || {
        !pins().contains(&abandoned)
    });
    drop(server);
}

/// An SDK transaction open past `PIN_AFTER` (2 s) pins its own start: its
/// key overwritten, with `gc_ttl` 10 s, it still reads its snapshot 14 s
/// later (unpinned, GC would have collected the old version by then and
/// the read would fail with `TxnTooOld`) — and, having read a key written
/// after it began, it cannot commit. The pin goes once the transaction
/// ends and the client flushes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_sdk_transaction_pins_its_snapshot_against_gc() {
    use rangedb::client::{Client, ClientOptions};
    let dir = tempfile::tempdir().unwrap();
    let (server, ep, _) = txn_node(dir.path(), ("/sdkpin/a", "old"));
    set_config(&ep, "gc_ttl", "10");
    let pins = || stdout(&cli(&ep, &["admin", "meta", "list", "_/txn/pins/"]));
    let client = Client::new(vec![ep.clone()], ClientOptions::default()).unwrap();

    let mut t = client.begin().await.unwrap();
    for v in ["new1", "new2", "new3"] {
        client.put(b"/sdkpin/a", v.as_bytes()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert!(pins().contains("sdk-"), "pinned: {}", pins());
    assert_eq!(t.get(b"/sdkpin/a").await.unwrap(), Some(b"old".to_vec()));
    // It read a key written after it began: committing must fail.
    t.put(b"/sdkpin/b", b"1").unwrap();
    let e = t.commit().await.unwrap_err();
    assert!(e.is_txn_retryable(), "{e}");
    client.flush().await;
    assert!(!pins().contains("sdk-"), "released: {}", pins());
    drop(server);
}
