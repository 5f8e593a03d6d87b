//! Raft snapshots of one range, built off the Store task.
//!
//! When raft-rs asks a `LogStore` for a snapshot (a follower is too far
//! behind for the log), the store takes an engine snapshot — cheap for
//! RocksDB — together with the span it replicates at that moment, queues a
//! `SnapshotJob`, and answers `SnapshotTemporarilyUnavailable`. The node
//! builds the job (`build`: a scan of the whole range and its encoding) on
//! the blocking pool and hands the result back (`LogStore::snapshot_built`);
//! raft-rs asks again at the follower's next heartbeat response and gets it.
//!
//! Consistency: the engine snapshot holds the apply state and the data it
//! covers atomically (one batch writes both), and the span is the one in
//! memory when the engine snapshot was taken — between Ready rounds, or in
//! the second phase of a round after its first batch landed, when memory
//! and engine agree for this range.
//!
//! CAVEATS: a snapshot is built whole in memory before it is chunked.

use std::sync::{Arc, Mutex};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Snapshot};

use super::log_store::ApplyState;
use crate::chaos::{self, Canary};
use crate::error::{Error, Result};
use crate::keys;
use crate::storage::{self, Pair};

/// A snapshot's payload: every pair of the span plus the extra local keys.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotData {
    #[prost(message, repeated, tag = "1")]
    pub pairs: Vec<Pair>,
    /// The data span `[start, end)` the snapshot covers.
    #[prost(bytes = "vec", tag = "2")]
    pub start: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub end: Vec<u8>,
    /// The apply hash chain at the snapshot's index.
    #[prost(uint64, tag = "4")]
    pub apply_hash: u64,
}

/// A snapshot to build: the engine as of the request, with the span and
/// the extra local keys the range had then.
pub struct SnapshotJob {
    pub range_id: u64,
    pub engine: Box<dyn storage::Snapshot>,
    pub span: (Vec<u8>, Vec<u8>),
    pub extra_keys: Vec<Vec<u8>>,
}

/// Where a node's LogStores queue their snapshot jobs.
#[derive(Clone, Default)]
pub struct SnapshotJobs {
    inner: Arc<Mutex<Vec<SnapshotJob>>>,
}

impl SnapshotJobs {
    pub fn push(&self, job: SnapshotJob) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(job);
    }

    pub fn take(&self) -> Vec<SnapshotJob> {
        std::mem::take(&mut *self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Builds the snapshot a job describes (a whole-range scan: run it off the
/// Store task).
pub fn build(job: &SnapshotJob) -> Result<Snapshot> {
    let snap = &job.engine;
    let apply = match snap.get(&keys::apply_state_key(job.range_id))? {
        Some(b) => <ApplyState as prost::Message>::decode(b.as_slice())?,
        None => {
            return Err(Error::Unavailable(format!(
                "range {} has no apply state to snapshot",
                job.range_id
            )))
        }
    };
    let (start, end) = &job.span;
    let mut pairs: Vec<Pair> = snap
        .scan(start, end, usize::MAX, false)?
        .into_iter()
        .map(|(key, value)| Pair { key, value })
        .collect();
    if chaos::canary(Canary::SnapshotDropsLastKey) {
        pairs.pop();
    }
    for k in &job.extra_keys {
        if let Some(value) = snap.get(k)? {
            pairs.push(Pair {
                key: k.clone(),
                value,
            });
        }
    }
    let data = SnapshotData {
        pairs,
        start: start.clone(),
        end: end.clone(),
        apply_hash: apply.apply_hash,
    };
    let mut s = Snapshot {
        data: prost::Message::encode_to_vec(&data).into(),
        ..Default::default()
    };
    let meta = s.mut_metadata();
    meta.index = apply.applied_index;
    meta.term = apply.applied_term;
    meta.set_conf_state(ConfState::parse_from_bytes(&apply.conf_state)?);
    Ok(s)
}
