//! Transaction actions over MVCC records: each reads through a `Reader`
//! and returns the writes as a `WriteBatch` (no IO), or why the transaction
//! cannot go on (`TxnError`: deterministic, the same on every replica).
//! The outer `Result` is this node's failure (an engine read failed).
//!
//! The protocol (see the module docs of `mvcc`): prewrite locks every
//! written key; commit turns each lock into a write record at the commit
//! timestamp (the primary's commit is the transaction's commit point);
//! rollback deletes locks and leaves a rollback record at the start
//! timestamp so a late prewrite or commit of the transaction fails;
//! `validate` is the read check that makes the result serializable; a
//! transaction on one range commits in one step (`one_pc`).

use super::reader::Reader;
use super::records::{Lock, Write, WriteKind};
use super::Timestamp;
use crate::error::{Error, Result};
use crate::keys;
use crate::storage::WriteBatch;

/// A write a transaction makes (data keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    /// `lease`: the lease the key is attached to (0: none).
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: u64,
    },
    Delete {
        key: Vec<u8>,
    },
}

impl Mutation {
    pub fn key(&self) -> &[u8] {
        match self {
            Mutation::Put { key, .. } | Mutation::Delete { key } => key,
        }
    }

    fn kind_value(&self) -> (WriteKind, Vec<u8>, u64) {
        match self {
            Mutation::Put { value, lease, .. } => (WriteKind::Put, value.clone(), *lease),
            Mutation::Delete { .. } => (WriteKind::Delete, Vec::new(), 0),
        }
    }
}

/// Why a transaction cannot go on (every replica reaches the same answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnError {
    /// Another transaction holds a lock on the key.
    Locked { key: Vec<u8>, lock: Lock },
    /// A write committed at `committed` conflicts: at or above our start
    /// for a write, in (start, commit] for a read.
    Conflict { key: Vec<u8>, committed: Timestamp },
    /// The transaction was rolled back.
    Aborted { key: Vec<u8> },
    /// A key the transaction commits holds no lock of it any more.
    LockLost { key: Vec<u8> },
    /// A rollback of a transaction that committed (at `commit_ts`).
    Committed { key: Vec<u8>, commit_ts: Timestamp },
}

/// An action's answer: the writes, or why not; `Err` is a node failure.
pub type Outcome<T> = Result<std::result::Result<T, TxnError>>;

/// Where a transaction stands, as its primary key says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnStatus {
    /// Prewritten and alive (its lock has not expired).
    Locked {
        ttl_ms: u64,
    },
    Committed {
        commit_ts: Timestamp,
    },
    RolledBack,
}

fn write_version(
    wb: &mut WriteBatch,
    key: &[u8],
    at: Timestamp,
    kind: WriteKind,
    start: Timestamp,
    value: Vec<u8>,
) {
    put_record(
        wb,
        key,
        at,
        Write {
            kind: kind as i32,
            start_ts: start.0,
            value,
            ..Default::default()
        },
    );
}

/// The write record of a Put or Delete of `key` committed at `at`, with
/// the key's metadata carried on from its newest version below `at` (a
/// Put after a Put keeps the creation and counts one more version; after
/// a Delete or nothing, it creates the key).
fn versioned(
    r: &Reader,
    key: &[u8],
    at: Timestamp,
    kind: WriteKind,
    start: Timestamp,
    value: Vec<u8>,
    lease: u64,
) -> Result<Write> {
    let below = if kind != WriteKind::Put || at == Timestamp::ZERO {
        None
    } else {
        r.walk(key, Timestamp(at.0 - 1), |ts, old| {
            match old.write_kind()? {
                WriteKind::Rollback => Ok(None),
                _ => Ok(Some((ts, old))),
            }
        })?
    };
    versioned_over(below.as_ref(), at, kind, start, value, lease)
}

/// `versioned`, given the key's newest Put or Delete below `at`.
fn versioned_over(
    below: Option<&(Timestamp, Write)>,
    at: Timestamp,
    kind: WriteKind,
    start: Timestamp,
    value: Vec<u8>,
    lease: u64,
) -> Result<Write> {
    let mut w = Write {
        kind: kind as i32,
        start_ts: start.0,
        value,
        lease,
        ..Default::default()
    };
    if kind != WriteKind::Put {
        return Ok(w);
    }
    let (create, version) = match below {
        Some((ts, old)) if old.write_kind()? == WriteKind::Put => {
            let (create, version) = old.meta(*ts);
            (create, version + 1)
        }
        _ => (at, 1),
    };
    w.create_ts = create.0;
    w.version = version;
    Ok(w)
}

fn put_record(wb: &mut WriteBatch, key: &[u8], at: Timestamp, w: Write) {
    wb.put(keys::version_key(key, at.0), w.encode());
}

/// Locks every key of `muts` for the transaction started at `start`.
pub fn prewrite(
    r: &Reader,
    muts: &[Mutation],
    primary: &[u8],
    start: Timestamp,
    ttl_ms: u64,
) -> Outcome<WriteBatch> {
    let mut wb = WriteBatch::new();
    for m in muts {
        let key = m.key();
        if let Some(lock) = r.lock(key)? {
            if lock.start() == start {
                continue; // prewritten already (a retry)
            }
            return Ok(Err(TxnError::Locked {
                key: key.to_vec(),
                lock,
            }));
        }
        match r.by_txn(key, start)? {
            Some((_, w)) if w.write_kind()? == WriteKind::Rollback => {
                return Ok(Err(TxnError::Aborted { key: key.to_vec() }))
            }
            Some(_) => continue, // committed already: the retry comes late
            None => {}
        }
        if let Some(committed) = r.committed_after(key, Timestamp(start.0.saturating_sub(1)))? {
            return Ok(Err(TxnError::Conflict {
                key: key.to_vec(),
                committed,
            }));
        }
        let (kind, value, lease) = m.kind_value();
        let lock = Lock {
            start_ts: start.0,
            primary: primary.to_vec(),
            ttl_ms,
            kind: kind as i32,
            value,
            lease,
        };
        wb.put(keys::lock_key(key), lock.encode());
    }
    Ok(Ok(wb))
}

/// Commits the transaction's locks on `keys` at `commit`. `primary_of_many`:
/// these records are a two-phase transaction's primary, whose secondaries
/// may stay locked after it (GC keeps the records until
/// `secondaries_done`).
pub fn commit(
    r: &Reader,
    keys_: &[Vec<u8>],
    start: Timestamp,
    commit: Timestamp,
    primary_of_many: bool,
) -> Outcome<WriteBatch> {
    if commit <= start {
        return Err(Error::InvalidArgument(format!(
            "commit timestamp {commit} is not above the start {start}"
        )));
    }
    let mut wb = WriteBatch::new();
    for key in keys_ {
        match r.lock(key)? {
            Some(lock) if lock.start() == start => {
                let kind = WriteKind::try_from(lock.kind)
                    .map_err(|_| Error::Corruption(format!("lock of kind {}", lock.kind)))?;
                let mut w = versioned(r, key, commit, kind, start, lock.value, lock.lease)?;
                w.pending_secondaries = primary_of_many;
                put_record(&mut wb, key, commit, w);
                wb.delete(keys::lock_key(key));
            }
            _ => match r.by_txn(key, start)? {
                Some((_, w)) if w.write_kind()? == WriteKind::Rollback => {
                    return Ok(Err(TxnError::Aborted { key: key.clone() }))
                }
                Some(_) => {} // committed already (a retry)
                None => return Ok(Err(TxnError::LockLost { key: key.clone() })),
            },
        }
    }
    Ok(Ok(wb))
}

/// The coordinator committed every secondary of the transaction whose
/// primary is `primary`: its commit record may be collected like any other.
pub fn secondaries_done(r: &Reader, primary: &[u8], start: Timestamp) -> Result<WriteBatch> {
    let mut wb = WriteBatch::new();
    if let Some((at, mut w)) = r.by_txn(primary, start)? {
        if w.pending_secondaries {
            w.pending_secondaries = false;
            put_record(&mut wb, primary, at, w);
        }
    }
    Ok(wb)
}

/// Rolls the transaction back on `keys`: its locks go, a rollback record
/// stays at its start timestamp.
pub fn rollback(r: &Reader, keys_: &[Vec<u8>], start: Timestamp) -> Outcome<WriteBatch> {
    let mut wb = WriteBatch::new();
    for key in keys_ {
        match r.by_txn(key, start)? {
            Some((_, w)) if w.write_kind()? == WriteKind::Rollback => continue,
            Some((commit_ts, _)) => {
                return Ok(Err(TxnError::Committed {
                    key: key.clone(),
                    commit_ts,
                }))
            }
            None => {}
        }
        if r.lock(key)?.is_some_and(|l| l.start() == start) {
            wb.delete(keys::lock_key(key));
        }
        if !crate::chaos::canary(crate::chaos::Canary::RollbackWithoutTombstone) {
            write_version(&mut wb, key, start, WriteKind::Rollback, start, Vec::new());
        }
    }
    Ok(Ok(wb))
}

/// The status of the transaction started at `start`, from its primary key;
/// a lock expired at `now` is rolled back (the writes returned), and a
/// transaction that left nothing is marked rolled back so it cannot
/// prewrite later. "Nothing there" means "not committed" because GC never
/// collects a primary's commit record while secondaries may be locked
/// (`Write::pending_secondaries`; seeds 484, 492, 539, 820).
pub fn check_status(
    r: &Reader,
    primary: &[u8],
    start: Timestamp,
    now: Timestamp,
) -> Result<(TxnStatus, WriteBatch)> {
    if let Some(lock) = r.lock(primary)? {
        if lock.start() == start {
            if !lock.expired(now) {
                return Ok((
                    TxnStatus::Locked {
                        ttl_ms: lock.ttl_ms,
                    },
                    WriteBatch::new(),
                ));
            }
            let wb = rollback(r, &[primary.to_vec()], start)?.map_err(|e| {
                Error::Internal(format!("rolling back an expired lock failed: {e:?}"))
            })?;
            return Ok((TxnStatus::RolledBack, wb));
        }
    }
    match r.by_txn(primary, start)? {
        Some((_, w)) if w.write_kind()? == WriteKind::Rollback => {
            Ok((TxnStatus::RolledBack, WriteBatch::new()))
        }
        Some((commit_ts, _)) => Ok((TxnStatus::Committed { commit_ts }, WriteBatch::new())),
        None => {
            let mut wb = WriteBatch::new();
            if crate::chaos::canary(crate::chaos::Canary::RollbackWithoutTombstone) {
                return Ok((TxnStatus::RolledBack, wb));
            }
            write_version(
                &mut wb,
                primary,
                start,
                WriteKind::Rollback,
                start,
                Vec::new(),
            );
            Ok((TxnStatus::RolledBack, wb))
        }
    }
}

/// Resolves a lock left by a transaction whose fate is known.
pub fn resolve(r: &Reader, key: &[u8], start: Timestamp, fate: &TxnStatus) -> Outcome<WriteBatch> {
    match fate {
        TxnStatus::Committed { commit_ts } => commit(r, &[key.to_vec()], start, *commit_ts, false),
        TxnStatus::RolledBack => rollback(r, &[key.to_vec()], start),
        TxnStatus::Locked { .. } => Err(Error::InvalidArgument(
            "a lock of a live transaction is not resolved".into(),
        )),
    }
}

/// Renews the transaction's primary lock to live `ttl_ms` from its start.
pub fn heartbeat(r: &Reader, primary: &[u8], start: Timestamp, ttl_ms: u64) -> Outcome<WriteBatch> {
    let mut wb = WriteBatch::new();
    match r.lock(primary)? {
        Some(mut lock) if lock.start() == start => {
            if ttl_ms > lock.ttl_ms {
                lock.ttl_ms = ttl_ms;
                wb.put(keys::lock_key(primary), lock.encode());
            }
            Ok(Ok(wb))
        }
        _ => Ok(Err(TxnError::LockLost {
            key: primary.to_vec(),
        })),
    }
}

/// A committed write in `(after, upto]`, if any.
fn committed_between(
    r: &Reader,
    key: &[u8],
    after: Timestamp,
    upto: Timestamp,
) -> Result<Option<Timestamp>> {
    let mut found = None;
    let mut cursor = upto;
    // Versions at or below `upto`, newest first, until one at or below `after`.
    loop {
        let Some((ts, w)) = r.newest_at_or_below(key, cursor)? else {
            return Ok(found);
        };
        if ts <= after {
            return Ok(found);
        }
        if w.write_kind()? != WriteKind::Rollback {
            found = Some(ts);
            return Ok(found);
        }
        if ts == Timestamp::ZERO {
            return Ok(found);
        }
        cursor = Timestamp(ts.0 - 1);
    }
}

/// The read check: nothing the transaction read (keys, and every key of
/// the spans it scanned) changed in `(start, commit]`, and no other
/// transaction holds a lock there.
pub fn validate(
    r: &Reader,
    reads: &[Vec<u8>],
    spans: &[(Vec<u8>, Vec<u8>)],
    start: Timestamp,
    commit: Timestamp,
) -> Outcome<()> {
    if crate::chaos::canary(crate::chaos::Canary::SkipReadValidation) {
        return Ok(Ok(()));
    }
    let mut all: Vec<Vec<u8>> = reads.to_vec();
    for (s, e) in spans {
        all.extend(r.keys_in(s, e, false)?);
    }
    for key in &all {
        if let Some(lock) = r.lock(key)? {
            if lock.start() != start {
                return Ok(Err(TxnError::Locked {
                    key: key.clone(),
                    lock,
                }));
            }
        }
        if let Some(committed) = committed_between(r, key, start, commit)? {
            return Ok(Err(TxnError::Conflict {
                key: key.clone(),
                committed,
            }));
        }
    }
    Ok(Ok(()))
}

/// A transaction on one range in one step: validate its reads, check its
/// writes like a prewrite would, and write every version at `commit`.
pub fn one_pc(
    r: &Reader,
    muts: &[Mutation],
    reads: &[Vec<u8>],
    spans: &[(Vec<u8>, Vec<u8>)],
    start: Timestamp,
    commit: Timestamp,
) -> Outcome<WriteBatch> {
    if commit < start {
        return Err(Error::InvalidArgument(format!(
            "commit timestamp {commit} is below the start {start}"
        )));
    }
    if let Err(e) = validate(r, reads, spans, start, commit)? {
        return Ok(Err(e));
    }
    let mut wb = WriteBatch::new();
    for m in muts {
        let key = m.key();
        // One read answers the lock check, the conflict check and the
        // metadata: the newest Put or Delete is the one below `commit`
        // once it is known to be below `start`.
        let head = r.head(key)?;
        if let Some(lock) = head.lock {
            return Ok(Err(TxnError::Locked {
                key: key.to_vec(),
                lock,
            }));
        }
        if let Some((committed, _)) = head.newest {
            if committed > Timestamp(start.0.saturating_sub(1)) {
                return Ok(Err(TxnError::Conflict {
                    key: key.to_vec(),
                    committed,
                }));
            }
        }
        // A transaction whose commit's reply was lost is settled by marking
        // it rolled back on its first key (`check_status`): it must not
        // apply afterwards.
        if start < commit && m.key() == muts[0].key() {
            if let Some((_, w)) = r.by_txn(key, start)? {
                if w.write_kind()? == WriteKind::Rollback {
                    return Ok(Err(TxnError::Aborted { key: key.to_vec() }));
                }
            }
        }
        let (kind, value, lease) = m.kind_value();
        let w = versioned_over(head.newest.as_ref(), commit, kind, start, value, lease)?;
        put_record(&mut wb, key, commit, w);
    }
    Ok(Ok(wb))
}
