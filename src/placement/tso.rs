//! The timestamp oracle's allocation rule (pure; the server runs it on the
//! leader of the system range, `server::tso`).
//!
//! Timestamps are physical milliseconds from the node clock plus a logical
//! counter (`mvcc::Timestamp`), handed out strictly increasing:
//! - the oracle never hands out a timestamp at or above its persisted
//!   high-water mark (`limit`); to go further it first persists a new mark
//!   `HIGH_WATER_WINDOW` ahead, through Raft;
//! - a new oracle (after a leader change, or after this node saw the mark
//!   move) starts strictly above the persisted mark, so it is above every
//!   timestamp any earlier oracle handed out, whatever its clock says;
//! - it follows the clock when the clock is ahead, and the counter when
//!   the clock stands still or goes back.
//!
//! **The lease** (`Lease`): a deposed leader must not hand out a timestamp
//! below one the new leader already gave. A confirmation — a linearizable
//! read that a quorum answered in this node's current term, asked at
//! `started` — lets the oracle serve until `started + LEASE` on its clock
//! without asking the quorum again. A node that starts leading in a new
//! term first waits `TAKEOVER_WAIT` from its first confirmation, longer
//! than any predecessor's lease can still run: the predecessor's last
//! confirmation was asked before the quorum that elected this term moved
//! on, so before this one finished, and the wait covers both clocks
//! drifting apart by the most the simulator drifts them
//! (`clock::MAX_DRIFT_PPM`). **Handoff**: a holder that gives the
//! leadership away on purpose (a transfer: draining, balancing) first
//! stops serving, then records its term in `_/cluster/tso-handoff`
//! through Raft; a leader of the very next term that reads it serves at
//! once (`handoff_applies`). The holder serves again in its term only
//! after clearing the record (a transfer that did not happen). Within one term nobody else leads, so a
//! confirmation in the same term renews the lease at once. (Placement's
//! PD and etcd lease their oracle the same way; a ReadIndex per batch cost
//! every write a quorum round on the oracle's node.)

use std::time::Duration;

use tokio::time::Instant;

use crate::api::Timestamp;

/// How far ahead of the timestamps it hands out the oracle persists its
/// high-water mark, in milliseconds of physical time (one Raft write per
/// window, not per batch).
pub const HIGH_WATER_WINDOW_MS: u64 = 3_000;

/// Simulation only: the longest buggified high-water window.
const BUGGIFY_WINDOW: std::time::Duration = std::time::Duration::from_millis(50);

/// Most timestamps one request may take.
pub const MAX_BATCH: u64 = 100_000;

/// The oracle's state on the system range's leader.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Oracle {
    /// The last timestamp handed out.
    last: Timestamp,
    /// The persisted high-water mark: nothing at or above it is handed out.
    limit: Timestamp,
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// `count` timestamps from `first` (inclusive), handed out.
    Ready { first: Timestamp, count: u64 },
    /// Persist this high-water mark first, then call `extended` and ask again.
    Extend { limit: Timestamp },
}

impl Oracle {
    /// An oracle that starts above the persisted mark `persisted`.
    pub fn starting_above(persisted: Timestamp) -> Oracle {
        Oracle {
            last: persisted,
            limit: persisted,
        }
    }

    /// The persisted mark as a linearizable read saw it: if it moved past
    /// what this oracle persisted, another oracle ran meanwhile — start
    /// above it.
    pub fn observe(&mut self, persisted: Timestamp) {
        if persisted > self.limit {
            *self = Oracle::starting_above(persisted);
        }
    }

    /// Hands out `count` timestamps at `now` (the node clock), or says which
    /// mark to persist first.
    pub fn allocate(&mut self, now: Timestamp, count: u64) -> Allocation {
        let count = count.clamp(1, MAX_BATCH);
        let first = self.last.next().max(now);
        let last = Timestamp(first.0.saturating_add(count - 1));
        if last >= self.limit {
            // BUGGIFY: in simulation, often a tiny window, so the mark is
            // persisted (and failovers meet it) far more often.
            let tiny = crate::chaos::buggify_delay(0.5, BUGGIFY_WINDOW);
            let window = if tiny.is_zero() {
                HIGH_WATER_WINDOW_MS
            } else {
                tiny.as_millis() as u64
            };
            return Allocation::Extend {
                limit: last.max(now).plus_ms(window),
            };
        }
        self.last = last;
        Allocation::Ready { first, count }
    }

    /// The mark `limit` is persisted.
    pub fn extended(&mut self, limit: Timestamp) {
        self.limit = self.limit.max(limit);
    }

    pub fn limit(&self) -> Timestamp {
        self.limit
    }
}

/// How long one confirmation lets the oracle serve, on its node's clock.
pub const LEASE: Duration = Duration::from_millis(LEASE_MS);
const LEASE_MS: u64 = 300;

/// How long a node that starts leading waits before it serves, on its
/// clock: a predecessor's `LEASE` on a clock running `MAX_DRIFT` slow lasts
/// `LEASE / (1 - d)` of true time; this wait on a clock running `d` fast
/// lasts `TAKEOVER_WAIT / (1 + d)` — with d = 50%, three leases, plus a
/// margin.
pub const TAKEOVER_WAIT: Duration = Duration::from_millis(3 * LEASE_MS + 100);

/// The oracle's lease (see the module docs). Instants are true time (the
/// runtime's monotonic clock); durations arrive already converted from the
/// node's clock (`NodeClock::to_true`).
#[derive(Debug, Clone, Default)]
pub struct Lease {
    /// The term of the last confirmation.
    term: Option<u64>,
    /// Served until then (asked + `LEASE`).
    valid_until: Option<Instant>,
    /// In a new term: nothing is served before then.
    ready_at: Option<Instant>,
    /// The lease length the last confirmation used.
    length: Duration,
}

/// What a confirmation found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmed {
    /// Same term as the last one: the lease is renewed.
    Renewed,
    /// This node leads in a term it had not confirmed before: read the
    /// persisted mark again, and serve only after `ready_at`.
    NewTerm,
}

impl Lease {
    /// Whether the oracle may hand out timestamps at `now` without asking
    /// the quorum again.
    pub fn serves(&self, now: Instant) -> bool {
        let ready = self.ready_at.is_none_or(|r| now >= r);
        ready && self.valid_until.is_some_and(|v| now < v)
    }

    /// Whether the lease is in its last half: a busy oracle asks the
    /// quorum again then, before it expires.
    pub fn renewal_due(&self, now: Instant) -> bool {
        self.valid_until.is_none_or(|v| now + self.length / 2 >= v)
    }

    /// The term of the last confirmation.
    pub fn term(&self) -> Option<u64> {
        self.term
    }

    /// The holder of the previous term released its lease before it
    /// handed the leadership over (`handoff_applies`): this term serves
    /// without waiting.
    pub fn handed_over(&mut self) {
        self.ready_at = None;
    }

    /// When a new term's wait ends (`None`: no wait).
    pub fn ready_at(&self, now: Instant) -> Option<Instant> {
        self.ready_at.filter(|r| *r > now)
    }

    /// A confirmation in `term`, asked at `asked`, answered at `answered`;
    /// `lease` and `wait` are `LEASE` and `TAKEOVER_WAIT` in true time.
    pub fn confirmed(
        &mut self,
        term: u64,
        asked: Instant,
        answered: Instant,
        lease: Duration,
        wait: Duration,
    ) -> Confirmed {
        self.length = lease;
        let renewed = self.term == Some(term);
        if !renewed {
            self.term = Some(term);
            self.ready_at = if crate::chaos::canary(crate::chaos::Canary::OracleLeaseNoWait) {
                None
            } else {
                Some(answered + wait)
            };
        }
        // A lease never shrinks within a term (an older confirmation may
        // finish after a newer one).
        let until = asked + lease;
        self.valid_until = Some(self.valid_until.map_or(until, |v| v.max(until)));
        if renewed {
            Confirmed::Renewed
        } else {
            Confirmed::NewTerm
        }
    }
}

/// Whether a handoff recorded in `released_term` lets a leader confirmed
/// in `term` skip its wait: only when no other leader can have come in
/// between (a leadership transfer starts the next term).
pub fn handoff_applies(released_term: u64, term: u64) -> bool {
    released_term != 0 && released_term.checked_add(1) == Some(term)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_next_term_skips_the_wait() {
        assert!(handoff_applies(4, 5));
        assert!(!handoff_applies(4, 6), "a term in between may hold a lease");
        assert!(!handoff_applies(4, 4));
        assert!(!handoff_applies(0, 1));
    }

    fn ready(o: &mut Oracle, now: Timestamp, n: u64) -> Timestamp {
        match o.allocate(now, n) {
            Allocation::Ready { first, .. } => first,
            Allocation::Extend { limit } => {
                o.extended(limit);
                match o.allocate(now, n) {
                    Allocation::Ready { first, .. } => first,
                    a => panic!("still {a:?}"),
                }
            }
        }
    }

    #[test]
    fn nothing_is_handed_out_before_its_mark_is_persisted() {
        let mut o = Oracle::starting_above(Timestamp::ZERO);
        let now = Timestamp::new(1000, 0);
        assert!(matches!(o.allocate(now, 10), Allocation::Extend { .. }));
        let a = ready(&mut o, now, 10);
        assert_eq!(a, now);
        let b = ready(&mut o, now, 1);
        assert_eq!(
            b,
            Timestamp(now.0 + 10),
            "the clock stood still: the counter goes on"
        );
        assert!(o.limit() > b);
    }

    #[test]
    fn a_new_oracle_starts_above_every_earlier_timestamp_whatever_its_clock() {
        let mut old = Oracle::starting_above(Timestamp::ZERO);
        let t = ready(&mut old, Timestamp::new(5000, 0), 100);
        // The new leader's clock is 4 s behind; it read the persisted mark.
        let mut new = Oracle::starting_above(old.limit());
        let u = ready(&mut new, Timestamp::new(1000, 0), 1);
        assert!(u > Timestamp(t.0 + 99) && u > old.limit());
    }

    #[test]
    fn an_oracle_that_sees_the_mark_moved_jumps_above_it() {
        let mut o = Oracle::starting_above(Timestamp::ZERO);
        let now = Timestamp::new(1000, 0);
        ready(&mut o, now, 1);
        let theirs = Timestamp::new(9000, 0);
        o.observe(theirs);
        assert!(ready(&mut o, now, 1) > theirs);
        // A mark it persisted itself changes nothing.
        let mine = o.limit();
        let before = o.clone();
        o.observe(mine);
        assert_eq!(o, before);
    }

    fn lease_ms(l: &mut Lease, term: u64, asked: Instant) -> Confirmed {
        let answered = asked + Duration::from_millis(1);
        l.confirmed(term, asked, answered, LEASE, TAKEOVER_WAIT)
    }

    #[tokio::test]
    async fn a_new_term_waits_out_any_earlier_lease_before_serving() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut l = Lease::default();
        assert!(!l.serves(t), "no confirmation, no lease");
        assert_eq!(lease_ms(&mut l, 5, t), Confirmed::NewTerm);
        assert!(!l.serves(t + ms(2)), "a new term waits");
        assert_eq!(l.ready_at(t), Some(t + ms(1) + TAKEOVER_WAIT));
        // After the wait, a confirmation in the same term serves at once.
        let later = t + ms(1) + TAKEOVER_WAIT;
        assert_eq!(lease_ms(&mut l, 5, later), Confirmed::Renewed);
        assert!(l.serves(later + ms(1)) && !l.renewal_due(later + ms(1)));
        assert!(
            l.renewal_due(later + LEASE / 2),
            "the last half of a lease asks the quorum again"
        );
        assert!(!l.serves(later + LEASE), "an expired lease serves nothing");
        // A later term waits again.
        assert_eq!(lease_ms(&mut l, 7, later + ms(10)), Confirmed::NewTerm);
        assert!(!l.serves(later + ms(12)));
    }
}
