//! Transaction workloads (SDK transactions, one attempt per recorded
//! transaction, on their own RNG so the other workloads' draws stay as
//! they were):
//! - list-append: 1–3 micro-operations over a few keys, each an append of
//!   a unique value (read the list, write it back longer) or a read,
//!   checked by the Elle-style checker (`elle.rs`) for strict
//!   serializability;
//! - bank: transfers between accounts in different ranges (split apart at
//!   the start) and snapshot reads of every account, whose total must
//!   always be the initial one.
//!
//! Outcomes: committed; aborted (any error before or at commit that says
//! nothing was written); unknown (an ambiguous error: it may have
//! committed).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rangedb::client::{Client, Transaction};
use rangedb::error::Error;

use crate::elle::{Mop, Txn, TxnOutcome};
use crate::history::History;

pub const LIST_PREFIX: &str = "/la/";
pub const LIST_KEYS: u64 = 5;
pub const BANK_PREFIX: &str = "/bank/";
pub const ACCOUNTS: u64 = 4;
/// Every account starts with this much (absent = initial).
pub const INITIAL: i64 = 100;

/// What the transaction clients observed.
#[derive(Clone, Default)]
pub struct TxnHistory {
    pub lists: Arc<Mutex<Vec<Txn>>>,
    /// Totals of committed snapshot reads of every account.
    pub bank_totals: Arc<Mutex<Vec<(u64, i64)>>>,
    pub transfers: Arc<Mutex<(u64, u64, u64)>>,
}

fn parse_list(v: Option<Vec<u8>>) -> Vec<u64> {
    let s = v
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default();
    s.split(',').filter_map(|x| x.parse().ok()).collect()
}

fn outcome(e: &Error) -> TxnOutcome {
    if e.is_ambiguous() {
        TxnOutcome::Unknown
    } else {
        TxnOutcome::Aborted
    }
}

/// The account key (accounts lie in different ranges once split).
pub fn account(i: u64) -> String {
    format!("{BANK_PREFIX}{i}")
}

async fn balance(t: &mut Transaction<'_>, i: u64) -> Result<i64, Error> {
    Ok(t.get(account(i).as_bytes())
        .await?
        .and_then(|v| String::from_utf8_lossy(&v).parse().ok())
        .unwrap_or(INITIAL))
}

async fn list_txn(
    client: &Client,
    rng: &mut ChaCha8Rng,
    next: &mut u64,
    id: usize,
) -> (Vec<Mop>, Result<(), Error>) {
    let n = rng.gen_range(1..=3);
    let mut plan = Vec::new();
    for _ in 0..n {
        let key = format!("{LIST_PREFIX}{}", rng.gen_range(0..LIST_KEYS));
        if rng.gen_bool(0.5) {
            *next += 1;
            plan.push(Mop::Append {
                key,
                value: (id as u64) << 32 | *next,
            });
        } else {
            plan.push(Mop::Read { key, value: None });
        }
    }
    let mut done = plan.clone();
    let run = async {
        let mut t = client.begin().await?;
        for (i, m) in plan.iter().enumerate() {
            match m {
                Mop::Append { key, value } => {
                    let mut l = parse_list(t.get(key.as_bytes()).await?);
                    l.push(*value);
                    let s: Vec<String> = l.iter().map(u64::to_string).collect();
                    t.put(key.as_bytes(), s.join(",").as_bytes())?;
                }
                Mop::Read { key, .. } => {
                    let l = parse_list(t.get(key.as_bytes()).await?);
                    done[i] = Mop::Read {
                        key: key.clone(),
                        value: Some(l),
                    };
                }
            }
        }
        t.commit().await.map(drop)
    };
    let r = run.await;
    (done, r)
}

/// One transaction client until `stop_us`.
pub async fn txn_loop(
    id: usize,
    client: Client,
    history: History,
    txns: TxnHistory,
    mut rng: ChaCha8Rng,
    stop_us: u64,
) {
    let mut next = 0u64;
    // Accounts and lists across ranges.
    let at = if id.is_multiple_of(2) {
        "/bank/2"
    } else {
        "/la/3"
    };
    let _ = client.split(at.as_bytes(), false).await;
    while history.now_us() < stop_us {
        let invoke_us = history.now_us();
        if rng.gen_range(0..100) < 60 {
            let (mut mops, r) = list_txn(&client, &mut rng, &mut next, id).await;
            let out = match &r {
                Ok(()) => TxnOutcome::Committed,
                Err(e) => outcome(e),
            };
            if out != TxnOutcome::Committed {
                for m in &mut mops {
                    if let Mop::Read { value, .. } = m {
                        *value = None;
                    }
                }
            }
            let complete_us = if out == TxnOutcome::Unknown {
                u64::MAX
            } else {
                history.now_us()
            };
            txns.lists.lock().unwrap().push(Txn {
                client: id,
                invoke_us,
                complete_us,
                mops,
                outcome: out,
            });
        } else if rng.gen_bool(0.5) {
            let (a, b) = (rng.gen_range(0..ACCOUNTS), rng.gen_range(0..ACCOUNTS));
            let amount = rng.gen_range(1..30);
            let r = async {
                let mut t = client.begin().await?;
                let (x, y) = (balance(&mut t, a).await?, balance(&mut t, b).await?);
                if a != b && x >= amount {
                    t.put(account(a).as_bytes(), (x - amount).to_string().as_bytes())?;
                    t.put(account(b).as_bytes(), (y + amount).to_string().as_bytes())?;
                }
                t.commit().await.map(drop)
            }
            .await;
            let mut c = txns.transfers.lock().unwrap();
            match r {
                Ok(()) => c.0 += 1,
                Err(e) if e.is_ambiguous() => c.2 += 1,
                Err(_) => c.1 += 1,
            }
        } else {
            let r = async {
                let mut t = client.begin().await?;
                let mut total = 0;
                for i in 0..ACCOUNTS {
                    total += balance(&mut t, i).await?;
                }
                t.commit().await?;
                Ok::<i64, Error>(total)
            }
            .await;
            if let Ok(total) = r {
                txns.bank_totals
                    .lock()
                    .unwrap()
                    .push((history.now_us(), total));
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1..30))).await;
    }
}

/// The violations the transaction workloads' histories show, and a summary.
pub fn check(txns: &TxnHistory) -> (Vec<String>, String) {
    let mut v = Vec::new();
    let lists = txns.lists.lock().unwrap().clone();
    let checked = match crate::elle::check(&lists) {
        Ok(stats) => format!(
            "{} list-append txns ({} committed, {} edges)",
            stats.txns, stats.committed, stats.edges
        ),
        Err(anomalies) => {
            for a in anomalies.iter().take(3) {
                v.push(format!("list-append: {a}"));
            }
            format!("{} list-append txns: anomalies", lists.len())
        }
    };
    let want = INITIAL * ACCOUNTS as i64;
    let totals = txns.bank_totals.lock().unwrap().clone();
    if let Some((at, t)) = totals.iter().find(|(_, t)| *t != want) {
        v.push(format!(
            "bank: a snapshot at {at} us totalled {t}, not {want}"
        ));
    }
    let (ok, aborted, unknown) = *txns.transfers.lock().unwrap();
    (
        v,
        format!(
            "{checked}; bank {ok} transfers ({aborted} aborted, {unknown} unknown), {} snapshots",
            totals.len()
        ),
    )
}
