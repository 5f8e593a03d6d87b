//! The timestamp oracle's server side: the allocation rule is pure
//! (`placement::tso::Oracle`); this runs it on the leader of the system
//! range and persists its high-water mark (`_/cluster/tso`) through Raft.
//!
//! Requests arriving while a round runs are served together by the next
//! round (`TsoBatcher`). Per round, under one lock:
//! 1. unless the oracle's lease serves (`placement::tso::Lease`), a
//!    confirmation: a linearizable read of the term this node leads the
//!    system range in — it fails unless this node leads it. In a term it
//!    had not confirmed before, it reads the mark again (another oracle may
//!    have run) and waits out any predecessor's lease before serving;
//! 2. allocate; when the batch would reach the persisted mark, first write
//!    a new mark (`HIGH_WATER_WINDOW_MS` ahead) through Raft.
//!
//! A node giving the system range's leadership away on purpose first
//! releases the lease (`release`: stop serving, record the handoff) so the
//! next leader serves at once instead of waiting `TAKEOVER_WAIT`; requests
//! reaching it meanwhile are held until the leadership has moved and then
//! sent to the new leader (`NotLeader` with its address).
//!
//! Invariant: every timestamp handed out is below a mark that was durable
//! (committed by a quorum) before it was handed out, and a new oracle
//! starts strictly above the mark it read — so timestamps increase across
//! failover whatever the clocks say.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::api::{meta, Timestamp};
use crate::chaos::{self, Canary};
use crate::client::{TimestampSource, TsoBatcher};
use crate::clock::NodeClock;
use crate::error::{Error, Result};
use crate::keys;
use crate::node::{Consistency, StoreHandle};
use crate::placement::tso::{
    handoff_applies, Allocation, Confirmed, Lease, Oracle, LEASE, MAX_BATCH, TAKEOVER_WAIT,
};
use crate::range::{Op, ReadOp, ReadResult};

/// The oracle service: requests that arrive while a round is under way are
/// served together by the next round (one confirmation for all of them,
/// taken after each arrived), through the same batcher nodes use.
pub struct TsoService {
    batcher: TsoBatcher,
    round: Arc<OracleRound>,
}

/// One round of the oracle (the rule above), for the batcher.
struct OracleRound {
    store: StoreHandle,
    clock: NodeClock,
    /// The oracle, once this node has served as it, and its lease.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    oracle: Option<Oracle>,
    lease: Lease,
    /// Released for a handoff (at this instant): serves nothing until the
    /// record is cleared, after `HANDOFF_HOLD` if this node still leads.
    released: Option<Instant>,
}

/// How long a released oracle waits for its leadership to move before it
/// takes its lease back (clears the record, confirms again).
const HANDOFF_HOLD: std::time::Duration = std::time::Duration::from_secs(2);

/// How often a released oracle holding a request checks whether its
/// leadership has moved.
const RELEASED_POLL: std::time::Duration = std::time::Duration::from_millis(10);

impl TsoService {
    pub fn new(store: StoreHandle, clock: NodeClock) -> TsoService {
        let round = OracleRound {
            store,
            clock,
            state: Mutex::default(),
        };
        let round = Arc::new(round);
        TsoService {
            batcher: TsoBatcher::new(round.clone()),
            round,
        }
    }

    /// Before this node gives the system range's leadership away: stop
    /// serving and record the handoff (see `placement::tso`), so the next
    /// leader need not wait the lease out. Fails (and nothing is recorded)
    /// unless this node holds the oracle's lease.
    pub async fn release(&self) -> Result<()> {
        self.round.release().await
    }

    /// Takes a released lease back at once (the transfer was refused).
    pub async fn resume(&self) -> Result<()> {
        let mut st = self.round.state.lock().await;
        if st.released.is_some() {
            self.round.write_handoff(0).await?;
            st.released = None;
        }
        Ok(())
    }

    /// `count` (1..=MAX_BATCH) consecutive timestamps: the first one.
    pub async fn allocate(&self, count: u64) -> Result<Timestamp> {
        if count == 0 || count > MAX_BATCH {
            return Err(Error::InvalidArgument(format!(
                "asked for {count} timestamps; one request takes 1 to {MAX_BATCH}"
            )));
        }
        self.batcher.timestamps(count).await
    }
}

impl TimestampSource for OracleRound {
    fn fetch(&self, count: u64) -> BoxFuture<'_, Result<Timestamp>> {
        Box::pin(self.allocate(count))
    }
}

impl OracleRound {
    async fn allocate(&self, count: u64) -> Result<Timestamp> {
        let mut guard = self.state.lock().await;
        let st = &mut *guard;
        if let Some(at) = st.released {
            // Hold the request until the leadership has moved — then the
            // term read fails with `NotLeader` naming the new leader, and
            // the caller goes there at once (an "oracle moving, retry"
            // answer cost callers their retry backoff: ~0.8 s of no
            // writes in a rolling restart).
            while at.elapsed() < HANDOFF_HOLD {
                self.leader_term().await?;
                tokio::time::sleep(RELEASED_POLL).await;
            }
            // The leadership did not move: clear the record before serving
            // again in this term (a next-term leader that read it first
            // makes this node's confirmation fail).
            self.write_handoff(0).await?;
            st.released = None;
        }
        // Usually two rounds: the second one fits under the new mark. A
        // mark write slower than the extension (a partition, a busy disk)
        // leaves the clock past the new mark: one more round, then the
        // caller retries (found by the watch simulation, seed 10).
        for _ in 0..3 {
            let now = Instant::now();
            if st.oracle.is_none() || !st.lease.serves(now) || st.lease.renewal_due(now) {
                self.confirm(st).await?;
            }
            // No await from the confirmation (or the check) to the answer:
            // the lease serves when the timestamps are handed out.
            let Some(oracle) = st.oracle.as_mut() else {
                return Err(Error::Internal("the oracle was not set up".into()));
            };
            let now = Timestamp::new(self.clock.now_ms(), 0);
            match oracle.allocate(now, count) {
                Allocation::Ready { first, .. } => return Ok(first),
                Allocation::Extend { limit } => {
                    if !chaos::canary(Canary::OracleMarkNotPersisted) {
                        let op = Op::put(keys::system(meta::TSO), limit.0.to_be_bytes().to_vec());
                        if let Err(e) = self.store.write(vec![op]).await {
                            // The mark may or may not have landed: a later
                            // oracle starts above whichever is persisted.
                            st.oracle = None;
                            return Err(e);
                        }
                    }
                    oracle.extended(limit);
                }
            }
        }
        Err(Error::Unavailable(
            "the oracle's clock outran its new mark while it was persisted; retry".into(),
        ))
    }

    /// Confirms this node leads the system range, renewing the lease; in a
    /// new term (or with no oracle yet) reads the mark and waits out any
    /// predecessor's lease. Ends with the lease serving, or fails.
    async fn confirm(&self, st: &mut State) -> Result<()> {
        for _ in 0..3 {
            let asked = Instant::now();
            let term = self.leader_term().await?;
            let answered = Instant::now();
            let lease = self.clock.to_true(LEASE);
            let wait = self.clock.to_true(TAKEOVER_WAIT);
            let confirmed = st.lease.confirmed(term, asked, answered, lease, wait);
            if confirmed == Confirmed::NewTerm || st.oracle.is_none() {
                // One read for both: they sit next to each other.
                let (persisted, handoff) = match self.read_mark_and_handoff().await {
                    Ok(read) => read,
                    Err(e) => {
                        // The lease already names this term, so the next
                        // confirmation is a renewal that would not read
                        // the mark again: forget the oracle so it does. A
                        // state kept from an earlier term may sit below
                        // what another leader handed out since (seed 1955:
                        // a disk failing reads, timestamps 3 s back).
                        st.oracle = None;
                        return Err(e);
                    }
                };
                match st.oracle.as_mut() {
                    Some(o) => o.observe(persisted),
                    None => st.oracle = Some(Oracle::starting_above(persisted)),
                }
                if confirmed == Confirmed::NewTerm && handoff_applies(handoff, term) {
                    st.lease.handed_over();
                }
            }
            let now = Instant::now();
            if st.lease.serves(now) {
                return Ok(());
            }
            if let Some(ready) = st.lease.ready_at(now) {
                tokio::time::sleep_until(ready).await;
            }
        }
        Err(Error::Unavailable(
            "the timestamp oracle could not confirm its lease".into(),
        ))
    }

    /// Stops serving, then records the handoff in the term it held the
    /// lease in (after waiting out its own predecessor's, so the record
    /// never vouches for a lease it did not outlast).
    async fn release(&self) -> Result<()> {
        let mut guard = self.state.lock().await;
        let st = &mut *guard;
        if st.released.is_some() {
            return Ok(());
        }
        self.confirm(st).await?;
        let Some(term) = st.lease.term() else {
            return Err(Error::Internal("a confirmed lease without a term".into()));
        };
        if !chaos::canary(Canary::OracleHandoffKeepsServing) {
            st.released = Some(Instant::now());
        }
        self.write_handoff(term).await
    }

    async fn write_handoff(&self, term: u64) -> Result<()> {
        let op = Op::put(keys::system(meta::TSO_HANDOFF), term.to_be_bytes().to_vec());
        self.store.write(vec![op]).await
    }

    /// The term this node leads the system range in, confirmed by a quorum.
    async fn leader_term(&self) -> Result<u64> {
        let op = ReadOp::LeaderTerm(keys::system(meta::TSO));
        match self.store.read(op, Consistency::Linearizable).await? {
            ReadResult::Term(t) => Ok(t),
            _ => Err(Error::Internal(
                "a term read answered something else".into(),
            )),
        }
    }

    /// The persisted mark and the last handoff's term (0: none), in one
    /// linearizable read (`_/cluster/tso` and `_/cluster/tso-handoff` are
    /// adjacent keys).
    async fn read_mark_and_handoff(&self) -> Result<(Timestamp, u64)> {
        let (mark_key, handoff_key) = (keys::system(meta::TSO), keys::system(meta::TSO_HANDOFF));
        let mut end = handoff_key.clone();
        end.push(0);
        let op = ReadOp::Scan {
            start: mark_key.clone(),
            end,
            limit: 2,
            reverse: false,
        };
        let ReadResult::Pairs(pairs, _) = self.store.read(op, Consistency::Linearizable).await?
        else {
            return Err(Error::Internal("a scan answered something else".into()));
        };
        let (mut mark, mut handoff) = (Timestamp::ZERO, 0);
        for (k, v) in pairs {
            let Ok(b) = <[u8; 8]>::try_from(v.as_slice()) else {
                return Err(Error::Corruption(format!(
                    "{} holds {} bytes, not 8",
                    keys::display(&k),
                    v.len()
                )));
            };
            if k == mark_key {
                mark = Timestamp(u64::from_be_bytes(b));
            } else if k == handoff_key {
                handoff = u64::from_be_bytes(b);
            }
        }
        Ok((mark, handoff))
    }
}

#[cfg(test)]
mod tests {
    use crate::placement::tso::{LEASE, TAKEOVER_WAIT};

    /// The wait a new term takes, on a clock running fast by the most the
    /// simulator drifts one, outlasts a predecessor's lease on a clock
    /// running slow by as much.
    #[test]
    fn the_wait_outlasts_any_lease_under_the_worst_drift() {
        let d = crate::clock::MAX_DRIFT_PPM as f64 / 1e6;
        let longest_lease = LEASE.as_secs_f64() / (1.0 - d);
        let shortest_wait = TAKEOVER_WAIT.as_secs_f64() / (1.0 + d);
        assert!(
            shortest_wait > longest_lease,
            "{shortest_wait} <= {longest_lease}"
        );
    }
}
