//! The `rangedb` command line: `server` plus the client commands the original
//! README promised (`put`, `get`, `delete`, `range`, `batch put`) and `bench`.
//! Client commands use only the SDK. Errors print as one line on stderr
//! (`Error: ...`) with a non-zero exit code.

mod bench;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::client::{Client, ClientOptions};
use crate::config::{self, ServerConfig};
use crate::error::{Error, Result};

#[derive(Parser, Debug)]
#[command(
    name = "rangedb",
    version,
    about = "RangeDB: a distributed, range-partitioned, Raft-replicated key-value database",
    long_about = "RangeDB: a distributed, range-partitioned, Raft-replicated key-value database.\n\n\
        One binary is both the server and the command-line client.\n\
        Start a single node:   rangedb server --cluster-init\n\
        Then, in another shell: rangedb put /user/123 '{\"name\": \"John\"}'\n\
                               rangedb get /user/123\n\
                               rangedb range /user/ /user/z"
)]
pub struct Cli {
    /// Client addresses of cluster nodes (host:port, comma-separated); any node will do.
    #[arg(long, global = true, env = "RANGEDB_ENDPOINTS", default_value = config::DEFAULT_CLIENT_ADDRESS, value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Output format of client commands.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Overall time limit of a client command in seconds, retries included.
    #[arg(long, global = true, default_value_t = 15.0)]
    pub timeout: f64,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a RangeDB node.
    Server(ServerArgs),
    /// Write a value (keys under "_/" are reserved).
    Put { key: String, value: String },
    /// Read a value (linearizable); exits 1 if the key does not exist.
    Get {
        key: String,
        /// Read this node's replica without contacting the leader (may be stale).
        #[arg(long)]
        local: bool,
    },
    /// Delete a key (deleting a missing key is not an error).
    Delete { key: String },
    /// List keys in [start, end) in key order, as "key: value" lines.
    Range {
        start: String,
        end: String,
        /// At most this many pairs (default 1000, max 100000).
        #[arg(long)]
        limit: Option<u32>,
        /// Newest-first: descending key order.
        #[arg(long)]
        reverse: bool,
    },
    /// Several writes applied atomically.
    #[command(subcommand)]
    Batch(BatchCommand),
    /// Load-test a running cluster: ops/s and latency percentiles.
    Bench(bench::BenchArgs),
    /// Node administration and introspection.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Subcommand, Debug)]
pub enum BatchCommand {
    /// rangedb batch put <key> <value> [<key> <value> ...]
    Put {
        #[arg(required = true, num_args = 2.., value_names = ["KEY", "VALUE"])]
        pairs: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Per-node status.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Read the `_/` metadata namespace.
    #[command(subcommand)]
    Meta(MetaCommand),
    /// Read cluster configuration (`_/cluster/config/...`).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Split the range holding KEY so that KEY starts a new range.
    Split { key: String },
    /// Cluster-wide views.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Cluster id, replication factor, partitions, nodes (status, ranges, leaders), under-replicated ranges.
    Status,
}

#[derive(Subcommand, Debug)]
pub enum MetaCommand {
    /// List metadata keys under a prefix, e.g. `_/partitions/`.
    List {
        prefix: String,
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Read one metadata key, e.g. `_/cluster/id`.
    Get { key: String },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Read a setting: `replication_factor` or `_/cluster/config/replication_factor`.
    Get { key: String },
    /// Change a setting (validated; takes effect live): range_max_bytes.
    Set { key: String, value: String },
}

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Raft state of every range on each endpoint's node.
    Status,
    /// Move every replica off node ID (it keeps running); reports progress.
    Decommission {
        id: u64,
        /// Seconds to wait for the node to be drained (0: start it and return).
        #[arg(long, default_value_t = 600)]
        wait: u64,
    },
}

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Address for Raft traffic between nodes.
    #[arg(long, default_value = config::DEFAULT_PEER_ADDRESS)]
    pub peer_address: String,
    /// Address for clients (the Kv API).
    #[arg(long, default_value = config::DEFAULT_CLIENT_ADDRESS)]
    pub client_address: String,
    /// Peer addresses of all initial nodes, this one included, in the same order on every node.
    #[arg(long, value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Join the cluster formed by these peer addresses (same list as --peers on the init node).
    #[arg(long, value_delimiter = ',')]
    pub join: Vec<String>,
    /// Create a new cluster if the data directory is empty (ignored on restart).
    #[arg(long)]
    pub cluster_init: bool,
    /// Where this node keeps its data [default: ./rangedb-data/<peer-address>].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax), e.g. "info" or "rangedb=debug,raft=info".
    #[arg(long, env = "RANGEDB_LOG", default_value = "info")]
    pub log: String,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl ServerArgs {
    pub fn to_config(&self) -> Result<ServerConfig> {
        if !self.peers.is_empty() && !self.join.is_empty() && self.peers != self.join {
            return Err(Error::Config(
                "--peers and --join name different node lists; give one of them".into(),
            ));
        }
        if self.cluster_init && !self.join.is_empty() && self.peers.is_empty() {
            return Err(Error::Config(
                "--cluster-init creates a cluster and --join joins one; use --peers with --cluster-init".into(),
            ));
        }
        let peers = if self.peers.is_empty() {
            self.join.clone()
        } else {
            self.peers.clone()
        };
        let data_dir = self.data_dir.clone().unwrap_or_else(|| {
            let name: String = self
                .peer_address
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '.' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            PathBuf::from(config::DEFAULT_DATA_DIR).join(name)
        });
        let cfg = ServerConfig {
            peer_address: self.peer_address.clone(),
            client_address: self.client_address.clone(),
            peers: peers
                .into_iter()
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect(),
            cluster_init: self.cluster_init,
            data_dir,
            ..Default::default()
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colors only on a terminal: redirected logs stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    if let Command::Server(args) = &cli.command {
        init_logging(&args.log, args.log_format);
        let cfg = args.to_config()?;
        tracing::info!(data_dir = %cfg.data_dir.display(), "starting rangedb server");
        crate::server::serve(cfg).await?;
        return Ok(ExitCode::SUCCESS);
    }
    init_logging("warn", LogFormat::Text);
    if !(cli.timeout > 0.0 && cli.timeout.is_finite()) {
        return Err(Error::Config(
            "--timeout must be a positive number of seconds".into(),
        ));
    }
    let opts = ClientOptions {
        deadline: Duration::from_secs_f64(cli.timeout),
        ..Default::default()
    };
    let client = Client::new(cli.endpoints.clone(), opts)?;
    let json = cli.output == Output::Json;
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Server(_) => {} // handled above
        Command::Put { key, value } => {
            client.put(key.as_bytes(), value.as_bytes()).await?;
            print_ok(&mut out, json);
        }
        Command::Get { key, local } => {
            let c = if local {
                crate::client::ReadConsistency::Local
            } else {
                crate::client::ReadConsistency::Linearizable
            };
            return print_value(&mut out, &client, &key, c, json).await;
        }
        Command::Delete { key } => {
            client.delete(key.as_bytes()).await?;
            print_ok(&mut out, json);
        }
        Command::Range {
            start,
            end,
            limit,
            reverse,
        } => {
            let pairs = client
                .scan(
                    start.as_bytes(),
                    end.as_bytes(),
                    limit.unwrap_or(0),
                    reverse,
                )
                .await?;
            print_pairs(&mut out, &pairs, json);
        }
        Command::Batch(BatchCommand::Put { pairs }) => {
            if pairs.len() % 2 != 0 {
                return Err(Error::InvalidArgument(format!(
                    "batch put takes key value pairs; got {} arguments (the last key has no value)",
                    pairs.len()
                )));
            }
            let n = pairs.len() / 2;
            let kvs = pairs
                .chunks(2)
                .map(|c| (c[0].clone().into_bytes(), c[1].clone().into_bytes()))
                .collect();
            client.batch_put(kvs).await?;
            if json {
                let _ = writeln!(out, "{}", serde_json::json!({"ok": true, "keys": n}));
            } else {
                let _ = writeln!(out, "OK ({n} keys)");
            }
        }
        Command::Bench(args) => {
            drop(out);
            bench::run(&cli.endpoints, args, json).await?;
        }
        Command::Admin(AdminCommand::Cluster(ClusterCommand::Status)) => {
            let status = cluster_status(&client).await?;
            if json {
                let _ = writeln!(out, "{}", status);
            } else {
                print_cluster_status(&mut out, &status);
            }
        }
        Command::Admin(AdminCommand::Split { key }) => {
            client.split(key.as_bytes(), true).await?;
            print_ok(&mut out, json);
        }
        Command::Admin(AdminCommand::Meta(MetaCommand::List { prefix, limit })) => {
            let prefix = system_key(&prefix, "")?;
            let pairs = client
                .scan(
                    prefix.as_bytes(),
                    &prefix_end(prefix.as_bytes()),
                    limit.unwrap_or(0),
                    false,
                )
                .await?;
            print_pairs(&mut out, &pairs, json);
        }
        Command::Admin(AdminCommand::Meta(MetaCommand::Get { key })) => {
            let key = system_key(&key, "")?;
            return print_value(&mut out, &client, &key, Default::default(), json).await;
        }
        Command::Admin(AdminCommand::Config(ConfigCommand::Set { key, value })) => {
            crate::config::validate_setting(&key, &value)?;
            let full = client.set_config(&key, &value).await?;
            if json {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::json!({"key": full, "value": value.trim()})
                );
            } else {
                let _ = writeln!(out, "OK ({full} = {})", value.trim());
            }
        }
        Command::Admin(AdminCommand::Config(ConfigCommand::Get { key })) => {
            let key = system_key(&key, CONFIG_PREFIX)?;
            return print_value(&mut out, &client, &key, Default::default(), json).await;
        }
        Command::Admin(AdminCommand::Node(NodeCommand::Decommission { id, wait })) => {
            client.decommission_node(id).await?;
            let start = tokio::time::Instant::now();
            let mut last = None;
            loop {
                let status = cluster_status(&client).await?;
                let held = status["nodes"]
                    .as_array()
                    .and_then(|n| n.iter().find(|n| n["node_id"].as_u64() == Some(id)))
                    .and_then(|n| n["partitions"].as_array().map(Vec::len));
                if held == Some(0) {
                    if json {
                        let _ = writeln!(
                            out,
                            "{}",
                            serde_json::json!({"node_id": id, "replicas": 0, "decommissioned": true})
                        );
                    } else {
                        let _ = writeln!(out, "Node {id} decommissioned: it holds no replicas");
                    }
                    break;
                }
                if held != last {
                    eprintln!(
                        "node {id}: {} replicas left",
                        held.map(|h| h.to_string()).unwrap_or_else(|| "?".into())
                    );
                    last = held;
                }
                if start.elapsed() >= Duration::from_secs(wait) {
                    if wait > 0 {
                        return Err(Error::Timeout(format!(
                            "node {id} still holds {} replicas after {wait}s; decommissioning continues",
                            held.map(|h| h.to_string()).unwrap_or_else(|| "?".into())
                        )));
                    }
                    let _ = writeln!(out, "Decommissioning node {id} started");
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Command::Admin(AdminCommand::Node(NodeCommand::Status)) => {
            let mut failed = false;
            for ep in client.endpoints() {
                match client.node_status(ep).await {
                    Ok(s) => {
                        if json {
                            let ranges: Vec<_> = s.ranges.iter().map(|r| serde_json::json!({
                                "range_id": r.range_id, "leader_id": r.leader_id, "term": r.term, "is_leader": r.is_leader,
                                "commit": r.commit, "applied": r.applied, "last_index": r.last_index, "voters": r.voters,
                                "sleeping": r.quiesced,
                            })).collect();
                            let _ = writeln!(
                                out,
                                "{}",
                                serde_json::json!({
                                    "endpoint": ep, "node_id": s.node_id, "cluster_id": s.cluster_id,
                                    "peer_address": s.peer_address, "client_address": s.client_address, "ranges": ranges,
                                })
                            );
                        } else {
                            let _ = writeln!(
                                out,
                                "Node {} ({}), cluster {}",
                                s.node_id, ep, s.cluster_id
                            );
                            let _ = writeln!(out, "  Peer Address: {}", s.peer_address);
                            let asleep = s.ranges.iter().filter(|r| r.quiesced).count();
                            let _ =
                                writeln!(out, "  Ranges: {} ({asleep} sleeping)", s.ranges.len());
                            for r in &s.ranges {
                                let _ = writeln!(
                                    out,
                                    "  range {}: {} term {} leader {} commit {} applied {} voters {:?}{}",
                                    r.range_id,
                                    if r.is_leader { "LEADER  " } else { "follower" },
                                    r.term,
                                    r.leader_id,
                                    r.commit,
                                    r.applied,
                                    r.voters,
                                    if r.quiesced { " sleeping" } else { "" }
                                );
                            }
                        }
                    }
                    Err(e) => {
                        failed = true;
                        eprintln!("Error: {ep}: {e}");
                    }
                }
            }
            if failed {
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

const CONFIG_PREFIX: &str = "_/cluster/config/";

/// Gathers `admin cluster status` from the metadata namespace and every
/// node's own report.
async fn cluster_status(client: &Client) -> Result<serde_json::Value> {
    use serde_json::json;
    let text = |v: Option<Vec<u8>>| v.map(|v| String::from_utf8_lossy(&v).into_owned());
    let cluster_id = text(client.get(b"_/cluster/id").await?).unwrap_or_default();
    let rf = text(client.get(b"_/cluster/config/replication_factor").await?)
        .unwrap_or_else(|| "3".into());
    let parts = client
        .scan(
            b"_/partitions/",
            &prefix_end(b"_/partitions/"),
            100_000,
            false,
        )
        .await?;
    let registry = client
        .scan(
            b"_/cluster/nodes/",
            &prefix_end(b"_/cluster/nodes/"),
            100_000,
            false,
        )
        .await?;
    // node id -> client address, as the nodes know it.
    let mut addresses: std::collections::BTreeMap<u64, String> = std::collections::BTreeMap::new();
    for ep in client.endpoints() {
        if let Ok(s) = client.node_status(ep).await {
            addresses.extend(s.client_addresses);
        }
    }
    let mut nodes = Vec::new();
    let mut hosting: std::collections::BTreeMap<u64, Vec<u64>> = std::collections::BTreeMap::new();
    for (k, entry) in &registry {
        let id: u64 = String::from_utf8_lossy(&k[b"_/cluster/nodes/".len()..])
            .parse()
            .unwrap_or(0);
        let entry: serde_json::Value = serde_json::from_slice(entry).unwrap_or_default();
        let peer = entry["peer_address"].as_str().unwrap_or("").to_string();
        let addr = entry["client_address"]
            .as_str()
            .map(str::to_string)
            .or_else(|| addresses.get(&id).cloned());
        let st = match &addr {
            Some(a) => client.node_status(a).await.ok(),
            None => None,
        };
        let (ranges, leading): (Vec<u64>, Vec<u64>) = match &st {
            Some(s) => (
                s.ranges
                    .iter()
                    .filter(|r| !r.end_key.is_empty())
                    .map(|r| r.range_id)
                    .collect(),
                s.ranges
                    .iter()
                    .filter(|r| r.is_leader)
                    .map(|r| r.range_id)
                    .collect(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        for r in &ranges {
            hosting.entry(*r).or_default().push(id);
        }
        nodes.push(json!({
            "node_id": id,
            "peer_address": peer,
            "client_address": addr,
            "status": match (&st, entry["decommissioning"].as_bool() == Some(true)) {
                (None, _) => "NODE_UNREACHABLE",
                (Some(_), true) => "NODE_DECOMMISSIONING",
                (Some(_), false) => "NODE_RUNNING",
            },
            "partitions": ranges,
            "leader_of": leading,
        }));
    }
    let mut partitions = Vec::new();
    let mut under = Vec::new();
    for (_, v) in &parts {
        let d: serde_json::Value = serde_json::from_slice(v).unwrap_or_default();
        let id = d["range_id"].as_u64().unwrap_or(0);
        // Under-replicated: fewer running nodes hold it than the
        // replication factor asks for (the directory may lag a second).
        let want = rf.trim().parse::<usize>().unwrap_or(3);
        let live = hosting.get(&id).map(Vec::len).unwrap_or(0);
        if live < want {
            under.push(json!({"range_id": id, "live_replicas": live, "replicas": want}));
        }
        partitions.push(d);
    }
    let placement: serde_json::Value = client
        .get(b"_/cluster/placement")
        .await?
        .and_then(|v| serde_json::from_slice(&v).ok())
        .unwrap_or_default();
    Ok(json!({
        "placement": placement,
        "cluster_id": cluster_id,
        "replication_factor": rf.trim().parse::<u64>().unwrap_or(0),
        "partitions": partitions,
        "nodes": nodes,
        "under_replicated": under,
    }))
}

fn print_cluster_status(out: &mut impl std::io::Write, s: &serde_json::Value) {
    let list = |v: &serde_json::Value| {
        let ids: Vec<String> = v
            .as_array()
            .map(|a| a.iter().map(|x| x.to_string()).collect())
            .unwrap_or_default();
        format!("[{}]", ids.join(", "))
    };
    let empty = Vec::new();
    let nodes = s["nodes"].as_array().unwrap_or(&empty);
    let _ = writeln!(out, "Cluster Status:");
    let _ = writeln!(
        out,
        "  Cluster ID: {}",
        s["cluster_id"].as_str().unwrap_or("")
    );
    let _ = writeln!(out, "  Replication Factor: {}", s["replication_factor"]);
    let _ = writeln!(
        out,
        "  Number of Partitions: {}",
        s["partitions"].as_array().map(Vec::len).unwrap_or(0)
    );
    let _ = writeln!(out, "  Nodes ({}):", nodes.len());
    for n in nodes {
        let peer = n["peer_address"].as_str().unwrap_or("");
        let _ = writeln!(out, "    {}. {}", n["node_id"], peer);
        let _ = writeln!(
            out,
            "       Client Address: {}",
            n["client_address"].as_str().unwrap_or("unknown")
        );
        let _ = writeln!(out, "       Peer Address: {peer}");
        let _ = writeln!(out, "       Status: {}", n["status"].as_str().unwrap_or(""));
        let _ = writeln!(out, "       Partitions: {}", list(&n["partitions"]));
        let _ = writeln!(out, "       Leader Of: {}", list(&n["leader_of"]));
    }
    match s["under_replicated"].as_array() {
        Some(u) if !u.is_empty() => {
            let _ = writeln!(out, "  Under-replicated Partitions ({}):", u.len());
            for r in u {
                let _ = writeln!(
                    out,
                    "    range {}: {} of {} replicas live",
                    r["range_id"], r["live_replicas"], r["replicas"]
                );
            }
        }
        _ => {
            let _ = writeln!(out, "  Under-replicated Partitions: none");
        }
    }
    let p = &s["placement"];
    let jobs = p["jobs"].as_array().cloned().unwrap_or_default();
    let blocked = p["blocked"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(
        out,
        "  Placement Jobs: {}",
        if jobs.is_empty() {
            "none".to_string()
        } else {
            jobs.len().to_string()
        }
    );
    for j in jobs.iter().take(20) {
        let _ = writeln!(out, "    {}", j.as_str().unwrap_or(""));
    }
    if !blocked.is_empty() {
        let _ = writeln!(out, "  Blocked ({}):", blocked.len());
        for b in blocked.iter().take(20) {
            let _ = writeln!(out, "    {}", b.as_str().unwrap_or(""));
        }
    }
}

/// A metadata key as typed: full (`_/...`) or, with a default prefix, short.
fn system_key(key: &str, default_prefix: &str) -> Result<String> {
    if key.starts_with("_/") {
        Ok(key.to_string())
    } else if !default_prefix.is_empty() && !key.is_empty() && !key.contains('/') {
        Ok(format!("{default_prefix}{key}"))
    } else {
        Err(Error::InvalidArgument(format!(
            "{key:?} is not a metadata key (they start with \"_/\")"
        )))
    }
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

fn print_pairs(out: &mut impl std::io::Write, pairs: &[(Vec<u8>, Vec<u8>)], json: bool) {
    if json {
        let items: Vec<_> = pairs
            .iter()
            .map(|(k, v)| serde_json::json!({"key": lossy(k), "value": lossy(v)}))
            .collect();
        let _ = writeln!(out, "{}", serde_json::Value::Array(items));
    } else {
        for (k, v) in pairs {
            let _ = out.write_all(k);
            let _ = out.write_all(b": ");
            let _ = out.write_all(v);
            let _ = writeln!(out);
        }
    }
}

async fn print_value(
    out: &mut impl std::io::Write,
    client: &Client,
    key: &str,
    consistency: crate::client::ReadConsistency,
    json: bool,
) -> Result<ExitCode> {
    match client.get_with(key.as_bytes(), consistency).await? {
        Some(v) => {
            if json {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::json!({"key": key, "value": lossy(&v)})
                );
            } else {
                let _ = out.write_all(&v);
                let _ = writeln!(out);
            }
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("Error: key not found: {key}");
            Ok(ExitCode::from(1))
        }
    }
}

fn print_ok(out: &mut impl std::io::Write, json: bool) {
    let _ = if json {
        writeln!(out, "{}", serde_json::json!({"ok": true}))
    } else {
        writeln!(out, "OK")
    };
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn seed_readme_server_flags_parse() {
        let cli = Cli::try_parse_from([
            "rangedb",
            "server",
            "--peer-address=localhost:8082",
            "--client-address=localhost:8083",
            "--join=localhost:8080,localhost:8082,localhost:8084",
        ])
        .unwrap();
        let Command::Server(args) = cli.command else {
            panic!("not server")
        };
        let cfg = args.to_config().unwrap();
        assert_eq!(cfg.node_id().unwrap(), 2);
        assert!(!cfg.cluster_init);
        assert_eq!(cfg.data_dir, PathBuf::from("./rangedb-data/localhost_8082"));
    }

    #[test]
    fn client_commands_parse() {
        let cli = Cli::try_parse_from(["rangedb", "range", "/user/", "/user/z", "--limit", "100"])
            .unwrap();
        assert!(matches!(
            cli.command,
            Command::Range {
                limit: Some(100),
                ..
            }
        ));
        let cli = Cli::try_parse_from(["rangedb", "batch", "put", "/a", "1", "/b", "2"]).unwrap();
        assert!(
            matches!(cli.command, Command::Batch(BatchCommand::Put { ref pairs }) if pairs.len() == 4)
        );
        assert!(Cli::try_parse_from(["rangedb", "batch", "put", "/a"]).is_err());
    }
}
