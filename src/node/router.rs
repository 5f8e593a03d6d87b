//! `Router`: which of this node's initialized replicas holds a key — a map
//! sorted by span start, so a lookup is O(log n) over thousands of ranges.
//!
//! Invariant (asserted on every insert): no two initialized replicas on a
//! node overlap. The Store keeps it by dropping, in the same round, every
//! replica a merge or a snapshot made stale, before it re-indexes the spans
//! that changed and adds the ranges splits created.

use std::collections::BTreeMap;

/// start -> (end, range id), for initialized replicas.
#[derive(Debug, Default)]
pub struct Router {
    by_start: BTreeMap<Vec<u8>, (Vec<u8>, u64)>,
    /// range id -> start.
    starts: BTreeMap<u64, Vec<u8>>,
}

impl Router {
    /// Indexes range `id` at `[start, end)`, replacing its previous span.
    pub fn insert(&mut self, id: u64, start: &[u8], end: &[u8]) {
        self.remove(id);
        assert!(start < end, "range {id}: empty span indexed");
        if let Some((s, (e, other))) = self.by_start.range(..end.to_vec()).next_back() {
            assert!(
                e.as_slice() <= start,
                "ranges {other} [{s:02x?}, {e:02x?}) and {id} [{start:02x?}, {end:02x?}) \
                 overlap on one node"
            );
        }
        self.by_start.insert(start.to_vec(), (end.to_vec(), id));
        self.starts.insert(id, start.to_vec());
    }

    pub fn remove(&mut self, id: u64) {
        if let Some(start) = self.starts.remove(&id) {
            self.by_start.remove(&start);
        }
    }

    /// The range holding `key`.
    pub fn lookup(&self, key: &[u8]) -> Option<u64> {
        let (_, (end, id)) = self.by_start.range(..=key.to_vec()).next_back()?;
        (key < end.as_slice()).then_some(*id)
    }

    /// The range holding the last key before `end` (a reverse scan's first
    /// range).
    pub fn lookup_before(&self, end: &[u8]) -> Option<u64> {
        let (_, (e, id)) = self.by_start.range(..end.to_vec()).next_back()?;
        (end <= e.as_slice()).then_some(*id)
    }

    /// Whether a range other than `id` overlaps `[start, end)`.
    pub fn overlaps_other(&self, id: u64, start: &[u8], end: &[u8]) -> bool {
        self.by_start
            .range(..end.to_vec())
            .next_back()
            .is_some_and(|(_, (e, other))| *other != id && e.as_slice() > start)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.starts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_find_the_range_holding_a_key() {
        let mut r = Router::default();
        r.insert(1, b"a", b"c");
        r.insert(2, b"c", b"f");
        r.insert(3, b"m", b"z");
        assert_eq!(r.lookup(b"a"), Some(1));
        assert_eq!(r.lookup(b"b\xff"), Some(1));
        assert_eq!(r.lookup(b"c"), Some(2));
        assert_eq!(r.lookup(b"g"), None, "a gap");
        assert_eq!(r.lookup(b"z"), None);
        assert_eq!(r.lookup_before(b"f"), Some(2));
        assert_eq!(r.lookup_before(b"c"), Some(1));
        assert_eq!(r.lookup_before(b"a"), None);
        // A split: the left part shrinks, then the right part is added.
        r.insert(2, b"c", b"d");
        r.insert(4, b"d", b"f");
        assert_eq!((r.lookup(b"c"), r.lookup(b"e")), (Some(2), Some(4)));
        r.remove(4);
        assert_eq!(r.lookup(b"e"), None);
        assert!(r.overlaps_other(9, b"b", b"x"));
        assert!(!r.overlaps_other(3, b"m", b"n"));
        assert_eq!(r.len(), 3);
    }

    #[test]
    #[should_panic(expected = "overlap on one node")]
    fn overlapping_replicas_are_a_bug() {
        let mut r = Router::default();
        r.insert(1, b"a", b"m");
        r.insert(2, b"k", b"z");
    }
}
