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
//! - write skew probe ("doctors on call"): two keys, each 0 or absent
//!   (on call); a transaction reads both and takes one off call (writes 0)
//!   only if both are on call, else puts one back (deletes it: deletes
//!   inside transactions). Serializable histories keep at least one on
//!   call in every snapshot; write skew (reads not validated) takes both
//!   off.
//!
//! Outcomes: committed; aborted (any error before or at commit that says
//! nothing was written); unknown (an ambiguous error: it may have
//! committed).
//!
//! The clients' coordinators run with injected faults (`SimFaults`, the
//! SDK's `CommitFaults` hook, on the seed's RNG): short lock TTLs, crashes
//! after the primary's prewrite, before or after the commit point, and
//! stalls long enough for locks to expire — so locks are left behind and
//! resolved by readers. After the run, a final read of every list and
//! account checks atomicity and durability against what clients were
//! told: every committed append is there, no aborted one, and an unknown
//! transaction's appends all or none (`check`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rangedb::client::{Client, CommitFaults, CommitPoint, Fault, Transaction};
use rangedb::error::Error;

use crate::elle::{Mop, Txn, TxnOutcome};
use crate::history::History;

pub const LIST_PREFIX: &str = "/la/";
pub const LIST_KEYS: u64 = 5;
/// Lists rarely touched (see `list_txn`).
pub const COLD_PREFIX: &str = "/lc/";
pub const COLD_KEYS: u64 = 3;
pub const BANK_PREFIX: &str = "/bank/";
pub const ACCOUNTS: u64 = 4;
/// Every account starts with this much (absent = initial).
pub const INITIAL: i64 = 100;
pub const SKEW_KEYS: [&str; 2] = ["/ws/a", "/zs/b"];

/// Coordinator faults of one transaction client (see the module docs).
pub struct SimFaults {
    rng: Mutex<ChaCha8Rng>,
    ttl: Option<Duration>,
    crash: f64,
    stall: f64,
}

impl SimFaults {
    /// This seed's faults, drawn from `rng`.
    pub fn draw(rng: &mut ChaCha8Rng) -> SimFaults {
        let ttl = [None, Some(150u64), Some(600)][rng.gen_range(0..3)].map(Duration::from_millis);
        SimFaults {
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(rng.gen())),
            ttl,
            crash: [0.0, 0.04, 0.1][rng.gen_range(0..3)],
            stall: [0.0, 0.05, 0.15][rng.gen_range(0..3)],
        }
    }
}

impl CommitFaults for SimFaults {
    fn lock_ttl(&self) -> Option<Duration> {
        self.ttl
    }

    fn at(&self, _point: CommitPoint) -> Fault {
        let mut rng = self.rng.lock().unwrap();
        let x: f64 = rng.gen();
        if x < self.crash {
            Fault::Crash
        } else if x < self.crash + self.stall {
            // Up to three TTLs: the locks may well expire meanwhile.
            let ttl = self.ttl.unwrap_or(Duration::from_secs(3)).as_millis() as u64;
            Fault::Stall(Duration::from_millis(rng.gen_range(1..=3 * ttl)))
        } else {
            Fault::Continue
        }
    }
}

/// What the transaction clients observed.
#[derive(Clone, Default)]
pub struct TxnHistory {
    pub lists: Arc<Mutex<Vec<Txn>>>,
    /// Why each list transaction that did not commit failed (same index).
    pub list_errors: Arc<Mutex<Vec<String>>>,
    /// Totals of committed snapshot reads of every account.
    pub bank_totals: Arc<Mutex<Vec<(u64, i64)>>>,
    pub transfers: Arc<Mutex<(u64, u64, u64)>>,
    /// Committed snapshot reads of the write-skew probe's two keys.
    pub on_call: Arc<Mutex<Vec<Probe>>>,
}

/// A write-skew probe's snapshot: when (sim microseconds), and the two keys.
pub type Probe = (u64, [i64; 2]);

/// What a final read (after the run, faults healed) found.
#[derive(Debug, Clone, Default)]
pub struct FinalState {
    pub lists: BTreeMap<String, Vec<u64>>,
    pub bank_total: i64,
    pub on_call: [i64; 2],
}

/// Reads every list, account and probe key in one read-only transaction
/// (resolving the locks crashed coordinators left). Waiting out those
/// locks can take longer than a short `gc_ttl`, so a snapshot that fell
/// behind the GC horizon is taken again.
pub async fn final_state(client: &Client) -> Result<FinalState, Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match final_read(client).await {
            Err(e) if attempt < 5 && (e.is_txn_retryable() || e.is_retryable()) => {}
            Err(Error::TxnTooOld(_)) if attempt < 5 => {}
            r => return r,
        }
    }
}

async fn final_read(client: &Client) -> Result<FinalState, Error> {
    let mut t = client.begin().await?;
    let mut out = FinalState::default();
    let keys = (0..LIST_KEYS)
        .map(|i| format!("{LIST_PREFIX}{i}"))
        .chain((0..COLD_KEYS).map(|i| format!("{COLD_PREFIX}{i}")));
    for key in keys {
        let l = parse_list(t.get(key.as_bytes()).await?);
        out.lists.insert(key, l);
    }
    for i in 0..ACCOUNTS {
        out.bank_total += balance(&mut t, i).await?;
    }
    out.on_call = [on_call(&mut t, 0).await?, on_call(&mut t, 1).await?];
    t.commit().await?;
    Ok(out)
}

async fn on_call(t: &mut Transaction<'_>, i: usize) -> Result<i64, Error> {
    Ok(t.get(SKEW_KEYS[i].as_bytes())
        .await?
        .and_then(|v| String::from_utf8_lossy(&v).parse().ok())
        .unwrap_or(1))
}

/// One round of the write-skew probe: both keys read; one taken off call
/// only if both are on, else one put back on.
async fn skew_txn(client: &Client, rng: &mut ChaCha8Rng) -> Result<Option<[i64; 2]>, Error> {
    let mut t = client.begin().await?;
    let seen = [on_call(&mut t, 0).await?, on_call(&mut t, 1).await?];
    let i = rng.gen_range(0..2);
    let observe = rng.gen_bool(0.3);
    if !observe {
        // Off call is a 0; back on call is a delete (absent = on call):
        // deletes inside transactions, under the same checks.
        if seen[0] + seen[1] >= 2 {
            t.put(SKEW_KEYS[i].as_bytes(), b"0")?;
        } else {
            t.delete(SKEW_KEYS[i].as_bytes())?;
        }
    }
    t.commit().await?;
    Ok(Some(seen))
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
    // Now and then a hot list plus a cold one (the hot key sorts first:
    // the primary), so a crashed coordinator's secondary lock can sit
    // unread while GC works on the primary's key.
    let cold = rng.gen_range(0..100) < 12;
    let n = if cold { 2 } else { rng.gen_range(1..=3) };
    let mut plan = Vec::new();
    for i in 0..n {
        let key = if cold && i == 1 {
            format!("{COLD_PREFIX}{}", rng.gen_range(0..COLD_KEYS))
        } else {
            format!("{LIST_PREFIX}{}", rng.gen_range(0..LIST_KEYS))
        };
        if rng.gen_bool(0.5) || cold {
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
    let _ = client.split(b"/x", false).await; // the probe's keys apart
    while history.now_us() < stop_us {
        let invoke_us = history.now_us();
        let dice = rng.gen_range(0..100);
        if dice >= 85 {
            if let Ok(Some(seen)) = skew_txn(&client, &mut rng).await {
                txns.on_call.lock().unwrap().push((history.now_us(), seen));
            }
        } else if dice < 50 {
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
            txns.list_errors
                .lock()
                .unwrap()
                .push(r.as_ref().err().map(|e| e.to_string()).unwrap_or_default());
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

/// The violations the transaction workloads' histories show (and the
/// final read, when one was made), and a summary.
pub fn check(txns: &TxnHistory, fin: Option<&FinalState>) -> (Vec<String>, String) {
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
    let probes = txns.on_call.lock().unwrap().clone();
    if let Some((at, seen)) = probes.iter().find(|(_, s)| s[0] + s[1] < 1) {
        v.push(format!(
            "write skew: a snapshot at {at} us saw nobody on call ({seen:?})"
        ));
    }
    if let Some(fin) = fin {
        let errors = txns.list_errors.lock().unwrap().clone();
        v.extend(check_final(&lists, &errors, fin, want));
    }
    let (ok, aborted, unknown) = *txns.transfers.lock().unwrap();
    (
        v,
        format!(
            "{checked}; bank {ok} transfers ({aborted} aborted, {unknown} unknown), {} snapshots; \
             {} write-skew probes{}",
            totals.len(),
            probes.len(),
            if fin.is_some() {
                "; final state checked"
            } else {
                ""
            }
        ),
    )
}

/// Atomicity and durability against the final read: a committed
/// transaction's appends are all there, an aborted one's none, an unknown
/// one's all or none; the bank total and the probe's invariant hold.
fn check_final(lists: &[Txn], errors: &[String], fin: &FinalState, want: i64) -> Vec<String> {
    let mut v = Vec::new();
    for (i, t) in lists.iter().enumerate() {
        let appends: Vec<(&String, u64)> = t
            .mops
            .iter()
            .filter_map(|m| match m {
                Mop::Append { key, value } => Some((key, *value)),
                Mop::Read { .. } => None,
            })
            .collect();
        let present: Vec<bool> = appends
            .iter()
            .map(|(k, x)| fin.lists.get(*k).is_some_and(|l| l.contains(x)))
            .collect();
        let n = present.iter().filter(|p| **p).count();
        let bad = match t.outcome {
            TxnOutcome::Committed => n < appends.len(),
            TxnOutcome::Aborted => n > 0,
            TxnOutcome::Unknown => n > 0 && n < appends.len(),
        };
        if bad {
            v.push(format!(
                "atomicity: T{i} ({:?}, client {}) has {n} of its {} appends in the final state: {:?}{}",
                t.outcome,
                t.client,
                appends.len(),
                appends.iter().zip(&present).collect::<Vec<_>>(),
                errors
                    .get(i)
                    .filter(|e| !e.is_empty())
                    .map(|e| format!(" (its error: {e})"))
                    .unwrap_or_default()
            ));
            if v.len() >= 3 {
                break;
            }
        }
    }
    if fin.bank_total != want {
        v.push(format!(
            "bank: the final accounts total {}, not {want}",
            fin.bank_total
        ));
    }
    if fin.on_call[0] + fin.on_call[1] < 1 {
        v.push(format!(
            "write skew: nobody on call at the end ({:?})",
            fin.on_call
        ));
    }
    v
}
