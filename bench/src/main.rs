//! `rangedb-bench`: one driver for RangeDB and etcd, so a comparison
//! measures the systems and not two different benchmark tools. The same key
//! and value generator, the same concurrency model (one task and one
//! connection per client, closed loop), the same warm-up and the same
//! statistics serve both; `scripts/bench-compare.sh` (`make
//! bench-compare`) interleaves runs against both and prints the table.
//!
//! Each run prints one human line and then one JSON line (the last line).

mod stats;
mod target;
mod zipf;

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use stats::{CpuSample, Stats};
use target::{System, Target};
use zipf::Zipfian;

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    /// Write the whole key space once (not measured; get, scan and ycsb-a read it).
    Load,
    /// Puts of uniformly chosen keys.
    Put,
    /// Linearizable gets of uniformly chosen keys.
    Get,
    /// YCSB workload A: 50% reads, 50% updates, keys Zipfian (theta 0.99).
    YcsbA,
    /// Linearizable scans of `--scan-limit` keys from a uniformly chosen key.
    Scan,
    /// Batch puts of `--batch` uniformly chosen keys (RangeDB only): the
    /// "flood of large batches" overload case.
    Batch,
}

#[derive(Parser, Debug)]
#[command(
    name = "rangedb-bench",
    about = "Drives RangeDB or etcd with the same closed-loop clients; prints ops/s, \
             latency percentiles and machine CPU, then one JSON line"
)]
struct Args {
    /// The system under test.
    #[arg(long, value_enum)]
    system: System,
    /// Client endpoints, comma-separated host:port.
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    #[arg(long, value_enum, default_value_t = Workload::Put)]
    workload: Workload,
    /// Concurrent clients (each its own connection).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds run first and not measured.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Keys in the key space.
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Pairs per scan.
    #[arg(long, default_value_t = 100)]
    scan_limit: u32,
    /// Pairs per batch put (`--workload batch`).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Zipfian exponent of ycsb-a.
    #[arg(long, default_value_t = 0.99)]
    theta: f64,
    /// Seed of the key choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Keys are 16 bytes: "/bench/" and nine digits.
const PREFIX: &str = "/bench/";
/// The first key after every benchmark key (the scans' end).
const PREFIX_END: &str = "/bench0";

/// Prints a line to stdout; a closed pipe (`| head -1`) is not an error.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

fn key(i: usize) -> Vec<u8> {
    format!("{PREFIX}{i:09}").into_bytes()
}

fn main() {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(args)) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> target::Result<()> {
    if args.clients == 0
        || args.keys == 0
        || args.duration.is_nan()
        || args.duration <= 0.0
        || args.warmup.is_nan()
        || args.warmup < 0.0
    {
        return Err("--clients, --keys and --duration must be positive".into());
    }
    if args.keys >= 1_000_000_000 {
        return Err("--keys must be below 1,000,000,000 (keys are 16 bytes)".into());
    }
    let args = Arc::new(args);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let target = Target::connect(args.system, &args.endpoints, c).await?;
        let args = args.clone();
        tasks.push(tokio::spawn(async move { client(target, args, c).await }));
    }
    // Measured window: after the warm-up, for the duration (load: all of it).
    let (warmup, duration) = match args.workload {
        Workload::Load => (Duration::ZERO, Duration::ZERO),
        _ => (
            Duration::from_secs_f64(args.warmup),
            Duration::from_secs_f64(args.duration),
        ),
    };
    tokio::time::sleep(warmup).await;
    let cpu = CpuSample::now();
    let mut stats = Stats::default();
    for t in tasks {
        let r = t.await.map_err(|e| format!("a client failed: {e}"))??;
        stats.merge(r);
    }
    let seconds = if args.workload == Workload::Load {
        started.elapsed().as_secs_f64()
    } else {
        duration.as_secs_f64()
    };
    let busy = cpu.and_then(|c| c.busy_since());
    report(&args, &mut stats, seconds, busy);
    Ok(())
}

/// One closed-loop client; what it measured in the window.
async fn client(mut target: Target, args: Arc<Args>, c: usize) -> target::Result<Stats> {
    let mut rng =
        ChaCha8Rng::seed_from_u64(args.seed.wrapping_mul(1_000_003).wrapping_add(c as u64));
    let value = vec![b'v'; args.value_size];
    let mut stats = Stats::default();
    if args.workload == Workload::Load {
        // Client c writes keys c, c + clients, …
        for i in (c..args.keys).step_by(args.clients) {
            target.put(&key(i), &value).await?;
            stats.latencies_us.push(0);
        }
        return Ok(stats);
    }
    let zipf =
        (args.workload == Workload::YcsbA).then(|| Zipfian::new(args.keys as u64, args.theta));
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.duration);
    loop {
        let t = Instant::now();
        if t >= end {
            break;
        }
        let r = match (args.workload, &zipf) {
            (Workload::YcsbA, Some(z)) => {
                let k = key(z.scrambled(&mut rng) as usize);
                if rng.gen_bool(0.5) {
                    target.get(&k).await.map(drop)
                } else {
                    target.put(&k, &value).await
                }
            }
            (Workload::Put, _) => target.put(&key(rng.gen_range(0..args.keys)), &value).await,
            (Workload::Get, _) => target
                .get(&key(rng.gen_range(0..args.keys)))
                .await
                .map(drop),
            (Workload::Scan, _) => target
                .scan(
                    &key(rng.gen_range(0..args.keys)),
                    PREFIX_END.as_bytes(),
                    args.scan_limit,
                )
                .await
                .map(drop),
            (Workload::Batch, _) => {
                let pairs = (0..args.batch)
                    .map(|_| (key(rng.gen_range(0..args.keys)), value.clone()))
                    .collect();
                target.batch_put(pairs).await
            }
            _ => Err("unreachable workload".to_string()),
        };
        let done = Instant::now();
        // Ops that end inside the window count (closed loop: the window's
        // throughput is ops finished in it).
        if done >= measure_from && done < end {
            match r {
                Ok(()) => stats.latencies_us.push((done - t).as_micros() as u64),
                Err(e) => {
                    stats.errors += 1;
                    stats.first_error.get_or_insert(e);
                }
            }
        }
    }
    Ok(stats)
}

fn report(args: &Args, s: &mut Stats, seconds: f64, busy: Option<f64>) {
    s.latencies_us.sort_unstable();
    let ops = s.latencies_us.len();
    let ops_per_sec = ops as f64 / seconds;
    let system = format!("{:?}", args.system).to_lowercase();
    let workload = match args.workload {
        Workload::YcsbA => "ycsb-a".to_string(),
        w => format!("{w:?}").to_lowercase(),
    };
    let load1 = stats::loadavg();
    let busy_txt = busy
        .map(|b| format!("; machine CPU {b:.0}% busy"))
        .unwrap_or_default();
    if args.workload == Workload::Load {
        out!(
            "{system}: loaded {ops} keys of {} bytes in {seconds:.1}s",
            args.value_size
        );
    } else {
        out!(
        "{system} {workload}: {ops} ops in {seconds:.1}s with {} clients = {ops_per_sec:.0} ops/s; \
         latency p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms; {} errors{busy_txt}",
        args.clients,
        s.pct(0.50),
        s.pct(0.99),
        s.pct(0.999),
        s.errors
    );
    }
    if let Some(e) = &s.first_error {
        out!("first error: {e}");
    }
    out!(
        "{}",
        serde_json::json!({
            "system": system, "workload": workload, "clients": args.clients, "seconds": seconds,
            "ops": ops, "errors": s.errors, "ops_per_sec": ops_per_sec,
            "p50_ms": s.pct(0.50), "p99_ms": s.pct(0.99), "p999_ms": s.pct(0.999),
            "cpu_busy_pct": busy, "loadavg_1m": load1,
            "keys": args.keys, "value_size": args.value_size, "scan_limit": args.scan_limit,
        })
    );
}
