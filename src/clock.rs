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
    /// The monotonic clock's anchor: at true instant `.0` the node's own
    /// monotonic time read `.1` (`local_now`); moved whenever the drift
    /// changes, so the node's time runs at the drift in force.
    anchor: std::sync::Mutex<Option<(tokio::time::Instant, Duration)>>,
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
        self.store_drift(ppm.clamp(-MAX_DRIFT_PPM, MAX_DRIFT_PPM));
    }
    /// Drift beyond `MAX_DRIFT_PPM` (up to ±90%): only for canaries that
    /// break the bound on purpose (the simulator's
    /// `LeaseDriftBeyondBound`).
    pub fn set_drift_ppm_beyond_bound(&self, ppm: i64) {
        self.store_drift(ppm.clamp(-900_000, 900_000));
    }

    fn store_drift(&self, ppm: i64) {
        let mut anchor = self.lock_anchor();
        let now = tokio::time::Instant::now();
        let local = Self::local_at(&anchor, self.drift_ppm(), now);
        *anchor = Some((now, local));
        self.inner.drift_ppm.store(ppm, Ordering::Relaxed);
    }

    fn lock_anchor(&self) -> std::sync::MutexGuard<'_, Option<(tokio::time::Instant, Duration)>> {
        // A panic elsewhere while holding it leaves a valid anchor.
        self.inner
            .anchor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn local_at(
        anchor: &Option<(tokio::time::Instant, Duration)>,
        drift_ppm: i64,
        now: tokio::time::Instant,
    ) -> Duration {
        let Some((t0, l0)) = *anchor else {
            return Duration::ZERO;
        };
        let true_ns = now.saturating_duration_since(t0).as_nanos() as i128;
        let local_ns = true_ns * (1_000_000 + drift_ppm) as i128 / 1_000_000;
        l0 + Duration::from_nanos(local_ns.max(0) as u64)
    }

    /// This node's monotonic time: how much time its own clock counted
    /// since it was first read. It runs fast or slow at the drift in
    /// force; leader leases are measured on it (`range::lease`).
    pub fn local_now(&self) -> Duration {
        let mut anchor = self.lock_anchor();
        let now = tokio::time::Instant::now();
        if anchor.is_none() {
            *anchor = Some((now, Duration::ZERO));
        }
        Self::local_at(&anchor, self.drift_ppm(), now)
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
    fn local_time_runs_at_the_drift_in_force() {
        let t0 = tokio::time::Instant::now();
        let ms = Duration::from_millis;
        let anchor = Some((t0, ms(100)));
        assert_eq!(NodeClock::local_at(&None, 0, t0), Duration::ZERO);
        assert_eq!(NodeClock::local_at(&anchor, 0, t0 + ms(100)), ms(200));
        assert_eq!(
            NodeClock::local_at(&anchor, -500_000, t0 + ms(100)),
            ms(150)
        );
        assert_eq!(NodeClock::local_at(&anchor, 250_000, t0 + ms(100)), ms(225));
        // Changing the drift re-anchors: local time never jumps.
        let c = NodeClock::default();
        let a = c.local_now();
        c.set_drift_ppm(-400_000);
        let b = c.local_now();
        c.set_drift_ppm_beyond_bound(-900_000);
        assert!(a <= b && b <= c.local_now());
        assert_eq!(c.drift_ppm(), -900_000);
    }

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
