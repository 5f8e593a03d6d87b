//! What a node's `/metrics` serves: its registry, with the gauges of what
//! it holds brought up to date from its Store's status first. Plain
//! functions, so simulation tests call them directly (the HTTP listener
//! itself is production only).

use std::time::Duration;

use crate::metrics::NodeMetrics;
use crate::node::{NodeStatus, StoreHandle};

/// How long a scrape waits for the Store's status.
const STATUS_DEADLINE: Duration = Duration::from_secs(2);

/// Sets the gauges of the replicas this node holds from `status`.
pub fn record_status(m: &NodeMetrics, status: &NodeStatus) {
    let r = &status.ranges;
    let count =
        |f: &dyn Fn(&crate::range::ReplicaStatus) -> bool| r.iter().filter(|s| f(s)).count() as i64;
    m.replicas.set(r.len() as i64);
    m.replicas_leaders.set(count(&|s| s.is_leader));
    m.replicas_sleeping.set(count(&|s| s.quiesced));
    m.replicas_leaderless.set(count(&|s| s.leader_id == 0));
    m.replicas_bytes
        .set(r.iter().map(|s| s.approx_bytes as i64).sum());
}

/// The metrics text of this node (OpenMetrics, which Prometheus reads).
/// A Store that does not answer leaves the replica gauges as they were.
pub async fn metrics_text(store: &StoreHandle) -> String {
    if let Ok(Ok(s)) = tokio::time::timeout(STATUS_DEADLINE, store.status()).await {
        record_status(store.metrics(), &s);
    }
    store.metrics().render()
}
