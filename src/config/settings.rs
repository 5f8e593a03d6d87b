//! Cluster settings (`_/cluster/config/<name>`): one table of names, bounds
//! and defaults, one validator for writes (`validate_setting`) and one typed
//! reader (`ClusterSettings::from_pairs`) for everything that acts on them —
//! the Store's split checks and the placement driver.
//!
//! Values are validated before they are written, so a stored value that
//! does not parse is corruption: the reader reports it instead of quietly
//! falling back to a default.

use std::time::Duration;

use crate::api::meta;
use crate::error::{Error, Result};

/// Default `replication_factor`: a single node shows its ranges as
/// under-replicated until more nodes join, then up-replicates.
pub const DEFAULT_REPLICATION_FACTOR: usize = 3;
/// Ranges larger than this split (`range_max_bytes`).
pub const DEFAULT_RANGE_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Smallest accepted `range_max_bytes`.
pub const MIN_RANGE_MAX_BYTES: u64 = 1024;
/// Requests per second a range may serve before it splits by load.
pub const DEFAULT_SPLIT_QPS: u64 = 2500;
/// Default `merge_max_bytes`: adjacent cold ranges merge when together they
/// hold less than this, and less than a quarter of `range_max_bytes` (so a
/// merged range is far from splitting again: no flapping).
pub const DEFAULT_MERGE_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Default `dead_node_timeout`: seconds without an answer before a node's
/// replicas are replaced (CockroachDB waits 5 minutes, TiKV 30 minutes).
pub const DEFAULT_DEAD_NODE_TIMEOUT_SECS: u64 = 10;

/// Default `gc_ttl`: seconds MVCC keeps versions a newer one replaced (and
/// deletes) readable before garbage collection drops them.
pub const DEFAULT_GC_TTL_SECS: u64 = 600;

/// Default `txn_max_duration`: seconds a transaction may run (from its
/// start timestamp) before it fails with `TxnTooOld`.
pub const DEFAULT_TXN_MAX_DURATION_SECS: u64 = 600;

/// Every cluster setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    ReplicationFactor,
    RangeMaxBytes,
    SplitQps,
    MergeMaxBytes,
    DeadNodeTimeout,
    GcTtl,
    TxnMaxDuration,
}

impl Setting {
    pub const ALL: [Setting; 7] = [
        Setting::ReplicationFactor,
        Setting::RangeMaxBytes,
        Setting::SplitQps,
        Setting::MergeMaxBytes,
        Setting::DeadNodeTimeout,
        Setting::GcTtl,
        Setting::TxnMaxDuration,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Setting::ReplicationFactor => "replication_factor",
            Setting::RangeMaxBytes => "range_max_bytes",
            Setting::SplitQps => "split_qps",
            Setting::MergeMaxBytes => "merge_max_bytes",
            Setting::DeadNodeTimeout => "dead_node_timeout",
            Setting::GcTtl => "gc_ttl",
            Setting::TxnMaxDuration => "txn_max_duration",
        }
    }

    pub fn from_name(name: &str) -> Option<Setting> {
        Setting::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Parses and bounds-checks a value.
    pub fn parse(self, value: &str) -> Result<u64> {
        let n = value.trim().parse::<u64>().ok();
        let (ok, want) = match self {
            Setting::ReplicationFactor => (n.filter(|n| (1..=7).contains(n)), "1 to 7".to_string()),
            Setting::RangeMaxBytes => (
                n.filter(|n| *n >= MIN_RANGE_MAX_BYTES),
                format!("a whole number of bytes >= {MIN_RANGE_MAX_BYTES}"),
            ),
            Setting::SplitQps => (
                n.filter(|n| *n <= 10_000_000),
                "a whole number of requests per second (0 disables load splits)".into(),
            ),
            Setting::MergeMaxBytes => (
                n.filter(|n| *n <= 1 << 30),
                "a byte count up to 1073741824 (0 disables merges)".into(),
            ),
            Setting::DeadNodeTimeout => (
                n.filter(|n| (1..=86_400).contains(n)),
                "a whole number of seconds from 1 to 86400".into(),
            ),
            Setting::GcTtl => (
                n.filter(|n| (1..=30 * 86_400).contains(n)),
                "a whole number of seconds from 1 to 2592000 (30 days)".into(),
            ),
            Setting::TxnMaxDuration => (
                n.filter(|n| (1..=86_400).contains(n)),
                "a whole number of seconds from 1 to 86400".into(),
            ),
        };
        ok.ok_or_else(|| {
            Error::InvalidArgument(format!("{} must be {want}, got {value:?}", self.name()))
        })
    }
}

/// Validates a setting as a user gives it (`range_max_bytes` or
/// `_/cluster/config/range_max_bytes`) and returns its full key.
pub fn validate_setting(key: &str, value: &str) -> Result<String> {
    let name = key.strip_prefix(meta::CONFIG_PREFIX).unwrap_or(key);
    let Some(s) = Setting::from_name(name) else {
        let names: Vec<&str> = Setting::ALL.iter().map(|s| s.name()).collect();
        return Err(Error::InvalidArgument(format!(
            "unknown setting {name:?}; settings: {}",
            names.join(", ")
        )));
    };
    s.parse(value)?;
    Ok(meta::config_key(name))
}

/// The cluster settings in effect (defaults for the ones never set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub replication_factor: usize,
    pub range_max_bytes: u64,
    /// 0 disables load-based splits.
    pub split_qps: u64,
    /// 0 disables merges.
    pub merge_max_bytes: u64,
    pub dead_node_timeout: Duration,
    /// How long replaced versions stay readable (MVCC garbage collection).
    pub gc_ttl: Duration,
    /// How long a transaction may run before it fails with `TxnTooOld`.
    pub txn_max_duration: Duration,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            replication_factor: DEFAULT_REPLICATION_FACTOR,
            range_max_bytes: DEFAULT_RANGE_MAX_BYTES,
            split_qps: DEFAULT_SPLIT_QPS,
            merge_max_bytes: DEFAULT_MERGE_MAX_BYTES,
            dead_node_timeout: Duration::from_secs(DEFAULT_DEAD_NODE_TIMEOUT_SECS),
            gc_ttl: Duration::from_secs(DEFAULT_GC_TTL_SECS),
            txn_max_duration: Duration::from_secs(DEFAULT_TXN_MAX_DURATION_SECS),
        }
    }
}

impl ClusterSettings {
    /// Reads the settings from `(user-visible key, value)` pairs under
    /// `_/cluster/config/`. Names this build does not know are skipped (a
    /// newer node may have written them); a known one that does not parse
    /// is an error.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Result<ClusterSettings> {
        let mut out = ClusterSettings::default();
        for (key, value) in pairs {
            let Some(name) = key.strip_prefix(meta::CONFIG_PREFIX.as_bytes()) else {
                continue;
            };
            let Some(s) = std::str::from_utf8(name).ok().and_then(Setting::from_name) else {
                continue;
            };
            let text = String::from_utf8_lossy(value);
            let n = s.parse(&text).map_err(|e| {
                Error::Corruption(format!(
                    "stored setting {} is invalid: {}",
                    s.name(),
                    e.to_string().trim_start_matches("invalid argument: ")
                ))
            })?;
            match s {
                Setting::ReplicationFactor => out.replication_factor = n as usize,
                Setting::RangeMaxBytes => out.range_max_bytes = n,
                Setting::SplitQps => out.split_qps = n,
                Setting::MergeMaxBytes => out.merge_max_bytes = n,
                Setting::DeadNodeTimeout => out.dead_node_timeout = Duration::from_secs(n),
                Setting::GcTtl => out.gc_ttl = Duration::from_secs(n),
                Setting::TxnMaxDuration => out.txn_max_duration = Duration::from_secs(n),
            }
        }
        Ok(out)
    }

    /// The largest combined size of two ranges that may merge: at most a
    /// quarter of `range_max_bytes` (0: merges are off).
    pub fn merge_limit_bytes(&self) -> u64 {
        self.merge_max_bytes.min(self.range_max_bytes / 4)
    }

    /// The largest combined load of two ranges that may merge (load splits
    /// off: load does not block merges).
    pub fn merge_limit_qps(&self) -> u64 {
        if self.split_qps == 0 {
            u64::MAX
        } else {
            self.split_qps / 4
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_validate_by_one_table() {
        assert_eq!(
            validate_setting("replication_factor", "5").unwrap(),
            "_/cluster/config/replication_factor"
        );
        assert!(validate_setting("_/cluster/config/range_max_bytes", "1024").is_ok());
        assert!(validate_setting("range_max_bytes", "10").is_err());
        assert!(validate_setting("replication_factor", "8").is_err());
        assert!(validate_setting("dead_node_timeout", "0").is_err());
        let e = validate_setting("bogus", "1").unwrap_err().to_string();
        assert!(e.contains("replication_factor, range_max_bytes"), "{e}");
    }

    #[test]
    fn the_reader_uses_defaults_skips_unknown_names_and_reports_bad_values() {
        let s = ClusterSettings::from_pairs([
            (&b"_/cluster/config/range_max_bytes"[..], &b"8192"[..]),
            (b"_/cluster/config/from_a_newer_version", b"x"),
            (b"_/cluster/config/split_qps", b" 0 "),
        ])
        .unwrap();
        assert_eq!(s.range_max_bytes, 8192);
        assert_eq!(s.replication_factor, DEFAULT_REPLICATION_FACTOR);
        assert_eq!(s.merge_limit_bytes(), 2048);
        assert_eq!(s.merge_limit_qps(), u64::MAX);
        let bad = ClusterSettings::from_pairs([(
            &b"_/cluster/config/replication_factor"[..],
            &b"three"[..],
        )]);
        assert!(matches!(bad, Err(Error::Corruption(_))), "{bad:?}");
    }
}
