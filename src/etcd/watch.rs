//! etcd's Watch service over the SDK's watcher (`client::watch`): one
//! bidirectional stream carries any number of watches; each runs as its
//! own task following a `Watcher` and sends its events, in revision
//! order, as WatchResponses on the shared stream.
//!
//! etcd semantics kept: watch ids are assigned from 0 unless the client
//! names one; `start_revision` is the first revision reported (0: from
//! now); a revision below the GC horizon cancels the watch with
//! `compact_revision` set, as etcd does; `progress_notify` sends empty
//! responses (every 10 s of quiet) whose header revision says how far the
//! watch is caught up; a progress request is answered with the lowest
//! revision every watch of the stream has reached; NOPUT / NODELETE
//! filters and `prev_kv` work. Limits: `MAX_WATCHES_PER_STREAM` and
//! `MAX_WATCHES_PER_NODE` (a watch over either is refused: created and
//! cancelled at once, with the reason), and a
//! stream whose client reads too slowly backs its watches up (each stops
//! polling while its send waits), so nothing is buffered without bound.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::Gateway;
use crate::api::Timestamp;
use crate::client::{WatchOptions, WatchUpdate};
use crate::error::Error;
use crate::etcdpb::etcdserverpb::watch_create_request::FilterType;
use crate::etcdpb::etcdserverpb::watch_request::RequestUnion;
use crate::etcdpb::etcdserverpb::watch_server::Watch;
use crate::etcdpb::etcdserverpb::*;
use crate::etcdpb::mvccpb::{self, event::EventType};
use crate::proto::WatchEvent;

/// Watches one stream may hold at once.
pub const MAX_WATCHES_PER_STREAM: usize = 1_000;
/// Watches one gateway (node) runs at once, over all streams.
pub const MAX_WATCHES_PER_NODE: usize = 10_000;
/// Responses queued for a slow reader before its watches wait.
const STREAM_QUEUE: usize = 64;

type Out = mpsc::Sender<Result<WatchResponse, Status>>;

/// Holds one count of a gateway's running watches until dropped.
struct Counted(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The watches of one stream: their tasks and how far each has reached.
#[derive(Default)]
struct Watches {
    tasks: HashMap<i64, tokio::task::JoinHandle<()>>,
    reached: Arc<Mutex<HashMap<i64, u64>>>,
    next_id: i64,
}

fn to_event(e: WatchEvent) -> mvccpb::Event {
    let kv = if e.delete {
        mvccpb::KeyValue {
            key: e.key.clone(),
            mod_revision: e.revision as i64,
            ..Default::default()
        }
    } else {
        mvccpb::KeyValue {
            key: e.key.clone(),
            create_revision: e.create_revision as i64,
            mod_revision: e.revision as i64,
            version: e.version as i64,
            value: e.value,
            lease: e.lease as i64,
        }
    };
    let prev_kv = e.has_prev.then(|| {
        let m = e.prev_meta.unwrap_or_default();
        mvccpb::KeyValue {
            key: e.key,
            create_revision: m.create_revision as i64,
            mod_revision: m.mod_revision as i64,
            version: m.version as i64,
            value: e.prev_value,
            lease: m.lease as i64,
        }
    });
    mvccpb::Event {
        r#type: if e.delete {
            EventType::Delete as i32
        } else {
            EventType::Put as i32
        },
        kv: Some(kv),
        prev_kv,
    }
}

impl Gateway {
    /// Runs one watch until it is cancelled, fails or the stream ends.
    async fn follow(
        &self,
        id: i64,
        req: WatchCreateRequest,
        out: Out,
        reached: Arc<Mutex<HashMap<i64, u64>>>,
    ) {
        let (start, end, _) = super::kv::span(&req.key, &req.range_end);
        let mut opts = WatchOptions::span(&start, &end);
        opts.prev_value = req.prev_kv;
        opts.from_revision =
            (req.start_revision > 0).then_some(Timestamp(req.start_revision as u64));
        opts.progress_every = req.progress_notify.then_some(Duration::from_secs(10));
        let no_put = req.filters.contains(&(FilterType::Noput as i32));
        let no_delete = req.filters.contains(&(FilterType::Nodelete as i32));
        let cancel = |reason: String, compact: i64| WatchResponse {
            header: Some(self.header(Timestamp::ZERO)),
            watch_id: id,
            canceled: true,
            cancel_reason: reason,
            compact_revision: compact,
            ..Default::default()
        };
        let mut watcher = match self.client.watch(opts).await {
            Ok(w) => w,
            Err(e) => {
                let _ = out.send(Ok(cancel(e.to_string(), 0))).await;
                return;
            }
        };
        let created = WatchResponse {
            header: Some(self.header(watcher.revision())),
            watch_id: id,
            created: true,
            ..Default::default()
        };
        if out.send(Ok(created)).await.is_err() {
            return;
        }
        loop {
            let update = match watcher.next().await {
                Ok(u) => u,
                Err(e) if e.is_retryable() => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(Error::Compacted { oldest, .. }) => {
                    let msg = "etcdserver: mvcc: required revision has been compacted".into();
                    let _ = out
                        .send(Ok(cancel(msg, oldest.saturating_sub(1) as i64)))
                        .await;
                    return;
                }
                Err(e) => {
                    let _ = out.send(Ok(cancel(e.to_string(), 0))).await;
                    return;
                }
            };
            let resp = match update {
                WatchUpdate::Progress { revision } => WatchResponse {
                    header: Some(self.header(revision)),
                    watch_id: id,
                    ..Default::default()
                },
                WatchUpdate::Events { revision, events } => {
                    let events: Vec<mvccpb::Event> = events
                        .into_iter()
                        .filter(|e| !(e.delete && no_delete || !e.delete && no_put))
                        .map(to_event)
                        .collect();
                    if events.is_empty() {
                        continue;
                    }
                    WatchResponse {
                        header: Some(self.header(revision)),
                        watch_id: id,
                        events,
                        ..Default::default()
                    }
                }
            };
            if let Ok(mut r) = reached.lock() {
                r.insert(id, watcher.revision().0);
            }
            if out.send(Ok(resp)).await.is_err() {
                return;
            }
        }
    }

    /// One request of a watch stream.
    async fn on_request(&self, req: WatchRequest, w: &mut Watches, out: &Out) {
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => {
                let id = if c.watch_id != 0 {
                    c.watch_id
                } else {
                    while w.tasks.contains_key(&w.next_id) {
                        w.next_id += 1;
                    }
                    w.next_id
                };
                w.tasks.retain(|_, t| !t.is_finished());
                let on_node = self.watches.load(Ordering::Relaxed);
                if w.tasks.contains_key(&id)
                    || w.tasks.len() >= MAX_WATCHES_PER_STREAM
                    || on_node >= MAX_WATCHES_PER_NODE
                {
                    let reason = if w.tasks.contains_key(&id) {
                        "etcdserver: duplicate watch ID".to_string()
                    } else if on_node >= MAX_WATCHES_PER_NODE {
                        format!("this node runs {MAX_WATCHES_PER_NODE} watches, its limit: watch through another node")
                    } else {
                        format!("at most {MAX_WATCHES_PER_STREAM} watches per stream")
                    };
                    let _ = out
                        .send(Ok(WatchResponse {
                            header: Some(self.header(Timestamp::ZERO)),
                            watch_id: id,
                            created: true,
                            canceled: true,
                            cancel_reason: reason,
                            ..Default::default()
                        }))
                        .await;
                    return;
                }
                let (g, out2, reached) = (self.clone(), out.clone(), w.reached.clone());
                self.watches.fetch_add(1, Ordering::Relaxed);
                // Counted down however the task ends (aborted, even before
                // it first ran, too: the guard is moved into it).
                let live = Counted(self.watches.clone());
                let task = tokio::spawn(async move {
                    let _live = live;
                    g.follow(id, c, out2, reached).await
                });
                w.tasks.insert(id, task);
            }
            Some(RequestUnion::CancelRequest(c)) => {
                if let Some(t) = w.tasks.remove(&c.watch_id) {
                    t.abort();
                }
                if let Ok(mut r) = w.reached.lock() {
                    r.remove(&c.watch_id);
                }
                let _ = out
                    .send(Ok(WatchResponse {
                        header: Some(self.header(Timestamp::ZERO)),
                        watch_id: c.watch_id,
                        canceled: true,
                        ..Default::default()
                    }))
                    .await;
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                let low = w
                    .reached
                    .lock()
                    .ok()
                    .and_then(|r| r.values().min().copied());
                let rev = match low {
                    Some(r) => Timestamp(r),
                    None => self.client.timestamps(1).await.unwrap_or(Timestamp::ZERO),
                };
                let _ = out
                    .send(Ok(WatchResponse {
                        header: Some(self.header(rev)),
                        watch_id: -1,
                        ..Default::default()
                    }))
                    .await;
            }
            None => {}
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for Gateway {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let g = self.clone();
        tokio::spawn(async move {
            let mut w = Watches::default();
            while let Ok(Some(req)) = inbound.message().await {
                g.on_request(req, &mut w, &tx).await;
            }
            for (_, t) in w.tasks {
                t.abort();
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
