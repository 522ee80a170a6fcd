//! AddressSanitizer sees bugs inside the memsys3, memsys5 and tlsf pools (`make asan-pool-test`).
//!
//! To ASan a pool is one 64 KiB allocation from the global allocator, so without help a stray
//! write or a read of a freed pool block touches "allocated" memory and goes unreported. With
//! sqlalloc's `asan` feature the pools poison what is not handed out (src/marking.rs). This program
//! shows that ASan then reports:
//!
//! - a one-byte write just past the usable size of a memsys5 block (into its free buddy), of a
//!   memsys3 block (into the next chunk's header) and of a tlsf block (into the next block's
//!   header), inside the pool buffer;
//! - a one-byte read of a freed memsys5, memsys3 and tlsf block;
//!
//! and that the same steps without the bug (the write one byte earlier, the read before the
//! free) and a mixed malloc/realloc/free workload that writes every usable byte run clean.
//!
//! Run without arguments, it runs itself once per case (`tests-asan CASE`) and checks each child:
//! a bug case must exit with ASan's exit code and its stderr must hold ASan's
//! `use-after-poison` report of the right kind, naming the very address the child printed before
//! the access and placing it inside the 65536-byte heap buffer; a clean case must exit 0 with
//! nothing on stderr. It prints one line per case and exits 1 when any check fails.
//! Build: nightly, `RUSTFLAGS=-Zsanitizer=address`, an explicit `--target` (see the Makefile).

use sqlalloc::backend::{Memsys3, Memsys5, Tlsf};
use sqlalloc::MemMethods;
use std::process::{Command, ExitCode};
use std::ptr::NonNull;

/// The exit code the children's ASan uses for a report (set through `ASAN_OPTIONS`), distinct
/// from a panic (101 or SIGABRT) and from success.
const ASAN_EXIT: i32 = 23;

/// Heap size of every pool here.
const HEAP: usize = 64 << 10;

/// What a case is expected to do.
#[derive(Clone, Copy)]
enum Expect {
    /// ASan reports a `use-after-poison` access of this kind ("WRITE" or "READ") of 1 byte.
    Report(&'static str),
    /// Exit 0, nothing on stderr.
    Clean,
}

const CASES: &[(&str, Expect)] = &[
    ("overflow5", Expect::Report("WRITE")),
    ("overflow5-ok", Expect::Clean),
    ("overflow3", Expect::Report("WRITE")),
    ("overflow3-ok", Expect::Clean),
    ("uaf5", Expect::Report("READ")),
    ("uaf5-ok", Expect::Clean),
    ("uaf3", Expect::Report("READ")),
    ("uaf3-ok", Expect::Clean),
    ("overflow-tlsf", Expect::Report("WRITE")),
    ("overflow-tlsf-ok", Expect::Clean),
    ("uaf-tlsf", Expect::Report("READ")),
    ("uaf-tlsf-ok", Expect::Clean),
    ("workload", Expect::Clean),
];

fn fill(p: NonNull<u8>, n: usize) {
    // SAFETY: callers pass a live block of at least `n` usable bytes.
    unsafe { std::ptr::write_bytes(p.as_ptr(), 0x5a, n) }
}

/// Announce the address about to be touched (the parent looks for it in ASan's report), then
/// write one byte there.
///
/// # Safety
/// `p + off` must lie inside the pool buffer `p` was carved from (the write may be a bug as far
/// as the pool is concerned, but never leaves memory the process owns).
unsafe fn poke(p: NonNull<u8>, off: usize) {
    // SAFETY: in bounds of the pool buffer (the caller's contract).
    let a = unsafe { p.as_ptr().add(off) };
    eprintln!("target {a:p}");
    // SAFETY: as above; volatile so that the access is not optimised away.
    unsafe { a.write_volatile(1) };
}

/// As [`poke`], a one-byte read.
///
/// # Safety
/// As for [`poke`]; the byte must have been written before (it is read, not interpreted).
unsafe fn peek(p: NonNull<u8>, off: usize) -> u8 {
    // SAFETY: in bounds of the pool buffer (the caller's contract).
    let a = unsafe { p.as_ptr().add(off) };
    eprintln!("target {a:p}");
    // SAFETY: as above, and initialized.
    unsafe { a.read_volatile() }
}

/// The child: do what `case` says. The "target" line goes to stderr only in the bug cases: a
/// clean case must print nothing there.
fn act(case: &str) {
    let m5 = Memsys5::new(HEAP, 16).expect("memsys5 heap");
    let m3 = Memsys3::new(HEAP).expect("memsys3 heap");
    let mt = Tlsf::new(HEAP).expect("tlsf heap");
    match case {
        "overflow5" | "overflow5-ok" => {
            // A fresh heap: a 128-byte block at offset 0, its free buddy right after it.
            let p = m5.malloc(100).expect("malloc");
            // SAFETY: live block.
            let n = unsafe { m5.size(p) };
            fill(p, n);
            if case == "overflow5" {
                // SAFETY: p + n is the first byte of the free buddy, inside the heap buffer.
                unsafe { poke(p, n) };
            } else {
                // SAFETY: the block's last usable byte.
                unsafe { p.as_ptr().add(n - 1).write_volatile(1) };
            }
            // SAFETY: live block, freed once.
            unsafe { m5.free(p) };
        }
        "overflow3" | "overflow3-ok" => {
            let p = m3.malloc(20).expect("malloc");
            let q = m3.malloc(20).expect("malloc");
            // SAFETY: live block.
            let n = unsafe { m3.size(p) };
            fill(p, n);
            if case == "overflow3" {
                // SAFETY: p + n is the header word of the chunk after `p` (that of `q`), inside
                // the heap buffer: a one-byte overflow into allocator metadata.
                unsafe { poke(p, n) };
            } else {
                // SAFETY: the block's last usable byte.
                unsafe { p.as_ptr().add(n - 1).write_volatile(1) };
            }
            // SAFETY: live blocks, freed once.
            unsafe { m3.free(p) };
            // SAFETY: as above.
            unsafe { m3.free(q) };
        }
        "uaf5" | "uaf5-ok" => {
            let p = m5.malloc(100).expect("malloc");
            fill(p, 100);
            let v = if case == "uaf5" {
                // SAFETY: live block, freed once.
                unsafe { m5.free(p) };
                // SAFETY: inside the heap buffer and written above: a read after free.
                unsafe { peek(p, 16) }
            } else {
                // SAFETY: live block, written above.
                let v = unsafe { p.as_ptr().add(16).read_volatile() };
                // SAFETY: live block, freed once.
                unsafe { m5.free(p) };
                v
            };
            std::hint::black_box(v);
        }
        "uaf3" | "uaf3-ok" => {
            let p = m3.malloc(100).expect("malloc");
            let q = m3.malloc(100).expect("malloc");
            fill(p, 100);
            let v = if case == "uaf3" {
                // SAFETY: live block, freed once.
                unsafe { m3.free(p) };
                // SAFETY: inside the heap buffer and written above: a read after free.
                unsafe { peek(p, 16) }
            } else {
                // SAFETY: live block, written above.
                let v = unsafe { p.as_ptr().add(16).read_volatile() };
                // SAFETY: live block, freed once.
                unsafe { m3.free(p) };
                v
            };
            std::hint::black_box(v);
            // SAFETY: live block.
            unsafe { m3.free(q) };
        }
        "overflow-tlsf" | "overflow-tlsf-ok" => {
            let p = mt.malloc(20).expect("malloc");
            let q = mt.malloc(20).expect("malloc");
            // SAFETY: live block.
            let n = unsafe { mt.size(p) };
            fill(p, n);
            if case == "overflow-tlsf" {
                // SAFETY: p + n is the header of the block after `p` (that of `q`), inside the
                // heap buffer: a one-byte overflow into allocator metadata.
                unsafe { poke(p, n) };
            } else {
                // SAFETY: the block's last usable byte.
                unsafe { p.as_ptr().add(n - 1).write_volatile(1) };
            }
            // SAFETY: live blocks, freed once.
            unsafe { mt.free(p) };
            // SAFETY: as above.
            unsafe { mt.free(q) };
        }
        "uaf-tlsf" | "uaf-tlsf-ok" => {
            let p = mt.malloc(100).expect("malloc");
            let q = mt.malloc(100).expect("malloc");
            fill(p, 100);
            let v = if case == "uaf-tlsf" {
                // SAFETY: live block, freed once.
                unsafe { mt.free(p) };
                // SAFETY: inside the heap buffer and written above: a read after free.
                unsafe { peek(p, 16) }
            } else {
                // SAFETY: live block, written above.
                let v = unsafe { p.as_ptr().add(16).read_volatile() };
                // SAFETY: live block, freed once.
                unsafe { mt.free(p) };
                v
            };
            std::hint::black_box(v);
            // SAFETY: live block.
            unsafe { mt.free(q) };
        }
        "workload" => workload(),
        other => panic!("unknown case {other:?} (known: {:?})", names()),
    }
}

/// Mixed malloc/realloc/free on memsys3, memsys5, tlsf (one and two shards) and memsys5 under a
/// `limit` layer, using every usable byte of every block (as SQLite may, having asked `xSize`).
fn workload() {
    for spec in [
        "memsys5:heap=256K,min=16",
        "memsys3:heap=256K",
        "tlsf:heap=256K",
        "tlsf:heap=256K,shards=2",
        "memsys5:heap=64K+limit:max=32K",
    ] {
        let s = sqlalloc::build(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
        let mut live: Vec<NonNull<u8>> = Vec::new();
        for i in 0..2000usize {
            let n = [24, 300, 1000, 8, 4000, 129, 17][i % 7];
            if i % 3 == 2 && !live.is_empty() {
                let p = live.swap_remove(i % live.len());
                // SAFETY: live block of `s`.
                unsafe { s.free(p) };
            } else if i % 5 == 4 && !live.is_empty() {
                let k = i % live.len();
                // SAFETY: live block of `s`, replaced on success.
                if let Some(q) = unsafe { s.realloc(live[k], n * 2) } {
                    // SAFETY: live block.
                    fill(q, unsafe { s.size(q) });
                    live[k] = q;
                }
            } else if let Some(p) = s.malloc(n) {
                // SAFETY: live block.
                fill(p, unsafe { s.size(p) });
                live.push(p);
            }
        }
        for p in live {
            // SAFETY: live blocks of `s`.
            unsafe { s.free(p) };
        }
        assert_eq!(s.stats().current_count, 0, "{spec}: blocks left");
    }
}

fn names() -> Vec<&'static str> {
    CASES.iter().map(|c| c.0).collect()
}

/// Run `case` in a child: (exit code, stderr).
fn run_child(case: &str) -> (Option<i32>, String) {
    let me = std::env::current_exe().expect("current_exe");
    let out = Command::new(me)
        .arg(case)
        .env(
            "ASAN_OPTIONS",
            format!("exitcode={ASAN_EXIT}:halt_on_error=1:detect_leaks=0:abort_on_error=0"),
        )
        .output()
        .expect("run the child");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Check one case's outcome; the reason it is wrong, if it is.
fn verdict(expect: Expect, code: Option<i32>, err: &str) -> Result<(), String> {
    match expect {
        Expect::Clean => {
            if code == Some(0) && err.trim().is_empty() {
                Ok(())
            } else {
                Err(format!("expected a clean run, got exit {code:?}"))
            }
        }
        Expect::Report(kind) => {
            let target = err
                .lines()
                .find_map(|l| l.strip_prefix("target "))
                .ok_or("the child did not reach the access")?;
            let wanted = [
                "ERROR: AddressSanitizer: use-after-poison on address ".to_string() + target,
                format!("{kind} of size 1 at {target}"),
                "-byte region".to_string(),
            ];
            if code != Some(ASAN_EXIT) {
                return Err(format!(
                    "expected ASan's exit code {ASAN_EXIT}, got {code:?}"
                ));
            }
            if let Some(w) = wanted.iter().find(|w| !err.contains(w.as_str())) {
                return Err(format!("report lacks {w:?}"));
            }
            // Inside the pool buffer: ASan places the address in the heap's allocation.
            let region = format!("inside of {HEAP}-byte region");
            if !err.contains(&region) {
                return Err(format!("report does not place {target} {region:?}"));
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [case] = args.as_slice() {
        act(case);
        return ExitCode::SUCCESS;
    }
    if !args.is_empty() {
        eprintln!("usage: tests-asan [CASE]  (cases: {:?})", names());
        return ExitCode::from(2);
    }
    let mut failed = 0;
    for &(case, expect) in CASES {
        let (code, err) = run_child(case);
        match verdict(expect, code, &err) {
            Ok(()) => {
                let what = match expect {
                    Expect::Report(kind) => format!("ASan reported a use-after-poison {kind}"),
                    Expect::Clean => "clean".to_string(),
                };
                println!("asan-pool-test: {case}: ok ({what})");
            }
            Err(why) => {
                failed += 1;
                println!("asan-pool-test: {case}: FAILED: {why}\n--- child stderr ---\n{err}---");
            }
        }
    }
    println!(
        "asan-pool-test: {} passed, {failed} failed",
        CASES.len() - failed
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
