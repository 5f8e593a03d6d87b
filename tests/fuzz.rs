//! Fuzz targets on the stable toolchain (bolero's random engine under
//! `cargo test`): the codecs that turn bytes from a disk or the network
//! into values. Each target checks a property (round trip, order, no
//! panic, bounded memory), not just "does not crash".
//!
//! `make test` runs each for a bounded number of inputs; `make fuzz
//! DURATION=<seconds>` runs each for that long (BOLERO_RANDOM_TEST_TIME_MS).
//! A failure prints `BOLERO_RANDOM_SEED=…` to replay it; inputs that once
//! failed are kept under `tests/__fuzz__/<target>/corpus/` and replayed
//! first on every run.

/// Inputs per target in `make test` (bounded work); `make fuzz` sets
/// BOLERO_RANDOM_TEST_TIME_MS and runs each target for that long instead.
fn iterations() -> usize {
    match std::env::var_os("BOLERO_RANDOM_TEST_TIME_MS") {
        Some(_) => usize::MAX,
        None => 3000,
    }
}

/// `check!()`, bounded as `iterations` says.
macro_rules! fuzz {
    () => {
        bolero::check!().with_iterations(iterations())
    };
}
use rangedb::keys::{self, MvccRecord};
use rangedb::mvcc::{Lock, Write};
use rangedb::node::SnapshotAssembler;
use rangedb::proto::SnapshotChunk;
use rangedb::raft::eraftpb;
use rangedb::range::{Command, RangeDescriptor};

/// User keys: the data-key encoding round-trips and keeps the order of
/// keys within a namespace; route keys keep it across namespaces.
#[test]
fn data_keys_round_trip_and_keep_order() {
    fuzz!()
        .with_type::<(Vec<u8>, Vec<u8>)>()
        .for_each(|(a, b)| {
            let (da, db) = (keys::data_key(a), keys::data_key(b));
            assert_eq!(keys::user_key(&da).as_deref(), Some(a.as_slice()));
            let same_ns = rangedb::api::is_system_key(a) == rangedb::api::is_system_key(b);
            if same_ns {
                assert_eq!(a.cmp(b), da.cmp(&db), "{a:?} {b:?}");
            }
            let (ra, rb) = (keys::route_key(&da), keys::route_key(&db));
            assert_eq!(da.cmp(&db), ra.cmp(&rb), "route order {a:?} {b:?}");
        });
}

/// MVCC record keys: a key's versions sort newest first, directly after
/// the key and before any other key; split_mvcc inverts version_key.
#[test]
fn mvcc_record_keys_round_trip_and_stay_with_their_key() {
    fuzz!()
        .with_type::<(Vec<u8>, Vec<u8>, u64, u64)>()
        .for_each(|(a, b, t1, t2)| {
            let (da, db) = (keys::data_key(a), keys::data_key(b));
            let (v1, v2) = (keys::version_key(&da, *t1), keys::version_key(&da, *t2));
            assert_eq!(
                keys::split_mvcc(&v1),
                Some((da.as_slice(), MvccRecord::Version(*t1)))
            );
            assert_eq!(t1.cmp(t2), v2.cmp(&v1), "newest first");
            let lock = keys::lock_key(&da);
            assert_eq!(
                keys::split_mvcc(&lock),
                Some((da.as_slice(), MvccRecord::Lock))
            );
            let (lo, hi) = keys::versions_bounds(&da);
            assert!(lo <= v1 && v1 < hi);
            if da < db {
                // Every record of `a` sorts before `b` and its records.
                assert!(v1 < db && lock < db && hi <= db, "{a:?} {b:?}");
            }
        });
}

/// Arbitrary bytes where a key of the engine is expected: decoders answer
/// `None`/`Err`, never panic.
#[test]
fn key_decoders_never_panic_on_arbitrary_bytes() {
    fuzz!().with_type::<(Vec<u8>, u64)>().for_each(|(b, id)| {
        let _ = keys::user_key(b);
        let _ = keys::split_mvcc(b);
        let _ = keys::route_key(b);
        let _ = keys::display(b);
        let _ = keys::range_meta(b);
        if let Some(i) = keys::log_index(*id, b) {
            assert_eq!(keys::log_key(*id, i), *b);
        }
        let _ = keys::Tombstone::decode(*id, b);
        if let Ok(n) = keys::decode_counter(b) {
            assert_eq!(keys::encode_counter(n), *b);
        }
    });
}

/// Log keys of one range sort by index.
#[test]
fn log_keys_round_trip_in_index_order() {
    fuzz!()
        .with_type::<(u64, u64, u64)>()
        .for_each(|(r, i, j)| {
            let (a, b) = (keys::log_key(*r, *i), keys::log_key(*r, *j));
            assert_eq!(keys::log_index(*r, &a), Some(*i));
            assert_eq!(i.cmp(j), a.cmp(&b));
        });
}

/// Records stored by the engine (MVCC locks and writes, descriptors,
/// replicated commands, apply state): arbitrary bytes give `Err` or a
/// value, never a panic; values round-trip.
#[test]
fn stored_records_decode_without_panic_and_round_trip() {
    fuzz!().for_each(|b: &[u8]| {
        if let Ok(l) = Lock::decode(b) {
            assert_eq!(Lock::decode(&l.encode()).ok(), Some(l));
        }
        if let Ok(w) = Write::decode(b) {
            let _ = w.write_kind();
            assert_eq!(Write::decode(&w.encode()).ok(), Some(w));
        }
        if let Ok(d) = RangeDescriptor::decode(b) {
            assert_eq!(RangeDescriptor::decode(&d.encode()).ok(), Some(d));
        }
        if let Ok(c) = Command::decode(b) {
            let _ = c.describe();
        }
        let _ = <rangedb::raft::ApplyState as prost::Message>::decode(b);
    });
}

/// Raft's own records (rust-protobuf 2, read from the engine and, for
/// messages, from the peer port after the sender is authenticated).
#[test]
fn raft_records_decode_without_panic() {
    use protobuf::Message as _;
    use rangedb::raft::wire_guard::{check_flat, check_message};
    fuzz!().for_each(|b: &[u8]| {
        // The guard runs first, as on the peer port (rust-protobuf 2
        // overflows the stack on nested groups, RUSTSEC-2024-0437).
        if check_flat(b).is_ok() {
            let _ = eraftpb::HardState::parse_from_bytes(b);
            let _ = eraftpb::ConfState::parse_from_bytes(b);
            let _ = eraftpb::Entry::parse_from_bytes(b);
        }
        if check_message(b).is_ok() {
            if let Ok(m) = eraftpb::Message::parse_from_bytes(b) {
                // What it accepted re-encodes to bytes it accepts again.
                let again = m.write_to_bytes().expect("encode");
                assert!(check_message(&again).is_ok());
            }
        }
    });
}

/// Snapshot chunks from a peer, in any order and of any claimed size: the
/// assembler never panics, returns a snapshot only for a complete
/// in-order run, and never buffers more than its cap.
#[test]
fn snapshot_chunks_reassemble_only_in_order_and_stay_bounded() {
    fuzz!()
        .with_type::<Vec<(u8, u32, u32, u16)>>()
        .for_each(|chunks| {
            let mut a = SnapshotAssembler::default();
            let mut expect: Option<(u64, u32, usize)> = None; // id, next, bytes
            for &(id, index, total, len) in chunks {
                let (id, index, total) = (id as u64 % 4, index % 6, total % 6);
                let data = vec![7u8; len as usize % 64];
                let chunk = SnapshotChunk {
                    snapshot_id: id,
                    index,
                    total,
                };
                // The model: index 0 starts a snapshot; the next index of
                // the same one extends it; anything else drops it.
                let valid = index < total;
                expect = match expect {
                    _ if !valid => None,
                    _ if index == 0 => Some((id, 1, data.len())),
                    Some((i, n, bytes)) if i == id && n == index => {
                        Some((i, n + 1, bytes + data.len()))
                    }
                    _ => None,
                };
                let got = a.add(&chunk, data);
                match expect {
                    Some((_, n, bytes)) if n == total => {
                        assert_eq!(got.map(|g| g.len()), Some(bytes));
                        expect = None;
                    }
                    _ => assert!(got.is_none(), "an incomplete snapshot was returned"),
                }
                assert!(a.buffered() <= rangedb::node::MAX_SNAPSHOT_BYTES);
            }
        });
}

/// Status metadata from a server (or anything on the network posing as
/// one): the SDK's decoder never panics.
#[test]
fn status_metadata_decodes_without_panic() {
    fuzz!()
        .with_type::<(i32, String, Vec<(u8, String)>)>()
        .for_each(|(code, msg, meta)| {
            let mut s = tonic::Status::new(tonic::Code::from(*code), msg.clone());
            for (k, v) in meta {
                let key =
                    rangedb::wire::METADATA_KEYS[*k as usize % rangedb::wire::METADATA_KEYS.len()];
                if let Ok(v) = tonic::metadata::MetadataValue::try_from(v.as_str()) {
                    s.metadata_mut().insert(key, v);
                }
            }
            let e = rangedb::wire::from_status(&s);
            let _ = e.to_string();
        });
}

/// Login tokens (network input, before any other check): arbitrary strings
/// never verify and never panic; a real token verifies only unchanged.
#[test]
fn tokens_verify_only_unchanged() {
    use rangedb::security::auth::token;
    fuzz!()
        .with_type::<(String, String, u64, u8)>()
        .for_each(|(junk, user, gen, flip)| {
            let key = b"fuzz-token-key-0123456789abcdef!";
            assert!(token::verify(key, junk, 0).is_err(), "{junk}");
            if user.is_empty() || user.contains('.') {
                return;
            }
            let t = token::issue(key, user, *gen, u64::MAX);
            let c = token::verify(key, &t, 0).expect("a fresh token verifies");
            assert_eq!((c.user.as_str(), c.generation), (user.as_str(), *gen));
            // Any one changed byte breaks it.
            let mut bytes = t.clone().into_bytes();
            let i = *flip as usize % bytes.len();
            bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
            if let Ok(changed) = String::from_utf8(bytes) {
                if changed != t {
                    assert!(token::verify(key, &changed, 0).is_err(), "{changed}");
                }
            }
        });
}

/// Persisted users and roles (`_/auth/`): any bytes load or fail cleanly.
#[test]
fn auth_records_load_without_panic() {
    use rangedb::security::auth::AuthState;
    fuzz!()
        .with_type::<(u8, Vec<u8>)>()
        .for_each(|(which, value)| {
            let key: &[u8] = match which % 4 {
                0 => b"_/auth/enabled",
                1 => b"_/auth/token-key",
                2 => b"_/auth/users/alice",
                _ => b"_/auth/roles/app",
            };
            let _ = AuthState::from_pairs([(key, value.as_slice())]);
        });
}
