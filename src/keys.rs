//! THE physical keyspace: every byte string RangeDB stores in its engine.
//!
//! ```text
//! 0x01 | range_id:u64be | 0x01                  Raft hard state of a range
//! 0x01 | range_id:u64be | 0x02                  apply state (applied index/term, truncation, conf state)
//! 0x01 | range_id:u64be | 0x03                  range descriptor (this replica's copy)
//! 0x01 | range_id:u64be | 0x10 | index:u64be    Raft log entry
//! 0x02 | "ident"                                store identity (cluster id, node id, addresses)
//! 0x10 | key                                    system data: user-visible keys under `_/`
//! 0x11 | key                                    user data: every other key
//! ```
//! Big-endian integers keep per-range state and log entries in index order, and the
//! one-byte tags keep all system data before all user data, so the system range is
//! simply `[0x10, 0x11)` and the first user range starts at `0x11`.
//!
//! CAVEATS: values are stored unversioned; MVCC suffixes arrive with transactions.

/// Tag of per-range Raft state.
pub const RANGE_LOCAL: u8 = 0x01;
/// Tag of per-store (per-node) state.
pub const STORE_LOCAL: u8 = 0x02;
/// Tag of system data (`_/…` keys).
pub const SYSTEM_DATA: u8 = 0x10;
/// Tag of user data.
pub const USER_DATA: u8 = 0x11;
/// First byte after all data.
pub const DATA_END: u8 = 0x12;

/// User-visible prefix of the reserved metadata namespace.
pub const SYSTEM_PREFIX: &[u8] = b"_/";

const HARD_STATE: u8 = 0x01;
const APPLY_STATE: u8 = 0x02;
const DESCRIPTOR: u8 = 0x03;
const TOMBSTONE: u8 = 0x04;
const LOG: u8 = 0x10;

/// Key of the store identity record.
pub const STORE_IDENT_KEY: &[u8] = b"\x02ident";

/// Whether a user-visible key lies in the reserved `_/` namespace.
pub fn is_system_key(key: &[u8]) -> bool {
    key.starts_with(SYSTEM_PREFIX)
}

/// Encodes a user-visible key into the data keyspace.
pub fn data_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(if is_system_key(key) {
        SYSTEM_DATA
    } else {
        USER_DATA
    });
    k.extend_from_slice(key);
    k
}

/// Decodes a data key back into the user-visible key; `None` for non-data keys.
pub fn user_key(data_key: &[u8]) -> Option<&[u8]> {
    match data_key.first() {
        Some(&SYSTEM_DATA) | Some(&USER_DATA) => Some(&data_key[1..]),
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

fn range_key(range_id: u64, suffix: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(10);
    k.push(RANGE_LOCAL);
    k.extend_from_slice(&range_id.to_be_bytes());
    k.push(suffix);
    k
}

pub fn hard_state_key(range_id: u64) -> Vec<u8> {
    range_key(range_id, HARD_STATE)
}

pub fn apply_state_key(range_id: u64) -> Vec<u8> {
    range_key(range_id, APPLY_STATE)
}

pub fn descriptor_key(range_id: u64) -> Vec<u8> {
    range_key(range_id, DESCRIPTOR)
}

/// Marks a range whose replica was removed from this node.
pub fn tombstone_key(range_id: u64) -> Vec<u8> {
    range_key(range_id, TOMBSTONE)
}

/// The range id of a tombstone key.
pub fn tombstone_range_id(key: &[u8]) -> Option<u64> {
    if key.len() == 10 && key[0] == RANGE_LOCAL && key[9] == TOMBSTONE {
        Some(u64::from_be_bytes(key[1..9].try_into().ok()?))
    } else {
        None
    }
}

/// Bounds `[start, end)` of everything a range keeps besides its data.
pub fn range_local_bounds(range_id: u64) -> (Vec<u8>, Vec<u8>) {
    let mut start = vec![RANGE_LOCAL];
    start.extend_from_slice(&range_id.to_be_bytes());
    let mut end = vec![RANGE_LOCAL];
    end.extend_from_slice(&(range_id + 1).to_be_bytes());
    (start, end)
}

pub fn log_key(range_id: u64, index: u64) -> Vec<u8> {
    let mut k = range_key(range_id, LOG);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// Decodes the index of a log key of `range_id`.
pub fn log_index(range_id: u64, key: &[u8]) -> Option<u64> {
    let prefix = range_key(range_id, LOG);
    let rest = key.strip_prefix(prefix.as_slice())?;
    Some(u64::from_be_bytes(rest.try_into().ok()?))
}

/// Bounds `[start, end)` of every descriptor key (all ranges of a store).
pub fn descriptor_scan_bounds() -> (Vec<u8>, Vec<u8>) {
    (vec![RANGE_LOCAL], vec![STORE_LOCAL])
}

/// Whether `key` is the descriptor key of some range; returns the range id.
pub fn descriptor_range_id(key: &[u8]) -> Option<u64> {
    if key.len() == 10 && key[0] == RANGE_LOCAL && key[9] == DESCRIPTOR {
        Some(u64::from_be_bytes(key[1..9].try_into().ok()?))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_data_sorts_before_user_data() {
        let sys = data_key(b"_/cluster/id");
        let user = data_key(b"/user/1");
        let low_user = data_key(b"");
        assert!(sys < user && sys < low_user);
        let (s0, s1) = system_data_bounds();
        let (u0, u1) = user_data_bounds();
        assert!(s0 <= sys && sys < s1);
        assert!(u0 <= user && user < u1 && u0 <= low_user);
        assert_eq!(s1, u0);
        assert_eq!(user_key(&sys), Some(&b"_/cluster/id"[..]));
        assert_eq!(user_key(&user), Some(&b"/user/1"[..]));
        assert_eq!(user_key(&hard_state_key(1)), None);
    }

    #[test]
    fn log_keys_sort_by_index_and_roundtrip() {
        let a = log_key(7, 9);
        let b = log_key(7, 10);
        let c = log_key(7, 256);
        assert!(a < b && b < c);
        assert_eq!(log_index(7, &c), Some(256));
        assert_eq!(log_index(8, &c), None);
        assert!(log_key(7, u64::MAX) < log_key(8, 0));
        assert!(hard_state_key(7) < log_key(7, 0));
        assert_eq!(descriptor_range_id(&descriptor_key(42)), Some(42));
        assert_eq!(descriptor_range_id(&log_key(42, 3)), None);
        let (d0, d1) = descriptor_scan_bounds();
        assert!(d0 <= descriptor_key(1) && descriptor_key(u64::MAX) < d1);
        assert!(STORE_IDENT_KEY >= d1.as_slice() && STORE_IDENT_KEY < data_key(b"_/").as_slice());
    }
}
