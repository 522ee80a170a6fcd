//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`) through the same shadow-model
//! harness the cargo-fuzz targets use (`fuzz/harness.rs`), once per input: `make test` checks
//! every backend on those action lists without nightly or cargo-fuzz (`jemalloc` and `mimalloc`
//! only when their cargo features are on, as in `make rust-features-test`). Also checks that the
//! harness catches a broken allocator, so that a green replay means something.

#[path = "../fuzz/harness.rs"]
mod harness;
#[path = "../fuzz/http_check.rs"]
mod http_check;

use sqlalloc::{MemMethods, Stack};
use std::path::Path;
use std::ptr::NonNull;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect()
}

fn replay(target: &str) {
    let inputs = corpus(target);
    assert!(
        inputs.len() >= 3,
        "{target}: corpus has {} inputs",
        inputs.len()
    );
    for (name, data) in inputs {
        // Under Miri only the start of each input (Miri is slow).
        let data = if cfg!(miri) {
            &data[..data.len().min(1 + 4 * 40)]
        } else {
            &data[..]
        };
        eprintln!("{name}: {} bytes", data.len());
        harness::run_input(target, data);
    }
}

#[test]
fn corpus_system() {
    replay("system");
}

#[test]
fn corpus_debug() {
    replay("debug");
}

#[test]
fn corpus_memsys3() {
    replay("memsys3");
}

#[test]
fn corpus_memsys5() {
    replay("memsys5");
}

#[test]
fn corpus_tlsf() {
    replay("tlsf");
}

#[test]
fn corpus_rust() {
    replay("rust");
}

/// The `scopes` layer over each backend kind, blocks charged to four scopes (two capped).
#[test]
fn corpus_scopes() {
    replay("scopes");
}

/// The endpoint's request parser (fuzz target `http`): each committed input, and every prefix.
#[test]
fn corpus_http() {
    let inputs = corpus("http");
    assert!(
        inputs.len() >= 5,
        "http: corpus has {} inputs",
        inputs.len()
    );
    for (name, data) in inputs {
        eprintln!("{name}: {} bytes", data.len());
        http_check::check(&data);
    }
}

/// The feature-gated backends: replayed by `make rust-features-test` (part of `make test`), which
/// builds the tests with `--features jemalloc,mimalloc,...`; a plain `cargo test` leaves them out.
#[cfg(feature = "jemalloc")]
#[test]
fn corpus_jemalloc() {
    replay("jemalloc");
}

#[cfg(feature = "mimalloc")]
#[test]
fn corpus_mimalloc() {
    replay("mimalloc");
}

#[test]
fn every_target_has_a_corpus_and_a_fuzz_target() {
    for t in harness::TARGETS {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        assert!(
            root.join("fuzz_targets").join(format!("{t}.rs")).is_file(),
            "{t}: no target"
        );
        assert!(!corpus(t).is_empty(), "{t}: empty corpus");
    }
}

/// `make fuzz` runs the targets of the Makefile's `FUZZ_TARGETS`, and cargo-fuzz builds the
/// `[[bin]]`s of fuzz/Cargo.toml: both must name every target of the harness.
#[test]
#[cfg_attr(miri, ignore)]
fn make_fuzz_and_the_fuzz_crate_list_every_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let makefile = std::fs::read_to_string(root.join("Makefile")).unwrap();
    let line = makefile
        .lines()
        .find(|l| l.starts_with("FUZZ_TARGETS"))
        .expect("Makefile: no FUZZ_TARGETS line");
    let listed: Vec<&str> = line
        .split_once(":=")
        .expect("FUZZ_TARGETS := ...")
        .1
        .split_whitespace()
        .collect();
    let all: Vec<&str> = harness::TARGETS.iter().copied().chain(["http"]).collect();
    assert_eq!(listed, all, "Makefile FUZZ_TARGETS");
    let manifest = std::fs::read_to_string(root.join("fuzz/Cargo.toml")).unwrap();
    for t in all {
        assert!(
            manifest.contains(&format!("name = \"{t}\"\npath = \"fuzz_targets/{t}.rs\"")),
            "fuzz/Cargo.toml: no [[bin]] for {t}"
        );
    }
}

/// An allocator that hands out overlapping blocks (every block 16 bytes after the previous one,
/// whatever its size), inside one buffer it owns.
struct Overlapping {
    buf: Box<[u64]>,
    next: std::sync::atomic::AtomicUsize,
}

// SAFETY: deliberately broken (overlapping blocks) for the test below, which expects the harness
// to panic on it; every pointer still lies inside `buf` (64 KiB, requests at most 60 KiB), so
// nothing is written outside memory the value owns. Used from one thread.
unsafe impl MemMethods for Overlapping {
    fn name(&self) -> &'static str {
        "overlapping"
    }
    fn malloc(&self, size: usize) -> Option<NonNull<u8>> {
        let slot = self.next.fetch_add(2, std::sync::atomic::Ordering::Relaxed) % 64;
        (size <= 60 << 10).then(|| NonNull::from(&self.buf[slot]).cast())
    }
    unsafe fn free(&self, _: NonNull<u8>) {}
    unsafe fn realloc(&self, p: NonNull<u8>, n: usize) -> Option<NonNull<u8>> {
        (n <= 60 << 10).then_some(p)
    }
    unsafe fn size(&self, _: NonNull<u8>) -> usize {
        60 << 10
    }
    fn roundup(&self, n: usize) -> usize {
        n
    }
}

#[test]
#[should_panic(expected = "overlap")]
fn the_harness_catches_overlapping_blocks() {
    let a = Overlapping {
        buf: vec![0u64; 8192].into_boxed_slice(),
        next: 0.into(),
    };
    let stack = Stack::new(Box::new(a), None, "overlapping".into());
    let ops = [harness::Op::Malloc(100), harness::Op::Malloc(100)];
    harness::run_ops(&stack, "overlapping", false, &ops);
}

/// An allocator whose realloc moves a block without copying it (every block a fresh slot of one
/// zeroed buffer it owns, sizes kept in a map), for the test below.
struct Forgetful {
    buf: Box<[std::sync::atomic::AtomicU64]>,
    next: std::sync::Mutex<(usize, std::collections::BTreeMap<usize, usize>)>,
}

impl Forgetful {
    fn take(&self, size: usize) -> Option<NonNull<u8>> {
        let mut g = self.next.lock().unwrap();
        let slot = g.0;
        let words = size.max(1).div_ceil(8);
        if slot + words > self.buf.len() {
            return None;
        }
        g.0 += words;
        let p = NonNull::new(self.buf[slot].as_ptr().cast::<u8>())?;
        g.1.insert(p.as_ptr().addr(), words * 8);
        Some(p)
    }
}

// SAFETY: deliberately broken (realloc loses the contents) for the test below, which expects the
// harness to panic on it; blocks are distinct slots of `buf` that are never reused, sized as
// `size` reports, and written through pointers from `AtomicU64::as_ptr` (which allow writes).
// Used from one thread.
unsafe impl MemMethods for Forgetful {
    fn name(&self) -> &'static str {
        "forgetful"
    }
    fn malloc(&self, size: usize) -> Option<NonNull<u8>> {
        self.take(size)
    }
    unsafe fn free(&self, p: NonNull<u8>) {
        self.next.lock().unwrap().1.remove(&p.as_ptr().addr());
    }
    unsafe fn realloc(&self, p: NonNull<u8>, n: usize) -> Option<NonNull<u8>> {
        let q = self.take(n)?;
        self.next.lock().unwrap().1.remove(&p.as_ptr().addr());
        Some(q)
    }
    unsafe fn size(&self, p: NonNull<u8>) -> usize {
        self.next.lock().unwrap().1[&p.as_ptr().addr()]
    }
    fn roundup(&self, n: usize) -> usize {
        n.max(1).div_ceil(8) * 8
    }
}

/// The byte checks compare whole chunks at once; a block whose contents a realloc lost is still
/// caught, and the byte named.
#[test]
#[should_panic(expected = "byte 0 is 0x0, expected 0x1")]
fn the_harness_catches_lost_contents() {
    let a = Forgetful {
        buf: (0..8192).map(|_| 0.into()).collect(),
        next: Default::default(),
    };
    let stack = Stack::new(Box::new(a), None, "forgetful".into());
    let ops = [harness::Op::Malloc(1000), harness::Op::Realloc(0, 2000)];
    harness::run_ops(&stack, "forgetful", false, &ops);
}
