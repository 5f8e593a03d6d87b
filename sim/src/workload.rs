//! Workloads: seeded client loops that record every operation in the
//! history. Today: per-key registers (unique-valued writes, deletes and
//! reads), a set (inserts, and removals of members the client inserted),
//! and prefix scans over the set. A new workload adds an
//! `Op` kind (history.rs), a branch here, and a check in `checks.rs`.

use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rangedb::client::Client;

use crate::history::{Entry, History, Op, Outcome};

/// Key prefixes of the workloads.
pub const REGISTER_PREFIX: &str = "/reg/";
pub const SET_PREFIX: &str = "/set/";

#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    /// Number of register keys (few keys: more contention per key).
    pub registers: usize,
    /// Percent of operations that are register writes, reads, set inserts; the rest are scans.
    pub write_pct: u32,
    pub read_pct: u32,
    pub insert_pct: u32,
    /// Per mille of operations that split a range at a random key.
    pub split_permille: u32,
    /// Percent of register writes that are deletes, and of set inserts that
    /// are removals of a member this client inserted.
    pub delete_pct: u32,
}

impl Default for WorkloadOptions {
    fn default() -> Self {
        WorkloadOptions {
            registers: 4,
            write_pct: 35,
            read_pct: 35,
            insert_pct: 22,
            split_permille: 15,
            delete_pct: 20,
        }
    }
}

/// Runs one client until `stop` (simulated time since the history began, µs).
pub async fn client_loop(
    id: usize,
    client: Client,
    history: History,
    mut rng: ChaCha8Rng,
    opts: WorkloadOptions,
    stop_us: u64,
) {
    let mut n = 0u64;
    // Members this client inserted (acknowledged), not yet removed.
    let mut mine: Vec<String> = Vec::new();
    // Deletes draw from their own RNG, so the other draws stay as they were.
    let mut drng = ChaCha8Rng::seed_from_u64(rng.gen::<u64>() ^ 0xde1e7e);
    while history.now_us() < stop_us {
        n += 1;
        let dice = rng.gen_range(0..100);
        let delete = drng.gen_range(0..100) < opts.delete_pct;
        let op = if rng.gen_range(0..1000) < opts.split_permille {
            let key = if rng.gen_bool(0.5) {
                format!("{REGISTER_PREFIX}{}", rng.gen_range(0..opts.registers))
            } else {
                format!(
                    "{SET_PREFIX}c{}-{:06}",
                    rng.gen_range(0..8),
                    rng.gen_range(0..n.max(1) + 1)
                )
            };
            Op::Split { key }
        } else if dice < opts.write_pct {
            let key = format!("{REGISTER_PREFIX}{}", rng.gen_range(0..opts.registers));
            if delete {
                Op::Delete { key }
            } else {
                Op::Write {
                    key,
                    value: format!("c{id}-{n}"),
                }
            }
        } else if dice < opts.write_pct + opts.read_pct {
            Op::Read {
                key: format!("{REGISTER_PREFIX}{}", rng.gen_range(0..opts.registers)),
            }
        } else if dice < opts.write_pct + opts.read_pct + opts.insert_pct {
            if delete && !mine.is_empty() {
                let i = drng.gen_range(0..mine.len());
                Op::Delete {
                    key: mine.swap_remove(i),
                }
            } else {
                Op::Write {
                    key: format!("{SET_PREFIX}c{id}-{n:06}"),
                    value: "1".into(),
                }
            }
        } else {
            Op::Scan {
                prefix: SET_PREFIX.into(),
            }
        };
        let inserted = match &op {
            Op::Write { key, .. } if key.starts_with(SET_PREFIX) => Some(key.clone()),
            _ => None,
        };
        let outcome = run_recorded(&client, &history, id, op).await;
        if let (Some(key), Outcome::Written) = (inserted, outcome) {
            mine.push(key);
        }
        // Think time keeps histories small enough for exhaustive checking.
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1..40))).await;
    }
}

/// A client of the timestamp oracle: small batches with think time, its own
/// RNG (so adding it left the other workloads' draws unchanged). Half of
/// the requests go through a fresh client, which finds the oracle anew:
/// right after a leader change, some requests reach the old leader (through
/// the long-lived client's cached route) and some the new one — what an
/// oracle serving past its lease would be caught by.
pub async fn tso_loop(
    id: usize,
    client: Client,
    history: History,
    mut rng: ChaCha8Rng,
    stop_us: u64,
) {
    while history.now_us() < stop_us {
        let op = Op::Timestamps {
            count: *[1u64, 1, 2, 7, 100].choose(&mut rng).unwrap_or(&1),
        };
        let fresh = rng
            .gen_bool(0.5)
            .then(|| Client::new(client.endpoints().to_vec(), client.options()).ok())
            .flatten();
        run_recorded(fresh.as_ref().unwrap_or(&client), &history, id, op).await;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(2..30))).await;
    }
}

/// Runs `op`, records it with its invoke and completion times, and returns
/// its outcome.
async fn run_recorded(client: &Client, history: &History, id: usize, op: Op) -> Outcome {
    let invoke_us = history.now_us();
    let outcome = execute(client, &op).await;
    history.record(Entry {
        client: id,
        op,
        invoke_us,
        complete_us: history.now_us(),
        outcome: outcome.clone(),
    });
    outcome
}

/// Runs one operation and classifies its outcome.
pub async fn execute(client: &Client, op: &Op) -> Outcome {
    match op {
        Op::Write { key, value } => match client.put(key.as_bytes(), value.as_bytes()).await {
            Ok(()) => Outcome::Written,
            Err(e) if !e.is_retryable() => Outcome::Failed(e.to_string()),
            Err(e) => Outcome::Unknown(e.to_string()),
        },
        Op::Delete { key } => match client.delete(key.as_bytes()).await {
            Ok(()) => Outcome::Written,
            Err(e) if !e.is_retryable() => Outcome::Failed(e.to_string()),
            Err(e) => Outcome::Unknown(e.to_string()),
        },
        Op::Read { key } => match client.get(key.as_bytes()).await {
            Ok(v) => Outcome::Read(v.map(|v| String::from_utf8_lossy(&v).into_owned())),
            Err(e) => Outcome::Unknown(e.to_string()),
        },
        Op::Split { key } => match client.split(key.as_bytes(), false).await {
            Ok(()) => Outcome::Written,
            Err(e) if !e.is_retryable() => Outcome::Failed(e.to_string()),
            Err(e) => Outcome::Unknown(e.to_string()),
        },
        Op::Timestamps { count } => match client.timestamps(*count).await {
            Ok(first) => Outcome::Timestamps {
                first: first.0,
                count: *count,
            },
            Err(e) => Outcome::Unknown(e.to_string()),
        },
        Op::Scan { prefix } => {
            let end = format!("{}~", prefix.trim_end_matches('/'));
            match client
                .scan(prefix.as_bytes(), end.as_bytes(), 100_000, false)
                .await
            {
                Ok(pairs) => Outcome::Scanned(
                    pairs
                        .into_iter()
                        .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
                        .collect(),
                ),
                Err(e) => Outcome::Unknown(e.to_string()),
            }
        }
    }
}
