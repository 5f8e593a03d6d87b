//! The one error type of RangeDB.
//!
//! Routing errors carry hints (`NotLeader { leader }`) so callers can retry
//! without guessing; `is_retryable()` tells the client SDK which errors are
//! worth another attempt, and `is_deterministic()` tells the state machine
//! which errors are an answer (every replica reaches it) rather than this
//! node's failure. The server maps each variant to a precise gRPC
//! status code (see `server::status`), and the SDK maps statuses back.

use std::fmt;

/// Convenience alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A range's key span `[start, end)`: data keys inside the server (see
/// `keys.rs`), route keys (`api::route`) once it left the server; both
/// empty when unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Span {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
}

impl Span {
    pub fn new(start: Vec<u8>, end: Vec<u8>) -> Span {
        Span { start, end }
    }
    pub fn is_known(&self) -> bool {
        !self.end.is_empty()
    }
    pub fn contains(&self, key: &[u8]) -> bool {
        self.is_known() && key >= self.start.as_slice() && key < self.end.as_slice()
    }
    /// Whether two known spans share a key.
    pub fn overlaps(&self, other: &Span) -> bool {
        overlaps(&self.start, &self.end, &other.start, &other.end)
    }
}

/// Whether `[a0, a1)` and `[b0, b1)` share a key (empty spans share none).
pub fn overlaps(a0: &[u8], a1: &[u8], b0: &[u8], b1: &[u8]) -> bool {
    a0 < a1 && b0 < b1 && a0 < b1 && b0 < a1
}

/// Where the current leader of a range can be reached, when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderHint {
    pub node_id: u64,
    /// The leader's client (Kv) address, if this node has learned it.
    pub client_address: Option<String>,
}

impl fmt::Display for LeaderHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.client_address {
            Some(a) => write!(f, "node {} at {}", self.node_id, a),
            None => write!(f, "node {}", self.node_id),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Bad input from a user; nothing was written.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// This replica is not the leader of the range.
    #[error("not leader for range {range_id}{}", .leader.as_ref().map(|l| format!(" (leader is {l})")).unwrap_or_default())]
    NotLeader {
        range_id: u64,
        leader: Option<LeaderHint>,
        span: Span,
    },
    /// This node holds no replica of the range (yet).
    #[error("range {0} not found on this node")]
    RangeNotFound(u64),
    /// A request's keys are not (or no longer, after a split) in one range.
    #[error("key not in range {range_id}: the range changed (split); retry with fresh routing")]
    KeyNotInRange { range_id: u64, span: Span },
    /// The range changed under the request (a split or merge applied
    /// between routing and apply, or the range is frozen for a merge):
    /// nothing was written; retry with `current` as the range's span.
    #[error("range {range_id} changed (epoch version {version}); retry with fresh routing")]
    EpochMismatch {
        range_id: u64,
        current: Span,
        version: u64,
    },
    /// The request did not finish in time; a write may or may not have happened.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A write's fate is unknown (e.g. the node stopped while it was in
    /// flight): it may or may not have been applied.
    #[error("outcome unknown: {0}")]
    Indeterminate(String),
    /// The cluster or node cannot serve the request right now; retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// This node holds as many client requests as it may (admission
    /// control); nothing was done. Retry shortly.
    #[error("node busy: {0}")]
    Busy(String),
    /// The storage engine failed.
    #[error("storage: {0}")]
    Storage(String),
    /// The data directory is unusable (another cluster's, damaged, locked).
    #[error("{0}")]
    DataDir(String),
    /// Bad configuration or flags.
    #[error("configuration: {0}")]
    Config(String),
    /// Stored bytes did not decode: corruption or a bug.
    #[error("corrupt data: {0}")]
    Corruption(String),
    /// A Raft library error.
    #[error("raft: {0}")]
    Raft(String),
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
    /// A timestamped write reached a range leader that needs a newer
    /// timestamp: it served a read at or above it, or it began its term
    /// (`term`) after the timestamp was taken. Nothing was written; the
    /// server retries with a fresh timestamp.
    #[error("range {range_id} needs a newer timestamp (leader term {term}); retry")]
    StaleTimestamp { range_id: u64, term: u64 },
    /// A write conflicts with one committed at `committed` (at or above the
    /// writer's timestamp); nothing was written.
    #[error("write conflict on {}: written at {committed}", String::from_utf8_lossy(.key))]
    WriteConflict { key: Vec<u8>, committed: u64 },
    /// The transaction was rolled back (by a resolver, or it never locked
    /// the key): it cannot commit. User-visible key.
    #[error("transaction aborted: it was rolled back (seen at {})", String::from_utf8_lossy(.key))]
    TxnAborted { key: Vec<u8> },
    /// A rollback found the transaction committed at `commit_ts`.
    #[error("transaction committed at {commit_ts} ({})", String::from_utf8_lossy(.key))]
    TxnCommitted { key: Vec<u8>, commit_ts: u64 },
    /// Another transaction (started at `start_ts`, primary key `primary`)
    /// holds a lock on the key; it must be resolved first.
    #[error("{} is locked by the transaction started at {start_ts}", String::from_utf8_lossy(.key))]
    KeyLocked {
        /// User-visible keys.
        key: Vec<u8>,
        primary: Vec<u8>,
        start_ts: u64,
        ttl_ms: u64,
    },
    /// A transaction met a conflicting one (a newer committed write, a
    /// lock held, a read that changed before it could commit): nothing of
    /// it was committed; running it again may succeed. User-visible key.
    #[error("transaction conflict on {}: {reason}; run the transaction again", String::from_utf8_lossy(.key))]
    TxnConflict { key: Vec<u8>, reason: String },
    /// The transaction ran longer than `txn_max_duration`, or its snapshot
    /// is older than the GC horizon: nothing of it was committed.
    #[error("transaction too old: {0}")]
    TxnTooOld(String),
    /// A watch (or a read) asked for a revision older than the GC horizon:
    /// the versions between it and now are gone. `oldest`: the oldest
    /// revision still available there.
    #[error("revision {requested} is compacted: the oldest available is {oldest}")]
    Compacted { requested: u64, oldest: u64 },
    /// The node's disk is (nearly) full: it refuses new writes until space
    /// returns; reads keep working. Nothing was written.
    #[error("disk full: {0}")]
    NoSpace(String),
    /// The client could not prove who it is (no certificate, another
    /// cluster's, plaintext against TLS); nothing was done.
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    /// The caller is known but may not do this; nothing was done.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A named thing (a user, a role) does not exist; nothing was done.
    #[error("not found: {0}")]
    NotFound(String),
    /// A named thing (a user, a role) exists already; nothing was done.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The request is valid but the system is not in a state to do it
    /// (e.g. enabling authentication without TLS); nothing was done.
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Whether a client may retry the request (possibly on another node).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::NotLeader { .. }
                | Error::RangeNotFound(_)
                | Error::KeyNotInRange { .. }
                | Error::EpochMismatch { .. }
                | Error::Timeout(_)
                | Error::Indeterminate(_)
                | Error::Unavailable(_)
                | Error::Busy(_)
                | Error::ShuttingDown
                | Error::StaleTimestamp { .. }
        )
    }
}

impl Error {
    /// Whether the error is part of the state machine's answer to a
    /// replicated command: decided from the command and the replicated
    /// state alone, so every replica reaches it, and the entry counts as
    /// applied with no effects. Every other error while applying (an engine
    /// or IO failure, corruption, a bug) is this node's failure: the node
    /// stops and never skips the entry (see `range::state_machine`).
    pub fn is_deterministic(&self) -> bool {
        matches!(
            self,
            Error::InvalidArgument(_)
                | Error::KeyNotInRange { .. }
                | Error::EpochMismatch { .. }
                | Error::WriteConflict { .. }
                | Error::KeyLocked { .. }
                | Error::TxnAborted { .. }
                | Error::TxnCommitted { .. }
                | Error::TxnTooOld(_)
        )
    }

    /// Whether a failed write may nevertheless have been applied. Such a
    /// write must not be retried blindly: a second copy could land after
    /// other clients' writes.
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, Error::Timeout(_) | Error::Indeterminate(_))
    }

    /// Whether running the whole transaction again may succeed (what
    /// `Client::transact` retries).
    pub fn is_txn_retryable(&self) -> bool {
        matches!(self, Error::TxnConflict { .. })
    }
}

#[cfg(feature = "server")]
impl From<raft::Error> for Error {
    fn from(e: raft::Error) -> Self {
        Error::Raft(e.to_string())
    }
}

impl From<prost::DecodeError> for Error {
    fn from(e: prost::DecodeError) -> Self {
        Error::Corruption(e.to_string())
    }
}

#[cfg(feature = "server")]
impl From<protobuf::ProtobufError> for Error {
    fn from(e: protobuf::ProtobufError) -> Self {
        Error::Corruption(e.to_string())
    }
}
