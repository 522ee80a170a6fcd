//! The peak of the counters is exact while one thread allocates (src/counters.rs, "Peak").
//!
//! One test function on purpose: the owner count that decides "one thread allocating" is
//! process-wide, and the test harness would otherwise run other tests' threads at the same time.

use sqlalloc::counters::Counters;

/// A deterministic pseudo-random sequence (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `steps` random mallocs/frees/reallocs on `c` from the calling thread, checking after each one
/// that the peak is exactly the highest current value since `base_peak` (the peak when the run
/// started). Returns the live sizes left.
fn solo_run(c: &Counters, rng: &mut Rng, steps: usize, live: &mut Vec<usize>, base_peak: &mut i64) {
    for _ in 0..steps {
        let r = rng.next();
        match r % 8 {
            0..=3 => {
                let n = (r >> 8) as usize % 200_000;
                c.on_malloc(n, Some(n));
                live.push(n);
            }
            4..=6 if !live.is_empty() => {
                let i = (r >> 8) as usize % live.len();
                c.on_free(live.swap_remove(i));
            }
            _ if !live.is_empty() => {
                let i = (r >> 8) as usize % live.len();
                let n = (r >> 20) as usize % 300_000;
                c.on_realloc(n, live[i], Some(n));
                live[i] = n;
            }
            _ => {}
        }
        let s = c.stats();
        *base_peak = (*base_peak).max(s.current_bytes);
        assert_eq!(s.peak_bytes, *base_peak, "peak after a solo step");
    }
}

#[test]
fn peak_is_exact_while_one_thread_allocates() {
    let c: &'static Counters = Box::leak(Box::new(Counters::new()));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut live = Vec::new();
    let mut peak = 0i64;

    // 1. One thread, far more than 64 KiB up and down.
    solo_run(c, &mut rng, 5_000, &mut live, &mut peak);

    // 2. Another thread allocates (above the peak), frees some, keeps some, and exits; this
    // thread, alone again, must count from the new total.
    let before = c.stats().current_bytes;
    std::thread::spawn(move || {
        c.on_malloc(10 << 20, Some(10 << 20));
        c.on_malloc(3 << 20, Some(3 << 20));
        c.on_free(10 << 20);
    })
    .join()
    .unwrap();
    assert_eq!(c.stats().current_bytes, before + (3 << 20));
    // Two threads owned a slot meanwhile: the peak is within 2 × 64 KiB of the true one.
    let truth = peak.max(before + (13 << 20));
    let seen = c.stats().peak_bytes;
    let bound = 2 * sqlalloc::counters::PEAK_FLUSH_BYTES;
    assert!(
        (seen - truth).abs() <= bound,
        "peak with two threads: {seen}, true {truth}"
    );
    peak = seen;
    solo_run(c, &mut rng, 5_000, &mut live, &mut peak);

    // 3. A reset: the peak restarts from the current value and stays exact.
    c.reset_peak();
    peak = c.stats().current_bytes;
    assert_eq!(c.stats().peak_bytes, peak, "peak right after a reset");
    solo_run(c, &mut rng, 5_000, &mut live, &mut peak);

    // 4. A thread that only reads (does not allocate) does not end the solo state: while it
    // takes snapshots, the allocating thread's peak is still exact, and the reader never sees
    // the peak go down or pass the true one.
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut last = 0;
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let p = c.stats().peak_bytes;
                assert!(p >= last, "peak went down: {last} -> {p}");
                last = p;
                reads += 1;
            }
            (last, reads)
        });
        solo_run(c, &mut rng, 20_000, &mut live, &mut peak);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (last, reads) = reader.join().unwrap();
        assert!(
            last <= peak && reads > 0,
            "reader saw {last} (true peak {peak})"
        );
    });

    // 5. Everything freed: current 0, peak kept.
    for n in live.drain(..) {
        c.on_free(n);
    }
    c.on_free(3 << 20); // the other thread's block
    assert_eq!(c.stats().peak_bytes, peak, "frees do not move the peak");
    let s = c.stats();
    assert_eq!(
        (s.current_bytes, s.current_count, s.peak_bytes),
        (0, 0, peak)
    );
}
