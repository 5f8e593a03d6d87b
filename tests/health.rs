//! The HTTP listener of real `rangedb server` processes: `/healthz` and
//! `/readyz` answer while the cluster serves, and `/readyz` turns 503 (with
//! the reason under `?verbose`) on a node left without a quorum.
#![cfg(not(madsim))]

mod common;

use std::time::Duration;

use common::*;

#[test]
fn health_and_readiness_follow_the_quorum() {
    let dir = tempfile::tempdir().unwrap();
    let mut servers = start_cluster_n(dir.path(), 3);
    let endpoints: Vec<String> = servers.iter().map(|s| s.client_address.clone()).collect();
    put_when_ready(&endpoints.join(","), "/health/a", "1");
    let http = servers[0].http_address.clone();
    wait_until(Duration::from_secs(30), "node 1 to be ready", || {
        http_get(&http, "/readyz").is_some_and(|(c, _)| c == 200)
    });
    assert_eq!(http_get(&http, "/healthz"), Some((200, "ok\n".into())));
    let (code, body) = http_get(&http, "/readyz?verbose").unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body,
        "[+] draining ok\n[+] store ok\n[+] ranges ok\nready\n"
    );
    assert_eq!(http_get(&http, "/nothing-here").map(|r| r.0), Some(404));

    // Without its two peers, node 1 is alive but serves nothing.
    servers[1].kill();
    servers[2].kill();
    wait_until(
        Duration::from_secs(30),
        "node 1 to report not ready",
        || http_get(&http, "/readyz").is_some_and(|(c, _)| c == 503),
    );
    let (code, body) = http_get(&http, "/readyz?verbose").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("[-] ranges failed: no known leader for range(s)"),
        "{body}"
    );
    assert!(body.ends_with("not ready\n"), "{body}");
    assert_eq!(http_get(&http, "/healthz"), Some((200, "ok\n".into())));
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

/// The sum over `texts` of the sample `name` (with its labels, if any).
fn sample_sum(texts: &[String], name: &str) -> f64 {
    texts
        .iter()
        .flat_map(|t| t.lines())
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
        .sum()
}

#[test]
fn metrics_count_requests_raft_work_and_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let servers = start_cluster_n(dir.path(), 3);
    let endpoints = client_endpoints(&servers);
    put_when_ready(&endpoints, "/metrics/a", "1");
    for i in 0..10 {
        let out = cli(&endpoints, &["put", &format!("/metrics/{i}"), "v"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // A refused request is counted under its code.
    let out = cli(&endpoints, &["put", "_/cluster/x", "v"]);
    assert!(!out.status.success());
    let scrape = || -> Vec<String> {
        servers
            .iter()
            .map(|s| {
                let (code, body) = http_get(&s.http_address, "/metrics").expect("metrics answer");
                assert_eq!(code, 200, "{body}");
                body
            })
            .collect()
    };
    // The placement driver publishes its view within a few rounds.
    wait_until(
        Duration::from_secs(30),
        "the PD to see 3 live nodes",
        || {
            let t = scrape();
            sample_sum(&t, "rangedb_liveness_live_nodes") == 3.0
                && sample_sum(&t, "rangedb_placement_driver") == 1.0
        },
    );
    let t = scrape();
    let families = t[0].lines().filter(|l| l.starts_with("# TYPE")).count();
    assert!(families >= 25, "{families} metric families:\n{}", t[0]);
    assert!(t[0].ends_with("# EOF\n"), "{}", t[0]);
    assert!(
        sample_sum(
            &t,
            "rangedb_grpc_requests_total{method=\"Kv/Put\",code=\"OK\"}"
        ) >= 10.0,
        "{t:?}"
    );
    assert!(
        sample_sum(
            &t,
            "rangedb_grpc_requests_total{method=\"Kv/Put\",code=\"InvalidArgument\"}"
        ) >= 1.0,
        "{t:?}"
    );
    assert!(sample_sum(&t, "rangedb_raft_proposals_total") >= 11.0);
    assert!(
        sample_sum(
            &t,
            "rangedb_storage_write_duration_seconds_count{kind=\"sync\"}"
        ) > 0.0
    );
    assert!(sample_sum(&t, "rangedb_raft_leader_changes_total") >= 2.0);
    // Reads: the first asks a quorum (ReadIndex) and gives the leader its
    // lease; gets soon after are served under it, with no quorum round.
    wait_until(
        Duration::from_secs(30),
        "a get served under the lease",
        || {
            for i in 0..3 {
                let out = cli(&endpoints, &["get", &format!("/metrics/{i}")]);
                assert!(out.status.success(), "{}", stderr(&out));
            }
            let t = scrape();
            sample_sum(&t, "rangedb_raft_reads_read_index_total") >= 1.0
                && sample_sum(&t, "rangedb_raft_reads_lease_total") >= 1.0
        },
    );
    assert_eq!(sample_sum(&t, "rangedb_ranges_unavailable"), 0.0);
    // Every node holds a replica of every range; each range has one leader.
    let replicas = sample_sum(&t, "rangedb_replicas");
    assert!(replicas >= 6.0, "{replicas}");
    assert_eq!(sample_sum(&t, "rangedb_replicas_leaders") * 3.0, replicas);
    for s in &servers {
        // Metric names carry units and no per-range labels.
        let body = http_get(&s.http_address, "/metrics").unwrap().1;
        assert!(!body.contains("range_id"), "{body}");
    }
}
