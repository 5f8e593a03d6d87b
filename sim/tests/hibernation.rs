//! Idle ranges hibernate: after a quiet spell every replica of every user
//! range stops ticking; a request wakes a sleeping range at once; and when
//! the node leading sleeping ranges dies, their followers notice the silence,
//! wake, and elect new leaders, with no acknowledged write lost.
#![cfg(madsim)]

use std::time::Duration;

use rangedb_sim::{replay_hint, Cluster};

#[madsim::test]
async fn idle_ranges_sleep_and_wake_on_requests_and_leader_loss() {
    let cluster = Cluster::start(3);
    let seed = cluster.seed();
    cluster.wait_for_leaders(Duration::from_secs(20)).await;
    let c = cluster.client(Duration::from_secs(20));
    cluster
        .client_host
        .spawn(async move {
            for i in 1..20 {
                c.split(format!("/h/{i:02}").as_bytes(), true)
                    .await
                    .unwrap();
            }
            for i in 0..20 {
                let k = format!("/h/{i:02}/k");
                c.put(k.as_bytes(), b"v1").await.unwrap();
            }
        })
        .await
        .unwrap();

    // Quiet: the 20 user ranges go to sleep on every node.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let sleeping = |st: &[rangedb::proto::NodeStatusResponse]| -> (usize, usize) {
        let user = st
            .iter()
            .flat_map(|s| s.ranges.iter())
            .filter(|r| r.range_id != 1 && !r.end_key.is_empty());
        let (mut asleep, mut all) = (0, 0);
        for r in user {
            all += 1;
            asleep += usize::from(r.quiesced);
        }
        (asleep, all)
    };
    let (asleep, all) = sleeping(&cluster.statuses().await);
    assert!(
        all >= 60 && asleep * 10 >= all * 9,
        "only {asleep} of {all} idle user replicas sleep\n{}",
        replay_hint(seed)
    );

    // A request wakes its range and is served.
    let c = cluster.client(Duration::from_secs(20));
    let t = cluster
        .client_host
        .spawn(async move {
            let t0 = tokio::time::Instant::now();
            c.put(b"/h/05/k", b"v2").await.unwrap();
            assert_eq!(
                c.get(b"/h/05/k").await.unwrap().as_deref(),
                Some(&b"v2"[..])
            );
            t0.elapsed()
        })
        .await
        .unwrap();
    assert!(
        t < Duration::from_secs(1),
        "a sleeping range took {t:?} to serve a write"
    );

    // Kill the node leading the most sleeping ranges: they must all serve again.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let st = cluster.statuses().await;
    let victim = st
        .iter()
        .max_by_key(|s| {
            s.ranges
                .iter()
                .filter(|r| r.is_leader && r.quiesced)
                .count()
        })
        .map(|s| s.node_id)
        .unwrap();
    cluster.kill(victim);
    let c = cluster.client(Duration::from_secs(20));
    cluster
        .client_host
        .spawn(async move {
            for i in 0..20 {
                let k = format!("/h/{i:02}/k");
                let want: &[u8] = if i == 5 { b"v2" } else { b"v1" };
                assert_eq!(c.get(k.as_bytes()).await.unwrap().as_deref(), Some(want));
            }
        })
        .await
        .unwrap();
}
