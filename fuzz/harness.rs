//! The shadow-model harness shared by the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`) and the
//! corpus replay test (`tests/fuzz_corpus.rs`, run by `make test` without nightly or cargo-fuzz).
//! Both include this file with `#[path]`; it uses only sqlalloc's public API.
//!
//! Input format (every byte string is valid; a short tail is ignored):
//! - byte 0 picks a configuration of the target's backend ([`spec`]): heap size, `min`, and
//!   whether a `limit` layer is on top;
//! - then 4 bytes per action: `op`, `arg`, `lo`, `hi`. `op % 8` selects malloc (0–3), realloc
//!   (4–5) or free (6–7); `arg` picks the live block a realloc or free applies to (`arg % live`);
//!   the size is `u16::from_le_bytes([lo, hi])` scaled by the size class in `op >> 6` (small,
//!   SQLite's 257–512 band, page buffers, large), the mix of `tests/backends.rs`.
//!
//! After every action the model checks: blocks 8-aligned, `size >= request` and `size` stable,
//! `roundup(n) >= n`, no two live blocks overlap, the bytes of the block acted on still hold its
//! pattern (contents survive realloc; a failed realloc leaves the block intact; every live block
//! is checked every 64 actions and at the end), and
//! the counters are exact (current bytes and count, call counts, failures, largest request);
//! with a `limit` layer the bytes in use never pass the cap; with the `scopes` layer (target
//! `scopes`: each malloc first enters one of the four [`SCOPES`], picked by its `arg` byte), every
//! scope holds exactly the bytes and blocks charged to it (a realloc keeps its block's scope,
//! whichever scope is current) and no capped scope passes its cap. A failure panics with a message
//! naming the spec and the check.

#![allow(dead_code)]

use sqlalloc::{MemMethods, Stack, Stats};
use std::collections::BTreeMap;
use std::ptr::NonNull;

/// Backends with a fuzz target (the names of the targets and of the corpus directories).
/// `jemalloc` and `mimalloc` need the crate features of the same names (the fuzz crate enables
/// them; the corpus replay runs them in `make rust-features-test`).
pub const TARGETS: &[&str] = &[
    "system", "debug", "memsys3", "memsys5", "tlsf", "rust", "jemalloc", "mimalloc", "scopes",
];

/// Most actions taken from one input (longer inputs are cut), to keep each run short.
pub const MAX_ACTIONS: usize = 2000;

/// The spec a target runs for configuration byte `cfg`.
pub fn spec(target: &str, cfg: u8) -> String {
    let limit = if cfg & 0x80 != 0 {
        [
            "+limit:max=64K",
            "+limit:max=300K",
            "+limit:max=1M",
            "+limit:max=4M",
        ][usize::from(cfg >> 5) & 3]
    } else {
        ""
    };
    let base = match target {
        "memsys3" => {
            format!(
                "memsys3:heap={}",
                ["16K", "64K", "300K", "2M"][usize::from(cfg & 3)]
            )
        }
        "memsys5" => format!(
            "memsys5:heap={},min={}",
            ["8K", "100K", "1M", "2M"][usize::from(cfg & 3)],
            [1, 8, 16, 24, 64, 100, 256, 4096][usize::from(cfg >> 2) & 7]
        ),
        "tlsf" => format!(
            "tlsf:heap={},shards={},cache={}",
            ["8K", "64K", "300K", "2M"][usize::from(cfg & 3)],
            [1, 1, 2, 3][usize::from(cfg >> 2) & 3],
            // Bit 4, and bit 5 when there is no limit (which takes bits 5 and 6).
            [16, 0, 1, 64][usize::from((cfg >> 4) & if cfg & 0x80 != 0 { 1 } else { 3 })]
        ),
        "debug" if cfg & 4 != 0 => "debug:backtrace=2".to_string(),
        // The `scopes` layer over each place it keeps a block's scope in: a side table (memsys5
        // with 16- or 64-byte atoms, memsys3) or a header (system, rust, debug).
        "scopes" => format!(
            "{}+scopes",
            [
                "memsys5:heap=1M,min=16",
                "memsys5:heap=2M,min=64,shards=2",
                "memsys3:heap=300K",
                "system",
                "rust",
                "debug",
                "system",
                "memsys5:heap=100K,min=8",
            ][usize::from(cfg & 7)]
        ),
        other => other.to_string(),
    };
    format!("{base}{limit}")
}

#[derive(Debug, Clone, Copy)]
pub enum Op {
    Malloc(usize),
    Realloc(usize, usize),
    Free(usize),
    /// Make scope `k % 4` of [`SCOPES`] the thread's current one (no call of the allocator).
    Enter(u8),
}

/// The scopes a `scopes` run charges blocks to: the default one, one without a cap and two with
/// caps (64 KiB, 1 MiB), so that caps refuse requests while the other scopes go on.
pub const SCOPES: [(&str, Option<u64>); 4] = [
    ("default", None),
    ("a", None),
    ("b", Some(64 << 10)),
    ("c", Some(1 << 20)),
];

/// The actions an input encodes. With `scoped`, each malloc first enters the scope its `arg`
/// byte picks (a realloc or a free keeps the current scope, whatever the block's).
pub fn decode_for(data: &[u8], scoped: bool) -> Vec<Op> {
    let mut ops = Vec::new();
    for (op, c) in decode(data).into_iter().zip(data.chunks_exact(4)) {
        if scoped && matches!(op, Op::Malloc(_)) {
            ops.push(Op::Enter(c[1]));
        }
        ops.push(op);
    }
    ops
}

/// The actions an input encodes.
pub fn decode(data: &[u8]) -> Vec<Op> {
    data.chunks_exact(4)
        .take(MAX_ACTIONS)
        .map(|c| {
            let raw = usize::from(u16::from_le_bytes([c[2], c[3]]));
            let n = match c[0] >> 6 {
                0 => raw % 65,
                1 => 257 + raw % 256,
                2 => 4096 + raw % 4097,
                _ => 8193 + raw * 4 % 91_808,
            };
            let i = usize::from(c[1]);
            match c[0] % 8 {
                0..=3 => Op::Malloc(n),
                4 | 5 => Op::Realloc(i, n),
                _ => Op::Free(i),
            }
        })
        .collect()
}

/// Run one input against `target` (a name from [`TARGETS`]).
pub fn run_input(target: &str, data: &[u8]) {
    let Some((&cfg, rest)) = data.split_first() else {
        return;
    };
    let spec = spec(target, cfg);
    let stack = stack_for(&spec);
    let scoped = stack.scopes().is_some();
    let may_fail =
        spec.starts_with("memsys") || spec.starts_with("tlsf") || stack.limit().is_some() || scoped;
    run_ops(stack, &spec, may_fail, &decode_for(rest, scoped));
}

/// The stack for `spec`, built on first use and kept for the rest of the process. A fuzzer runs
/// thousands of inputs a second, and each `Stack` leaks its counters on purpose (see
/// `Stack::new`), so stacks are reused: every run frees all it allocated, and `init` lays an
/// empty memsys3/memsys5 heap out afresh, so a run does not depend on the ones before it. (At most
/// a few hundred specs per target.)
fn stack_for(spec: &str) -> &'static Stack {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static STACKS: Mutex<Option<HashMap<String, &'static Stack>>> = Mutex::new(None);
    let mut map = STACKS.lock().unwrap_or_else(|e| e.into_inner());
    map.get_or_insert_with(HashMap::new)
        .entry(spec.to_string())
        .or_insert_with(|| {
            let s = sqlalloc::build(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
            Box::leak(Box::new(s))
        })
}

struct Live {
    ptr: NonNull<u8>,
    req: usize,
    size: usize,
    pat: u8,
    /// Index in [`SCOPES`] of the scope it was charged to (0 without the layer).
    scope: usize,
}

/// The ids of [`SCOPES`] in `stack`'s layer, created on the stack's first run (a stack is reused
/// for later runs, and its scopes with it).
fn scope_ids(stack: &Stack) -> Option<[usize; 4]> {
    let l = stack.scopes()?;
    Some(SCOPES.map(|(name, cap)| {
        l.find(name)
            .unwrap_or_else(|| l.create(name, cap).expect("create a scope"))
    }))
}

fn fill(p: NonNull<u8>, n: usize, pat: u8) {
    // SAFETY: `p` is a live block of at least `n` bytes owned by the harness.
    unsafe { std::ptr::write_bytes(p.as_ptr(), pat, n) }
}

fn verify(spec: &str, p: NonNull<u8>, n: usize, pat: u8) {
    // SAFETY: `p` is a live block of at least `n` bytes the harness filled.
    let s = unsafe { std::slice::from_raw_parts(p.as_ptr(), n) };
    // Compared a chunk at a time (one `memcmp` each), not byte by byte: under cargo-fuzz every
    // byte comparison in Rust code is a call into the coverage tracer, which made this loop
    // three quarters of a run's time.
    const CHUNK: usize = 512;
    let want = [pat; CHUNK];
    for (k, c) in s.chunks(CHUNK).enumerate() {
        if c != &want[..c.len()] {
            let i = k * CHUNK + c.iter().position(|&x| x != pat).unwrap_or(0);
            panic!(
                "{spec}: block {p:p}: byte {i} is {:#x}, expected {pat:#x}",
                s[i]
            );
        }
    }
}

/// Run `ops` on `stack` (fresh, nothing allocated) against the shadow model. `may_fail`: whether
/// the allocator may refuse a request (fixed heaps, a limit); a refusal otherwise fails the run.
/// Returns the true peak of the run: the most bytes (sum of `size`) live at once.
pub fn run_ops(stack: &Stack, spec: &str, may_fail: bool, ops: &[Op]) -> i64 {
    stack
        .init()
        .unwrap_or_else(|e| panic!("{spec}: init failed: {e:?}"));
    let base = stack.stats();
    let cap = stack.limit().map(|l| l.max() as i64);
    let ids = scope_ids(stack);
    let scope_base = ids.map(|ids| ids.map(|id| stack.scopes().unwrap().stats(id).unwrap()));
    let mut current = 0usize;
    if let Some(ids) = ids {
        stack.scopes().unwrap().enter(ids[0]);
    }
    let mut live: Vec<Live> = Vec::new();
    let mut pat = 0u8;
    let (mut mallocs, mut frees, mut reallocs, mut failed) = (0i64, 0i64, 0i64, 0i64);
    let mut largest = base.largest_request;
    let mut true_peak = 0i64;
    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Malloc(n) => {
                mallocs += 1;
                largest = largest.max(n as i64);
                assert!(stack.roundup(n) >= n, "{spec}: roundup({n}) < {n}");
                match stack.malloc(n) {
                    Some(p) => {
                        pat = pat.wrapping_add(1).max(1);
                        // SAFETY: `p` is live.
                        let size = unsafe { stack.size(p) };
                        fill(p, n, pat);
                        live.push(Live {
                            ptr: p,
                            req: n,
                            size,
                            pat,
                            scope: current,
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
                // SAFETY: `old.ptr` is live in `stack`; on success it is replaced below.
                match unsafe { stack.realloc(old.ptr, n) } {
                    Some(p) => {
                        verify(spec, p, old.req.min(n), old.pat);
                        let (pat, scope) = (old.pat, old.scope);
                        fill(p, n, pat);
                        // SAFETY: `p` is live.
                        let size = unsafe { stack.size(p) };
                        live[i] = Live {
                            ptr: p,
                            req: n,
                            size,
                            pat,
                            scope,
                        };
                    }
                    None => {
                        assert!(may_fail, "{spec}: realloc to {n} failed");
                        failed += 1;
                        verify(spec, old.ptr, old.req, old.pat);
                    }
                }
            }
            Op::Free(i) if !live.is_empty() => {
                let b = live.swap_remove(i % live.len());
                verify(spec, b.ptr, b.req, b.pat);
                frees += 1;
                // SAFETY: `b.ptr` is live in `stack` and dropped from the model.
                unsafe { stack.free(b.ptr) };
            }
            Op::Enter(k) => {
                if let Some(ids) = ids {
                    current = usize::from(k) % SCOPES.len();
                    let prev = stack.scopes().unwrap().enter(ids[current]);
                    assert!(prev.is_some(), "{spec}: enter refused a scope that exists");
                }
            }
            _ => {}
        }
        if let (Some(ids), Some(scope_base)) = (ids, &scope_base) {
            check_scopes(stack, spec, &live, &ids, scope_base);
        }
        // One snapshot per action for both checks: taking it walks every counter, the largest
        // cost of a run after the byte checks.
        let s = stack.stats();
        true_peak = true_peak.max(check(stack, spec, &live, cap, &s));
        if step % 64 == 63 {
            // Every block, now and then: a write through one block into another shows here.
            for b in &live {
                verify(spec, b.ptr, b.req, b.pat);
            }
        }
        assert_eq!(
            (
                s.malloc_calls - base.malloc_calls,
                s.free_calls - base.free_calls,
                s.realloc_calls - base.realloc_calls,
                s.failed_calls - base.failed_calls,
                s.largest_request
            ),
            (mallocs, frees, reallocs, failed, largest),
            "{spec}: call counters"
        );
    }
    for b in live.drain(..) {
        verify(spec, b.ptr, b.req, b.pat);
        // SAFETY: live block, dropped from the model.
        unsafe { stack.free(b.ptr) };
    }
    let s = stack.stats();
    assert_eq!(
        (s.current_bytes, s.current_count),
        (base.current_bytes, base.current_count),
        "{spec}: all freed"
    );
    if let (Some(ids), Some(scope_base)) = (ids, &scope_base) {
        check_scopes(stack, spec, &live, &ids, scope_base);
        stack.scopes().unwrap().enter(ids[0]);
    }
    if let Some(l) = stack.limit() {
        assert_eq!(l.used(), 0, "{spec}: limit accounting back to zero");
    }
    true_peak
}

/// Each scope holds exactly the live blocks charged to it (bytes and count, from its base
/// figures), and no capped scope is past its cap.
fn check_scopes(stack: &Stack, spec: &str, live: &[Live], ids: &[usize; 4], base: &[Stats; 4]) {
    let l = stack.scopes().unwrap();
    for (k, &id) in ids.iter().enumerate() {
        let st = l.stats(id).unwrap();
        let (bytes, count) = live
            .iter()
            .filter(|b| b.scope == k)
            .fold((0i64, 0i64), |(s, c), b| (s + b.size as i64, c + 1));
        assert_eq!(
            (
                st.current_bytes - base[k].current_bytes,
                st.current_count - base[k].current_count
            ),
            (bytes, count),
            "{spec}: scope {} holds other blocks than those charged to it",
            SCOPES[k].0
        );
        if let Some(cap) = SCOPES[k].1 {
            assert!(
                st.current_bytes <= cap as i64,
                "{spec}: scope {} past its cap: {}",
                SCOPES[k].0,
                st.current_bytes
            );
        }
    }
}

/// Layout and byte counters (snapshot `s`, taken after the last action) of the live set; returns
/// the bytes live.
fn check(stack: &Stack, spec: &str, live: &[Live], cap: Option<i64>, s: &Stats) -> i64 {
    let mut ranges = BTreeMap::new();
    let mut sum = 0i64;
    for b in live {
        assert_eq!(b.ptr.as_ptr().addr() % 8, 0, "{spec}: misaligned block");
        // SAFETY: live block.
        let sz = unsafe { stack.size(b.ptr) };
        assert!(sz >= b.req, "{spec}: size {sz} < request {}", b.req);
        assert_eq!(sz, b.size, "{spec}: size of a live block changed");
        sum += sz as i64;
        ranges.insert(b.ptr.as_ptr().addr(), sz.max(1));
    }
    let mut end = 0usize;
    for (&a, &sz) in &ranges {
        assert!(a >= end, "{spec}: blocks overlap at {a:#x}");
        end = a + sz;
    }
    assert_eq!(s.current_bytes, sum, "{spec}: current_bytes");
    assert_eq!(s.current_count, live.len() as i64, "{spec}: current_count");
    assert!(
        s.peak_bytes >= s.current_bytes,
        "{spec}: peak below current"
    );
    if let Some(cap) = cap {
        assert!(
            s.current_bytes <= cap,
            "{spec}: {} bytes in use past the cap",
            s.current_bytes
        );
    }
    sum
}
