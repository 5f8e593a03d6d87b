//! Helpers for tests that run real `rangedb` processes on loopback.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_rangedb");

/// A free loopback port (bound, then released), below Linux's ephemeral
/// range (32768+): a port the OS handed out for binding may be taken by an
/// outgoing connection before the server binds it (a CI flake).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::process::id().wrapping_mul(7919);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (base.wrapping_add(n.wrapping_mul(104_729)) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A server process, killed (SIGKILL) on drop.
pub struct Server {
    pub child: Option<Child>,
    pub args: Vec<String>,
    pub client_address: String,
    pub peer_address: String,
    /// The HTTP listener (`/healthz`, `/readyz`): always a free port here,
    /// never the default (client port + 1000, which another test's free
    /// port may be).
    pub http_address: String,
    pub log: PathBuf,
}

impl Server {
    pub fn start(
        mut args: Vec<String>,
        client_address: String,
        peer_address: String,
        log: PathBuf,
    ) -> Server {
        let given = args
            .iter()
            .find_map(|a| a.strip_prefix("--http-address=").map(str::to_string));
        let http_address = given.unwrap_or_else(|| {
            let a = format!("127.0.0.1:{}", free_port());
            args.push(format!("--http-address={a}"));
            a
        });
        let mut s = Server {
            child: None,
            args,
            client_address,
            peer_address,
            http_address,
            log,
        };
        s.spawn();
        s
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(BIN)
            .args(&self.args)
            .env("RANGEDB_LOG", "info,raft=warn,rangedb::placement=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start rangedb server");
        self.child = Some(child);
    }

    /// kill -9
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        // A node drains (up to 10 s by default) before it stops.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = c.try_wait().expect("wait") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("server did not exit within 20s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the CLI against `endpoints` and returns its output.
pub fn cli(endpoints: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--endpoints")
        .arg(endpoints)
        .args(args)
        .output()
        .expect("run rangedb cli")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Starts a single-node cluster in `dir`.
pub fn single_node(dir: &Path) -> Server {
    single_node_with(dir, &dir.join("data"), &[])
}

/// A single-node cluster keeping its data in `data` (its log in `dir`),
/// started with `extra` flags.
pub fn single_node_with(dir: &Path, data: &Path, extra: &[&str]) -> Server {
    let (peer, client) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let mut args = vec![
        "server".to_string(),
        "--cluster-init".into(),
        format!("--peer-address={peer}"),
        format!("--client-address={client}"),
        format!("--data-dir={}", data.display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Server::start(args, client, peer, dir.join("server.log"))
}

/// Polls until `f` returns true or the time runs out.
pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Retries `put key value` for up to a minute: returns once the cluster
/// (just started) accepts writes.
pub fn put_when_ready(endpoints: &str, key: &str, value: &str) {
    wait_until(
        Duration::from_secs(60),
        "the cluster to accept writes",
        || cli(endpoints, &["put", key, value]).status.success(),
    );
}

/// Starts an `n`-node cluster on free loopback ports (node 1 initializes it).
pub fn start_cluster_n(dir: &Path, n: usize) -> Vec<Server> {
    start_cluster_except(dir, n, &[])
}

/// Like `start_cluster_n`, but the nodes numbered in `absent` (1-based) are
/// listed as peers and never started.
pub fn start_cluster_except(dir: &Path, n: usize, absent: &[usize]) -> Vec<Server> {
    start_cluster_with(dir, n, absent, &[])
}

/// Like `start_cluster_except`, each node started with `extra` arguments.
pub fn start_cluster_with(dir: &Path, n: usize, absent: &[usize], extra: &[String]) -> Vec<Server> {
    let peers: Vec<String> = (0..n)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let clients: Vec<String> = (0..n)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let list = peers.join(",");
    (0..n)
        .filter(|i| !absent.contains(&(i + 1)))
        .map(|i| {
            let mut args = vec![
                "server".to_string(),
                format!("--peer-address={}", peers[i]),
                format!("--client-address={}", clients[i]),
                format!("--data-dir={}", dir.join(format!("n{}", i + 1)).display()),
            ];
            if i == 0 {
                args.push(format!("--peers={list}"));
                args.push("--cluster-init".into());
            } else {
                args.push(format!("--join={list}"));
            }
            args.extend(extra.iter().cloned());
            Server::start(
                args,
                clients[i].clone(),
                peers[i].clone(),
                dir.join(format!("n{}.log", i + 1)),
            )
        })
        .collect()
}

/// The servers' client addresses, comma-separated (a CLI `--endpoints`).
pub fn client_endpoints(servers: &[Server]) -> String {
    servers
        .iter()
        .map(|s| s.client_address.clone())
        .collect::<Vec<_>>()
        .join(",")
}

/// `rangedb admin cluster status --output json` against `endpoints`.
pub fn cluster_status(endpoints: &str) -> serde_json::Value {
    let out = cli(
        endpoints,
        &["--output", "json", "admin", "cluster", "status"],
    );
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// The index (in `addrs`) of the node leading range `range_id`, if any
/// node says it does.
pub async fn range_leader(
    client: &rangedb::client::Client,
    addrs: &[String],
    range_id: u64,
) -> Option<usize> {
    for (i, a) in addrs.iter().enumerate() {
        if let Ok(st) = client.node_status(a).await {
            if st
                .ranges
                .iter()
                .any(|r| r.range_id == range_id && r.is_leader)
            {
                return Some(i);
            }
        }
    }
    None
}

/// `GET path` on `addr`: (status code, body).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    use std::io::{Read, Write};
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
