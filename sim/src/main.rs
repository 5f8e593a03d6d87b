//! `rangedb-sim`: runs simulation seeds — one, a range, or as many as fit in a
//! time budget — each in its own process (statics must not leak between
//! seeds), several at once. A failure prints the seed, the knobs, the fault
//! schedule, the checker's report and the exact replay command.
//!
//! ```text
//! rangedb-sim --seed 17                 one seed, full report
//! rangedb-sim --seeds 1..200 --jobs 2   a sweep
//! rangedb-sim --time 600                seeds until 10 minutes have passed
//! rangedb-sim --canaries 50             every canary bug must be caught within 50 seeds
//! rangedb-sim --seeds 1..5 --check-determinism
//! rangedb-sim --list 76,80              the seeds in seeds/
//! ```

#[cfg(not(madsim))]
fn main() {
    eprintln!(
        "rangedb-sim runs only in simulation builds: use `make sim` (RUSTFLAGS=\"--cfg madsim\")"
    );
    std::process::exit(2);
}

#[cfg(madsim)]
fn main() {
    std::process::exit(runner::main());
}

#[cfg(madsim)]
mod runner {
    use std::collections::VecDeque;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use rangedb::chaos::Canary;
    use rangedb_sim::scenario::{run, RunOptions};

    struct Args {
        seeds: Vec<u64>,
        single: bool,
        time_budget: Option<Duration>,
        jobs: usize,
        canary: Option<Canary>,
        canaries: Option<u64>,
        until_fail: bool,
        determinism: bool,
        child: bool,
        nodes: Option<usize>,
        chaos_secs: u64,
    }

    fn usage() -> ! {
        eprintln!(
            "usage: rangedb-sim [--seed N | --seeds A..B | --list A,B,.. | --time SECS [--start N]] [--jobs J] [--canary NAME]\n\
             \x20                  [--until-fail] [--check-determinism] [--nodes N] [--chaos-secs S]\n\
             \x20      rangedb-sim --canaries N     (each canary must be caught within N seeds)\n\
             canaries: {}\n             rare canaries (run by name; too rare for --canaries): {}",
            Canary::ALL.iter().map(|c| c.name()).collect::<Vec<_>>().join(", "),
            Canary::RARE.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
        );
        std::process::exit(2);
    }

    fn parse() -> Args {
        let mut a = Args {
            seeds: Vec::new(),
            single: false,
            time_budget: None,
            jobs: 2,
            canary: None,
            canaries: None,
            until_fail: false,
            determinism: false,
            child: false,
            nodes: None,
            chaos_secs: 20,
        };
        let mut start = 1u64;
        let argv: Vec<String> = std::env::args().skip(1).collect();
        let mut i = 0;
        let val = |i: &mut usize| -> String {
            *i += 1;
            argv.get(*i).cloned().unwrap_or_else(|| usage())
        };
        let num = |s: String| -> u64 { s.parse().unwrap_or_else(|_| usage()) };
        while i < argv.len() {
            match argv[i].as_str() {
                "--seed" => {
                    a.seeds = vec![num(val(&mut i))];
                    a.single = true;
                }
                "--seeds" => {
                    let v = val(&mut i);
                    let (x, y) = v.split_once("..").unwrap_or_else(|| usage());
                    let (x, y) = (num(x.into()), num(y.into()));
                    a.seeds = (x..=y).collect();
                }
                "--start" => start = num(val(&mut i)),
                "--list" => {
                    let v = val(&mut i);
                    a.seeds = v
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(|s| num(s.trim().into()))
                        .collect();
                }
                "--time" => a.time_budget = Some(Duration::from_secs(num(val(&mut i)))),
                "--jobs" => a.jobs = num(val(&mut i)).max(1) as usize,
                "--canary" => {
                    let v = val(&mut i);
                    a.canary = Some(Canary::from_name(&v).unwrap_or_else(|| usage()));
                }
                "--canaries" => a.canaries = Some(num(val(&mut i))),
                "--until-fail" => a.until_fail = true,
                "--check-determinism" => a.determinism = true,
                "--child" => a.child = true,
                "--nodes" => a.nodes = Some(num(val(&mut i)) as usize),
                "--chaos-secs" => a.chaos_secs = num(val(&mut i)),
                "-h" | "--help" => usage(),
                _ => usage(),
            }
            i += 1;
        }
        if let Ok(s) = std::env::var("MADSIM_TEST_SEED") {
            if a.seeds.is_empty() {
                a.seeds = vec![num(s)];
                a.single = true;
            }
        }
        if a.seeds.is_empty() && a.time_budget.is_some() {
            a.seeds = (start..start + 1_000_000).collect();
        }
        if a.seeds.is_empty() && a.canaries.is_none() {
            a.seeds = (1..=20).collect();
        }
        a
    }

    /// Runs one seed in this process and prints its report.
    fn child(a: &Args) -> i32 {
        let seed = a.seeds[0];
        let mut opts = RunOptions::new(seed);
        opts.canary = a.canary;
        opts.nodes = a.nodes;
        opts.chaos = Duration::from_secs(a.chaos_secs);
        let wall = Instant::now();
        let mut rt =
            madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
        rt.set_time_limit(Duration::from_secs(900));
        let report = rt.block_on(run(opts));
        let wall = wall.elapsed().as_secs_f64();
        println!("seed {seed}: {}", report.knobs);
        println!("  {}", report.summary);
        println!("  faults: {}", report.schedule.join("; "));
        for v in &report.violations {
            println!("  VIOLATION {v}");
        }
        println!(
            "RESULT seed={seed} passed={} hash={:016x} sim_secs={:.1} wall_secs={wall:.2}",
            report.passed(),
            report.trace_hash,
            report.sim_secs
        );
        if report.passed() {
            0
        } else {
            1
        }
    }

    struct Outcome {
        seed: u64,
        passed: bool,
        hash: String,
        sim_secs: f64,
        output: String,
    }

    fn spawn(a: &Args, seed: u64) -> Child {
        let exe = std::env::current_exe().unwrap_or_else(|_| "rangedb-sim".into());
        let mut cmd = Command::new(exe);
        cmd.arg("--child")
            .arg("--seed")
            .arg(seed.to_string())
            .arg("--chaos-secs")
            .arg(a.chaos_secs.to_string());
        if let Some(c) = a.canary {
            cmd.arg("--canary").arg(c.name());
        }
        if let Some(n) = a.nodes {
            cmd.arg("--nodes").arg(n.to_string());
        }
        cmd.env_remove("MADSIM_TEST_SEED")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().unwrap_or_else(|e| {
            eprintln!("cannot start a simulation process: {e}");
            std::process::exit(2)
        })
    }

    fn finish(seed: u64, child: Child) -> Outcome {
        let out = match child.wait_with_output() {
            Ok(o) => o,
            Err(e) => {
                return Outcome {
                    seed,
                    passed: false,
                    hash: String::new(),
                    sim_secs: 0.0,
                    output: e.to_string(),
                }
            }
        };
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let result = stdout.lines().rev().find(|l| l.starts_with("RESULT "));
        let field = |name: &str| -> Option<String> {
            result?
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_string))
        };
        let passed = out.status.success() && field("passed").as_deref() == Some("true");
        let mut output = stdout.clone();
        if result.is_none() {
            // The run panicked (a server assertion, a harness check, a hang).
            let stderr = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = stderr
                .lines()
                .filter(|l| !l.trim_start().starts_with("at "))
                .collect();
            let panic_at = lines
                .iter()
                .position(|l| l.contains("panicked"))
                .unwrap_or(0);
            output.push_str(&format!(
                "  CRASHED:\n    {}\n",
                lines[panic_at..]
                    .iter()
                    .take(8)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n    ")
            ));
        }
        Outcome {
            seed,
            passed,
            hash: field("hash").unwrap_or_default(),
            sim_secs: field("sim_secs")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0.0),
            output,
        }
    }

    /// Runs seeds in child processes, `jobs` at a time.
    fn sweep(
        a: &Args,
        seeds: &[u64],
        stop_on_fail: bool,
        budget: Option<Duration>,
    ) -> Vec<Outcome> {
        let start = Instant::now();
        let mut pending: VecDeque<u64> = seeds.iter().copied().collect();
        let mut running: VecDeque<(u64, Child)> = VecDeque::new();
        let mut done = Vec::new();
        loop {
            let out_of_time = budget.is_some_and(|b| start.elapsed() >= b);
            let failed = stop_on_fail && done.iter().any(|o: &Outcome| !o.passed);
            while running.len() < a.jobs && !out_of_time && !failed {
                let Some(s) = pending.pop_front() else { break };
                running.push_back((s, spawn(a, s)));
            }
            let Some((s, c)) = running.pop_front() else {
                break;
            };
            let o = finish(s, c);
            if !o.passed {
                report_failure(a, &o);
            }
            done.push(o);
        }
        done
    }

    fn replay(a: &Args, seed: u64) -> String {
        match a.canary {
            Some(c) => format!("make sim SEED={seed} CANARY={}", c.name()),
            None => format!("make sim SEED={seed}"),
        }
    }

    fn report_failure(a: &Args, o: &Outcome) {
        println!("FAIL seed {}", o.seed);
        for l in o.output.lines().filter(|l| !l.starts_with("RESULT ")) {
            println!("{l}");
        }
        println!("  replay: {}", replay(a, o.seed));
    }

    pub fn main() -> i32 {
        let a = parse();
        if a.child {
            return child(&a);
        }
        if let Some(n) = a.canaries {
            return canaries(&a, n);
        }
        let wall = Instant::now();
        if a.single {
            let o = finish(a.seeds[0], spawn(&a, a.seeds[0]));
            print!(
                "{}",
                o.output
                    .lines()
                    .filter(|l| !l.starts_with("RESULT "))
                    .map(|l| format!("{l}\n"))
                    .collect::<String>()
            );
            if o.passed {
                println!(
                    "seed {} passed (trace {}); replay: {}",
                    o.seed,
                    o.hash,
                    replay(&a, o.seed)
                );
            } else {
                println!("  replay: {}", replay(&a, o.seed));
            }
            println!("{} passed, {} failed", o.passed as u32, !o.passed as u32);
            return if o.passed { 0 } else { 1 };
        }
        let outcomes = sweep(&a, &a.seeds, a.until_fail, a.time_budget);
        let mut failed: Vec<u64> = outcomes
            .iter()
            .filter(|o| !o.passed)
            .map(|o| o.seed)
            .collect();
        let mut checks = outcomes.len();
        if a.determinism {
            for o in outcomes.iter().filter(|o| o.passed).take(3) {
                checks += 1;
                let again = finish(o.seed, spawn(&a, o.seed));
                if again.hash != o.hash {
                    println!(
                        "FAIL seed {}: NOT deterministic: trace {} then {}",
                        o.seed, o.hash, again.hash
                    );
                    println!("  replay: {}", replay(&a, o.seed));
                    failed.push(o.seed);
                } else {
                    println!("determinism: seed {} gave trace {} twice", o.seed, o.hash);
                }
            }
        }
        let secs = wall.elapsed().as_secs_f64();
        let sim: f64 = outcomes.iter().map(|o| o.sim_secs).sum();
        println!(
            "simulated {} seeds ({:.0} s of cluster time) in {secs:.1} s wall: {:.1} simulated s per wall s, {:.0} seeds/min (jobs={})",
            outcomes.len(),
            sim,
            sim / secs.max(1e-9),
            outcomes.len() as f64 * 60.0 / secs.max(1e-9),
            a.jobs
        );
        if !failed.is_empty() {
            println!("failing seeds: {failed:?}");
        }
        println!("{} passed, {} failed", checks - failed.len(), failed.len());
        if failed.is_empty() {
            0
        } else {
            1
        }
    }

    /// The checkers that must be the ones to catch canary `c` (the prefix
    /// of their violation lines); `None`: any. The bank check must not be
    /// what catches skipped read validation (it cannot see write skew).
    fn expected_checkers(c: Canary) -> Option<&'static [&'static str]> {
        Some(match c {
            Canary::OracleMarkNotPersisted
            | Canary::OracleLeaseNoWait
            | Canary::OracleHandoffKeepsServing => &["oracle:"],
            Canary::SkipReadValidation => &["list-append:", "write skew:"],
            Canary::SecondariesBeforePrimary
            | Canary::RollbackWithoutTombstone
            | Canary::CommitAfterLockLost
            | Canary::GcCollectsPendingPrimary => &["atomicity:", "list-append:"],
            Canary::ReadsIgnoreLocks => &["list-append:", "bank:"],
            Canary::BlindRetry => &["list-append:", "bank:", "atomicity:"],
            Canary::LeaseDriftBeyondBound => &["linearizability:"],
            _ => return None,
        })
    }

    /// Every canary must make some seed in 1..=n fail, by its checker.
    fn canaries(a: &Args, n: u64) -> i32 {
        let seeds: Vec<u64> = (1..=n).collect();
        let mut missed = Vec::new();
        for c in Canary::ALL {
            let ca = Args {
                canary: Some(c),
                single: false,
                ..clone_args(a)
            };
            let wall = Instant::now();
            let by_its_checker = |o: &Outcome| {
                !o.passed
                    && expected_checkers(c).is_none_or(|want| {
                        o.output
                            .lines()
                            .any(|l| l.contains("VIOLATION") && want.iter().any(|w| l.contains(w)))
                    })
            };
            let outcomes = sweep_quiet(&ca, &seeds, &by_its_checker);
            match outcomes.iter().find(|o| by_its_checker(o)) {
                Some(o) => {
                    let lines: Vec<&str> = o.output.lines().collect();
                    let want = expected_checkers(c).unwrap_or(&[""]);
                    let at = lines
                        .iter()
                        .position(|l| l.contains("VIOLATION") && want.iter().any(|w| l.contains(w)))
                        .or_else(|| {
                            lines
                                .iter()
                                .position(|l| l.contains("VIOLATION") || l.contains("CRASHED"))
                        });
                    let why = match at {
                        Some(i) if lines[i].contains("CRASHED") => {
                            format!(
                                "crashed: {}",
                                lines.get(i + 2).or(lines.get(i + 1)).unwrap_or(&"").trim()
                            )
                        }
                        Some(i) => lines[i].trim().to_string(),
                        None => "failed".to_string(),
                    };
                    println!(
                        "canary {:<26} caught by seed {} ({} seeds, {:.1}s): {}",
                        c.name(),
                        o.seed,
                        outcomes.len(),
                        wall.elapsed().as_secs_f64(),
                        truncate(&why, 160)
                    );
                    println!("  replay: {}", replay(&ca, o.seed));
                }
                None => {
                    let others = outcomes.iter().filter(|o| !o.passed).count();
                    println!(
                        "canary {:<26} NOT caught in seeds 1..{n} by {:?} ({others} seeds failed otherwise)",
                        c.name(),
                        expected_checkers(c).unwrap_or(&["any checker"])
                    );
                    missed.push(c.name());
                }
            }
        }
        println!(
            "{} passed, {} failed",
            Canary::ALL.len() - missed.len(),
            missed.len()
        );
        if missed.is_empty() {
            0
        } else {
            1
        }
    }

    fn truncate(s: &str, n: usize) -> String {
        if s.len() <= n {
            s.to_string()
        } else {
            let mut end = n;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}…", &s[..end])
        }
    }

    /// Runs `seeds` until one outcome satisfies `stop` (the seeds running
    /// then finish too).
    fn sweep_quiet(a: &Args, seeds: &[u64], stop: &dyn Fn(&Outcome) -> bool) -> Vec<Outcome> {
        let mut pending: VecDeque<u64> = seeds.iter().copied().collect();
        let mut running: VecDeque<(u64, Child)> = VecDeque::new();
        let mut done: Vec<Outcome> = Vec::new();
        loop {
            let failed = done.iter().any(stop);
            while running.len() < a.jobs && !failed {
                let Some(s) = pending.pop_front() else { break };
                running.push_back((s, spawn(a, s)));
            }
            let Some((s, c)) = running.pop_front() else {
                break;
            };
            done.push(finish(s, c));
        }
        done.sort_by_key(|o| (o.passed, o.seed));
        done
    }

    fn clone_args(a: &Args) -> Args {
        Args {
            seeds: a.seeds.clone(),
            single: a.single,
            time_budget: a.time_budget,
            jobs: a.jobs,
            canary: a.canary,
            canaries: a.canaries,
            until_fail: a.until_fail,
            determinism: a.determinism,
            child: a.child,
            nodes: a.nodes,
            chaos_secs: a.chaos_secs,
        }
    }
}
