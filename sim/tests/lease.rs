//! Leases under placement-driver failovers, partitions, crashes and clock
//! drift within the bound (`rangedb_sim::lease_workload`): no key is
//! deleted while its lease is kept alive, and every ended lease's key goes.
#![cfg(madsim)]

use std::sync::Arc;

use rangedb_sim::{lease_workload, replay_hint, Cluster};

#[madsim::test]
async fn leases_end_on_time_across_failovers() {
    let cluster = Arc::new(Cluster::start(3));
    let seed = cluster.seed();
    let report = lease_workload::run(cluster).await;
    assert!(
        report.violations.is_empty(),
        "seed {seed}: {:#?}\n{}\nreplay: {}",
        report.violations,
        report.summary,
        replay_hint(seed)
    );
    eprintln!("seed {seed}: {}", report.summary);
}
