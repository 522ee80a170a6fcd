//! One property suite, run against every backend (and the layers) through the `MemMethods` trait:
//! random malloc / realloc / free sequences checked against a shadow model.
//!
//! At every step: no two live blocks overlap, every block is 8-aligned, `size >= request`,
//! contents survive realloc (each block is filled with its own byte pattern), a failed realloc
//! leaves the old block intact, and the counters are exact: current bytes = sum of `size` over
//! the live blocks, current count = number of live blocks, call counts, failures and largest
//! request as the model computes them. With a `limit` layer, current bytes never pass the cap.

use proptest::prelude::*;
use sqlalloc::{MemMethods, Stack};
use std::collections::BTreeMap;
use std::ptr::NonNull;

#[derive(Debug, Clone)]
enum Op {
    Malloc(usize),
    Realloc(usize, usize),
    Free(usize),
}

/// SQLite's request mix: mostly small, many 257–512, some page buffers, a few large.
fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 0usize..=64,
        5 => 257usize..=512,
        2 => 4096usize..=8192,
        1 => 8193usize..=100_000,
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            4 => size().prop_map(Op::Malloc),
            2 => (any::<usize>(), size()).prop_map(|(i, n)| Op::Realloc(i, n)),
            3 => any::<usize>().prop_map(Op::Free),
        ],
        1..300,
    )
}

struct Live {
    ptr: NonNull<u8>,
    req: usize,
    pat: u8,
}

fn fill(p: NonNull<u8>, n: usize, pat: u8) {
    // SAFETY: `p` is a live block of at least `n` bytes handed to this test.
    unsafe { std::ptr::write_bytes(p.as_ptr(), pat, n) }
}

fn verify(b: &Live, n: usize) {
    // SAFETY: `b.ptr` is a live block of at least `b.req >= n` initialized bytes.
    let s = unsafe { std::slice::from_raw_parts(b.ptr.as_ptr(), n) };
    if let Some(i) = s.iter().position(|&x| x != b.pat) {
        panic!(
            "block {:p}: byte {i} is {:#x}, expected {:#x}",
            b.ptr, s[i], b.pat
        );
    }
}

fn run(spec: &str, ops: &[Op]) {
    let stack: Stack = sqlalloc::build(spec).expect("spec builds");
    stack.init().expect("init");
    let cap = stack.limit().map(|l| l.max() as i64);
    let may_fail = spec.starts_with("memsys") || cap.is_some();
    let mut live: Vec<Live> = Vec::new();
    let mut pat = 1u8;
    let (mut mallocs, mut frees, mut reallocs, mut failed, mut largest) =
        (0i64, 0i64, 0i64, 0i64, 0i64);
    let mut true_peak = 0i64;
    for op in ops {
        match *op {
            Op::Malloc(n) => {
                mallocs += 1;
                largest = largest.max(n as i64);
                match stack.malloc(n) {
                    Some(p) => {
                        pat = pat.wrapping_add(1).max(1);
                        fill(p, n, pat);
                        live.push(Live {
                            ptr: p,
                            req: n,
                            pat,
                        });
                    }
                    None => {
                        assert!(may_fail, "{spec}: malloc({n}) failed");
                        failed += 1;
                    }
                }
            }
            Op::Realloc(i, n) if !live.is_empty() => {
                let i = i % live.len();
                reallocs += 1;
                largest = largest.max(n as i64);
                let old = &live[i];
                // SAFETY: `old.ptr` is live in `stack`.
                match unsafe { stack.realloc(old.ptr, n) } {
                    Some(p) => {
                        let kept = old.req.min(n);
                        let b = Live {
                            ptr: p,
                            req: kept,
                            pat: old.pat,
                        };
                        verify(&b, kept);
                        fill(p, n, old.pat);
                        live[i] = Live {
                            ptr: p,
                            req: n,
                            pat: old.pat,
                        };
                    }
                    None => {
                        assert!(may_fail, "{spec}: realloc to {n} failed");
                        failed += 1;
                        verify(old, old.req);
                    }
                }
            }
            Op::Free(i) if !live.is_empty() => {
                let b = live.swap_remove(i % live.len());
                verify(&b, b.req);
                frees += 1;
                // SAFETY: `b.ptr` is live in `stack` and dropped from the model.
                unsafe { stack.free(b.ptr) };
            }
            _ => {}
        }
        // Layout: alignment, size >= request, no overlap.
        let mut ranges = BTreeMap::new();
        let mut sum = 0i64;
        for b in &live {
            assert_eq!(b.ptr.as_ptr() as usize % 8, 0, "{spec}: misaligned block");
            // SAFETY: live block.
            let sz = unsafe { stack.size(b.ptr) };
            assert!(sz >= b.req, "{spec}: size {sz} < request {}", b.req);
            sum += sz as i64;
            ranges.insert(b.ptr.as_ptr() as usize, sz.max(1));
        }
        let mut end = 0usize;
        for (&a, &sz) in &ranges {
            assert!(a >= end, "{spec}: blocks overlap at {a:#x}");
            end = a + sz;
        }
        true_peak = true_peak.max(sum);
        // Counters exact at every step.
        let s = stack.stats();
        assert_eq!(s.current_bytes, sum, "{spec}: current_bytes");
        assert_eq!(s.current_count, live.len() as i64, "{spec}: current_count");
        assert_eq!(
            (
                s.malloc_calls,
                s.free_calls,
                s.realloc_calls,
                s.failed_calls,
                s.largest_request
            ),
            (mallocs, frees, reallocs, failed, largest),
            "{spec}: call counters"
        );
        // Other test threads allocate too, so the peak may lag (documented bound), but it never
        // passes the true peak nor falls below the current value.
        assert!(
            s.peak_bytes >= s.current_bytes && s.peak_bytes <= true_peak,
            "{spec}: peak"
        );
        if let Some(cap) = cap {
            assert!(
                s.current_bytes <= cap,
                "{spec}: {} bytes in use past the cap",
                s.current_bytes
            );
        }
    }
    for b in live.drain(..) {
        verify(&b, b.req);
        // SAFETY: live block, dropped from the model.
        unsafe { stack.free(b.ptr) };
    }
    let s = stack.stats();
    assert_eq!(
        (s.current_bytes, s.current_count),
        (0, 0),
        "{spec}: all freed"
    );
    if let Some(l) = stack.limit() {
        assert_eq!(l.used(), 0, "{spec}: limit accounting back to zero");
    }
}

macro_rules! backend_suite {
    ($($name:ident => $spec:expr,)*) => {
        proptest! {
            #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
            $(
                #[test]
                fn $name(ops in ops()) {
                    run($spec, &ops);
                }
            )*
        }
    };
}

backend_suite! {
    system => "system",
    debug => "debug",
    debug_backtrace => "debug:backtrace=4",
    memsys3 => "memsys3:heap=2M",
    memsys3_small => "memsys3:heap=64K",
    memsys5 => "memsys5:heap=2M",
    memsys5_min64 => "memsys5:heap=2M,min=64",
    memsys5_small => "memsys5:heap=100K,min=16",
    system_limit => "system+limit:max=200K",
    debug_limit => "debug+limit:max=100K",
    memsys3_limit => "memsys3:heap=1M+limit:max=300K",
    memsys5_limit => "memsys5:heap=1M+limit:max=300K",
}

/// A block passed from one thread to the other.
struct Handed(NonNull<u8>, usize, u8);
// SAFETY: the block is owned by whoever holds the `Handed`; the allocators are Send + Sync.
unsafe impl Send for Handed {}

/// Two threads allocating and freeing on one stack, each freeing some blocks the other one
/// allocated: counters are exact once both have finished.
#[test]
fn every_backend_is_thread_safe_on_its_own() {
    for spec in [
        "system",
        "debug",
        "memsys3:heap=4M",
        "memsys5:heap=4M",
        "system+limit:max=1M",
    ] {
        let stack = sqlalloc::build(spec).unwrap();
        stack.init().unwrap();
        let mailbox = [
            std::sync::Mutex::new(Vec::<Handed>::new()),
            std::sync::Mutex::new(Vec::<Handed>::new()),
        ];
        std::thread::scope(|sc| {
            for t in 0..2usize {
                let (stack, mailbox) = (&stack, &mailbox);
                sc.spawn(move || {
                    let pat = t as u8 + 1;
                    let mut mine = Vec::new();
                    for i in 0..20_000usize {
                        let n = [24, 300, 5000, 60][i % 4];
                        if let Some(p) = stack.malloc(n) {
                            fill(p, n, pat);
                            mine.push((p, n));
                        }
                        if mine.len() > 64 {
                            let (p, n) = mine.swap_remove(i % mine.len());
                            verify(
                                &Live {
                                    ptr: p,
                                    req: n,
                                    pat,
                                },
                                n,
                            );
                            if i % 7 == 0 {
                                mailbox[1 - t].lock().unwrap().push(Handed(p, n, pat));
                            } else {
                                // SAFETY: live block of `stack`, dropped here.
                                unsafe { stack.free(p) };
                            }
                        }
                        if i % 16 == 0 {
                            for Handed(p, n, pat) in mailbox[t].lock().unwrap().drain(..) {
                                verify(
                                    &Live {
                                        ptr: p,
                                        req: n,
                                        pat,
                                    },
                                    n,
                                );
                                // SAFETY: live block handed over by the other thread.
                                unsafe { stack.free(p) };
                            }
                        }
                    }
                    for (p, _) in mine {
                        // SAFETY: live block of `stack`.
                        unsafe { stack.free(p) };
                    }
                });
            }
        });
        let left: Vec<Handed> = mailbox
            .into_iter()
            .flat_map(|m| m.into_inner().unwrap())
            .collect();
        let s = stack.stats();
        assert_eq!(s.current_count, left.len() as i64, "{spec}");
        assert_eq!(s.malloc_calls, 40_000, "{spec}");
        assert_eq!(
            s.free_calls + left.len() as i64,
            40_000 - s.failed_calls,
            "{spec}"
        );
        let mut sum = 0;
        for Handed(p, n, pat) in left {
            verify(
                &Live {
                    ptr: p,
                    req: n,
                    pat,
                },
                n,
            );
            // SAFETY: live block.
            sum += unsafe { stack.size(p) } as i64;
            // SAFETY: live block, freed once.
            unsafe { stack.free(p) };
        }
        assert_eq!(sum, s.current_bytes, "{spec}: bytes of the blocks left");
        let s = stack.stats();
        assert_eq!(
            (s.current_bytes, s.current_count),
            (0, 0),
            "{spec}: all freed"
        );
    }
}
