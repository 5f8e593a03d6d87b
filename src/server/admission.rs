//! Admission control at the gRPC edge: every client request a node is
//! working on holds a share of one byte budget, its encoded size (at least
//! `MIN_COST`, the task, channels and waiter a request costs besides its
//! bytes). A request that finds the budget spent is answered at once with
//! a retryable `Busy` (gRPC RESOURCE_EXHAUSTED; the SDK backs off and
//! tries again) instead of being buffered: however many clients connect
//! and however large their batches, the requests a node holds stay within
//! `BUDGET_BYTES`, and the Store's mailbox — which Raft traffic shares —
//! never fills with client work (at most `BUDGET_BYTES / MIN_COST` = 2,048
//! small requests, half the mailbox's 4,096 messages; `node::task`).
//!
//! Invariant: a permit is taken before a request reaches the Store and
//! released when its handler returns (dropping the permit), also on error.
//!
//! Writes also pass `DiskRoom`: while the data directory's disk has less
//! free space than the node keeps in reserve (`server::disk` measures it,
//! production only), new client writes (put, delete, batches, prewrites,
//! one-phase commits) are refused with `NoSpace` and nothing is written;
//! reads, and the commits and rollbacks that finish transactions already
//! written, keep working, and Raft keeps the reserve for its own state.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};

/// The bytes of client requests one node holds at most.
pub const BUDGET_BYTES: usize = 64 << 20;
/// What one request costs at least.
pub const MIN_COST: usize = 32 << 10;
/// Budget accounting unit.
const UNIT: usize = 1024;

/// One node's budget (cheap to clone).
#[derive(Clone, Debug)]
pub struct Admission {
    sem: Arc<Semaphore>,
    budget: usize,
    disk: DiskRoom,
}

/// Whether the disk has room for new writes: `None`, or why not (shared by
/// the disk monitor and every service).
#[derive(Clone, Debug, Default)]
pub struct DiskRoom(Arc<Mutex<Option<String>>>);

impl DiskRoom {
    /// Refuses new writes with `why` (`None`: accepts them again). Returns
    /// whether that changed anything.
    pub fn set(&self, why: Option<String>) -> bool {
        let mut cur = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let changed = cur.is_some() != why.is_some();
        *cur = why;
        changed
    }

    /// `Ok` while there is room.
    pub fn check(&self) -> Result<()> {
        match &*self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(why) => Err(Error::NoSpace(why.clone())),
            None => Ok(()),
        }
    }
}

impl Default for Admission {
    fn default() -> Self {
        Admission::new(BUDGET_BYTES)
    }
}

impl Admission {
    pub fn new(budget_bytes: usize) -> Admission {
        let units = (budget_bytes / UNIT).max(1);
        Admission {
            sem: Arc::new(Semaphore::new(units)),
            budget: units * UNIT,
            disk: DiskRoom::default(),
        }
    }

    /// The same budget, writes refused while `disk` says so.
    pub fn with_disk(mut self, disk: DiskRoom) -> Admission {
        self.disk = disk;
        self
    }

    /// Admits a write of `bytes`: `NoSpace` while the disk is short,
    /// otherwise as `admit`.
    pub fn admit_write(&self, bytes: usize) -> Result<OwnedSemaphorePermit> {
        self.disk.check()?;
        self.admit(bytes)
    }

    /// Admits a request of `bytes` encoded bytes, or answers `Busy`.
    pub fn admit(&self, bytes: usize) -> Result<OwnedSemaphorePermit> {
        let units = bytes.max(MIN_COST).div_ceil(UNIT).min(self.budget / UNIT) as u32;
        self.sem.clone().try_acquire_many_owned(units).map_err(|_| {
            Error::Busy(format!(
                "this node holds {} MiB of client requests already (its limit); retry shortly",
                self.budget >> 20
            ))
        })
    }

    /// Bytes of the budget in use.
    pub fn in_use(&self) -> usize {
        self.budget - self.sem.available_permits() * UNIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_past_the_budget_are_turned_away_and_their_share_returns() {
        let a = Admission::new(1 << 20);
        // Small requests cost MIN_COST each: 32 fit in 1 MiB.
        let held: Vec<_> = (0..32).map(|_| a.admit(100).unwrap()).collect();
        assert_eq!(a.in_use(), 1 << 20);
        let e = a.admit(100).unwrap_err();
        assert!(matches!(e, Error::Busy(_)) && e.is_retryable(), "{e}");
        drop(held);
        assert_eq!(a.in_use(), 0);
        // A request larger than the whole budget still runs alone.
        let big = a.admit(8 << 20).unwrap();
        assert!(a.admit(100).is_err());
        drop(big);
        let half = a.admit(512 << 10).unwrap();
        assert_eq!(a.in_use(), 512 << 10);
        drop(half);
    }

    #[test]
    fn writes_wait_for_disk_room_while_reads_go_on() {
        let disk = DiskRoom::default();
        let a = Admission::new(1 << 20).with_disk(disk.clone());
        assert!(a.admit_write(10).is_ok());
        assert!(disk.set(Some("1 MiB free".into())));
        let e = a.admit_write(10).unwrap_err();
        assert!(matches!(e, Error::NoSpace(_)) && !e.is_retryable(), "{e}");
        assert!(a.admit(10).is_ok());
        assert!(disk.set(None));
        assert!(!disk.set(None));
        assert!(a.admit_write(10).is_ok());
    }
}
