//! The nemesis: a seeded schedule of faults against a running cluster. One
//! fault at a time is applied, held, then reverted; every step is logged with
//! its simulated time so a failure report shows the schedule that led to it.

use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use rangedb::chaos::{self, Canary};

use crate::cluster::Cluster;
use crate::history::History;

/// Every kind of fault the nemesis can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Split the nodes into two random groups.
    PartitionHalves,
    /// Cut the leader of a range off from the other nodes.
    IsolateLeader,
    /// Each node reaches only its ring neighbours (5+ nodes; else halves).
    MajorityRing,
    /// One node's outgoing (or incoming) traffic is dropped.
    OneWay,
    /// Message delay, reordering (random latency) and loss.
    NetworkChaos,
    /// Crash one node (losing its unsynced writes), then restart it.
    CrashOne,
    /// Crash a majority at once, then restart them.
    CrashMajority,
    /// Crash and restart random nodes in quick succession.
    RestartStorm,
    /// Pause a node's tasks (a GC/VM stall), then resume.
    Pause,
    /// Skew and drift one node's clock.
    ClockSkew,
    /// Make one node's fsyncs slow.
    SlowDisk,
    /// One node's disk fails point reads of data: a node that hits one
    /// while applying an entry stops (and is restarted, as a supervisor
    /// would), never skipping the entry.
    DiskReadErrors,
    /// Hand a range's leadership (often the system range's, where the
    /// timestamp oracle runs) to another voter: the old leader steps down
    /// at once, without an election timeout in between.
    MoveLeader,
}

impl Fault {
    pub const ALL: [Fault; 13] = [
        Fault::PartitionHalves,
        Fault::IsolateLeader,
        Fault::MajorityRing,
        Fault::OneWay,
        Fault::NetworkChaos,
        Fault::CrashOne,
        Fault::CrashMajority,
        Fault::RestartStorm,
        Fault::Pause,
        Fault::ClockSkew,
        Fault::SlowDisk,
        Fault::DiskReadErrors,
        Fault::MoveLeader,
    ];
}

/// The clock drift the simulated nodes' leader leases assume
/// (`ServerConfig::max_clock_drift_ppm`): `ClockSkew` stays within it,
/// except in the `LeaseDriftBeyondBound` canary.
pub const DRIFT_BOUND_PPM: u64 = 250_000;

pub struct Nemesis {
    cluster: Arc<Cluster>,
    rng: ChaCha8Rng,
    faults: Vec<Fault>,
    history: History,
    log: Vec<String>,
}

impl Nemesis {
    pub fn new(
        cluster: Arc<Cluster>,
        rng: ChaCha8Rng,
        faults: Vec<Fault>,
        history: History,
    ) -> Nemesis {
        Nemesis {
            cluster,
            rng,
            faults,
            history,
            log: Vec::new(),
        }
    }

    fn note(&mut self, what: String) {
        let t = self.history.now_us() as f64 / 1e6;
        self.log.push(format!("t={t:.1}s {what}"));
    }

    fn ids(&self) -> Vec<u64> {
        self.cluster.nodes.iter().map(|n| n.id).collect()
    }

    fn pick(&mut self) -> u64 {
        let ids = self.ids();
        *ids.choose(&mut self.rng).unwrap_or(&1)
    }

    fn hold(&mut self) -> Duration {
        Duration::from_millis(self.rng.gen_range(500..4000))
    }

    /// Injects faults until `duration` of simulated time has passed, then
    /// heals everything. Returns the schedule.
    pub async fn run(mut self, duration: Duration) -> Vec<String> {
        let start = tokio::time::Instant::now();
        while start.elapsed() < duration && !self.faults.is_empty() {
            let quiet = Duration::from_millis(self.rng.gen_range(200..2000));
            tokio::time::sleep(quiet).await;
            let fault = *self
                .faults
                .choose(&mut self.rng)
                .unwrap_or(&Fault::CrashOne);
            self.inject(fault).await;
        }
        self.heal_all();
        self.note("heal all".into());
        self.log
    }

    async fn inject(&mut self, fault: Fault) {
        let c = self.cluster.clone();
        let hold = self.hold();
        let n = self.cluster.nodes.len();
        let fault = if fault == Fault::MajorityRing && n < 5 {
            Fault::PartitionHalves
        } else {
            fault
        };
        // The canary breaks the bound in half the faults (and in every
        // clock fault).
        if chaos::canary(Canary::LeaseDriftBeyondBound)
            && (fault == Fault::ClockSkew || self.rng.gen_bool(0.5))
        {
            return self.drift_beyond_bound(hold).await;
        }
        match fault {
            Fault::PartitionHalves => {
                let mut ids = self.ids();
                ids.shuffle(&mut self.rng);
                let cut = self.rng.gen_range(1..n);
                let (a, b) = ids.split_at(cut);
                self.note(format!("partition {a:?} | {b:?} for {hold:?}"));
                c.partition(a, b);
                tokio::time::sleep(hold).await;
                c.heal();
            }
            Fault::MajorityRing => {
                let ids = self.ids();
                let mut cut = Vec::new();
                for (i, &a) in ids.iter().enumerate() {
                    for (j, &b) in ids.iter().enumerate() {
                        let d = (i as i64 - j as i64).rem_euclid(n as i64);
                        if a < b && d != 1 && d != n as i64 - 1 {
                            cut.push((a, b));
                        }
                    }
                }
                self.note(format!("majority ring (cut {cut:?}) for {hold:?}"));
                for &(a, b) in &cut {
                    c.partition(&[a], &[b]);
                }
                tokio::time::sleep(hold).await;
                c.heal();
            }
            Fault::IsolateLeader => {
                let range = self.rng.gen_range(1..=2u64);
                match c.leader(range).await {
                    Some(l) => {
                        self.note(format!(
                            "isolate node {l} (leader of range {range}) for {hold:?}"
                        ));
                        c.isolate(l);
                        tokio::time::sleep(hold).await;
                        c.heal();
                    }
                    None => self.note(format!("isolate leader of range {range}: no leader known")),
                }
            }
            Fault::MoveLeader => {
                let range = if self.rng.gen_bool(0.7) { 1 } else { 2 };
                let to = self.pick();
                match c.transfer_leader(range, to).await {
                    Ok(from) => self.note(format!(
                        "move leadership of range {range} from node {from} to node {to}"
                    )),
                    Err(e) => self.note(format!("move leadership of range {range} to {to}: {e}")),
                }
            }
            Fault::OneWay => {
                let x = self.pick();
                let outgoing = self.rng.gen_bool(0.5);
                self.note(format!(
                    "one-way: node {x} {} for {hold:?}",
                    if outgoing {
                        "cannot send"
                    } else {
                        "cannot receive"
                    }
                ));
                for y in self.ids() {
                    if y != x {
                        if outgoing {
                            c.clog_one_way(x, y);
                        } else {
                            c.clog_one_way(y, x);
                        }
                    }
                }
                tokio::time::sleep(hold).await;
                c.heal();
            }
            Fault::NetworkChaos => {
                let max = self.rng.gen_range(20..300);
                let loss = self.rng.gen_range(0.0..0.1);
                self.note(format!(
                    "network latency 1..{max}ms, loss {loss:.2} for {hold:?}"
                ));
                c.set_network(Duration::from_millis(1)..Duration::from_millis(max), loss);
                tokio::time::sleep(hold).await;
                c.heal();
            }
            Fault::CrashOne => {
                let x = self.pick();
                self.note(format!("crash node {x} for {hold:?}"));
                c.kill(x);
                tokio::time::sleep(hold).await;
                c.restart(x);
            }
            Fault::CrashMajority => {
                let mut ids = self.ids();
                ids.shuffle(&mut self.rng);
                let victims: Vec<u64> = ids[..n / 2 + 1].to_vec();
                self.note(format!("crash nodes {victims:?} together for {hold:?}"));
                for &v in &victims {
                    c.kill(v);
                }
                tokio::time::sleep(hold).await;
                for &v in &victims {
                    c.restart(v);
                }
            }
            Fault::RestartStorm => {
                let rounds = self.rng.gen_range(3..10);
                self.note(format!("restart storm: {rounds} quick crash/restarts"));
                for _ in 0..rounds {
                    let x = self.pick();
                    c.kill(x);
                    tokio::time::sleep(Duration::from_millis(self.rng.gen_range(10..400))).await;
                    c.restart(x);
                    tokio::time::sleep(Duration::from_millis(self.rng.gen_range(100..1500))).await;
                }
            }
            Fault::Pause => {
                let x = self.pick();
                self.note(format!("pause node {x} for {hold:?}"));
                c.pause(x);
                tokio::time::sleep(hold).await;
                c.resume(x);
            }
            Fault::ClockSkew => {
                let x = self.pick();
                let bound = DRIFT_BOUND_PPM as i64;
                let drift = self.rng.gen_range(-bound..=bound);
                let offset = self.rng.gen_range(-5_000..5_000);
                self.note(format!(
                    "clock of node {x}: drift {drift} ppm, offset {offset} ms for {hold:?}"
                ));
                c.node(x).clock.set_drift_ppm(drift);
                c.node(x).clock.set_offset_ms(offset);
                tokio::time::sleep(hold).await;
                c.node(x).clock.reset();
            }
            Fault::DiskReadErrors => {
                let x = self.pick();
                self.note(format!("disk of node {x} fails data reads for {hold:?}"));
                c.node(x).engine.fail_reads(Some(data_reads()));
                tokio::time::sleep(hold).await;
                c.node(x).engine.fail_reads(None);
                if c.restart_if_stopped(x) {
                    self.note(format!("node {x} had stopped on a read error: restarted"));
                }
            }
            Fault::SlowDisk => {
                let x = self.pick();
                let ms = self.rng.gen_range(5..150);
                self.note(format!(
                    "slow disk on node {x}: +{ms}ms per fsync for {hold:?}"
                ));
                c.node(x).engine.set_sync_latency(Duration::from_millis(ms));
                tokio::time::sleep(hold).await;
                c.node(x).engine.set_sync_latency(Duration::ZERO);
            }
        }
    }

    /// The `LeaseDriftBeyondBound` canary's fault: the leader of a
    /// register's range runs 90% slow (far beyond the bound), the other nodes 50%
    /// fast; then it is cut off from them (clients still reach it) for
    /// longer than its stretched lease. The system range's leadership
    /// moves off that node first: the oracle's own lease assumes at most
    /// 50% drift, and this canary is about read leases.
    async fn drift_beyond_bound(&mut self, hold: Duration) {
        let c = self.cluster.clone();
        // A register whose range the system range's leader does not lead,
        // if there is one; else move the system range's leadership away.
        let system = rangedb::range::SYSTEM_RANGE_ID;
        let oracle = c.leader(system).await;
        let mut pick = None;
        for i in 0..4 {
            let key = format!("{}{i}", crate::workload::REGISTER_PREFIX);
            if let Some((range, l)) = c.leader_of_key(key.as_bytes()).await {
                if pick.is_none() || Some(l) != oracle {
                    pick = Some((range, l));
                }
            }
        }
        let Some((range, l)) = pick else {
            self.note("drift beyond bound: no register's leader known".into());
            return;
        };
        if oracle == Some(l) {
            let to = self.ids().into_iter().find(|&n| n != l).unwrap_or(l);
            let moved = c.transfer_leader(system, to).await;
            self.note(format!(
                "drift beyond bound: system range leadership to node {to}: {moved:?}"
            ));
        }
        let hold = hold.max(Duration::from_millis(5000));
        self.note(format!(
            "drift beyond bound: node {l} (leader of range {range}) 90% slow, others 50% fast; \
             node {l} isolated for {hold:?}"
        ));
        for n in &c.nodes {
            if n.id == l {
                n.clock.set_drift_ppm_beyond_bound(-900_000);
            } else {
                n.clock.set_drift_ppm(500_000);
            }
        }
        c.isolate(l);
        tokio::time::sleep(hold).await;
        c.heal();
        for n in &c.nodes {
            n.clock.reset();
        }
    }

    /// Undoes every fault: links, network, clocks, disks. Crashed nodes were
    /// restarted and paused nodes resumed by the step that stopped them.
    fn heal_all(&mut self) {
        self.cluster.heal();
        for n in &self.cluster.nodes {
            n.clock.reset();
            n.engine.set_sync_latency(Duration::ZERO);
            n.engine.fail_reads(None);
        }
        for id in self.ids() {
            self.cluster.restart_if_stopped(id);
        }
    }
}

/// Point reads of system and user data (not Raft state) fail.
fn data_reads() -> rangedb::storage::memory::ReadFault {
    Arc::new(|k: &[u8]| k.first().is_some_and(|b| *b >= rangedb::keys::SYSTEM_DATA))
}
