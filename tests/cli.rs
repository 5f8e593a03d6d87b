//! The README's single-node flow through the real binary: put/get/range as the
//! original README prints them, bad input rejected with nothing written,
//! restart keeps data, a foreign data dir is refused, errors are one line.
#![cfg(not(madsim))]

mod common;

use std::time::Duration;

use common::*;

fn ready(ep: &str) -> bool {
    cli(ep, &["get", "/__ready_probe"]).status.code() == Some(1)
        && stderr(&cli(ep, &["get", "/__ready_probe"])).contains("key not found")
}

#[test]
fn single_node_readme_flow() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = single_node(dir.path());
    let ep = server.client_address.clone();
    wait_until(Duration::from_secs(30), "the server to serve", || {
        ready(&ep)
    });

    let value = r#"{"name": "John", "email": "john@example.com"}"#;
    let out = cli(&ep, &["put", "/user/123", value]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "OK\n");
    let out = cli(&ep, &["get", "/user/123"]);
    assert_eq!(stdout(&out), format!("{value}\n"));
    assert!(cli(&ep, &["put", "/user/456", r#"{"name": "Jane"}"#])
        .status
        .success());
    let out = cli(&ep, &["range", "/user/", "/user/z"]);
    assert_eq!(
        stdout(&out),
        format!("/user/123: {value}\n/user/456: {{\"name\": \"Jane\"}}\n")
    );
    let out = cli(&ep, &["range", "/user/", "/user/z", "--limit", "1"]);
    assert_eq!(stdout(&out).lines().count(), 1);
    let out = cli(&ep, &["--output", "json", "get", "/user/456"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["value"], r#"{"name": "Jane"}"#);

    // An endpoint whose name does not resolve (a stopped container's) was
    // never sent anything: the write goes on to the next endpoint, and
    // alone it fails as unreachable (exit 1), not as "outcome unknown" (3).
    let dead = "no-such-node.invalid:8081";
    let out = cli(&format!("{dead},{ep}"), &["put", "/dns/a", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli(dead, &["--timeout", "2", "put", "/dns/b", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot reach"), "{}", stderr(&out));

    // Batch put, delete.
    let out = cli(&ep, &["batch", "put", "/b/1", "one", "/b/2", "two"]);
    assert_eq!(stdout(&out), "OK (2 keys)\n", "{}", stderr(&out));
    assert_eq!(
        stdout(&cli(&ep, &["range", "/b/", "/b/z"])),
        "/b/1: one\n/b/2: two\n"
    );
    assert!(cli(&ep, &["delete", "/b/1"]).status.success());
    let out = cli(&ep, &["get", "/b/1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).trim(), "Error: key not found: /b/1");

    // Bad input: one clear line, non-zero exit, nothing written.
    // (A value over the 1 MiB limit cannot pass through argv; the SDK test covers it.)
    let big = format!("/{}", "k".repeat(4096));
    let bad: Vec<(Vec<&str>, &str)> = vec![
        (vec!["put", "", "v"], "key must not be empty"),
        (
            vec!["put", "_/cluster/config/replication_factor", "9"],
            "reserved",
        ),
        (vec!["delete", "_/cluster/id"], "reserved"),
        (vec!["batch", "put", "/ok", "1", "_/x", "2"], "reserved"),
        (vec!["put", &big, "v"], "limit"),
    ];
    for (args, want) in bad {
        let out = cli(&ep, &args);
        assert!(!out.status.success(), "{:?} succeeded", &args[..1]);
        let err = stderr(&out);
        assert!(err.contains(want), "{:?}: {err}", &args[..1]);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    assert_eq!(
        cli(&ep, &["get", "/ok"]).status.code(),
        Some(1),
        "a rejected batch writes nothing"
    );
    let out = cli(&ep, &["range", "/", "/~"]);
    assert!(
        !stdout(&out).contains("/kkk"),
        "an oversized key was written"
    );
    // A single node keeps the default replication factor: its ranges are
    // under-replicated until nodes join (as the original README shows).
    assert_eq!(
        stdout(&cli(&ep, &["get", "_/cluster/config/replication_factor"])),
        "3\n"
    );

    // Graceful stop, restart without --cluster-init: data kept.
    let st = server.terminate();
    assert!(st.success(), "graceful shutdown exit status {st}");
    server.args.retain(|a| a != "--cluster-init");
    server.spawn();
    wait_until(Duration::from_secs(30), "the restarted server", || {
        ready(&ep)
    });
    assert_eq!(
        stdout(&cli(&ep, &["get", "/user/123"])),
        format!("{value}\n")
    );

    // Unreachable cluster: one line, non-zero exit.
    server.kill();
    let out = cli(&ep, &["--timeout", "3", "get", "/user/123"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("cannot reach") || err.contains("unavailable"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // The data dir of this node refuses to start as another node.
    let other = vec![
        "server".to_string(),
        format!("--peer-address=127.0.0.1:{}", free_port()),
        format!("--client-address=127.0.0.1:{}", free_port()),
        format!("--data-dir={}", dir.path().join("data").display()),
    ];
    let out = std::process::Command::new(BIN)
        .args(&other)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("belongs to node 1"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn damaged_or_foreign_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "precious").unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "server",
            "--cluster-init",
            &format!("--data-dir={}", dir.path().display()),
        ])
        .args([
            format!("--peer-address=127.0.0.1:{}", free_port()),
            format!("--client-address=127.0.0.1:{}", free_port()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a RangeDB data directory"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("notes.txt")).unwrap(),
        "precious"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "nothing was written"
    );
}
