//! THE physical keyspace: every byte string RangeDB stores in its engine, and
//! the formats of the small values that are not protobuf messages.
//!
//! ```text
//! 0x01 | "format"                              data format version (u32 BE): FORMAT_VERSION
//! 0x01 | "ident"                               store identity (cluster id, node id, addresses)
//! 0x01 | "range-counter"                       range ids reserved by this store (u64 BE)
//! 0x02 | range_id:u64be | 0x01                 Raft hard state of a range
//! 0x02 | range_id:u64be | 0x02                 apply state (applied index/term, truncation, conf state)
//! 0x02 | range_id:u64be | 0x03                 range descriptor (this replica's copy)
//! 0x02 | range_id:u64be | 0x04                 tombstone (a removed or merged-away replica)
//! 0x03 | range_id:u64be | index:u64be          Raft log entry
//! 0x10 | keycode(key)                          system data: user-visible keys under `_/`
//! 0x11 | keycode(key) | 0x00                   user data (every other key): its lock
//! 0x11 | keycode(key) | 0x01 | !ts:u64be       a version committed at ts (newest first)
//! 0x12                                         (end of data; never a key)
//! ```
//! Range metadata (0x02) lives apart from Raft logs (0x03), so a node opens
//! its ranges by reading a few keys per range, never the logs. Big-endian
//! integers keep per-range state and log entries in index order, and the
//! one-byte tags keep all system data before all user data: the system range
//! is `[0x10, 0x11)`, the user keyspace `[0x11, 0x12)`.
//!
//! **keycode** (toydb's escape-and-terminate rule): a user key is stored with
//! every 0x00 byte escaped as `0x00 0xff` and a `0x00 0x00` terminator. The
//! encoding preserves order and no encoded key is a prefix of another, so a
//! suffix can follow a key without breaking order: MVCC versions will be
//! `tag | keycode(key) | version`, every version of a key sorting together,
//! right after the key itself (a split at `tag | keycode(key)` keeps all of a
//! key's versions in one range).
//!
//! A data directory written by an older layout is refused with one line that
//! names its format (`check_format`); nothing is migrated or rewritten.
//!
//! System data is stored unversioned (plain values under its data key);
//! user data only as MVCC records (`mvcc`). Format 3 introduced them;
//! format 2 held user values unversioned.

use crate::api::{self, route};
use crate::error::{Error, Result};

/// Tag of per-store (per-node) state.
pub const STORE_LOCAL: u8 = 0x01;
/// Tag of per-range metadata.
pub const RANGE_META: u8 = 0x02;
/// Tag of Raft log entries.
pub const RAFT_LOG: u8 = 0x03;
/// Tag of system data (`_/…` keys).
pub const SYSTEM_DATA: u8 = 0x10;
/// Tag of user data.
pub const USER_DATA: u8 = 0x11;
/// First byte after all data.
pub const DATA_END: u8 = 0x12;

/// The data format this build reads and writes.
pub const FORMAT_VERSION: u32 = 3;
/// Key of the data format version.
pub const FORMAT_KEY: &[u8] = b"\x01format";
/// Key of the store identity record.
pub const STORE_IDENT_KEY: &[u8] = b"\x01ident";
/// Key of the per-store counter behind new range ids.
pub const RANGE_COUNTER_KEY: &[u8] = b"\x01range-counter";
/// Where format 1 (before keycode and the metadata/log split) kept the
/// store identity: its presence names a format-1 directory.
pub const FORMAT_1_IDENT_KEY: &[u8] = b"\x02ident";

const HARD_STATE: u8 = 0x01;
const APPLY_STATE: u8 = 0x02;
const DESCRIPTOR: u8 = 0x03;
const TOMBSTONE: u8 = 0x04;

/// The value of `FORMAT_KEY`.
pub fn encode_format() -> Vec<u8> {
    FORMAT_VERSION.to_be_bytes().to_vec()
}

/// The format version a data directory declares (its `FORMAT_KEY` value,
/// and whether it holds the format-1 identity), or an error naming it when
/// this build cannot read it. `format`: the FORMAT_KEY value, if any;
/// `format1_ident`: whether FORMAT_1_IDENT_KEY exists.
pub fn check_format(format: Option<&[u8]>, format1_ident: bool) -> Result<()> {
    let found = match format {
        Some(v) => match <[u8; 4]>::try_from(v) {
            Ok(b) => u32::from_be_bytes(b),
            Err(_) => {
                return Err(Error::DataDir(
                    "its data format version record is damaged".into(),
                ))
            }
        },
        None if format1_ident => 1,
        None => return Ok(()),
    };
    if found == FORMAT_VERSION {
        return Ok(());
    }
    let what = match found {
        1 => " (from before the keycode layout)",
        2 => " (from before MVCC: unversioned user values)",
        _ => "",
    };
    Err(Error::DataDir(format!(
        "it holds data format {found}{what}, and this build of RangeDB reads only format {FORMAT_VERSION} \
         (there is no migration: start with an empty --data-dir, or use the RangeDB version that wrote it)"
    )))
}

fn escape_into(out: &mut Vec<u8>, key: &[u8]) {
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

/// Decodes a keycode at the start of `enc`: the key and what follows it.
fn unescape(enc: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut key = Vec::with_capacity(enc.len());
    let mut i = 0;
    loop {
        match *enc.get(i)? {
            0 => match *enc.get(i + 1)? {
                0 => return Some((key, &enc[i + 2..])),
                0xff => {
                    key.push(0);
                    i += 2;
                }
                _ => return None,
            },
            b => {
                key.push(b);
                i += 1;
            }
        }
    }
}

fn tagged(tag: u8, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 3);
    k.push(tag);
    escape_into(&mut k, key);
    k
}

/// Encodes a user-visible key into the data keyspace (its namespace chosen
/// by its `_/` prefix).
pub fn data_key(key: &[u8]) -> Vec<u8> {
    tagged(
        if api::is_system_key(key) {
            SYSTEM_DATA
        } else {
            USER_DATA
        },
        key,
    )
}

/// The data key of `key` taken in the user namespace (a scan bound past
/// the last user key may look like a system key).
pub fn user_data_key(key: &[u8]) -> Vec<u8> {
    tagged(USER_DATA, key)
}

/// The data key of a named system key (`api::meta`).
pub fn system(name: &str) -> Vec<u8> {
    tagged(SYSTEM_DATA, name.as_bytes())
}

/// Decodes a data key back into the user-visible key; `None` for keys that
/// are not data keys (or not exactly one encoded key).
pub fn user_key(data_key: &[u8]) -> Option<Vec<u8>> {
    match data_key.first() {
        Some(&SYSTEM_DATA) | Some(&USER_DATA) => match unescape(&data_key[1..])? {
            (key, []) => Some(key),
            _ => None,
        },
        _ => None,
    }
}

/// The user-visible form of a data key for messages (lossy).
pub fn display(data_key: &[u8]) -> String {
    match user_key(data_key) {
        Some(k) => String::from_utf8_lossy(&k).into_owned(),
        None => format!("{data_key:02x?}"),
    }
}

/// The route key (`api::route`) of a range bound or data key: the form in
/// which spans leave the server, so the SDK never sees this layout.
pub fn route_key(data_key: &[u8]) -> Vec<u8> {
    let ns = |tag: u8| match tag {
        SYSTEM_DATA => route::SYSTEM,
        USER_DATA => route::USER,
        t if t < SYSTEM_DATA => route::SYSTEM,
        _ => route::END,
    };
    match data_key {
        [] => Vec::new(),
        [tag] => vec![ns(*tag)],
        [tag, ..] => match user_key(data_key) {
            Some(k) => {
                let mut r = vec![ns(*tag)];
                r.extend_from_slice(&k);
                r
            }
            None => vec![ns(*tag)],
        },
    }
}

/// Suffix bytes of a key's MVCC records (see `lock_key`, `version_key`).
const LOCK_SUFFIX: u8 = 0x00;
const VERSION_SUFFIX: u8 = 0x01;

/// The lock record of the user key whose data key is `data_key`: at most
/// one per key, sorting before the key's versions.
pub fn lock_key(data_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(data_key.len() + 1);
    k.extend_from_slice(data_key);
    k.push(LOCK_SUFFIX);
    k
}

/// The write record of `data_key` committed at `ts`. Timestamps are stored
/// bitwise inverted (big-endian), so a key's versions sort newest first.
pub fn version_key(data_key: &[u8], ts: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(data_key.len() + 9);
    k.extend_from_slice(data_key);
    k.push(VERSION_SUFFIX);
    k.extend_from_slice(&(!ts).to_be_bytes());
    k
}

/// Bounds of every version record of `data_key` (newest first).
pub fn versions_bounds(data_key: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut start = data_key.to_vec();
    start.push(VERSION_SUFFIX);
    let mut end = data_key.to_vec();
    end.push(VERSION_SUFFIX + 1);
    (start, end)
}

/// What an MVCC record key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MvccRecord {
    Lock,
    /// A write record committed at this timestamp.
    Version(u64),
}

/// Splits an MVCC record key into the data key it belongs to and what it
/// is; `None` for anything else (a bare data key, a malformed key).
pub fn split_mvcc(key: &[u8]) -> Option<(&[u8], MvccRecord)> {
    match key.first() {
        Some(&SYSTEM_DATA) | Some(&USER_DATA) => {}
        _ => return None,
    }
    let (_, rest) = unescape(&key[1..])?;
    let data_key = &key[..key.len() - rest.len()];
    match rest {
        [LOCK_SUFFIX] => Some((data_key, MvccRecord::Lock)),
        [VERSION_SUFFIX, ts @ ..] if ts.len() == 8 => {
            let inverted = u64::from_be_bytes(ts.try_into().ok()?);
            Some((data_key, MvccRecord::Version(!inverted)))
        }
        _ => None,
    }
}

/// Bounds `[start, end)` of the user data keyspace.
pub fn user_data_bounds() -> (Vec<u8>, Vec<u8>) {
    (vec![USER_DATA], vec![DATA_END])
}

/// Bounds `[start, end)` of the system data keyspace.
pub fn system_data_bounds() -> (Vec<u8>, Vec<u8>) {
    (vec![SYSTEM_DATA], vec![USER_DATA])
}

/// The data keys of every key starting with `prefix` (user-visible).
pub fn prefix_bounds(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let start = data_key(prefix);
    let end = api::meta::prefix_end(prefix);
    let end = if end.is_empty() {
        if api::is_system_key(prefix) {
            system_data_bounds().1
        } else {
            user_data_bounds().1
        }
    } else {
        data_key(&end)
    };
    (start, end)
}

fn range_meta_key(range_id: u64, kind: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(10);
    k.push(RANGE_META);
    k.extend_from_slice(&range_id.to_be_bytes());
    k.push(kind);
    k
}

pub fn hard_state_key(range_id: u64) -> Vec<u8> {
    range_meta_key(range_id, HARD_STATE)
}

pub fn apply_state_key(range_id: u64) -> Vec<u8> {
    range_meta_key(range_id, APPLY_STATE)
}

pub fn descriptor_key(range_id: u64) -> Vec<u8> {
    range_meta_key(range_id, DESCRIPTOR)
}

/// Marks a range whose replica was removed from this node or merged away.
pub fn tombstone_key(range_id: u64) -> Vec<u8> {
    range_meta_key(range_id, TOMBSTONE)
}

/// What a range metadata key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeMeta {
    HardState,
    ApplyState,
    Descriptor,
    Tombstone,
}

/// Decodes a range metadata key: its range and what it holds.
pub fn range_meta(key: &[u8]) -> Option<(u64, RangeMeta)> {
    if key.len() != 10 || key[0] != RANGE_META {
        return None;
    }
    let id = u64::from_be_bytes(key[1..9].try_into().ok()?);
    let kind = match key[9] {
        HARD_STATE => RangeMeta::HardState,
        APPLY_STATE => RangeMeta::ApplyState,
        DESCRIPTOR => RangeMeta::Descriptor,
        TOMBSTONE => RangeMeta::Tombstone,
        _ => return None,
    };
    Some((id, kind))
}

/// Bounds `[start, end)` of every range's metadata (and nothing else).
pub fn range_meta_bounds() -> (Vec<u8>, Vec<u8>) {
    (vec![RANGE_META], vec![RANGE_META + 1])
}

/// The bounds of `tag | range_id | …`.
fn per_range_bounds(tag: u8, range_id: u64) -> (Vec<u8>, Vec<u8>) {
    let mut start = vec![tag];
    start.extend_from_slice(&range_id.to_be_bytes());
    let end = match range_id.checked_add(1) {
        Some(next) => {
            let mut e = vec![tag];
            e.extend_from_slice(&next.to_be_bytes());
            e
        }
        None => vec![tag + 1],
    };
    (start, end)
}

/// Bounds of a range's metadata keys.
pub fn range_meta_span(range_id: u64) -> (Vec<u8>, Vec<u8>) {
    per_range_bounds(RANGE_META, range_id)
}

/// Bounds of a range's Raft log.
pub fn log_bounds(range_id: u64) -> (Vec<u8>, Vec<u8>) {
    per_range_bounds(RAFT_LOG, range_id)
}

pub fn log_key(range_id: u64, index: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(RAFT_LOG);
    k.extend_from_slice(&range_id.to_be_bytes());
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// Decodes the index of a log key of `range_id`.
pub fn log_index(range_id: u64, key: &[u8]) -> Option<u64> {
    if key.len() != 17 || key[0] != RAFT_LOG || key[1..9] != range_id.to_be_bytes() {
        return None;
    }
    Some(u64::from_be_bytes(key[9..17].try_into().ok()?))
}

/// Why a replica's state was dropped from this node (the value of its
/// tombstone key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tombstone {
    /// A membership change removed this node; `conf_ver` is the membership
    /// version known to exclude it (a replica recreated here later votes
    /// only once it holds a newer one).
    Removed { conf_ver: u64 },
    /// The range was merged into its left neighbour: its traffic is ignored
    /// for good (range ids are never reused).
    Merged,
}

const MERGED_TOMBSTONE: &[u8] = b"merged";

impl Tombstone {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Tombstone::Removed { conf_ver } => conf_ver.to_be_bytes().to_vec(),
            Tombstone::Merged => MERGED_TOMBSTONE.to_vec(),
        }
    }

    /// Decodes a tombstone; anything else is corruption (never a default:
    /// reading a damaged removal as conf_ver 0 would lift the no-vote rule).
    pub fn decode(range_id: u64, v: &[u8]) -> Result<Tombstone> {
        if v == MERGED_TOMBSTONE {
            return Ok(Tombstone::Merged);
        }
        match <[u8; 8]>::try_from(v) {
            Ok(b) => Ok(Tombstone::Removed {
                conf_ver: u64::from_be_bytes(b),
            }),
            Err(_) => Err(Error::Corruption(format!(
                "tombstone of range {range_id} does not decode ({} bytes)",
                v.len()
            ))),
        }
    }
}

/// The value of `RANGE_COUNTER_KEY`.
pub fn encode_counter(n: u64) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

pub fn decode_counter(v: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(v)
        .map(u64::from_be_bytes)
        .map_err(|_| Error::Corruption(format!("range counter is {} bytes, not 8", v.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_data_sorts_before_user_data() {
        let sys = data_key(b"_/cluster/id");
        let user = data_key(b"/user/1");
        let low_user = data_key(b"\x00");
        assert!(sys < user && sys < low_user);
        let (s0, s1) = system_data_bounds();
        let (u0, u1) = user_data_bounds();
        assert!(s0 <= sys && sys < s1);
        assert!(u0 <= user && user < u1 && u0 <= low_user);
        assert_eq!(s1, u0);
        assert_eq!(user_key(&sys).as_deref(), Some(&b"_/cluster/id"[..]));
        assert_eq!(user_key(&user).as_deref(), Some(&b"/user/1"[..]));
        assert_eq!(user_key(&hard_state_key(1)), None);
        assert_eq!(system(api::meta::CLUSTER_ID), sys);
    }

    #[test]
    fn keycode_preserves_order_and_is_prefix_free() {
        let keys: Vec<&[u8]> = vec![
            b"",
            b"\x00",
            b"\x00\x00",
            b"\x00\x01",
            b"\x00\xff",
            b"a",
            b"a\x00",
            b"a\x00b",
            b"a\x01",
            b"ab",
            b"b",
            b"\xff",
            b"\xff\x00",
        ];
        for w in keys.windows(2) {
            assert!(w[0] < w[1], "test keys sorted");
            let (a, b) = (user_data_key(w[0]), user_data_key(w[1]));
            assert!(a < b, "{:?} < {:?}", w[0], w[1]);
            assert!(!b.starts_with(&a), "{:?} is a prefix of {:?}", a, b);
        }
        for k in &keys {
            assert_eq!(user_key(&user_data_key(k)).as_deref(), Some(*k));
            // A version suffix keeps the key's place.
            let mut v = user_data_key(k);
            v.extend_from_slice(&u64::MAX.to_be_bytes());
            assert_eq!(unescape(&v[1..]).map(|(k2, _)| k2).as_deref(), Some(*k));
        }
        assert_eq!(user_key(&[USER_DATA, b'a', 0, 7]), None, "bad escape");
        assert_eq!(user_key(&[USER_DATA, b'a']), None, "unterminated");
    }

    #[test]
    fn metadata_lives_apart_from_logs() {
        let a = log_key(7, 9);
        let b = log_key(7, 10);
        let c = log_key(7, 256);
        assert!(a < b && b < c);
        assert_eq!(log_index(7, &c), Some(256));
        assert_eq!(log_index(8, &c), None);
        assert!(log_key(7, u64::MAX) < log_key(8, 0));
        let (m0, m1) = range_meta_bounds();
        for k in [
            hard_state_key(7),
            apply_state_key(7),
            descriptor_key(u64::MAX),
        ] {
            assert!(m0 <= k && k < m1);
        }
        assert!(log_key(0, 0) >= m1, "logs are outside the metadata span");
        assert_eq!(
            range_meta(&descriptor_key(42)),
            Some((42, RangeMeta::Descriptor))
        );
        assert_eq!(
            range_meta(&tombstone_key(42)),
            Some((42, RangeMeta::Tombstone))
        );
        assert_eq!(range_meta(&log_key(42, 3)), None);
        let (l0, l1) = log_bounds(7);
        assert!(l0 <= a && c < l1 && log_key(8, 0) >= l1);
        for k in [FORMAT_KEY, STORE_IDENT_KEY, RANGE_COUNTER_KEY] {
            assert!(k < m0.as_slice());
        }
        assert!(range_meta(FORMAT_1_IDENT_KEY).is_none());
    }

    #[test]
    fn tombstones_and_counters_decode_or_fail() {
        for t in [Tombstone::Removed { conf_ver: 9 }, Tombstone::Merged] {
            assert_eq!(Tombstone::decode(1, &t.encode()).unwrap(), t);
        }
        for bad in [&b""[..], b"\x01\x02\x03", b"merge"] {
            assert!(matches!(
                Tombstone::decode(1, bad),
                Err(Error::Corruption(_))
            ));
        }
        assert_eq!(decode_counter(&encode_counter(41)).unwrap(), 41);
        assert!(decode_counter(b"x").is_err());
    }

    #[test]
    fn old_formats_are_named() {
        assert!(check_format(Some(&encode_format()), false).is_ok());
        assert!(check_format(None, false).is_ok(), "a new directory");
        let e = check_format(None, true).unwrap_err().to_string();
        assert!(e.contains("data format 1") && e.contains("format 3"), "{e}");
        let e = check_format(Some(&2u32.to_be_bytes()), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("data format 2 (from before MVCC"), "{e}");
        let e = check_format(Some(&7u32.to_be_bytes()), false).unwrap_err();
        assert!(e.to_string().contains("format 7"), "{e}");
    }

    #[test]
    fn mvcc_records_group_by_key_lock_first_then_newest_version() {
        let a = data_key(b"a");
        let a0 = data_key(b"a\x00");
        let b = data_key(b"b");
        let records = [
            a.clone(),
            lock_key(&a),
            version_key(&a, 20),
            version_key(&a, 10),
            version_key(&a, 0),
            a0.clone(),
            lock_key(&a0),
            version_key(&a0, 5),
            b.clone(),
        ];
        for w in records.windows(2) {
            assert!(w[0] < w[1], "{:02x?} < {:02x?}", w[0], w[1]);
        }
        assert_eq!(
            split_mvcc(&lock_key(&a)),
            Some((a.as_slice(), MvccRecord::Lock))
        );
        assert_eq!(
            split_mvcc(&version_key(&a0, 77)),
            Some((a0.as_slice(), MvccRecord::Version(77)))
        );
        assert_eq!(split_mvcc(&a), None, "a bare data key is no record");
        let (v0, v1) = versions_bounds(&a);
        assert!(v0 <= version_key(&a, u64::MAX) && version_key(&a, 0) < v1);
        assert!(
            lock_key(&a) < v0 && v1 <= a0,
            "a's records sit before the next key"
        );
    }

    #[test]
    fn spans_leave_the_server_as_route_keys() {
        assert_eq!(route_key(&[USER_DATA]), vec![route::USER]);
        assert_eq!(route_key(&[DATA_END]), vec![route::END]);
        assert_eq!(route_key(&[SYSTEM_DATA]), vec![route::SYSTEM]);
        assert_eq!(route_key(&data_key(b"/a")), route::key(b"/a"));
        assert_eq!(route_key(&data_key(b"_/x")), route::key(b"_/x"));
        assert_eq!(route_key(&user_data_key(b"_/x")), route::user(b"_/x"));
        let (s, e) = prefix_bounds(b"_/cluster/nodes/");
        assert!(s < system(&api::meta::node_key(3)) && system(&api::meta::node_key(3)) < e);
    }
}
