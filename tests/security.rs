//! Real-process tests of the secure setup (docs/security.md): certificates
//! from `rangedb cert`, a 3-node TLS cluster, clients without a certificate
//! or with another cluster's, Raft traffic with a forged identity, and the
//! refusal to serve plaintext beyond loopback.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use rangedb::proto::raft_transport_client::RaftTransportClient;
use rangedb::proto::{RaftBatch, RaftEnvelope};
use rangedb::tls::TlsMaterial;

fn rangedb(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run rangedb")
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "failed: {}{}", stdout(o), stderr(o));
    stdout(o)
}

/// A CA, a node certificate for loopback, and root's client certificate.
fn make_certs(dir: &Path) -> String {
    let d = dir.display().to_string();
    ok(&rangedb(&["cert", "create-ca", "--certs-dir", &d]));
    ok(&rangedb(&[
        "cert",
        "create-node",
        "localhost",
        "127.0.0.1",
        "--certs-dir",
        &d,
    ]));
    ok(&rangedb(&[
        "cert",
        "create-client",
        "root",
        "--certs-dir",
        &d,
    ]));
    d
}

fn secure_cli(certs: &str, endpoints: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["--certs-dir", certs, "--endpoints", endpoints])
        .args(args)
        .output()
        .expect("run rangedb cli")
}

#[test]
fn a_tls_cluster_serves_only_clients_with_the_cluster_s_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = make_certs(&tmp.path().join("certs"));
    let listed = ok(&rangedb(&["cert", "list", "--certs-dir", &certs]));
    assert!(
        listed.contains("node.crt") && listed.contains("localhost,127.0.0.1"),
        "{listed}"
    );
    let servers = start_cluster_with(tmp.path(), 3, &[], &[format!("--certs-dir={certs}")]);
    let ep = client_endpoints(&servers);
    wait_until(
        Duration::from_secs(60),
        "the TLS cluster to accept writes",
        || {
            secure_cli(&certs, &ep, &["put", "/user/123", "{\"name\": \"John\"}"])
                .status
                .success()
        },
    );
    let got = ok(&secure_cli(&certs, &ep, &["get", "/user/123"]));
    assert_eq!(got.trim(), "{\"name\": \"John\"}");

    // No certificate: a plaintext client cannot talk to a TLS listener,
    // and nothing it sent was written.
    let o = cli(&ep, &["--timeout", "3", "put", "/plain", "x"]);
    assert!(!o.status.success(), "a plaintext client was served");
    // Another cluster's certificates: refused too.
    let other = make_certs(&tmp.path().join("other"));
    let o = secure_cli(&other, &ep, &["--timeout", "3", "put", "/foreign", "x"]);
    assert!(!o.status.success(), "a foreign certificate was accepted");
    let o = secure_cli(&certs, &ep, &["get", "/plain"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let o = secure_cli(&certs, &ep, &["get", "/foreign"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));

    // A missing client certificate is one clear line before any traffic.
    let o = secure_cli(&certs, &ep, &["--user", "alice", "get", "/user/123"]);
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(
        e.contains("client.alice.crt does not exist") && e.contains("create-client alice"),
        "{e}"
    );

    // Raft traffic with a forged identity is refused before its messages
    // are decoded (the garbage below would be InvalidArgument otherwise).
    let peer = servers[0].peer_address.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let certs_dir = Path::new(&certs);
    // A user's certificate may not speak Raft.
    let root = TlsMaterial::client(certs_dir, "root").unwrap();
    let status = rt.block_on(send_raft(&peer, &root, "127.0.0.1:1", 2));
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("client certificate"),
        "{status:?}"
    );
    // A node certificate for another host may not claim a loopback address.
    let far = tmp.path().join("far");
    std::fs::create_dir_all(&far).unwrap();
    for f in ["ca.crt", "ca.key"] {
        std::fs::copy(certs_dir.join(f), far.join(f)).unwrap();
    }
    let d = far.display().to_string();
    ok(&rangedb(&[
        "cert",
        "create-node",
        "10.9.9.9",
        "--certs-dir",
        &d,
    ]));
    let forged = TlsMaterial::node(&far).unwrap();
    let status = rt.block_on(send_raft(&peer, &forged, &servers[1].peer_address, 2));
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("valid only for 10.9.9.9"),
        "{status:?}"
    );
    // And the cluster still serves.
    ok(&secure_cli(&certs, &ep, &["put", "/after", "1"]));
}

/// Sends one Raft batch claiming to be `from_node` at `claimed` over TLS
/// with `tls`; returns the status it ends with.
async fn send_raft(peer: &str, tls: &TlsMaterial, claimed: &str, from_node: u64) -> tonic::Status {
    let ch = rangedb::tls::endpoint(peer, Some(tls))
        .unwrap()
        .connect()
        .await
        .expect("TLS connect to the peer port");
    let batch = RaftBatch {
        from_node,
        from_client_address: String::new(),
        from_peer_address: claimed.to_string(),
        messages: vec![RaftEnvelope {
            range_id: 1,
            message: vec![0xff; 64],
            chunk: None,
        }],
    };
    let r = RaftTransportClient::new(ch)
        .stream(futures::stream::iter(vec![batch]))
        .await;
    match r {
        Ok(_) => panic!("a forged Raft batch was accepted"),
        Err(s) => s,
    }
}

#[test]
fn plaintext_beyond_loopback_needs_insecure() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (peer, client, http) = (free_port(), free_port(), free_port());
    let args = |extra: &[&str]| {
        let mut a = vec![
            "server".to_string(),
            "--cluster-init".into(),
            format!("--peer-address=0.0.0.0:{peer}"),
            format!("--client-address=0.0.0.0:{client}"),
            format!("--http-address=127.0.0.1:{http}"),
            format!("--data-dir={}", data.display()),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let o = Command::new(BIN)
        .args(args(&[]))
        .env_remove("RANGEDB_INSECURE")
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("refusing to serve the peer address 0.0.0.0"),
        "{e}"
    );
    assert!(e.contains("--certs-dir") && e.contains("--insecure"), "{e}");
    assert!(!data.exists(), "a refused start created its data directory");

    // --insecure and --certs-dir together make no sense (RANGEDB_INSECURE=1
    // is --insecure, as the Compose files and k8s manifests set it).
    for (flag, env) in [
        (Some("--insecure"), None),
        (None, Some("1")),
        (None, Some("true")),
    ] {
        let mut c = Command::new(BIN);
        c.args(args(&["--certs-dir", "/nonexistent"]));
        c.args(flag);
        if let Some(v) = env {
            c.env("RANGEDB_INSECURE", v);
        }
        let o = c.output().unwrap();
        assert!(stderr(&o).contains("contradict"), "{}", stderr(&o));
    }

    // With --insecure it serves, and says what that exposes.
    let mut s = Server::start(
        args(&["--insecure"]),
        format!("127.0.0.1:{client}"),
        format!("127.0.0.1:{peer}"),
        tmp.path().join("server.log"),
    );
    put_when_ready(&s.client_address.clone(), "/k", "v");
    assert!(
        s.log_text().contains("RUNNING INSECURE"),
        "{}",
        s.log_text()
    );
    s.kill();
}

/// Opens `n` TCP connections to `addr` from 127.0.0.2 (another client
/// than the CLI's 127.0.0.1) that send `hello` and then nothing.
async fn stalled_connections(addr: &str, n: usize, hello: &[u8]) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut out = Vec::new();
    for _ in 0..n {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut c = s.connect(addr.parse().unwrap()).await.unwrap();
        let _ = c.write_all(hello).await;
        out.push(c);
    }
    out
}

/// How many of `conns` the server closed within `limit`.
async fn closed_within(conns: &mut [tokio::net::TcpStream], limit: Duration) -> usize {
    use tokio::io::AsyncReadExt;
    let mut closed = 0;
    let deadline = tokio::time::Instant::now() + limit;
    for c in conns.iter_mut() {
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout_at(deadline, c.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed += 1;
                    break;
                }
                Ok(Ok(_)) => continue, // server bytes (a TLS alert): keep reading
                Err(_) => break,
            }
        }
    }
    closed
}

#[test]
fn a_connection_flood_from_one_address_leaves_others_served() {
    let tmp = tempfile::tempdir().unwrap();
    let s = single_node_with(
        tmp.path(),
        &tmp.path().join("data"),
        &["--max-connections=64"],
    ); // 16 per address
    let ep = s.client_address.clone();
    put_when_ready(&ep, "/before", "1");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut flood = rt.block_on(stalled_connections(&ep, 40, b""));
    // The 24 over the per-address cap are closed at once...
    let closed = rt.block_on(closed_within(&mut flood, Duration::from_secs(3)));
    assert_eq!(closed, 24, "connections over the cap were not refused");
    // ...while the flood holds its 16, another client is served.
    let o = cli(&ep, &["put", "/during", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&cli(&ep, &["get", "/during"])).trim(), "2");
    assert!(
        s.log_text().contains("too many open connections"),
        "{}",
        s.log_text()
    );
    drop(flood);
}

#[test]
fn stalled_tls_handshakes_are_dropped_while_others_are_served() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = make_certs(&tmp.path().join("certs"));
    let flag = format!("--certs-dir={certs}");
    let s = single_node_with(tmp.path(), &tmp.path().join("data"), &[&flag]);
    let ep = s.client_address.clone();
    wait_until(
        Duration::from_secs(60),
        "the TLS node to accept writes",
        || {
            secure_cli(&certs, &ep, &["put", "/before", "1"])
                .status
                .success()
        },
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    // A slow-loris: the first bytes of a TLS record, then silence.
    let mut stalled = rt.block_on(stalled_connections(&ep, 8, &[0x16, 0x03, 0x01]));
    let o = secure_cli(&certs, &ep, &["put", "/during", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The handshake timeout (10 s) closes every one of them.
    let closed = rt.block_on(closed_within(&mut stalled, Duration::from_secs(20)));
    assert_eq!(closed, 8, "stalled handshakes were kept open");
    ok(&secure_cli(&certs, &ep, &["get", "/during"]));
}

#[test]
fn an_oversize_message_is_refused_and_the_node_keeps_serving() {
    use rangedb::proto::kv_client::KvClient;
    use rangedb::proto::PutRequest;
    let tmp = tempfile::tempdir().unwrap();
    let s = single_node(tmp.path());
    let ep = s.client_address.clone();
    put_when_ready(&ep, "/before", "1");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        let ch = rangedb::tls::endpoint(&ep, None)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let req = PutRequest {
            key: b"/huge".to_vec(),
            value: vec![b'x'; rangedb::api::MAX_KV_MESSAGE_BYTES + 1024],
            lease: 0,
        };
        KvClient::new(ch)
            .put(req)
            .await
            .expect_err("an oversize put was accepted")
    });
    assert!(status.message().contains("too large"), "{status:?}");
    // Nothing of it was written.
    let o = cli(&ep, &["get", "/huge"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let o = cli(&ep, &["put", "/after", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// An HTTP/2 frame: 9-byte header and payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK: a literal header (not indexed) with a static-table name.
fn hpack_indexed_name(index: u8, value: &str) -> Vec<u8> {
    let mut b = if index < 15 {
        vec![index]
    } else {
        vec![0x0f, index - 15]
    };
    b.push(value.len() as u8);
    b.extend_from_slice(value.as_bytes());
    b
}

/// The node's streams per connection (`server/limits.rs`).
const MAX_STREAMS: usize = 1024;

#[test]
fn a_stream_flood_on_one_connection_is_refused_while_others_are_served() {
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().unwrap();
    let s = single_node(tmp.path());
    let ep = s.client_address.clone();
    put_when_ready(&ep, "/before", "1");
    // A raw HTTP/2 client that ignores the node's stream limit: 2,000
    // Kv/Get streams opened at once, none of them ever sending a body.
    let mut c = std::net::TcpStream::connect(&ep).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(0x4, 0, 0, &[])); // SETTINGS
    out.extend(h2_frame(0x4, 0x1, 0, &[])); // SETTINGS ACK (theirs)
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
    block.extend(hpack_indexed_name(4, "/rangedb.Kv/Get")); // :path
    block.extend(hpack_indexed_name(1, "rangedb")); // :authority
    block.extend(hpack_indexed_name(31, "application/grpc")); // content-type
    block.extend([0x00, 2, b't', b'e', 8]);
    block.extend(b"trailers");
    for i in 0..2000u32 {
        out.extend(h2_frame(0x1, 0x4, 2 * i + 1, &block)); // HEADERS, END_HEADERS
    }
    c.write_all(&out).unwrap();
    // The node refuses what is over its limit: RST_STREAM(REFUSED_STREAM)
    // per extra stream, or GOAWAY for the connection.
    let mut got = Vec::new();
    let mut buf = [0u8; 64 << 10];
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let refused = loop {
        if let Ok(n) = c.read(&mut buf) {
            if n == 0 {
                break true; // closed: refused as a whole
            }
            got.extend_from_slice(&buf[..n]);
        }
        let mut at = 0;
        let (mut refused_streams, mut goaway) = (0, None);
        while at + 9 <= got.len() {
            let len = u32::from_be_bytes([0, got[at], got[at + 1], got[at + 2]]) as usize;
            if at + 9 + len > got.len() {
                break;
            }
            let code = |off: usize| {
                let p = &got[at + 9 + off..at + 13 + off];
                u32::from_be_bytes([p[0], p[1], p[2], p[3]])
            };
            match got[at + 3] {
                0x3 if len == 4 && code(0) == 0x7 => refused_streams += 1,
                0x7 if len >= 8 => goaway = Some(code(4)),
                _ => {}
            }
            at += 9 + len;
        }
        // Not a protocol error of this test's own making.
        assert!(
            goaway.is_none_or(|c| c != 0x1 && c != 0x9),
            "GOAWAY {goaway:?}"
        );
        if refused_streams >= 2000 - MAX_STREAMS || goaway.is_some() {
            break true;
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
    };
    assert!(refused, "a stream flood got no refusal");
    // Other clients are served meanwhile.
    let o = cli(&ep, &["put", "/during", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&cli(&ep, &["get", "/during"])).trim(), "2");
    drop(c);
}
