//! `rangedb bench`: N concurrent clients against a running cluster for a fixed
//! time; prints ops/s and p50/p99/p999 latency, then one JSON line.
//!
//! `--workload tso` measures the timestamp oracle: every client asks for
//! one timestamp at a time through one shared batcher (as a node's
//! transactions do), so ops/s is timestamps/s; each client checks that its
//! timestamps strictly increase.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::client::{Client, ClientOptions, TsoBatcher};
use crate::error::{Error, Result};

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Put,
    Get,
    Scan,
    /// Timestamps from the oracle (one per op, through one shared batcher).
    Tso,
    /// A transaction writing two keys half the keyspace apart (with
    /// `--ranges 2` or more, in different ranges: a two-phase commit).
    Txn,
    /// A read-only transaction reading one key (a snapshot read, no commit round).
    ReadTxn,
    /// Bank transfers: a transaction reads two of `--keys` accounts (an
    /// absent account holds 100) and moves 1 from one to the other;
    /// conflicts are retried. The total stays `100 × --keys`.
    Bank,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// What each client does in a loop.
    #[arg(long, value_enum, default_value_t = Workload::Put)]
    pub workload: Workload,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds run first and not measured (each client learns where the
    /// ranges and their leaders are, connections open).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Distinct keys the workload touches (loaded first for get/scan).
    #[arg(long, default_value_t = 10_000)]
    pub keys: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Pairs per scan.
    #[arg(long, default_value_t = 100)]
    pub scan_limit: u32,
    /// Key prefix (must not start with "_/").
    #[arg(long, default_value = "/bench/")]
    pub prefix: String,
    /// Seed of the key choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Split the benchmark's key space into this many ranges first.
    #[arg(long, default_value_t = 1)]
    pub ranges: usize,
}

fn key(prefix: &str, i: usize) -> Vec<u8> {
    format!("{prefix}{i:010}").into_bytes()
}

/// What the clients measured.
struct Stats {
    /// Latency of every successful op, microseconds, sorted.
    latencies_us: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
    seconds: f64,
}

/// Progress is printed every this many splits, and while loading, every
/// LOAD_REPORT; keys are loaded LOAD_BATCH at a time.
const SPLIT_REPORT_EVERY: usize = 500;
const LOAD_REPORT: Duration = Duration::from_secs(1);
const LOAD_BATCH: usize = 500;

pub async fn run(
    endpoints: &[String],
    (tls, token): (Option<Arc<crate::tls::TlsMaterial>>, Option<String>),
    args: BenchArgs,
    json_only: bool,
) -> Result<()> {
    if args.clients == 0 || args.keys == 0 || args.duration.is_nan() || args.duration <= 0.0 {
        return Err(Error::InvalidArgument(
            "--clients, --keys and --duration must be positive".into(),
        ));
    }
    if args.warmup.is_nan() || !(0.0..=3600.0).contains(&args.warmup) {
        return Err(Error::InvalidArgument(
            "--warmup must be 0 to 3600 seconds".into(),
        ));
    }
    let opts = ClientOptions {
        tls,
        token,
        ..Default::default()
    };
    if args.ranges > 1 {
        presplit(&Client::new(endpoints.to_vec(), opts.clone())?, &args).await?;
    }
    if matches!(
        args.workload,
        Workload::Get | Workload::Scan | Workload::ReadTxn
    ) {
        load(&Client::new(endpoints.to_vec(), opts.clone())?, &args).await?;
    }
    let args = Arc::new(args);
    let stats = drive(endpoints, &opts, args.clone()).await?;
    report(&args, &stats, json_only);
    Ok(())
}

/// Splits the benchmark's key space into `--ranges` ranges.
async fn presplit(admin: &Client, args: &BenchArgs) -> Result<()> {
    let n = args.ranges.min(args.keys);
    let started = Instant::now();
    for r in 1..n {
        admin
            .split(&key(&args.prefix, r * args.keys / n), true)
            .await?;
        if r % SPLIT_REPORT_EVERY == 0 {
            eprintln!(
                "split {r}/{} ({:.0} splits/s)",
                n - 1,
                r as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    eprintln!("split the key space into {n} ranges");
    Ok(())
}

/// Writes every key once (get and scan workloads read them).
async fn load(loader: &Client, args: &BenchArgs) -> Result<()> {
    let value = vec![b'v'; args.value_size];
    let mut done = 0;
    let mut last_report = Instant::now();
    for chunk_start in (0..args.keys).step_by(LOAD_BATCH) {
        let pairs = (chunk_start..(chunk_start + LOAD_BATCH).min(args.keys))
            .map(|i| (key(&args.prefix, i), value.clone()))
            .collect();
        loader.batch_put(pairs).await?;
        done = (chunk_start + LOAD_BATCH).min(args.keys);
        if last_report.elapsed() > LOAD_REPORT {
            eprintln!("loading: {done}/{} keys", args.keys);
            last_report = Instant::now();
        }
    }
    eprintln!("loaded {done} keys");
    Ok(())
}

/// Runs `--clients` clients for `--duration` seconds.
async fn drive(endpoints: &[String], opts: &ClientOptions, args: Arc<BenchArgs>) -> Result<Stats> {
    let duration = Duration::from_secs_f64(args.duration);
    let warmup = Duration::from_secs_f64(args.warmup);
    let start = Instant::now();
    let mut tasks = Vec::new();
    let tso = TsoBatcher::new(Arc::new(Client::new(endpoints.to_vec(), opts.clone())?));
    for c in 0..args.clients {
        let client = Client::new(endpoints.to_vec(), opts.clone())?;
        let args = args.clone();
        let tso = tso.clone();
        tasks.push(tokio::spawn(async move {
            client_loop(client, tso, args, c as u64, start + warmup, duration).await
        }));
    }
    let mut stats = Stats {
        latencies_us: Vec::new(),
        errors: 0,
        first_error: None,
        seconds: 0.0,
    };
    for t in tasks {
        let (l, e, f) = t
            .await
            .map_err(|e| Error::Internal(format!("bench client failed: {e}")))?;
        stats.latencies_us.extend(l);
        stats.errors += e;
        if stats.first_error.is_none() {
            stats.first_error = f;
        }
    }
    stats.seconds = start.elapsed().saturating_sub(warmup).as_secs_f64();
    stats.latencies_us.sort_unstable();
    Ok(stats)
}

/// Balance of a bank account (absent: 100).
async fn balance(txn: &mut crate::client::Transaction<'_>, k: &[u8]) -> Result<i64> {
    let v = txn.get(k).await?;
    match v {
        None => Ok(100),
        Some(v) => String::from_utf8_lossy(&v).parse().map_err(|_| {
            Error::InvalidArgument(format!(
                "{} does not hold a balance: run the bank workload on its own --prefix",
                String::from_utf8_lossy(k)
            ))
        }),
    }
}

/// Moves 1 from account `a` to `b` in a transaction (conflicts retried).
async fn transfer(client: &Client, a: Vec<u8>, b: Vec<u8>) -> Result<()> {
    if a == b {
        return Ok(());
    }
    let opts = crate::client::TxnOptions::default();
    client
        .transact(&opts, |txn| {
            let (a, b) = (a.clone(), b.clone());
            Box::pin(async move {
                let (x, y) = (balance(txn, &a).await?, balance(txn, &b).await?);
                if x > 0 {
                    txn.put(&a, (x - 1).to_string().as_bytes())?;
                    txn.put(&b, (y + 1).to_string().as_bytes())?;
                }
                Ok(())
            })
        })
        .await
        .map(drop)
}

/// One client: ops until the time is up; (latencies, errors, first error)
/// of the ops begun at `measured` or later (those before are the warm-up).
async fn client_loop(
    client: Client,
    tso: TsoBatcher,
    args: Arc<BenchArgs>,
    c: u64,
    measured: Instant,
    duration: Duration,
) -> (Vec<u64>, u64, Option<String>) {
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed.wrapping_mul(1_000_003).wrapping_add(c));
    let value = vec![b'x'; args.value_size];
    let mut lat = Vec::new();
    let mut errors = 0u64;
    let mut first_error = None;
    let mut last_ts = crate::api::Timestamp::ZERO;
    let end = measured + duration;
    while Instant::now() < end {
        let k = key(&args.prefix, rng.gen_range(0..args.keys));
        let t = Instant::now();
        let r = match args.workload {
            Workload::Put => client.put(&k, &value).await,
            Workload::Get => client.get(&k).await.map(|_| ()),
            Workload::Scan => client
                .scan(&k, b"", args.scan_limit, false)
                .await
                .map(|_| ()),
            Workload::Txn => {
                let i = rng.gen_range(0..args.keys);
                let k2 = key(&args.prefix, (i + args.keys / 2) % args.keys.max(1));
                let k1 = key(&args.prefix, i);
                match client.begin().await {
                    Ok(mut txn) => match txn.put(&k1, &value).and_then(|_| txn.put(&k2, &value)) {
                        Ok(()) => txn.commit().await.map(drop),
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                }
            }
            Workload::Bank => {
                let a = k.clone();
                let b = key(&args.prefix, rng.gen_range(0..args.keys));
                transfer(&client, a, b).await
            }
            Workload::ReadTxn => match client.begin().await {
                Ok(mut txn) => match txn.get(&k).await {
                    Ok(_) => txn.commit().await.map(drop),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
            Workload::Tso => match tso.timestamp().await {
                Ok(ts) if ts <= last_ts => Err(Error::Internal(format!(
                    "timestamp {ts} after {last_ts}: not increasing"
                ))),
                Ok(ts) => {
                    last_ts = ts;
                    Ok(())
                }
                Err(e) => Err(e),
            },
        };
        match r {
            _ if t < measured => {} // the warm-up
            Ok(()) => lat.push(t.elapsed().as_micros() as u64),
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    client.flush().await; // secondaries of the last commits
    (lat, errors, first_error)
}

/// Prints the summary line (unless `--output json`) and the JSON line.
fn report(args: &BenchArgs, s: &Stats, json_only: bool) {
    let lat = &s.latencies_us;
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i] as f64 / 1000.0
    };
    let (ops, secs, errors) = (lat.len(), s.seconds, s.errors);
    let ops_per_sec = ops as f64 / secs;
    let name = match args.workload {
        Workload::ReadTxn => "read-txn".to_string(),
        w => format!("{w:?}").to_lowercase(),
    };
    if !json_only {
        outln!(
            "{name}: {ops} ops in {secs:.1}s with {} clients = {ops_per_sec:.0} ops/s; latency p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms; {errors} errors",
            args.clients,
            pct(0.50),
            pct(0.99),
            pct(0.999)
        );
        if let Some(e) = &s.first_error {
            outln!("first error: {e}");
        }
    }
    outln!(
        "{}",
        serde_json::json!({
            "workload": name, "clients": args.clients, "seconds": secs, "ops": ops, "errors": errors,
            "ops_per_sec": ops_per_sec, "p50_ms": pct(0.50), "p99_ms": pct(0.99), "p999_ms": pct(0.999),
            "value_size": args.value_size, "keys": args.keys, "ranges": args.ranges,
        })
    );
}
