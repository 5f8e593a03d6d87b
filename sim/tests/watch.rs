//! Watches under splits, merges, leader moves, partitions and crashes
//! (`rangedb_sim::watch_workload`): every watcher sees exactly the
//! committed history of its span, in commit order, once.
#![cfg(madsim)]

use std::sync::Arc;

use rangedb_sim::{replay_hint, watch_workload, Cluster};

#[madsim::test]
async fn watchers_see_every_change_once_in_order() {
    let cluster = Arc::new(Cluster::start(3));
    let seed = cluster.seed();
    let report = watch_workload::run(cluster).await;
    assert!(
        report.violations.is_empty(),
        "seed {seed}: {:#?}\n{}\nreplay: {}",
        report.violations,
        report.summary,
        replay_hint(seed)
    );
    eprintln!("seed {seed}: {}", report.summary);
}
