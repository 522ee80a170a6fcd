//! One property suite, run against every backend (and the layers) through the `MemMethods` trait:
//! random malloc / realloc / free sequences checked against a shadow model.
//!
//! At every step: no two live blocks overlap, every block is 8-aligned, `size >= request`,
//! contents survive realloc (each block is filled with its own byte pattern), a failed realloc
//! leaves the old block intact, and the counters are exact: current bytes = sum of `size` over
//! the live blocks, current count = number of live blocks, call counts, failures and largest
//! request as the model computes them. With a `limit` layer, current bytes never pass the cap.

#[path = "../fuzz/harness.rs"]
mod harness;

use harness::Op;
use proptest::prelude::*;
use sqlalloc::{MemMethods, Stack};
use std::ptr::NonNull;

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

fn fill(p: NonNull<u8>, n: usize, pat: u8) {
    // SAFETY: `p` is a live block of at least `n` bytes handed to this test.
    unsafe { std::ptr::write_bytes(p.as_ptr(), pat, n) }
}

fn verify(p: NonNull<u8>, n: usize, pat: u8) {
    // SAFETY: `p` is a live block of at least `n` bytes this test filled with `pat`.
    let s = unsafe { std::slice::from_raw_parts(p.as_ptr(), n) };
    if let Some(i) = s.iter().position(|&x| x != pat) {
        panic!("block {p:p}: byte {i} is {:#x}, expected {pat:#x}", s[i]);
    }
}

/// One sequence on a fresh stack, through the fuzz targets' shadow model; then the peak, which
/// only a fresh stack run by one thread can pin down: never below the last value, never above
/// the true peak.
fn run(spec: &str, ops: &[Op]) {
    let stack: Stack = sqlalloc::build(spec).expect("spec builds");
    let may_fail =
        spec.starts_with("memsys") || spec.starts_with("tlsf") || stack.limit().is_some();
    let true_peak = harness::run_ops(&stack, spec, may_fail, ops);
    let s = stack.stats();
    if let Some(l) = stack.scopes() {
        // Everything ran in the default scope: it counts what the stack counts.
        let d = l.stats(0).unwrap();
        assert_eq!(
            d.current_bytes, s.current_bytes,
            "{spec}: default scope bytes"
        );
        assert_eq!(
            d.current_count, s.current_count,
            "{spec}: default scope blocks"
        );
    }
    assert!(
        s.peak_bytes <= true_peak && s.peak_bytes >= true_peak.min(s.current_bytes),
        "{spec}: peak {} but the true peak was {true_peak}",
        s.peak_bytes
    );
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
    memsys5_shards => "memsys5:heap=2M,min=32,shards=3",
    tlsf => "tlsf:heap=2M",
    tlsf_small => "tlsf:heap=64K",
    tlsf_shards => "tlsf:heap=2M,shards=3",
    tlsf_no_cache => "tlsf:heap=2M,cache=0",
    tlsf_small_cache_1 => "tlsf:heap=64K,cache=1",
    system_limit => "system+limit:max=200K",
    debug_limit => "debug+limit:max=100K",
    memsys3_limit => "memsys3:heap=1M+limit:max=300K",
    memsys5_limit => "memsys5:heap=1M+limit:max=300K",
    tlsf_limit => "tlsf:heap=1M+limit:max=300K",
    system_scopes => "system+scopes",
    debug_scopes => "debug+scopes",
    rust_scopes => "rust+scopes",
    memsys3_scopes => "memsys3:heap=2M+scopes",
    memsys5_scopes => "memsys5:heap=2M,min=32+scopes",
    memsys5_scopes_limit => "memsys5:heap=1M+scopes+limit:max=300K",
    tlsf_scopes => "tlsf:heap=2M,shards=2+scopes",
    system_scopes_limit => "system+scopes+limit:max=200K",
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
        "memsys5:heap=4M,shards=2",
        "tlsf:heap=4M",
        "tlsf:heap=4M,shards=2,bias=off",
        "tlsf:heap=4M,cache=0",
        "system+limit:max=1M",
        "system+scopes",
        "memsys5:heap=4M,shards=2+scopes",
    ] {
        let stack = sqlalloc::build(spec).unwrap();
        stack.init().unwrap();
        // With a scopes layer, each thread allocates in a scope of its own.
        let ids: Vec<usize> = match stack.scopes() {
            Some(l) => vec![l.create("t0", None).unwrap(), l.create("t1", None).unwrap()],
            None => vec![0, 0],
        };
        let mailbox = [
            std::sync::Mutex::new(Vec::<Handed>::new()),
            std::sync::Mutex::new(Vec::<Handed>::new()),
        ];
        std::thread::scope(|sc| {
            for t in 0..2usize {
                let (stack, mailbox) = (&stack, &mailbox);
                let id = ids[t];
                sc.spawn(move || {
                    if let Some(l) = stack.scopes() {
                        l.enter(id).unwrap();
                    }
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
                            verify(p, n, pat);
                            if i % 7 == 0 {
                                mailbox[1 - t].lock().unwrap().push(Handed(p, n, pat));
                            } else {
                                // SAFETY: live block of `stack`, dropped here.
                                unsafe { stack.free(p) };
                            }
                        }
                        if i % 16 == 0 {
                            for Handed(p, n, pat) in mailbox[t].lock().unwrap().drain(..) {
                                verify(p, n, pat);
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
        if let Some(l) = stack.scopes() {
            let sum: i64 = l.list().iter().map(|i| i.stats.current_bytes).sum();
            assert_eq!(sum, s.current_bytes, "{spec}: the scopes add up");
            assert_eq!(
                l.stats(0).unwrap().malloc_calls,
                0,
                "{spec}: default untouched"
            );
        }
        assert_eq!(s.current_count, left.len() as i64, "{spec}");
        assert_eq!(s.malloc_calls, 40_000, "{spec}");
        assert_eq!(
            s.free_calls + left.len() as i64,
            40_000 - s.failed_calls,
            "{spec}"
        );
        let mut sum = 0;
        for Handed(p, n, pat) in left {
            verify(p, n, pat);
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
