//! Bad input, tried for real: the rows of docs/RELIABILITY.md that no other test covers.
//!
//! - requests of 0 bytes, of `INT_MAX`, of more than 2 GiB and of `usize::MAX`, and a realloc to
//!   0 bytes, through the Rust trait of every backend (built, not installed);
//! - the same through SQLite (`sqlite3_malloc`, `sqlite3_malloc64`, `sqlite3_realloc`,
//!   `sqlite3_realloc64`) and through the C methods table SQLite is given (`xMalloc(-1)`,
//!   `xRealloc(p, 0)`, `xSize(NULL)`, …);
//! - NULL arguments of the C functions not covered by c-tests/t_misuse.c and t_badspec.c, the
//!   fault functions' bad arguments and their errors without a fault layer;
//! - an install twice before `sqlite3_initialize()`, an install after it, and heaps too small
//!   for one block (accepted at install; `sqlite3_initialize()` then says `SQLITE_NOMEM`, as
//!   SQLite's own mem5.c does).
//!
//! Run with `--nocapture` to see the observed result of every row.

use libsqlite3_sys as sq;
use sqlalloc::MemMethods;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr::NonNull;

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct FaultStats {
    calls: i64,
    injected: i64,
    benign_injected: i64,
    armed: c_int,
    hooks: c_int,
}

extern "C" {
    fn sqlalloc_install(spec: *const c_char) -> c_int;
    fn sqlalloc_errmsg() -> *const c_char;
    fn sqlalloc_get_stats(out: *mut c_void) -> c_int;
    fn sqlalloc_installed_spec() -> *const c_char;
    fn sqlalloc_report(target: *const c_char) -> c_int;
    fn sqlalloc_report_to_buffer(format: *const c_char, buf: *mut c_char, len: usize) -> i64;
    fn sqlalloc_leak_report(fd: c_int) -> i64;
    fn sqlalloc_fault_arm(nth: i64, repeat: i64) -> c_int;
    fn sqlalloc_fault_arm_every(every: i64) -> c_int;
    fn sqlalloc_fault_arm_random(seed: u64, rate: f64) -> c_int;
    fn sqlalloc_fault_disarm() -> c_int;
    fn sqlalloc_fault_injected() -> i64;
    fn sqlalloc_fault_get_stats(out: *mut FaultStats) -> c_int;
}

/// A C call under test, returning its result code.
type CCall = fn() -> c_int;

const OK: c_int = 0;
const ERROR: c_int = 1;
const NOMEM: c_int = 7;
const MISUSE: c_int = 21;

fn errmsg() -> String {
    // SAFETY: sqlalloc_errmsg returns a valid NUL-terminated string for this thread.
    unsafe { CStr::from_ptr(sqlalloc_errmsg()) }
        .to_string_lossy()
        .into_owned()
}

fn installed_spec() -> String {
    // SAFETY: sqlalloc_installed_spec returns a valid NUL-terminated string.
    unsafe { CStr::from_ptr(sqlalloc_installed_spec()) }
        .to_string_lossy()
        .into_owned()
}

fn install(spec: &str) -> c_int {
    let c = std::ffi::CString::new(spec).unwrap();
    // SAFETY: a NUL-terminated string.
    unsafe { sqlalloc_install(c.as_ptr()) }
}

/// Print one observed row and check it.
fn row(what: &str, got: impl std::fmt::Debug, ok: bool) {
    eprintln!("{:<62} {:?}", what, got);
    assert!(ok, "{what}: got {got:?}");
}

const TRAIT_SPECS: &[&str] = &[
    "system",
    "debug",
    "memsys3:heap=16M",
    "memsys5:heap=16M",
    "tlsf:heap=16M",
    "rust",
    "system+limit:max=1G",
    "system+fault",
];

#[test]
fn requests_at_the_edges_through_the_trait() {
    const INT_MAX: usize = i32::MAX as usize;
    const OVER_2G: usize = (2 << 30) + 1;
    for &spec in TRAIT_SPECS {
        let s = sqlalloc::build(spec).unwrap();
        let fixed_heap = spec.starts_with("memsys") || spec.starts_with("tlsf");
        // 0 bytes: the smallest block.
        let p = s.malloc(0);
        row(
            &format!("{spec}: malloc(0)"),
            p.map(|p| unsafe_size(&s, p)),
            p.is_some(),
        );
        // SAFETY: `p` is live and from `s`.
        unsafe { s.free(p.unwrap()) };
        for (n, name) in [
            (INT_MAX, "INT_MAX"),
            (OVER_2G, "2 GiB + 1"),
            (isize::MAX as usize, "isize::MAX"),
            (usize::MAX, "usize::MAX"),
        ] {
            let before = s.stats().failed_calls;
            let p = s.malloc(n);
            let must_fail = fixed_heap || n > 1 << 40 || (spec.contains("limit") && n > 1 << 30);
            let got = match p {
                None => "None".to_string(),
                Some(p) => format!("a block of {} bytes", unsafe_size(&s, p)),
            };
            row(
                &format!("{spec}: malloc({name})"),
                &got,
                p.is_none() || (!must_fail && unsafe_size(&s, p.unwrap()) >= n),
            );
            match p {
                // SAFETY: `p` is live and from `s`.
                Some(p) => unsafe { s.free(p) },
                None => assert_eq!(s.stats().failed_calls, before + 1, "{spec}: not counted"),
            }
        }
        // realloc to 0 keeps a (smallest) block; realloc to usize::MAX fails and keeps the old.
        let p = s.malloc(100).unwrap();
        // SAFETY: `p` has 100 writable bytes.
        unsafe { p.as_ptr().write_bytes(0xa5, 100) };
        // SAFETY: `p` is live.
        let q = unsafe { s.realloc(p, usize::MAX) };
        // SAFETY: `p` is still live after a failed realloc: its bytes are readable.
        let kept = unsafe { std::slice::from_raw_parts(p.as_ptr(), 100) }
            .iter()
            .all(|&b| b == 0xa5);
        row(
            &format!("{spec}: realloc(p, usize::MAX)"),
            (q.is_none(), kept),
            q.is_none() && kept,
        );
        // SAFETY: `p` is live.
        let q = unsafe { s.realloc(p, 0) };
        row(&format!("{spec}: realloc(p, 0)"), q.is_some(), q.is_some());
        // SAFETY: `q` replaced `p` and is live.
        unsafe { s.free(q.unwrap()) };
        let st = s.stats();
        assert_eq!(
            (st.current_count, st.current_bytes),
            (0, 0),
            "{spec}: leaked"
        );
    }
}

fn unsafe_size(s: &sqlalloc::Stack, p: NonNull<u8>) -> usize {
    // SAFETY: callers pass live blocks of `s`.
    unsafe { s.size(p) }
}

/// Everything that needs SQLite, in order, in one test (SQLite's configuration is per process).
#[test]
fn through_sqlite_and_the_c_api() {
    // SAFETY: every call below is a plain SQLite or sqlalloc C call with valid arguments (or the
    // NULL arguments under test, which the functions document as checked).
    unsafe {
        // -- before any install ------------------------------------------------------------
        let rc = sqlalloc_fault_arm(1, 1);
        row(
            "fault_arm(1,1) before any install",
            (rc, errmsg()),
            rc == ERROR && errmsg().contains("no sqlalloc allocator"),
        );
        let n = sqlalloc_fault_injected();
        row("fault_injected() before any install", n, n == -1);
        let rc = sqlalloc_report(c"stderr".as_ptr());
        row(
            "report(\"stderr\") before any install",
            (rc, errmsg()),
            rc == ERROR,
        );

        // -- NULL arguments --------------------------------------------------------------------
        let rc = sqlalloc_install(std::ptr::null());
        row(
            "install(NULL)",
            (rc, errmsg()),
            rc == MISUSE && errmsg().contains("NULL"),
        );
        let rc = sqlalloc_get_stats(std::ptr::null_mut());
        row("get_stats(NULL)", (rc, errmsg()), rc == MISUSE);
        let rc = sqlalloc_fault_get_stats(std::ptr::null_mut());
        row(
            "fault_get_stats(NULL)",
            (rc, errmsg()),
            rc == MISUSE && errmsg().contains("NULL"),
        );
        let rc = sqlalloc_report(std::ptr::null());
        row("report(NULL)", (rc, errmsg()), rc == MISUSE);
        let mut buf = [0 as c_char; 16];
        let n = sqlalloc_report_to_buffer(std::ptr::null(), buf.as_mut_ptr(), 16);
        row("report_to_buffer(NULL, buf, 16)", (n, errmsg()), n == -1);
        let n = sqlalloc_report_to_buffer(c"json".as_ptr(), std::ptr::null_mut(), 16);
        row(
            "report_to_buffer(\"json\", NULL, 16)",
            (n, errmsg()),
            n == -1,
        );

        // -- install twice before initialize: the second wins ------------------------------------
        assert_eq!(install("system"), OK, "{}", errmsg());
        let rc = install("memsys5:heap=8M+fault");
        row(
            "install(system) then install(memsys5:heap=8M+fault)",
            (rc, installed_spec()),
            rc == OK && installed_spec() == "memsys5:heap=8M+fault",
        );

        // -- fault functions: bad arguments ---------------------------------------------------
        let calls: [(&str, CCall); 7] = [
            ("fault_arm(0, 1)", || sqlalloc_fault_arm(0, 1)),
            ("fault_arm(-5, 1)", || sqlalloc_fault_arm(-5, 1)),
            ("fault_arm(1, -1)", || sqlalloc_fault_arm(1, -1)),
            ("fault_arm_every(0)", || sqlalloc_fault_arm_every(0)),
            ("fault_arm_random(1, 1.5)", || {
                sqlalloc_fault_arm_random(1, 1.5)
            }),
            ("fault_arm_random(1, NaN)", || {
                sqlalloc_fault_arm_random(1, f64::NAN)
            }),
            ("fault_arm_random(1, -0.1)", || {
                sqlalloc_fault_arm_random(1, -0.1)
            }),
        ];
        for (what, call) in calls {
            let rc = call();
            row(what, (rc, errmsg()), rc == MISUSE && !errmsg().is_empty());
        }

        // -- the C methods table, as SQLite gets it (read before initialize) ---------------------
        let mut m: sq::sqlite3_mem_methods = std::mem::zeroed();
        assert_eq!(
            sq::sqlite3_config(sq::SQLITE_CONFIG_GETMALLOC, &mut m as *mut _),
            OK
        );
        let x_malloc = m.xMalloc.unwrap();
        let x_realloc = m.xRealloc.unwrap();
        let x_free = m.xFree.unwrap();
        let x_size = m.xSize.unwrap();
        let x_roundup = m.xRoundup.unwrap();
        assert_eq!(sq::sqlite3_initialize(), OK);
        let base = sqlalloc::stats();
        let p = x_malloc(0);
        row(
            "xMalloc(0) (memsys5:heap=8M)",
            x_size(p),
            !p.is_null() && x_size(p) > 0,
        );
        x_free(p);
        let p = x_malloc(-1);
        row("xMalloc(-1)", p, p.is_null());
        let p = x_malloc(c_int::MAX);
        row("xMalloc(INT_MAX) (8 MiB heap)", p, p.is_null());
        let p = x_malloc(100);
        let q = x_realloc(p, -5);
        row(
            "xRealloc(p, -5): NULL, p kept",
            q,
            q.is_null() && x_size(p) >= 100,
        );
        let q = x_realloc(p, c_int::MAX);
        row(
            "xRealloc(p, INT_MAX): NULL, p kept",
            q,
            q.is_null() && x_size(p) >= 100,
        );
        let q = x_realloc(p, 0);
        row("xRealloc(p, 0)", x_size(q), !q.is_null());
        x_free(q);
        let n = x_size(std::ptr::null_mut());
        row("xSize(NULL)", n, n == 0);
        x_free(std::ptr::null_mut());
        row("xFree(NULL)", "no effect", true);
        let n = x_roundup(-1);
        row("xRoundup(-1)", n, n == -1);
        let n = x_roundup(c_int::MAX);
        row("xRoundup(INT_MAX)", n, n == c_int::MAX);
        let s = sqlalloc::stats();
        row(
            "failed xMalloc/xRealloc calls counted",
            s.failed_calls - base.failed_calls,
            // xMalloc(INT_MAX) and xRealloc(p, INT_MAX); negative sizes stop at the C table.
            s.failed_calls - base.failed_calls == 2,
        );
        assert_eq!(
            (s.current_count, s.current_bytes),
            (base.current_count, base.current_bytes)
        );

        // -- through SQLite's own API -----------------------------------------------------------
        let base = sqlalloc::stats();
        for (what, p) in [
            ("sqlite3_malloc(0)", sq::sqlite3_malloc(0)),
            ("sqlite3_malloc64(0)", sq::sqlite3_malloc64(0)),
            ("sqlite3_malloc(-1)", sq::sqlite3_malloc(-1)),
        ] {
            row(what, p, p.is_null());
        }
        let refused_by_sqlite = sqlalloc::stats().malloc_calls;
        for (what, p) in [
            ("sqlite3_malloc(INT_MAX)", sq::sqlite3_malloc(c_int::MAX)),
            (
                "sqlite3_malloc64(2 GiB + 1)",
                sq::sqlite3_malloc64((2 << 30) + 1),
            ),
            (
                "sqlite3_malloc64(UINT64_MAX)",
                sq::sqlite3_malloc64(u64::MAX),
            ),
        ] {
            row(what, p, p.is_null());
        }
        row(
            "requests >= 0x7fffff00 never reach the allocator",
            sqlalloc::stats().malloc_calls - refused_by_sqlite,
            sqlalloc::stats().malloc_calls == refused_by_sqlite,
        );
        let p = sq::sqlite3_malloc64(0x7fff_0000);
        row(
            "sqlite3_malloc64(0x7fff0000) (8 MiB heap)",
            p,
            p.is_null() && sqlalloc::stats().failed_calls == base.failed_calls + 1,
        );
        let p = sq::sqlite3_malloc(100);
        p.cast::<u8>().write_bytes(0x3c, 100);
        let q = sq::sqlite3_realloc64(p, 3 << 30);
        let kept = std::slice::from_raw_parts(p.cast::<u8>(), 100)
            .iter()
            .all(|&b| b == 0x3c);
        row(
            "sqlite3_realloc64(p, 3 GiB): NULL, p kept",
            (q, kept),
            q.is_null() && kept,
        );
        let q = sq::sqlite3_realloc(p, 0);
        let s = sqlalloc::stats();
        row(
            "sqlite3_realloc(p, 0): frees p, returns NULL",
            (q, s.current_count - base.current_count),
            q.is_null() && s.current_count == base.current_count,
        );
        sq::sqlite3_free(std::ptr::null_mut());

        // -- the fault layer through SQLite, C and Rust -----------------------------------------
        assert_eq!(sqlalloc_fault_arm(1, 1), OK);
        let p = sq::sqlite3_malloc(64);
        let mut fs = FaultStats::default();
        assert_eq!(sqlalloc_fault_get_stats(&mut fs), OK);
        row(
            "fault_arm(1,1), then sqlite3_malloc(64)",
            (p, fs.injected, fs.calls),
            p.is_null() && fs.injected == 1 && fs.calls == 1,
        );
        let p = sq::sqlite3_malloc(64);
        row("... the next sqlite3_malloc(64)", p, !p.is_null());
        sq::sqlite3_free(p);
        assert_eq!(sqlalloc_fault_arm_every(2), OK);
        let got: Vec<bool> = (0..6)
            .map(|_| {
                let p = sq::sqlite3_malloc(8);
                sq::sqlite3_free(p);
                p.is_null()
            })
            .collect();
        row(
            "fault_arm_every(2): six mallocs fail",
            &got,
            got == [false, true, false, true, false, true],
        );
        assert_eq!(sqlalloc_fault_disarm(), OK);
        assert_eq!(sqlalloc_fault_injected(), 3);
        sqlalloc::fault::arm(sqlalloc::FaultPlan::Nth { nth: 2, repeat: 0 }).unwrap();
        let a = sq::sqlite3_malloc(8);
        let b = sq::sqlite3_malloc(8);
        let c = sq::sqlite3_malloc(8);
        row(
            "Rust fault::arm(nth=2, repeat=0)",
            (a.is_null(), b.is_null(), c.is_null()),
            !a.is_null() && b.is_null() && c.is_null(),
        );
        sq::sqlite3_free(a);
        sqlalloc::fault::disarm().unwrap();
        assert_eq!(sqlalloc::fault::injected().unwrap(), 2);
        let st = sqlalloc::fault::stats().unwrap();
        row(
            "SQLite's benign-malloc hooks registered",
            st.hooks,
            st.hooks,
        );

        // -- install after initialize ------------------------------------------------------------
        let before = sqlalloc::stats();
        let rc = install("system");
        row(
            "install(system) after sqlite3_initialize",
            (rc, errmsg()),
            rc == MISUSE
                && errmsg().contains("already initialized")
                && installed_spec() == "memsys5:heap=8M+fault"
                && sqlalloc::stats().malloc_calls == before.malloc_calls,
        );
        assert_eq!(sq::sqlite3_shutdown(), OK);

        // -- a spec without a fault layer -------------------------------------------------------
        assert_eq!(install("system"), OK);
        let rc = sqlalloc_fault_arm(1, 1);
        row(
            "fault_arm(1,1) on \"system\" (no fault layer)",
            (rc, errmsg()),
            rc == ERROR && errmsg().contains("no fault layer"),
        );
        let n = sqlalloc_fault_injected();
        row("fault_injected() on \"system\"", (n, errmsg()), n == -1);

        // -- heaps too small for one block -----------------------------------------------------
        for spec in [
            "memsys5:heap=1",
            "memsys5:heap=16",
            "memsys5:heap=1K,min=4K",
            "tlsf:heap=8",
            "memsys3:heap=1",
            "memsys3:heap=64",
        ] {
            let rc = install(spec);
            let init = sq::sqlite3_initialize();
            row(
                &format!("install({spec}); sqlite3_initialize()"),
                (rc, init),
                rc == OK && init == NOMEM,
            );
            sq::sqlite3_shutdown();
        }
        // A heap the machine cannot give (1 PiB: past a 47-bit address space) is refused at
        // install; nothing changes.
        let rc = install("memsys5:heap=1048576G");
        row(
            "install(memsys5:heap=1048576G)",
            (rc, errmsg()),
            rc == NOMEM
                && errmsg().contains("cannot allocate a heap")
                && installed_spec() == "memsys3:heap=64",
        );
        // and SQLite works again once a usable allocator is installed
        assert_eq!(install("memsys5:heap=16K"), OK);
        let init = sq::sqlite3_initialize();
        row(
            "then install(memsys5:heap=16K); sqlite3_initialize()",
            init,
            init == OK,
        );
        let p = sq::sqlite3_malloc(100);
        assert!(!p.is_null());
        sq::sqlite3_free(p);
        assert_eq!(sq::sqlite3_shutdown(), OK);
        let n = sqlalloc_leak_report(-1);
        row("leak_report(-1) (bad fd)", (n, errmsg()), n == -1);
    }
}
