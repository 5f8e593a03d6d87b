//! `rangedb watch` against a real server, as a user runs it: started
//! before a split, it prints every change after it, in commit order, a
//! cross-range batch under one revision, nothing outside its prefix; an
//! idle watch reports progress; a revision older than the GC horizon is
//! refused as compacted (exit 6) naming the oldest one available.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

/// Splits "PUT k = v (was x)  [revision N]" into the text and N.
fn split_revision(line: &str) -> (String, u64) {
    let (text, rev) = line
        .rsplit_once("  [revision ")
        .unwrap_or_else(|| panic!("no revision in {line:?}"));
    (text.to_string(), rev.trim_end_matches(']').parse().unwrap())
}

#[test]
fn a_prefix_watch_started_before_a_split_sees_every_change_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = single_node(dir.path());
    let ep = server.client_address.clone();
    put_when_ready(&ep, "ready", "1");

    let mut child = Command::new(BIN)
        .args(["--endpoints", &ep, "watch", "--prefix", "app/"])
        .args(["--prev-value", "--progress", "--count", "7"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The first progress line: the watch is running (and an idle watch
    // says how far it is caught up).
    let first = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a progress line");
    assert!(first.starts_with("PROGRESS revision "), "{first}");
    let progress: u64 = first["PROGRESS revision ".len()..].parse().unwrap();

    let ok = |args: &[&str]| {
        let o = cli(&ep, args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    };
    ok(&["put", "app/a", "1"]);
    ok(&["put", "app/m", "1"]);
    ok(&["admin", "split", "app/m"]);
    ok(&["put", "app/m", "2"]);
    ok(&["put", "other/x", "1"]);
    ok(&["put", "app/z", "1"]);
    ok(&["delete", "app/a"]);
    // Across the split: one transaction.
    ok(&["batch", "put", "app/b", "x", "app/y", "y"]);

    let mut lines = Vec::new();
    while lines.len() < 7 {
        let l = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("after {lines:?}: no more events"));
        if !l.starts_with("PROGRESS") {
            lines.push(l);
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "watch --count 7 exits 0");
    let parsed: Vec<(String, u64)> = lines.iter().map(|l| split_revision(l)).collect();
    let texts: Vec<&str> = parsed.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        texts,
        [
            "PUT app/a = 1 (was absent)",
            "PUT app/m = 1 (was absent)",
            "PUT app/m = 2 (was 1)",
            "PUT app/z = 1 (was absent)",
            "DELETE app/a (was 1)",
            "PUT app/b = x (was absent)",
            "PUT app/y = y (was absent)",
        ]
    );
    let revs: Vec<u64> = parsed.iter().map(|(_, r)| *r).collect();
    assert!(revs[0] > progress, "{revs:?} after progress {progress}");
    assert!(revs[..6].windows(2).all(|w| w[0] < w[1]), "{revs:?}");
    assert_eq!(revs[5], revs[6], "one transaction, one revision");

    // Replaying from a revision: the same events again (the first two).
    let o = cli(
        &ep,
        &[
            "watch",
            "--prefix",
            "app/",
            "--from-revision",
            &revs[0].to_string(),
            "--count",
            "2",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("{}\n{}\n", strip_prev(&lines[0]), strip_prev(&lines[1]))
    );

    // JSON, one document per event.
    let o = cli(
        &ep,
        &[
            "--output",
            "json",
            "watch",
            "app/m",
            "--from-revision",
            &revs[2].to_string(),
            "--count",
            "1",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["type"], "PUT");
    assert_eq!(v["key"], "app/m");
    assert_eq!(v["value"], "2");
    assert_eq!(v["revision"], revs[2]);

    // Bad input: nothing watched.
    let o = cli(&ep, &["watch", "--prefix", "_/auth/"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("user keys only"), "{}", stderr(&o));
    let o = cli(&ep, &["watch", "b", "a"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("end must sort after"), "{}", stderr(&o));
    drop(server);
}

fn strip_prev(line: &str) -> String {
    let (text, rev) = split_revision(line);
    let text = text.split(" (was ").next().unwrap();
    format!("{text}  [revision {rev}]")
}

#[test]
fn a_watch_from_a_compacted_revision_is_refused_naming_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let server = single_node(dir.path());
    let ep = server.client_address.clone();
    put_when_ready(&ep, "gc/a", "1");
    let o = cli(&ep, &["admin", "config", "set", "gc_ttl", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for v in ["2", "3"] {
        assert!(cli(&ep, &["put", "gc/a", v]).status.success());
    }
    wait_until(Duration::from_secs(30), "GC to pass revision 1", || {
        let o = cli(
            &ep,
            &[
                "watch",
                "--prefix",
                "gc/",
                "--from-revision",
                "1",
                "--count",
                "1",
            ],
        );
        o.status.code() == Some(6)
    });
    let o = cli(
        &ep,
        &[
            "watch",
            "--prefix",
            "gc/",
            "--from-revision",
            "1",
            "--count",
            "1",
        ],
    );
    let err = stderr(&o);
    assert!(
        err.contains("revision 1 is compacted: the oldest available is "),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    drop(server);
}
