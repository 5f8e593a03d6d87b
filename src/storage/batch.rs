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

use super::Engine;
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

    pub fn exists(&self, key: &[u8]) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }
}

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
