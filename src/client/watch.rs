//! Watches: every committed change of a span, in commit order, exactly
//! once, from a revision (an MVCC commit timestamp) on.
//!
//! The watcher polls: it takes a timestamp `at` from the oracle and reads
//! the span's history in `(since, at]` range by range (`Kv/History`,
//! routed and retried like any read, so splits, merges, leader changes and
//! replica moves only re-route it). Each range answers how far its answer
//! is final (a transaction holding a lock there may still commit at or
//! below `at`); the window ends at the lowest of those, its events are
//! sorted by (revision, key) and handed out one revision at a time, and
//! the next window starts where this one ended. So every event is handed
//! out once, in commit order, and a transaction's events together (they
//! share its commit timestamp).
//!
//! Invariants: `since` only grows; an update is handed out only when every
//! range of the span answered final through its revision. Memory: a window
//! holds at most `MAX_WINDOW_EVENTS` events (a window with more is halved
//! and read again — a watcher catching up from an old revision reads many
//! small windows; one transaction's events are never split).

use std::collections::VecDeque;
use std::time::Duration;

use super::{Client, Retry};
use crate::api::{route, Timestamp};
use crate::error::{Error, Result};
use crate::proto::{HistoryRequest, WatchEvent};
use crate::trace_context as trace;

/// Events one window may hold before it is halved.
pub const MAX_WINDOW_EVENTS: usize = 100_000;
/// Events asked per `Kv/History` call.
const PAGE_EVENTS: u32 = 1_000;

/// What to watch, and how.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// The span `[start, end)` of user keys; `end` empty: to the end of
    /// the keyspace. `Client::watch_key` / `watch_prefix` fill these.
    pub start: Vec<u8>,
    pub end: Vec<u8>,
    /// The first revision to report (changes committed at or after it);
    /// `None`: changes committed after the watch starts.
    pub from_revision: Option<Timestamp>,
    /// Each event also carries the key's previous value.
    pub prev_value: bool,
    /// How long an idle watcher waits between polls.
    pub poll_interval: Duration,
    /// An idle watcher reports its progress this often (`None`: never).
    pub progress_every: Option<Duration>,
}

impl WatchOptions {
    /// One key.
    pub fn key(key: &[u8]) -> WatchOptions {
        let mut end = key.to_vec();
        end.push(0);
        WatchOptions::span(key, &end)
    }

    /// Every key starting with `prefix` (all keys: an empty prefix).
    pub fn prefix(prefix: &[u8]) -> WatchOptions {
        WatchOptions::span(prefix, &crate::api::meta::prefix_end(prefix))
    }

    /// `[start, end)`; `end` empty: to the end of the keyspace.
    pub fn span(start: &[u8], end: &[u8]) -> WatchOptions {
        WatchOptions {
            start: start.to_vec(),
            end: end.to_vec(),
            from_revision: None,
            prev_value: false,
            poll_interval: Duration::from_millis(100),
            progress_every: Some(Duration::from_secs(1)),
        }
    }
}

/// What a watcher hands out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchUpdate {
    /// Every change committed at `revision` in the span (one transaction's
    /// writes, or one write), in key order.
    Events {
        revision: Timestamp,
        events: Vec<WatchEvent>,
    },
    /// Nothing else was committed in the span through `revision`.
    Progress { revision: Timestamp },
}

/// A running watch (`Client::watch`); `next` waits for the next update.
pub struct Watcher {
    client: Client,
    opts: WatchOptions,
    /// Everything at or below it was handed out (or queued).
    since: Timestamp,
    queue: VecDeque<WatchUpdate>,
    last_update: tokio::time::Instant,
}

impl Client {
    /// Starts watching (nothing is read until `Watcher::next`). A
    /// `from_revision` below the GC horizon fails `next` with `Compacted`.
    pub async fn watch(&self, opts: WatchOptions) -> Result<Watcher> {
        if crate::api::is_system_key(&opts.start) {
            return Err(Error::InvalidArgument(
                "watches cover user keys only (not \"_/\")".into(),
            ));
        }
        if !opts.end.is_empty() && opts.end <= opts.start {
            return Err(Error::InvalidArgument(
                "a watch's end must sort after its start".into(),
            ));
        }
        let since = match opts.from_revision {
            Some(Timestamp(0)) => {
                return Err(Error::InvalidArgument("revisions start at 1".into()))
            }
            Some(r) => Timestamp(r.0 - 1),
            None => self.timestamps(1).await?,
        };
        Ok(Watcher {
            client: self.clone(),
            opts,
            since,
            queue: VecDeque::new(),
            last_update: tokio::time::Instant::now(),
        })
    }
}

impl Watcher {
    /// Everything committed in the span at or below it was handed out by
    /// `next` (updates read but still queued are above it).
    pub fn revision(&self) -> Timestamp {
        match self.queue.front() {
            Some(WatchUpdate::Events { revision, .. }) => Timestamp(revision.0 - 1),
            Some(WatchUpdate::Progress { revision }) => *revision,
            None => self.since,
        }
    }

    /// The next update: a revision's events, or (when idle for
    /// `progress_every`) progress.
    pub async fn next(&mut self) -> Result<WatchUpdate> {
        loop {
            if let Some(u) = self.queue.pop_front() {
                self.last_update = tokio::time::Instant::now();
                return Ok(u);
            }
            let at = self.client.timestamps(1).await?;
            let moved = self.poll(at).await?;
            if !self.queue.is_empty() {
                continue;
            }
            if let Some(every) = self.opts.progress_every {
                if moved && self.last_update.elapsed() >= every {
                    self.queue.push_back(WatchUpdate::Progress {
                        revision: self.since,
                    });
                    continue;
                }
            }
            tokio::time::sleep(self.opts.poll_interval).await;
        }
    }

    /// Reads the window `(since, at]` (halved while too big), queues its
    /// updates and moves `since`; whether it moved.
    async fn poll(&mut self, mut at: Timestamp) -> Result<bool> {
        let (mut events, final_through) = loop {
            match self.window(at).await? {
                Some(w) => break w,
                // Too many events: half the window (never below one
                // revision, whose events are one transaction's, bounded).
                None => at = Timestamp(self.since.0 + ((at.0 - self.since.0) / 2).max(1)),
            }
        };
        if final_through <= self.since {
            return Ok(false);
        }
        events.retain(|e| e.revision <= final_through.0);
        events.sort_by(|a, b| (a.revision, &a.key).cmp(&(b.revision, &b.key)));
        let mut iter = events.into_iter().peekable();
        while let Some(first) = iter.next() {
            let revision = first.revision;
            let mut group = vec![first];
            while let Some(e) = iter.next_if(|e| e.revision == revision) {
                group.push(e);
            }
            self.queue.push_back(WatchUpdate::Events {
                revision: Timestamp(revision),
                events: group,
            });
        }
        self.since = final_through;
        Ok(true)
    }

    /// The span's events in `(since, at]` and how far they are final;
    /// `None` when there are more than `MAX_WINDOW_EVENTS` (unless the
    /// window is one revision wide).
    async fn window(&self, at: Timestamp) -> Result<Option<(Vec<WatchEvent>, Timestamp)>> {
        let mut from = self.opts.start.clone();
        let mut events = Vec::new();
        let mut final_through = at;
        loop {
            let req = HistoryRequest {
                start: from.clone(),
                end: self.opts.end.clone(),
                since: self.since.0,
                at: at.0,
                limit: PAGE_EVENTS,
                prev_value: self.opts.prev_value,
            };
            let resp = self
                .client
                .with_retry(&route::key(&from), Retry::Idempotent, |ch| {
                    let req = req.clone();
                    async move {
                        ch.kv()
                            .max_decoding_message_size(crate::api::MAX_ADMIN_MESSAGE_BYTES)
                            .history(trace::request(req))
                            .await
                    }
                })
                .await?
                .into_inner();
            final_through = final_through.min(Timestamp(resp.final_through));
            events.extend(resp.events);
            if events.len() > MAX_WINDOW_EVENTS && at.0 - self.since.0 > 1 {
                return Ok(None);
            }
            if resp.resume_key.is_empty() {
                return Ok(Some((events, final_through)));
            }
            from = resp.resume_key;
        }
    }
}
