//! The auth simulation's checker catches canary `AuthBatchChecksFirstKey` (one canary
//! per test binary: a canary is process-wide).
#![cfg(madsim)]

use std::sync::Arc;

use rangedb::chaos::{self, Canary};
use rangedb_sim::{auth_workload, Cluster, ClusterOptions};

#[madsim::test]
async fn the_auth_checker_catches_the_canary() {
    chaos::set_canary(Some(Canary::AuthBatchChecksFirstKey));
    let cluster = Arc::new(Cluster::start_with(ClusterOptions {
        tls: true,
        ..Default::default()
    }));
    let seed = cluster.seed();
    let report = auth_workload::run(cluster, true).await;
    chaos::set_canary(None);
    assert!(
        !report.violations.is_empty(),
        "seed {seed}: canary AuthBatchChecksFirstKey not caught: {}",
        report.summary
    );
    eprintln!("seed {seed}: caught: {}", report.violations[0]);
}
