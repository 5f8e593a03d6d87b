//! `RocksEngine`: the production engine. The only file that names `rocksdb`.
//!
//! Durability: `write(batch, sync=true)` sets `WriteOptions::sync`, which fsyncs
//! the WAL and with it every earlier write (the same prefix model as MemEngine).
//! Not compiled in simulation builds (C++ threads and real files).

use std::path::Path;
use std::sync::Arc;

use rocksdb::{IteratorMode, Options, ReadOptions, SnapshotWithThreadMode, WriteOptions, DB};

use super::{BatchOp, Engine, KvPair, Snapshot, Step, Visitor, WriteBatch};
use crate::error::{Error, Result};

pub struct RocksEngine {
    db: Arc<DB>,
}

fn storage_err(e: rocksdb::Error) -> Error {
    Error::Storage(e.to_string())
}

impl RocksEngine {
    /// Opens (creating if needed) the database in `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // Most point reads on the write path miss (a key's lock record is
        // almost never there): bloom filters answer those without reading
        // blocks, in SST files and in the memtable alike.
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        table.set_whole_key_filtering(true);
        opts.set_block_based_table_factory(&table);
        opts.set_memtable_whole_key_filtering(true);
        opts.set_memtable_prefix_bloom_ratio(0.1);
        // Replaying the WAL after a crash, only a torn last record (a write
        // that was never acknowledged: it had not been synced) may be
        // dropped; damage anywhere else fails the open. RocksDB's default
        // (point in time) would stop replaying at the damage and silently
        // drop every acknowledged write after it.
        opts.set_wal_recovery_mode(rocksdb::DBRecoveryMode::TolerateCorruptedTailRecords);
        opts.set_paranoid_checks(true);
        let db = DB::open(&opts, path).map_err(|e| {
            let msg = e.to_string();
            if msg.contains("Corruption") || msg.contains("corrupt") {
                Error::DataDir(format!(
                    "data directory {} is damaged ({msg}); this node will not serve it. \
                     Restore the node from a backup, or replace it (decommission it, start \
                     a new node with an empty data directory)",
                    path.display()
                ))
            } else if msg.contains("lock") || msg.contains("LOCK") {
                Error::DataDir(format!(
                    "data directory {} is in use by another rangedb process ({msg})",
                    path.display()
                ))
            } else {
                Error::DataDir(format!(
                    "cannot open data directory {}: {msg}",
                    path.display()
                ))
            }
        })?;
        Ok(RocksEngine { db: Arc::new(db) })
    }
}

fn read_opts(start: &[u8], end: &[u8]) -> ReadOptions {
    let mut ro = ReadOptions::default();
    ro.set_iterate_lower_bound(start.to_vec());
    if !end.is_empty() {
        ro.set_iterate_upper_bound(end.to_vec());
    }
    ro
}

/// `visit` on one raw iterator: no copies, and a `Seek` is the iterator's.
fn visit_raw<D: rocksdb::DBAccess>(
    mut it: rocksdb::DBRawIteratorWithThreadMode<'_, D>,
    start: &[u8],
    f: &mut Visitor,
) -> Result<()> {
    it.seek(start);
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        match f(k, v)? {
            Step::Next => it.next(),
            Step::Seek(to) => it.seek(&to),
            Step::Stop => return Ok(()),
        }
    }
    it.status().map_err(storage_err)
}

fn collect(
    iter: impl Iterator<Item = std::result::Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>>,
    limit: usize,
) -> Result<Vec<KvPair>> {
    let mut out = Vec::new();
    for item in iter.take(limit) {
        let (k, v) = item.map_err(storage_err)?;
        out.push((k.into_vec(), v.into_vec()));
    }
    Ok(out)
}

impl Engine for RocksEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get(key).map_err(storage_err)
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize, reverse: bool) -> Result<Vec<KvPair>> {
        if limit == 0 || (!end.is_empty() && start >= end) {
            return Ok(Vec::new());
        }
        let mode = if reverse {
            IteratorMode::End
        } else {
            IteratorMode::Start
        };
        collect(self.db.iterator_opt(mode, read_opts(start, end)), limit)
    }

    fn visit(&self, start: &[u8], end: &[u8], f: &mut Visitor) -> Result<()> {
        if !end.is_empty() && start >= end {
            return Ok(());
        }
        visit_raw(self.db.raw_iterator_opt(read_opts(start, end)), start, f)
    }

    fn write(&self, batch: &WriteBatch, sync: bool) -> Result<()> {
        let mut wb = rocksdb::WriteBatch::default();
        for op in batch.ops() {
            match op {
                BatchOp::Put(k, v) => wb.put(k, v),
                BatchOp::Delete(k) => wb.delete(k),
                BatchOp::DeleteRange(s, e) => {
                    if s < e {
                        wb.delete_range(s, e)
                    }
                }
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(wb, &wo).map_err(storage_err)
    }

    fn snapshot(&self) -> Result<Box<dyn Snapshot>> {
        let db = self.db.clone();
        let snap = db.snapshot();
        // SAFETY: the snapshot borrows the DB. We keep an `Arc<DB>` in the same
        // struct and declare `snap` first, so it is dropped before the Arc and
        // the DB outlives it.
        let snap: SnapshotWithThreadMode<'static, DB> = unsafe { std::mem::transmute(snap) };
        Ok(Box::new(RocksSnapshot { snap, _db: db }))
    }
}

struct RocksSnapshot {
    snap: SnapshotWithThreadMode<'static, DB>,
    _db: Arc<DB>,
}

// SAFETY: a RocksDB snapshot is an immutable, thread-safe handle.
unsafe impl Send for RocksSnapshot {}
unsafe impl Sync for RocksSnapshot {}

impl Snapshot for RocksSnapshot {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.snap.get(key).map_err(storage_err)
    }
    fn scan(&self, start: &[u8], end: &[u8], limit: usize, reverse: bool) -> Result<Vec<KvPair>> {
        if limit == 0 || (!end.is_empty() && start >= end) {
            return Ok(Vec::new());
        }
        let mode = if reverse {
            IteratorMode::End
        } else {
            IteratorMode::Start
        };
        collect(self.snap.iterator_opt(mode, read_opts(start, end)), limit)
    }
    fn visit(&self, start: &[u8], end: &[u8], f: &mut Visitor) -> Result<()> {
        if !end.is_empty() && start >= end {
            return Ok(());
        }
        visit_raw(self.snap.raw_iterator_opt(read_opts(start, end)), start, f)
    }
}
