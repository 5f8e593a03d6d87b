//! Latencies and machine load: the same statistics for every system.

/// What clients measured.
#[derive(Default)]
pub struct Stats {
    /// Latency of every successful op in the window, microseconds.
    pub latencies_us: Vec<u64>,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Stats {
    pub fn merge(&mut self, other: Stats) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// The `p` quantile in milliseconds (nearest rank; latencies sorted).
    pub fn pct(&self, p: f64) -> f64 {
        let lat = &self.latencies_us;
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i] as f64 / 1000.0
    }
}

/// The machine's CPU counters (`/proc/stat`, all cores) at one moment.
pub struct CpuSample {
    busy: u64,
    total: u64,
}

impl CpuSample {
    pub fn now() -> Option<CpuSample> {
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        let line = text.lines().next()?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal …
        let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
        let total: u64 = v.iter().take(8).sum();
        Some(CpuSample {
            busy: total - idle,
            total,
        })
    }

    /// Percent of all cores busy since this sample.
    pub fn busy_since(&self) -> Option<f64> {
        let now = CpuSample::now()?;
        let total = now.total.checked_sub(self.total)?;
        if total == 0 {
            return None;
        }
        Some(100.0 * now.busy.saturating_sub(self.busy) as f64 / total as f64)
    }
}

/// The 1-minute load average.
pub fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
