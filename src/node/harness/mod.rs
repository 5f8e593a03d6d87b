//! A synchronous test harness: several nodes' `Store` cores (the code that
//! runs in production, minus the async shell) on MemEngines, joined by a
//! network the script controls, driven by golden scripts in the toydb style
//! (`src/node/testscripts/*`, run by `make test`; regenerate the expected
//! output with `UPDATE_GOLDENFILES=1 cargo test --lib node::harness`).
//!
//! Nothing moves unless a command says so: `tick` ticks, `deliver` delivers
//! messages in flight, `stabilize` does both until the cluster is quiet.
//! Each command prints what happened — messages delivered, answers to
//! requests, and every replica whose Raft state changed — so a reviewer can
//! read what a replica does.
//!
//! Commands (nodes are numbers, `r<id>`-less range ids are numbers too):
//! ```text
//! cluster [nodes=3] [compact=1000]     a new cluster: ranges 1 (system) and 2 (user) on all nodes;
//!                                      logs compact after `compact` applied entries
//! campaign <node> [range=2]            the replica starts an election
//! tick [<node>...] [times=1]           tick nodes (all by default)
//! deliver [from=] [to=] [type=] [range=] [verbose=true]   deliver matching messages in flight
//! drop | hold [from=] [to=] [type=] [range=]              lose them, or keep them for later
//! release                              held messages go back in flight (late delivery)
//! stabilize [verbose=true]             tick-free delivery until nothing moves
//! run [<node>...] [ticks=1]            time passes: tick, then stabilize, `ticks` times
//! put <node> <key> <value> (a timestamped write), delete <node> <key>, get <node> <key>
//! split <node> <key>                   split the range holding key (node must lead it)
//! freeze <node> <range>                freeze a range (led by node) for a merge
//! merge <node> <left> <right>          absorb the frozen right range (node leads both)
//! change <node> <range> add-learner|promote|remove|transfer <node>
//! partition <node>...                  cut these nodes off from the others; heal: undo
//! crash <node>                         power loss: unsynced writes gone, messages lost
//! restart <node>                       reopen the node's Store from its disk
//! fail-reads <node> on|off             the node's engine fails reads of data keys
//! status [<node>]                      every replica: role, term, commit, applied, span
//! hardstate <node> <range>             the Raft hard state on the node's disk
//! data [<node>]                        user keys as each node's engine holds them
//! prewrite | commit | rollback | check-txn | txn-status   two-phase commit steps (`txn.rs`)
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error as StdError;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use raft::eraftpb::{Message, MessageType};
use tokio::sync::oneshot;

use super::handle::StoreMsg;
use super::raft_in::PING_RANGE_ID;
use super::store::{Store, StoreConfig};
use crate::error::{Error, Result};
use crate::keys;
use crate::range::{Op, RangeDescriptor, ReadResult, Replica};
use crate::storage::{Engine, KvPair, MemEngine, Snapshot, WriteBatch};

pub(super) type BoxError = Box<dyn StdError>;

mod commands;
mod txn;

/// A MemEngine whose reads of data keys fail while `fail` is set.
pub(super) struct FaultEngine {
    mem: MemEngine,
    fail: AtomicBool,
}

impl FaultEngine {
    /// Whether a read of `key` fails now (a data key while `fail` is set).
    fn fails(&self, key: &[u8]) -> bool {
        self.fail.load(Ordering::Relaxed) && key.first().is_some_and(|b| *b >= keys::SYSTEM_DATA)
    }
}

impl Engine for FaultEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if self.fails(key) {
            return Err(Error::Storage("injected read error".into()));
        }
        self.mem.get(key)
    }
    /// Fails like `get` when it starts at or passes a failing key.
    fn scan(&self, s: &[u8], e: &[u8], limit: usize, rev: bool) -> Result<Vec<KvPair>> {
        let pairs = self.mem.scan(s, e, limit, rev)?;
        if self.fails(s) || pairs.iter().any(|(k, _)| self.fails(k)) {
            return Err(Error::Storage("injected read error".into()));
        }
        Ok(pairs)
    }
    fn write(&self, b: &WriteBatch, sync: bool) -> Result<()> {
        self.mem.write(b, sync)
    }
    fn snapshot(&self) -> Result<Box<dyn Snapshot>> {
        self.mem.snapshot()
    }
}

pub(super) struct Node {
    engine: Arc<FaultEngine>,
    /// `None` while crashed or stopped.
    store: Option<Store>,
}

#[derive(Debug, Clone)]
pub(super) struct Envelope {
    from: u64,
    to: u64,
    range_id: u64,
    msg: Message,
}

/// A request waiting for its answer.
pub(super) enum Pending {
    Write(oneshot::Receiver<Result<()>>),
    Read(oneshot::Receiver<Result<ReadResult>>),
}

/// What a status line shows of a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Brief {
    leader: bool,
    leader_id: u64,
    term: u64,
    commit: u64,
    applied: u64,
    voters: Vec<u64>,
    learners: Vec<u64>,
    span: String,
}

#[derive(Default)]
pub struct Harness {
    nodes: BTreeMap<u64, Node>,
    net: Vec<Envelope>,
    held: Vec<Envelope>,
    /// Directed links that lose every message.
    cut: BTreeSet<(u64, u64)>,
    pending: Vec<(String, Pending)>,
    last: BTreeMap<(u64, u64), Brief>,
    /// Log compaction threshold of every node (`cluster compact=N`).
    pub(super) compact: u64,
    /// The harness is the oracle: the timestamp of the last write.
    ts: u64,
}

pub(super) fn store_config(node_id: u64, log_compact_entries: u64) -> StoreConfig {
    StoreConfig {
        node_id,
        tick: std::time::Duration::from_millis(100),
        heartbeat_ticks: 2,
        election_ticks: 10,
        log_compact_entries,
        max_msgs_per_loop: 4096,
        request_timeout: std::time::Duration::from_secs(5),
        clock: Default::default(),
        metrics: Default::default(),
        // Leases run on the runtime's clock; the harness steps time in ticks.
        read_lease: None,
    }
}

fn span(d: &RangeDescriptor) -> String {
    let bound = |k: &[u8]| match k {
        [] => "-".to_string(),
        [t] if *t == keys::SYSTEM_DATA => "sys".to_string(),
        [t] if *t == keys::USER_DATA => "user".to_string(),
        [t] if *t == keys::DATA_END => "end".to_string(),
        k => keys::display(k),
    };
    format!("[{}, {})", bound(&d.start_key), bound(&d.end_key))
}

/// One line about a Raft message.
pub(super) fn describe(e: &Envelope) -> String {
    let m = &e.msg;
    let kind = format!("{:?}", m.get_msg_type())
        .trim_start_matches("Msg")
        .to_string();
    let mut s = format!(
        "n{}→n{} r{} {kind} term={}",
        e.from, e.to, e.range_id, m.term
    );
    match m.get_msg_type() {
        MessageType::MsgAppend => {
            let _ = write!(s, " prev={}/{} commit={}", m.index, m.log_term, m.commit);
            if let (Some(a), Some(b)) = (m.entries.first(), m.entries.last()) {
                let _ = write!(s, " entries={}..{}", a.index, b.index);
            }
        }
        MessageType::MsgAppendResponse => {
            let _ = write!(
                s,
                " index={}{}",
                m.index,
                if m.reject { " rejected" } else { "" }
            );
        }
        MessageType::MsgHeartbeat => {
            let _ = write!(s, " commit={}", m.commit);
            if m.context.iter().all(|b| b.is_ascii_graphic()) && !m.context.is_empty() {
                let _ = write!(s, " ({})", String::from_utf8_lossy(&m.context));
            } else if !m.context.is_empty() {
                s.push_str(" (read index)");
            }
        }
        MessageType::MsgRequestVote | MessageType::MsgRequestPreVote => {
            let _ = write!(s, " last={}/{}", m.index, m.log_term);
        }
        MessageType::MsgRequestVoteResponse | MessageType::MsgRequestPreVoteResponse => {
            s.push_str(if m.reject { " rejected" } else { " granted" });
        }
        MessageType::MsgSnapshot => {
            let _ = write!(s, " index={}", m.get_snapshot().get_metadata().index);
        }
        _ => {}
    }
    s
}

/// Filters over messages in flight.
#[derive(Default)]
pub(super) struct Filter {
    from: Option<u64>,
    to: Option<u64>,
    kind: Option<String>,
    range: Option<u64>,
}

impl Filter {
    fn matches(&self, e: &Envelope) -> bool {
        let kind = format!("{:?}", e.msg.get_msg_type());
        self.from.is_none_or(|f| f == e.from)
            && self.to.is_none_or(|t| t == e.to)
            && self.range.is_none_or(|r| r == e.range_id)
            && self
                .kind
                .as_ref()
                .is_none_or(|k| kind == *k || kind == format!("Msg{k}"))
    }
}

/// The value of `key=value`, parsed.
pub(super) fn key<T: std::str::FromStr>(
    args: &mut goldenscript::ArgumentConsumer,
    key: &str,
) -> std::result::Result<Option<T>, BoxError> {
    match args.take_key(key) {
        Some(v) => v
            .parse::<T>()
            .map(Some)
            .map_err(|_| format!("bad value for {key}: {v:?}").into()),
        None => Ok(None),
    }
}

/// The remaining positional arguments.
pub(super) fn rest<'a>(args: &mut goldenscript::ArgumentConsumer<'a>) -> Vec<&'a str> {
    std::iter::from_fn(|| args.next_pos()).collect()
}

pub(super) fn num(s: &str) -> std::result::Result<u64, BoxError> {
    s.trim_start_matches(['n', 'r'])
        .parse::<u64>()
        .map_err(|_| format!("not a number: {s:?}").into())
}

impl Harness {
    fn store(&mut self, id: u64) -> std::result::Result<&mut Store, BoxError> {
        match self.nodes.get_mut(&id).map(|n| n.store.as_mut()) {
            Some(Some(s)) => Ok(s),
            Some(None) => Err(format!("node {id} is down").into()),
            None => Err(format!("no node {id}").into()),
        }
    }

    fn cluster(&mut self, n: u64, compact: u64) -> std::result::Result<String, BoxError> {
        self.compact = compact;
        let voters: Vec<u64> = (1..=n).collect();
        for id in 1..=n {
            let engine = Arc::new(FaultEngine {
                mem: MemEngine::new(),
                fail: AtomicBool::new(false),
            });
            let mut wb = WriteBatch::new();
            for d in RangeDescriptor::initial(voters.clone()) {
                Replica::bootstrap(&mut wb, &d);
            }
            engine.write(&wb, true)?;
            let store = Store::open(store_config(id, compact), engine.clone(), id)?;
            self.nodes.insert(
                id,
                Node {
                    engine,
                    store: Some(store),
                },
            );
        }
        Ok(format!(
            "{n} nodes; ranges 1 [sys, user) and 2 [user, end) on nodes {voters:?}\n"
        ))
    }

    /// Runs every node's Ready rounds until it has no work; a node that
    /// fails stops (as its process would).
    fn process(&mut self, out: &mut String) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            if let Err(e) = self.process_node(id) {
                let _ = writeln!(out, "n{id} STOPPED: {e}");
                if let Some(n) = self.nodes.get_mut(&id) {
                    if let Some(mut s) = n.store.take() {
                        s.fail_all();
                    }
                }
            }
        }
    }

    fn process_node(&mut self, id: u64) -> Result<()> {
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        let engine = node.engine.clone();
        let Some(store) = node.store.as_mut() else {
            return Ok(());
        };
        for _ in 0..16 {
            let Some(mut round) = store.begin_round()? else {
                break;
            };
            let (wb, sync) = round.take_batch();
            engine.write(&wb, sync)?;
            let wb = store.persisted(&mut round)?;
            engine.write(&wb, false)?;
            store.finish_round(round)?;
            if !store.has_work() {
                break;
            }
        }
        // Snapshots are built at once (the task builds them off the Store task).
        for job in store.take_snapshot_jobs() {
            let snapshot = crate::raft::snapshot::build(&job).ok();
            store.handle(StoreMsg::SnapshotBuilt {
                range_id: job.range_id,
                snapshot,
            });
        }
        let sent = store.take_outbox();
        store.take_measure_requests();
        for (range_id, msg) in sent {
            let e = Envelope {
                from: id,
                to: msg.to,
                range_id,
                msg,
            };
            if !self.cut.contains(&(e.from, e.to)) {
                self.net.push(e);
            }
        }
        Ok(())
    }

    /// Delivers the matching messages in flight (in order), then lets the
    /// recipients process them. Returns how many were delivered.
    fn deliver(&mut self, f: &Filter, verbose: bool, out: &mut String) -> usize {
        let (now, keep): (Vec<Envelope>, Vec<Envelope>) = std::mem::take(&mut self.net)
            .into_iter()
            .partition(|e| f.matches(e));
        self.net = keep;
        let mut by_node: BTreeMap<u64, Vec<Envelope>> = BTreeMap::new();
        let mut n = 0;
        for e in now {
            if self.cut.contains(&(e.from, e.to)) {
                continue;
            }
            if verbose && e.range_id != PING_RANGE_ID {
                let _ = writeln!(out, "{}", describe(&e));
            }
            n += 1;
            by_node.entry(e.to).or_default().push(e);
        }
        for (to, es) in by_node {
            let Ok(store) = self.store(to) else { continue };
            let mut from_groups: BTreeMap<u64, Vec<(u64, Message)>> = BTreeMap::new();
            for e in es {
                from_groups
                    .entry(e.from)
                    .or_default()
                    .push((e.range_id, e.msg));
            }
            for (from, msgs) in from_groups {
                store.handle(StoreMsg::Raft { from, msgs });
            }
        }
        self.process(out);
        n
    }

    fn stabilize(&mut self, verbose: bool, out: &mut String) -> std::result::Result<(), BoxError> {
        self.process(out);
        for _ in 0..1000 {
            if self.net.is_empty() {
                return Ok(());
            }
            self.deliver(&Filter::default(), verbose, out);
        }
        Err("the cluster did not stabilize in 1000 delivery rounds".into())
    }

    fn request(
        &mut self,
        node: u64,
        label: String,
        msg: impl FnOnce(&mut Self) -> (StoreMsg, Pending),
    ) -> std::result::Result<(), BoxError> {
        let (m, p) = msg(self);
        self.store(node)?.handle(m);
        self.pending.push((label, p));
        Ok(())
    }

    /// A linearizable read (of the newest versions).
    fn read(
        &mut self,
        node: u64,
        label: String,
        op: crate::range::ReadOp,
    ) -> std::result::Result<(), BoxError> {
        self.request(node, label, |_| {
            let (tx, rx) = oneshot::channel();
            let m = StoreMsg::Read {
                op,
                consistency: super::handle::Consistency::Linearizable,
                ts: None,
                done: tx,
            };
            (m, Pending::Read(rx))
        })
    }

    fn write(
        &mut self,
        node: u64,
        label: String,
        ops: Vec<Op>,
    ) -> std::result::Result<(), BoxError> {
        // User data is written at a timestamp, as the server does: a
        // leader that asks for a fresh one (a new term) gets it at once.
        self.ts += 1;
        let cmd = crate::range::OnePcCmd {
            ops,
            start_ts: self.ts,
            commit_ts: self.ts,
            ..Default::default()
        };
        self.one_pc(node, label, cmd)
    }

    /// Prints answers that arrived.
    fn answers(&mut self, out: &mut String) {
        let mut still = Vec::new();
        for (label, p) in std::mem::take(&mut self.pending) {
            let shown = match p {
                Pending::Write(mut rx) => match rx.try_recv() {
                    Ok(Ok(())) => Some("ok".to_string()),
                    Ok(Err(e)) => Some(format!("error: {e}")),
                    Err(oneshot::error::TryRecvError::Closed) => {
                        Some("no answer (node stopped)".into())
                    }
                    Err(oneshot::error::TryRecvError::Empty) => {
                        still.push((label, Pending::Write(rx)));
                        continue;
                    }
                },
                Pending::Read(mut rx) => match rx.try_recv() {
                    Ok(Ok(ReadResult::Value(v))) => Some(match v {
                        Some(v) => String::from_utf8_lossy(&v).into_owned(),
                        None => "not found".into(),
                    }),
                    Ok(Ok(r)) => Some(format!("{r:?}")),
                    Ok(Err(e)) => Some(format!("error: {e}")),
                    Err(oneshot::error::TryRecvError::Closed) => {
                        Some("no answer (node stopped)".into())
                    }
                    Err(oneshot::error::TryRecvError::Empty) => {
                        still.push((label, Pending::Read(rx)));
                        continue;
                    }
                },
            };
            if let Some(s) = shown {
                let _ = writeln!(out, "{label} → {s}");
            }
        }
        self.pending = still;
    }

    fn briefs(&self) -> BTreeMap<(u64, u64), Brief> {
        let mut m = BTreeMap::new();
        for (&id, n) in &self.nodes {
            let Some(s) = &n.store else { continue };
            for r in s.status().ranges {
                m.insert(
                    (id, r.range_id),
                    Brief {
                        leader: r.is_leader,
                        leader_id: r.leader_id,
                        term: r.term,
                        commit: r.commit,
                        applied: r.applied,
                        voters: r.voters.clone(),
                        learners: r.learners.clone(),
                        span: span(&r.descriptor),
                    },
                );
            }
        }
        m
    }

    fn brief_line(node: u64, range: u64, b: &Brief) -> String {
        let role = if b.leader {
            "leader".to_string()
        } else if b.leader_id == 0 {
            "follower (no leader)".to_string()
        } else {
            format!("follower of n{}", b.leader_id)
        };
        let mut s = format!(
            "n{node} r{range} {role} term={} commit={} applied={} voters={:?}",
            b.term, b.commit, b.applied, b.voters
        );
        if !b.learners.is_empty() {
            let _ = write!(s, " learners={:?}", b.learners);
        }
        let _ = write!(s, " {}", b.span);
        s
    }

    /// Prints every replica whose state changed since the last command.
    fn changes(&mut self, out: &mut String) {
        let now = self.briefs();
        for (&(node, range), b) in &now {
            if self.last.get(&(node, range)) != Some(b) {
                let _ = writeln!(out, "{}", Self::brief_line(node, range, b));
            }
        }
        for &(node, range) in self.last.keys() {
            if !now.contains_key(&(node, range))
                && self.nodes.get(&node).is_some_and(|n| n.store.is_some())
            {
                let _ = writeln!(out, "n{node} r{range} gone");
            }
        }
        self.last = now;
    }
}

impl goldenscript::Runner for Harness {
    type Command = goldenscript::Command;

    fn run(
        &mut self,
        cmd: &goldenscript::Command,
        _ctx: &goldenscript::Context,
    ) -> std::result::Result<String, BoxError> {
        let mut out = String::new();
        self.command(cmd, &mut out)?;
        self.process(&mut out);
        self.answers(&mut out);
        if !matches!(cmd.name.as_str(), "status" | "data" | "hardstate") {
            self.changes(&mut out);
        }
        Ok(out)
    }
}

/// Every script in `src/node/testscripts/`.
#[test]
fn golden_scripts() {
    crate::golden::run_scripts::<Harness>("src/node/testscripts");
}
