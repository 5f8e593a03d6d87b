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
use crate::proto::admin_client::AdminClient;
use crate::proto::GetTimestampsRequest;

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
                |ch| async move { AdminClient::new(ch).get_timestamps(req).await },
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
    waiting: Vec<oneshot::Sender<Turn>>,
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
        while let Some(next) = q.waiting.pop() {
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
        let rx = {
            let mut q = self.lock();
            if q.in_flight {
                let (tx, rx) = oneshot::channel();
                q.waiting.push(tx);
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
        self.lead().await
    }

    /// Sends requests for everyone waiting (self included) until the queue
    /// is empty; returns this caller's timestamp.
    async fn lead(&self) -> Result<Timestamp> {
        let mut guard = LeadGuard {
            queue: &self.queue,
            done: false,
        };
        // This caller's own request, plus everyone who queued before it.
        let waiting = std::mem::take(&mut self.lock().waiting);
        let n = waiting.len() as u64 + 1;
        let result = self.source.fetch(n.min(MAX_TIMESTAMPS_PER_REQUEST)).await;
        for (handed, tx) in (1u64..).zip(waiting) {
            let r = match &result {
                Ok(first) if handed < MAX_TIMESTAMPS_PER_REQUEST => Ok(Timestamp(first.0 + handed)),
                Ok(_) => Err(Error::Unavailable(
                    "too many timestamp requests at once".into(),
                )),
                Err(e) => Err(e.clone()),
            };
            let _ = tx.send(Turn::Ready(r));
        }
        // Whoever queued during the request waits for the next one: hand
        // the lead to one of them.
        guard.done = true;
        let mut q = self.lock();
        q.in_flight = false;
        while let Some(next) = q.waiting.pop() {
            if next.send(Turn::Lead).is_ok() {
                q.in_flight = true;
                break;
            }
        }
        drop(q);
        result
    }
}
