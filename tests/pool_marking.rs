//! memsys3, memsys5 and tlsf mark their pools for valgrind (src/marking.rs): a write past a block or a
//! read of a freed block is reported by memcheck, and normal use is clean.
//!
//! The test runs this very test binary under `valgrind --error-exitcode=99`, once per case (the
//! case is passed in `SQLALLOC_POOL_CASE` to the test `child`, which does nothing without it), and
//! checks valgrind's verdict. Without valgrind on the machine it says so and passes (`make
//! valgrind` and CI install it).

use sqlalloc::backend::{Memsys3, Memsys5, Tlsf};
use sqlalloc::MemMethods;
use std::process::Command;
use std::ptr::NonNull;

/// The bad (and the good) things a child does.
fn act(case: &str) {
    let m5 = Memsys5::new(64 << 10, 16).unwrap();
    let m3 = Memsys3::new(64 << 10).unwrap();
    let mt = Tlsf::new(64 << 10).unwrap();
    let fill = |p: NonNull<u8>, n: usize| {
        // SAFETY: `p` is a live block of at least `n` bytes.
        unsafe { std::ptr::write_bytes(p.as_ptr(), 0x5a, n) }
    };
    match case {
        "overflow5" => {
            // Fresh heap: the 128-byte block at offset 0, its free buddy right after it.
            let p = m5.malloc(100).unwrap();
            // SAFETY: p + 136 lies inside the heap buffer (the free buddy, past its link), so
            // this is a stray write into free pool memory, not outside any allocation.
            unsafe { p.as_ptr().add(136).write_volatile(1) };
        }
        "uaf5" => {
            let p = m5.malloc(100).unwrap();
            fill(p, 100);
            // SAFETY: live block, freed once.
            unsafe { m5.free(p) };
            // SAFETY: inside the heap buffer and initialized (filled above): a use after free
            // of pool memory, which valgrind must report.
            let _ = unsafe { p.as_ptr().add(16).read_volatile() };
        }
        "overflow3" => {
            let p = m3.malloc(20).unwrap();
            // SAFETY: a live block.
            let n = unsafe { m3.size(p) };
            // SAFETY: p + n is the next chunk's header word, inside the heap buffer: a one-byte
            // overflow into allocator metadata.
            unsafe { p.as_ptr().add(n).write_volatile(1) };
        }
        "uaf3" => {
            let p = m3.malloc(100).unwrap();
            let q = m3.malloc(100).unwrap();
            fill(p, 100);
            // SAFETY: live block, freed once.
            unsafe { m3.free(p) };
            // SAFETY: inside the heap buffer and initialized: a use after free.
            let _ = unsafe { p.as_ptr().add(16).read_volatile() };
            // SAFETY: live block.
            unsafe { m3.free(q) };
        }
        "overflow_tlsf" => {
            let p = mt.malloc(20).unwrap();
            // SAFETY: a live block.
            let n = unsafe { mt.size(p) };
            // SAFETY: p + n is the next block's header, inside the heap buffer: a one-byte
            // overflow into allocator metadata.
            unsafe { p.as_ptr().add(n).write_volatile(1) };
        }
        "uaf_tlsf" => {
            let p = mt.malloc(100).unwrap();
            let q = mt.malloc(100).unwrap();
            fill(p, 100);
            // SAFETY: live block, freed once.
            unsafe { mt.free(p) };
            // SAFETY: inside the heap buffer and initialized: a use after free.
            let _ = unsafe { p.as_ptr().add(16).read_volatile() };
            // SAFETY: live block.
            unsafe { mt.free(q) };
        }
        "clean" => {
            for spec in [
                "memsys5:heap=256K,min=16",
                "memsys3:heap=256K",
                "memsys5:heap=64K+limit:max=32K",
                "tlsf:heap=256K",
                "tlsf:heap=256K,shards=2+limit:max=128K",
            ] {
                let s = sqlalloc::build(spec).unwrap();
                let mut live: Vec<(NonNull<u8>, usize)> = Vec::new();
                for i in 0..400usize {
                    let n = [24, 300, 1000, 8, 4000][i % 5];
                    if i % 3 == 2 && !live.is_empty() {
                        let (p, _) = live.swap_remove(i % live.len());
                        // SAFETY: live block of `s`.
                        unsafe { s.free(p) };
                    } else if i % 7 == 6 && !live.is_empty() {
                        let k = i % live.len();
                        // SAFETY: live block of `s`, replaced on success.
                        if let Some(q) = unsafe { s.realloc(live[k].0, n * 2) } {
                            fill(q, n * 2);
                            live[k] = (q, n * 2);
                        }
                    } else if let Some(p) = s.malloc(n) {
                        // SAFETY: a live block uses its whole size (as SQLite may).
                        let sz = unsafe { s.size(p) };
                        fill(p, sz);
                        live.push((p, n));
                    }
                }
                for (p, _) in live {
                    // SAFETY: live blocks of `s`.
                    unsafe { s.free(p) };
                }
                assert_eq!(s.stats().current_count, 0);
            }
        }
        other => panic!("unknown SQLALLOC_POOL_CASE {other:?}"),
    }
}

#[test]
fn child() {
    if let Ok(case) = std::env::var("SQLALLOC_POOL_CASE") {
        act(&case);
    }
}

fn valgrind_present() -> bool {
    Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Run `case` under valgrind: (exit code, valgrind's report).
fn under_valgrind(case: &str) -> (Option<i32>, String) {
    let me = std::env::current_exe().unwrap();
    let out = Command::new("valgrind")
        .args(["-q", "--error-exitcode=99", "--leak-check=no"])
        // The suppressions of `make valgrind`: only a known false positive of mimalloc's start-up
        // (when the `mimalloc` feature links it in) is relevant here.
        .arg(concat!(
            "--suppressions=",
            env!("CARGO_MANIFEST_DIR"),
            "/c-tests/valgrind.supp"
        ))
        .arg(me)
        .args(["--exact", "child", "--test-threads=1", "-q"])
        .env("SQLALLOC_POOL_CASE", case)
        .output()
        .expect("run valgrind");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn valgrind_reports_pool_bugs_and_nothing_else() {
    if cfg!(miri) || !valgrind_present() {
        eprintln!("pool_marking: valgrind is not installed; skipped (make valgrind installs it)");
        return;
    }
    // Memcheck describes a stray write as inside the heap buffer (an anonymous mapping, see
    // src/heap.rs: memory mapped read-write as far as valgrind knows, so only the pool marking
    // can make the access an error), and a read after free as inside the pool block freed.
    let in_heap = "is in a rw- anonymous segment";
    for (case, what, where_) in [
        ("overflow5", "Invalid write of size 1", in_heap),
        (
            "uaf5",
            "Invalid read of size 1",
            "16 bytes inside a block of size 128 free'd",
        ),
        ("overflow3", "Invalid write of size 1", in_heap),
        (
            "uaf3",
            "Invalid read of size 1",
            "16 bytes inside a block of size 100 free'd",
        ),
        ("overflow_tlsf", "Invalid write of size 1", in_heap),
        (
            "uaf_tlsf",
            "Invalid read of size 1",
            "16 bytes inside a block of size 104 free'd",
        ),
    ] {
        let (code, report) = under_valgrind(case);
        assert!(
            code == Some(99) && report.contains(what) && report.contains(where_),
            "{case}: expected valgrind to report {what:?} {where_:?} (exit 99); got exit \
             {code:?}:\n{report}"
        );
    }
    let (code, report) = under_valgrind("clean");
    assert!(
        code == Some(0) && report.trim().is_empty(),
        "clean: exit {code:?}:\n{report}"
    );
}
