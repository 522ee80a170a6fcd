//! Death tests for the `debug` backend: every misuse it detects must be reported on stderr and
//! abort the process.
//!
//! Each test re-runs this test executable on itself (`--exact NAME`) with [`SCENARIO_ENV`] set to
//! its name; the child runs the scenario, which prints the address and size of the block it is
//! about to misuse (`BLOCK 0x… SIZE n`) and then misuses it. The parent checks that the child died
//! of `SIGABRT` and that the report names the problem, the address and the size.

use sqlalloc::backend::Debug;
use sqlalloc::MemMethods;
use std::os::unix::process::ExitStatusExt;

mod common;
use std::ptr::NonNull;

/// Environment variable naming the scenario the child runs.
const SCENARIO_ENV: &str = "SQLALLOC_DEBUG_DEATH";

/// In the child (the variable names `name`): run `scenario`, which must not return. In the
/// parent: run the child and return its stderr, after checking that it died of SIGABRT.
fn run(name: &str, scenario: fn()) -> String {
    if common::in_child(name, SCENARIO_ENV) {
        scenario();
        eprintln!("scenario {name} returned: the allocator did not abort");
        std::process::exit(3);
    }
    let (status, stderr) = common::rerun_self(name, SCENARIO_ENV);
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "scenario {name}: child did not die of SIGABRT ({status:?}); stderr:\n{stderr}"
    );
    stderr
}

/// The `BLOCK 0x… SIZE n` line the child printed: (address text, size).
fn announced(stderr: &str) -> (String, usize) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("BLOCK "))
        .unwrap_or_else(|| panic!("no BLOCK line in:\n{stderr}"));
    let mut w = line.split_whitespace();
    let addr = w.nth(1).expect("address").to_string();
    let size = w.nth(1).expect("size").parse().expect("size is a number");
    (addr, size)
}

fn announce(p: NonNull<u8>, size: usize) {
    eprintln!("BLOCK {:#x} SIZE {size}", p.as_ptr().addr());
}

/// Check that the report names `problem`, the announced address and (when the block is known)
/// its size.
fn check_report(stderr: &str, problem: &str, with_size: bool) {
    let (addr, size) = announced(stderr);
    let report = stderr
        .split_once("sqlalloc debug allocator: ")
        .unwrap_or_else(|| panic!("no report in:\n{stderr}"))
        .1;
    assert!(
        report.contains(problem),
        "report lacks {problem:?}:\n{stderr}"
    );
    assert!(report.contains(&addr), "report lacks {addr}:\n{stderr}");
    if with_size {
        let s = format!("requested {size} bytes");
        assert!(report.contains(&s), "report lacks {s:?}:\n{stderr}");
    }
}

macro_rules! death_test {
    ($name:ident, $scenario:expr, $check:expr) => {
        #[test]
        fn $name() {
            let stderr = run(stringify!($name), $scenario);
            let check: fn(&str) = $check;
            check(&stderr);
        }
    };
}

/// Write `v` at byte `off` (possibly negative) of the block at `p`.
///
/// # Safety
/// `p + off` must lie inside the libc block behind `p` (the debug backend's header and guards
/// are part of it), and the scenario must be about to make the allocator abort.
unsafe fn poke(p: NonNull<u8>, off: isize, v: u8) {
    // SAFETY: in bounds of the underlying libc allocation by the caller's contract.
    unsafe { p.as_ptr().offset(off).write(v) }
}

death_test!(
    rear_guard_overrun_by_one,
    || {
        let d = Debug::new(0);
        let p = d.malloc(16).unwrap();
        announce(p, 16);
        // SAFETY: byte 16 is the first byte of the rear guard, inside the libc block.
        unsafe { poke(p, 16, 0) };
        // SAFETY: `p` is live; the allocator must abort.
        unsafe { d.free(p) };
    },
    |e| {
        check_report(e, "rear guard corrupted", true);
        assert!(
            e.contains("offset 16 from the block start (rear guard)"),
            "{e}"
        );
    }
);

death_test!(
    pad_overrun_by_one,
    || {
        let d = Debug::new(0);
        let p = d.malloc(13).unwrap();
        announce(p, 13);
        // SAFETY: byte 13 is pad (the block is rounded to 16), inside the libc block.
        unsafe { poke(p, 13, b'x') };
        // SAFETY: `p` is live; the allocator must abort.
        unsafe { d.free(p) };
    },
    |e| {
        check_report(e, "rear guard corrupted", true);
        assert!(e.contains("offset 13 from the block start (pad"), "{e}");
    }
);

death_test!(
    front_guard_underrun,
    || {
        let d = Debug::new(4);
        let p = d.malloc(24).unwrap();
        announce(p, 24);
        // SAFETY: byte -1 is the last byte of the front guard, inside the libc block.
        unsafe { poke(p, -1, 0) };
        // SAFETY: `p` is live; the allocator must abort.
        unsafe { d.free(p) };
    },
    |e| {
        check_report(e, "front guard corrupted", true);
        assert!(e.contains("offset -1 from the block start"), "{e}");
    }
);

death_test!(
    header_smashed_detected_by_realloc,
    || {
        let d = Debug::new(0);
        let p = d.malloc(40).unwrap();
        announce(p, 40);
        for off in -32..-16 {
            // SAFETY: bytes -32..-16 are the header's size and serial, inside the libc block;
            // the guard words just before the user bytes stay intact.
            unsafe { poke(p, off, 0xff) };
        }
        // SAFETY: `p` is live; the allocator must abort.
        let _ = unsafe { d.realloc(p, 80) };
    },
    |e| {
        check_report(e, "block header corrupted", true);
        assert!(e.contains("in realloc of block"), "{e}");
    }
);

death_test!(
    size_checks_guards,
    || {
        let d = Debug::new(0);
        let p = d.malloc(8).unwrap();
        announce(p, 8);
        // SAFETY: byte 9 is inside the rear guard.
        unsafe { poke(p, 9, 0) };
        // SAFETY: `p` is live; the allocator must abort.
        let _ = unsafe { d.size(p) };
    },
    |e| {
        check_report(e, "rear guard corrupted", true);
        assert!(e.contains("in size of block"), "{e}");
    }
);

death_test!(
    check_all_finds_overrun,
    || {
        let d = Debug::new(0);
        let _a = d.malloc(100).unwrap();
        let p = d.malloc(64).unwrap();
        let _b = d.malloc(100).unwrap();
        announce(p, 64);
        // SAFETY: byte 70 is inside the rear guard (64..72).
        unsafe { poke(p, 70, 0) };
        d.check_all();
    },
    |e| {
        check_report(e, "rear guard corrupted", true);
        assert!(e.contains("in check_all of block"), "{e}");
    }
);

death_test!(
    double_free,
    || {
        let d = Debug::new(0);
        let p = d.malloc(32).unwrap();
        announce(p, 32);
        // SAFETY: `p` is live.
        unsafe { d.free(p) };
        // SAFETY: none: this is the double free the allocator must catch (the block is in its
        // quarantine, still allocated).
        unsafe { d.free(p) };
    },
    |e| check_report(e, "double free", true)
);

death_test!(
    double_free_through_a_stack,
    || {
        let s = sqlalloc::build("debug").unwrap();
        let p = s.malloc(56).unwrap();
        announce(p, 56);
        // SAFETY: `p` is live.
        unsafe { s.free(p) };
        // SAFETY: none: double free (the counters ask the size first, which catches it).
        unsafe { s.free(p) };
    },
    |e| check_report(e, "double free", true)
);

death_test!(
    realloc_of_freed_block,
    || {
        let d = Debug::new(0);
        let p = d.malloc(20).unwrap();
        announce(p, 20);
        // SAFETY: `p` is live.
        unsafe { d.free(p) };
        // SAFETY: none: use after free the allocator must catch.
        let _ = unsafe { d.realloc(p, 40) };
    },
    |e| check_report(e, "realloc of a freed block", true)
);

death_test!(
    free_of_libc_pointer,
    || {
        let d = Debug::new(0);
        // SAFETY: plain libc allocation, deliberately handed to the wrong allocator.
        let p = NonNull::new(unsafe { libc::malloc(32) }.cast::<u8>()).unwrap();
        announce(p, 32);
        // SAFETY: none: a foreign pointer the allocator must refuse without touching it.
        unsafe { d.free(p) };
    },
    |e| {
        check_report(e, "never handed out", false);
        assert!(e.contains("in free of pointer"), "{e}");
    }
);

death_test!(
    free_of_stack_pointer,
    || {
        let d = Debug::new(0);
        let mut buf = [0u8; 64];
        let p = NonNull::from(&mut buf[8]);
        announce(p, 56);
        // SAFETY: none: a foreign pointer the allocator must refuse without touching it.
        unsafe { d.free(p) };
        std::hint::black_box(&buf);
    },
    |e| check_report(
        e,
        "free of a pointer this allocator never handed out",
        false
    )
);

death_test!(
    free_of_interior_pointer,
    || {
        let d = Debug::new(0);
        let p = d.malloc(64).unwrap();
        // SAFETY: byte 8 of a 64-byte block.
        let q = unsafe { p.add(8) };
        announce(q, 56);
        // SAFETY: none: not a block start; the allocator must refuse it.
        unsafe { d.free(q) };
    },
    |e| check_report(e, "never handed out", false)
);

death_test!(
    write_after_free_caught_leaving_quarantine,
    || {
        let d = Debug::new(0);
        let p = d.malloc(48).unwrap();
        announce(p, 48);
        // SAFETY: `p` is live.
        unsafe { d.free(p) };
        // SAFETY: the block is quarantined (still allocated from libc): this is the write after
        // free the allocator must catch.
        unsafe { poke(p, 5, 1) };
        // Push it out of the quarantine.
        for _ in 0..2000 {
            let q = d.malloc(8).unwrap();
            // SAFETY: `q` is live.
            unsafe { d.free(q) };
        }
    },
    |e| {
        check_report(e, "write after free", true);
        assert!(e.contains("offset 5 from the block start"), "{e}");
        assert!(e.contains("leaving the quarantine"), "{e}");
    }
);

/// Allocates for the backtrace test; its name must show up in the report. (Unmangled and public,
/// so that the linker can export it: see build.rs.)
#[inline(never)]
#[no_mangle]
pub fn allocate_for_backtrace_test(d: &Debug, n: usize) -> NonNull<u8> {
    std::hint::black_box(d.malloc(n).unwrap())
}

/// Frees for the backtrace test; its name must show up in the report of a double free.
#[inline(never)]
#[no_mangle]
pub fn free_for_backtrace_test(d: &Debug, p: NonNull<u8>) {
    // SAFETY: the scenario passes a live block.
    unsafe { d.free(p) };
    std::hint::black_box(());
}

death_test!(
    backtrace_shown_for_overrun,
    || {
        let d = Debug::new(8);
        let p = allocate_for_backtrace_test(&d, 20);
        announce(p, 20);
        // SAFETY: byte 20 is pad, inside the libc block.
        unsafe { poke(p, 20, 0) };
        // SAFETY: `p` is live; the allocator must abort.
        unsafe { d.free(p) };
    },
    |e| {
        check_report(e, "rear guard corrupted", true);
        assert!(e.contains("allocated at:\n    #0 0x"), "{e}");
        assert!(e.contains("allocate_for_backtrace_test"), "{e}");
    }
);

death_test!(
    backtrace_shown_for_double_free,
    || {
        let d = Debug::new(8);
        let p = allocate_for_backtrace_test(&d, 36);
        announce(p, 36);
        free_for_backtrace_test(&d, p);
        free_for_backtrace_test(&d, p);
    },
    |e| {
        check_report(e, "double free", true);
        let (alloc, freed) = e.split_once("freed at:").expect("a 'freed at' section");
        assert!(alloc.contains("allocate_for_backtrace_test"), "{e}");
        assert!(freed.contains("free_for_backtrace_test"), "{e}");
    }
);

death_test!(
    write_after_free_caught_by_check_all,
    || {
        let d = Debug::new(0);
        let p = d.malloc(64).unwrap();
        announce(p, 64);
        // SAFETY: `p` is live.
        unsafe { d.free(p) };
        // SAFETY: the block is quarantined (still allocated from libc): this is the write after
        // free the allocator must catch.
        unsafe { poke(p, 63, 0) };
        d.check_all();
    },
    |e| {
        check_report(e, "write after free", true);
        assert!(e.contains("in check_all of block"), "{e}");
        assert!(e.contains("offset 63 from the block start"), "{e}");
    }
);
