//! `rangedb lease …` and `put --lease` against a real server, as a user
//! runs them: a revoked or expired lease takes its keys with it, a key
//! written again without the lease stays, a lease kept alive outlives its
//! TTL, and bad input fails with one line and nothing written.

mod common;

use std::time::Duration;

use common::*;

fn ok(ep: &str, args: &[&str]) -> String {
    let o = cli(ep, args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    stdout(&o)
}

fn grant(ep: &str, ttl: &str) -> String {
    let out = ok(ep, &["lease", "grant", ttl]);
    assert!(
        out.ends_with(&format!("granted with TTL({ttl}s)\n")),
        "{out}"
    );
    out.split_whitespace().nth(1).unwrap().to_string()
}

#[test]
fn leases_take_their_keys_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = single_node(dir.path());
    let ep = server.client_address.clone();
    put_when_ready(&ep, "ready", "1");

    let id = grant(&ep, "60");
    assert_eq!(ok(&ep, &["put", "svc/a", "up", "--lease", &id]), "OK\n");
    assert_eq!(ok(&ep, &["put", "svc/b", "up", "--lease", &id]), "OK\n");
    // Written again without the lease: no longer attached.
    ok(&ep, &["put", "svc/b", "mine"]);
    let out = ok(&ep, &["lease", "ttl", &id, "--keys"]);
    assert!(
        out.starts_with(&format!("lease {id} granted with TTL(60s), remaining(")),
        "{out}"
    );
    assert!(out.contains("svc/a"), "{out}");
    assert!(ok(&ep, &["lease", "keep-alive", "--once", &id]).contains("keepalived with TTL("));
    assert!(ok(&ep, &["lease", "list"]).contains(&id));
    assert_eq!(
        ok(&ep, &["lease", "revoke", &id]),
        format!("lease {id} revoked (1 keys deleted)\n")
    );
    let o = cli(&ep, &["get", "svc/a"]);
    assert_eq!(o.status.code(), Some(1), "svc/a went with its lease");
    assert_eq!(ok(&ep, &["get", "svc/b"]), "mine\n");

    // An ended lease: nothing is written with it.
    let o = cli(&ep, &["put", "svc/c", "x", "--lease", &id]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!("lease {id} not found")),
        "{}",
        stderr(&o)
    );
    assert_eq!(cli(&ep, &["get", "svc/c"]).status.code(), Some(1));

    // Expiry, and a lease kept alive past its TTL.
    let short = grant(&ep, "2");
    let kept = grant(&ep, "2");
    ok(&ep, &["put", "svc/short", "x", "--lease", &short]);
    ok(&ep, &["put", "svc/kept", "x", "--lease", &kept]);
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(500));
        ok(&ep, &["lease", "keep-alive", "--once", &kept]);
    }
    assert_eq!(
        cli(&ep, &["get", "svc/short"]).status.code(),
        Some(1),
        "expired"
    );
    assert_eq!(
        ok(&ep, &["get", "svc/kept"]),
        "x\n",
        "kept alive for 4 s with a 2 s TTL"
    );
    wait_until(Duration::from_secs(15), "the unkept lease to end", || {
        cli(&ep, &["get", "svc/kept"]).status.code() == Some(1)
    });
    let o = cli(&ep, &["lease", "keep-alive", "--once", &kept]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));

    // Bad input.
    for (args, says) in [
        (vec!["lease", "grant", "0"], "1 to 86400 seconds"),
        (vec!["lease", "revoke", "xyz"], "not a lease id"),
        (vec!["put", "k", "v", "--lease", "nothex"], "not a lease id"),
    ] {
        let o = cli(&ep, &args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1, "one line: {}", stderr(&o));
    }
    drop(server);
}
