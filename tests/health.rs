//! The HTTP listener of real `rangedb server` processes: `/healthz` and
//! `/readyz` answer while the cluster serves, and `/readyz` turns 503 (with
//! the reason under `?verbose`) on a node left without a quorum.
#![cfg(not(madsim))]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// `GET path` on `addr`: (status code, body).
fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let code = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

#[test]
fn health_and_readiness_follow_the_quorum() {
    let dir = tempfile::tempdir().unwrap();
    let mut servers = start_cluster_n(dir.path(), 3);
    let endpoints: Vec<String> = servers.iter().map(|s| s.client_address.clone()).collect();
    put_when_ready(&endpoints.join(","), "/health/a", "1");
    let http = servers[0].http_address.clone();
    wait_until(Duration::from_secs(30), "node 1 to be ready", || {
        get(&http, "/readyz").is_some_and(|(c, _)| c == 200)
    });
    assert_eq!(get(&http, "/healthz"), Some((200, "ok\n".into())));
    let (code, body) = get(&http, "/readyz?verbose").unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body, "[+] store ok\n[+] ranges ok\nready\n");
    assert_eq!(get(&http, "/nothing-here").map(|r| r.0), Some(404));

    // Without its two peers, node 1 is alive but serves nothing.
    servers[1].kill();
    servers[2].kill();
    wait_until(
        Duration::from_secs(30),
        "node 1 to report not ready",
        || get(&http, "/readyz").is_some_and(|(c, _)| c == 503),
    );
    let (code, body) = get(&http, "/readyz?verbose").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("[-] ranges failed: no known leader for range(s)"),
        "{body}"
    );
    assert!(body.ends_with("not ready\n"), "{body}");
    assert_eq!(get(&http, "/healthz"), Some((200, "ok\n".into())));
}

/// A port already in use fails the start with one line naming it.
#[test]
fn an_http_address_in_use_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = std::process::Command::new(BIN)
        .args([
            "server",
            "--cluster-init",
            &format!("--data-dir={}", dir.path().join("data").display()),
            &format!("--peer-address=127.0.0.1:{}", free_port()),
            &format!("--client-address=127.0.0.1:{}", free_port()),
            &format!("--http-address={addr}"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot serve HTTP address {addr}")),
        "{err}"
    );
}
