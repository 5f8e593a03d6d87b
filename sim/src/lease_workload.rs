//! The lease simulation: holders grant leases, attach keys and keep them
//! alive while the nemesis moves, isolates and crashes the placement
//! driver (the system range's leader, whose clock decides expiry), skews
//! every node's clock by up to 2 s and drifts it within the bound; then
//! some holders stop keeping alive and one revokes. Checked afterwards
//! (`check`):
//!
//! - safety: no key disappears before its lease could have ended: earlier
//!   than the last acknowledged keep-alive's send time plus the TTL as the
//!   fastest clock within the bound counts it (TTL / (1 + bound));
//! - a lease kept alive every 500 ms never ends while it is (a failover
//!   takes far less than its TTL, and the new leader gives it a full TTL);
//! - liveness: a key whose lease was no longer kept alive (or was revoked)
//!   is gone within `GONE_WITHIN` of the lease's end.
//!
//! Canary: `LeaseExpiresEarlyAfterFailover` (a new placement driver gives
//! leases a tenth of their TTL).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rangedb::client::Client;
use rangedb::Error;
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::nemesis::DRIFT_BOUND_PPM;

const TTL_SECS: i64 = 3;
const HOLDERS: usize = 4;
/// Holders keep alive until then (from the start); holder 0 keeps alive to
/// the end, holder 1 revokes at `STOP_AT`.
const STOP_AT: Duration = Duration::from_secs(30);
const RUN: Duration = Duration::from_secs(45);
const GONE_WITHIN: Duration = Duration::from_secs(12);

#[derive(Default, Debug, Clone)]
struct Holder {
    key: String,
    lease: u64,
    /// When the key was written (acknowledged).
    written: Option<Instant>,
    /// Send time of the last acknowledged keep-alive (or the grant).
    last_kept: Option<Instant>,
    /// When it stopped keeping alive, or revoked.
    stopped: Option<Instant>,
    revoked: bool,
    /// A keep-alive answered NotFound while it was still keeping alive.
    lost: bool,
    kept: usize,
    errors: usize,
}

/// What one run found.
pub struct LeaseReport {
    pub violations: Vec<String>,
    pub summary: String,
}

async fn retry<T, F, Fut>(limit: Duration, mut f: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let start = Instant::now();
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() > limit || !e.is_retryable() => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn holder(i: usize, client: Client, rec: Arc<Mutex<Vec<Holder>>>, start: Instant) {
    let key = format!("l/{i}");
    let sent = Instant::now();
    let Ok(l) = retry(Duration::from_secs(30), || client.lease_grant(TTL_SECS, 0)).await else {
        rec.lock().unwrap()[i].errors += 1;
        return;
    };
    {
        let mut g = rec.lock().unwrap();
        g[i].key = key.clone();
        g[i].lease = l.id;
        g[i].last_kept = Some(sent);
    }
    // Write the key (keep the lease alive meanwhile: the write may wait
    // out an election).
    loop {
        let sent = Instant::now();
        match client.put_leased(key.as_bytes(), b"held", l.id).await {
            Ok(()) => {
                rec.lock().unwrap()[i].written = Some(Instant::now());
                break;
            }
            Err(Error::NotFound(_)) => return,
            Err(_) => {
                if client.lease_keep_alive(l.id).await.is_ok() {
                    rec.lock().unwrap()[i].last_kept = Some(sent);
                }
            }
        }
    }
    let until = match i {
        0 => start + RUN,
        _ => start + STOP_AT,
    };
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let sent = Instant::now();
        match client.lease_keep_alive(l.id).await {
            Ok(_) => {
                let mut g = rec.lock().unwrap();
                g[i].last_kept = Some(sent);
                g[i].kept += 1;
            }
            Err(Error::NotFound(_)) => {
                let mut g = rec.lock().unwrap();
                g[i].errors += 1;
                g[i].lost = true;
                return;
            }
            Err(_) => rec.lock().unwrap()[i].errors += 1,
        }
    }
    if i == 1 {
        let at = Instant::now();
        // NotFound: an earlier attempt whose answer was lost revoked it.
        let r = retry(Duration::from_secs(20), || client.lease_revoke(l.id)).await;
        if matches!(r, Ok(_) | Err(Error::NotFound(_))) {
            let mut g = rec.lock().unwrap();
            g[i].revoked = true;
            g[i].stopped = Some(at);
        }
    } else {
        rec.lock().unwrap()[i].stopped = Some(Instant::now());
    }
}

/// Reads every key every 100 ms: when each was first seen gone (after it
/// was written).
async fn monitor(
    client: Client,
    rec: Arc<Mutex<Vec<Holder>>>,
    end: Instant,
) -> BTreeMap<String, Instant> {
    let mut gone = BTreeMap::new();
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let keys: Vec<String> = rec
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.written.is_some())
            .map(|h| h.key.clone())
            .collect();
        for k in keys {
            if gone.contains_key(&k) {
                continue;
            }
            if let Ok(None) = client.get(k.as_bytes()).await {
                gone.insert(k, Instant::now());
            }
        }
    }
    gone
}

/// Moves the placement driver (the system range's leader) around, cuts it
/// off, crashes it, and drifts clocks within the bound, until `until`.
async fn faults(cluster: &Cluster, rng: &mut ChaCha8Rng, until: Instant, log: &mut Vec<String>) {
    let n = cluster.nodes.len() as u64;
    let start = Instant::now();
    let bound = DRIFT_BOUND_PPM as i64;
    // Skew (offsets up to 2 s either way) and drift within the bound.
    for id in 1..=n {
        let clock = &cluster.node(id).clock;
        clock.set_offset_ms(rng.gen_range(-2000..=2000));
        clock.set_drift_ppm(rng.gen_range(-bound..=bound));
    }
    loop {
        let pause = Duration::from_millis(rng.gen_range(1500..4000));
        if Instant::now() + pause + Duration::from_secs(3) > until {
            return;
        }
        tokio::time::sleep(pause).await;
        let Some((range, pd)) = cluster.leader_of_key(b"_/leases/").await else {
            continue;
        };
        match rng.gen_range(0..10) {
            0..=3 => {
                let to = pd % n + 1;
                if cluster.transfer_leader(range, to).await.is_ok() {
                    log.push(format!(
                        "{:?} placement driver {pd} -> {to}",
                        start.elapsed()
                    ));
                }
            }
            4..=5 => {
                log.push(format!(
                    "{:?} isolate placement driver {pd}",
                    start.elapsed()
                ));
                cluster.isolate(pd);
                tokio::time::sleep(Duration::from_millis(rng.gen_range(500..2500))).await;
                cluster.heal();
            }
            6..=7 => {
                log.push(format!("{:?} crash placement driver {pd}", start.elapsed()));
                cluster.kill(pd);
                tokio::time::sleep(Duration::from_millis(rng.gen_range(300..1500))).await;
                cluster.restart(pd);
            }
            _ => {
                let id = rng.gen_range(1..=n);
                let ppm = rng.gen_range(-bound..=bound);
                cluster.node(id).clock.set_drift_ppm(ppm);
                log.push(format!("{:?} node {id} drifts {ppm} ppm", start.elapsed()));
            }
        }
    }
}

fn check(
    holders: &[Holder],
    gone: &BTreeMap<String, Instant>,
    end: Instant,
    out: &mut Vec<String>,
) {
    // The fastest clock within the bound counts a TTL in this much time.
    let ttl = Duration::from_secs(TTL_SECS as u64);
    let min_life = ttl.mul_f64(1_000_000.0 / (1_000_000.0 + DRIFT_BOUND_PPM as f64));
    for (i, h) in holders.iter().enumerate() {
        let Some(written) = h.written else {
            continue;
        };
        let seen_gone = gone.get(&h.key).copied();
        let kept = h.last_kept.unwrap_or(written);
        if let Some(g) = seen_gone {
            if !h.revoked && g < kept + min_life {
                out.push(format!(
                    "holder {i}: {} deleted {:?} after its last acknowledged keep-alive was sent (the lease lives at least {min_life:?})",
                    h.key,
                    g.saturating_duration_since(kept)
                ));
            }
            if h.revoked && h.stopped.is_some_and(|s| g < s) && g < kept + min_life {
                out.push(format!(
                    "holder {i}: {} deleted before its revocation",
                    h.key
                ));
            }
        }
        // Keep-alives go every 500 ms and a new placement driver gives every
        // lease its full TTL, so a holder that keeps alive never finds its
        // lease gone (a failover is over well within TTL / (1 + bound)).
        if h.lost {
            out.push(format!(
                "holder {i}: its lease ended while it was kept alive (a keep-alive found it gone)"
            ));
        }
        if let Some(stopped) = h.stopped {
            let due = if h.revoked { stopped } else { kept + ttl } + GONE_WITHIN;
            if seen_gone.is_none() && due < end {
                out.push(format!(
                    "holder {i}: {} still there {GONE_WITHIN:?} after its lease ended",
                    h.key
                ));
            }
        }
    }
}

/// One run on a 3-node cluster.
pub async fn run(cluster: Arc<Cluster>) -> LeaseReport {
    let mut rng = ChaCha8Rng::seed_from_u64(madsim::rand::random());
    cluster.wait_for_leaders(Duration::from_secs(30)).await;
    let rec: Arc<Mutex<Vec<Holder>>> = Arc::new(Mutex::new(vec![Holder::default(); HOLDERS]));
    let start = Instant::now();
    let end = start + RUN + GONE_WITHIN + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for i in 0..HOLDERS {
        let c = cluster.client(Duration::from_secs(5));
        tasks.push(cluster.client_host.spawn(holder(i, c, rec.clone(), start)));
    }
    let mon = {
        let c = cluster.client(Duration::from_secs(2));
        cluster.client_host.spawn(monitor(c, rec.clone(), end))
    };
    let mut log = Vec::new();
    faults(&cluster, &mut rng, start + RUN, &mut log).await;
    cluster.heal();
    for t in tasks {
        let _ = t.await;
    }
    let gone = mon.await.unwrap_or_default();
    let holders = rec.lock().unwrap().clone();
    let mut violations = Vec::new();
    check(&holders, &gone, end, &mut violations);
    LeaseReport {
        violations,
        summary: format!(
            "holders: {}; gone: {:?}; faults: {}",
            holders
                .iter()
                .enumerate()
                .map(|(i, h)| format!(
                    "{i}: lease {:x}, {} keep-alives, {} errors{}",
                    h.lease,
                    h.kept,
                    h.errors,
                    if h.revoked { ", revoked" } else { "" }
                ))
                .collect::<Vec<_>>()
                .join("; "),
            gone.iter()
                .map(|(k, t)| format!("{k} at {:?}", t.saturating_duration_since(start)))
                .collect::<Vec<_>>(),
            log.join(", ")
        ),
    }
}
