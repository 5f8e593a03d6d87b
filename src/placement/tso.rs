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
//! The server confirms leadership (a linearizable read of the mark) after a
//! request arrives and before it answers, so a deposed leader cannot hand
//! out a timestamp below one the new leader already gave.

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
