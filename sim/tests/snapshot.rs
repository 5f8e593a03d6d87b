//! A replica that was down while the others compacted their logs past its
//! last entry must catch up through a snapshot, then hold the same data.
#![cfg(madsim)]

use std::time::Duration;

use rangedb_sim::{replay_hint, Cluster, ClusterOptions};

#[madsim::test]
async fn lagging_replica_catches_up_by_snapshot() {
    let cluster = Cluster::start_with(ClusterOptions {
        nodes: 3,
        log_compact_entries: 20,
        ..Default::default()
    });
    let seed = cluster.seed();
    cluster.wait_for_leaders(Duration::from_secs(20)).await;

    let before = cluster.status(3).await.expect("node 3 is up");
    let applied_before = before
        .ranges
        .iter()
        .find(|r| r.range_id == 2)
        .map(|r| r.applied)
        .unwrap_or(0);
    cluster.kill(3);

    let client = cluster.client(Duration::from_secs(20));
    let acked = cluster
        .client_host
        .spawn(async move {
            let mut acked = Vec::new();
            for i in 0..200 {
                let k = format!("/snap/{i:04}");
                if client.put(k.as_bytes(), b"x").await.is_ok() {
                    acked.push(k);
                }
            }
            acked
        })
        .await
        .expect("client task");
    assert!(
        acked.len() > 150,
        "writes stalled with one node down\n{}",
        replay_hint(seed)
    );

    let truncated = cluster
        .statuses()
        .await
        .iter()
        .filter_map(|s| {
            s.ranges
                .iter()
                .find(|r| r.range_id == 2 && r.is_leader)
                .map(|r| r.truncated_index)
        })
        .next()
        .expect("a leader for the user range");
    assert!(
        truncated > applied_before,
        "the leader's log was not compacted past node 3's last entry ({truncated} <= {applied_before}); \
         this test would not exercise snapshots\n{}",
        replay_hint(seed)
    );

    cluster.restart(3);
    let dumps = cluster.wait_converged(Duration::from_secs(30)).await;
    assert!(
        dumps.iter().all(|d| d == &dumps[0]),
        "replicas differ after snapshot catch-up\n{}",
        replay_hint(seed)
    );
    let on_node3 = dumps[2]
        .iter()
        .filter(|(k, _)| k.starts_with(b"\x11/snap/"))
        .count();
    assert!(
        on_node3 >= acked.len(),
        "node 3 lacks acknowledged writes\n{}",
        replay_hint(seed)
    );
}
