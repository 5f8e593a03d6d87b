//! The node-local clock: every time decision a node makes goes through it, so
//! the simulator can skew and drift each node separately (madsim has one
//! global clock). The Raft tick follows its drift (a node whose clock runs
//! fast times out elections sooner), and the timestamp oracle reads its
//! wall time (`now_ms`, with the node's offset).
//!
//! Production uses `NodeClock::default()` (no offset, no drift).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A shared, adjustable view of time for one node (cheap to clone).
#[derive(Clone, Default)]
pub struct NodeClock {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Wall-clock offset from true time, in milliseconds.
    offset_ms: AtomicI64,
    /// Rate error in parts per million: +100_000 runs 10% fast.
    drift_ppm: AtomicI64,
}

impl std::fmt::Debug for NodeClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "NodeClock(offset {} ms, drift {} ppm)",
            self.offset_ms(),
            self.drift_ppm()
        )
    }
}

/// Drift is kept within ±50% so a tick never stops or explodes.
pub const MAX_DRIFT_PPM: i64 = 500_000;

impl NodeClock {
    pub fn set_offset_ms(&self, ms: i64) {
        self.inner.offset_ms.store(ms, Ordering::Relaxed);
    }
    pub fn set_drift_ppm(&self, ppm: i64) {
        self.inner
            .drift_ppm
            .store(ppm.clamp(-MAX_DRIFT_PPM, MAX_DRIFT_PPM), Ordering::Relaxed);
    }
    pub fn offset_ms(&self) -> i64 {
        self.inner.offset_ms.load(Ordering::Relaxed)
    }
    pub fn drift_ppm(&self) -> i64 {
        self.inner.drift_ppm.load(Ordering::Relaxed)
    }
    pub fn reset(&self) {
        self.set_offset_ms(0);
        self.set_drift_ppm(0);
    }

    /// Milliseconds since the Unix epoch on this node's clock. This is the one
    /// place server code reads the wall clock, on purpose: under madsim
    /// `SystemTime::now` is the simulator's seeded virtual time (madsim
    /// intercepts the clock calls), so runs replay exactly (the sweeps'
    /// `--check-determinism` compares traces), and the harness adds each
    /// node's offset.
    pub fn now_ms(&self) -> u64 {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        (wall + self.offset_ms()).max(0) as u64
    }

    /// How long a `local` duration on this node's clock takes in true time.
    pub fn to_true(&self, local: Duration) -> Duration {
        let rate = 1_000_000 + self.drift_ppm();
        let nanos = local.as_nanos() as i128 * 1_000_000 / rate as i128;
        Duration::from_nanos(nanos.max(1) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_scales_durations() {
        let c = NodeClock::default();
        assert_eq!(
            c.to_true(Duration::from_millis(100)),
            Duration::from_millis(100)
        );
        c.set_drift_ppm(250_000); // 25% fast: 100 local ms pass in 80 true ms
        assert_eq!(
            c.to_true(Duration::from_millis(100)),
            Duration::from_millis(80)
        );
        c.set_drift_ppm(-10_000_000);
        assert_eq!(c.drift_ppm(), -MAX_DRIFT_PPM);
        assert_eq!(
            c.to_true(Duration::from_millis(100)),
            Duration::from_millis(200)
        );
    }
}
