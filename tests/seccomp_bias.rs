//! The biased lock of memsys3/memsys5 under a seccomp filter that forbids `membarrier`, installed
//! after the allocator's first use (a sandbox that locks itself down once initialized): without
//! `bias=off` a second thread cannot revoke the bias safely and the process aborts with a message
//! naming the remedy; with `bias=off` both threads allocate.
//!
//! Each test re-runs this executable on itself with [`SCENARIO_ENV`] set, as tests/debug_death.rs
//! does: the filter stays with the child process.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use sqlalloc::MemMethods;
use std::os::unix::process::ExitStatusExt;

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

/// Make every later `membarrier` system call of this process fail with `EPERM`.
fn forbid_membarrier() {
    // Classic BPF: load the system call number (offset 0 of `seccomp_data`); if it is
    // membarrier, return ERRNO(EPERM); else allow.
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    let filter = [
        libc::sock_filter {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: JEQ_K,
            jt: 0,
            jf: 1,
            k: libc::SYS_membarrier as u32,
        },
        libc::sock_filter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
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

#[test]
fn biased_memsys5_aborts_naming_bias_off() {
    if !membarrier_available() {
        eprintln!("skipped: no private expedited membarrier on this kernel");
        return;
    }
    let (status, stderr) = run("biased_memsys5_aborts_naming_bias_off", || {
        scenario("memsys5:heap=1M")
    });
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "expected an abort ({status:?}); stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("membarrier") && stderr.contains("bias=off"),
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
