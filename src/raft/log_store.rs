//! `LogStore`: one replica's Raft log, hard state and apply state, kept in the
//! shared engine under the range-local keys of `keys.rs`.
//!
//! Invariants:
//! - `first_index() == truncated_index + 1`; entries `[first, last]` exist in the engine.
//! - The apply state (applied index/term, conf state) is written in the same
//!   batch as the data it applies, so a restart neither skips nor repeats an entry.
//! - Mutations only stage into the caller's `WriteBatch` and update the cached
//!   state; raft-rs reads entries through `Storage` only after that batch is
//!   written (the caller calls `advance` after the write).

use std::sync::{Arc, Mutex};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

use super::snapshot::{SnapshotData, SnapshotJob, SnapshotJobs};
use crate::error::{Error, Result};
use crate::keys;
use crate::storage::{Engine, WriteBatch};

/// What a replica has applied; persisted atomically with the applied data.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ApplyState {
    #[prost(uint64, tag = "1")]
    pub applied_index: u64,
    #[prost(uint64, tag = "2")]
    pub applied_term: u64,
    /// Entries up to and including this index are compacted away.
    #[prost(uint64, tag = "3")]
    pub truncated_index: u64,
    #[prost(uint64, tag = "4")]
    pub truncated_term: u64,
    /// The applied `eraftpb::ConfState`, protobuf-encoded.
    #[prost(bytes = "vec", tag = "5")]
    pub conf_state: Vec<u8>,
    /// A hash chain over every applied entry (index, term, data): replicas at
    /// the same applied index must agree on it, whatever path they took.
    #[prost(uint64, tag = "6")]
    pub apply_hash: u64,
}

/// Folds one applied entry into the apply hash chain (FNV-1a, 64 bit).
pub fn chain_hash(prev: u64, index: u64, term: u64, data: &[u8]) -> u64 {
    let mut h = prev ^ 0xcbf2_9ce4_8422_2325;
    for b in index
        .to_be_bytes()
        .iter()
        .chain(term.to_be_bytes().iter())
        .chain(data.iter())
    {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Log compactions of at most this many entries delete them one by one.
const COMPACT_POINT_DELETES: u64 = 4096;

pub struct LogStore {
    engine: Arc<dyn Engine>,
    /// Snapshots asked for by raft-rs are built off the Store task.
    snapshots: Mutex<SnapshotState>,
    jobs: SnapshotJobs,
    range_id: u64,
    /// Data span `[start, end)` this group replicates.
    span: (Vec<u8>, Vec<u8>),
    /// Local keys (e.g. the range descriptor) carried inside snapshots.
    extra_keys: Vec<Vec<u8>>,
    hard_state: HardState,
    apply: ApplyState,
    conf_state: ConfState,
    last_index: u64,
}

/// A snapshot being built for this range, or built and not yet taken.
#[derive(Default)]
struct SnapshotState {
    /// A job is queued or being built.
    building: bool,
    built: Option<Snapshot>,
}

fn raft_err(e: Error) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}

impl LogStore {
    /// Loads a replica's state from the engine; a replica never seen before
    /// starts empty (uninitialized) and waits for a snapshot.
    pub fn open(
        engine: Arc<dyn Engine>,
        range_id: u64,
        span: (Vec<u8>, Vec<u8>),
        extra_keys: Vec<Vec<u8>>,
        jobs: SnapshotJobs,
    ) -> Result<Self> {
        let mut hard_state = match engine.get(&keys::hard_state_key(range_id))? {
            Some(b) => HardState::parse_from_bytes(&b)?,
            None => HardState::default(),
        };
        let apply = match engine.get(&keys::apply_state_key(range_id))? {
            Some(b) => <ApplyState as prost::Message>::decode(b.as_slice())?,
            None => ApplyState::default(),
        };
        let mut apply = apply;
        if crate::chaos::canary(crate::chaos::Canary::ApplyTwiceAfterRestart)
            && apply.applied_index > apply.truncated_index
        {
            apply.applied_index -= 1;
        }
        let conf_state = ConfState::parse_from_bytes(&apply.conf_state)?;
        let last = engine.scan(
            &keys::log_key(range_id, 0),
            &keys::log_key(range_id, u64::MAX),
            1,
            true,
        )?;
        let last_index = match last.first() {
            Some((k, _)) => keys::log_index(range_id, k)
                .ok_or_else(|| Error::Corruption(format!("bad log key in range {range_id}")))?,
            None => apply.truncated_index,
        };
        if last_index < apply.truncated_index
            || apply.applied_index > last_index.max(apply.truncated_index)
        {
            return Err(Error::Corruption(format!(
                "range {range_id}: log ends at {last_index} but truncated at {} and applied at {}",
                apply.truncated_index, apply.applied_index
            )));
        }
        // What is applied is committed, in a term at least as new: a hard
        // state persisted by an empty replica (commit 0) after the split
        // that bootstrapped the range in the same batch would otherwise
        // read as "applied > committed" (seed 98). Raising commit and term
        // is always safe; the vote of a lower term is kept, as before.
        if hard_state.commit < apply.applied_index {
            hard_state.commit = apply.applied_index;
        }
        if hard_state.term < apply.applied_term {
            hard_state.term = apply.applied_term;
        }
        Ok(LogStore {
            engine,
            snapshots: Mutex::default(),
            jobs,
            range_id,
            span,
            extra_keys,
            hard_state,
            apply,
            conf_state,
            last_index,
        })
    }

    /// Stages the initial state of a brand-new range whose voters are `voters`:
    /// an empty log truncated at `INIT_INDEX`.
    pub fn bootstrap(wb: &mut WriteBatch, range_id: u64, voters: Vec<u64>) {
        Self::bootstrap_keeping_vote(wb, range_id, voters, Vec::new(), None)
    }

    /// Like `bootstrap`, but keeps a hard state this node already persisted
    /// for the range (an empty replica that voted before the split that
    /// creates it was applied here): a term and vote must never go back.
    pub fn bootstrap_keeping_vote(
        wb: &mut WriteBatch,
        range_id: u64,
        voters: Vec<u64>,
        learners: Vec<u64>,
        existing: Option<&HardState>,
    ) {
        let mut hs = HardState {
            term: super::INIT_TERM,
            commit: super::INIT_INDEX,
            ..Default::default()
        };
        if let Some(e) = existing.filter(|e| e.term > super::INIT_TERM) {
            hs.term = e.term;
            hs.vote = e.vote;
        }
        let cs = ConfState {
            voters,
            learners,
            ..Default::default()
        };
        let apply = ApplyState {
            applied_index: super::INIT_INDEX,
            applied_term: super::INIT_TERM,
            truncated_index: super::INIT_INDEX,
            truncated_term: super::INIT_TERM,
            conf_state: cs.write_to_bytes().unwrap_or_default(),
            apply_hash: 0,
        };
        wb.put(
            keys::hard_state_key(range_id),
            hs.write_to_bytes().unwrap_or_default(),
        );
        wb.put(
            keys::apply_state_key(range_id),
            prost::Message::encode_to_vec(&apply),
        );
    }

    pub fn range_id(&self) -> u64 {
        self.range_id
    }
    pub fn is_initialized(&self) -> bool {
        !self.conf_state.voters.is_empty()
    }
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }
    pub fn applied_index(&self) -> u64 {
        self.apply.applied_index
    }
    pub fn apply_hash(&self) -> u64 {
        self.apply.apply_hash
    }
    pub fn truncated_index(&self) -> u64 {
        self.apply.truncated_index
    }
    pub fn last_index_cached(&self) -> u64 {
        self.last_index
    }
    pub fn span(&self) -> &(Vec<u8>, Vec<u8>) {
        &self.span
    }

    /// Narrows the span (after a split).
    pub fn set_span(&mut self, span: (Vec<u8>, Vec<u8>)) {
        self.span = span;
    }

    fn put_apply_state(&self, wb: &mut WriteBatch) {
        wb.put(
            keys::apply_state_key(self.range_id),
            prost::Message::encode_to_vec(&self.apply),
        );
    }

    /// Appends entries, replacing any conflicting tail.
    pub fn append(&mut self, entries: &[Entry], wb: &mut WriteBatch) -> Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        assert!(
            first.index > self.apply.truncated_index,
            "append below the truncated index"
        );
        let new_last = entries[entries.len() - 1].index;
        if new_last < self.last_index {
            wb.delete_range(
                keys::log_key(self.range_id, new_last + 1),
                keys::log_key(self.range_id, self.last_index + 1),
            );
        }
        for e in entries {
            wb.put(keys::log_key(self.range_id, e.index), e.write_to_bytes()?);
        }
        self.last_index = new_last;
        Ok(())
    }

    pub fn set_hard_state(&mut self, hs: &HardState, wb: &mut WriteBatch) -> Result<()> {
        self.hard_state = hs.clone();
        let mut persisted = hs.clone();
        if crate::chaos::canary(crate::chaos::Canary::ForgetVote) {
            persisted.vote = 0;
        }
        wb.put(
            keys::hard_state_key(self.range_id),
            persisted.write_to_bytes()?,
        );
        Ok(())
    }

    pub fn set_commit(&mut self, commit: u64, wb: &mut WriteBatch) -> Result<()> {
        let mut hs = self.hard_state.clone();
        hs.commit = commit;
        self.set_hard_state(&hs, wb)
    }

    /// Records that entry `index` (of `term`, carrying `data`) is applied; the
    /// caller puts the entry's effects into the same batch. Returns the new
    /// apply hash.
    pub fn set_applied(&mut self, index: u64, term: u64, data: &[u8], wb: &mut WriteBatch) -> u64 {
        assert_eq!(
            index,
            self.apply.applied_index + 1,
            "range {}: entries must apply exactly once, in order",
            self.range_id
        );
        self.apply.applied_index = index;
        self.apply.applied_term = term;
        self.apply.apply_hash = chain_hash(self.apply.apply_hash, index, term, data);
        self.put_apply_state(wb);
        self.apply.apply_hash
    }

    pub fn set_conf_state(&mut self, cs: ConfState, wb: &mut WriteBatch) -> Result<()> {
        self.apply.conf_state = cs.write_to_bytes()?;
        self.conf_state = cs;
        self.put_apply_state(wb);
        Ok(())
    }

    /// Replaces this replica's data and log with a snapshot from the leader.
    pub fn apply_snapshot(&mut self, snap: &Snapshot, wb: &mut WriteBatch) -> Result<()> {
        let meta = snap.get_metadata();
        let data = <SnapshotData as prost::Message>::decode(snap.get_data())?;
        let data_hash = data.apply_hash;
        // Clear what this replica held before, then take the snapshot's span.
        let keep = crate::chaos::canary(crate::chaos::Canary::SnapshotKeepsDeletedKeys);
        if !keep {
            wb.delete_range(self.span.0.clone(), self.span.1.clone());
        }
        self.span = (data.start.clone(), data.end.clone());
        if !keep {
            wb.delete_range(self.span.0.clone(), self.span.1.clone());
        }
        for k in &self.extra_keys {
            wb.delete(k.clone());
        }
        for kv in data.pairs {
            let in_span = kv.key >= self.span.0 && kv.key < self.span.1;
            if !in_span && !self.extra_keys.contains(&kv.key) {
                return Err(Error::Corruption(format!(
                    "snapshot key outside range {}",
                    self.range_id
                )));
            }
            wb.put(kv.key, kv.value);
        }
        let (l0, l1) = keys::log_bounds(self.range_id);
        wb.delete_range(l0, l1);
        self.apply = ApplyState {
            applied_index: meta.index,
            applied_term: meta.term,
            truncated_index: meta.index,
            truncated_term: meta.term,
            conf_state: meta.get_conf_state().write_to_bytes()?,
            apply_hash: data_hash,
        };
        self.conf_state = meta.get_conf_state().clone();
        self.put_apply_state(wb);
        self.last_index = meta.index;
        let mut hs = self.hard_state.clone();
        hs.commit = hs.commit.max(meta.index);
        hs.term = hs.term.max(meta.term);
        self.set_hard_state(&hs, wb)
    }

    /// Drops log entries up to and including `to` (which must be applied):
    /// with point deletes up to COMPACT_POINT_DELETES entries, else one
    /// range delete.
    pub fn compact(&mut self, to: u64, wb: &mut WriteBatch) -> Result<()> {
        if to <= self.apply.truncated_index {
            return Ok(());
        }
        assert!(
            to <= self.apply.applied_index,
            "compacting unapplied entries"
        );
        let term = raft::Storage::term(self, to)?;
        let from = self.apply.truncated_index + 1;
        if to - from < COMPACT_POINT_DELETES {
            // Point deletes, not a range tombstone: every read and iterator
            // of the engine consults the memtable's range tombstones, and a
            // busy range compacts every `log_compact_entries` entries, so
            // range deletes here would pile up under every read.
            for i in from..=to {
                wb.delete(keys::log_key(self.range_id, i));
            }
        } else {
            wb.delete_range(
                keys::log_key(self.range_id, 0),
                keys::log_key(self.range_id, to + 1),
            );
        }
        self.apply.truncated_index = to;
        self.apply.truncated_term = term;
        self.put_apply_state(wb);
        Ok(())
    }

    fn read_entry(&self, index: u64) -> Result<Entry> {
        let b = self
            .engine
            .get(&keys::log_key(self.range_id, index))?
            .ok_or_else(|| {
                Error::Corruption(format!(
                    "range {}: log entry {index} missing",
                    self.range_id
                ))
            })?;
        Ok(Entry::parse_from_bytes(&b)?)
    }
}

impl raft::Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _ctx: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.apply.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max = max_size.into();
        let pairs = self
            .engine
            .scan(
                &keys::log_key(self.range_id, low),
                &keys::log_key(self.range_id, high),
                (high - low) as usize,
                false,
            )
            .map_err(raft_err)?;
        let mut out = Vec::with_capacity(pairs.len());
        let mut size = 0u64;
        for (i, (_, v)) in pairs.iter().enumerate() {
            let e = Entry::parse_from_bytes(v).map_err(|e| raft_err(e.into()))?;
            if e.index != low + i as u64 {
                return Err(raft_err(Error::Corruption(format!(
                    "range {}: hole in the log at {}",
                    self.range_id,
                    low + i as u64
                ))));
            }
            size += e.compute_size() as u64;
            if let Some(m) = max {
                if !out.is_empty() && size > m {
                    break;
                }
            }
            out.push(e);
        }
        if out.len() as u64 != high - low && max.is_none() {
            return Err(raft_err(Error::Corruption(format!(
                "range {}: log entries missing in [{low},{high})",
                self.range_id
            ))));
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.apply.truncated_index {
            return Ok(self.apply.truncated_term);
        }
        if idx < self.apply.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(self.read_entry(idx).map_err(raft_err)?.term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.apply.truncated_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
    }

    /// A built snapshot at or past `request_index`, or `SnapshotTemporarily-
    /// Unavailable` after queueing a job to build one (see `snapshot.rs`).
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let mut st = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = st.built.take() {
            let index = s.get_metadata().index;
            // One use each, and never one the log has moved far past.
            if index >= request_index && index >= self.apply.truncated_index {
                return Ok(s);
            }
        }
        if !st.building {
            let engine = self.engine.snapshot().map_err(raft_err)?;
            self.jobs.push(SnapshotJob {
                range_id: self.range_id,
                engine,
                span: self.span.clone(),
                extra_keys: self.extra_keys.clone(),
            });
            st.building = true;
        }
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable,
        ))
    }
}

impl LogStore {
    /// The snapshot a job of this range built (or `None`: it failed and may
    /// be asked for again).
    pub fn snapshot_built(&mut self, snap: Option<Snapshot>) {
        let st = self.snapshots.get_mut().unwrap_or_else(|e| e.into_inner());
        st.building = false;
        st.built = snap;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemEngine;
    use raft::Storage as _;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8; 3].into(),
            ..Default::default()
        }
    }

    fn open(engine: &MemEngine) -> LogStore {
        LogStore::open(
            Arc::new(engine.clone()),
            1,
            (vec![0x11], vec![0x12]),
            vec![],
            SnapshotJobs::default(),
        )
        .unwrap()
    }

    /// Asks for a snapshot, builds the queued job, asks again.
    fn snapshot_of(s: &mut LogStore) -> Snapshot {
        assert!(matches!(
            s.snapshot(0, 2),
            Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable
            ))
        ));
        let jobs = s.jobs.take();
        assert_eq!(jobs.len(), 1, "one job per request");
        assert!(
            s.snapshot(0, 2).is_err() && s.jobs.take().is_empty(),
            "built once"
        );
        let built = super::super::snapshot::build(&jobs[0]).unwrap();
        s.snapshot_built(Some(built));
        s.snapshot(0, 2).unwrap()
    }

    #[test]
    fn append_truncate_compact_and_reopen() {
        let engine = MemEngine::new();
        let mut wb = WriteBatch::new();
        LogStore::bootstrap(&mut wb, 1, vec![1, 2, 3]);
        engine.write(&wb, true).unwrap();
        let mut s = open(&engine);
        assert!(s.is_initialized());
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (6, 5));
        assert_eq!(s.term(5).unwrap(), 5);

        let mut wb = WriteBatch::new();
        s.append(&[entry(6, 5), entry(7, 5), entry(8, 5)], &mut wb)
            .unwrap();
        engine.write(&wb, true).unwrap();
        // A new leader overwrites the tail from 7.
        let mut wb = WriteBatch::new();
        s.append(&[entry(7, 6)], &mut wb).unwrap();
        engine.write(&wb, true).unwrap();
        assert_eq!(s.last_index().unwrap(), 7);
        assert_eq!(s.term(7).unwrap(), 6);
        assert!(s.term(8).is_err());
        let ents = s
            .entries(6, 8, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(
            ents.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(),
            vec![(6, 5), (7, 6)]
        );

        let mut wb = WriteBatch::new();
        s.set_applied(6, 5, b"x", &mut wb);
        s.compact(6, &mut wb).unwrap();
        engine.write(&wb, true).unwrap();
        assert_eq!(s.first_index().unwrap(), 7);
        assert!(matches!(
            s.entries(6, 7, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));

        let s2 = open(&engine);
        assert_eq!(
            (
                s2.first_index().unwrap(),
                s2.last_index().unwrap(),
                s2.applied_index()
            ),
            (7, 7, 6)
        );
        assert_eq!(s2.term(6).unwrap(), 5);
    }

    #[test]
    fn snapshot_roundtrip_replaces_data() {
        let leader = MemEngine::new();
        let mut wb = WriteBatch::new();
        LogStore::bootstrap(&mut wb, 1, vec![1, 2]);
        wb.put(vec![0x11, b'a'], "1");
        wb.put(vec![0x10, b'x'], "outside span");
        leader.write(&wb, true).unwrap();
        let snap = snapshot_of(&mut open(&leader));
        assert_eq!(snap.get_metadata().index, 5);

        let follower = MemEngine::new();
        let mut wb = WriteBatch::new();
        wb.put(vec![0x11, b'z'], "stale");
        follower.write(&wb, true).unwrap();
        let mut f = open(&follower);
        assert!(!f.is_initialized());
        let mut wb = WriteBatch::new();
        f.apply_snapshot(&snap, &mut wb).unwrap();
        follower.write(&wb, true).unwrap();
        assert_eq!(follower.get(&[0x11, b'a']).unwrap(), Some(b"1".to_vec()));
        assert_eq!(follower.get(&[0x11, b'z']).unwrap(), None);
        assert_eq!(follower.get(&[0x10, b'x']).unwrap(), None);
        let f2 = open(&follower);
        assert!(f2.is_initialized());
        assert_eq!(
            (
                f2.applied_index(),
                f2.last_index().unwrap(),
                f2.hard_state().commit
            ),
            (5, 5, 5)
        );
    }
}
