//! The etcd v3 gateway (`--etcd-address`) driven by etcd's own clients:
//! Debian's `etcdctl` and the `etcd-client` crate. One script runs against
//! a real etcd (Debian's `etcd-server`) and against RangeDB, and their
//! outputs must match: text line for line, JSON (`-w json`) field by
//! field with revisions, member and cluster ids taken out (a revision only
//! says whether it is set).
//! Where etcdctl or etcd cannot be found (or installed by
//! `scripts/setup.sh`), the tests say so and skip.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// `etcdctl` against `endpoint`, with `stdin`: (exit ok, stdout, stderr).
fn etcdctl(endpoint: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=http://{endpoint}"))
        .args(["--dial-timeout=5s", "--command-timeout=20s"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run etcdctl");
    {
        use std::io::Write;
        let mut i = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            i.write_all(s.as_bytes()).unwrap();
        }
    }
    let o = child.wait_with_output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A single-node RangeDB with the gateway on a free port: (server, etcd address).
fn rangedb_with_gateway(dir: &Path) -> (Server, String) {
    let etcd = format!("127.0.0.1:{}", free_port());
    let server = single_node_with(dir, &dir.join("data"), &[&format!("--etcd-address={etcd}")]);
    put_when_ready(&server.client_address, "ready", "1");
    wait_until(Duration::from_secs(30), "the etcd gateway", || {
        etcdctl(&etcd, &["get", "ready"], None).0
    });
    (server, etcd)
}

/// A real one-member etcd on free ports, killed on drop.
struct Etcd {
    child: Child,
    client: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn real_etcd(dir: &Path) -> Etcd {
    let (client, peer) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
    let child = Command::new("etcd")
        .args(["--name", "cmp", "--data-dir"])
        .arg(dir.join("etcd-data"))
        .arg(format!("--listen-client-urls=http://{client}"))
        .arg(format!("--advertise-client-urls=http://{client}"))
        .arg(format!("--listen-peer-urls=http://{peer}"))
        .arg(format!("--initial-advertise-peer-urls=http://{peer}"))
        .arg(format!("--initial-cluster=cmp=http://{peer}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start etcd");
    let e = Etcd { child, client };
    wait_until(Duration::from_secs(30), "etcd to serve", || {
        etcdctl(&e.client, &["put", "ready", "1"], None).0
    });
    e
}

/// The script both run: (args, stdin). Its outputs hold no revisions.
fn script() -> Vec<(Vec<&'static str>, Option<&'static str>)> {
    let s = |a: &[&'static str]| (a.to_vec(), None);
    vec![
        s(&["put", "k1", "v1"]),
        s(&["put", "k2", "v2"]),
        s(&["put", "dir/a", "1"]),
        s(&["put", "dir/b", "2"]),
        s(&["put", "dir/c", "3"]),
        s(&["get", "k1"]),
        s(&["get", "missing"]),
        s(&["get", "dir/", "--prefix"]),
        s(&["get", "dir/", "--prefix", "--keys-only"]),
        s(&["get", "dir/", "--prefix", "--limit", "2"]),
        s(&[
            "get",
            "dir/",
            "--prefix",
            "--sort-by=VALUE",
            "--order=DESCEND",
        ]),
        s(&["get", "dir/", "--prefix", "--print-value-only"]),
        s(&["get", "--from-key", "k1"]),
        s(&["get", "dir/a", "dir/c"]),
        s(&["put", "k1", "v1b", "--prev-kv"]),
        (
            vec!["txn"],
            Some("value(\"k1\") = \"v1b\"\n\nput k1 v1c\n\nput k1 no\n\n"),
        ),
        (
            vec!["txn"],
            Some("value(\"k1\") = \"nope\"\n\nput k1 no\n\nget k1\n\n"),
        ),
        (
            vec!["txn"],
            Some(
                "version(\"k1\") = \"3\"\ncreate(\"missing\") = \"0\"\n\nput k3 yes\nget k3\n\n\n",
            ),
        ),
        (
            vec!["txn"],
            Some("mod(\"missing\") = \"0\"\nversion(\"k1\") > \"5\"\n\nput k4 no\n\ndel k3\n\n"),
        ),
        s(&["get", "k", "--prefix"]),
        s(&["get", "k1", "-w", "json"]),
        s(&["get", "dir/", "--prefix", "-w", "json"]),
        s(&["get", "dir/", "--prefix", "--limit", "2", "-w", "json"]),
        s(&["get", "dir/", "--prefix", "--count-only", "-w", "json"]),
        s(&["put", "dir/a", "1b", "--prev-kv", "-w", "json"]),
        (
            vec!["txn", "-w", "json"],
            Some("version(\"dir/a\") = \"2\"\n\nget dir/a\nput dir/d 4\n\n\n"),
        ),
        s(&["del", "dir/c", "--prev-kv", "-w", "json"]),
        s(&["del", "dir/", "--prefix", "--prev-kv"]),
        s(&["del", "missing"]),
        s(&["get", "dir/", "--prefix"]),
    ]
}

/// etcdctl's JSON with what must differ taken out: headers, and
/// revisions reduced to whether they are set.
fn normalize(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove("header");
            for (k, x) in m.iter_mut() {
                if k.ends_with("revision") {
                    *x = serde_json::Value::from(x.as_i64().is_some_and(|r| r > 0));
                } else {
                    normalize(x);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(normalize),
        _ => {}
    }
}

fn run_script(endpoint: &str) -> Vec<String> {
    script()
        .into_iter()
        .map(|(args, stdin)| {
            let (ok, mut out, err) = etcdctl(endpoint, &args, stdin);
            if args.contains(&"json") && ok {
                let mut v: serde_json::Value = serde_json::from_str(out.trim())
                    .unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"));
                normalize(&mut v);
                out = format!("{v}\n");
            }
            format!(
                "$ etcdctl {} [{}]\n{out}{}",
                args.join(" "),
                if ok { "ok" } else { "failed" },
                if ok { String::new() } else { err }
            )
        })
        .collect()
}

/// A watch started in the background: its output after `writes` ran.
fn watch_output(endpoint: &str, watch_args: &[&str], writes: &[&[&str]]) -> String {
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=http://{endpoint}"))
        .arg("watch")
        .args(watch_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // etcdctl prints nothing when the watch is set up: give it a moment.
    std::thread::sleep(Duration::from_secs(2));
    for w in writes {
        let (ok, _, err) = etcdctl(endpoint, w, None);
        assert!(ok, "{w:?}: {err}");
    }
    std::thread::sleep(Duration::from_secs(2));
    let _ = child.kill();
    let o = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn watch_script(endpoint: &str) -> String {
    watch_output(
        endpoint,
        &["w/", "--prefix", "--prev-kv"],
        &[
            &["put", "w/x", "1"],
            &["put", "w/x", "2"],
            &["put", "other", "1"],
            &["del", "w/x"],
            &["del", "w/never"],
        ],
    )
}

#[test]
fn etcdctl_gives_the_same_answers_from_rangedb_as_from_etcd() {
    if !have("etcdctl") || !have("etcd") {
        eprintln!("SKIPPED: etcdctl or etcd is not installed (Debian: etcd-client, etcd-server)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let etcd = real_etcd(dir.path());
    let want = run_script(&etcd.client);
    let want_watch = watch_script(&etcd.client);
    drop(etcd);

    let (server, gw) = rangedb_with_gateway(dir.path());
    let got = run_script(&gw);
    let got_watch = watch_script(&gw);
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(g, w, "RangeDB (left) and etcd (right) differ");
    }
    assert_eq!(got_watch, want_watch, "watch output differs");
    assert!(got_watch.contains("PUT\nw/x\n1\n"), "{got_watch}");
    drop(server);
}

#[test]
fn etcdctl_watch_from_a_revision_member_list_and_status() {
    if !have("etcdctl") {
        eprintln!("SKIPPED: etcdctl is not installed (Debian: etcd-client)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (server, gw) = rangedb_with_gateway(dir.path());
    let (ok, out, err) = etcdctl(&gw, &["put", "r/a", "1", "-w", "json"], None);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let rev = v["header"]["revision"].as_i64().unwrap();
    assert!(rev > 0, "{out}");
    assert!(etcdctl(&gw, &["put", "r/a", "2"], None).0);
    // Revisions are MVCC timestamps: a watch from the first put's revision
    // replays both puts.
    let out = watch_output(&gw, &["r/a", &format!("--rev={rev}")], &[]);
    assert_eq!(out, "PUT\nr/a\n1\nPUT\nr/a\n2\n");
    // Metadata as etcd defines it.
    let (_, out, _) = etcdctl(&gw, &["get", "r/a", "-w", "json"], None);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let kv = &v["kvs"][0];
    assert_eq!(kv["version"], 2);
    assert_eq!(kv["create_revision"].as_i64(), Some(rev));
    assert!(kv["mod_revision"].as_i64().unwrap() > rev);
    // A snapshot read at the first revision.
    let (_, out, _) = etcdctl(&gw, &["get", "r/a", &format!("--rev={rev}")], None);
    assert_eq!(out, "r/a\n1\n");

    let (ok, out, err) = etcdctl(&gw, &["member", "list"], None);
    assert!(ok, "{err}");
    assert!(out.contains("rangedb-1") && out.contains(&gw), "{out}");
    // `endpoint status` dials each endpoint with its URL as the HTTP/2
    // authority, which the gateway's HTTP/2 stack refuses: without the
    // scheme it works (docs/etcd-compatibility.md).
    let o = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([&format!("--endpoints={gw}"), "endpoint", "status"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains(&gw) && out.contains("3.5.0"), "{out}");
    // RangeDB's metadata namespace is not etcd's to write.
    let (ok, _, err) = etcdctl(&gw, &["put", "_/cluster/x", "1"], None);
    assert!(
        !ok && err.contains("reserved") || err.contains("cluster metadata"),
        "{err}"
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_client_crate_works_against_the_gateway() {
    use etcd_client::{
        Client, Compare, CompareOp, EventType, GetOptions, Txn, TxnOp, WatchOptions,
    };
    let dir = tempfile::tempdir().unwrap();
    let etcd = format!("127.0.0.1:{}", free_port());
    let server = single_node_with(
        dir.path(),
        &dir.path().join("data"),
        &[&format!("--etcd-address={etcd}")],
    );
    put_when_ready(&server.client_address, "ready", "1");

    let mut c = loop {
        if let Ok(mut c) = Client::connect([format!("http://{etcd}")], None).await {
            if c.get("ready", None).await.is_ok() {
                break c;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (mut watcher, mut stream) = c
        .watch(
            "job/",
            Some(WatchOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    let put = c.put("job/1", "queued", None).await.unwrap();
    let rev = put.header().unwrap().revision();
    c.put("job/2", "queued", None).await.unwrap();
    let r = c
        .get("job/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(r.kvs().len(), 2);
    assert_eq!(r.count(), 2);
    assert_eq!(r.kvs()[0].create_revision(), rev);

    // Compare-and-swap on the value, then on the mod revision.
    let t = Txn::new()
        .when([Compare::value("job/1", CompareOp::Equal, "queued")])
        .and_then([TxnOp::put("job/1", "running", None)])
        .or_else([TxnOp::get("job/1", None)]);
    assert!(c.txn(t).await.unwrap().succeeded());
    let t = Txn::new()
        .when([Compare::mod_revision("job/1", CompareOp::Equal, rev)])
        .and_then([TxnOp::put("job/1", "stolen", None)]);
    assert!(
        !c.txn(t).await.unwrap().succeeded(),
        "job/1 changed since {rev}"
    );
    c.delete("job/2", None).await.unwrap();

    // The watch saw every change, in order, with previous values.
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let resp = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("watch events in time")
            .unwrap()
            .expect("stream open");
        for e in resp.events() {
            let kv = e.kv().unwrap();
            let prev = e.prev_kv().map(|p| p.value_str().unwrap().to_string());
            seen.push((
                e.event_type() == EventType::Put,
                kv.key_str().unwrap().to_string(),
                kv.value_str().unwrap().to_string(),
                prev,
            ));
        }
    }
    watcher.cancel().await.unwrap();
    assert_eq!(
        seen,
        vec![
            (true, "job/1".into(), "queued".into(), None),
            (true, "job/2".into(), "queued".into(), None),
            (
                true,
                "job/1".into(),
                "running".into(),
                Some("queued".into())
            ),
            (false, "job/2".into(), String::new(), Some("queued".into())),
        ]
    );
    drop(server);
}

/// The lease id etcdctl printed ("lease <hex> granted with TTL(..)").
fn lease_id(out: &str) -> String {
    out.split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

#[test]
fn etcdctl_leases_lock_and_elect() {
    if !have("etcdctl") {
        eprintln!("SKIPPED: etcdctl is not installed (Debian: etcd-client)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (server, gw) = rangedb_with_gateway(dir.path());
    let ctl = |args: &[&str]| {
        let (ok, out, err) = etcdctl(&gw, args, None);
        assert!(ok, "{args:?}: {err}");
        out
    };

    // Grant, attach, time to live, keep alive, revoke.
    let out = ctl(&["lease", "grant", "60"]);
    assert!(out.ends_with("granted with TTL(60s)\n"), "{out}");
    let id = lease_id(&out);
    assert_eq!(
        ctl(&["put", "svc/a", "up", &format!("--lease={id}")]),
        "OK\n"
    );
    let out = ctl(&["lease", "timetolive", &id, "--keys"]);
    assert!(
        out.contains("granted with TTL(60s)") && out.contains("attached keys([svc/a])"),
        "{out}"
    );
    let out = ctl(&["lease", "keep-alive", "--once", &id]);
    assert!(
        out.contains(&format!("lease {id} keepalived with TTL(")),
        "{out}"
    );
    assert!(ctl(&["lease", "list"]).contains(&id));
    let out = ctl(&["get", "svc/a", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        v["kvs"][0]["lease"].as_i64().unwrap(),
        i64::from_str_radix(&id, 16).unwrap()
    );
    assert_eq!(
        ctl(&["lease", "revoke", &id]),
        format!("lease {id} revoked\n")
    );
    assert_eq!(
        ctl(&["get", "svc/a"]),
        "",
        "revoking deletes the lease's keys"
    );
    let (ok, _, err) = etcdctl(&gw, &["put", "svc/b", "x", &format!("--lease={id}")], None);
    assert!(!ok && err.contains("requested lease not found"), "{err}");
    assert_eq!(
        ctl(&["get", "svc/b"]),
        "",
        "nothing written with an ended lease"
    );

    // Expiry: a lease not kept alive ends after its TTL, and its keys go.
    let id = lease_id(&ctl(&["lease", "grant", "2"]));
    ctl(&["put", "svc/e", "x", &format!("--lease={id}")]);
    ctl(&["put", "svc/e2", "y", &format!("--lease={id}")]);
    wait_until(Duration::from_secs(15), "the lease to expire", || {
        etcdctl(&gw, &["get", "svc/", "--prefix", "--keys-only"], None)
            .1
            .is_empty()
    });
    let out = ctl(&["lease", "timetolive", &id]);
    assert!(out.contains("already expired"), "{out}");

    // A lock: one holder at a time; a holder killed -9 loses it once its
    // session's lease runs out.
    assert_eq!(ctl(&["lock", "L", "echo", "one"]), "one\n");
    let mut a = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([&format!("--endpoints=http://{gw}"), "lock", "--ttl=3", "L"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut a_out = std::io::BufReader::new(a.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut a_out, &mut line).unwrap();
    assert!(line.starts_with("L/"), "the holder prints its key: {line}");
    let b = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            &format!("--endpoints=http://{gw}"),
            "lock",
            "--ttl=3",
            "L",
            "echo",
            "second",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let _ = a.kill();
    let _ = a.wait();
    let b = b.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&b.stdout), "second\n");

    // An election: the leader's proposal is what observers see.
    let mut leader = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([&format!("--endpoints=http://{gw}"), "elect", "E", "p1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut l_out = std::io::BufReader::new(leader.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut l_out, &mut first).unwrap();
    assert!(first.starts_with("E/"), "{first}");
    let mut observer = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([&format!("--endpoints=http://{gw}"), "elect", "-l", "E"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let _ = observer.kill();
    let o = observer.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("p1"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let _ = leader.kill();
    let _ = leader.wait();
    drop(server);
}
