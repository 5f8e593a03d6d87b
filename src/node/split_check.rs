//! Split checks and load sampling.
//!
//! - **Size**: a range's `approx_bytes` grows with every applied write (an
//!   overwrite or delete adds to it too). Every SPLIT_CHECK_TICKS a leader
//!   whose range looks larger than `range_max_bytes` asks for an exact
//!   measurement with a split key; one led range per check is measured
//!   exactly when small (the placement driver merges by size); ranges whose
//!   size is unknown since start (or a split) are measured too. Every
//!   measurement scans the engine off the Store task (`run_checker`: the
//!   blocking pool in production) in chunks, and comes back as a message.
//! - **Load**: requests are counted per range and every LOAD_SAMPLE_EVERY-th
//!   key is sampled; a leader whose range served more than `split_qps` for
//!   LOAD_SPLIT_CHECKS checks in a row splits at the median sampled key.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::gc::GC_KEYS_PER_COMMAND;
use super::handle::StoreMsg;
use super::store::Store;
use crate::api::Timestamp;
use crate::error::Result;
use crate::keys;
use crate::mvcc::GarbageFinder;
use crate::range::SYSTEM_RANGE_ID;
use crate::storage::Engine;

/// How often (in ticks) leaders look for ranges to split.
pub const SPLIT_CHECK_TICKS: u64 = 5;
/// Checks in a row a range must exceed `split_qps` before it splits by load.
const LOAD_SPLIT_CHECKS: u32 = 10;
/// Keys kept per range to choose a load-split point.
const LOAD_SAMPLE_KEYS: usize = 64;
/// Every this many requests of a range, its key is sampled.
const LOAD_SAMPLE_EVERY: u64 = 8;
/// Ranges with more pairs than this keep their estimated size (a bounded
/// measurement does not read them whole).
const SIZE_SCAN_PAIRS: usize = 4096;
/// Pairs read per engine call while measuring.
const MEASURE_CHUNK_PAIRS: usize = 4096;
/// Split-key candidates kept while measuring (memory stays bounded).
const MAX_CHECKPOINTS: usize = 1024;
/// Ranges of unknown size measured per check.
const UNMEASURED_PER_CHECK: usize = 64;
/// Measurements queued for the checker before new ones are skipped.
pub const MEASURE_QUEUE: usize = 256;

/// Requests a range served since the last split check, how many checks in
/// a row it ran hot, and a sample of the keys it was asked for.
#[derive(Default)]
pub struct RangeLoad {
    requests: u64,
    hot_checks: u32,
    sample: Vec<Vec<u8>>,
    /// Requests per second over the last check.
    pub qps: u64,
}

/// A measurement to run off the Store task.
#[derive(Debug, Clone)]
pub struct MeasureRequest {
    pub range_id: u64,
    /// The range's epoch version: a result for another version is stale.
    pub version: u64,
    pub start: Vec<u8>,
    pub end: Vec<u8>,
    /// Read the whole range (else give up past SIZE_SCAN_PAIRS pairs).
    pub full: bool,
    /// Find a split key if the range holds more than this many bytes.
    pub split_above: Option<u64>,
    /// Name the keys holding MVCC garbage at this horizon (`node/gc.rs`).
    pub gc_horizon: Option<Timestamp>,
}

/// What a measurement found.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub range_id: u64,
    pub version: u64,
    /// The exact size, if the whole range was read.
    pub bytes: Option<u64>,
    /// A key near the middle (by bytes), strictly after the first key.
    pub split_key: Option<Vec<u8>>,
    /// Keys holding garbage at the request's `gc_horizon`, and that horizon.
    pub garbage: Vec<Vec<u8>>,
    pub gc_horizon: Option<Timestamp>,
}

/// Measures one range: chunked scans, keeping one checkpoint per chunk
/// to pick a split key near the middle.
pub fn measure(engine: &dyn Engine, req: &MeasureRequest) -> Result<Measurement> {
    let mut total = 0u64;
    let mut pairs = 0usize;
    // (bytes before this key, key) for every `stride`-th key but the
    // range's first; thinned to at most MAX_CHECKPOINTS.
    let mut checkpoints: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut stride = 1usize;
    let mut from = req.start.clone();
    let mut complete = true;
    let mut prev_key: Option<Vec<u8>> = None;
    let mut finder = req
        .gc_horizon
        .map(|h| GarbageFinder::new(h, GC_KEYS_PER_COMMAND));
    loop {
        // A bounded measurement reads one pair past its bound, no more.
        let want = if req.full {
            MEASURE_CHUNK_PAIRS
        } else {
            MEASURE_CHUNK_PAIRS.min(SIZE_SCAN_PAIRS + 1 - pairs)
        };
        let chunk = engine.scan(&from, &req.end, want, false)?;
        for (k, v) in &chunk {
            if let Some(f) = finder.as_mut() {
                f.record(k, v);
            }
            // A split key is a user key: never between two MVCC records of
            // one key (a key's lock and versions stay in one range).
            let key = keys::split_mvcc(k).map_or(k.as_slice(), |(dk, _)| dk);
            let boundary = prev_key.as_deref() != Some(key);
            if boundary {
                prev_key = Some(key.to_vec());
            }
            if pairs > 0 && boundary && req.split_above.is_some() && pairs.is_multiple_of(stride) {
                checkpoints.push((total, key.to_vec()));
                if checkpoints.len() > MAX_CHECKPOINTS {
                    checkpoints = checkpoints.into_iter().step_by(2).collect();
                    stride *= 2;
                }
            }
            total += (k.len() + v.len()) as u64;
            pairs += 1;
        }
        let Some((last, _)) = chunk.last() else { break };
        if !req.full && pairs > SIZE_SCAN_PAIRS {
            complete = false;
            break;
        }
        if chunk.len() < want {
            break;
        }
        from = last.clone();
        from.push(0);
    }
    let split_key = match req.split_above {
        Some(max) if complete && total > max => checkpoints
            .iter()
            .find(|(before, _)| before * 2 >= total)
            .or(checkpoints.last())
            .map(|(_, k)| k.clone()),
        _ => None,
    };
    Ok(Measurement {
        range_id: req.range_id,
        version: req.version,
        bytes: complete.then_some(total),
        split_key,
        garbage: finder.map(GarbageFinder::finish).unwrap_or_default(),
        gc_horizon: req.gc_horizon,
    })
}

/// Runs measurements for a Store until either side hangs up.
pub async fn run_checker(
    engine: Arc<dyn Engine>,
    mut requests: mpsc::Receiver<MeasureRequest>,
    store: mpsc::Sender<StoreMsg>,
) {
    while let Some(req) = requests.recv().await {
        let result = measure_off_task(engine.clone(), req.clone()).await;
        let m = match result {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(range_id = req.range_id, %e, "cannot measure a range");
                Measurement {
                    range_id: req.range_id,
                    version: req.version,
                    bytes: None,
                    split_key: None,
                    garbage: Vec::new(),
                    gc_horizon: None,
                }
            }
        };
        if store.send(StoreMsg::Measured(m)).await.is_err() {
            return;
        }
    }
}

async fn measure_off_task(engine: Arc<dyn Engine>, req: MeasureRequest) -> Result<Measurement> {
    #[cfg(madsim)]
    {
        measure(engine.as_ref(), &req)
    }
    #[cfg(not(madsim))]
    {
        match tokio::task::spawn_blocking(move || measure(engine.as_ref(), &req)).await {
            Ok(r) => r,
            Err(e) => Err(crate::error::Error::Internal(format!(
                "measure task failed: {e}"
            ))),
        }
    }
}

impl Store {
    pub(super) fn record_load(&mut self, range_id: u64, key: &[u8]) {
        let l = self.load.entry(range_id).or_default();
        l.requests += 1;
        // In a ring: a cheap, deterministic sample.
        if l.requests % LOAD_SAMPLE_EVERY == 1 {
            let i = (l.requests / LOAD_SAMPLE_EVERY) as usize % LOAD_SAMPLE_KEYS;
            if i < l.sample.len() {
                l.sample[i] = key.to_vec();
            } else {
                l.sample.push(key.to_vec());
            }
        }
    }

    pub(super) fn tick_split_checks(&mut self) {
        if !self.ticks.is_multiple_of(SPLIT_CHECK_TICKS) {
            return;
        }
        self.check_sizes();
        self.split_hot_ranges();
        self.measure_next_range();
        self.measure_unknown_sizes();
    }

    fn request_measure(&mut self, range_id: u64, full: bool, split_above: Option<u64>) {
        self.request_measure_gc(range_id, full, split_above, None);
    }

    pub(super) fn request_measure_gc(
        &mut self,
        range_id: u64,
        full: bool,
        split_above: Option<u64>,
        gc_horizon: Option<Timestamp>,
    ) {
        let Some(r) = self.replicas.get(&range_id) else {
            return;
        };
        if !r.is_initialized() || !self.measuring.insert(range_id) {
            return;
        }
        let d = r.descriptor();
        self.measure_out.push(MeasureRequest {
            range_id,
            version: d.version,
            start: d.start_key.clone(),
            end: d.end_key.clone(),
            full,
            split_above,
            gc_horizon,
        });
    }

    /// The checker could not take a request: it may be asked again.
    pub fn measure_skipped(&mut self, range_id: u64) {
        self.measuring.remove(&range_id);
    }

    /// Leaders of user ranges that look larger than `range_max_bytes` ask
    /// for an exact size and a split key.
    fn check_sizes(&mut self) {
        let max = self.settings.range_max_bytes;
        let large: Vec<u64> = self
            .replicas
            .values()
            .filter(|r| r.is_leader() && r.range_id() != SYSTEM_RANGE_ID && r.approx_bytes() > max)
            .map(|r| r.range_id())
            .collect();
        for id in large {
            self.request_measure(id, true, Some(max));
        }
    }

    /// One range this node leads, round robin, measured exactly if small.
    fn measure_next_range(&mut self) {
        let next = self
            .replicas
            .range(self.size_cursor + 1..)
            .chain(self.replicas.range(..=self.size_cursor))
            .find(|(_, r)| r.is_leader() && r.is_initialized() && !r.is_frozen())
            .map(|(id, _)| *id);
        if let Some(id) = next {
            self.size_cursor = id;
            self.request_measure(id, false, None);
        }
    }

    fn measure_unknown_sizes(&mut self) {
        let batch: Vec<u64> = self
            .unmeasured
            .iter()
            .copied()
            .take(UNMEASURED_PER_CHECK)
            .collect();
        for id in batch {
            self.unmeasured.remove(&id);
            self.request_measure(id, true, None);
        }
    }

    /// A measurement came back: take the size, split if still too large.
    pub(super) fn on_measured(&mut self, m: super::split_check::Measurement) {
        self.measuring.remove(&m.range_id);
        if let Some(horizon) = m.gc_horizon {
            self.propose_gc(m.range_id, m.version, horizon, m.garbage.clone());
        }
        let max = self.settings.range_max_bytes;
        let Some(r) = self.replicas.get_mut(&m.range_id) else {
            return;
        };
        if r.descriptor().version != m.version {
            return; // the range changed meanwhile: a later check measures again
        }
        let Some(bytes) = m.bytes else {
            return;
        };
        r.set_approx_bytes(bytes);
        let inside = |k: &[u8]| {
            let d = r.descriptor();
            k > d.start_key.as_slice() && k < d.end_key.as_slice()
        };
        match m.split_key {
            Some(key) if bytes > max && r.is_leader() && inside(&key) => {
                tracing::info!(
                    range_id = m.range_id,
                    bytes,
                    "range is over range_max_bytes; splitting"
                );
                let (done, _rx) = tokio::sync::oneshot::channel();
                self.propose_split(key, false, done);
            }
            _ => {}
        }
    }

    /// Leaders split user ranges that served more than `split_qps` (0
    /// disables) for LOAD_SPLIT_CHECKS checks in a row, at the median of
    /// the sampled keys.
    fn split_hot_ranges(&mut self) {
        let qps_limit = self.settings.split_qps;
        let window = self.cfg.tick.as_secs_f64() * SPLIT_CHECK_TICKS as f64;
        let mut splits = Vec::new();
        for (&range_id, l) in self.load.iter_mut() {
            let qps = l.requests as f64 / window.max(1e-3);
            l.requests = 0;
            l.qps = qps as u64;
            let leader = self.replicas.get(&range_id).is_some_and(|r| r.is_leader());
            if qps_limit == 0 || range_id == SYSTEM_RANGE_ID || !leader || qps <= qps_limit as f64 {
                l.hot_checks = 0;
                continue;
            }
            l.hot_checks += 1;
            if l.hot_checks >= LOAD_SPLIT_CHECKS {
                let mut keys: Vec<Vec<u8>> = std::mem::take(&mut l.sample);
                keys.sort();
                keys.dedup();
                l.hot_checks = 0;
                if let Some(mid) = keys.get(keys.len() / 2) {
                    splits.push((range_id, mid.clone(), qps));
                }
            }
        }
        for (range_id, key, qps) in splits {
            let inside = self.replicas.get(&range_id).is_some_and(|r| {
                let d = r.descriptor();
                key > d.start_key && key < d.end_key
            });
            if inside {
                tracing::info!(
                    range_id,
                    qps = qps as u64,
                    "range is over split_qps; splitting by load"
                );
                let (done, _rx) = tokio::sync::oneshot::channel();
                self.propose_split(key, false, done);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{MemEngine, WriteBatch};

    #[test]
    fn measure_reads_in_chunks_and_picks_a_middle_key() {
        let e = MemEngine::new();
        let mut wb = WriteBatch::new();
        for i in 0..10_000u32 {
            wb.put(format!("k{i:05}").into_bytes(), vec![0u8; 10]);
        }
        e.write(&wb, true).unwrap();
        let req = MeasureRequest {
            range_id: 1,
            version: 1,
            start: b"k".to_vec(),
            end: b"l".to_vec(),
            full: true,
            split_above: Some(1000),
            gc_horizon: None,
        };
        let m = measure(&e, &req).unwrap();
        assert_eq!(m.bytes, Some(10_000 * 16));
        let k = String::from_utf8(m.split_key.unwrap()).unwrap();
        assert!(("k04000".."k06500").contains(&k.as_str()), "{k}");
        let bounded = measure(
            &e,
            &MeasureRequest {
                full: false,
                ..req.clone()
            },
        )
        .unwrap();
        assert_eq!(
            bounded.bytes, None,
            "too many pairs for a bounded measurement"
        );
        let small = measure(
            &e,
            &MeasureRequest {
                start: b"k09990".to_vec(),
                split_above: Some(1_000_000),
                ..req
            },
        )
        .unwrap();
        assert_eq!((small.bytes, small.split_key), (Some(160), None));
    }
}
