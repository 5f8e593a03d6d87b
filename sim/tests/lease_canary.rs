//! The lease checker catches canary `LeaseExpiresEarlyAfterFailover` (one
//! canary per test binary: a canary is process-wide).
#![cfg(madsim)]

use std::sync::Arc;

use rangedb::chaos::{self, Canary};
use rangedb_sim::{lease_workload, Cluster};

#[madsim::test]
async fn the_lease_checker_catches_the_canary() {
    chaos::set_canary(Some(Canary::LeaseExpiresEarlyAfterFailover));
    let cluster = Arc::new(Cluster::start(3));
    let seed = cluster.seed();
    let report = lease_workload::run(cluster).await;
    chaos::set_canary(None);
    assert!(
        !report.violations.is_empty(),
        "seed {seed}: canary LeaseExpiresEarlyAfterFailover not caught: {}",
        report.summary
    );
    eprintln!("seed {seed}: caught: {}", report.violations[0]);
}
