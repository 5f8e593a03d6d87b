//! The harness's commands (see the module docs for the list): one method
//! each, behind one dispatcher.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use goldenscript::ArgumentConsumer;
use tokio::sync::oneshot;

use super::{describe, key, num, rest, store_config, BoxError, Envelope, Filter, Harness, Pending};
use crate::api::ReplicaChange;
use crate::error::Result;
use crate::keys;
use crate::node::handle::StoreMsg;
use crate::node::raft_in::PING_RANGE_ID;
use crate::node::store::Store;
use crate::range::{Op, ReadOp};
use crate::storage::Engine;

type Outcome = std::result::Result<(), BoxError>;

fn node_arg(args: &mut ArgumentConsumer, usage: &str) -> std::result::Result<u64, BoxError> {
    num(args.next_pos().ok_or(format!("usage: {usage}"))?)
}

/// Node ids given as positional arguments; all nodes if none.
fn node_list(h: &Harness, args: &mut ArgumentConsumer) -> std::result::Result<Vec<u64>, BoxError> {
    let ids: Vec<u64> = rest(args)
        .iter()
        .map(|a| num(a))
        .collect::<std::result::Result<_, _>>()?;
    Ok(if ids.is_empty() {
        h.nodes.keys().copied().collect()
    } else {
        ids
    })
}

fn filter(args: &mut ArgumentConsumer) -> std::result::Result<Filter, BoxError> {
    let node = |s: Option<String>| s.map(|s| num(&s)).transpose();
    Ok(Filter {
        from: node(key::<String>(args, "from")?)?,
        to: node(key::<String>(args, "to")?)?,
        kind: key::<String>(args, "type")?,
        range: node(key::<String>(args, "range")?)?,
    })
}

impl Harness {
    pub(super) fn command(&mut self, cmd: &goldenscript::Command, out: &mut String) -> Outcome {
        let mut args = cmd.consume_args();
        let verbose = key::<bool>(&mut args, "verbose")?.unwrap_or(false);
        let a = &mut args;
        match cmd.name.as_str() {
            "cluster" => {
                let n = key::<u64>(a, "nodes")?.unwrap_or(3);
                let compact = key::<u64>(a, "compact")?.unwrap_or(1000);
                out.push_str(&self.cluster(n, compact)?);
            }
            "campaign" => self.campaign(a)?,
            "tick" => self.tick(a, out)?,
            "run" => self.run_ticks(a, verbose, out)?,
            "deliver" => {
                let f = filter(a)?;
                if self.deliver(&f, true, out) == 0 {
                    out.push_str("nothing to deliver\n");
                }
            }
            "drop" | "hold" => self.intercept(&cmd.name, a, out)?,
            "release" => {
                let _ = writeln!(out, "{} held messages back in flight", self.held.len());
                self.net.append(&mut self.held);
            }
            "stabilize" => self.stabilize(verbose, out)?,
            "put" | "delete" | "get" => self.kv(&cmd.name, a)?,
            "prewrite" | "commit" | "rollback" | "check-txn" | "txn-status" | "commit-one-pc"
            | "gc" => self.txn_command(&cmd.name, a)?,
            "split" => self.split(a)?,
            "change" => self.change(a)?,
            "freeze" => self.freeze(a)?,
            "merge" => self.merge(a)?,
            "partition" => self.partition(a, out)?,
            "heal" => {
                self.cut.clear();
                out.push_str("every link works again\n");
            }
            "crash" => self.crash(a, out)?,
            "restart" => self.restart(a, out)?,
            "fail-reads" => {
                let node = node_arg(a, "fail-reads <node> on|off")?;
                let on = a.next_pos() == Some("on");
                let n = self.nodes.get(&node).ok_or("no such node")?;
                n.engine.fail.store(on, Ordering::Relaxed);
            }
            "hardstate" => self.hard_state(a, out)?,
            "status" => self.status(a.next_pos().map(num).transpose()?, out),
            "data" => self.data(a.next_pos().map(num).transpose()?, out)?,
            other => return Err(format!("unknown command {other}").into()),
        }
        Ok(())
    }

    fn campaign(&mut self, a: &mut ArgumentConsumer) -> Outcome {
        let node = node_arg(a, "campaign <node> [range=2]")?;
        let range = key::<u64>(a, "range")?.unwrap_or(2);
        let s = self.store(node)?;
        s.replicas
            .get_mut(&range)
            .ok_or("no such replica")?
            .campaign()?;
        s.note(range);
        Ok(())
    }

    fn tick_nodes(&mut self, ids: &[u64]) {
        for &id in ids {
            if let Ok(s) = self.store(id) {
                s.tick();
            }
        }
    }

    fn tick(&mut self, a: &mut ArgumentConsumer, out: &mut String) -> Outcome {
        let times = key::<u64>(a, "times")?.unwrap_or(1);
        let ids = node_list(self, a)?;
        for _ in 0..times {
            self.tick_nodes(&ids);
            self.process(out);
        }
        Ok(())
    }

    fn run_ticks(&mut self, a: &mut ArgumentConsumer, verbose: bool, out: &mut String) -> Outcome {
        let ticks = key::<u64>(a, "ticks")?.unwrap_or(1);
        let ids = node_list(self, a)?;
        for _ in 0..ticks {
            self.tick_nodes(&ids);
            self.stabilize(verbose, out)?;
        }
        Ok(())
    }

    /// `drop` or `hold` the matching messages in flight.
    fn intercept(&mut self, what: &str, a: &mut ArgumentConsumer, out: &mut String) -> Outcome {
        let f = filter(a)?;
        let (hit, keep): (Vec<Envelope>, Vec<Envelope>) = std::mem::take(&mut self.net)
            .into_iter()
            .partition(|e| f.matches(e));
        self.net = keep;
        for e in hit.iter().filter(|e| e.range_id != PING_RANGE_ID) {
            let _ = writeln!(out, "{what} {}", describe(e));
        }
        if what == "hold" {
            self.held.extend(hit);
        }
        Ok(())
    }

    fn write_like(
        &mut self,
        node: u64,
        label: String,
        make: impl FnOnce(oneshot::Sender<Result<()>>) -> StoreMsg,
    ) -> Outcome {
        self.request(node, label, |_| {
            let (tx, rx) = oneshot::channel();
            (make(tx), Pending::Write(rx))
        })
    }

    fn kv(&mut self, name: &str, a: &mut ArgumentConsumer) -> Outcome {
        let node = node_arg(a, "<node> <key> [value]")?;
        let key = a.next_pos().ok_or("<node> <key> [value]")?.to_string();
        let k = keys::data_key(key.as_bytes());
        match name {
            "get" => self.read(node, format!("n{node}: get {key}"), ReadOp::Get(k)),
            "delete" => self.write(node, format!("n{node}: delete {key}"), vec![Op::delete(k)]),
            _ => {
                let value = a.next_pos().ok_or("<node> <key> <value>")?.to_string();
                let op = Op::put(k, value.clone().into_bytes());
                self.write(node, format!("n{node}: {name} {key}={value}"), vec![op])
            }
        }
    }

    fn split(&mut self, a: &mut ArgumentConsumer) -> Outcome {
        let node = node_arg(a, "split <node> <key>")?;
        let key = a.next_pos().ok_or("split <node> <key>")?.to_string();
        let label = format!("n{node}: split at {key}");
        self.write_like(node, label, |tx| StoreMsg::Split {
            key: keys::data_key(key.as_bytes()),
            sticky: true,
            done: tx,
        })
    }

    fn change(&mut self, a: &mut ArgumentConsumer) -> Outcome {
        let usage = "change <node> <range> add-learner|promote|remove|transfer <node>";
        let node = node_arg(a, usage)?;
        let range = node_arg(a, usage)?;
        let op = a.next_pos().ok_or(usage)?.to_string();
        let target = node_arg(a, usage)?;
        let change = match op.as_str() {
            "add-learner" => ReplicaChange::AddLearner(target),
            "promote" => ReplicaChange::Promote(target),
            "remove" => ReplicaChange::Remove(target),
            "transfer" => ReplicaChange::TransferLeader(target),
            o => return Err(format!("unknown change {o}").into()),
        };
        let label = format!("n{node}: r{range} {op} n{target}");
        self.write_like(node, label, |tx| StoreMsg::ChangeReplicas {
            range_id: range,
            change,
            expected_conf_ver: 0,
            done: tx,
        })
    }

    fn freeze(&mut self, a: &mut ArgumentConsumer) -> Outcome {
        let node = node_arg(a, "freeze <node> <range>")?;
        let range = node_arg(a, "freeze <node> <range>")?;
        let r = self
            .store(node)?
            .replicas
            .get(&range)
            .ok_or("no such replica")?;
        let version = r.descriptor().version;
        let label = format!("n{node}: freeze r{range}");
        self.write_like(node, label, |tx| StoreMsg::Freeze {
            range_id: range,
            expected_version: version,
            done: tx,
        })
    }

    /// Absorbs the frozen right range, its data read from the node's disk
    /// (as `StoreHandle::freeze` does).
    fn merge(&mut self, a: &mut ArgumentConsumer) -> Outcome {
        let usage = "merge <node> <left> <right>";
        let node = node_arg(a, usage)?;
        let left = node_arg(a, usage)?;
        let right = node_arg(a, usage)?;
        let store = self.store(node)?;
        let replica = |id| store.replicas.get(&id).ok_or("no such replica");
        let rhs = replica(right)?.frozen_descriptor()?;
        let version = replica(left)?.descriptor().version;
        let pairs = store
            .engine
            .scan(&rhs.start_key, &rhs.end_key, usize::MAX, false)?;
        let label = format!("n{node}: merge r{right} into r{left}");
        self.write_like(node, label, |tx| StoreMsg::Merge {
            range_id: left,
            expected_version: version,
            rhs,
            pairs,
            done: tx,
        })
    }

    fn partition(&mut self, a: &mut ArgumentConsumer, out: &mut String) -> Outcome {
        let side: BTreeSet<u64> = rest(a)
            .iter()
            .map(|x| num(x))
            .collect::<std::result::Result<_, _>>()?;
        for &x in &side {
            for &y in self.nodes.keys() {
                if !side.contains(&y) {
                    self.cut.insert((x, y));
                    self.cut.insert((y, x));
                }
            }
        }
        let _ = writeln!(out, "cut {side:?} off from the rest");
        Ok(())
    }

    fn crash(&mut self, a: &mut ArgumentConsumer, out: &mut String) -> Outcome {
        let node = node_arg(a, "crash <node>")?;
        let n = self.nodes.get_mut(&node).ok_or("no such node")?;
        if let Some(mut s) = n.store.take() {
            s.fail_all();
        }
        n.engine.mem.crash();
        self.net.retain(|e| e.from != node && e.to != node);
        let _ = writeln!(out, "n{node} crashed: unsynced writes lost");
        Ok(())
    }

    fn restart(&mut self, a: &mut ArgumentConsumer, out: &mut String) -> Outcome {
        let node = node_arg(a, "restart <node>")?;
        let compact = self.compact;
        let n = self.nodes.get_mut(&node).ok_or("no such node")?;
        if n.store.is_some() {
            return Err(format!("node {node} is running").into());
        }
        n.store = Some(Store::open(
            store_config(node, compact),
            n.engine.clone(),
            node * 101,
        )?);
        let _ = writeln!(out, "n{node} restarted");
        Ok(())
    }

    fn hard_state(&mut self, a: &mut ArgumentConsumer, out: &mut String) -> Outcome {
        let node = node_arg(a, "hardstate <node> <range>")?;
        let range = node_arg(a, "hardstate <node> <range>")?;
        let n = self.nodes.get(&node).ok_or("no such node")?;
        match n.engine.mem.get(&keys::hard_state_key(range))? {
            Some(b) => {
                let hs = <raft::eraftpb::HardState as protobuf::Message>::parse_from_bytes(&b)?;
                let _ = writeln!(
                    out,
                    "n{node} r{range} persisted hard state: term={} vote={} commit={}",
                    hs.term, hs.vote, hs.commit
                );
            }
            None => {
                let _ = writeln!(out, "n{node} r{range}: no hard state on disk");
            }
        }
        Ok(())
    }

    fn status(&self, only: Option<u64>, out: &mut String) {
        for ((node, range), b) in self.briefs() {
            if only.is_none_or(|n| n == node) {
                let _ = writeln!(out, "{}", Self::brief_line(node, range, &b));
            }
        }
        for (&id, n) in &self.nodes {
            if n.store.is_none() && only.is_none_or(|o| o == id) {
                let _ = writeln!(out, "n{id} down");
            }
        }
    }

    fn data(&self, only: Option<u64>, out: &mut String) -> std::result::Result<(), BoxError> {
        let (lo, hi) = keys::user_data_bounds();
        for (&id, n) in &self.nodes {
            if only.is_some_and(|o| o != id) {
                continue;
            }
            // What a read of the newest versions sees on this replica.
            let visible = crate::mvcc::Reader::new(&n.engine.mem)
                .scan(&lo, &hi, crate::api::Timestamp::MAX, usize::MAX, false)?
                .map_err(|(k, _)| format!("{} is locked", keys::display(&k)))?;
            let pairs: Vec<String> = visible
                .into_iter()
                .map(|(k, v)| format!("{}={}", keys::display(&k), String::from_utf8_lossy(&v)))
                .collect();
            let _ = writeln!(out, "n{id}: {}", pairs.join(" "));
        }
        Ok(())
    }
}
