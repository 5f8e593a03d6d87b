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
}

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Raft state of every range on each endpoint's node.
    Status,
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
            match client.get_with(key.as_bytes(), c).await? {
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
                }
                None => {
                    eprintln!("Error: key not found: {key}");
                    return Ok(ExitCode::from(1));
                }
            }
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
        Command::Admin(AdminCommand::Split { key }) => {
            client.split(key.as_bytes()).await?;
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
            return print_value(&mut out, &client, &key, json).await;
        }
        Command::Admin(AdminCommand::Config(ConfigCommand::Get { key })) => {
            let key = system_key(&key, CONFIG_PREFIX)?;
            return print_value(&mut out, &client, &key, json).await;
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
                            for r in &s.ranges {
                                let _ = writeln!(
                                    out,
                                    "  range {}: {} term {} leader {} commit {} applied {} voters {:?}",
                                    r.range_id,
                                    if r.is_leader { "LEADER  " } else { "follower" },
                                    r.term,
                                    r.leader_id,
                                    r.commit,
                                    r.applied,
                                    r.voters
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
    json: bool,
) -> Result<ExitCode> {
    match client.get(key.as_bytes()).await? {
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
