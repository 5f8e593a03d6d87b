//! The history recorder: every client operation as invoke and completion
//! events with simulated timestamps (Jepsen style). An operation whose outcome
//! the client cannot know (an error or timeout on a write) is `Unknown`: it
//! may or may not have taken effect.

use std::sync::{Arc, Mutex};

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    Write {
        key: String,
        value: String,
    },
    Read {
        key: String,
    },
    /// A delete of a register, or the removal of a set member.
    Delete {
        key: String,
    },
    Scan {
        prefix: String,
    },
    /// An admin split at `key`.
    Split {
        key: String,
    },
    /// `count` timestamps from the oracle.
    Timestamps {
        count: u64,
    },
}

/// How it ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A write was applied.
    Written,
    /// A read returned this value (None: key absent).
    Read(Option<String>),
    /// A scan returned these keys.
    Scanned(Vec<String>),
    /// The oracle handed out timestamps `first..first + count`.
    Timestamps { first: u64, count: u64 },
    /// Definitely did not take effect.
    Failed(String),
    /// May or may not have taken effect.
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    pub client: usize,
    pub op: Op,
    /// Simulated microseconds since the run started.
    pub invoke_us: u64,
    pub complete_us: u64,
    pub outcome: Outcome,
}

/// A shared, append-only history.
#[derive(Clone, Default)]
pub struct History {
    entries: Arc<Mutex<Vec<Entry>>>,
    start: Arc<Mutex<Option<tokio::time::Instant>>>,
}

impl History {
    pub fn new() -> History {
        let h = History::default();
        *h.start.lock().unwrap() = Some(tokio::time::Instant::now());
        h
    }

    /// Simulated microseconds since the history began.
    pub fn now_us(&self) -> u64 {
        let start = self
            .start
            .lock()
            .unwrap()
            .unwrap_or_else(tokio::time::Instant::now);
        start.elapsed().as_micros() as u64
    }

    pub fn record(&self, e: Entry) {
        self.entries.lock().unwrap().push(e);
    }

    pub fn entries(&self) -> Vec<Entry> {
        let mut v = self.entries.lock().unwrap().clone();
        v.sort_by_key(|e| (e.invoke_us, e.client));
        v
    }
}
