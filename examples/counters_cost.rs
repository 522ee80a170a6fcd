//! What the always-on counters cost per malloc+free pair, measured directly: the same loop of
//! libc malloc/free pairs (1024 live blocks, SQLite's size mix, as bench/micro.c's mix) with and
//! without the counter updates (`Counters::on_malloc` + `on_free`, as the stack calls them),
//! alternated, median of the differences. The allocator's own work is in both loops, as it is
//! around the counters in real use (without it, the loop would only measure the latency of two
//! dependent updates of the same counter in a row). Used by `make bench` (bench/run.py),
//! which puts the figure next to the target (≤ 3 ns per pair).
//!
//! Usage: `counters_cost [--pairs N] [--rounds R] [--threads T]`. Prints one line
//! `RESULT ns_per_pair=... base_ns=... with_ns=... threads=T` (per thread, CPU time of the loop).

use sqlalloc::counters::Counters;
use std::hint::black_box;
use std::time::Instant;

/// SQLite's size mix of bench/micro.c: 50% 8–64 B, 43% 257–512 B, 5% 4–8 KiB, 2% 65–256 B.
fn sizes(seed: u64) -> Vec<usize> {
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        s.wrapping_mul(2_685_821_657_736_338_717)
    };
    (0..4096)
        .map(|_| {
            let r = next() % 100;
            let u = (next() >> 11) as usize;
            match r {
                0..=49 => 8 + u % 57,
                50..=92 => 257 + u % 256,
                93..=97 => 4096 + u % 4097,
                _ => 65 + u % 192,
            }
        })
        .collect()
}

/// Seconds for `pairs` malloc+free pairs over `live` (1024 slots), with the counters (`c`) or
/// without (`None`).
fn lap(
    c: Option<&Counters>,
    sz: &[usize],
    live: &mut [(*mut libc::c_void, usize)],
    pairs: usize,
) -> f64 {
    let t = Instant::now();
    for i in 0..pairs {
        let slot = &mut live[(i.wrapping_mul(2_654_435_761) >> 7) & 1023];
        let n = black_box(sz[i & 4095]);
        // A stand-in for the block size the backend reports (the stack passes it on).
        let size = (n + 15) & !15;
        // SAFETY: the slot holds null or a live block of libc malloc, freed once here.
        unsafe { libc::free(slot.0) };
        if let Some(c) = c {
            if !slot.0.is_null() {
                c.on_free(slot.1);
            }
        }
        // SAFETY: plain libc call.
        let p = unsafe { libc::malloc(n) };
        if let Some(c) = c {
            c.on_malloc(n, (!p.is_null()).then_some(size));
        }
        *slot = (p, size);
    }
    t.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// (base ns/pair, with-counters ns/pair, median difference) on the calling thread.
fn measure(c: &Counters, pairs: usize, rounds: usize, seed: u64) -> (f64, f64, f64) {
    let sz = sizes(seed);
    let mut live = vec![(std::ptr::null_mut::<libc::c_void>(), 0usize); 1024];
    // Warm up (and claim this thread's counters slot): every slot gets a block.
    lap(Some(c), &sz, &mut live, pairs / 10 + 2048);
    let (mut base, mut with, mut diff) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let b = lap(None, &sz, &mut live, pairs) * 1e9 / pairs as f64;
        let w = lap(Some(c), &sz, &mut live, pairs) * 1e9 / pairs as f64;
        base.push(b);
        with.push(w);
        diff.push(w - b);
    }
    // Counted blocks left: free them through the counters too, so that the totals balance.
    for &(p, size) in &live {
        if !p.is_null() {
            c.on_free(size);
        }
        // SAFETY: a live libc block or null, freed once.
        unsafe { libc::free(p) };
    }
    (median(base), median(with), median(diff))
}

fn main() {
    let mut pairs = 20_000_000usize;
    let mut rounds = 7usize;
    let mut threads = 1usize;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it
            .next()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&v| v > 0);
        match (a.as_str(), v) {
            ("--pairs", Some(v)) => pairs = v,
            ("--rounds", Some(v)) => rounds = v,
            ("--threads", Some(v)) => threads = v,
            _ => {
                eprintln!("usage: counters_cost [--pairs N>0] [--rounds R>0] [--threads T>0] (bad argument '{a}')");
                std::process::exit(2);
            }
        }
    }
    let c: &'static Counters = Box::leak(Box::new(Counters::new()));
    let results: Vec<(f64, f64, f64)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| s.spawn(move || measure(c, pairs, rounds, 0x9e37_79b9 + t as u64)))
            .collect();
        hs.into_iter().map(|h| h.join().expect("worker")).collect()
    });
    let n = results.len() as f64;
    let (b, w, d) = results.iter().fold((0.0, 0.0, 0.0), |a, r| {
        (a.0 + r.0 / n, a.1 + r.1 / n, a.2 + r.2 / n)
    });
    // The counters must have seen every counted malloc: a check that the work was not optimized
    // away. (Frees and bytes do not balance: a counted lap frees blocks an uncounted one made.)
    let s = c.stats();
    let expect = (threads * (pairs * rounds + pairs / 10 + 2048)) as i64;
    if s.malloc_calls != expect || s.free_calls < expect - 1024 * threads as i64 {
        eprintln!("counters_cost: the counters saw {s:?}, expected {expect} mallocs");
        std::process::exit(1);
    }
    println!("RESULT ns_per_pair={d:.2} base_ns={b:.2} with_ns={w:.2} threads={threads}");
}
