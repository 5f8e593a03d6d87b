//! Message dispatch: a thin `handle` that calls one method per message.
//! Client requests are routed by key to the replica holding it (and
//! load-sampled); admin requests go to a named range.

use super::handle::{Consistency, StoreMsg};
use super::store::{PendingSplit, Store};
use crate::api::Timestamp;
use crate::error::{Error, Result};
use crate::range::{
    Kind, OnePcCmd, Op, RangeDescriptor, ReadOp, ReadResult, Request, Responder, SYSTEM_RANGE_ID,
};
use crate::storage::KvPair;

impl Store {
    pub fn handle(&mut self, msg: StoreMsg) {
        match msg {
            StoreMsg::Traced(msg, span) => span.in_scope(|| self.handle(*msg)),
            StoreMsg::Raft { from, msgs } => self.on_raft(from, msgs),
            StoreMsg::OracleTime(ts) => self.oracle_seen = self.oracle_seen.max(ts),
            StoreMsg::GcPin(pin) => self.gc_pin = pin,
            StoreMsg::Write { ops, done } => self.on_write(ops, done),
            StoreMsg::Read {
                op,
                consistency,
                ts,
                done,
            } => self.on_read(op, consistency, ts, done),
            StoreMsg::Txn { kind, done } => self.on_txn(kind, done),
            StoreMsg::OnePc {
                cmd,
                seed_term,
                done,
            } => self.on_one_pc(cmd, seed_term, done),
            StoreMsg::Split { key, sticky, done } => self.propose_split(key, sticky, done),
            StoreMsg::Freeze {
                range_id,
                expected_version,
                done,
            } => self.on_propose(range_id, Request::Freeze { expected_version }, done),
            StoreMsg::FrozenDescriptor { range_id, done } => {
                let _ = done.send(self.on_frozen_descriptor(range_id));
            }
            StoreMsg::Merge {
                range_id,
                expected_version,
                rhs,
                pairs,
                done,
            } => self.on_merge(range_id, expected_version, rhs, pairs, done),
            StoreMsg::GcReplica {
                range_id,
                conf_ver,
                merged,
                done,
            } => {
                self.gc_replica(range_id, conf_ver, merged);
                let _ = done.send(Ok(()));
            }
            StoreMsg::ChangeReplicas {
                range_id,
                change,
                expected_conf_ver,
                done,
            } => self.on_propose(
                range_id,
                Request::Change {
                    change,
                    expected_conf_ver,
                },
                done,
            ),
            StoreMsg::LedDescriptors { done } => {
                let _ = done.send(self.led_descriptors());
            }
            StoreMsg::Status { done } => {
                let _ = done.send(self.status());
            }
            StoreMsg::Measured(m) => self.on_measured(m),
            StoreMsg::SnapshotBuilt { range_id, snapshot } => {
                if let Some(r) = self.replicas.get_mut(&range_id) {
                    r.snapshot_built(snapshot);
                    self.note(range_id);
                }
            }
        }
    }

    fn on_write(&mut self, ops: Vec<Op>, done: Responder<()>) {
        let key = ops.first().map(|o| o.key.clone());
        self.propose_by_key(key, Request::Write(ops), done);
    }

    fn on_txn(&mut self, kind: Kind, done: Responder<()>) {
        let key = match &kind {
            Kind::Prewrite(p) => p.ops.first().map(|o| o.key.clone()),
            Kind::Finish(f) => f.keys.first().cloned(),
            Kind::CheckTxn(c) => Some(c.primary.clone()),
            Kind::Heartbeat(h) => Some(h.primary.clone()),
            _ => None,
        };
        self.propose_by_key(key, Request::Txn(kind), done);
    }

    fn on_one_pc(&mut self, cmd: OnePcCmd, seed_term: Option<u64>, done: Responder<()>) {
        let key = cmd.ops.first().map(|o| o.key.clone());
        self.propose_by_key(key, Request::OnePc { cmd, seed_term }, done);
    }

    /// Proposes `req` on the replica holding `key` (no key: nothing to do).
    fn propose_by_key(&mut self, key: Option<Vec<u8>>, req: Request, done: Responder<()>) {
        let Some(key) = key else {
            let _ = done.send(Ok(()));
            return;
        };
        match self.route(&key) {
            Ok(id) => {
                tracing::debug!(range_id = id, kind = req.kind_name(), "request");
                self.record_load(id, &key);
                if let Some(r) = self.replicas.get_mut(&id) {
                    r.propose(req, done);
                }
                self.note(id);
            }
            Err(e) => drop(done.send(Err(e))),
        }
    }

    fn on_read(
        &mut self,
        op: ReadOp,
        consistency: Consistency,
        ts: Option<Timestamp>,
        done: Responder<ReadResult>,
    ) {
        let route = match &op {
            ReadOp::Get(k)
            | ReadOp::LeaderTerm(k)
            | ReadOp::GetItem(k)
            | ReadOp::TxnStatus { primary: k, .. } => self.route(k),
            ReadOp::Validate { .. } => self.route(op.key()),
            ReadOp::Scan {
                start,
                end,
                reverse,
                ..
            } => self.route_scan(start, end, *reverse),
            ReadOp::Changes { start, end, .. }
            | ReadOp::History { start, end, .. }
            | ReadOp::ScanItems { start, end, .. } => self.route_scan(start, end, false),
        };
        let id = match route {
            Ok(id) => id,
            Err(e) => return drop(done.send(Err(e))),
        };
        let key = op.key().to_vec();
        tracing::debug!(
            range_id = id,
            kind = op.kind_name(),
            ?consistency,
            "request"
        );
        self.record_load(id, &key);
        if let Some(r) = self.replicas.get_mut(&id) {
            match consistency {
                Consistency::Linearizable => r.read(op, ts, done),
                Consistency::Local => drop(done.send(r.read_local(&op, ts))),
            }
        }
        self.note(id);
    }

    /// A proposal to range `range_id`, which this node must lead.
    fn on_propose(&mut self, range_id: u64, req: Request, done: Responder<()>) {
        match self.replicas.get_mut(&range_id) {
            Some(r) => r.propose(req, done),
            None => drop(done.send(Err(Error::RangeNotFound(range_id)))),
        }
        self.note(range_id);
    }

    fn on_merge(
        &mut self,
        range_id: u64,
        expected_version: u64,
        rhs: RangeDescriptor,
        pairs: Vec<KvPair>,
        done: Responder<()>,
    ) {
        let req = Request::Merge {
            expected_version,
            rhs,
            pairs,
        };
        self.on_propose(range_id, req, done);
    }

    fn on_frozen_descriptor(&self, range_id: u64) -> Result<RangeDescriptor> {
        match self.replicas.get(&range_id) {
            Some(r) => r.frozen_descriptor(),
            None => Err(Error::RangeNotFound(range_id)),
        }
    }

    fn led_descriptors(&self) -> Vec<RangeDescriptor> {
        self.replicas
            .values()
            .filter(|r| r.is_leader() && r.is_initialized() && !r.is_frozen())
            .map(|r| r.descriptor().clone())
            .collect()
    }

    /// Splits the range holding `key` at `key` (this node must lead it).
    /// Waits for a durable range id reservation when none is left.
    pub(super) fn propose_split(&mut self, key: Vec<u8>, sticky: bool, done: Responder<()>) {
        let range_id = match self.route(&key) {
            Ok(id) => id,
            Err(e) => return drop(done.send(Err(e))),
        };
        self.note(range_id);
        let Some(r) = self.replicas.get(&range_id) else {
            return;
        };
        if r.descriptor().start_key == key {
            return drop(done.send(Ok(()))); // already split here
        }
        if range_id == SYSTEM_RANGE_ID {
            return drop(done.send(Err(Error::InvalidArgument(
                "the system range (keys under _/) does not split".into(),
            ))));
        }
        if !r.is_leader() {
            return drop(done.send(Err(r.not_leader())));
        }
        let Some(new_range_id) = self.ids.take() else {
            self.pending_splits.push(PendingSplit { key, sticky, done });
            return;
        };
        if let Some(r) = self.replicas.get_mut(&range_id) {
            let req = Request::Split {
                key,
                new_range_id,
                sticky,
            };
            r.propose(req, done);
        }
    }

    /// Proposes the splits that waited for range ids (once reserved).
    pub(super) fn retry_pending_splits(&mut self) {
        for p in std::mem::take(&mut self.pending_splits) {
            self.propose_split(p.key, p.sticky, p.done);
        }
    }
}
