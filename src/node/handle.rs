//! `StoreHandle`: the async API of a node's Store (cheap to clone), and the
//! messages it sends the Store task. Every call is answered by the Store or
//! fails with a typed error; calls that wait for a Raft round are bounded by
//! the request timeout.
//!
//! Reads of whole ranges (a frozen range's data for a merge) run here, off
//! the Store task, on the blocking pool (inline in simulation).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use raft::eraftpb::Message;
use tokio::sync::{mpsc, oneshot};

use super::split_check::Measurement;
use super::transport::Directory;
use crate::api::Timestamp;
use crate::error::{Error, LeaderHint, Result};
use crate::range::{
    Kind, OnePcCmd, Op, RangeDescriptor, ReadOp, ReadResult, ReplicaChange, ReplicaStatus,
    Responder,
};
use crate::storage::{Engine, KvPair};

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Served by the leader after a ReadIndex round.
    Linearizable,
    /// Served from this node's replica as applied so far.
    Local,
}

/// A message to the Store task.
pub enum StoreMsg {
    /// A request handled inside its caller's span (tracing export is on:
    /// the Raft proposal and apply join the request's trace).
    Traced(Box<StoreMsg>, tracing::Span),
    /// A fresh timestamp from the oracle: a lower bound on its clock, from
    /// which MVCC GC takes its horizon on quiet ranges (`gc.rs`).
    OracleTime(Timestamp),
    /// The oldest start timestamp open transactions pinned (`None`: no
    /// pin): GC's horizon stays at or below it.
    GcPin(Option<Timestamp>),
    Raft {
        from: u64,
        msgs: Vec<(u64, Message)>,
    },
    Write {
        ops: Vec<Op>,
        done: Responder<()>,
    },
    Read {
        op: ReadOp,
        consistency: Consistency,
        /// User data at this MVCC timestamp (`None`: the newest).
        ts: Option<Timestamp>,
        done: Responder<ReadResult>,
    },
    /// A two-phase-commit step (`range::Kind::Prewrite`, `Finish` or
    /// `CheckTxn`), routed by its first key.
    Txn {
        kind: Kind,
        done: Responder<()>,
    },
    /// A timestamped write of user data (`range::OnePcCmd`).
    OnePc {
        cmd: OnePcCmd,
        seed_term: Option<u64>,
        done: Responder<()>,
    },
    Status {
        done: oneshot::Sender<NodeStatus>,
    },
    /// Descriptors of the initialized, unfrozen ranges this node leads.
    LedDescriptors {
        done: oneshot::Sender<Vec<RangeDescriptor>>,
    },
    /// Split the range holding `key` (an internal data key) at `key`.
    Split {
        key: Vec<u8>,
        sticky: bool,
        done: Responder<()>,
    },
    /// Freeze a range this node leads for a merge into its left neighbour.
    Freeze {
        range_id: u64,
        expected_version: u64,
        done: Responder<()>,
    },
    /// A frozen range's final descriptor.
    FrozenDescriptor {
        range_id: u64,
        done: Responder<RangeDescriptor>,
    },
    /// Absorb the frozen right neighbour `rhs` into `range_id` (led here).
    Merge {
        range_id: u64,
        expected_version: u64,
        rhs: RangeDescriptor,
        pairs: Vec<KvPair>,
        done: Responder<()>,
    },
    /// Drop a stale replica (see `StoreHandle::gc_replica`).
    GcReplica {
        range_id: u64,
        conf_ver: u64,
        merged: bool,
        done: Responder<()>,
    },
    /// Change the replica set of a range this node leads.
    ChangeReplicas {
        range_id: u64,
        change: ReplicaChange,
        expected_conf_ver: u64,
        done: Responder<()>,
    },
    /// A range's size, measured off the Store task (`split_check`).
    Measured(Measurement),
    /// A Raft snapshot built off the Store task (`None`: the build failed).
    SnapshotBuilt {
        range_id: u64,
        snapshot: Option<raft::eraftpb::Snapshot>,
    },
}

/// What a node reports about itself.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub node_id: u64,
    pub ranges: Vec<ReplicaStatus>,
}

/// A cheap, cloneable handle for sending requests to the Store.
#[derive(Clone)]
pub struct StoreHandle {
    pub(super) tx: mpsc::Sender<StoreMsg>,
    pub(super) directory: Directory,
    pub(super) request_timeout: Duration,
    pub(super) node_id: u64,
    /// Rotates the "try another node" hints for ranges this node lacks.
    pub(super) next_hint: Arc<AtomicUsize>,
    /// For reads that must not run on the Store task.
    pub(super) engine: Arc<dyn Engine>,
    pub(super) metrics: Arc<crate::metrics::NodeMetrics>,
    /// Draining: not ready, leaderships moving away, then stopping
    /// (`server::drain`).
    pub(super) draining: Arc<AtomicBool>,
    /// Set when the node should stop (a drain finished).
    pub(super) stop: Arc<tokio::sync::watch::Sender<bool>>,
}

impl StoreHandle {
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// Marks the node draining (readiness fails from now on).
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Asks the node to stop (its serve loop ends as on a signal).
    pub fn request_stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Flips to true when a stop was requested.
    pub fn stop_requested(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// This node's metrics.
    pub fn metrics(&self) -> &Arc<crate::metrics::NodeMetrics> {
        &self.metrics
    }

    /// Tells the Store a fresh oracle timestamp (see `StoreMsg::OracleTime`).
    pub async fn oracle_time(&self, ts: Timestamp) {
        let _ = self.tx.send(StoreMsg::OracleTime(ts)).await;
    }

    /// Tells the Store the oldest live GC pin (see `StoreMsg::GcPin`).
    pub async fn gc_pin(&self, pin: Option<Timestamp>) {
        let _ = self.tx.send(StoreMsg::GcPin(pin)).await;
    }

    pub fn raft_sender(&self) -> mpsc::Sender<StoreMsg> {
        self.tx.clone()
    }

    async fn call<T>(&self, make: impl FnOnce(Responder<T>) -> StoreMsg) -> Result<T> {
        let (done, rx) = oneshot::channel();
        let mut msg = make(done);
        if crate::trace_context::enabled() {
            msg = StoreMsg::Traced(Box::new(msg), tracing::Span::current());
        }
        self.tx.send(msg).await.map_err(|_| Error::ShuttingDown)?;
        let result = match tokio::time::timeout(self.request_timeout, rx).await {
            Err(_) => Err(Error::Timeout(format!(
                "no answer within {:?}; a write may or may not have been applied",
                self.request_timeout
            ))),
            Ok(Err(_)) => Err(Error::Indeterminate(
                "the node stopped before answering".into(),
            )),
            Ok(Ok(r)) => r,
        };
        result.map_err(|e| self.add_hint(e))
    }

    /// A question the Store answers at once (no Raft round, no timeout):
    /// only a stopped Store leaves it unanswered.
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> StoreMsg) -> Result<T> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(make(done))
            .await
            .map_err(|_| Error::ShuttingDown)?;
        rx.await.map_err(|_| Error::ShuttingDown)
    }

    fn add_hint(&self, e: Error) -> Error {
        match e {
            Error::NotLeader {
                range_id,
                leader:
                    Some(LeaderHint {
                        node_id,
                        client_address: None,
                    }),
                span,
            } => Error::NotLeader {
                range_id,
                leader: Some(LeaderHint {
                    node_id,
                    client_address: self.directory.get(node_id),
                }),
                span,
            },
            Error::RangeNotFound(range_id) => self.try_another_node(range_id),
            e => e,
        }
    }

    /// This node holds no replica of the range (e.g. it just joined): point
    /// the client at another node, which serves it or knows the leader.
    /// Hints rotate so a chain of such nodes is walked.
    fn try_another_node(&self, range_id: u64) -> Error {
        let others: Vec<(u64, String)> = self
            .directory
            .all()
            .into_iter()
            .filter(|(id, _)| *id != self.node_id)
            .collect();
        if others.is_empty() {
            return Error::RangeNotFound(range_id);
        }
        let i = self.next_hint.fetch_add(1, Ordering::Relaxed) % others.len();
        let (node_id, addr) = others[i].clone();
        Error::NotLeader {
            range_id,
            leader: Some(LeaderHint {
                node_id,
                client_address: Some(addr),
            }),
            span: Default::default(),
        }
    }

    /// Replicates `ops` (all in one range) atomically.
    pub async fn write(&self, ops: Vec<Op>) -> Result<()> {
        self.call(|done| StoreMsg::Write { ops, done }).await
    }

    pub async fn read(&self, op: ReadOp, consistency: Consistency) -> Result<ReadResult> {
        self.call(|done| StoreMsg::Read {
            op,
            consistency,
            ts: None,
            done,
        })
        .await
    }

    /// A read of user data at MVCC timestamp `ts`.
    pub async fn read_at(
        &self,
        op: ReadOp,
        consistency: Consistency,
        ts: Timestamp,
    ) -> Result<ReadResult> {
        self.call(|done| StoreMsg::Read {
            op,
            consistency,
            ts: Some(ts),
            done,
        })
        .await
    }

    /// A two-phase-commit step on one range (see `range::txn`).
    pub async fn txn_step(&self, kind: Kind) -> Result<()> {
        self.call(|done| StoreMsg::Txn { kind, done }).await
    }

    /// A timestamped write of user data, all keys in one range (see
    /// `range::timestamped` for `seed_term`).
    pub async fn write_at(&self, cmd: OnePcCmd, seed_term: Option<u64>) -> Result<()> {
        self.call(|done| StoreMsg::OnePc {
            cmd,
            seed_term,
            done,
        })
        .await
    }

    /// Destroys this node's replica of `range_id` if its membership is older
    /// than `conf_ver` (the caller saw a newer membership without this node),
    /// or, with `merged`, because the range was merged into its left
    /// neighbour (the caller saw the merged range).
    pub async fn gc_replica(&self, range_id: u64, conf_ver: u64, merged: bool) -> Result<()> {
        self.call(|done| StoreMsg::GcReplica {
            range_id,
            conf_ver,
            merged,
            done,
        })
        .await
    }

    /// One membership change on a range this node leads.
    pub async fn change_replicas(
        &self,
        range_id: u64,
        change: ReplicaChange,
        expected_conf_ver: u64,
    ) -> Result<()> {
        self.call(|done| StoreMsg::ChangeReplicas {
            range_id,
            change,
            expected_conf_ver,
            done,
        })
        .await
    }

    /// Splits the range holding `key` (internal data key) at `key`; this
    /// node must lead that range. A `sticky` split is never merged away by
    /// the placement driver.
    pub async fn split(&self, key: Vec<u8>, sticky: bool) -> Result<()> {
        self.call(|done| StoreMsg::Split { key, sticky, done })
            .await
    }

    /// Freezes `range_id` (led here) for a merge, then returns its final
    /// descriptor and data. Idempotent.
    pub async fn freeze(
        &self,
        range_id: u64,
        expected_version: u64,
    ) -> Result<(RangeDescriptor, Vec<KvPair>)> {
        self.call(|done| StoreMsg::Freeze {
            range_id,
            expected_version,
            done,
        })
        .await?;
        let desc = self
            .call(|done| StoreMsg::FrozenDescriptor { range_id, done })
            .await?;
        // A frozen range's data is final: one scan (atomic in both
        // engines) reads it whole, off the Store task.
        let pairs = scan_off_task(
            self.engine.clone(),
            desc.start_key.clone(),
            desc.end_key.clone(),
        )
        .await?;
        Ok((desc, pairs))
    }

    /// Merges the frozen `rhs` (with its data) into `range_id`, led here.
    pub async fn merge(
        &self,
        range_id: u64,
        expected_version: u64,
        rhs: RangeDescriptor,
        pairs: Vec<KvPair>,
    ) -> Result<()> {
        self.call(|done| StoreMsg::Merge {
            range_id,
            expected_version,
            rhs,
            pairs,
            done,
        })
        .await
    }

    /// Descriptors of the initialized ranges this node leads, frozen ones
    /// left out (they are about to disappear into their left neighbour).
    pub async fn led_descriptors(&self) -> Result<Vec<RangeDescriptor>> {
        self.ask(|done| StoreMsg::LedDescriptors { done }).await
    }

    pub async fn status(&self) -> Result<NodeStatus> {
        self.ask(|done| StoreMsg::Status { done }).await
    }
}

/// Every pair in `[start, end)`, read on the blocking pool (in simulation
/// MemEngine never blocks and madsim forbids blocking tasks: inline).
pub(super) async fn scan_off_task(
    engine: Arc<dyn Engine>,
    start: Vec<u8>,
    end: Vec<u8>,
) -> Result<Vec<KvPair>> {
    #[cfg(madsim)]
    {
        engine.scan(&start, &end, usize::MAX, false)
    }
    #[cfg(not(madsim))]
    {
        match tokio::task::spawn_blocking(move || engine.scan(&start, &end, usize::MAX, false))
            .await
        {
            Ok(r) => r,
            Err(e) => Err(Error::Internal(format!("engine read task failed: {e}"))),
        }
    }
}
