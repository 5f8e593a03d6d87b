//! Coordinator fault points: where a test (the simulator's transaction
//! workload) makes the SDK's commit behave like a client that crashes,
//! stalls or runs with short lock TTLs — the situations lock resolution,
//! rollback tombstones and heartbeats exist for.
//!
//! A `Client` has no hook unless one is installed with
//! `Client::with_commit_faults`; production code never installs one, and
//! with none every point is a no-op. The hook decides from its own seeded
//! RNG, so a simulation seed still decides everything.
//!
//! A *crash* ends the commit at that point with `Indeterminate` and leaves
//! whatever it had written (locks, a committed primary) for readers to
//! resolve. A *stall* models a paused process: the commit and its lock
//! heartbeats both stop for the duration, so the locks may expire.

use std::time::Duration;

/// A point in a two-phase commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitPoint {
    /// Every key is locked; no commit timestamp yet.
    AfterPrewrite,
    /// Every key is locked and the reads were validated: the next step is
    /// the commit point.
    BeforeCommitPrimary,
    /// The primary is committed, the secondaries not yet.
    AfterCommitPrimary,
    /// A one-range commit was sent. `Crash` here means its reply is lost
    /// while the request is still in flight: the client settles the
    /// outcome from the first key at once (racing the request).
    OnePcSent,
}

/// What happens at a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Continue,
    /// The client dies here.
    Crash,
    /// The client is paused this long (no heartbeats either).
    Stall(Duration),
}

/// Decides the faults of a client's commits.
pub trait CommitFaults: Send + Sync {
    /// The lock TTL to use instead of `transaction::LOCK_TTL`.
    fn lock_ttl(&self) -> Option<Duration> {
        None
    }
    fn at(&self, point: CommitPoint) -> Fault;
}
