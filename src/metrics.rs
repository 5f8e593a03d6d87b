//! The node's metrics: one `NodeMetrics` (a prometheus-client `Registry`
//! and the handles to its metrics) per node, shared as an `Arc` by the
//! Store, its replicas, the gRPC edge, the placement loop and the HTTP
//! listener that renders it at `/metrics`.
//!
//! Invariants:
//! - No global registry: the simulator runs several nodes in one process,
//!   and each must count only its own work.
//! - Names follow Prometheus' conventions: the `rangedb_` prefix, base
//!   units in the name (`_seconds`, `_bytes`), `_total` on counters (the
//!   encoder appends it), and no per-range or per-key labels — per-range
//!   detail belongs to the admin API and the console.
//! - Durations are measured with `tokio::time::Instant`, the simulator's
//!   virtual clock under madsim, so a seed's metrics are deterministic.
//! - Range gauges count what THIS node holds; the cluster-wide ones
//!   (`ranges_underreplicated`, `ranges_unavailable`, liveness) are set by
//!   the placement driver only and are zero elsewhere, so `sum()` over the
//!   nodes is the cluster's figure.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

/// Labels of a gRPC request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `Service/Method`, e.g. `Kv/Put`.
    pub method: String,
    /// The gRPC status code name, e.g. `OK`, `UNAVAILABLE`.
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: String,
}

/// A label whose values are a small fixed set (lowercase words).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: &'static str,
}

/// `direction` values.
pub const SENT: &str = "sent";
pub const RECEIVED: &str = "received";

/// Placement job kinds: a replica added (as a learner), promoted, removed
/// or replaced; a leadership moved; two ranges merged.
pub const JOB_REPLICA: &str = "replica";
pub const JOB_LEADER: &str = "leader";
pub const JOB_MERGE: &str = "merge";

/// Commit kinds: all keys in one range, one Raft command (plain writes
/// included); across ranges, the primary's commit (the commit point).
pub const ONE_PHASE: &str = "one_phase";
pub const TWO_PHASE: &str = "two_phase";

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latencies from 100 µs to ~6.5 s (doubling).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// Every metric of one node. Handles are cheap atomics; `render` encodes
/// the registry.
pub struct NodeMetrics {
    registry: Registry,
    // The gRPC edge.
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: HistogramFamily<MethodLabels>,
    // Raft.
    pub proposals: Counter,
    pub proposals_failed: Counter,
    pub proposal_duration: Histogram,
    pub entries_applied: Counter,
    pub ready_duration: Histogram,
    pub leader_changes: Counter,
    /// Linearizable reads served under the leader's lease, and those that
    /// asked a quorum (ReadIndex).
    pub reads_lease: Counter,
    pub reads_read_index: Counter,
    pub messages_sent: Counter,
    pub messages_dropped: Counter,
    pub snapshot_bytes: Family<DirectionLabels, Counter>,
    // Storage.
    pub write_duration: HistogramFamily<KindLabels>,
    pub write_bytes: Counter,
    // What this node holds (set when rendered).
    pub replicas: Gauge,
    pub replicas_leaders: Gauge,
    pub replicas_sleeping: Gauge,
    pub replicas_leaderless: Gauge,
    pub replicas_bytes: Gauge,
    // The placement driver's view (zero on other nodes).
    pub placement_driver: Gauge,
    pub ranges: Gauge,
    pub ranges_underreplicated: Gauge,
    pub ranges_unavailable: Gauge,
    pub live_nodes: Gauge,
    pub dead_nodes: Gauge,
    pub placement_jobs: Family<KindLabels, Counter>,
    // Transactions.
    pub txn_commits: Family<KindLabels, Counter>,
    pub txn_conflicts: Counter,
    pub txn_aborts: Counter,
    // The node.
    pub start_time: Gauge<f64, AtomicU64>,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        NodeMetrics::new()
    }
}

impl std::fmt::Debug for NodeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeMetrics")
    }
}

impl NodeMetrics {
    pub fn new() -> NodeMetrics {
        let mut r = Registry::with_prefix("rangedb");
        let m = NodeMetrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            proposals: Counter::default(),
            proposals_failed: Counter::default(),
            proposal_duration: latency_histogram(),
            entries_applied: Counter::default(),
            ready_duration: latency_histogram(),
            leader_changes: Counter::default(),
            reads_lease: Counter::default(),
            reads_read_index: Counter::default(),
            messages_sent: Counter::default(),
            messages_dropped: Counter::default(),
            snapshot_bytes: Family::default(),
            write_duration: Family::new_with_constructor(latency_histogram),
            write_bytes: Counter::default(),
            replicas: Gauge::default(),
            replicas_leaders: Gauge::default(),
            replicas_sleeping: Gauge::default(),
            replicas_leaderless: Gauge::default(),
            replicas_bytes: Gauge::default(),
            placement_driver: Gauge::default(),
            ranges: Gauge::default(),
            ranges_underreplicated: Gauge::default(),
            ranges_unavailable: Gauge::default(),
            live_nodes: Gauge::default(),
            dead_nodes: Gauge::default(),
            placement_jobs: Family::default(),
            txn_commits: Family::default(),
            txn_conflicts: Counter::default(),
            txn_aborts: Counter::default(),
            start_time: Gauge::default(),
            registry: Registry::default(), // replaced below
        };
        r.register(
            "build",
            "RangeDB's version (value 1)",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        r.register_with_unit(
            "node_start_time",
            "When this node's process started, seconds since the Unix epoch",
            Unit::Seconds,
            m.start_time.clone(),
        );
        r.register(
            "grpc_requests",
            "gRPC requests served, by method and status code",
            m.requests.clone(),
        );
        r.register_with_unit(
            "grpc_request_duration",
            "gRPC request latency until the response (or its headers) is sent, by method",
            Unit::Seconds,
            m.request_duration.clone(),
        );
        r.register(
            "raft_proposals",
            "Commands this node proposed as a range leader",
            m.proposals.clone(),
        );
        r.register(
            "raft_proposals_failed",
            "Proposals that failed: dropped, replaced by another leader's entry, or lost with leadership",
            m.proposals_failed.clone(),
        );
        r.register_with_unit(
            "raft_proposal_duration",
            "From proposing a command to having applied it (commit and apply)",
            Unit::Seconds,
            m.proposal_duration.clone(),
        );
        r.register(
            "raft_entries_applied",
            "Raft log entries applied by this node's replicas",
            m.entries_applied.clone(),
        );
        r.register_with_unit(
            "raft_ready_duration",
            "CPU time of one Ready round's staging and apply, before its engine write",
            Unit::Seconds,
            m.ready_duration.clone(),
        );
        r.register(
            "raft_leader_changes",
            "Times a replica on this node became its range's leader",
            m.leader_changes.clone(),
        );
        r.register(
            "raft_reads_lease",
            "Linearizable reads served under the leader's lease, with no quorum round",
            m.reads_lease.clone(),
        );
        r.register(
            "raft_reads_read_index",
            "Linearizable reads that asked a quorum (ReadIndex) before being served",
            m.reads_read_index.clone(),
        );
        r.register(
            "raft_messages_sent",
            "Raft messages handed to the peer transport",
            m.messages_sent.clone(),
        );
        r.register(
            "raft_messages_dropped",
            "Raft messages dropped: unknown address, full queue, or not encodable",
            m.messages_dropped.clone(),
        );
        r.register_with_unit(
            "raft_snapshot",
            "Raft snapshot bytes sent to and received from peers",
            Unit::Bytes,
            m.snapshot_bytes.clone(),
        );
        r.register_with_unit(
            "storage_write_duration",
            "Engine write latency, by kind (sync = with fsync)",
            Unit::Seconds,
            m.write_duration.clone(),
        );
        r.register_with_unit(
            "storage_written",
            "Bytes of engine write batches (keys and values)",
            Unit::Bytes,
            m.write_bytes.clone(),
        );
        r.register("replicas", "Replicas this node holds", m.replicas.clone());
        r.register(
            "replicas_leaders",
            "Replicas on this node that lead their range",
            m.replicas_leaders.clone(),
        );
        r.register(
            "replicas_sleeping",
            "Replicas on this node that hibernate (idle ranges, no ticks)",
            m.replicas_sleeping.clone(),
        );
        r.register(
            "replicas_leaderless",
            "Replicas on this node that know no leader",
            m.replicas_leaderless.clone(),
        );
        r.register_with_unit(
            "replicas_size",
            "Approximate data bytes of the replicas this node holds",
            Unit::Bytes,
            m.replicas_bytes.clone(),
        );
        r.register(
            "placement_driver",
            "1 on the node running the placement driver, 0 elsewhere",
            m.placement_driver.clone(),
        );
        r.register(
            "ranges",
            "Ranges in the cluster, as the placement driver sees them (0 on other nodes)",
            m.ranges.clone(),
        );
        r.register(
            "ranges_underreplicated",
            "Ranges with fewer live voters than the replication factor (placement driver only)",
            m.ranges_underreplicated.clone(),
        );
        r.register(
            "ranges_unavailable",
            "Ranges without a live quorum of voters (placement driver only)",
            m.ranges_unavailable.clone(),
        );
        r.register(
            "liveness_live_nodes",
            "Nodes the placement driver sees live (0 on other nodes)",
            m.live_nodes.clone(),
        );
        r.register(
            "liveness_dead_nodes",
            "Nodes the placement driver holds dead or decommissioning (0 on other nodes)",
            m.dead_nodes.clone(),
        );
        r.register(
            "placement_jobs",
            "Changes the placement driver started, by kind",
            m.placement_jobs.clone(),
        );
        r.register(
            "txn_commits",
            "Transactions committed through this node: one-phase commands and two-phase primaries",
            m.txn_commits.clone(),
        );
        r.register(
            "txn_conflicts",
            "Transaction steps refused for a conflict (a newer write or a foreign lock)",
            m.txn_conflicts.clone(),
        );
        r.register(
            "txn_aborts",
            "Transactions rolled back through this node",
            m.txn_aborts.clone(),
        );
        NodeMetrics { registry: r, ..m }
    }

    /// The OpenMetrics text of every metric (Prometheus reads it).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn observe_request(&self, method: &str, code: &str, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                code: code.to_string(),
            })
            .inc();
        self.request_duration
            .get_or_create(&MethodLabels {
                method: method.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn observe_write(&self, sync: bool, bytes: usize, took: Duration) {
        let kind = if sync { "sync" } else { "nosync" };
        self.write_duration
            .get_or_create(&KindLabels { kind })
            .observe(took.as_secs_f64());
        self.write_bytes.inc_by(bytes as u64);
    }

    /// `direction`: `SENT` or `RECEIVED`.
    pub fn snapshot(&self, direction: &'static str, bytes: usize) {
        self.snapshot_bytes
            .get_or_create(&DirectionLabels { direction })
            .inc_by(bytes as u64);
    }

    /// `kind`: one of the `JOB_*` names.
    pub fn job(&self, kind: &'static str) {
        self.placement_jobs
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// `kind`: `ONE_PHASE` or `TWO_PHASE`.
    pub fn txn_commit(&self, kind: &'static str) {
        self.txn_commits.get_or_create(&KindLabels { kind }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions_and_nodes_do_not_share_counts() {
        let a = NodeMetrics::new();
        let b = NodeMetrics::new();
        a.proposals.inc();
        a.observe_request("Kv/Put", "OK", Duration::from_millis(2));
        a.observe_write(true, 100, Duration::from_millis(1));
        let text = a.render();
        assert!(text.contains("rangedb_raft_proposals_total 1"), "{text}");
        assert!(
            text.contains("rangedb_grpc_requests_total{method=\"Kv/Put\",code=\"OK\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("rangedb_grpc_request_duration_seconds_count{method=\"Kv/Put\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("rangedb_storage_write_duration_seconds_count{kind=\"sync\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("rangedb_storage_written_bytes_total 100"),
            "{text}"
        );
        assert!(text.contains("rangedb_build_info{version="), "{text}");
        assert!(b.render().contains("rangedb_raft_proposals_total 0"));
        // Every metric has a HELP line and a unit-suffixed name where it has a unit.
        let families = text.lines().filter(|l| l.starts_with("# HELP")).count();
        assert!(families >= 25, "{families} metric families\n{text}");
    }
}
