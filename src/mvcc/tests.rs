//! Golden scripts for MVCC (`src/mvcc/testscripts/*`): the records an
//! action writes and what reads see, over a MemEngine. Timestamps are plain
//! numbers; keys are user keys.
//!
//! ```text
//! write <ts> k=v ... [delete=k]            one-step write at <ts> (one_pc, start = commit)
//! prewrite start=<ts> primary=<k> [ttl=<ms>] k=v ... [delete=k]
//! commit start=<ts> commit=<ts> <k>...      rollback start=<ts> <k>...
//! status start=<ts> primary=<k> now=<ts>    check_status (writes what it decides)
//! resolve start=<ts> <k> committed=<ts> | resolve start=<ts> <k> rolledback=true
//! heartbeat start=<ts> primary=<k> ttl=<ms>
//! validate start=<ts> commit=<ts> [<k>...] [span=<from>..<to>]
//! onepc start=<ts> commit=<ts> [read=<k>] [span=<from>..<to>] k=v ... [delete=k]
//! get <k> ts=<ts>     scan ts=<ts> [from=<k>] [to=<k>] [reverse=true]
//! history since=<ts> ts=<ts> [from=<k>] [to=<k>] [prev=true] [limit=<n>]
//! gc horizon=<ts>     dump
//! ```

use std::error::Error as StdError;
use std::fmt::Write as _;

use super::*;
use crate::keys::{self, MvccRecord};
use crate::storage::{Engine, MemEngine, WriteBatch};

type BoxError = Box<dyn StdError>;

#[derive(Default)]
struct Runner {
    engine: MemEngine,
}

fn ts(s: &str) -> std::result::Result<Timestamp, BoxError> {
    Ok(Timestamp(
        s.parse().map_err(|_| format!("bad timestamp {s:?}"))?,
    ))
}

fn dk(k: &str) -> Vec<u8> {
    keys::data_key(k.as_bytes())
}

fn show(k: &[u8]) -> String {
    keys::display(k)
}

fn show_err(e: &TxnError) -> String {
    match e {
        TxnError::Locked { key, lock } => format!(
            "locked: {} by the transaction started at {} (primary {})",
            show(key),
            lock.start_ts,
            show(&lock.primary)
        ),
        TxnError::Conflict { key, committed } => {
            format!("conflict: {} was written at {}", show(key), committed.0)
        }
        TxnError::Aborted { key } => format!("aborted: {} holds a rollback record", show(key)),
        TxnError::LockLost { key } => format!("lock lost: {}", show(key)),
        TxnError::Committed { key, commit_ts } => {
            format!("committed: {} at {}", show(key), commit_ts.0)
        }
    }
}

/// The mutations and named arguments of a command.
struct Parsed {
    muts: Vec<Mutation>,
    named: Vec<(String, String)>,
    positional: Vec<String>,
}

const NAMED: [&str; 17] = [
    "since",
    "prev",
    "limit",
    "start",
    "commit",
    "primary",
    "ttl",
    "now",
    "committed",
    "rolledback",
    "span",
    "read",
    "ts",
    "from",
    "to",
    "reverse",
    "horizon",
];

fn parse(cmd: &goldenscript::Command) -> Parsed {
    let mut p = Parsed {
        muts: Vec::new(),
        named: Vec::new(),
        positional: Vec::new(),
    };
    for a in &cmd.args {
        match a {
            goldenscript::Argument::Positional(v) => p.positional.push(v.clone()),
            goldenscript::Argument::KeyValue(k, v) if k == "delete" => {
                p.muts.push(Mutation::Delete { key: dk(v) })
            }
            goldenscript::Argument::KeyValue(k, v) if NAMED.contains(&k.as_str()) => {
                p.named.push((k.clone(), v.clone()))
            }
            goldenscript::Argument::KeyValue(k, v) => p.muts.push(Mutation::Put {
                key: dk(k),
                value: v.clone().into_bytes(),
                lease: 0,
            }),
            _ => {}
        }
    }
    p
}

impl Parsed {
    fn get(&self, name: &str) -> Option<&str> {
        self.named
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn ts(&self, name: &str) -> std::result::Result<Timestamp, BoxError> {
        ts(self.get(name).ok_or(format!("{name}= is required"))?)
    }
    fn all(&self, name: &str) -> Vec<&str> {
        self.named
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    fn spans(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.all("span")
            .iter()
            .filter_map(|s| s.split_once(".."))
            .map(|(a, b)| (dk(a), dk(b)))
            .collect()
    }
}

impl Runner {
    fn apply(&self, wb: WriteBatch, out: &mut String) -> std::result::Result<(), BoxError> {
        let n = wb.len();
        self.engine.write(&wb, true)?;
        let _ = writeln!(out, "ok ({n} writes)");
        Ok(())
    }

    fn outcome(
        &self,
        o: Outcome<WriteBatch>,
        out: &mut String,
    ) -> std::result::Result<(), BoxError> {
        match o? {
            Ok(wb) => self.apply(wb, out),
            Err(e) => {
                let _ = writeln!(out, "{}", show_err(&e));
                Ok(())
            }
        }
    }

    fn dump(&self, out: &mut String) {
        for (k, v) in self.engine.dump() {
            match keys::split_mvcc(&k) {
                Some((key, MvccRecord::Lock)) => {
                    let l = Lock::decode(&v).expect("lock");
                    let what = match WriteKind::try_from(l.kind) {
                        Ok(WriteKind::Put) => format!("put {}", String::from_utf8_lossy(&l.value)),
                        _ => "delete".to_string(),
                    };
                    let _ = writeln!(
                        out,
                        "{} lock start={} primary={} ttl={} {what}",
                        show(key),
                        l.start_ts,
                        show(&l.primary),
                        l.ttl_ms
                    );
                }
                Some((key, MvccRecord::Version(t))) => {
                    let w = Write::decode(&v).expect("write");
                    let what = match w.write_kind() {
                        Ok(WriteKind::Put) => format!("put {}", String::from_utf8_lossy(&w.value)),
                        Ok(WriteKind::Delete) => "delete".into(),
                        _ => "rollback".into(),
                    };
                    let _ = writeln!(out, "{}@{t} {what} (start {})", show(key), w.start_ts);
                }
                None => {
                    let _ = writeln!(out, "{} (not an MVCC record)", show(&k));
                }
            }
        }
    }

    fn read(&self, p: &Parsed, name: &str, out: &mut String) -> std::result::Result<(), BoxError> {
        let r = Reader::new(&self.engine);
        let at = p.ts("ts")?;
        if name == "get" {
            let key = p.positional.first().ok_or("get <key> ts=<ts>")?;
            let shown = match r.get(&dk(key), at)? {
                Visible::Value(Some(v)) => String::from_utf8_lossy(&v).into_owned(),
                Visible::Value(None) => "not found".into(),
                Visible::Locked(l) => {
                    format!("locked by the transaction started at {}", l.start_ts)
                }
            };
            let _ = writeln!(out, "{key} → {shown}");
            return Ok(());
        }
        let (lo, hi) = keys::user_data_bounds();
        let from = p.get("from").map(dk).unwrap_or(lo);
        let to = p.get("to").map(dk).unwrap_or(hi);
        match r.scan(&from, &to, at, usize::MAX, p.get("reverse") == Some("true"))? {
            Ok(pairs) => {
                let shown: Vec<String> = pairs
                    .iter()
                    .map(|(k, v)| format!("{}={}", show(k), String::from_utf8_lossy(v)))
                    .collect();
                let _ = writeln!(out, "{}", shown.join(" "));
            }
            Err((_, l)) => {
                let _ = writeln!(out, "locked by the transaction started at {}", l.start_ts);
            }
        }
        Ok(())
    }

    /// `history`: one line per event, then the locks and where to resume.
    fn history(&self, p: &Parsed, out: &mut String) -> std::result::Result<(), BoxError> {
        let r = Reader::new(&self.engine);
        let (lo, hi) = keys::user_data_bounds();
        let from = p.get("from").map(dk).unwrap_or(lo);
        let to = p.get("to").map(dk).unwrap_or(hi);
        let limit = p
            .get("limit")
            .map(str::parse)
            .transpose()?
            .unwrap_or(usize::MAX);
        let prev = p.get("prev") == Some("true");
        let at = p.ts("ts")?;
        let h = r.history(&from, &to, p.ts("since")?, at, limit, prev)?;
        let text = |v: &Option<Item>| match v {
            Some(i) => format!(
                "{} v{} since {}",
                String::from_utf8_lossy(&i.value),
                i.version,
                i.create_ts.0
            ),
            None => "(none)".into(),
        };
        for e in &h.events {
            let what = match &e.value {
                Some(v) => format!(
                    "put {} v{} since {}",
                    String::from_utf8_lossy(v),
                    e.version,
                    e.create_ts.0
                ),
                None => "delete".into(),
            };
            let was = if prev {
                format!(" (was {})", text(&e.prev))
            } else {
                String::new()
            };
            let _ = writeln!(out, "{}@{} {what}{was}", show(&e.key), e.ts.0);
        }
        for (k, l) in &h.locks {
            let _ = writeln!(
                out,
                "{} locked by the transaction started at {}",
                show(k),
                l.start_ts
            );
        }
        let _ = writeln!(out, "final through {}", h.held(at).0);
        if let Some(k) = &h.resume {
            let _ = writeln!(out, "resume at {}", show(k));
        }
        Ok(())
    }

    fn action(
        &mut self,
        name: &str,
        p: &Parsed,
        out: &mut String,
    ) -> std::result::Result<(), BoxError> {
        let r = Reader::new(&self.engine);
        let keys_: Vec<Vec<u8>> = p.positional.iter().map(|k| dk(k)).collect();
        match name {
            "write" => {
                let at = ts(p.positional.first().ok_or("write <ts> k=v ...")?)?;
                self.outcome(one_pc(&r, &p.muts, &[], &[], at, at), out)
            }
            "prewrite" => {
                let primary = dk(p.get("primary").ok_or("primary= is required")?);
                let ttl = p.get("ttl").map(|t| t.parse()).transpose()?.unwrap_or(3000);
                self.outcome(prewrite(&r, &p.muts, &primary, p.ts("start")?, ttl), out)
            }
            "commit" => self.outcome(
                commit(&r, &keys_, p.ts("start")?, p.ts("commit")?, false),
                out,
            ),
            "rollback" => self.outcome(rollback(&r, &keys_, p.ts("start")?), out),
            "status" => {
                let primary = dk(p.get("primary").ok_or("primary= is required")?);
                let (st, wb) = check_status(&r, &primary, p.ts("start")?, p.ts("now")?)?;
                let _ = writeln!(out, "{st:?}");
                self.apply(wb, out)
            }
            "resolve" => {
                let fate = match p.get("committed") {
                    Some(c) => TxnStatus::Committed { commit_ts: ts(c)? },
                    None => TxnStatus::RolledBack,
                };
                let key = keys_.first().ok_or("resolve start=<ts> <key> ...")?;
                self.outcome(resolve(&r, key, p.ts("start")?, &fate), out)
            }
            "heartbeat" => {
                let primary = dk(p.get("primary").ok_or("primary= is required")?);
                let ttl = p.get("ttl").ok_or("ttl= is required")?.parse()?;
                self.outcome(heartbeat(&r, &primary, p.ts("start")?, ttl), out)
            }
            "validate" => {
                let shown = match validate(&r, &keys_, &p.spans(), p.ts("start")?, p.ts("commit")?)?
                {
                    Ok(()) => "valid".to_string(),
                    Err(e) => show_err(&e),
                };
                let _ = writeln!(out, "{shown}");
                Ok(())
            }
            "onepc" => {
                let reads: Vec<Vec<u8>> = p.all("read").iter().map(|k| dk(k)).collect();
                let o = one_pc(
                    &r,
                    &p.muts,
                    &reads,
                    &p.spans(),
                    p.ts("start")?,
                    p.ts("commit")?,
                );
                self.outcome(o, out)
            }
            "gc" => {
                let (lo, hi) = keys::user_data_bounds();
                let wb = gc(&r, &lo, &hi, p.ts("horizon")?)?;
                self.apply(wb, out)
            }
            other => Err(format!("unknown command {other}").into()),
        }
    }
}

impl goldenscript::Runner for Runner {
    type Command = goldenscript::Command;

    fn run(
        &mut self,
        cmd: &goldenscript::Command,
        _ctx: &goldenscript::Context,
    ) -> std::result::Result<String, BoxError> {
        let mut out = String::new();
        let p = parse(cmd);
        match cmd.name.as_str() {
            "dump" => self.dump(&mut out),
            "get" | "scan" => self.read(&p, &cmd.name, &mut out)?,
            "history" => self.history(&p, &mut out)?,
            name => self.action(name, &p, &mut out)?,
        }
        Ok(out)
    }
}

#[test]
fn golden_scripts() {
    crate::golden::run_scripts::<Runner>("src/mvcc/testscripts");
}

/// Scans and point reads against a model of the records, over more records
/// than one chunk holds, with deletes, rollbacks, locks above the read
/// timestamp and keys with many versions (a forward scan steps over a few
/// older versions and seeks past the rest; a point read below many newer
/// versions seeks to its timestamp), forward and reversed, at several
/// limits.
#[test]
fn scans_and_point_reads_see_what_the_model_sees() {
    let engine = MemEngine::new();
    let mut wb = WriteBatch::new();
    let at = |ts: u64, kind: WriteKind, value: &[u8]| {
        Write {
            kind: kind as i32,
            start_ts: ts,
            value: value.to_vec(),
            pending_secondaries: false,
            ..Default::default()
        }
        .encode()
    };
    // Every key's versions: (timestamp, kind, value).
    type Versions = Vec<(u64, WriteKind, Vec<u8>)>;
    let mut model: Vec<(Vec<u8>, Versions)> = Vec::new();
    for i in 0..300u64 {
        let k = dk(&format!("k{i:03}"));
        let mut versions = Vec::new();
        // Key i has 1 + i % 4 versions; every fifth ends deleted at 40;
        // every thirteenth has 29 more, at 41..=69.
        for v in 0..=(i % 4) {
            let t = 10 + v * 10;
            versions.push((t, WriteKind::Put, format!("{i}@{t}").into_bytes()));
        }
        if i % 5 == 0 {
            versions.push((40, WriteKind::Delete, vec![]));
        }
        if i % 7 == 0 {
            versions.retain(|(t, _, _)| *t != 25);
            versions.push((25, WriteKind::Rollback, vec![]));
        }
        if i % 13 == 0 {
            for t in 41..=69 {
                versions.push((t, WriteKind::Put, format!("{i}@{t}").into_bytes()));
            }
        }
        for (t, kind, value) in &versions {
            wb.put(keys::version_key(&k, *t), at(*t, *kind, value));
        }
        model.push((k.clone(), versions));
        if i % 11 == 0 {
            let lock = Lock {
                start_ts: 100,
                primary: k.clone(),
                ttl_ms: 1,
                kind: WriteKind::Put as i32,
                value: vec![],
                lease: 0,
            };
            wb.put(keys::lock_key(&k), lock.encode());
        }
    }
    engine.write(&wb, true).unwrap();
    let r = Reader::new(&engine);
    let (from, to) = (dk("k000"), dk("k9"));
    for read_ts in [15u64, 35, 45, 60, 99] {
        let mut want = Vec::new();
        for (k, versions) in &model {
            let newest = versions
                .iter()
                .filter(|(t, kind, _)| *t <= read_ts && *kind != WriteKind::Rollback)
                .max_by_key(|(t, _, _)| *t);
            let seen = match newest {
                Some((_, WriteKind::Put, v)) => Some(v.clone()),
                _ => None,
            };
            let read_ts = Timestamp(read_ts);
            assert_eq!(r.get(k, read_ts).unwrap(), Visible::Value(seen.clone()));
            if let Some(v) = seen {
                want.push((k.clone(), v));
            }
        }
        let read_ts = Timestamp(read_ts);
        for limit in [1usize, 7, 100, 255, 256, 257, 1000] {
            let got = r.scan(&from, &to, read_ts, limit, false).unwrap().unwrap();
            let n = limit.min(want.len());
            assert_eq!(
                got,
                want[..n].to_vec(),
                "forward ts={read_ts} limit={limit}"
            );
            let got = r.scan(&from, &to, read_ts, limit, true).unwrap().unwrap();
            let rev: Vec<_> = want.iter().rev().take(limit).cloned().collect();
            assert_eq!(got, rev, "reversed ts={read_ts} limit={limit}");
        }
    }
    // At or above the locks' start, a scan stops at the first lock.
    let locked = r.scan(&from, &to, Timestamp(100), 1000, false).unwrap();
    assert_eq!(
        locked.map_err(|(k, l)| (k, l.start_ts)),
        Err((dk("k000"), 100))
    );
}
