//! The authentication simulation: a cluster of "TLS" nodes (simulated
//! connections state the identity a certificate would prove) with users
//! and roles, authentication on, clients writing under partitions and a
//! crash, and a role revoked midway. Checked afterwards:
//!
//! - nothing a caller may not write was written: no key outside the
//!   writer's grants, no half of a batch that mixed a permitted and a
//!   forbidden key, nothing from a client without credentials or from a
//!   user without roles once authentication has been on for the bound;
//! - every acknowledged permitted write is there;
//! - revocation is bounded: no write of the revoked user is acknowledged
//!   later than `REVOKE_BOUND` after the revocation was.
//!
//! Canaries: `AuthBatchChecksFirstKey` (the batch check),
//! `AuthRefreshKeepsOldTable` (the revocation bound).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rangedb::client::Client;
use rangedb::Error;
use tokio::time::Instant;

use crate::cluster::Cluster;

const ALICE_PW: &str = "alicepass1";
/// How long clients write; the revocation comes at `REVOKE_AT`.
const WORKLOAD: Duration = Duration::from_secs(40);
const REVOKE_AT: Duration = Duration::from_secs(8);
/// No faults for this long after the revocation: every node must have it
/// within a refresh (what `AuthRefreshKeepsOldTable` breaks).
const QUIET: Duration = Duration::from_secs(20);
/// A node refuses users once its table is `MAX_STALENESS` old; a request
/// authenticated just before may still take an attempt's time to answer.
const REVOKE_BOUND: Duration = Duration::from_secs(10 + 6);

/// What one run found.
pub struct AuthReport {
    pub violations: Vec<String>,
    pub summary: String,
}

#[derive(Default)]
struct Record {
    /// Permitted writes acknowledged: key -> (value, when).
    acked: BTreeMap<String, (String, Instant)>,
    /// Writes that must never land (forbidden, mixed batches).
    forbidden: Vec<String>,
    /// Writes of callers without rights, with when they were sent: none may
    /// land once authentication has been on for `REVOKE_BOUND` (until
    /// then, a node that has not yet learned it still lets certificate
    /// holders do anything, as it did while it was off).
    intruders: Vec<(String, Instant)>,
    refused: usize,
    failed: usize,
}

/// Retries `f` until it succeeds (AlreadyExists counts: an earlier,
/// ambiguous attempt did it) or `limit` passes.
async fn retry<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    let start = Instant::now();
    loop {
        match f().await {
            Ok(()) | Err(Error::AlreadyExists(_)) => return,
            Err(e) if start.elapsed() > limit => panic!("{what}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Users root and alice (read-write on `app/w/`, read on `app/`), bob (no
/// roles), `app/` in its own range led away from the auth records' leader (so revoking
/// on one node and checking on another are different nodes), then
/// authentication on. Returns alice's token and when authentication was
/// turned on.
async fn set_up(cluster: &Cluster) -> (String, Instant) {
    let root = cluster.client_as(Duration::from_secs(10), Some("root"), None);
    let limit = Duration::from_secs(60);
    retry("add root", limit, || root.user_add("root", "rootpass1")).await;
    retry("add alice", limit, || root.user_add("alice", ALICE_PW)).await;
    retry("add bob", limit, || root.user_add("bob", "bobpass11")).await;
    retry("add role", limit, || root.role_add("app")).await;
    retry("grant", limit, || {
        root.role_permission("app", b"app/w/", true, false)
    })
    .await;
    retry("grant", limit, || {
        root.role_permission("app", b"app/", false, false)
    })
    .await;
    retry("role", limit, || root.user_role("alice", "app", false)).await;
    retry("split", limit, || root.split(b"app/", true)).await;
    retry("split", limit, || root.split(b"app0", true)).await;
    retry("enable", limit, || async {
        root.set_auth_enabled(true).await.map(|_| ())
    })
    .await;
    let enabled_at = Instant::now();
    let anon = cluster.client_as(Duration::from_secs(10), None, None);
    let start = Instant::now();
    loop {
        match anon.login("alice", ALICE_PW, 3600).await {
            Ok(r) => {
                // Every node has the table within a refresh (2 s).
                tokio::time::sleep(Duration::from_secs(3)).await;
                return (r.token, enabled_at);
            }
            Err(e) if start.elapsed() > limit => panic!("alice cannot log in: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// alice's writes. After a refusal the writer starts a fresh client that
/// tries the next node first: a node refuses before it would say it is
/// not the leader, so a client whose cached leader refuses never learns
/// where the range went (which would hide a stale table elsewhere).
async fn writer(
    c: usize,
    make: impl Fn(usize) -> Client,
    rec: Arc<Mutex<Record>>,
    seed: u64,
    end: Instant,
) {
    let mut fresh = 0;
    let mut client = make(fresh);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut n = 0u64;
    while Instant::now() < end {
        n += 1;
        let r = match rng.gen_range(0..5) {
            0 | 1 => {
                let (k, v) = (format!("app/w/c{c}/{n:05}"), format!("v{n}"));
                let r = client.put(k.as_bytes(), v.as_bytes()).await;
                if r.is_ok() {
                    rec.lock().unwrap().acked.insert(k, (v, Instant::now()));
                }
                r
            }
            2 => {
                // Read-only, or no grant at all.
                let k = if rng.gen_bool(0.5) {
                    format!("app/r/c{c}/{n:05}")
                } else {
                    format!("other/c{c}/{n:05}")
                };
                rec.lock().unwrap().forbidden.push(k.clone());
                client.put(k.as_bytes(), b"x").await
            }
            _ => {
                // A permitted and a forbidden key: in one range (one
                // command), or across ranges (a transaction).
                let other = if rng.gen_bool(0.5) { "app/r" } else { "other" };
                let (a, b) = (format!("app/w/b{c}/{n:05}"), format!("{other}/b{c}/{n:05}"));
                rec.lock().unwrap().forbidden.extend([a.clone(), b.clone()]);
                let pairs = vec![
                    (a.into_bytes(), b"x".to_vec()),
                    (b.into_bytes(), b"x".to_vec()),
                ];
                client.batch_put(pairs).await
            }
        };
        match r {
            Ok(()) => {}
            Err(Error::PermissionDenied(_)) | Err(Error::Unauthenticated(_)) => {
                rec.lock().unwrap().refused += 1;
                fresh += 1;
                client = make(fresh);
            }
            Err(_) => rec.lock().unwrap().failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(5..60))).await;
    }
}

/// Writers without rights: no credentials at all, or a user with no roles.
async fn intruder(name: &'static str, client: Client, rec: Arc<Mutex<Record>>, end: Instant) {
    let mut n = 0u64;
    while Instant::now() < end {
        n += 1;
        let k = format!("app/w/{name}/{n:05}");
        rec.lock()
            .unwrap()
            .intruders
            .push((k.clone(), Instant::now()));
        let _ = client.put(k.as_bytes(), b"x").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Cuts nodes off (and, with `crashes`, crashes one now and then) until
/// `until`, moving app/'s leader off the auth records' leader in between.
async fn fault_until(
    cluster: &Cluster,
    rng: &mut ChaCha8Rng,
    crashes: bool,
    until: Instant,
    schedule: &mut Vec<String>,
    start: Instant,
) {
    let n = cluster.nodes.len() as u64;
    loop {
        let pause = Duration::from_millis(rng.gen_range(1000..3000));
        // A fault lasts at most 2.5 s: it must be over by `until`.
        if Instant::now() + pause + Duration::from_millis(2500) > until {
            break;
        }
        tokio::time::sleep(pause).await;
        if separate_leaders(cluster).await {
            schedule.push(format!("{:?} move app/'s leader", start.elapsed()));
        }
        let victim = rng.gen_range(1..=n);
        if crashes && rng.gen_bool(0.2) {
            schedule.push(format!("{:?} crash {victim}", start.elapsed()));
            cluster.kill(victim);
            tokio::time::sleep(Duration::from_millis(rng.gen_range(500..2000))).await;
            cluster.restart(victim);
        } else {
            schedule.push(format!("{:?} isolate {victim}", start.elapsed()));
            cluster.isolate(victim);
            tokio::time::sleep(Duration::from_millis(rng.gen_range(500..2500))).await;
            cluster.heal();
        }
    }
}

/// Moves `app/`'s leadership off the node leading the auth records, so
/// that checking a request and having changed the table are often
/// different nodes (what a stale table needs to show); whether it moved.
async fn separate_leaders(cluster: &Cluster) -> bool {
    let mut moved = false;
    // A transfer the leader accepted may still not happen: look again.
    for _ in 0..5 {
        let (Some((app, app_leader)), Some((_, auth_leader))) = (
            cluster.leader_of_key(b"app/w/x").await,
            cluster.leader_of_key(b"_/auth/").await,
        ) else {
            return moved;
        };
        if app_leader != auth_leader {
            return moved;
        }
        let to = auth_leader % cluster.nodes.len() as u64 + 1;
        moved |= cluster.transfer_leader(app, to).await.is_ok();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    moved
}

/// One run on a cluster started with `tls` (3 nodes). Without `crashes`,
/// the nemesis only cuts nodes off (a restarted node loads the table
/// afresh, which hides a stale one: the stale-table canary runs so).
pub async fn run(cluster: Arc<Cluster>, crashes: bool) -> AuthReport {
    let mut rng = ChaCha8Rng::seed_from_u64(madsim::rand::random());
    cluster.wait_for_leaders(Duration::from_secs(30)).await;
    let c2 = cluster.clone();
    let (token, enabled_at) = cluster
        .client_host
        .spawn(async move { set_up(&c2).await })
        .await
        .expect("set-up task");
    separate_leaders(&cluster).await;

    let rec: Arc<Mutex<Record>> = Arc::default();
    let start = Instant::now();
    let end = start + WORKLOAD;
    let mut tasks = Vec::new();
    for c in 0..3 {
        let (c2, token) = (cluster.clone(), token.clone());
        let make =
            move |first| c2.client_as_via(Duration::from_secs(8), None, Some(token.clone()), first);
        let seed = rng.gen();
        tasks.push(
            cluster
                .client_host
                .spawn(writer(c, make, rec.clone(), seed, end)),
        );
    }
    let anon = cluster.client_as(Duration::from_secs(3), None, None);
    tasks.push(
        cluster
            .client_host
            .spawn(intruder("anon", anon, rec.clone(), end)),
    );
    let bob = cluster.client_as(Duration::from_secs(3), Some("bob"), None);
    tasks.push(
        cluster
            .client_host
            .spawn(intruder("bob", bob, rec.clone(), end)),
    );

    // Faults; then, in a quiet window (stable leaders, so the node that
    // revokes is the auth records' leader and app/ is led elsewhere), the
    // revocation; then faults again.
    let mut schedule = Vec::new();
    let revoke_at = start + REVOKE_AT;
    fault_until(
        &cluster,
        &mut rng,
        crashes,
        revoke_at - Duration::from_secs(3),
        &mut schedule,
        start,
    )
    .await;
    tokio::time::sleep_until(revoke_at).await;
    let root = cluster.client_as(Duration::from_secs(10), Some("root"), None);
    let revoked_at = cluster
        .client_host
        .spawn(async move {
            retry("revoke", Duration::from_secs(60), || {
                root.user_role("alice", "app", true)
            })
            .await;
            Instant::now()
        })
        .await
        .expect("revoke task");
    // app/'s leadership goes round every node (any node may have served
    // the revocation; every other one must learn it within a refresh).
    let quiet_end = Instant::now() + QUIET;
    while Instant::now() + Duration::from_secs(2) < quiet_end {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if let Some((app, leader)) = cluster.leader_of_key(b"app/w/x").await {
            let to = leader % cluster.nodes.len() as u64 + 1;
            if cluster.transfer_leader(app, to).await.is_ok() {
                schedule.push(format!("{:?} app/ to {to}", start.elapsed()));
            }
        }
    }
    tokio::time::sleep_until(quiet_end).await;
    fault_until(
        &cluster,
        &mut rng,
        crashes,
        end - Duration::from_secs(4),
        &mut schedule,
        start,
    )
    .await;
    for t in tasks {
        let _ = t.await;
    }
    cluster.heal();

    // Everything, as root, once the cluster settled.
    let root = cluster.client_as(Duration::from_secs(20), Some("root"), None);
    let pairs = cluster
        .client_host
        .spawn(async move {
            let start = Instant::now();
            loop {
                match root.scan(b"", b"", 100_000, false).await {
                    Ok(p) => return p,
                    Err(e) if start.elapsed() > Duration::from_secs(60) => {
                        panic!("final scan: {e}")
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        })
        .await
        .expect("scan task");
    let data: BTreeMap<String, String> = pairs
        .into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(&k).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect();

    let rec = rec.lock().unwrap();
    let mut violations = Vec::new();
    for k in &rec.forbidden {
        if data.contains_key(k) {
            violations.push(format!("{k} was written, but its writer may not write it"));
        }
    }
    for (k, sent) in &rec.intruders {
        if *sent > enabled_at + REVOKE_BOUND && data.contains_key(k) {
            violations.push(format!(
                "{k} was written {:?} after authentication was turned on, by a caller without rights",
                *sent - enabled_at
            ));
        }
    }
    for (k, (v, at)) in &rec.acked {
        if data.get(k) != Some(v) {
            violations.push(format!("{k}: acknowledged {v}, read {:?}", data.get(k)));
        }
        if *at > revoked_at + REVOKE_BOUND {
            violations.push(format!(
                "{k} acknowledged {:?} after alice's role was revoked (bound {REVOKE_BOUND:?})",
                *at - revoked_at
            ));
        }
    }
    violations.truncate(10);
    let after = rec
        .acked
        .values()
        .filter(|(_, at)| *at > revoked_at)
        .count();
    let last = rec
        .acked
        .values()
        .map(|(_, at)| at.saturating_duration_since(revoked_at))
        .max()
        .unwrap_or_default();
    AuthReport {
        violations,
        summary: format!(
            "acked {} ({} after the revocation at {:?}, the last {:?} after), refused {}, failed {}, forbidden tried {}; faults: {}",
            rec.acked.len(),
            after,
            revoked_at - start,
            last,
            rec.refused,
            rec.failed,
            rec.forbidden.len() + rec.intruders.len(),
            schedule.join(", ")
        ),
    }
}
