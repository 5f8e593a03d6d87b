//! Reads: linearizable ones under the leader's lease (`lease.rs`: served
//! once the replica applied the commit index) or through ReadIndex (served
//! once it applied the index the round returned), and local ones from this
//! replica's state as applied so far.
//!
//! raft-rs silently drops a ReadIndex request on a leader that has not yet
//! committed an entry of its term: such reads wait in `early_reads` until
//! it has. A read whose leader lost leadership is answered NotLeader.

use super::replica::{Replica, Responder};
use super::timestamped::txn_error;
use crate::api::Timestamp;
use crate::chaos::{self, Canary};
use crate::error::{Error, Result};
use crate::keys;
use crate::mvcc::{Change, History, Item, Reader, TxnError, TxnStatus, Visible, WriteKind};
use crate::storage::KvPair;

/// A read, over internal data keys.
#[derive(Debug, Clone)]
pub enum ReadOp {
    Get(Vec<u8>),
    Scan {
        start: Vec<u8>,
        end: Vec<u8>,
        limit: usize,
        reverse: bool,
    },
    /// The user keys in `[start, end)` written in `(since, ts]` with their
    /// values at the read's timestamp (`Reader::changes`); `Changes`.
    Changes {
        start: Vec<u8>,
        end: Vec<u8>,
        limit: usize,
        since: u64,
    },
    /// Every version committed in `(since, ts]` to the user keys in
    /// `[start, end)`, with the locks that may still add some
    /// (`Reader::history`, `history.rs`); `History`. A watch's read.
    History {
        start: Vec<u8>,
        end: Vec<u8>,
        limit: usize,
        since: u64,
        prev: bool,
    },
    /// `Get` of a user key with its metadata (`Item`); `Items`.
    GetItem(Vec<u8>),
    /// A forward `Scan` of user keys with their metadata; `Items`.
    ScanItems {
        start: Vec<u8>,
        end: Vec<u8>,
        limit: usize,
    },
    /// Where the transaction started at `start_ts` stands, as its primary
    /// key (a data key) says.
    TxnStatus {
        primary: Vec<u8>,
        start_ts: u64,
    },
    /// A transaction's read validation, read at its commit timestamp: no
    /// write committed in `(start_ts, commit]` and no foreign lock on
    /// `reads` (all in this range) or on the part of `span` in this range.
    /// Answers `Pairs([], resume)` (resume: where `span` continues).
    Validate {
        reads: Vec<Vec<u8>>,
        span: Option<(Vec<u8>, Vec<u8>)>,
        start_ts: u64,
    },
    /// The Raft term in which this replica leads the range holding the key
    /// (`Term`): with `Linearizable`, confirmed by a quorum after the read
    /// was asked — the timestamp oracle's lease (`server::tso`).
    LeaderTerm(Vec<u8>),
}

impl ReadOp {
    /// Its name on request log lines.
    pub fn kind_name(&self) -> &'static str {
        match self {
            ReadOp::Get(_) => "get",
            ReadOp::Scan { .. } => "scan",
            ReadOp::Changes { .. } => "changes",
            ReadOp::History { .. } => "history",
            ReadOp::GetItem(_) => "get-item",
            ReadOp::ScanItems { .. } => "scan-items",
            ReadOp::TxnStatus { .. } => "txn-status",
            ReadOp::Validate { .. } => "validate",
            ReadOp::LeaderTerm(_) => "leader-term",
        }
    }

    /// The key the read is routed (and load-sampled) by.
    pub fn key(&self) -> &[u8] {
        match self {
            ReadOp::Get(k) | ReadOp::LeaderTerm(k) | ReadOp::GetItem(k) => k,
            ReadOp::Scan { start, .. }
            | ReadOp::Changes { start, .. }
            | ReadOp::History { start, .. }
            | ReadOp::ScanItems { start, .. } => start,
            ReadOp::TxnStatus { primary, .. } => primary,
            ReadOp::Validate { reads, span, .. } => match (reads.first(), span) {
                (Some(k), _) => k,
                (None, Some((s, _))) => s,
                (None, None) => &[],
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadResult {
    Value(Option<Vec<u8>>),
    /// Pairs, and where to resume if this range ended before the scan's
    /// bounds (forward: the range end; reverse: the range start).
    Pairs(Vec<KvPair>, Option<Vec<u8>>),
    /// A transaction's status (`None`: it left nothing on its primary —
    /// never prewritten there, or collected).
    Txn(Option<TxnStatus>),
    /// The term this replica leads in (`ReadOp::LeaderTerm`).
    Term(u64),
    /// Keys changed, with their values (`None`: deleted), and where to
    /// resume (as for `Pairs`).
    Changes(Vec<Change>, Option<Vec<u8>>),
    /// A span's history in this range, and where it continues past the
    /// range (as for `Pairs`; the history's own `resume` is within it).
    History(History, Option<Vec<u8>>),
    /// Keys with their metadata, and where to resume (as for `Pairs`).
    Items(Vec<(Vec<u8>, Item)>, Option<Vec<u8>>),
}

/// A read waiting for its ReadIndex round and for the apply to catch up.
pub(super) struct PendingRead {
    pub ctx: u64,
    pub op: ReadOp,
    /// The MVCC timestamp of a user-data read (`None`: the newest).
    pub ts: Option<Timestamp>,
    pub done: Responder<ReadResult>,
    /// Set when the ReadIndex round finished: serve once applied >= index.
    pub index: Option<u64>,
    /// A read at a timestamp also waits for every entry proposed before it
    /// registered on the read floor (`timestamped.rs`).
    pub wait: u64,
    /// When its ReadIndex round was asked (the lease's stamp); `None`: a
    /// read served under the lease (ctx 0, no round).
    pub asked: Option<(super::lease::Local, u64)>,
}

impl Replica {
    /// A linearizable read through ReadIndex; user data at `ts` (`None`:
    /// the newest versions).
    pub fn read(&mut self, op: ReadOp, ts: Option<Timestamp>, done: Responder<ReadResult>) {
        self.activity();
        if chaos::canary(Canary::ReadWithoutReadIndex) {
            let _ = done.send(self.execute(&op, ts));
            return;
        }
        if !self.is_leader() {
            let _ = done.send(Err(self.not_leader()));
            return;
        }
        if let Some(ts) = ts {
            self.register_read(ts);
        }
        if !self.group.raft.commit_to_current_term() {
            self.early_reads.push((op, ts, done));
            return;
        }
        let wait = if ts.is_some() {
            self.group.raft.raft_log.last_index()
        } else {
            0
        };
        // Under the lease (`lease.rs`) no other leader can have committed
        // anything: the commit index now is the read's index.
        if let Some(index) = self.leased_index() {
            self.metrics.reads_lease.inc();
            let applied = self.group.store().applied_index();
            if index <= applied && wait <= applied {
                let mut out = Vec::new();
                self.serve(op, ts, done, &mut out);
                out.into_iter().for_each(super::Completion::send);
            } else {
                self.reads.push(PendingRead {
                    ctx: 0,
                    op,
                    ts,
                    done,
                    index: Some(index),
                    wait,
                    asked: None,
                });
            }
            return;
        }
        self.metrics.reads_read_index.inc();
        let ctx = self.ask_read_index();
        self.reads.push(PendingRead {
            ctx,
            op,
            ts,
            done,
            index: None,
            wait,
            asked: self.lease_cfg.as_ref().map(|c| self.lease.stamp(c.now())),
        });
    }

    /// The index a read may be served at under the lease, if it holds.
    fn leased_index(&mut self) -> Option<u64> {
        let now = self.lease_cfg.as_ref()?.now();
        self.lease.want();
        let raft = &self.group.raft;
        // No lease across a transfer or a membership change in flight
        // (the module docs of `lease.rs`).
        if raft.lead_transferee.is_some() || raft.has_pending_conf() {
            return None;
        }
        self.lease
            .serves(raft.term, now)
            .then_some(raft.raft_log.committed)
    }

    /// On a tick: a leader whose lease a read wanted renews it before it
    /// runs out, with a ReadIndex round of its own.
    pub(super) fn renew_lease(&mut self) {
        let Some(cfg) = &self.lease_cfg else {
            return;
        };
        if !self.is_leader() || !self.group.raft.commit_to_current_term() {
            return;
        }
        let (term, length, now) = (self.group.raft.term, cfg.length, cfg.now());
        self.lease.expire_probe(now, length);
        if self.lease.renewal_due(term, now, length) && self.group.raft.lead_transferee.is_none() {
            let ctx = self.ask_read_index();
            self.lease.probing(ctx, now);
        }
    }

    /// Starts a ReadIndex round under a fresh context (raft-rs ignores a
    /// context already pending); returns it.
    fn ask_read_index(&mut self) -> u64 {
        let ctx = self.next_ctx;
        self.next_ctx += 1;
        self.group.read_index(ctx.to_be_bytes().to_vec());
        ctx
    }

    /// Ends the lease for this term if `msgs` hand leadership away.
    pub(super) fn note_sent(&mut self, msgs: &[raft::eraftpb::Message]) {
        let timeout_now = raft::eraftpb::MessageType::MsgTimeoutNow;
        if msgs.iter().any(|m| m.get_msg_type() == timeout_now) {
            self.lease.poison(self.group.raft.term);
        }
    }

    /// A read of this replica's local state, possibly stale.
    pub fn read_local(&self, op: &ReadOp, ts: Option<Timestamp>) -> Result<ReadResult> {
        self.execute(op, ts)
    }

    /// Records the index a ReadIndex round returned for request `ctx`; a
    /// quorum answered it in this term: the lease runs from when it was
    /// asked.
    pub(super) fn read_index_done(&mut self, ctx: &[u8], index: u64) {
        let ctx = ctx.try_into().map(u64::from_be_bytes).unwrap_or(0);
        let mut asked = self.lease.take_probe(ctx);
        if let Some(r) = self.reads.iter_mut().find(|r| r.ctx == ctx && r.ctx != 0) {
            r.index = Some(index);
            asked = asked.or(r.asked);
        }
        if let (Some(asked), Some(cfg), true) = (asked, &self.lease_cfg, self.is_leader()) {
            self.lease
                .confirmed(self.group.raft.term, asked, cfg.length);
        }
    }

    /// Answers, after the loop's writes landed: reads whose index is
    /// applied; reads of a leader that lost leadership (NotLeader); reads
    /// that waited for this leader's first commit start now.
    pub(super) fn serve_reads(&mut self, completions: &mut Vec<super::Completion>) {
        let leader = self.is_leader();
        let lost = Error::NotLeader {
            range_id: self.desc.range_id,
            leader: None,
            span: self.span(),
        };
        if self.was_leader && !leader {
            for r in self.reads.drain(..) {
                completions.push(super::Completion::Read(r.done, Err(lost.clone())));
            }
        }
        self.was_leader = leader;
        if !leader {
            for (_, _, done) in self.early_reads.drain(..) {
                completions.push(super::Completion::Read(done, Err(lost.clone())));
            }
        } else if !self.early_reads.is_empty() && self.group.raft.commit_to_current_term() {
            for (op, ts, done) in std::mem::take(&mut self.early_reads) {
                self.read(op, ts, done);
            }
        }
        let applied = self.group.store().applied_index();
        let mut i = 0;
        while i < self.reads.len() {
            let r = &self.reads[i];
            if r.index.is_some_and(|idx| idx <= applied) && r.wait <= applied {
                let r = self.reads.swap_remove(i);
                self.serve(r.op, r.ts, r.done, completions);
            } else {
                i += 1;
            }
        }
    }

    /// Answers a read whose index is applied: scans of user data run off
    /// the Store task (`deferred.rs`), everything else here.
    fn serve(
        &self,
        op: ReadOp,
        ts: Option<Timestamp>,
        done: Responder<ReadResult>,
        completions: &mut Vec<super::Completion>,
    ) {
        match self.defer_scan(&op, ts) {
            Some(Ok(scan)) => completions.push(super::Completion::Scan(done, scan)),
            Some(Err(e)) => completions.push(super::Completion::Read(done, Err(e))),
            None => {
                let result = self.execute(&op, ts);
                completions.push(super::Completion::Read(done, result));
            }
        }
    }

    fn execute(&self, op: &ReadOp, ts: Option<Timestamp>) -> Result<ReadResult> {
        // A frozen range's keys may already be served (and written) by the
        // range that absorbed it.
        if self.desc.frozen {
            return Err(self.desc.epoch_mismatch());
        }
        // Versions a transaction below the GC horizon needs may be gone.
        match (op, ts) {
            (ReadOp::Validate { start_ts, .. }, _) => self.desc.check_gc_horizon(*start_ts)?,
            (
                ReadOp::Get(_)
                | ReadOp::Scan { .. }
                | ReadOp::GetItem(_)
                | ReadOp::ScanItems { .. },
                Some(ts),
            ) => self.desc.check_gc_horizon(ts.0)?,
            // The versions between `since` and the read must all be here.
            (ReadOp::Changes { since, .. }, _) => self.desc.check_gc_horizon(*since)?,
            (ReadOp::History { since, .. }, _) => self.check_compacted(*since)?,
            _ => {}
        }
        match op {
            ReadOp::Get(key) => {
                // The range split while the read waited for its ReadIndex
                // round: the key moved; the client re-routes.
                if !self.desc.contains(key) {
                    return Err(Error::KeyNotInRange {
                        range_id: self.desc.range_id,
                        span: self.span(),
                    });
                }
                if is_user_data(key) {
                    let at = ts.unwrap_or(Timestamp::MAX);
                    return match Reader::new(&self.engine.as_ref()).get(key, at)? {
                        Visible::Value(v) => Ok(ReadResult::Value(v)),
                        Visible::Locked(lock) => Err(txn_error(TxnError::Locked {
                            key: key.clone(),
                            lock,
                        })),
                    };
                }
                Ok(ReadResult::Value(self.engine.get(key)?))
            }
            ReadOp::Scan {
                start,
                end,
                limit,
                reverse,
            } => self.scan(start, end, *limit, *reverse, ts),
            ReadOp::Changes {
                start,
                end,
                limit,
                since,
            } => self.changes(start, end, *limit, Timestamp(*since), ts),
            ReadOp::History {
                start,
                end,
                limit,
                since,
                prev,
            } => self.history(start, end, *limit, Timestamp(*since), *prev, ts),
            ReadOp::GetItem(key) => self.get_item(key, ts),
            ReadOp::ScanItems { start, end, limit } => self.scan_items(start, end, *limit, ts),
            ReadOp::TxnStatus { primary, start_ts } => {
                if !self.desc.contains(primary) {
                    return Err(Error::KeyNotInRange {
                        range_id: self.desc.range_id,
                        span: self.span(),
                    });
                }
                let engine = self.engine.as_ref();
                let r = Reader::new(&engine);
                Ok(ReadResult::Txn(txn_status(
                    &r,
                    primary,
                    Timestamp(*start_ts),
                )?))
            }
            ReadOp::Validate {
                reads,
                span,
                start_ts,
            } => self.validate(reads, span.as_ref(), Timestamp(*start_ts), ts),
            ReadOp::LeaderTerm(_) if self.is_leader() => {
                // Served after the ReadIndex round: the term now is at or
                // above the one the quorum confirmed (never below).
                Ok(ReadResult::Term(self.group.raft.term))
            }
            ReadOp::LeaderTerm(_) => Err(self.not_leader()),
        }
    }

    /// A transaction's read validation on this range (see `ReadOp::Validate`).
    fn validate(
        &self,
        reads: &[Vec<u8>],
        span: Option<&(Vec<u8>, Vec<u8>)>,
        start: Timestamp,
        commit: Option<Timestamp>,
    ) -> Result<ReadResult> {
        let d = &self.desc;
        let Some(commit) = commit else {
            return Err(Error::Internal(
                "a validation without a commit timestamp".into(),
            ));
        };
        let moved = reads.iter().any(|k| !d.contains(k))
            || span.is_some_and(|(s, _)| s.as_slice() >= d.end_key.as_slice());
        if moved {
            return Err(Error::KeyNotInRange {
                range_id: d.range_id,
                span: self.span(),
            });
        }
        let mut spans = Vec::new();
        let mut resume = None;
        if let Some((start, end)) = span {
            let s = start.as_slice().max(d.start_key.as_slice()).to_vec();
            let e = if end.is_empty() || end.as_slice() > d.end_key.as_slice() {
                resume = Some(d.end_key.clone());
                d.end_key.clone()
            } else {
                end.clone()
            };
            spans.push((s, e));
        }
        let engine = self.engine.as_ref();
        let r = Reader::new(&engine);
        match crate::mvcc::validate(&r, reads, &spans, start, commit)? {
            Ok(()) => Ok(ReadResult::Pairs(Vec::new(), resume)),
            Err(e) => Err(txn_error(e)),
        }
    }

    /// The part of a scan inside this range, and where it resumes.
    fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
        ts: Option<Timestamp>,
    ) -> Result<ReadResult> {
        let (s, e) = self.clip(start, end);
        self.scan_moved(start, end, reverse)?;
        let pairs = if is_user_data(s) {
            let at = ts.unwrap_or(Timestamp::MAX);
            match Reader::new(&self.engine.as_ref()).scan(s, e, at, limit, reverse)? {
                Ok(pairs) => pairs,
                Err((key, lock)) => return Err(txn_error(TxnError::Locked { key, lock })),
            }
        } else {
            self.engine.scan(s, e, limit, reverse)?
        };
        let resume = if pairs.len() >= limit {
            None
        } else {
            self.scan_resume(start, end, reverse)
        };
        Ok(ReadResult::Pairs(pairs, resume))
    }

    /// Fails a scan whose start (or, reversed, its end) left this range
    /// while the read waited (a split): the client re-routes.
    pub(super) fn scan_moved(&self, start: &[u8], end: &[u8], reverse: bool) -> Result<()> {
        let d = &self.desc;
        let moved = if reverse {
            !end.is_empty() && end <= d.start_key.as_slice()
        } else {
            start >= d.end_key.as_slice()
        };
        if moved {
            return Err(Error::KeyNotInRange {
                range_id: d.range_id,
                span: self.span(),
            });
        }
        Ok(())
    }

    /// Where a scan continues past this range when the range gave it fewer
    /// pairs than its limit (`None`: the scan ends here).
    pub(super) fn scan_resume(&self, start: &[u8], end: &[u8], reverse: bool) -> Option<Vec<u8>> {
        let d = &self.desc;
        if reverse {
            (d.start_key.as_slice() > start).then(|| d.start_key.clone())
        } else {
            (end.is_empty() || d.end_key.as_slice() < end).then(|| d.end_key.clone())
        }
    }
}

impl Replica {
    /// The part of `[start, end)` ("" end: unbounded) inside this range.
    pub(super) fn clip<'a>(&'a self, start: &'a [u8], end: &'a [u8]) -> (&'a [u8], &'a [u8]) {
        let d = &self.desc;
        let e = if end.is_empty() {
            d.end_key.as_slice()
        } else {
            end.min(d.end_key.as_slice())
        };
        (start.max(d.start_key.as_slice()), e)
    }

    /// The part of a changes scan inside this range, and where it resumes.
    fn changes(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        since: Timestamp,
        ts: Option<Timestamp>,
    ) -> Result<ReadResult> {
        let d = &self.desc;
        let Some(at) = ts else {
            return Err(Error::Internal("a changes scan without a timestamp".into()));
        };
        if start >= d.end_key.as_slice() {
            return Err(Error::KeyNotInRange {
                range_id: d.range_id,
                span: self.span(),
            });
        }
        let (s, e) = self.clip(start, end);
        if !is_user_data(s) {
            return Err(Error::InvalidArgument(
                "changes scans read user keys only".into(),
            ));
        }
        let changes = match Reader::new(&self.engine.as_ref()).changes(s, e, since, at, limit)? {
            Ok(c) => c,
            Err((key, lock)) => return Err(txn_error(TxnError::Locked { key, lock })),
        };
        let resume = if changes.len() >= limit {
            None
        } else {
            (end.is_empty() || d.end_key.as_slice() < end).then(|| d.end_key.clone())
        };
        Ok(ReadResult::Changes(changes, resume))
    }
}

/// Whether a data key (or scan bound) is in the versioned user keyspace.
pub(super) fn is_user_data(key: &[u8]) -> bool {
    key.first() == Some(&keys::USER_DATA)
}

/// What the primary says of the transaction started at `start`.
fn txn_status(r: &Reader, primary: &[u8], start: Timestamp) -> Result<Option<TxnStatus>> {
    if let Some(lock) = r.lock(primary)? {
        if lock.start() == start {
            return Ok(Some(TxnStatus::Locked {
                ttl_ms: lock.ttl_ms,
            }));
        }
    }
    Ok(match r.by_txn(primary, start)? {
        Some((_, w)) if w.write_kind()? == WriteKind::Rollback => Some(TxnStatus::RolledBack),
        Some((commit_ts, _)) => Some(TxnStatus::Committed { commit_ts }),
        None => None,
    })
}
