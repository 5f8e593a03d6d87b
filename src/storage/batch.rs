//! `WriteBatch` (mutations applied atomically, in order) and `Overlay`, the
//! one way to read while applying: a batch staged over the engine.
//!
//! A Store stages every replica's writes of one loop into one batch, so an
//! apply that reads a key (PutIfAbsent, descriptor updates, and soon MVCC
//! conflict checks) must see what earlier entries of the same loop staged —
//! put, deleted, or untouched — or its answer would depend on how entries
//! happened to be grouped into Readys. `WriteBatch::staged` gives exactly
//! those three answers; `Overlay` falls through to the engine only for
//! untouched keys.
//!
//! The batch builds an index (key -> position of its last point write, plus
//! the range deletions) on its first lookup and keeps it current after
//! that, so a lookup costs O(log n), not a scan of the batch — and a batch
//! nobody reads through (the common case: plain puts) pays nothing for it.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use super::{Engine, KvPair};
use crate::error::Result;

/// One mutation inside a `WriteBatch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    /// Deletes every key in `[start, end)`.
    DeleteRange(Vec<u8>, Vec<u8>),
}

/// What a batch did to one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staged<'a> {
    /// Its last mutation puts this value.
    Put(&'a [u8]),
    /// Its last mutation deletes it (a delete or a range deletion).
    Deleted,
    /// The batch does not touch it: the engine's value stands.
    Untouched,
}

/// Mutations applied atomically, in order.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
    bytes: usize,
    /// Built on the first lookup (see the module docs).
    index: OnceLock<Index>,
}

impl PartialEq for WriteBatch {
    fn eq(&self, other: &Self) -> bool {
        self.ops == other.ops
    }
}

impl Eq for WriteBatch {}

/// Where a batch last touches each key.
#[derive(Debug, Clone, Default)]
struct Index {
    /// key -> index in `ops` of its last Put/Delete.
    last_point: BTreeMap<Vec<u8>, usize>,
    /// (index in `ops`, start, end) of every DeleteRange.
    ranges: Vec<(usize, Vec<u8>, Vec<u8>)>,
}

impl Index {
    fn add(&mut self, i: usize, op: &BatchOp) {
        match op {
            BatchOp::Put(k, _) | BatchOp::Delete(k) => {
                self.last_point.insert(k.clone(), i);
            }
            BatchOp::DeleteRange(s, e) => self.ranges.push((i, s.clone(), e.clone())),
        }
    }
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, op: BatchOp) {
        self.bytes += match &op {
            BatchOp::Put(k, v) => k.len() + v.len(),
            BatchOp::Delete(k) => k.len(),
            BatchOp::DeleteRange(s, e) => s.len() + e.len(),
        };
        if let Some(index) = self.index.get_mut() {
            index.add(self.ops.len(), &op);
        }
        self.ops.push(op);
    }

    fn index(&self) -> &Index {
        self.index.get_or_init(|| {
            let mut ix = Index::default();
            for (i, op) in self.ops.iter().enumerate() {
                ix.add(i, op);
            }
            ix
        })
    }

    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.push(BatchOp::Put(key.into(), value.into()));
    }
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.push(BatchOp::Delete(key.into()));
    }
    pub fn delete_range(&mut self, start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) {
        self.push(BatchOp::DeleteRange(start.into(), end.into()));
    }
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    /// Approximate payload size in bytes.
    pub fn size_bytes(&self) -> usize {
        self.bytes
    }

    /// What this batch does to `key`: put, deleted, or untouched.
    pub fn staged(&self, key: &[u8]) -> Staged<'_> {
        let ix = self.index();
        let point = ix.last_point.get(key).copied();
        let after = point.map_or(0, |p| p + 1);
        let range_deleted = ix
            .ranges
            .iter()
            .any(|(i, s, e)| *i >= after && s.as_slice() <= key && key < e.as_slice());
        if range_deleted {
            return Staged::Deleted;
        }
        match point.map(|p| &self.ops[p]) {
            Some(BatchOp::Put(_, v)) => Staged::Put(v),
            Some(_) => Staged::Deleted,
            None => Staged::Untouched,
        }
    }

    pub fn append(&mut self, other: WriteBatch) {
        for op in other.ops {
            self.push(op);
        }
    }
}

/// Reads through a batch staged over the engine: what the engine will hold
/// once the batch is written.
pub struct Overlay<'a> {
    batch: &'a WriteBatch,
    base: &'a dyn Engine,
}

impl<'a> Overlay<'a> {
    pub fn new(batch: &'a WriteBatch, base: &'a dyn Engine) -> Overlay<'a> {
        Overlay { batch, base }
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.batch.staged(key) {
            Staged::Put(v) => Ok(Some(v.to_vec())),
            Staged::Deleted => Ok(None),
            Staged::Untouched => self.base.get(key),
        }
    }

    /// `Engine::visit` through the batch (chunked `scan`s).
    pub fn visit(&self, start: &[u8], end: &[u8], f: &mut super::Visitor) -> Result<()> {
        super::visit_chunked(&|from, n| self.scan(from, end, n, false), start, f)
    }

    pub fn exists(&self, key: &[u8]) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    /// Up to `limit` pairs with `start <= key < end` (empty `end`:
    /// unbounded) as the engine will hold them once the batch is written,
    /// ascending or, with `reverse`, descending.
    pub fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KvPair>> {
        if limit == 0 || (!end.is_empty() && start >= end) {
            return Ok(Vec::new());
        }
        let ix = self.batch.index();
        let in_span = |k: &[u8]| k >= start && (end.is_empty() || k < end);
        // The batch's final word on every key it touches by point, in scan order.
        let mut staged: Vec<(&[u8], Option<&[u8]>)> = ix
            .last_point
            .range(start.to_vec()..)
            .map(|(k, _)| k.as_slice())
            .take_while(|k| in_span(k))
            .map(|k| match self.batch.staged(k) {
                Staged::Put(v) => (k, Some(v)),
                _ => (k, None),
            })
            .collect();
        if reverse {
            staged.reverse();
        }
        // A key the batch touches only through a range deletion is gone.
        let range_deleted = |k: &[u8]| {
            ix.ranges
                .iter()
                .any(|(_, s, e)| s.as_slice() <= k && k < e.as_slice())
        };
        let before = |a: &[u8], b: &[u8]| if reverse { a > b } else { a < b };
        let mut out: Vec<KvPair> = Vec::new();
        let mut next = 0;
        let mut cursor: Option<Vec<u8>> = None;
        let chunk = limit.clamp(OVERLAY_SCAN_MIN_CHUNK, OVERLAY_SCAN_MAX_CHUNK);
        'base: loop {
            let (lo, hi) = match (&cursor, reverse) {
                (None, _) => (start.to_vec(), end.to_vec()),
                (Some(c), false) => {
                    let mut after = c.clone();
                    after.push(0);
                    (after, end.to_vec())
                }
                (Some(c), true) => (start.to_vec(), c.clone()),
            };
            if !hi.is_empty() && lo >= hi {
                break;
            }
            let base = self.base.scan(&lo, &hi, chunk, reverse)?;
            let exhausted = base.len() < chunk;
            for (k, v) in base {
                while next < staged.len() && before(staged[next].0, &k) {
                    if let (key, Some(value)) = staged[next] {
                        out.push((key.to_vec(), value.to_vec()));
                    }
                    next += 1;
                    if out.len() >= limit {
                        break 'base;
                    }
                }
                cursor = Some(k.clone());
                if ix.last_point.contains_key(&k) || range_deleted(&k) {
                    continue; // the batch decides this key
                }
                out.push((k, v));
                if out.len() >= limit {
                    break 'base;
                }
            }
            if exhausted {
                break;
            }
        }
        for (key, value) in &staged[next..] {
            if out.len() >= limit {
                break;
            }
            if let Some(value) = value {
                out.push((key.to_vec(), value.to_vec()));
            }
        }
        Ok(out)
    }
}

/// Engine pairs read per call while scanning through an overlay (a point
/// read of a key's newest records asks for 4: reading more copies versions
/// nobody looks at).
const OVERLAY_SCAN_MIN_CHUNK: usize = 4;
const OVERLAY_SCAN_MAX_CHUNK: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemEngine;

    #[test]
    fn staged_answers_put_deleted_or_untouched() {
        let mut b = WriteBatch::new();
        assert_eq!(b.staged(b"a"), Staged::Untouched);
        b.put("a", "1");
        assert_eq!(b.staged(b"a"), Staged::Put(b"1"));
        b.delete("a");
        assert_eq!(b.staged(b"a"), Staged::Deleted, "deleted, not untouched");
        b.put("a", "2");
        b.delete_range("a", "c");
        assert_eq!(b.staged(b"a"), Staged::Deleted);
        assert_eq!(b.staged(b"b"), Staged::Deleted);
        assert_eq!(b.staged(b"c"), Staged::Untouched);
        b.put("b", "3");
        assert_eq!(
            b.staged(b"b"),
            Staged::Put(b"3"),
            "put after the range deletion"
        );
        assert_eq!(b.staged(b"a"), Staged::Deleted);
        let mut c = WriteBatch::new();
        c.put("c", "4");
        b.append(c);
        assert_eq!(b.staged(b"c"), Staged::Put(b"4"));
        assert_eq!(b.len(), 6);
    }

    /// Scanning through the overlay equals writing the batch, then
    /// scanning: random engines, batches and spans, both directions.
    #[test]
    fn overlay_scans_see_what_the_batch_will_write() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let key = |rng: &mut rand_chacha::ChaCha8Rng| vec![b'k', rng.gen_range(0..40u8)];
        for round in 0..300 {
            let e = MemEngine::new();
            let mut w = WriteBatch::new();
            for _ in 0..rng.gen_range(0..30) {
                w.put(key(&mut rng), vec![round as u8]);
            }
            e.write(&w, true).unwrap();
            let mut b = WriteBatch::new();
            for _ in 0..rng.gen_range(0..12) {
                match rng.gen_range(0..10) {
                    0 => {
                        let (x, y) = (key(&mut rng), key(&mut rng));
                        b.delete_range(x.clone().min(y.clone()), x.max(y));
                    }
                    1..=3 => b.delete(key(&mut rng)),
                    _ => b.put(key(&mut rng), vec![200, rng.gen()]),
                }
            }
            let (x, y) = (key(&mut rng), key(&mut rng));
            let (start, end) = (x.clone().min(y.clone()), x.max(y));
            let end = if rng.gen_bool(0.2) { Vec::new() } else { end };
            let limit = rng.gen_range(1..50);
            let reverse = rng.gen_bool(0.5);
            let got = Overlay::new(&b, &e)
                .scan(&start, &end, limit, reverse)
                .unwrap();
            let oracle = MemEngine::new();
            let mut all = WriteBatch::new();
            for (k, v) in e.dump() {
                all.put(k, v);
            }
            all.append(b.clone());
            oracle.write(&all, true).unwrap();
            let want = oracle.scan(&start, &end, limit, reverse).unwrap();
            assert_eq!(
                got, want,
                "round {round}: {start:?}..{end:?} limit {limit} reverse {reverse}"
            );
        }
    }

    #[test]
    fn overlay_falls_through_only_for_untouched_keys() {
        let e = MemEngine::new();
        let mut w = WriteBatch::new();
        w.put("x", "disk");
        w.put("y", "disk");
        e.write(&w, true).unwrap();
        let mut b = WriteBatch::new();
        b.delete("x");
        let o = Overlay::new(&b, &e);
        assert_eq!(
            o.get(b"x").unwrap(),
            None,
            "a staged delete hides the engine"
        );
        assert_eq!(o.get(b"y").unwrap(), Some(b"disk".to_vec()));
        assert!(!o.exists(b"z").unwrap());
    }
}
