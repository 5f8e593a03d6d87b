//! Users, roles and a revocation under partitions and a crash
//! (`rangedb_sim::auth_workload`): nothing forbidden is ever written, no
//! acknowledged write is lost, and a revoked role stops working within
//! its bound.
#![cfg(madsim)]

use std::sync::Arc;

use rangedb_sim::{auth_workload, replay_hint, Cluster, ClusterOptions};

#[madsim::test]
async fn authorization_holds_under_faults() {
    let cluster = Arc::new(Cluster::start_with(ClusterOptions {
        tls: true,
        ..Default::default()
    }));
    let seed = cluster.seed();
    let report = auth_workload::run(cluster, true).await;
    assert!(
        report.violations.is_empty(),
        "seed {seed}: {:#?}\n{}\nreplay: {}",
        report.violations,
        report.summary,
        replay_hint(seed)
    );
    eprintln!("seed {seed}: {}", report.summary);
}
