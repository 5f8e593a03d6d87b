//! The data directory's free space (production only: the simulator's
//! MemEngine has no disk). Once a second the node reads the file system's
//! free space (statvfs); below the reserve it refuses new client writes
//! (`admission::DiskRoom`: `NoSpace`, ResourceExhausted on the wire) and
//! accepts them again once space returns. Reads never stop.
//!
//! Why a reserve and not RocksDB's own ENOSPC: a write that fails inside
//! the engine stops the node (a failed or partial write to the Raft log
//! must never be carried on from), so the node stays clear of it: the
//! reserve leaves room for Raft's own state, compactions and the commits
//! and rollbacks that finish transactions already written.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

use super::admission::DiskRoom;

/// How often free space is measured.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// The default reserve: 5% of the file system, at most this.
const DEFAULT_RESERVE_MAX: u64 = 1 << 30;

/// Free and total bytes of the file system holding `dir`.
fn space(dir: &std::path::Path) -> std::io::Result<(u64, u64)> {
    let s = rustix::fs::statvfs(dir)?;
    let unit = s.f_frsize.max(1);
    Ok((
        s.f_bavail.saturating_mul(unit),
        s.f_blocks.saturating_mul(unit),
    ))
}

/// The reserve for a file system of `total` bytes: `configured`, or 5% of
/// it up to 1 GiB.
pub fn reserve(configured: Option<u64>, total: u64) -> u64 {
    configured.unwrap_or((total / 20).min(DEFAULT_RESERVE_MAX))
}

/// Watches `dir` until `stop`, keeping `room` current.
pub async fn watch_space(
    dir: PathBuf,
    configured: Option<u64>,
    room: DiskRoom,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        match space(&dir) {
            Ok((free, total)) => {
                let keep = reserve(configured, total);
                let why = (free < keep).then(|| {
                    format!(
                        "{} has {} MiB free, under the {} MiB this node keeps in reserve; \
                         writes are refused until space returns (reads still work)",
                        dir.display(),
                        free >> 20,
                        keep.div_ceil(1 << 20)
                    )
                });
                let low = why.is_some();
                if room.set(why) {
                    if low {
                        tracing::error!(
                            free_mib = free >> 20,
                            reserve_mib = keep >> 20,
                            "disk nearly full: refusing client writes"
                        );
                    } else {
                        tracing::info!(
                            free_mib = free >> 20,
                            "disk space returned: accepting writes"
                        );
                    }
                }
            }
            Err(e) => tracing::warn!(dir = %dir.display(), %e, "cannot read free disk space"),
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_five_percent_up_to_a_gib_unless_set() {
        assert_eq!(reserve(None, 100 << 20), 5 << 20);
        assert_eq!(reserve(None, 1 << 40), 1 << 30);
        assert_eq!(reserve(Some(16 << 20), 1 << 40), 16 << 20);
        let (free, total) = space(std::path::Path::new(".")).unwrap();
        assert!(free <= total && total > 0);
    }
}
