//! What the fixed heaps' unit tests share: a deterministic generator, the byte-pattern checks of
//! blocks, and the test bodies every fixed heap runs, generic over [`TestHeap`] and instantiated
//! in each backend's own test module (`memsys5`, `memsys3`, `tlsf`): random operations against a
//! model of the live blocks, proptest sequences, two threads at once, blocks freed by another
//! thread, the footprint read from another thread, `init` with a live block, requests too large
//! and pointers that are not blocks. After every operation each body runs the backend's
//! invariant checker and compares every live block's bytes with the pattern written into it.

use crate::counters::Stats;
use crate::heap::HeapBuf;
use crate::methods::MemMethods;
use proptest::test_runner::TestCaseError;
use std::ptr::NonNull;
use std::sync::Arc;

/// Deterministic pseudo-random numbers (splitmix64).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Write `tag` over the first `n` bytes of `p`, a live test block of at least `n` bytes.
pub(crate) fn fill(p: NonNull<u8>, n: usize, tag: u8) {
    // SAFETY: the tests call this on live blocks they own, with `n` at most their usable size.
    unsafe { p.as_ptr().write_bytes(tag, n) }
}

/// Whether the first `n` bytes of `p` (as for [`fill`]) all hold `tag`.
pub(crate) fn holds(p: NonNull<u8>, n: usize, tag: u8) -> bool {
    // SAFETY: as in `fill`: a live block of at least `n` readable bytes.
    unsafe { std::slice::from_raw_parts(p.as_ptr(), n) }
        .iter()
        .all(|&b| b == tag)
}

/// A fixed heap under test: the allocator, and what the shared bodies need to know of it.
pub(crate) trait TestHeap: MemMethods + Send + Sync + 'static {
    /// How many bytes more than `roundup(n)` the block of a request of `n` bytes may hold (0: it
    /// holds exactly `roundup(n)`).
    const SLACK: usize;
    /// Check every invariant of the module documentation (panics naming the first one broken);
    /// the number of blocks live.
    fn check(&self) -> usize;
    /// The largest request a fresh heap serves, when the allocator promises to serve it again
    /// once every block is freed; `None` when it does not (memsys3 joins free chunks apart from
    /// its key only in a merge pass, which a request for the whole pool skips).
    fn whole_block(&self) -> Option<usize>;
    /// The heap buffer.
    fn heap(&self) -> &HeapBuf;
}

/// Free live block `p` of `m`.
fn release<M: TestHeap>(m: &M, p: NonNull<u8>) {
    // SAFETY: the bodies pass live blocks of `m` they own, each once.
    unsafe { m.free(p) }
}

/// Realloc live block `p` of `m`.
fn resize<M: TestHeap>(m: &M, p: NonNull<u8>, n: usize) -> Option<NonNull<u8>> {
    // SAFETY: the bodies pass live blocks of `m` they own and drop `p` when a block comes back.
    unsafe { m.realloc(p, n) }
}

/// The usable size of the block `p` a request of `n` bytes got is what `roundup` promised: at
/// least `roundup(n) >= n`, at most [`TestHeap::SLACK`] more.
pub(crate) fn assert_sized<M: TestHeap>(m: &M, p: NonNull<u8>, n: usize) {
    // SAFETY: a live block of `m`.
    let s = unsafe { m.size(p) };
    let r = m.roundup(n);
    assert!(
        r >= n && s >= r && s <= r + M::SLACK,
        "size {s} for a request of {n} (roundup {r})"
    );
}

/// Nothing is live, and the whole heap can be had again when the allocator promises it.
pub(crate) fn assert_recovered<M: TestHeap>(m: &M) {
    assert_eq!(m.check(), 0, "blocks left live");
    if let Some(n) = m.whole_block() {
        let p = m
            .malloc(n)
            .expect("the whole heap once everything is freed");
        release(m, p);
        m.check();
    }
}

/// Request sizes of the random bodies: six in ten up to `small` bytes, three up to `mid`, one
/// up to `big`.
pub(crate) struct Sizes {
    pub(crate) small: usize,
    pub(crate) mid: usize,
    pub(crate) big: usize,
}

impl Sizes {
    fn pick(&self, rng: &mut Rng) -> usize {
        match rng.below(10) {
            0..=5 => rng.below(self.small + 1),
            6..=8 => rng.below(self.mid + 1),
            _ => rng.below(self.big + 1),
        }
    }
}

/// What a random sequence did.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Mallocs and reallocs that failed.
    pub(crate) failures: usize,
    /// Reallocs that moved the block.
    pub(crate) moves: usize,
    /// Reallocs that grew the block where it was.
    pub(crate) grown_in_place: usize,
    /// Frees.
    pub(crate) frees: usize,
}

impl Tally {
    /// The sequence exercised both outcomes of an allocation, without failing most of the time.
    pub(crate) fn assert_exercised(&self, steps: usize) {
        assert!(
            self.failures > 0 && self.failures < steps / 4 && self.moves > 0,
            "{self:?} in {steps} steps"
        );
    }
}

/// `steps` random mallocs, reallocs and frees on `m` (seeded with `seed`, sizes from `sizes`, at
/// most `cap` blocks live), against a model of the live blocks: every block holds the pattern
/// written into it until it is freed, a realloc keeps what fits, a failed realloc leaves the
/// block as it was, and the invariants hold after every step; `after_free` runs after each
/// free. Everything is freed at the end.
pub(crate) fn random_sequence<M: TestHeap>(
    m: &M,
    seed: u64,
    steps: usize,
    sizes: &Sizes,
    cap: usize,
    mut after_free: impl FnMut(&M),
) -> Tally {
    let mut rng = Rng(seed);
    let mut live: Vec<(NonNull<u8>, usize, u8)> = Vec::new();
    let mut t = Tally::default();
    for step in 0..steps {
        let size = sizes.pick(&mut rng);
        let tag = step as u8;
        // Half mallocs (frees once `cap` blocks are live), a quarter reallocs, a quarter frees.
        match rng.below(4) {
            0 | 1 if live.len() < cap => match m.malloc(size) {
                Some(p) => {
                    assert_sized(m, p, size);
                    fill(p, size, tag);
                    live.push((p, size, tag));
                }
                None => t.failures += 1,
            },
            2 if !live.is_empty() => {
                let j = rng.below(live.len());
                let (p, n, tag0) = live[j];
                assert!(holds(p, n, tag0), "contents of a live block");
                match resize(m, p, size) {
                    Some(q) => {
                        if q != p {
                            t.moves += 1;
                        } else if size > n {
                            t.grown_in_place += 1;
                        }
                        assert!(holds(q, n.min(size), tag0), "realloc kept the contents");
                        // SAFETY: a live block of `m`.
                        assert!(unsafe { m.size(q) } >= size);
                        fill(q, size, tag);
                        live[j] = (q, size, tag);
                    }
                    None => {
                        t.failures += 1;
                        assert!(holds(p, n, tag0), "a failed realloc kept the block");
                    }
                }
            }
            _ if !live.is_empty() => {
                let (p, n, tag0) = live.swap_remove(rng.below(live.len()));
                assert!(holds(p, n, tag0), "contents of a live block");
                release(m, p);
                t.frees += 1;
                after_free(m);
            }
            _ => {}
        }
        m.check();
    }
    for (p, n, tag) in live {
        assert!(holds(p, n, tag));
        release(m, p);
    }
    m.check();
    t
}

/// One operation of a proptest sequence (indices are taken modulo the live blocks).
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Malloc(usize),
    Free(usize),
    Realloc(usize, usize),
}

/// Sequences of 1 to `max_len - 1` operations on sizes below 3000.
pub(crate) fn ops(max_len: usize) -> impl proptest::strategy::Strategy<Value = Vec<Op>> {
    use proptest::prelude::*;
    let op = prop_oneof![
        (0usize..3000).prop_map(Op::Malloc),
        any::<usize>().prop_map(Op::Free),
        (any::<usize>(), 0usize..3000).prop_map(|(i, n)| Op::Realloc(i, n)),
    ];
    proptest::collection::vec(op, 1..max_len)
}

/// The proptest configuration of the heaps' sequences (200 cases, 4 under Miri).
pub(crate) fn proptest_config() -> proptest::prelude::ProptestConfig {
    proptest::prelude::ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 200 },
        failure_persistence: None,
        ..Default::default()
    }
}

/// Any sequence keeps the invariants and the contents of live blocks, and everything is
/// recovered at the end (see [`assert_recovered`]).
pub(crate) fn any_sequence<M: TestHeap>(m: &M, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut live: Vec<(NonNull<u8>, usize, u8)> = Vec::new();
    for (step, o) in ops.into_iter().enumerate() {
        let tag = step as u8;
        match o {
            Op::Malloc(n) => {
                if let Some(p) = m.malloc(n) {
                    assert_sized(m, p, n);
                    fill(p, n, tag);
                    live.push((p, n, tag));
                }
            }
            Op::Free(i) if !live.is_empty() => {
                let (p, n, t) = live.swap_remove(i % live.len());
                proptest::prop_assert!(holds(p, n, t));
                release(m, p);
            }
            Op::Realloc(i, n) if !live.is_empty() => {
                let j = i % live.len();
                let (p, old, t) = live[j];
                if let Some(q) = resize(m, p, n) {
                    proptest::prop_assert!(holds(q, old.min(n), t));
                    fill(q, n, tag);
                    live[j] = (q, n, tag);
                } else {
                    proptest::prop_assert!(holds(p, old, t));
                }
            }
            _ => {}
        }
        m.check();
    }
    for (p, n, t) in live {
        proptest::prop_assert!(holds(p, n, t));
        release(m, p);
    }
    assert_recovered(m);
    Ok(())
}

/// Two threads each malloc, realloc and free blocks of up to `max` bytes (at most 30 live) for
/// `rounds` rounds, each block holding its thread's pattern, checking the invariants now and
/// then while the other thread runs; all is recovered at the end.
pub(crate) fn two_threads<M: TestHeap>(m: Arc<M>, rounds: usize, max: usize) {
    let workers: Vec<_> = (0..2u8)
        .map(|t| {
            let m = Arc::clone(&m);
            std::thread::spawn(move || {
                let m = &*m;
                let mut rng = Rng(u64::from(t) + 100);
                let mut live: Vec<(NonNull<u8>, usize)> = Vec::new();
                let tag = 0x40 | t;
                for round in 0..rounds {
                    if round % 100 == 99 {
                        // Consistent at any moment the locks are free.
                        m.check();
                    }
                    let n = 1 + rng.below(max);
                    match rng.below(4) {
                        0 | 1 if live.len() < 30 => {
                            if let Some(p) = m.malloc(n) {
                                // `size` while the other thread changes the block's neighbours.
                                assert_sized(m, p, n);
                                fill(p, n, tag);
                                live.push((p, n));
                            }
                        }
                        2 if !live.is_empty() => {
                            let j = rng.below(live.len());
                            let (p, old) = live[j];
                            match resize(m, p, n) {
                                Some(q) => {
                                    assert!(holds(q, old.min(n), tag), "realloc kept the contents");
                                    fill(q, n, tag);
                                    live[j] = (q, n);
                                }
                                None => assert!(holds(p, old, tag)),
                            }
                        }
                        _ if !live.is_empty() => {
                            let (p, old) = live.swap_remove(rng.below(live.len()));
                            assert!(holds(p, old, tag), "another thread wrote into my block");
                            release(m, p);
                        }
                        _ => {}
                    }
                }
                for (p, n) in live {
                    assert!(holds(p, n, tag));
                    release(m, p);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_recovered(&*m);
}

/// One thread allocates `count` blocks and hands each to another, which frees it: blocks go
/// back to the part they came from, whichever thread frees them.
pub(crate) fn freed_by_another_thread<M: TestHeap>(m: Arc<M>, count: usize) {
    let (tx, rx) = std::sync::mpsc::channel::<usize>();
    let producer = {
        let m = Arc::clone(&m);
        std::thread::spawn(move || {
            let mut rng = Rng(7);
            for _ in 0..count {
                let n = 1 + rng.below(3000);
                if let Some(p) = m.malloc(n) {
                    fill(p, n, 0x5a);
                    tx.send(m.heap().offset_of(p).expect("in the heap"))
                        .unwrap();
                }
            }
        })
    };
    let mut freed = 0;
    for off in rx {
        release(&*m, m.heap().ptr(off));
        freed += 1;
    }
    producer.join().unwrap();
    assert!(freed > 0);
    assert_recovered(&*m);
}

/// The figures of `m`'s footprint for `stats`, their keys checked against `keys`.
pub(crate) fn figures(m: &dyn MemMethods, stats: &Stats, keys: &[&str]) -> Vec<u64> {
    let mut v = Vec::new();
    m.footprint(stats, &mut |h| v.push(h));
    assert_eq!(v.iter().map(|h| h.key).collect::<Vec<_>>(), keys);
    v.iter().map(|h| h.bytes).collect()
}

/// The footprint's reader never takes a lock: reading it from another thread (with a block of
/// 100 bytes live) keeps the lock biased to the thread that allocates (`biased` tells), whereas
/// another thread allocating does revoke it. The figures the reader saw, `None` where there is no
/// bias to keep (Miri, a kernel without `membarrier`).
pub(crate) fn reader_keeps_the_bias<M: TestHeap>(
    m: Arc<M>,
    biased: fn(&M) -> bool,
    keys: &[&'static str],
) -> Option<Vec<u64>> {
    let p = m.malloc(100).unwrap();
    if !biased(&m) {
        release(&*m, p);
        return None;
    }
    let reader = Arc::clone(&m);
    let keys_owned = keys.to_vec();
    let seen = std::thread::spawn(move || {
        let mut last = Vec::new();
        for _ in 0..1000 {
            last = figures(&*reader, &Stats::default(), &keys_owned);
        }
        last
    })
    .join()
    .unwrap();
    assert!(biased(&m), "the reader revoked the bias");
    let other = Arc::clone(&m);
    std::thread::spawn(move || {
        let b = other.malloc(10).unwrap();
        release(&*other, b);
    })
    .join()
    .unwrap();
    assert!(!biased(&m), "another thread allocating revokes it");
    release(&*m, p);
    Some(seen)
}

/// `init` with a block live keeps it (and hands out other memory); `shutdown` destroys nothing;
/// `init` once nothing is live lays the heap out again.
pub(crate) fn init_keeps_live_blocks<M: TestHeap>(m: &M) {
    assert_eq!(m.init(), Ok(()));
    let p = m.malloc(100).unwrap();
    fill(p, 100, 0x11);
    m.shutdown();
    assert!(holds(p, 100, 0x11), "shutdown is not destructive");
    assert_eq!(m.init(), Ok(()));
    m.check();
    let q = m.malloc(100).unwrap();
    assert_ne!(q, p, "a live block survives init");
    assert!(holds(p, 100, 0x11));
    release(m, p);
    release(m, q);
    m.shutdown();
    assert_eq!(m.init(), Ok(()));
    assert_recovered(m);
}

/// Requests of `over` bytes and more fail, and a realloc to such a size leaves the block as it
/// was.
pub(crate) fn too_large_requests_fail_cleanly<M: TestHeap>(m: &M, over: usize) {
    let sizes = [
        over,
        over + 1,
        1 << 31,
        usize::MAX / 2,
        usize::MAX - 10,
        usize::MAX,
    ];
    for &n in sizes.iter().filter(|&&n| n >= over) {
        assert!(m.malloc(n).is_none(), "malloc({n})");
    }
    m.check();
    let p = m.malloc(100).unwrap();
    fill(p, 100, 7);
    for &n in sizes.iter().filter(|&&n| n >= over) {
        assert!(resize(m, p, n).is_none(), "realloc to {n}");
        assert!(holds(p, 100, 7));
    }
    m.check();
    release(m, p);
    assert_recovered(m);
}

/// A pointer that is plainly not a live block (outside the heap, inside a block, a block freed
/// already) is ignored by `free`, `size` and `realloc`; `owns` tells the heap's addresses.
pub(crate) fn foreign_pointers_are_ignored<M: TestHeap>(m: &M) {
    let p = m.malloc(64).unwrap();
    // SAFETY: a live block of `m`.
    let size = unsafe { m.size(p) };
    let mut x = 0u64;
    let outside = NonNull::from(&mut x).cast::<u8>();
    assert_eq!((m.owns(outside), m.owns(p)), (Some(false), Some(true)));
    // SAFETY: the calls break the contract on purpose; the allocator must not act on them.
    unsafe {
        assert_eq!(m.size(outside), 0);
        m.free(outside);
        assert_eq!(m.realloc(outside, 10), None);
        m.free(p.add(1));
        m.free(m.heap().ptr(0).add(1));
    }
    m.check();
    // SAFETY: live.
    assert_eq!(unsafe { m.size(p) }, size);
    release(m, p);
    // SAFETY: freed already: ignored, as above.
    unsafe { m.free(p) };
    assert_recovered(m);
}

/// A large heap (`m`, just made) costs at most `laid_out` resident bytes when laid out, and
/// again after `init`; four blocks of 64 KiB written cost their own pages and at most `slack`
/// bytes more. Skipped where the heap is not a mapping.
pub(crate) fn touched_only_where_used<M: TestHeap>(m: &M, laid_out: usize, slack: usize) {
    let Some(r0) = m.heap().resident_bytes() else {
        eprintln!("the heap is not a mapping here: skipped");
        return;
    };
    assert!(r0 <= laid_out, "laid out: {r0} bytes resident");
    m.init().unwrap();
    let r1 = m.heap().resident_bytes().unwrap();
    assert!(r1 <= laid_out, "after init: {r1} bytes resident");
    const BLOCK: usize = 64 << 10;
    let blocks: Vec<_> = (0..4).map(|_| m.malloc(BLOCK).unwrap()).collect();
    for &p in &blocks {
        fill(p, BLOCK, 0x33);
    }
    let r2 = m.heap().resident_bytes().unwrap();
    assert!(
        r2 >= r1 + 4 * BLOCK && r2 <= r1 + 4 * BLOCK + slack,
        "four 64 KiB blocks written: {r1} -> {r2} bytes resident"
    );
    for p in blocks {
        assert!(holds(p, BLOCK, 0x33));
        release(m, p);
    }
    assert_recovered(m);
}

/// The system's page size.
pub(crate) fn page() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap()
}
