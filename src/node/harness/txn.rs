//! The harness's transaction commands (two-phase commit steps on the node
//! that leads the key's range):
//! ```text
//! prewrite <node> start=<ts> primary=<key> [ttl=<ms>] <key>=<value>... [delete=<key>]
//! commit <node> start=<ts> commit=<ts> <key>...     rollback <node> start=<ts> <key>...
//! check-txn <node> start=<ts> primary=<key> now=<ts>   (rolls back an expired primary)
//! txn-status <node> start=<ts> primary=<key>
//! commit-one-pc <node> start=<ts> commit=<ts> [read=<key>]... <key>=<value>...
//! gc <node> <range> horizon=<ts> <key>...   (MVCC GC of the keys, as the node's GC proposes it)
//! ```
//! (`commit-one-pc`: a one-range transaction in one command, proposed at
//! exactly `commit`; a leader that wants a timestamp from its own term
//! gets it at once, as the server's retry would.)
//! Timestamps are given as milliseconds (physical part; logical 0), so lock
//! TTLs compare with `now` as in production.

use goldenscript::ArgumentConsumer;
use tokio::sync::oneshot;

use super::{key, num, BoxError, Harness, Pending};
use crate::api::Timestamp;
use crate::error::Error;
use crate::keys;
use crate::node::handle::StoreMsg;
use crate::range::{CheckTxnCmd, FinishCmd, Kind, OnePcCmd, Op, PrewriteCmd, ReadOp};

type Outcome = std::result::Result<(), BoxError>;

fn ts(a: &mut ArgumentConsumer, name: &str) -> std::result::Result<u64, BoxError> {
    let ms: u64 = key(a, name)?.ok_or(format!("{name}=<ms> is required"))?;
    Ok(Timestamp::new(ms, 0).0)
}

impl Harness {
    pub(super) fn txn_command(&mut self, name: &str, a: &mut ArgumentConsumer) -> Outcome {
        let node = num(a.next_pos().ok_or("usage: <command> <node> ...")?)?;
        let label = format!("n{node}: {name}");
        match name {
            "prewrite" => {
                let start_ts = ts(a, "start")?;
                let primary: String = key(a, "primary")?.ok_or("primary=<key> is required")?;
                let ttl_ms = key(a, "ttl")?.unwrap_or(3000);
                let mut ops = Vec::new();
                while let Some(k) = a.take_key("delete") {
                    ops.push(Op::delete(keys::data_key(k.as_bytes())));
                }
                while let Some((k, v)) = a.next_key() {
                    ops.push(Op::put(keys::data_key(k.as_bytes()), v.as_bytes().to_vec()));
                }
                let kind = Kind::Prewrite(PrewriteCmd {
                    ops,
                    primary: keys::data_key(primary.as_bytes()),
                    start_ts,
                    ttl_ms,
                });
                self.txn_step(node, label, kind)
            }
            "commit" | "rollback" => {
                let start_ts = ts(a, "start")?;
                let commit_ts = if name == "commit" {
                    ts(a, "commit")?
                } else {
                    0
                };
                let keys_: Vec<Vec<u8>> = super::rest(a)
                    .iter()
                    .map(|k| keys::data_key(k.as_bytes()))
                    .collect();
                let kind = Kind::Finish(FinishCmd {
                    keys: keys_,
                    start_ts,
                    commit_ts,
                    ..Default::default()
                });
                self.txn_step(node, label, kind)
            }
            "check-txn" => {
                let start_ts = ts(a, "start")?;
                let now_ts = ts(a, "now")?;
                let primary: String = key(a, "primary")?.ok_or("primary=<key> is required")?;
                let kind = Kind::CheckTxn(CheckTxnCmd {
                    primary: keys::data_key(primary.as_bytes()),
                    start_ts,
                    now_ts,
                    ..Default::default()
                });
                self.txn_step(node, label, kind)
            }
            "txn-status" => {
                let start_ts = ts(a, "start")?;
                let primary: String = key(a, "primary")?.ok_or("primary=<key> is required")?;
                let op = ReadOp::TxnStatus {
                    primary: keys::data_key(primary.as_bytes()),
                    start_ts,
                };
                self.read(node, label, op)
            }
            "commit-one-pc" => {
                let start_ts = ts(a, "start")?;
                let commit_ts = ts(a, "commit")?;
                let mut reads = Vec::new();
                while let Some(k) = a.take_key("read") {
                    reads.push(keys::data_key(k.as_bytes()));
                }
                let mut ops = Vec::new();
                while let Some((k, v)) = a.next_key() {
                    ops.push(Op::put(keys::data_key(k.as_bytes()), v.as_bytes().to_vec()));
                }
                let cmd = OnePcCmd {
                    ops,
                    start_ts,
                    commit_ts,
                    reads,
                    ..Default::default()
                };
                self.one_pc(node, label, cmd)
            }
            "gc" => {
                let range_id = num(a
                    .next_pos()
                    .ok_or("usage: gc <node> <range> horizon=<ts> <key>...")?)?;
                let horizon = Timestamp(ts(a, "horizon")?);
                let keys_: Vec<Vec<u8>> = super::rest(a)
                    .iter()
                    .map(|k| keys::data_key(k.as_bytes()))
                    .collect();
                let store = self.store(node)?;
                let version = store
                    .replicas
                    .get(&range_id)
                    .ok_or("no such replica")?
                    .descriptor()
                    .version;
                store.propose_gc(range_id, version, horizon, keys_);
                Ok(())
            }
            other => Err(format!("unknown transaction command {other}").into()),
        }
    }

    fn txn_step(&mut self, node: u64, label: String, kind: Kind) -> Outcome {
        self.request(node, label, |_| {
            let (tx, rx) = oneshot::channel();
            (StoreMsg::Txn { kind, done: tx }, Pending::Write(rx))
        })
    }

    /// Proposes `cmd` at its own timestamp (seeding the leader's floor
    /// first if it asks to be).
    pub(super) fn one_pc(&mut self, node: u64, label: String, cmd: OnePcCmd) -> Outcome {
        let mut seed_term = None;
        loop {
            let (tx, mut rx) = oneshot::channel();
            self.store(node)?.handle(StoreMsg::OnePc {
                cmd: cmd.clone(),
                seed_term,
                done: tx,
            });
            match rx.try_recv() {
                Ok(Err(Error::StaleTimestamp { term, .. })) if seed_term.is_none() => {
                    seed_term = Some(term);
                }
                Ok(r) => {
                    let (tx, rx) = oneshot::channel();
                    let _ = tx.send(r);
                    self.pending.push((label, Pending::Write(rx)));
                    return Ok(());
                }
                Err(_) => {
                    self.pending.push((label, Pending::Write(rx)));
                    return Ok(());
                }
            }
        }
    }
}
