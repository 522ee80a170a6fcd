use super::*;
use crate::Stack;

/// One spec of each place and backend kind: header (`system`, `rust`, `debug`), side table
/// (`memsys3`, `memsys5` with 8- and 64-byte atoms, sharded, `tlsf`), and with `limit` above.
fn specs() -> Vec<&'static str> {
    let mut v = vec![
        "rust+scopes",
        "debug+scopes",
        "memsys3:heap=4M+scopes",
        "memsys5:heap=4M+scopes",
        "memsys5:heap=4M,min=64+scopes",
        "memsys5:heap=4M,min=32,shards=2+scopes",
        "memsys5:heap=4M,min=64+scopes+limit:max=3M",
        "tlsf:heap=4M,shards=2+scopes",
        "rust+scopes+limit:max=3M",
    ];
    if !cfg!(miri) {
        v.extend(["system+scopes", "system+scopes+limit:max=3M"]);
    }
    v
}

/// The spec without its layers: the backend alone.
fn bare(spec: &str) -> String {
    spec.split('+').next().unwrap().to_string()
}

fn header(spec: &str) -> bool {
    !spec.starts_with("memsys") && !spec.starts_with("tlsf")
}

fn layer(s: &Stack) -> &Scopes {
    s.scopes().expect("a scopes layer")
}

/// Sizes SQLite asks for, the odd ones included.
const SIZES: [usize; 12] = [0, 1, 7, 8, 24, 100, 256, 300, 1000, 4096, 5000, 70_000];

struct Held(NonNull<u8>, usize, u8);
// SAFETY: a block is owned by whoever holds the `Held`; the stacks are Send + Sync.
unsafe impl Send for Held {}

fn fill(p: NonNull<u8>, n: usize, pat: u8) {
    // SAFETY: `p` is a live block of at least `n` bytes owned by the test.
    unsafe { std::ptr::write_bytes(p.as_ptr(), pat, n) }
}

fn holds(p: NonNull<u8>, n: usize, pat: u8) -> bool {
    // SAFETY: `p` is a live block of at least `n` bytes the test filled.
    unsafe { std::slice::from_raw_parts(p.as_ptr(), n) }
        .iter()
        .all(|&b| b == pat)
}

/// Sum of the scopes' current bytes.
fn scopes_total(l: &Scopes) -> i64 {
    l.list().iter().map(|i| i.stats.current_bytes).sum()
}

#[test]
fn sizes_are_exact_and_match_the_backend() {
    for spec in specs() {
        let s = Stack::from_spec(spec).unwrap();
        let b = Stack::from_spec(&bare(spec)).unwrap();
        let l = layer(&s);
        let a = l.create("a", None).unwrap();
        let _ = l.enter(a).unwrap();
        let mut live = Vec::new();
        for &n in SIZES.iter().cycle().take(60) {
            let want = if header(spec) {
                b.roundup(n.max(1) + HEADER) - HEADER
            } else {
                b.roundup(n)
            };
            assert_eq!(s.roundup(n), want, "{spec}: roundup({n})");
            let p = s.malloc(n).unwrap_or_else(|| panic!("{spec}: malloc({n})"));
            assert_eq!(p.as_ptr().align_offset(8), 0, "{spec}: alignment");
            // SAFETY: `p` is live.
            let size = unsafe { s.size(p) };
            assert!(size >= n, "{spec}: size {size} < {n}");
            if !spec.starts_with("system")
                && !spec.starts_with("memsys3")
                && !spec.starts_with("tlsf")
            {
                // Backends whose roundup is exact stay exact (tlsf's may be 8 bytes short).
                assert_eq!(size, s.roundup(n), "{spec}: size of malloc({n})");
            }
            fill(p, n, 0x5a);
            live.push((p, n));
        }
        let sum: usize = live.iter().map(|&(p, _)| unsafe { s.size(p) }).sum();
        let st = l.stats(a).unwrap();
        assert_eq!(st.current_bytes, sum as i64, "{spec}: scope bytes");
        assert_eq!(s.stats().current_bytes, sum as i64, "{spec}: stack bytes");
        assert_eq!(st.current_count, live.len() as i64);
        assert_eq!(st.peak_bytes, sum as i64, "{spec}: peak, one thread");
        assert_eq!(scopes_total(l), s.stats().current_bytes);
        for (p, n) in live {
            assert!(holds(p, n, 0x5a), "{spec}: contents");
            // SAFETY: live, freed once.
            unsafe { s.free(p) };
        }
        let st = l.stats(a).unwrap();
        assert_eq!((st.current_bytes, st.current_count), (0, 0), "{spec}");
        assert_eq!(st.malloc_calls, 60);
        assert_eq!(st.free_calls, 60);
        assert_eq!(st.largest_request, 70_000);
        assert_eq!(
            l.stats(0).unwrap().malloc_calls,
            0,
            "{spec}: default untouched"
        );
        let _ = l.enter(0);
    }
}

#[test]
fn blocks_are_credited_to_their_scope_on_any_thread() {
    for spec in specs() {
        let s = Stack::from_spec(spec).unwrap();
        let l = layer(&s);
        let a = l.create("a", None).unwrap();
        let c = l.create("c", Some(1 << 20)).unwrap();
        let (tx, rx) = std::sync::mpsc::sync_channel::<Held>(4);
        std::thread::scope(|sc| {
            let s = &s;
            sc.spawn(move || {
                let _ = s.scopes().unwrap().enter(a).unwrap();
                for i in 0..2000usize {
                    let n = SIZES[i % SIZES.len()];
                    let p = s.malloc(n).unwrap();
                    fill(p, n, 7);
                    tx.send(Held(p, n, 7)).unwrap();
                }
            });
            sc.spawn(move || {
                let _ = s.scopes().unwrap().enter(c).unwrap();
                // A block of c's own, then everything a's thread sends, freed here.
                let mine = s.malloc(100).unwrap();
                for Held(p, n, pat) in rx {
                    assert!(holds(p, n, pat));
                    // SAFETY: live block of `s`, handed over, freed once.
                    unsafe { s.free(p) };
                }
                // SAFETY: as above.
                unsafe { s.free(mine) };
            });
        });
        let sa = l.stats(a).unwrap();
        let scc = l.stats(c).unwrap();
        assert_eq!((sa.current_bytes, sa.current_count), (0, 0), "{spec}: a");
        assert_eq!((sa.malloc_calls, sa.free_calls), (2000, 2000), "{spec}");
        assert_eq!(
            (scc.current_bytes, scc.malloc_calls, scc.free_calls),
            (0, 1, 1)
        );
        assert!(sa.peak_bytes > 0);
        assert_eq!(s.stats().current_bytes, 0);
        assert_eq!(l.heads[c].used.load(Relaxed), 0, "{spec}: cap total");
    }
}

#[test]
fn a_realloc_stays_in_its_blocks_scope() {
    for spec in specs() {
        let s = Stack::from_spec(spec).unwrap();
        let l = layer(&s);
        let a = l.create("a", None).unwrap();
        let capped = l.create("capped", Some(1 << 20)).unwrap();
        let other = l.create("other", None).unwrap();
        for home in [a, capped] {
            let _ = l.enter(home);
            let p = s.malloc(100).unwrap();
            fill(p, 100, 3);
            let _ = l.enter(other);
            let mut p = p;
            for n in [300, 5000, 70_000, 50, 4000] {
                // SAFETY: `p` is live; replaced by the result.
                p = unsafe { s.realloc(p, n) }.unwrap_or_else(|| panic!("{spec}: realloc {n}"));
                assert!(holds(p, 50, 3), "{spec}: contents kept");
                // SAFETY: live.
                let size = unsafe { s.size(p) } as i64;
                assert_eq!(l.stats(home).unwrap().current_bytes, size, "{spec}");
                assert_eq!(l.stats(other).unwrap().current_bytes, 0, "{spec}");
                if home == capped {
                    assert_eq!(l.heads[capped].used.load(Relaxed) as i64, size);
                }
            }
            // SAFETY: live, freed once.
            unsafe { s.free(p) };
            let st = l.stats(home).unwrap();
            assert_eq!((st.current_bytes, st.current_count), (0, 0), "{spec}");
            assert_eq!(l.stats(other).unwrap().malloc_calls, 0, "{spec}");
            assert_eq!(scopes_total(l), s.stats().current_bytes, "{spec}");
        }
        let _ = l.enter(0);
    }
}

#[test]
fn a_scope_at_its_cap_gets_null_and_nothing_else_changes() {
    for spec in specs() {
        let s = Stack::from_spec(spec).unwrap();
        let l = layer(&s);
        let cap = 64 * 1024;
        let b = l.create("b", Some(cap)).unwrap();
        let a = l.create("a", None).unwrap();
        let _ = l.enter(b);
        let mut live = Vec::new();
        let mut refused = 0;
        for i in 0..400usize {
            let n = [100, 1000, 3000][i % 3];
            match s.malloc(n) {
                Some(p) => live.push(p),
                None => refused += 1,
            }
            let st = l.stats(b).unwrap();
            assert!(st.current_bytes as u64 <= cap, "{spec}: past the cap");
        }
        assert!(refused > 0, "{spec}: the cap never refused");
        let st = l.stats(b).unwrap();
        assert_eq!(st.failed_calls, refused, "{spec}");
        assert_eq!(
            st.peak_bytes,
            l.heads[b].used.load(Relaxed) as i64,
            "{spec}"
        );
        assert_eq!(st.current_bytes, l.heads[b].used.load(Relaxed) as i64);
        // A growing realloc past the cap fails and leaves the block as it was.
        let p = live[0];
        // SAFETY: live.
        let size = unsafe { s.size(p) };
        fill(p, size, 9);
        // SAFETY: live; on failure untouched.
        assert!(unsafe { s.realloc(p, 60_000) }.is_none(), "{spec}");
        assert!(holds(p, size, 9), "{spec}: block kept");
        assert_eq!(l.stats(b).unwrap().current_bytes, st.current_bytes);
        // Another scope goes on.
        {
            let _ = l.enter(a);
            let q = s.malloc(100_000).expect("another scope is not capped");
            // SAFETY: live.
            unsafe { s.free(q) };
            let _ = l.enter(b);
        }
        // Back under the cap: the scope works again.
        for p in live.drain(..live.len() / 2) {
            // SAFETY: live, freed once.
            unsafe { s.free(p) };
        }
        let p = s.malloc(1000).expect("under the cap again");
        live.push(p);
        for p in live {
            // SAFETY: live, freed once.
            unsafe { s.free(p) };
        }
        assert_eq!(l.heads[b].used.load(Relaxed), 0, "{spec}");
        assert_eq!(l.stats(b).unwrap().current_bytes, 0);
        assert_eq!(scopes_total(l), s.stats().current_bytes, "{spec}");
        let _ = l.enter(0);
    }
}

#[test]
fn entering_an_unknown_scope_changes_nothing() {
    let s = Stack::from_spec("rust+scopes").unwrap();
    let l = layer(&s);
    let a = l.create("a", None).unwrap();
    assert_eq!(l.enter(a), Some(0));
    assert_eq!(l.enter(2), None);
    assert_eq!(l.enter(MAX_SCOPES + 3), None);
    assert_eq!(l.current(), a);
    assert_eq!(l.enter(0), Some(a));
    // Another layer's scope is not this one's: the thread is in the default scope there.
    let other = Stack::from_spec("rust+scopes").unwrap();
    let _ = l.enter(a);
    assert_eq!(layer(&other).current(), 0);
    let _ = l.enter(0);
}

#[test]
fn create_refuses_bad_names_caps_and_too_many() {
    let s = Stack::from_spec("rust+scopes").unwrap();
    let l = layer(&s);
    assert_eq!(l.len(), 1);
    assert_eq!(l.name(0).as_deref(), Some("default"));
    assert!(matches!(l.create("", None), Err(Error::BadScope { .. })));
    let e = l.create("default", None).unwrap_err();
    assert!(e.to_string().contains("'default' exists already"), "{e}");
    assert!(matches!(
        l.create("x", Some(0)),
        Err(Error::BadScope { .. })
    ));
    for i in 1..MAX_SCOPES {
        assert_eq!(l.create(&format!("s{i}"), Some(i as u64)).unwrap(), i);
    }
    let e = l.create("one-more", None).unwrap_err();
    assert_eq!(e, Error::ScopesFull { max: MAX_SCOPES });
    assert!(e.to_string().contains("256"), "{e}");
    assert_eq!(e.sqlite_code(), crate::sqlite::SQLITE_FULL);
    let list = l.list();
    assert_eq!(list.len(), MAX_SCOPES);
    assert_eq!(list[5].name, "s5");
    assert_eq!(list[5].max_bytes, Some(5));
    assert_eq!(list[0].max_bytes, None);
    assert_eq!(l.find("s7"), Some(7));
}

#[test]
fn the_peak_is_exact_with_one_thread() {
    for spec in specs() {
        let s = Stack::from_spec(spec).unwrap();
        let l = layer(&s);
        let a = l.create("a", None).unwrap();
        let _ = l.enter(a);
        let mut live = Vec::new();
        let mut top = 0i64;
        let mut now = 0i64;
        // Up and down across several flush thresholds.
        for round in 0..4 {
            for _ in 0..(40 + round * 10) {
                let p = s.malloc(3000).unwrap();
                // SAFETY: live.
                now += unsafe { s.size(p) } as i64;
                live.push(p);
            }
            top = top.max(now);
            for _ in 0..30 {
                let p = live.pop().unwrap();
                // SAFETY: live, freed once.
                now -= unsafe { s.size_and_free(p) } as i64;
            }
            assert_eq!(l.stats(a).unwrap().peak_bytes, top, "{spec}: round {round}");
            assert_eq!(l.stats(a).unwrap().current_bytes, now, "{spec}");
        }
        for p in live {
            // SAFETY: live, freed once.
            unsafe { s.free(p) };
        }
        let _ = l.enter(0);
    }
}
