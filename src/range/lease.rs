//! Leader leases for reads: a leader that a quorum confirmed recently
//! serves a linearizable read from its own applied state, with no quorum
//! round (ReadIndex) of its own.
//!
//! **Why it is safe.** raft-rs (with check_quorum) makes a follower that
//! heard from its leader ignore (pre-)votes of a higher term until it has
//! ticked `election_ticks` times since (`Raft::step`, "lease is not
//! expired"). A ReadIndex round the leader asked at `sent` is answered only
//! after a quorum received a heartbeat sent at or after `sent`, and each of
//! those followers then refuses to vote for `election_ticks` ticks. Its
//! ticks follow its clock: a clock at most `max_drift` fast ticks
//! `election_ticks` times in no less than `(election_ticks - 1) * tick /
//! (1 + max_drift)` of true time (the first tick may come at once). No
//! other leader can be elected, let alone commit, before then. The leader
//! measures its lease on its own clock, which may run `max_drift` slow, so
//! it serves for `(election_ticks - 1) * tick * (1 - max_drift) / (1 +
//! max_drift)`, less 1%, of its own time from `sent` (`lease_length`), and only in
//! the term that round confirmed. A read served under the lease waits, as
//! a ReadIndex read does, until the replica applied the leader's commit
//! index at that moment.
//!
//! **What ends a lease early** (each a way another leader could appear
//! without every follower's promise):
//! - a leader transfer: the transferee campaigns with a forced vote that
//!   ignores the promise, so once this leader sent `MsgTimeoutNow` in a term
//!   it serves no lease reads in that term again (`poison`), and none while
//!   a transfer is pending;
//! - a membership change: the quorum that promised may not be a quorum of
//!   the new membership, so no lease while one is in the log unapplied
//!   (raft-rs' `has_pending_conf`, set on election too), and rounds asked
//!   before it applied do not count (`reset`);
//! - a node that restarts forgets whom it followed, so raft-rs would let
//!   it vote at once: the Store refuses (pre-)votes for `election_ticks`
//!   ticks after it starts (`node::raft_in`).
//!
//! The drift bound is a promise about the hardware (`--max-clock-drift-ppm`,
//! default 10%). The simulator drifts clocks within its bound, and beyond it
//! in the `LeaseDriftBeyondBound` canary, which the linearizability checker
//! catches. Every time here is the node's own monotonic time
//! (`NodeClock::local_now`), which runs at the node's drift: a clock that
//! slows down in the middle of a lease stretches it, as a real one would.

use std::time::Duration;

use crate::clock::NodeClock;

/// A point on the node's own monotonic clock (`NodeClock::local_now`).
pub type Local = Duration;

/// What a replica needs to hold leases.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// How long a confirmation lets the leader serve, on its clock
    /// (`lease_length`).
    pub length: Duration,
    pub clock: NodeClock,
}

/// The lease one confirmation gives, on the leader's clock; `None` when the
/// election timeout is too short to give any.
pub fn lease_length(election_ticks: usize, tick: Duration, max_drift_ppm: u64) -> Option<Duration> {
    if election_ticks < 2 || max_drift_ppm >= 1_000_000 {
        return None;
    }
    let d = max_drift_ppm as u128;
    let base = tick.as_nanos() * (election_ticks as u128 - 1);
    // 1% less, so rounding never lets the lease reach the promise's end.
    let nanos = base * (1_000_000 - d) / (1_000_000 + d) * 99 / 100;
    Some(Duration::from_nanos(nanos.min(u64::MAX as u128) as u64))
}

/// One replica's lease (see the module docs).
#[derive(Debug, Default)]
pub struct ReadLease {
    /// The term the lease was confirmed in, and until when it serves.
    held: Option<(u64, Local)>,
    /// No lease in this term any more: this leader started a transfer.
    poisoned: Option<u64>,
    /// Bumped by `reset`: confirmations asked before it do not count.
    generation: u64,
    /// The renewal round in flight: (ReadIndex context, asked at,
    /// generation).
    probe: Option<(u64, Local, u64)>,
    /// A read wanted the lease since the last renewal: renew it before it
    /// runs out (idle ranges let theirs lapse).
    wanted: bool,
}

impl ReadLease {
    /// Whether a read at `now` in `term` may be served under the lease.
    pub fn serves(&self, term: u64, now: Local) -> bool {
        self.poisoned != Some(term)
            && matches!(self.held, Some((t, until)) if t == term && now < until)
    }

    /// A stamp for a round asked now, to hand back to `confirmed`.
    pub fn stamp(&self, now: Local) -> (Local, u64) {
        (now, self.generation)
    }

    /// A ReadIndex round asked at `stamp` was answered by a quorum in
    /// `term`: the lease runs until `asked + length`.
    pub fn confirmed(&mut self, term: u64, stamp: (Local, u64), length: Duration) {
        let (asked, generation) = stamp;
        if generation != self.generation || self.poisoned == Some(term) {
            return;
        }
        let until = asked + length;
        self.held = match self.held {
            Some((t, old)) if t == term => Some((t, old.max(until))),
            _ => Some((term, until)),
        };
    }

    /// A membership change applied: promises made before it do not count.
    pub fn reset(&mut self) {
        self.held = None;
        self.generation += 1;
        self.probe = None;
    }

    /// This leader handed its leadership away in `term` (or may have).
    pub fn poison(&mut self, term: u64) {
        self.poisoned = Some(term);
        self.held = None;
    }

    pub fn want(&mut self) {
        self.wanted = true;
    }

    /// Whether to start a renewal round at `now`: a read wanted the lease
    /// and less than half of it is left (or none), and no round is out.
    pub fn renewal_due(&self, term: u64, now: Local, length: Duration) -> bool {
        if !self.wanted || self.probe.is_some() || self.poisoned == Some(term) {
            return false;
        }
        match self.held {
            Some((t, until)) if t == term => until.saturating_sub(now) < length / 2,
            _ => true,
        }
    }

    /// A renewal round started with context `ctx`.
    pub fn probing(&mut self, ctx: u64, now: Local) {
        self.wanted = false;
        self.probe = Some((ctx, now, self.generation));
    }

    /// The renewal round `ctx` ended (answered or dropped): its stamp.
    pub fn take_probe(&mut self, ctx: u64) -> Option<(Local, u64)> {
        match self.probe {
            Some((c, at, g)) if c == ctx => {
                self.probe = None;
                Some((at, g))
            }
            _ => None,
        }
    }

    /// A renewal round that raft-rs dropped (no answer after a whole lease)
    /// is given up, so another can start.
    pub fn expire_probe(&mut self, now: Local, length: Duration) {
        if self
            .probe
            .is_some_and(|(_, at, _)| now.saturating_sub(at) > length)
        {
            self.probe = None;
        }
    }
}

impl LeaseConfig {
    /// Now, on this node's clock.
    pub fn now(&self) -> Local {
        self.clock.local_now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn the_lease_is_shorter_than_any_follower_can_vote_within_the_bound() {
        // 10 ticks of 100 ms, 10% drift: 900 ms * 0.9 / 1.1, less 1%.
        let l = lease_length(10, MS(100), 100_000).unwrap();
        assert_eq!(l, Duration::from_nanos(728_999_999));
        // The slowest leader clock stretches it; the fastest follower
        // clock shrinks the follower's promise; the lease still ends first.
        let leader_true = l.as_secs_f64() / 0.9;
        let follower_true = 0.9 / 1.1;
        assert!(leader_true < follower_true);
        assert_eq!(lease_length(1, MS(100), 0), None);
        assert_eq!(lease_length(10, MS(100), 1_000_000), None);
        assert_eq!(lease_length(10, MS(100), 0), Some(MS(891)));
    }

    #[test]
    fn a_lease_serves_only_in_its_term_until_it_runs_out() {
        let t = MS(1000);
        let mut l = ReadLease::default();
        assert!(!l.serves(3, t), "no confirmation, no lease");
        l.confirmed(3, l.stamp(t), MS(500));
        assert!(l.serves(3, t + MS(499)));
        assert!(!l.serves(3, t + MS(500)), "expired");
        assert!(!l.serves(4, t + MS(1)), "another term");
        // A later confirmation extends it; an earlier one never shortens it.
        l.confirmed(3, l.stamp(t + MS(300)), MS(500));
        l.confirmed(3, l.stamp(t + MS(100)), MS(500));
        assert!(l.serves(3, t + MS(799)) && !l.serves(3, t + MS(800)));
    }

    #[test]
    fn transfers_and_membership_changes_end_the_lease() {
        let t = MS(1000);
        let mut l = ReadLease::default();
        l.confirmed(3, l.stamp(t), MS(500));
        l.poison(3);
        assert!(!l.serves(3, t + MS(1)));
        l.confirmed(3, l.stamp(t + MS(2)), MS(500));
        assert!(!l.serves(3, t + MS(3)), "no lease again in a poisoned term");
        l.confirmed(4, l.stamp(t + MS(2)), MS(500));
        assert!(l.serves(4, t + MS(3)), "the next term is not poisoned");
        // A round asked before a membership change does not count after it.
        let before = l.stamp(t + MS(4));
        l.reset();
        assert!(!l.serves(4, t + MS(5)));
        l.confirmed(4, before, MS(500));
        assert!(!l.serves(4, t + MS(5)));
        l.confirmed(4, l.stamp(t + MS(6)), MS(500));
        assert!(l.serves(4, t + MS(7)));
    }

    #[test]
    fn renewal_starts_when_wanted_and_half_gone() {
        let t = MS(1000);
        let mut l = ReadLease::default();
        assert!(!l.renewal_due(3, t, MS(500)), "nobody wants it");
        l.want();
        assert!(l.renewal_due(3, t, MS(500)), "none held");
        l.probing(7, t);
        assert!(!l.renewal_due(3, t, MS(500)), "one round at a time");
        let stamp = l.take_probe(7).unwrap();
        l.confirmed(3, stamp, MS(500));
        l.want();
        assert!(!l.renewal_due(3, t + MS(200), MS(500)));
        assert!(l.renewal_due(3, t + MS(251), MS(500)));
        l.probing(8, t + MS(251));
        l.expire_probe(t + MS(700), MS(500));
        assert!(l.take_probe(8).is_some(), "not yet given up");
        l.probing(9, t + MS(251));
        l.expire_probe(t + MS(752), MS(500));
        assert!(l.take_probe(9).is_none(), "given up");
    }
}
