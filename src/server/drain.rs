//! Draining a node before it stops (SIGTERM, `rangedb admin node drain`):
//! it turns not ready (`/readyz`, grpc.health.v1: "draining"), hands the
//! leadership of every range it leads to the most caught-up other voter,
//! and stops once it leads nothing or `limit` passed. Clients and load
//! balancers move away before the node goes; ranges keep their leaders
//! instead of waiting out an election timeout.
//!
//! CAVEATS: the placement driver may still hand a leadership back while
//! the node drains (the loop moves it away again); a range whose only voter
//! is this node keeps it (a single-node cluster just stops).

use std::time::Duration;

use tokio::time::Instant;

use super::tso::TsoService;
use crate::api::ReplicaChange;
use crate::error::Result;
use crate::node::StoreHandle;
use crate::range::{ReplicaStatus, SYSTEM_RANGE_ID};

/// Simulation only: the chance a system-range transfer skips the handoff.
const SIM_NO_HANDOFF: f64 = 0.5;

/// How often the drain looks again at what this node still leads.
const POLL: Duration = Duration::from_millis(100);

/// Drains the node behind `store`; returns how many leaderships it still
/// held at the end (0 when the drain completed).
pub async fn drain(store: &StoreHandle, tso: &TsoService, limit: Duration) -> usize {
    store.set_draining();
    let deadline = Instant::now() + limit;
    tracing::info!(?limit, "draining: not ready; moving leaderships away");
    loop {
        let Ok(status) = store.status().await else {
            return 0;
        };
        let led: Vec<&ReplicaStatus> = status.ranges.iter().filter(|r| r.is_leader).collect();
        let movable: Vec<(&ReplicaStatus, u64)> = led
            .iter()
            .filter_map(|r| successor(r, status.node_id).map(|to| (*r, to)))
            .collect();
        if movable.is_empty() {
            tracing::info!(still_leading = led.len(), "drained");
            return led.len();
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                still_leading = led.len(),
                "drain timed out; stopping anyway"
            );
            return led.len();
        }
        for (r, to) in movable {
            if let Err(e) = transfer_leader(store, tso, r.range_id, to, r.descriptor.conf_ver).await
            {
                tracing::debug!(range_id = r.range_id, %e, "leadership transfer failed; retrying");
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Hands range `range_id`'s leadership to voter `to`. For the system range
/// the timestamp oracle releases its lease first, so the next leader serves
/// timestamps at once (no takeover wait); a refused transfer takes it back.
pub async fn transfer_leader(
    store: &StoreHandle,
    tso: &TsoService,
    range_id: u64,
    to: u64,
    conf_ver: u64,
) -> Result<()> {
    // In simulation, half the transfers skip the handoff (always safe: the
    // next leader then waits the lease out), so leader moves exercise both
    // the handoff and the takeover wait.
    let system = range_id == SYSTEM_RANGE_ID && !crate::chaos::sometimes(SIM_NO_HANDOFF);
    let released = system && tso.release().await.is_ok();
    let r = store
        .change_replicas(range_id, ReplicaChange::TransferLeader(to), conf_ver)
        .await;
    if r.is_err() && released {
        let _ = tso.resume().await;
    }
    r
}

/// The voter (not `me`) most caught up with the leader's log.
fn successor(r: &ReplicaStatus, me: u64) -> Option<u64> {
    r.voters
        .iter()
        .filter(|&&v| v != me)
        .max_by_key(|&&v| {
            r.progress
                .iter()
                .find(|(p, _)| *p == v)
                .map_or(0, |(_, matched)| *matched)
        })
        .copied()
}
