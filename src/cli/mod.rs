//! The `rangedb` command line: `server` plus the client commands the original
//! README promised (`put`, `get`, `delete`, `range`, `batch put`) and `bench`.
//! Client commands use only the SDK and the API's names (`api`); `server`
//! calls `server::serve`. Errors print as one line on stderr (`Error: ...`)
//! with a non-zero exit code. Files: `mod.rs` (flags and dispatch),
//! `data.rs` (data commands), `admin.rs` (admin commands), `bench.rs`.

/// `println!` that ignores a closed stdout (`rangedb … | head`): client
/// commands keep SIGPIPE ignored (a reset connection must be an error, not
/// a silent kill), so a failed print must not panic either.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

mod admin;
mod auth;
mod backup;
mod bench;
mod cert;
mod data;
mod lease;
mod repl;
pub mod txn;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing::Instrument;

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
    /// Export OpenTelemetry trace spans to this OTLP/gRPC collector (e.g.
    /// http://127.0.0.1:4317). On a server: each request it serves, its
    /// Raft proposal and apply, its calls to other nodes; on a client
    /// command: the command, whose trace context travels with its requests
    /// (gRPC metadata) so the nodes' spans join it. Off when not given.
    #[arg(long, global = true, env = "RANGEDB_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Directory of the cluster's certificates (`rangedb cert`). A client
    /// command connects over TLS with `ca.crt` and the user's
    /// `client.<user>.crt`; `server` serves TLS (clients) and mutual TLS
    /// (peers) with `node.crt`. Without it, plaintext.
    #[arg(long, global = true, env = "RANGEDB_CERTS_DIR", value_name = "DIR")]
    pub certs_dir: Option<PathBuf>,
    /// The user a client command acts as: its certificate is
    /// `client.<user>.crt` in --certs-dir; its token comes from `rangedb
    /// login` or, for scripts, RANGEDB_PASSWORD.
    #[arg(long, global = true, env = "RANGEDB_USER", default_value = crate::tls::DEFAULT_USER)]
    pub user: String,
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
    Put {
        key: String,
        value: String,
        /// Attach the key to this lease (hex id from `lease grant`): it is
        /// deleted when the lease ends.
        #[arg(long)]
        lease: Option<String>,
    },
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
    /// Transactions across separate commands: begin, put/get/delete/range, commit.
    Txn {
        /// The transaction to act on (default: the current one, from `txn begin`).
        #[arg(long = "txn", env = "RANGEDB_TXN", global = true)]
        id: Option<String>,
        #[command(subcommand)]
        command: txn::TxnCommand,
    },
    /// An interactive shell: get/put/delete/range, begin/commit/rollback, admin commands.
    Repl,
    /// Load-test a running cluster: ops/s and latency percentiles.
    Bench(bench::BenchArgs),
    /// Node administration and introspection.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Create and list the cluster's TLS certificates (in --certs-dir).
    #[command(subcommand)]
    Cert(cert::CertCommand),
    /// Users (with passwords) and their roles; root only once authentication is on.
    #[command(subcommand)]
    User(auth::UserCommand),
    /// Roles: read or read-write on key prefixes.
    #[command(subcommand)]
    Role(auth::RoleCommand),
    /// Log in as --user (password from RANGEDB_PASSWORD or asked): later
    /// commands send the token until it expires.
    Login {
        /// Token lifetime in seconds (at most 86400).
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Forget the token `login` saved for --user.
    Logout,
    /// Print every change of a key, a --prefix, or a span [KEY, END) as it
    /// is committed, in commit order (until interrupted or --count events).
    Watch(watch::WatchArgs),
    /// Leases: keys written with `put --lease` are deleted when it ends.
    #[command(subcommand)]
    Lease(lease::LeaseCommand),
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
    /// Consistent backups: create, restore, verify, list.
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    /// Turn authentication on or off, or show it (users: `rangedb user`).
    #[command(subcommand)]
    Auth(auth::AuthCommand),
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
    /// Stop node ID gracefully: it turns not ready, moves its leaderships
    /// to other nodes, then exits (what SIGTERM does). Waits until it stopped.
    Drain {
        id: u64,
        /// Seconds to wait for the node to stop.
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
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
    /// Address of the HTTP listener: the web console (/), its JSON API
    /// (/api/v1/cluster, /api/v1/backups, /api/v1/node), /metrics
    /// (Prometheus), /healthz (the node is alive) and /readyz (it serves;
    /// `?verbose` says why not) [default: the client address's port +
    /// 1000, e.g. 127.0.0.1:9081].
    #[arg(long)]
    pub http_address: Option<String>,
    /// Also serve etcd's v3 gRPC API here, so etcdctl and etcd clients work
    /// unchanged (docs/etcd-compatibility.md) [default: off]. Plaintext
    /// only: not with --certs-dir.
    #[arg(long)]
    pub etcd_address: Option<String>,
    /// On SIGTERM, drain for at most this many seconds before stopping:
    /// turn not ready (/readyz 503) and move this node's leaderships to
    /// other nodes, so clients see no election gap. 0: stop at once.
    #[arg(long, default_value_t = config::DEFAULT_DRAIN_TIMEOUT_SECS)]
    pub drain_timeout: u64,
    /// Serve every linearizable read with a quorum round (ReadIndex)
    /// instead of under the leader's lease. Leases are safe while no
    /// clock runs faster or slower than --max-clock-drift-ppm.
    #[arg(long)]
    pub no_read_leases: bool,
    /// The most any node's clock may run fast or slow, in parts per
    /// million, that leader leases rely on (100000 = 10%); a lease lasts
    /// (election timeout - 1 tick) * (1 - drift) / (1 + drift).
    #[arg(long, default_value_t = config::DEFAULT_MAX_CLOCK_DRIFT_PPM)]
    pub max_clock_drift_ppm: u64,
    /// Log format: text lines, or one JSON object per line (with the
    /// node id and span fields).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Serve plaintext on addresses other than loopback (without
    /// --certs-dir RangeDB refuses to: anyone who can reach such an
    /// address can read and write every key, call every admin command and
    /// send Raft traffic as any node). For a private network you trust
    /// (containers: RANGEDB_INSECURE=1).
    #[arg(long, env = "RANGEDB_INSECURE", action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: bool,
    /// Most open connections per listener (peer, client, HTTP); one source
    /// address may hold a quarter of them. Connections over the cap are
    /// closed at once.
    #[arg(long, default_value_t = config::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Free space (MiB) kept on the data directory's disk: below it the
    /// node refuses new writes ("disk full", nothing written) and keeps
    /// serving reads, until space returns [default: 5% of the file
    /// system, at most 1024].
    #[arg(long, value_name = "MIB")]
    pub min_free_space_mb: Option<u64>,
    /// Log level or filter (tracing EnvFilter syntax): "warn", "info",
    /// "debug", or per module, e.g. "info,rangedb::node=debug"
    /// [default: $RUST_LOG, else info].
    #[arg(long = "log-level", visible_alias = "log", env = "RANGEDB_LOG")]
    pub log: Option<String>,
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
            http_address: Some(match &self.http_address {
                Some(a) => a.clone(),
                None => config::http_address_for(&self.client_address)?,
            }),
            etcd_address: self.etcd_address.clone(),
            drain_timeout: Duration::from_secs(self.drain_timeout),
            read_leases: !self.no_read_leases,
            max_clock_drift_ppm: self.max_clock_drift_ppm,
            insecure: self.insecure,
            max_connections: self.max_connections,
            min_free_space: self.min_free_space_mb.map(|m| m << 20),
            ..Default::default()
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Logs to stderr at `level` (flag, RANGEDB_LOG, RUST_LOG, else info); a
/// filter that does not parse is refused. With `otlp` (endpoint, this
/// process's instance name), spans are exported too (`telemetry`).
fn init_logging(
    level: Option<&str>,
    format: LogFormat,
    otlp: Option<(&str, &str)>,
) -> Result<Option<crate::telemetry::Telemetry>> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let level = level
        .map(str::to_string)
        .or_else(|| {
            std::env::var("RUST_LOG")
                .ok()
                .filter(|s| !s.trim().is_empty())
        })
        .unwrap_or_else(|| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
        .map_err(|e| Error::Config(format!("--log-level {level:?} is not a log filter: {e}")))?;
    // Colors only on a terminal: redirected logs stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Json => fmt.json().boxed(),
        LogFormat::Text => fmt.boxed(),
    }
    .with_filter(filter);
    let (export, telemetry) = match otlp {
        Some((endpoint, instance)) => {
            let (layer, t) = crate::telemetry::layer(endpoint, instance)?;
            (Some(layer), Some(t))
        }
        None => (None, None),
    };
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(export)
        .try_init();
    Ok(telemetry)
}

/// Flushes exported spans (the exporter's thread blocks while it does).
async fn flush_telemetry(t: Option<crate::telemetry::Telemetry>) {
    if let Some(t) = t {
        let _ = tokio::task::spawn_blocking(move || t.shutdown()).await;
    }
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
    let plaintext_client = cli.certs_dir.is_none() && !matches!(cli.command, Command::Server(_));
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e}{}", tls_hint(&e, plaintext_client));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// A plaintext client whose connection broke as a TLS server breaks it
/// (the server hangs up on the HTTP/2 preface) gets a hint.
fn tls_hint(e: &Error, plaintext_client: bool) -> &'static str {
    let m = e.to_string();
    let broken = ["broken pipe", "connection reset", "frame with invalid size"];
    let said = matches!(e, Error::Unauthenticated(_));
    if plaintext_client && !said && broken.iter().any(|b| m.contains(b)) {
        " (if the cluster uses TLS, give --certs-dir or set RANGEDB_CERTS_DIR)"
    } else {
        ""
    }
}

/// Exit codes of client commands (documented in docs/transactions.md):
/// 1 an error (or a key not found), 2 bad usage (clap), 3 the outcome of a
/// write is unknown, 4 a transaction conflict (run it again), 5 a
/// transaction too old, 6 a watch from a compacted revision.
pub fn exit_code(e: &Error) -> u8 {
    match e {
        Error::Timeout(_) | Error::Indeterminate(_) => 3,
        Error::TxnConflict { .. } => 4,
        Error::TxnTooOld(_) => 5,
        Error::Compacted { .. } => 6,
        _ => 1,
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let otlp = cli.otlp_endpoint.as_deref();
    if let Command::Server(args) = &cli.command {
        let instance = args.peer_address.clone();
        let telemetry = init_logging(
            args.log.as_deref(),
            args.log_format,
            otlp.map(|e| (e, instance.as_str())),
        )?;
        let mut cfg = args.to_config()?;
        if let Some(dir) = &cli.certs_dir {
            if cfg.insecure {
                return Err(Error::Config(
                    "--insecure and --certs-dir contradict each other; give one".into(),
                ));
            }
            cfg.tls = Some(std::sync::Arc::new(crate::security::load_node_tls(dir)?));
        }
        tracing::info!(tls = cfg.tls.is_some(),data_dir = %cfg.data_dir.display(), otlp_endpoint = otlp.unwrap_or("none"),
            "starting rangedb server");
        let r = crate::server::serve(cfg).await;
        flush_telemetry(telemetry).await;
        r?;
        return Ok(ExitCode::SUCCESS);
    }
    let telemetry = init_logging(Some("warn"), LogFormat::Text, otlp.map(|e| (e, "cli")))?;
    let span = match telemetry {
        Some(_) => crate::telemetry::cli_span(&command_name(&cli.command)),
        None => tracing::Span::none(),
    };
    let r = run_client(cli).instrument(span).await;
    flush_telemetry(telemetry).await;
    r
}

/// A client command's name for its span (`put`, `admin`, ...).
fn command_name(c: &Command) -> String {
    let debug = format!("{c:?}");
    let end = debug
        .find(|ch: char| !ch.is_ascii_alphanumeric())
        .unwrap_or(debug.len());
    debug[..end].to_ascii_lowercase()
}

async fn run_client(cli: Cli) -> Result<ExitCode> {
    if let Command::Cert(cmd) = cli.command {
        return cert::run(cli.certs_dir.as_deref(), cmd);
    }
    if !(cli.timeout > 0.0 && cli.timeout.is_finite()) {
        return Err(Error::Config(
            "--timeout must be a positive number of seconds".into(),
        ));
    }
    let json = cli.output == Output::Json;
    if let Command::Logout = cli.command {
        return auth::logout(&mut std::io::stdout().lock(), &cli.user, json);
    }
    let logging_in = matches!(cli.command, Command::Login { .. });
    let tls = match &cli.certs_dir {
        Some(dir) => Some(std::sync::Arc::new(
            // A user who logs in with a password needs only the CA.
            match crate::security::load_client_tls(dir, &cli.user) {
                Err(_) if logging_in || auth::has_password_or_token(&cli.user) => {
                    crate::tls::TlsMaterial::ca_only(dir)?
                }
                Err(Error::Config(m)) if m.contains("does not exist") => {
                    return Err(Error::Config(format!(
                        "{m}; or, with authentication on, log in: `rangedb --user {} login`",
                        cli.user
                    )))
                }
                r => r?,
            },
        )),
        None => None,
    };
    let mut opts = ClientOptions {
        deadline: Duration::from_secs_f64(cli.timeout),
        tls: tls.clone(),
        ..Default::default()
    };
    if !logging_in {
        opts.token = auth::token_for(&opts, &cli.endpoints, &cli.user).await?;
    }
    let client = Client::new(cli.endpoints.clone(), opts)?;
    let mut out = std::io::stdout().lock();
    let r = match cli.command {
        Command::Server(_) | Command::Cert(_) | Command::Logout => Ok(ExitCode::SUCCESS), // handled above
        Command::Login { ttl } => auth::login(&mut out, &client, &cli.user, ttl, json).await,
        Command::User(cmd) => auth::run_user(&mut out, &client, cmd, json).await,
        Command::Role(cmd) => auth::run_role(&mut out, &client, cmd, json).await,
        Command::Bench(args) => {
            drop(out);
            bench::run(&cli.endpoints, (tls, client.options().token), args, json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Admin(cmd) => admin::run(&mut out, &client, cmd, json).await,
        Command::Lease(cmd) => lease::run(&mut out, &client, cmd, json).await,
        Command::Watch(args) => {
            watch::check(&args)?;
            watch::run(&mut out, &client, args, json).await
        }
        Command::Txn { id, command } => {
            txn::run(&mut out, &client, command, id.as_deref(), json).await
        }
        Command::Repl => {
            drop(out);
            repl::run(&client).await
        }
        cmd => data::run(&mut out, &client, cmd, json).await,
    };
    // A commit answers at its commit point; its secondaries finish here,
    // before the process exits (readers would resolve them otherwise).
    client.flush().await;
    r
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
