//! Error <-> gRPC Status, in one place for both directions: the server's
//! edge encodes (after `server::convert` turned spans into route keys),
//! the client SDK decodes. Depends only on `error` and the API. Every status RangeDB itself produces
//! carries `x-rangedb-error`, so the SDK can tell a server's answer from a
//! connection failure.
//!
//! Routing errors become `UNAVAILABLE` with metadata the SDK reads:
//! `x-rangedb-error` (`not-leader`, `range-not-found`, `key-not-in-range`,
//! `epoch-mismatch`), `x-rangedb-range`, `x-rangedb-leader-id`,
//! `x-rangedb-leader-address`, the range's span (`x-rangedb-range-start`,
//! `-end`, hex) and its epoch version (`x-rangedb-range-version`).

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::error::{Error, LeaderHint, Span};

pub const ERROR_KIND: &str = "x-rangedb-error";
pub const RANGE_ID: &str = "x-rangedb-range";
pub const LEADER_ID: &str = "x-rangedb-leader-id";
pub const LEADER_ADDRESS: &str = "x-rangedb-leader-address";
pub const RANGE_START: &str = "x-rangedb-range-start";
pub const RANGE_END: &str = "x-rangedb-range-end";
pub const RANGE_VERSION: &str = "x-rangedb-range-version";
/// Transaction errors: the key (hex), the lock's primary (hex), its start
/// timestamp and TTL, a commit timestamp.
pub const TXN_KEY: &str = "x-rangedb-key";
pub const TXN_PRIMARY: &str = "x-rangedb-primary";
pub const TXN_START: &str = "x-rangedb-start-ts";
pub const TXN_TTL: &str = "x-rangedb-ttl-ms";
pub const TXN_TS: &str = "x-rangedb-ts";
/// The oldest revision still available (a `compacted` error).
pub const COMPACTED_TS: &str = "x-rangedb-compacted";
/// Every metadata key above (what the SDK reads from a status).
pub const METADATA_KEYS: &[&str] = &[
    ERROR_KIND,
    RANGE_ID,
    LEADER_ID,
    LEADER_ADDRESS,
    RANGE_START,
    RANGE_END,
    RANGE_VERSION,
    TXN_KEY,
    TXN_PRIMARY,
    TXN_START,
    TXN_TTL,
    TXN_TS,
    COMPACTED_TS,
];

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Decodes lower-case hex (as in directory entries and span metadata).
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn set_span(status: &mut Status, span: &Span) {
    if span.is_known() {
        set(status, RANGE_START, &hex(&span.start));
        set(status, RANGE_END, &hex(&span.end));
    }
}

fn get_span(status: &Status) -> Span {
    let start = get(status, RANGE_START).and_then(unhex).unwrap_or_default();
    let end = get(status, RANGE_END).and_then(unhex).unwrap_or_default();
    Span { start, end }
}

fn set(status: &mut Status, key: &'static str, value: &str) {
    if let Ok(v) = MetadataValue::try_from(value) {
        status.metadata_mut().insert(key, v);
    }
}

pub fn to_status(e: Error) -> Status {
    let kind = match &e {
        Error::InvalidArgument(_) => "invalid-argument",
        Error::NotLeader { .. } => "not-leader",
        Error::RangeNotFound(_) => "range-not-found",
        Error::KeyNotInRange { .. } => "key-not-in-range",
        Error::EpochMismatch { .. } => "epoch-mismatch",
        Error::Timeout(_) => "timeout",
        Error::Indeterminate(_) => "indeterminate",
        Error::Unavailable(_) => "unavailable",
        Error::Busy(_) => "busy",
        Error::ShuttingDown => "shutting-down",
        Error::StaleTimestamp { .. } => "stale-timestamp",
        Error::WriteConflict { .. } => "write-conflict",
        Error::KeyLocked { .. } => "locked",
        Error::TxnAborted { .. } => "txn-aborted",
        Error::TxnCommitted { .. } => "txn-committed",
        Error::TxnConflict { .. } => "txn-conflict",
        Error::TxnTooOld(_) => "txn-too-old",
        Error::Compacted { .. } => "compacted",
        Error::DataDir(_) | Error::Config(_) => "precondition",
        Error::Unauthenticated(_) => "unauthenticated",
        Error::NoSpace(_) => "no-space",
        Error::PermissionDenied(_) => "permission-denied",
        Error::NotFound(_) => "not-found",
        Error::AlreadyExists(_) => "already-exists",
        Error::FailedPrecondition(_) => "failed-precondition",
        _ => "internal",
    };
    let mut s = to_status_inner(e);
    set(&mut s, ERROR_KIND, kind);
    s
}

/// Whether a status came from a RangeDB server (rather than the transport).
pub fn is_server_status(s: &Status) -> bool {
    s.metadata().contains_key(ERROR_KIND)
}

fn to_status_inner(e: Error) -> Status {
    let msg = e.to_string();
    match e {
        Error::InvalidArgument(_) => Status::invalid_argument(msg),
        Error::NotLeader {
            range_id,
            leader,
            span,
        } => {
            let mut s = Status::unavailable(msg);
            set(&mut s, RANGE_ID, &range_id.to_string());
            set_span(&mut s, &span);
            if let Some(h) = leader {
                set(&mut s, LEADER_ID, &h.node_id.to_string());
                if let Some(a) = h.client_address {
                    set(&mut s, LEADER_ADDRESS, &a);
                }
            }
            s
        }
        Error::KeyNotInRange { range_id, span } => {
            let mut s = Status::unavailable(msg);
            set(&mut s, RANGE_ID, &range_id.to_string());
            set_span(&mut s, &span);
            s
        }
        Error::EpochMismatch {
            range_id,
            current,
            version,
        } => {
            let mut s = Status::unavailable(msg);
            set(&mut s, RANGE_ID, &range_id.to_string());
            set(&mut s, RANGE_VERSION, &version.to_string());
            set_span(&mut s, &current);
            s
        }
        Error::RangeNotFound(range_id) => {
            let mut s = Status::unavailable(msg);
            set(&mut s, RANGE_ID, &range_id.to_string());
            s
        }
        Error::Timeout(_) => Status::deadline_exceeded(msg),
        Error::Busy(_) => Status::resource_exhausted(msg),
        Error::Indeterminate(_) => Status::unknown(msg),
        Error::Unavailable(_) | Error::ShuttingDown | Error::StaleTimestamp { .. } => {
            Status::unavailable(msg)
        }
        Error::WriteConflict { key, committed } => {
            let mut s = Status::aborted(msg);
            set(&mut s, TXN_KEY, &hex(&key));
            set(&mut s, TXN_TS, &committed.to_string());
            s
        }
        Error::KeyLocked {
            key,
            primary,
            start_ts,
            ttl_ms,
        } => {
            let mut s = Status::aborted(msg);
            set(&mut s, TXN_KEY, &hex(&key));
            set(&mut s, TXN_PRIMARY, &hex(&primary));
            set(&mut s, TXN_START, &start_ts.to_string());
            set(&mut s, TXN_TTL, &ttl_ms.to_string());
            s
        }
        Error::TxnAborted { key } | Error::TxnConflict { key, .. } => {
            let mut s = Status::aborted(msg);
            set(&mut s, TXN_KEY, &hex(&key));
            s
        }
        Error::TxnCommitted { key, commit_ts } => {
            let mut s = Status::aborted(msg);
            set(&mut s, TXN_KEY, &hex(&key));
            set(&mut s, TXN_TS, &commit_ts.to_string());
            s
        }
        Error::TxnTooOld(_) => Status::failed_precondition(msg),
        Error::Compacted { requested, oldest } => {
            let mut s = Status::out_of_range(msg);
            set(&mut s, TXN_TS, &requested.to_string());
            set(&mut s, COMPACTED_TS, &oldest.to_string());
            s
        }
        Error::Unauthenticated(_) => Status::unauthenticated(msg),
        Error::NoSpace(_) => Status::resource_exhausted(msg),
        Error::PermissionDenied(_) => Status::permission_denied(msg),
        Error::NotFound(_) => Status::not_found(msg),
        Error::AlreadyExists(_) => Status::already_exists(msg),
        Error::FailedPrecondition(_) => Status::failed_precondition(msg),
        Error::DataDir(_) | Error::Config(_) => Status::failed_precondition(msg),
        Error::Storage(_) | Error::Corruption(_) | Error::Raft(_) | Error::Internal(_) => {
            Status::internal(msg)
        }
    }
}

fn get<'a>(status: &'a Status, key: &str) -> Option<&'a str> {
    status.metadata().get(key).and_then(|v| v.to_str().ok())
}

/// The SDK's view of a failed call.
pub fn from_status(s: &Status) -> Error {
    let range_id = get(s, RANGE_ID).and_then(|v| v.parse().ok()).unwrap_or(0);
    match (s.code(), get(s, ERROR_KIND)) {
        (Code::Unavailable, Some("not-leader")) => Error::NotLeader {
            range_id,
            leader: get(s, LEADER_ID)
                .and_then(|v| v.parse().ok())
                .map(|node_id| LeaderHint {
                    node_id,
                    client_address: get(s, LEADER_ADDRESS).map(str::to_string),
                }),
            span: get_span(s),
        },
        (Code::Unavailable, Some("range-not-found")) => Error::RangeNotFound(range_id),
        (Code::Unavailable, Some("key-not-in-range")) => Error::KeyNotInRange {
            range_id,
            span: get_span(s),
        },
        (Code::Unavailable, Some("epoch-mismatch")) => Error::EpochMismatch {
            range_id,
            current: get_span(s),
            version: get(s, RANGE_VERSION)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        },
        (Code::Unknown, Some("indeterminate")) => {
            Error::Indeterminate(strip(s.message(), "outcome unknown: "))
        }
        (
            Code::Aborted,
            Some(
                kind @ ("write-conflict" | "locked" | "txn-aborted" | "txn-committed"
                | "txn-conflict"),
            ),
        ) => {
            let key = get(s, TXN_KEY).and_then(unhex).unwrap_or_default();
            let num = |k: &str| get(s, k).and_then(|v| v.parse().ok()).unwrap_or(0);
            match kind {
                "write-conflict" => Error::WriteConflict {
                    key,
                    committed: num(TXN_TS),
                },
                "locked" => Error::KeyLocked {
                    key,
                    primary: get(s, TXN_PRIMARY).and_then(unhex).unwrap_or_default(),
                    start_ts: num(TXN_START),
                    ttl_ms: num(TXN_TTL),
                },
                "txn-aborted" => Error::TxnAborted { key },
                "txn-committed" => Error::TxnCommitted {
                    key,
                    commit_ts: num(TXN_TS),
                },
                _ => Error::TxnConflict {
                    reason: conflict_reason(s.message(), &key),
                    key,
                },
            }
        }
        (Code::FailedPrecondition, Some("txn-too-old")) => {
            Error::TxnTooOld(strip(s.message(), "transaction too old: "))
        }
        (Code::OutOfRange, Some("compacted")) => Error::Compacted {
            requested: get(s, TXN_TS).and_then(|v| v.parse().ok()).unwrap_or(0),
            oldest: get(s, COMPACTED_TS)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        },
        (Code::InvalidArgument, _) => {
            Error::InvalidArgument(strip(s.message(), "invalid argument: "))
        }
        (Code::DeadlineExceeded, _) | (Code::Cancelled, _) => {
            Error::Timeout(s.message().to_string())
        }
        (Code::ResourceExhausted, Some("busy")) => Error::Busy(strip(s.message(), "node busy: ")),
        (Code::ResourceExhausted, Some("no-space")) => {
            Error::NoSpace(strip(s.message(), "disk full: "))
        }
        (Code::Unavailable, _)
        | (Code::Unknown, _)
        | (Code::Aborted, _)
        | (Code::ResourceExhausted, _) => Error::Unavailable(describe(s)),
        (Code::FailedPrecondition, Some("failed-precondition")) => {
            Error::FailedPrecondition(s.message().to_string())
        }
        (Code::FailedPrecondition, _) => Error::Config(s.message().to_string()),
        (Code::NotFound, _) => Error::NotFound(strip(s.message(), "not found: ")),
        (Code::AlreadyExists, _) => Error::AlreadyExists(strip(s.message(), "already exists: ")),
        (Code::Unauthenticated, _) => {
            Error::Unauthenticated(strip(s.message(), "not authenticated: "))
        }
        (Code::PermissionDenied, _) => {
            Error::PermissionDenied(strip(s.message(), "permission denied: "))
        }
        _ => Error::Internal(strip(&describe(s), "internal error: ")),
    }
}

/// The reason part of a `TxnConflict` message (see its Display).
fn conflict_reason(m: &str, key: &[u8]) -> String {
    let head = format!("transaction conflict on {}: ", String::from_utf8_lossy(key));
    let m = m.strip_prefix(&head).unwrap_or(m);
    m.strip_suffix("; run the transaction again")
        .unwrap_or(m)
        .to_string()
}

fn strip(m: &str, prefix: &str) -> String {
    m.strip_prefix(prefix).unwrap_or(m).to_string()
}

fn describe(s: &Status) -> String {
    let m = s.message();
    if m.is_empty() {
        format!("{:?}", s.code())
    } else {
        m.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_errors_roundtrip_with_hints() {
        let e = Error::NotLeader {
            range_id: 2,
            leader: Some(LeaderHint {
                node_id: 3,
                client_address: Some("127.0.0.1:8085".into()),
            }),
            span: Span::new(vec![0x11, b'a'], vec![0x11, 0xff, 0x00]),
        };
        let s = to_status(e.clone());
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(from_status(&s), e);
        assert!(from_status(&s).is_retryable());
        assert_eq!(
            from_status(&to_status(Error::RangeNotFound(7))),
            Error::RangeNotFound(7)
        );
        // Admission control's answer: retryable, and the SDK does not take
        // it for a wrong leader.
        let busy = Error::Busy("this node holds 64 MiB of client requests".into());
        let s = to_status(busy.clone());
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(from_status(&s), busy);
        assert!(busy.is_retryable() && !busy.is_ambiguous());
        let bad = from_status(&to_status(Error::InvalidArgument("key is empty".into())));
        assert_eq!(bad, Error::InvalidArgument("key is empty".into()));
        assert!(!bad.is_retryable());
        let moved = Error::EpochMismatch {
            range_id: 4,
            current: Span::new(vec![0x11, b'a'], vec![0x11, b'm']),
            version: 9,
        };
        assert_eq!(from_status(&to_status(moved.clone())), moved);
        assert!(!moved.is_ambiguous() && moved.is_retryable());
        assert_eq!(
            to_status(Error::Timeout("x".into())).code(),
            Code::DeadlineExceeded
        );
    }

    #[test]
    fn transaction_errors_roundtrip_with_their_fields() {
        for e in [
            Error::KeyLocked {
                key: b"/a".to_vec(),
                primary: b"/p".to_vec(),
                start_ts: 77,
                ttl_ms: 3000,
            },
            Error::WriteConflict {
                key: b"/a".to_vec(),
                committed: 9,
            },
            Error::TxnAborted {
                key: b"/a".to_vec(),
            },
            Error::TxnCommitted {
                key: b"/a".to_vec(),
                commit_ts: 12,
            },
            Error::TxnConflict {
                key: b"/acct/1".to_vec(),
                reason: "written at 5 after the transaction read it".into(),
            },
            Error::TxnTooOld("ran 601 s; txn_max_duration is 600 s".into()),
            Error::Compacted {
                requested: 5,
                oldest: 9,
            },
        ] {
            let s = to_status(e.clone());
            assert_eq!(from_status(&s), e, "{s:?}");
        }
        let c = Error::TxnConflict {
            key: b"/k".to_vec(),
            reason: "x".into(),
        };
        assert!(c.is_txn_retryable() && !c.is_retryable());
        assert!(!Error::TxnTooOld("x".into()).is_txn_retryable());
    }
}
