//! One conformance suite for every engine, plus a mirror check that MemEngine
//! and RocksEngine agree on a seeded random workload.

use super::*;

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn keys(pairs: &[KvPair]) -> Vec<String> {
    pairs
        .iter()
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .collect()
}

/// The behaviour every engine must have.
fn conformance(e: &dyn Engine) {
    assert!(e.is_empty().unwrap());
    assert_eq!(e.get(b"missing").unwrap(), None);

    let mut wb = WriteBatch::new();
    for k in ["a", "b", "c", "d", "e"] {
        wb.put(k, format!("v{k}"));
    }
    e.write(&wb, true).unwrap();
    assert!(!e.is_empty().unwrap());
    assert_eq!(e.get(b"c").unwrap(), Some(b("vc")));

    // Bounded scans, both directions, half-open bounds.
    assert_eq!(
        keys(&e.scan(b"b", b"e", 10, false).unwrap()),
        ["b", "c", "d"]
    );
    assert_eq!(
        keys(&e.scan(b"b", b"e", 10, true).unwrap()),
        ["d", "c", "b"]
    );
    assert_eq!(keys(&e.scan(b"b", b"e", 2, false).unwrap()), ["b", "c"]);
    assert_eq!(keys(&e.scan(b"b", b"e", 2, true).unwrap()), ["d", "c"]);
    assert_eq!(
        keys(&e.scan(b"", b"", 100, false).unwrap()),
        ["a", "b", "c", "d", "e"]
    );
    assert_eq!(
        keys(&e.scan(b"c", b"", 100, true).unwrap()),
        ["e", "d", "c"]
    );
    assert!(e.scan(b"d", b"b", 10, false).unwrap().is_empty());
    assert!(e.scan(b"a", b"z", 0, false).unwrap().is_empty());

    // Visits borrow pairs in order; Seek skips ahead, Stop ends; bounds hold.
    assert_eq!(visited(e, b"", b"", &[]), ["a", "b", "c", "d", "e"]);
    assert_eq!(visited(e, b"b", b"e", &[]), ["b", "c", "d"]);
    assert_eq!(visited(e, b"a", b"", &[("a", "d")]), ["a", "d", "e"]);
    assert_eq!(visited(e, b"a", b"d", &[("b", "zz")]), ["a", "b"]);
    assert_eq!(visited(e, b"a", b"", &[("c", "")]), ["a", "b", "c"]);
    assert!(visited(e, b"d", b"b", &[]).is_empty());

    // A batch applies in order and atomically: put, overwrite, delete, range delete.
    let snap = e.snapshot().unwrap();
    let mut wb = WriteBatch::new();
    wb.put("a", "new");
    wb.delete("b");
    wb.delete_range("c", "e");
    wb.put("d", "again");
    wb.put("x", "1");
    wb.delete("x");
    e.write(&wb, false).unwrap();
    assert_eq!(
        keys(&e.scan(b"", b"", 100, false).unwrap()),
        ["a", "d", "e"]
    );
    assert_eq!(e.get(b"a").unwrap(), Some(b("new")));
    assert_eq!(e.get(b"d").unwrap(), Some(b("again")));
    assert_eq!(e.get(b"x").unwrap(), None);

    // The snapshot still sees the state before the batch.
    assert_eq!(snap.get(b"a").unwrap(), Some(b("va")));
    assert_eq!(
        keys(&snap.scan(b"", b"", 100, false).unwrap()),
        ["a", "b", "c", "d", "e"]
    );
    assert_eq!(keys(&snap.scan(b"a", b"c", 100, true).unwrap()), ["b", "a"]);
    let mut seen = Vec::new();
    snap.visit(b"b", b"", &mut |k, v| {
        seen.push((b(std::str::from_utf8(k).unwrap()), v.to_vec()));
        Ok(if k == b"c" {
            Step::Seek(b("e"))
        } else {
            Step::Next
        })
    })
    .unwrap();
    assert_eq!(
        seen,
        [(b("b"), b("vb")), (b("c"), b("vc")), (b("e"), b("ve"))]
    );

    // Binary keys with 0x00 and 0xff bytes order bytewise.
    let mut wb = WriteBatch::new();
    wb.put(vec![0x11, 0x00], "lo");
    wb.put(vec![0x11, 0xff, 0xff], "hi");
    e.write(&wb, true).unwrap();
    let got = e.scan(&[0x11], &[0x12], 10, false).unwrap();
    assert_eq!(
        got.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        vec![vec![0x11, 0x00], vec![0x11, 0xff, 0xff]]
    );
}

/// The keys a visit of `[start, end)` passes; at a key named in `plan` it
/// seeks to the paired key (`""`: stops there).
fn visited(e: &dyn Engine, start: &[u8], end: &[u8], plan: &[(&str, &str)]) -> Vec<String> {
    let mut out = Vec::new();
    e.visit(start, end, &mut |k, v| {
        let k = String::from_utf8_lossy(k).into_owned();
        assert_eq!(v, format!("v{k}").as_bytes());
        let step = match plan.iter().find(|(at, _)| *at == k) {
            Some((_, "")) => Step::Stop,
            Some((_, to)) => Step::Seek(b(to)),
            None => Step::Next,
        };
        out.push(k);
        Ok(step)
    })
    .unwrap();
    out
}

/// A seeded random visit (seeks and stops at random) passes the same pairs
/// on every engine and through the chunked default.
fn random_visit(engines: &[&dyn Engine], rng: &mut impl rand::Rng) {
    let key =
        |rng: &mut dyn rand::RngCore| vec![(rng.next_u32() % 4) as u8, (rng.next_u32() % 32) as u8];
    let (s, e) = (key(rng), key(rng));
    let plan: Vec<u32> = (0..64).map(|_| rng.next_u32()).collect();
    let run = |visit: &dyn Fn(&mut Visitor) -> Result<()>| {
        let mut out = Vec::new();
        let mut i = 0;
        visit(&mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            let r = plan[i % plan.len()];
            i += 1;
            Ok(match r % 10 {
                0 => Step::Stop,
                // Just past this key, or a few keys on.
                1 => Step::Seek([k, &[(r >> 8) as u8]].concat()),
                2 if k.len() == 2 && k[1] < 250 => Step::Seek(vec![k[0], k[1] + 3]),
                _ => Step::Next,
            })
        })
        .unwrap();
        out
    };
    let first = run(&|f| engines[0].visit(&s, &e, f));
    for eng in engines {
        assert_eq!(run(&|f| eng.visit(&s, &e, f)), first);
        let scan = |from: &[u8], n: usize| eng.scan(from, &e, n, false);
        assert_eq!(run(&|f| visit_chunked(&scan, &s, f)), first);
    }
}

#[test]
fn mem_engine_conforms() {
    conformance(&MemEngine::new());
}

#[cfg(not(madsim))]
#[test]
fn rocks_engine_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conformance(&RocksEngine::open(dir.path()).unwrap());
}

#[cfg(not(madsim))]
#[test]
fn rocks_engine_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = RocksEngine::open(dir.path()).unwrap();
        let mut wb = WriteBatch::new();
        wb.put("k", "v");
        e.write(&wb, true).unwrap();
        let err = RocksEngine::open(dir.path())
            .err()
            .expect("second open must fail while locked");
        assert!(err.to_string().contains("in use"), "{err}");
    }
    let e = RocksEngine::open(dir.path()).unwrap();
    assert_eq!(e.get(b"k").unwrap(), Some(b("v")));
}

/// Mirror: the same seeded random workload on both engines gives identical results.
#[cfg(not(madsim))]
#[test]
fn mem_and_rocks_agree_on_random_workload() {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    let dir = tempfile::tempdir().unwrap();
    let rocks = RocksEngine::open(dir.path()).unwrap();
    let mem = MemEngine::new();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let key = |rng: &mut ChaCha8Rng| vec![rng.gen_range(0u8..4), rng.gen_range(0u8..32)];
    for round in 0..300 {
        let mut wb = WriteBatch::new();
        for _ in 0..rng.gen_range(1..6) {
            match rng.gen_range(0..10) {
                0 => {
                    let (a, b) = (key(&mut rng), key(&mut rng));
                    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                    wb.delete_range(lo, hi);
                }
                1..=3 => wb.delete(key(&mut rng)),
                _ => wb.put(key(&mut rng), vec![round as u8; rng.gen_range(0..8)]),
            }
        }
        let sync = rng.gen_bool(0.3);
        rocks.write(&wb, sync).unwrap();
        mem.write(&wb, sync).unwrap();
        let (s, e) = (key(&mut rng), key(&mut rng));
        let limit = rng.gen_range(0..20);
        let rev = rng.gen_bool(0.5);
        assert_eq!(
            rocks.scan(&s, &e, limit, rev).unwrap(),
            mem.scan(&s, &e, limit, rev).unwrap()
        );
        let k = key(&mut rng);
        assert_eq!(rocks.get(&k).unwrap(), mem.get(&k).unwrap());
        random_visit(&[&rocks, &mem], &mut rng);
    }
    assert_eq!(rocks.scan(&[], &[], usize::MAX, false).unwrap(), mem.dump());
}
