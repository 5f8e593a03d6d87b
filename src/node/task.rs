//! `StoreTask`: the async shell around the synchronous `Store` — the one
//! async<->sync seam of a node. It owns the Store's mailbox, its clock
//! ticks, the engine writes of each Ready round (fsyncs and large batches
//! on the blocking pool: an fsync must never stall the reactor; small
//! unsynced writes inline), the peer transport, and the size checker task.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::handle::{StoreHandle, StoreMsg};
use super::split_check::{run_checker, MeasureRequest, MEASURE_QUEUE};
use super::store::Store;
use super::transport::{Directory, Sent, Transport};
use crate::config::ClusterSettings;
use crate::error::Result;
use crate::raft::SnapshotJob;
use crate::storage::{Engine, WriteBatch};

/// Snapshot builds queued before new requests are turned down (retried).
const SNAPSHOT_QUEUE: usize = 16;

/// Builds Raft snapshots for a Store until either side hangs up: each on
/// the blocking pool (inline in simulation, where MemEngine never blocks).
async fn build_snapshots(mut jobs: mpsc::Receiver<SnapshotJob>, store: mpsc::Sender<StoreMsg>) {
    while let Some(job) = jobs.recv().await {
        let range_id = job.range_id;
        #[cfg(madsim)]
        let built = crate::raft::snapshot::build(&job);
        #[cfg(not(madsim))]
        let built =
            match tokio::task::spawn_blocking(move || crate::raft::snapshot::build(&job)).await {
                Ok(r) => r,
                Err(e) => Err(crate::error::Error::Internal(format!(
                    "snapshot task failed: {e}"
                ))),
            };
        let snapshot = match built {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(range_id, %e, "cannot build a snapshot; raft will ask again");
                None
            }
        };
        if store
            .send(StoreMsg::SnapshotBuilt { range_id, snapshot })
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Ready rounds per loop: a round can create more work (reads started
/// after a commit, a removed replica to destroy).
const MAX_READY_ROUNDS_PER_LOOP: usize = 3;
/// Mailbox capacity at least this large.
const MIN_MAILBOX: usize = 64;
/// At most this probability, a loop pauses for up to BUGGIFY_PAUSE
/// (simulation only): schedules the harness would rarely produce.
const BUGGIFY_PAUSE_PROBABILITY: f64 = 0.005;
const BUGGIFY_PAUSE: Duration = Duration::from_millis(50);
/// Unsynced engine writes up to this size run inline on the Store task
/// (production; simulation always writes inline); larger ones and every
/// fsync go to the blocking pool.
#[cfg(not(madsim))]
const INLINE_WRITE_BYTES: usize = 256 * 1024;

pub struct StoreTask {
    store: Store,
    engine: Arc<dyn Engine>,
    rx: mpsc::Receiver<StoreMsg>,
    tx: mpsc::Sender<StoreMsg>,
    transport: Transport,
    settings: watch::Receiver<ClusterSettings>,
    checker: Option<mpsc::Sender<MeasureRequest>>,
    snapshotter: Option<mpsc::Sender<SnapshotJob>>,
}

impl StoreTask {
    /// Wraps `store`; `settings` carries the cluster settings in effect.
    pub fn new(
        store: Store,
        transport: Transport,
        directory: Directory,
        settings: watch::Receiver<ClusterSettings>,
    ) -> (StoreTask, StoreHandle) {
        let (tx, rx) = mpsc::channel(store.cfg.max_msgs_per_loop.max(MIN_MAILBOX));
        let engine = store.engine.clone();
        let handle = StoreHandle {
            tx: tx.clone(),
            directory,
            request_timeout: store.cfg.request_timeout,
            node_id: store.cfg.node_id,
            next_hint: Default::default(),
            engine: engine.clone(),
            metrics: store.cfg.metrics.clone(),
            draining: Default::default(),
            stop: Arc::new(watch::channel(false).0),
        };
        let task = StoreTask {
            store,
            engine,
            rx,
            tx,
            transport,
            settings,
            checker: None,
            snapshotter: None,
        };
        (task, handle)
    }

    /// Runs until `shutdown` flips, every handle is dropped, or the node
    /// fails (an engine write, or a failure while applying: never skipped).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let (req_tx, req_rx) = mpsc::channel(MEASURE_QUEUE);
        tokio::spawn(run_checker(self.engine.clone(), req_rx, self.tx.clone()).in_current_span());
        self.checker = Some(req_tx);
        let (snap_tx, snap_rx) = mpsc::channel(SNAPSHOT_QUEUE);
        tokio::spawn(build_snapshots(snap_rx, self.tx.clone()).in_current_span());
        self.snapshotter = Some(snap_tx);
        self.store.set_settings(self.settings.borrow().clone());
        let clock = self.store.cfg.clock.clone();
        let tick = self.store.cfg.tick;
        let max_msgs = self.store.cfg.max_msgs_per_loop;
        // Ticks follow this node's clock, so a drifting clock ticks faster or slower.
        let mut next_tick = tokio::time::Instant::now() + clock.to_true(tick);
        let result = loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => break Ok(()),
                _ = tokio::time::sleep_until(next_tick) => {
                    next_tick = tokio::time::Instant::now() + clock.to_true(tick);
                    if self.settings.has_changed().unwrap_or(false) {
                        self.store.set_settings(self.settings.borrow_and_update().clone());
                    }
                    self.store.tick();
                }
                msg = self.rx.recv() => {
                    let Some(msg) = msg else { break Ok(()) };
                    self.store.handle(msg);
                    for _ in 1..max_msgs {
                        match self.rx.try_recv() {
                            Ok(m) => self.store.handle(m),
                            Err(_) => break,
                        }
                    }
                }
            }
            let pause = crate::chaos::buggify_delay(BUGGIFY_PAUSE_PROBABILITY, BUGGIFY_PAUSE);
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            if let Err(e) = self.rounds().await {
                tracing::error!(%e, "store stopped: this node failed while persisting or applying");
                break Err(e);
            }
        };
        self.store.fail_all();
        result
    }

    async fn rounds(&mut self) -> Result<()> {
        for _ in 0..MAX_READY_ROUNDS_PER_LOOP {
            self.send_outbox();
            let began = tokio::time::Instant::now();
            let Some(mut round) = self.store.begin_round()? else {
                break;
            };
            self.store
                .cfg
                .metrics
                .ready_duration
                .observe(began.elapsed().as_secs_f64());
            self.send_outbox();
            let (wb, sync) = round.take_batch();
            if !wb.is_empty() || sync {
                self.write(wb, sync).await?;
            }
            let wb = self.store.persisted(&mut round)?;
            if !wb.is_empty() {
                self.write(wb, false).await?;
            }
            self.store.finish_round(round)?;
            if !self.store.has_work() {
                break;
            }
        }
        self.send_outbox();
        self.send_measure_requests();
        self.send_snapshot_jobs();
        Ok(())
    }

    fn send_snapshot_jobs(&mut self) {
        let Some(builder) = &self.snapshotter else {
            return;
        };
        for job in self.store.take_snapshot_jobs() {
            let range_id = job.range_id;
            if builder.try_send(job).is_err() {
                // Full: the range asks again at the next opportunity.
                self.store.handle(StoreMsg::SnapshotBuilt {
                    range_id,
                    snapshot: None,
                });
            }
        }
    }

    fn send_outbox(&mut self) {
        let metrics = self.store.cfg.metrics.clone();
        for (range_id, m) in self.store.take_outbox() {
            match self.transport.send(range_id, m) {
                Sent::Local => {}
                Sent::Queued => {
                    metrics.messages_sent.inc();
                }
                Sent::Snapshot(bytes) => {
                    metrics.messages_sent.inc();
                    metrics.snapshot(crate::metrics::SENT, bytes);
                }
                Sent::Dropped => {
                    metrics.messages_dropped.inc();
                }
            }
        }
    }

    fn send_measure_requests(&mut self) {
        let Some(checker) = &self.checker else {
            return;
        };
        for req in self.store.take_measure_requests() {
            let id = req.range_id;
            if checker.try_send(req).is_err() {
                self.store.measure_skipped(id);
            }
        }
    }

    /// One engine write. In production a synced or large one runs on the
    /// blocking pool (an fsync must not stall the reactor); in simulation
    /// MemEngine never blocks and madsim forbids blocking tasks, so it runs
    /// inline.
    async fn write(&self, wb: WriteBatch, sync: bool) -> Result<()> {
        let (began, bytes) = (tokio::time::Instant::now(), wb.size_bytes());
        let r = self.write_batch(wb, sync).await;
        self.store
            .cfg
            .metrics
            .observe_write(sync, bytes, began.elapsed());
        r
    }

    async fn write_batch(&self, wb: WriteBatch, sync: bool) -> Result<()> {
        #[cfg(madsim)]
        {
            self.engine.write(&wb, sync)?;
            let slow = self.engine.sync_latency();
            if sync && !slow.is_zero() {
                tokio::time::sleep(slow).await;
            }
            Ok(())
        }
        #[cfg(not(madsim))]
        {
            if !sync && wb.size_bytes() <= INLINE_WRITE_BYTES {
                // No fsync: a memtable insert and an unsynced WAL append,
                // tens of microseconds. The blocking pool's handoff (wake a
                // thread, wake this task back) cost more than the write
                // itself: 0.16-0.18 ms per apply round measured at 1 client.
                return self.engine.write(&wb, false);
            }
            let engine = self.engine.clone();
            match tokio::task::spawn_blocking(move || engine.write(&wb, sync)).await {
                Ok(r) => r,
                Err(e) => Err(crate::error::Error::Internal(format!(
                    "engine write task failed: {e}"
                ))),
            }
        }
    }
}
