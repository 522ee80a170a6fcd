//! The biased lock of memsys3/memsys5 under a seccomp filter that forbids `membarrier`, installed
//! after the allocator's first use (a sandbox that locks itself down once initialized): the
//! second thread revokes the bias with the fallback barrier (an `mprotect` TLB shootdown, see
//! src/lock.rs) and the program goes on, correct, with the default `bias=on` as with `bias=off`.
//! Only when `mprotect` is forbidden too does the process abort, with a message naming the cause
//! and `bias=off`.
//!
//! Each test re-runs this executable on itself with [`SCENARIO_ENV`] set, as tests/debug_death.rs
//! does: the filter stays with the child process.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use sqlalloc::backend::{Memsys3, Memsys5};
use sqlalloc::MemMethods;
use std::os::unix::process::ExitStatusExt;
use std::sync::Barrier;

mod common;

/// Environment variable naming the scenario the child runs.
const SCENARIO_ENV: &str = "SQLALLOC_SECCOMP_SCENARIO";

/// In the child (the variable names `name`): run `scenario` and exit 0. In the parent: run the
/// child and return its exit status and stderr.
fn run(name: &str, scenario: fn()) -> (std::process::ExitStatus, String) {
    if common::in_child(name, SCENARIO_ENV) {
        scenario();
        std::process::exit(0);
    }
    common::rerun_self(name, SCENARIO_ENV)
}

/// Test `name` runs `scenario` in a child, which must finish (no abort) under the filter.
fn runs_under_the_filter(name: &str, scenario: fn()) {
    let (status, stderr) = run(name, scenario);
    assert!(status.success(), "{status:?}; stderr:\n{stderr}");
    assert!(stderr.contains("SCENARIO DONE"), "{stderr}");
}

/// Whether this kernel lets the process use private expedited membarriers (else there is no
/// bias to revoke and the scenario proves nothing).
fn membarrier_available() -> bool {
    const MEMBARRIER_CMD_QUERY: libc::c_long = 0;
    const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
    // SAFETY: the query command reads and writes no memory of the caller.
    let cmds = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0) };
    cmds > 0 && cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED != 0
}

/// Whether the fallback barrier must refuse on this CPU (it has INVLPGB: Linux may flush other
/// CPUs' TLBs without interrupting them); the same test as src/lock.rs.
fn broadcast_flush() -> bool {
    use std::arch::x86_64::__cpuid;
    // SAFETY: CPUID exists on every x86-64 processor and only writes registers (the intrinsic
    // is safe in recent Rust; the block is for older compilers).
    #[allow(unused_unsafe)]
    unsafe {
        __cpuid(0x8000_0000).eax >= 0x8000_0008 && __cpuid(0x8000_0008).ebx & (1 << 3) != 0
    }
}

/// Make every later `membarrier` system call of this process fail with `EPERM` (this thread
/// and the threads it creates from now on).
fn forbid_membarrier() {
    forbid(&[libc::SYS_membarrier]);
}

/// Make every later system call in `calls` fail with `EPERM`, in this thread and the threads it
/// creates from now on.
fn forbid(calls: &[libc::c_long]) {
    // Classic BPF: load the system call number (offset 0 of `seccomp_data`); for each call in
    // `calls`, jump to the ERRNO(EPERM) return when it matches; else allow.
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    let n = calls.len();
    let mut filter = vec![libc::sock_filter {
        code: LD_W_ABS,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    for (i, &nr) in calls.iter().enumerate() {
        filter.push(libc::sock_filter {
            code: JEQ_K,
            // From the next instruction to the last one (the ERRNO return).
            jt: u8::try_from(n - i).expect("a short list"),
            jf: 0,
            k: u32::try_from(nr).expect("a system call number"),
        });
    }
    filter.push(libc::sock_filter {
        code: RET_K,
        jt: 0,
        jf: 0,
        k: libc::SECCOMP_RET_ALLOW,
    });
    filter.push(libc::sock_filter {
        code: RET_K,
        jt: 0,
        jf: 0,
        k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
    });
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: prctl with these options reads `prog` and the filter it points to, both alive for
    // the duration of the calls.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog
            ),
            0,
            "installing the seccomp filter"
        );
    }
}

/// Allocate on this thread (it becomes the lock's owner when biasing is allowed), forbid
/// membarrier, then allocate on a second thread.
fn scenario(spec: &str) {
    let a = sqlalloc::build(spec).expect("spec builds");
    let p = a.malloc(100).expect("first thread allocates");
    // SAFETY: `p` is live in `a`.
    unsafe { a.free(p) };
    forbid_membarrier();
    std::thread::scope(|s| {
        s.spawn(|| {
            let q = a.malloc(200).expect("second thread allocates");
            // SAFETY: `q` is live in `a`.
            unsafe { a.free(q) };
        });
    });
    let p = a.malloc(300).expect("first thread allocates again");
    // SAFETY: `p` is live in `a`.
    unsafe { a.free(p) };
    eprintln!("SCENARIO DONE");
}

/// Test `name` runs `scenario` in a child under a filter that forbids `membarrier`: it must
/// finish, or, where the fallback barrier must refuse (INVLPGB), abort naming the cause and
/// `bias=off`.
fn goes_on_with_the_fallback(name: &str, scenario: fn()) {
    if !membarrier_available() {
        eprintln!("skipped: no private expedited membarrier on this kernel");
        return;
    }
    if broadcast_flush() {
        let (status, stderr) = run(name, scenario);
        assert_eq!(
            status.signal(),
            Some(libc::SIGABRT),
            "{status:?}:\n{stderr}"
        );
        assert!(
            stderr.contains("INVLPGB") && stderr.contains("bias=off"),
            "{stderr}"
        );
        return;
    }
    runs_under_the_filter(name, scenario);
}

#[test]
fn biased_memsys5_goes_on_under_the_filter() {
    goes_on_with_the_fallback("biased_memsys5_goes_on_under_the_filter", || {
        scenario("memsys5:heap=1M")
    });
}

#[test]
fn biased_memsys3_goes_on_under_the_filter() {
    goes_on_with_the_fallback("biased_memsys3_goes_on_under_the_filter", || {
        scenario("memsys3:heap=1M")
    });
}

/// One thread's share of [`revoked_under_load`]: `rounds` allocations of varied sizes, up to 8
/// live at once, each filled with a pattern of this thread's and checked just before it is
/// freed (two threads in the allocator at once would hand out a block twice or tear the free
/// lists). Returns the number of allocations, all freed.
fn fill_check_free(a: &impl MemMethods, tag: u8, rounds: usize) -> usize {
    let mut live: Vec<(std::ptr::NonNull<u8>, usize, u8)> = Vec::with_capacity(8);
    let mut allocated = 0;
    let check_free = |(p, n, b): (std::ptr::NonNull<u8>, usize, u8)| {
        // SAFETY: `p` is live in `a`, `n` bytes long, and only this thread uses it.
        let bytes = unsafe { std::slice::from_raw_parts(p.as_ptr(), n) };
        assert!(
            bytes.iter().all(|&x| x == b),
            "block of thread {tag} overwritten"
        );
        // SAFETY: `p` is live in `a`; it is freed once.
        unsafe { a.free(p) };
    };
    for i in 0..rounds {
        if live.len() == 8 {
            check_free(live.swap_remove(i % 8));
        }
        let n = 16 + (i * 37 + usize::from(tag) * 101) % 2000;
        let p = a.malloc(n).expect("the heap has room");
        allocated += 1;
        let b = tag.wrapping_mul(16) ^ (i as u8);
        // SAFETY: `p` is a fresh block of at least `n` bytes, only this thread's.
        unsafe { std::ptr::write_bytes(p.as_ptr(), b, n) };
        live.push((p, n, b));
    }
    for blk in live.drain(..) {
        check_free(blk);
    }
    allocated
}

/// With membarrier forbidden after this process registered for it, each of `fresh_heaps` heaps
/// is biased to this thread, then a second thread allocates and frees concurrently with it:
/// its first call revokes the bias with the fallback barrier while the owner may be inside.
/// Both threads' blocks stay intact, and the heap ends empty (`empty` checks it).
fn revoked_under_load<A: MemMethods>(new: fn() -> A, biased: fn(&A) -> bool, empty: fn(&A)) {
    // The first heap registers the process for membarrier (and maps the fallback's page).
    let first = new();
    let p = first.malloc(64).expect("malloc");
    // SAFETY: `p` is live in `first`.
    unsafe { first.free(p) };
    assert!(biased(&first), "biased before the filter");
    forbid_membarrier();
    let rounds = 4000;
    for _ in 0..20 {
        let a = new();
        let p = a.malloc(64).expect("malloc");
        // SAFETY: `p` is live in `a`.
        unsafe { a.free(p) };
        assert!(
            biased(&a),
            "the owner takes the bias (the process is registered)"
        );
        let go = Barrier::new(2);
        let (mine, theirs) = std::thread::scope(|s| {
            let other = s.spawn(|| {
                go.wait();
                fill_check_free(&a, 2, rounds)
            });
            go.wait();
            let mine = fill_check_free(&a, 1, rounds);
            (mine, other.join().expect("the second thread"))
        });
        assert_eq!((mine, theirs), (rounds, rounds));
        assert!(!biased(&a), "the second thread revoked the bias");
        empty(&a);
    }
    eprintln!("SCENARIO DONE");
}

#[test]
fn memsys5_revoked_under_load_by_the_fallback() {
    goes_on_with_the_fallback("memsys5_revoked_under_load_by_the_fallback", || {
        revoked_under_load(
            || Memsys5::new(1 << 20, 0).expect("heap"),
            Memsys5::lock_is_biased,
            |a| {
                // Everything freed and joined again: the largest block is there.
                let p = a.malloc(a.largest_block()).expect("the heap is whole");
                // SAFETY: `p` is live in `a`.
                unsafe { a.free(p) };
            },
        )
    });
}

#[test]
fn memsys3_revoked_under_load_by_the_fallback() {
    goes_on_with_the_fallback("memsys3_revoked_under_load_by_the_fallback", || {
        revoked_under_load(
            || Memsys3::new(1 << 20).expect("heap"),
            Memsys3::lock_is_biased,
            |a| {
                assert_eq!(a.live(), 0, "every block freed");
                let p = a.malloc(a.heap_len() / 2).expect("the heap is whole");
                // SAFETY: `p` is live in `a`.
                unsafe { a.free(p) };
            },
        )
    });
}

#[test]
fn no_barrier_left_aborts_naming_the_cause_and_bias_off() {
    // The revoking thread forbids itself membarrier and mprotect: neither barrier can serve.
    if !membarrier_available() {
        eprintln!("skipped: no private expedited membarrier on this kernel");
        return;
    }
    let (status, stderr) = run(
        "no_barrier_left_aborts_naming_the_cause_and_bias_off",
        || {
            let a = Memsys5::new(1 << 20, 0).expect("heap");
            let p = a.malloc(100).expect("first thread allocates");
            // SAFETY: `p` is live in `a`.
            unsafe { a.free(p) };
            assert!(a.lock_is_biased());
            std::thread::scope(|s| {
                s.spawn(|| {
                    forbid(&[libc::SYS_membarrier, libc::SYS_mprotect]);
                    let q = a.malloc(200).expect("second thread allocates");
                    // SAFETY: `q` is live in `a`.
                    unsafe { a.free(q) };
                });
            });
            eprintln!("SCENARIO DONE");
        },
    );
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "expected an abort ({status:?}); stderr:\n{stderr}"
    );
    let cause = if broadcast_flush() {
        "INVLPGB"
    } else {
        "mprotect"
    };
    assert!(
        stderr.contains("membarrier") && stderr.contains(cause) && stderr.contains("bias=off"),
        "the message names the cause and the remedy:\n{stderr}"
    );
    assert!(!stderr.contains("SCENARIO DONE"));
}

#[test]
fn memsys5_bias_off_runs_under_the_filter() {
    runs_under_the_filter("memsys5_bias_off_runs_under_the_filter", || {
        scenario("memsys5:heap=1M,bias=off")
    });
}

#[test]
fn memsys3_bias_off_runs_under_the_filter() {
    runs_under_the_filter("memsys3_bias_off_runs_under_the_filter", || {
        scenario("memsys3:heap=1M,bias=off")
    });
}

#[test]
fn bias_off_is_never_biased_and_default_is() {
    let off = sqlalloc::backend::Memsys5::new(1 << 20, 0)
        .expect("heap")
        .with_bias(false);
    let p = off.malloc(10).expect("malloc");
    // SAFETY: `p` is live in `off`.
    unsafe { off.free(p) };
    assert!(!off.lock_is_biased());
    let m3 = sqlalloc::backend::Memsys3::new(1 << 20)
        .expect("heap")
        .with_bias(false);
    let p = m3.malloc(10).expect("malloc");
    // SAFETY: `p` is live in `m3`.
    unsafe { m3.free(p) };
    assert!(!m3.lock_is_biased());
    if membarrier_available() {
        let on = sqlalloc::backend::Memsys5::new(1 << 20, 0).expect("heap");
        let p = on.malloc(10).expect("malloc");
        // SAFETY: `p` is live in `on`.
        unsafe { on.free(p) };
        assert!(
            on.lock_is_biased(),
            "the default lock is biased after one use"
        );
    }
}
