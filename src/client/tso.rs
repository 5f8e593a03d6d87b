//! Timestamps from the cluster's oracle, and the batcher that shares one
//! oracle request among every caller waiting at the same time.
//!
//! Freshness is what makes transactions strictly serializable: a timestamp
//! must be handed out *after* its caller asked (so it is above every commit
//! that finished before). The batcher therefore never prefetches: callers
//! that arrive while a request is in flight wait for the next one, which
//! takes them all ("at most one oracle request per batch of transactions").
//! The first waiter sends the request; if it is cancelled, another waiter
//! takes over, so nobody waits on a request that will never be made.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::sync::oneshot;

use super::{Client, Retry};
use crate::api::{meta, route, Timestamp};
use crate::error::{Error, Result};
use crate::proto::GetTimestampsRequest;
use crate::trace_context as trace;

/// Most timestamps the oracle hands out per request.
pub const MAX_TIMESTAMPS_PER_REQUEST: u64 = 100_000;

impl Client {
    /// `count` consecutive fresh timestamps from the oracle: the first one.
    pub async fn timestamps(&self, count: u64) -> Result<Timestamp> {
        let req = GetTimestampsRequest { count };
        let resp = self
            .with_retry(
                &route::key(meta::TSO.as_bytes()),
                Retry::Idempotent,
                |ch| async move { ch.admin().get_timestamps(trace::request(req)).await },
            )
            .await?
            .into_inner();
        if resp.count != count || resp.first == 0 {
            return Err(Error::Internal(format!(
                "the oracle answered {} timestamps from {} for {count}",
                resp.count, resp.first
            )));
        }
        Ok(Timestamp(resp.first))
    }
}

/// What a waiter hears.
enum Turn {
    Ready(Result<Timestamp>),
    /// Send the next request yourself.
    Lead,
}

#[derive(Default)]
struct Queue {
    /// Waiters and how many timestamps each wants.
    waiting: Vec<(u64, oneshot::Sender<Turn>)>,
    in_flight: bool,
}

/// Where a batcher gets timestamps: `count` consecutive fresh ones, the
/// first returned. The SDK's `Client`; a server asks its own oracle first.
pub trait TimestampSource: Send + Sync + 'static {
    fn fetch(&self, count: u64) -> BoxFuture<'_, Result<Timestamp>>;
}

impl TimestampSource for Client {
    fn fetch(&self, count: u64) -> BoxFuture<'_, Result<Timestamp>> {
        Box::pin(self.timestamps(count))
    }
}

/// Coalesces concurrent timestamp requests into one oracle request.
#[derive(Clone)]
pub struct TsoBatcher {
    source: Arc<dyn TimestampSource>,
    queue: Arc<Mutex<Queue>>,
}

/// Hands the lead to a waiter if the leader goes away without finishing.
struct LeadGuard<'a> {
    queue: &'a Mutex<Queue>,
    done: bool,
}

impl Drop for LeadGuard<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.in_flight = false;
        while let Some((_, next)) = q.waiting.pop() {
            if next.send(Turn::Lead).is_ok() {
                q.in_flight = true;
                return;
            }
        }
    }
}

impl TsoBatcher {
    pub fn new(source: Arc<dyn TimestampSource>) -> TsoBatcher {
        TsoBatcher {
            source,
            queue: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One fresh timestamp (handed out after this call began).
    pub async fn timestamp(&self) -> Result<Timestamp> {
        self.timestamps(1).await
    }

    /// `count` (1..=MAX_TIMESTAMPS_PER_REQUEST) consecutive fresh
    /// timestamps: the first one.
    pub async fn timestamps(&self, count: u64) -> Result<Timestamp> {
        if count == 0 || count > MAX_TIMESTAMPS_PER_REQUEST {
            return Err(Error::InvalidArgument(format!(
                "asked for {count} timestamps; one request takes 1 to {MAX_TIMESTAMPS_PER_REQUEST}"
            )));
        }
        let rx = {
            let mut q = self.lock();
            if q.in_flight {
                let (tx, rx) = oneshot::channel();
                q.waiting.push((count, tx));
                Some(rx)
            } else {
                q.in_flight = true;
                None
            }
        };
        if let Some(rx) = rx {
            match rx.await {
                Ok(Turn::Ready(r)) => return r,
                Ok(Turn::Lead) => {}
                Err(_) => return Err(Error::Internal("the timestamp batcher went away".into())),
            }
        }
        self.lead(count).await
    }

    /// Sends one request for this caller and everyone who queued before it
    /// (as many as fit in one request; the rest wait for the next), then
    /// hands the lead on; returns this caller's first timestamp.
    async fn lead(&self, own: u64) -> Result<Timestamp> {
        let mut guard = LeadGuard {
            queue: &self.queue,
            done: false,
        };
        let mut total = own;
        let taken: Vec<(u64, oneshot::Sender<Turn>)> = {
            let mut q = self.lock();
            let mut taken = Vec::new();
            let mut rest = Vec::new();
            for (n, tx) in q.waiting.drain(..) {
                if total + n <= MAX_TIMESTAMPS_PER_REQUEST {
                    total += n;
                    taken.push((n, tx));
                } else {
                    rest.push((n, tx));
                }
            }
            q.waiting = rest;
            taken
        };
        let result = self.source.fetch(total).await;
        let mut next = own;
        for (n, tx) in taken {
            let r = match &result {
                Ok(first) => Ok(Timestamp(first.0 + next)),
                Err(e) => Err(e.clone()),
            };
            next += n;
            let _ = tx.send(Turn::Ready(r));
        }
        // Whoever queued during the request waits for the next one: hand
        // the lead to one of them.
        guard.done = true;
        let mut q = self.lock();
        q.in_flight = false;
        while let Some((_, next)) = q.waiting.pop() {
            if next.send(Turn::Lead).is_ok() {
                q.in_flight = true;
                break;
            }
        }
        drop(q);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Hands out consecutive numbers, slowly, and counts its requests.
    #[derive(Default)]
    struct Counter {
        next: AtomicU64,
        requests: AtomicU64,
    }

    impl TimestampSource for Counter {
        fn fetch(&self, count: u64) -> BoxFuture<'_, Result<Timestamp>> {
            Box::pin(async move {
                self.requests.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                let first = self.next.fetch_add(count, Ordering::SeqCst) + 1;
                Ok(Timestamp(first))
            })
        }
    }

    /// Concurrent callers of different counts get disjoint ranges, in fewer
    /// requests than callers; a bad count is refused.
    #[tokio::test]
    async fn the_batcher_shares_requests_and_hands_out_disjoint_ranges() {
        let source = Arc::new(Counter::default());
        let b = TsoBatcher::new(source.clone());
        let mut tasks = Vec::new();
        for i in 0..40u64 {
            let b = b.clone();
            let n = 1 + i % 5;
            tasks.push(tokio::spawn(async move {
                (n, b.timestamps(n).await.unwrap().0)
            }));
        }
        let mut got = Vec::new();
        for t in tasks {
            got.push(t.await.unwrap());
        }
        got.sort_by_key(|g| g.1);
        for w in got.windows(2) {
            assert!(w[0].1 + w[0].0 <= w[1].1, "overlap: {w:?}");
        }
        let total: u64 = got.iter().map(|g| g.0).sum();
        assert_eq!(source.next.load(Ordering::SeqCst), total);
        assert!(source.requests.load(Ordering::SeqCst) < 40);
        assert!(b.timestamps(0).await.is_err());
    }
}
