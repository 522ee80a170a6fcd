//! # libsqlalloc_preload.so
//!
//! `LD_PRELOAD=libsqlalloc_preload.so SQLALLOC=spec program` runs an unmodified program with the
//! sqlalloc allocator named by `spec` installed into its SQLite, and `SQLALLOC_REPORT=stderr`,
//! `json:PATH` or `prometheus:PATH` writes a report when the program exits.
//!
//! # How it gets in first
//!
//! An allocator can only be installed before SQLite initializes, and SQLite initializes itself
//! from inside its own functions (`sqlite3_open`, `sqlite3_vfs_find`, `sqlite3_malloc`, ...),
//! which all call `sqlite3_initialize` through the PLT. This library defines
//! `sqlite3_initialize`; a preloaded library is first in the global lookup scope, which is
//! searched first for every object's relocations — also for a `libsqlite3` that the program
//! `dlopen`s later with `RTLD_LOCAL` — so every such call, inside SQLite or from the program,
//! lands here first. The first call:
//!
//! 1. finds the real `sqlite3_initialize` of the SQLite that called (below);
//! 2. reads `SQLALLOC` (unset or empty: do nothing more, ever), checks that this SQLite has never
//!    allocated (`sqlite3_status64`: if it has, someone initialized it without going through
//!    here, and it is left alone), parses `SQLALLOC_REPORT`;
//! 3. installs the allocator with `sqlalloc::install`, the `sqlite3_config` it calls being the
//!    one of that SQLite (`sqlalloc::set_sqlite3_config`: this library never references
//!    `sqlite3_config` itself, so it loads in programs that have no SQLite yet);
//! 4. calls the real `sqlite3_initialize`. If that fails (a heap too small for the backend to
//!    initialize, say), SQLite is shut down, its default allocator is put back and it is
//!    initialized again: the program runs as it would without this library.
//!
//! Every problem costs one line on stderr naming the offending part, and the program goes on with
//! SQLite's default allocator. Later calls go straight to the real function.
//!
//! ## Which SQLite called
//!
//! `sqlite3_initialize` is entered through a two-instruction trampoline that passes its return
//! address (x86-64 and AArch64; elsewhere no address, and the fallbacks below decide). The object
//! containing that address (`dladdr`) is opened again with `RTLD_NOLOAD`, and `dlsym` on that
//! handle searches the object and its dependencies only, never this library: for a call from
//! inside `libsqlite3` it yields that library's own function, for a call from a language binding
//! linked against `libsqlite3.so.0` the one the binding was linked with. Fallbacks: `RTLD_NEXT`
//! (a program linked with `-lsqlite3`), then an already loaded `libsqlite3.so.0`. So a process
//! with two SQLite libraries (a program's and a binding's bundled one) forwards each call to the
//! right one; the allocator goes into the first one that initializes, the other keeps its
//! default (one line says so).
//!
//! The SQLite that got the allocator is pinned (its `RTLD_NOLOAD` handle is kept open): SQLite
//! holds this library's functions and this library holds SQLite's, until the process ends. Calls
//! from inside its mapped range are forwarded without any lookup.
//!
//! # The exit report
//!
//! Written from this library's `.fini_array` destructor, which the dynamic loader runs after every
//! `atexit` handler of the program (so after the program's own clean-up) while SQLite is still
//! mapped; `sqlite3_memory_used()` is read at the same moment as the counters. Not written by a
//! forked child that exits (the process id must be the one that installed), nor on `_exit`,
//! `quick_exit` or a fatal signal. `%p` in the path stands for the process id.
//!
//! # What it never does
//!
//! It replaces only SQLite's allocator (`SQLITE_CONFIG_MALLOC`), never `malloc`: the only symbols
//! it defines are `sqlite3_initialize`, `sqlite3_open`, `sqlite3_open16`, `sqlite3_open_v2`,
//! `sqlite3_close`, `sqlite3_close_v2` (each forwarded to the caller's SQLite; the open and close
//! functions keep the registry of the per-connection breakdown) and the `sqlalloc_*` functions of
//! the C API (so a program
//! running under it can also call `sqlalloc_report` through `dlsym`). Linking `libsqlalloc.a`
//! into a program interposes nothing; that library has no `sqlite3_initialize`.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

// Cargo unifies features across the packages of one build: built together with the root package
// (`cargo build --workspace`), the core would get its `link` feature, reference sqlite3_config
// directly, and this library would fail to load in programs that dlopen SQLite. Refuse to build
// that way: build it alone (`make preload`, i.e. `cargo build --release -p sqlalloc_preload`).
const _: () = assert!(
    !sqlalloc::sqlite::LINKED,
    "build sqlalloc_preload alone (cargo build -p sqlalloc_preload), not with --workspace: the core's `link` feature would leak in"
);

use sqlalloc::report::{FdWriter, Format, Report, Target};
use sqlalloc::sqlite::{
    ConfigFn, ConnectionFunctions, Functions, MemoryUsedFn, Sqlite3MemMethods, Status64Fn,
    SQLITE_CONFIG_MALLOC, SQLITE_OK,
};
use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Once, OnceLock};

/// `SQLITE_CONFIG_GETMALLOC`.
const SQLITE_CONFIG_GETMALLOC: c_int = 5;
use sqlalloc::sqlite::{SQLITE_STATUS_MALLOC_COUNT, SQLITE_STATUS_MEMORY_USED};

extern "C" {
    /// glibc's `char *secure_getenv(const char *name)` (2.17 and later; not in the libc crate).
    fn secure_getenv(name: *const std::ffi::c_char) -> *mut std::ffi::c_char;
}

/// `int sqlite3_initialize(void)` and `int sqlite3_shutdown(void)`.
type InitFn = unsafe extern "C" fn() -> c_int;

// ---------------------------------------------------------------------------------------------
// The interposer.

/// The SQLite that got the allocator: calls from inside `[lo, hi)` go straight to `init`.
struct Primary {
    lo: usize,
    hi: usize,
    init: InitFn,
    path: String,
}

/// Set once, after the setup finished and only when an allocator was installed.
static PRIMARY: OnceLock<Primary> = OnceLock::new();
/// The one-time setup (reading `SQLALLOC`, installing).
static SETUP: Once = Once::new();
/// Set when a second SQLite has been told it keeps its default allocator.
static OTHER_SQLITE_NOTED: Once = Once::new();

thread_local! {
    /// True while this thread runs the setup: the real `sqlite3_initialize` calls itself (through
    /// this interposer) and those calls must go straight through.
    static IN_SETUP: Cell<bool> = const { Cell::new(false) };
}

/// SQLite's `sqlite3_initialize`, as seen by every caller in the process. Passes the return
/// address to `initialize_from` and tail-jumps there, so that function returns straight to the
/// caller.
#[cfg(target_arch = "x86_64")]
// SAFETY: the body takes the return address from the top of the stack (where `call` put it) into
// the first argument register and jumps, leaving the stack exactly as the caller made it, so
// `initialize_from` runs as if called directly by our caller and returns to it.
#[unsafe(naked)]
#[no_mangle]
pub extern "C" fn sqlite3_initialize() -> c_int {
    core::arch::naked_asm!(
        "mov rdi, qword ptr [rsp]",
        "jmp {inner}",
        inner = sym initialize_from,
    )
}

/// SQLite's `sqlite3_initialize` (see the x86-64 version).
#[cfg(target_arch = "aarch64")]
// SAFETY: the link register holds the return address; it is copied into the first argument
// register and the branch leaves sp and lr untouched, so `initialize_from` returns to our caller.
#[unsafe(naked)]
#[no_mangle]
pub extern "C" fn sqlite3_initialize() -> c_int {
    core::arch::naked_asm!("mov x0, x30", "b {inner}", inner = sym initialize_from)
}

/// SQLite's `sqlite3_initialize` (no return address on this architecture: the fallbacks decide
/// which SQLite is meant).
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
#[no_mangle]
pub extern "C" fn sqlite3_initialize() -> c_int {
    initialize_from(std::ptr::null())
}

/// Our own `sqlite3_initialize`, to tell it apart from SQLite's in lookups.
fn own_initialize() -> usize {
    sqlite3_initialize as *const () as usize
}

/// The body of the interposer: `caller` is the return address of the call (or null).
extern "C" fn initialize_from(caller: *const c_void) -> c_int {
    let at = caller as usize;
    if let Some(p) = PRIMARY.get() {
        if (p.lo..p.hi).contains(&at) {
            // SAFETY: `p.init` is the pinned SQLite's sqlite3_initialize.
            return unsafe { (p.init)() };
        }
    }
    let Some(sq) = Sqlite::of_caller(caller) else {
        say("a call of sqlite3_initialize found no SQLite library to forward it to");
        return sqlalloc::sqlite::SQLITE_ERROR;
    };
    if !IN_SETUP.with(Cell::get) {
        SETUP.call_once(|| {
            IN_SETUP.with(|f| f.set(true));
            setup(&sq);
            IN_SETUP.with(|f| f.set(false));
        });
        if let Some(p) = PRIMARY.get() {
            if p.init as usize != sq.init as usize {
                OTHER_SQLITE_NOTED.call_once(|| {
                    say(&format!(
                        "another SQLite ({}) keeps its default allocator; SQLALLOC applies to {}",
                        sq.path, p.path
                    ))
                });
            }
        }
    }
    // SAFETY: `sq.init` is the caller's SQLite's sqlite3_initialize (found by `of_caller`).
    unsafe { (sq.init)() }
}

// ---------------------------------------------------------------------------------------------
// sqlite3_open* and sqlite3_close*: the per-connection breakdown.

/// A trampoline that passes its return address as the argument after the real ones (register
/// `$reg` on x86-64, `$areg` on AArch64) and tail-jumps to `$inner`, which returns to the caller.
macro_rules! trampoline {
    ($(#[$doc:meta])* $name:ident ( $($arg:ident : $ty:ty),* ) => $inner:ident, $reg:literal, $areg:literal) => {
        $(#[$doc])*
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the return address is read from the top of the stack (where `call` put it) into
        // the first unused argument register and the jump leaves the stack as the caller made it,
        // so the inner function runs as if called directly and returns to the caller.
        #[unsafe(naked)]
        #[no_mangle]
        pub extern "C" fn $name($($arg: $ty),*) -> c_int {
            core::arch::naked_asm!(concat!("mov ", $reg, ", qword ptr [rsp]"), "jmp {inner}", inner = sym $inner)
        }
        $(#[$doc])*
        #[cfg(target_arch = "aarch64")]
        // SAFETY: the link register holds the return address; it is copied into the first unused
        // argument register and the branch leaves sp and lr untouched.
        #[unsafe(naked)]
        #[no_mangle]
        pub extern "C" fn $name($($arg: $ty),*) -> c_int {
            core::arch::naked_asm!(concat!("mov ", $areg, ", x30"), "b {inner}", inner = sym $inner)
        }
        $(#[$doc])*
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        #[no_mangle]
        pub extern "C" fn $name($($arg: $ty),*) -> c_int {
            $inner($($arg,)* std::ptr::null())
        }
    };
}

trampoline!(
    /// SQLite's `sqlite3_open`: forwarded to the caller's SQLite; a connection of the SQLite that
    /// got the allocator is tracked (sqlalloc's per-connection breakdown).
    sqlite3_open(_filename: *const c_char, _db: *mut *mut c_void) => open_from, "rdx", "x2"
);
trampoline!(
    /// SQLite's `sqlite3_open16` (see `sqlite3_open`).
    sqlite3_open16(_filename: *const c_void, _db: *mut *mut c_void) => open16_from, "rdx", "x2"
);
trampoline!(
    /// SQLite's `sqlite3_open_v2` (see `sqlite3_open`).
    sqlite3_open_v2(_filename: *const c_char, _db: *mut *mut c_void, _flags: c_int, _vfs: *const c_char) => open_v2_from, "r8", "x4"
);
trampoline!(
    /// SQLite's `sqlite3_close`: the connection leaves the breakdown, then SQLite closes it (if
    /// SQLite refuses, `SQLITE_BUSY`, it is tracked again).
    sqlite3_close(_db: *mut c_void) => close_from, "rsi", "x1"
);
trampoline!(
    /// SQLite's `sqlite3_close_v2` (see `sqlite3_close`).
    sqlite3_close_v2(_db: *mut c_void) => close_v2_from, "rsi", "x1"
);

type OpenFn = unsafe extern "C" fn(*const c_char, *mut *mut c_void) -> c_int;
type Open16Fn = unsafe extern "C" fn(*const c_void, *mut *mut c_void) -> c_int;
type OpenV2Fn =
    unsafe extern "C" fn(*const c_char, *mut *mut c_void, c_int, *const c_char) -> c_int;
type CloseFn = unsafe extern "C" fn(*mut c_void) -> c_int;

/// The function `name` of the SQLite the code at `caller` uses, and that SQLite's
/// `sqlite3_initialize` (to tell, with [`is_primary`], whether it is the one that got the
/// allocator). `None` (and one line) when no SQLite defines it.
fn resolve(caller: *const c_void, name: &CStr) -> Option<(*mut c_void, usize)> {
    let Some(sq) = Sqlite::of_caller(caller) else {
        say(&format!(
            "a call of {} found no SQLite library to forward it to",
            name.to_string_lossy()
        ));
        return None;
    };
    let init = sq.init as usize;
    let (h, scope, base) = sq.scope()?;
    let f = find_in(scope, base, name);
    close(h);
    let Some(f) = f else {
        say(&format!(
            "{} not found in {}",
            name.to_string_lossy(),
            sq.path
        ));
        return None;
    };
    Some((f, init))
}

/// Whether the SQLite whose `sqlite3_initialize` is at `init` is the one that got the allocator.
/// Asked after the open, not before: a program's first open initializes SQLite, and it is that
/// initialization which installs the allocator.
fn is_primary(init: usize) -> bool {
    PRIMARY.get().is_some_and(|p| p.init as usize == init)
}

/// After an open: track the new connection when it belongs to the SQLite that got the allocator.
fn opened(rc: c_int, db: *mut *mut c_void, primary: bool) {
    if rc != SQLITE_OK || !primary || db.is_null() {
        return;
    }
    // SAFETY: `db` is the out-parameter SQLite just wrote.
    let db = unsafe { *db };
    if !db.is_null() {
        // SAFETY: a connection SQLite just opened for this thread, of the configured SQLite; the
        // close interposers untrack it before SQLite closes it.
        let _ = unsafe { sqlalloc::connections::track(db, None) };
    }
}

/// An open: forward to the caller's SQLite (`call` gets its function `name`), then track.
fn opening(
    caller: *const c_void,
    name: &CStr,
    db: *mut *mut c_void,
    call: impl FnOnce(*mut c_void) -> c_int,
) -> c_int {
    let Some((f, init)) = resolve(caller, name) else {
        return sqlalloc::sqlite::SQLITE_ERROR;
    };
    let rc = call(f);
    opened(rc, db, is_primary(init));
    rc
}

extern "C" fn open_from(
    filename: *const c_char,
    db: *mut *mut c_void,
    caller: *const c_void,
) -> c_int {
    // SAFETY: `f` is that SQLite's sqlite3_open, called with the caller's own arguments.
    opening(caller, c"sqlite3_open", db, |f| unsafe {
        to_fn::<OpenFn>(f)(filename, db)
    })
}

extern "C" fn open16_from(
    filename: *const c_void,
    db: *mut *mut c_void,
    caller: *const c_void,
) -> c_int {
    // SAFETY: `f` is that SQLite's sqlite3_open16, called with the caller's own arguments.
    opening(caller, c"sqlite3_open16", db, |f| unsafe {
        to_fn::<Open16Fn>(f)(filename, db)
    })
}

extern "C" fn open_v2_from(
    filename: *const c_char,
    db: *mut *mut c_void,
    flags: c_int,
    vfs: *const c_char,
    caller: *const c_void,
) -> c_int {
    // SAFETY: `f` is that SQLite's sqlite3_open_v2, called with the caller's own arguments.
    opening(caller, c"sqlite3_open_v2", db, |f| unsafe {
        to_fn::<OpenV2Fn>(f)(filename, db, flags, vfs)
    })
}

/// A close: untrack, close, and track again if SQLite kept the connection open.
fn closing(db: *mut c_void, caller: *const c_void, name: &CStr) -> c_int {
    let Some((f, _)) = resolve(caller, name) else {
        return sqlalloc::sqlite::SQLITE_ERROR;
    };
    let label = if db.is_null() {
        None
    } else {
        sqlalloc::connections::untrack(db).ok()
    };
    // SAFETY: `f` is that SQLite's sqlite3_close or sqlite3_close_v2, called with the caller's
    // own argument.
    let rc = unsafe { to_fn::<CloseFn>(f)(db) };
    if rc != SQLITE_OK {
        if let Some(label) = label {
            // SAFETY: SQLite refused to close it (SQLITE_BUSY): still open, used by this thread.
            let _ = unsafe { sqlalloc::connections::track(db, Some(&label)) };
        }
    }
    rc
}

extern "C" fn close_from(db: *mut c_void, caller: *const c_void) -> c_int {
    closing(db, caller, c"sqlite3_close")
}

extern "C" fn close_v2_from(db: *mut c_void, caller: *const c_void) -> c_int {
    closing(db, caller, c"sqlite3_close_v2")
}

/// One line on stderr, written at once.
fn say(msg: &str) {
    SAID.store(true, Ordering::Relaxed);
    let line = format!("sqlalloc: {msg}\n");
    let _ = FdWriter(2).write_all(line.as_bytes());
}

/// Set once a line was written on stderr (the exit hook's "nothing configured" line is then
/// not needed: the reason was given).
static SAID: AtomicBool = AtomicBool::new(false);

/// An environment variable, read with `secure_getenv`: in a set-user-ID or set-group-ID program
/// (`AT_SECURE`) it reads as unset, as glibc's own `MALLOC_*` variables do, so that whoever runs
/// such a program cannot make it open files or sockets of their choosing.
enum Env {
    Unset,
    /// Set, but empty or blank.
    Empty,
    Value(String),
    NotUnicode,
}

fn env(name: &CStr) -> Env {
    // SAFETY: `name` is NUL-terminated; secure_getenv returns NULL or a pointer into the
    // environment, valid until the environment is changed, and it is copied at once.
    let p = unsafe { secure_getenv(name.as_ptr()) };
    if p.is_null() {
        return Env::Unset;
    }
    // SAFETY: non-null: a NUL-terminated string of the environment (above).
    match unsafe { CStr::from_ptr(p) }.to_str() {
        Ok(v) if v.trim().is_empty() => Env::Empty,
        Ok(v) => Env::Value(v.to_string()),
        Err(_) => Env::NotUnicode,
    }
}

/// What the exit report needs.
struct Active {
    target: Target,
    pid: u32,
}

/// Set when an allocator is installed and in use and a report was asked for.
static ACTIVE: OnceLock<Active> = OnceLock::new();

/// The one-time setup for the first SQLite that initializes.
fn setup(sq: &Sqlite) {
    let spec = match env(c"SQLALLOC") {
        Env::Value(s) => s,
        Env::Unset | Env::Empty => return,
        Env::NotUnicode => {
            say("SQLALLOC is not valid UTF-8; SQLite keeps its default allocator");
            return;
        }
    };
    let keep = "SQLite keeps its default allocator";
    let Some(lib) = sq.open() else {
        say(&format!(
            "SQLALLOC=\"{spec}\": cannot find sqlite3_config in {}; {keep}",
            sq.path
        ));
        return;
    };
    if lib.has_allocated() {
        say(&format!(
            "SQLALLOC=\"{spec}\": SQLite ({}) was already initialized by someone else; {keep}",
            sq.path
        ));
        return;
    }
    let target = match env(c"SQLALLOC_REPORT") {
        Env::Unset | Env::Empty => None,
        Env::Value(t) => match Target::parse(&t) {
            Ok(t) => Some(t),
            Err(e) => {
                say(&format!("SQLALLOC_REPORT: {e}; no report will be written"));
                None
            }
        },
        Env::NotUnicode => {
            say("SQLALLOC_REPORT is not valid UTF-8; no report will be written");
            None
        }
    };
    // SAFETY: `lib.config` is the sqlite3_config of the SQLite this setup installs into, and that
    // library is pinned (`lib.handle` is never closed), so it stays valid for the process.
    if !unsafe { sqlalloc::set_sqlite3_config(lib.config) } {
        say(&format!(
            "SQLALLOC=\"{spec}\": another sqlite3_config was already set up; {keep}"
        ));
        return;
    }
    let saved = lib.current_methods();
    if let Err(e) = sqlalloc::install(&spec) {
        say(&format!("SQLALLOC=\"{spec}\": {e}; {keep}"));
        return;
    }
    // SAFETY: `sq.init` is this SQLite's sqlite3_initialize. Calls it makes to itself come back
    // through the interposer, which forwards them because IN_SETUP is set on this thread.
    let rc = unsafe { (sq.init)() };
    if rc != SQLITE_OK {
        lib.restore(&saved, sq.init);
        say(&format!(
            "SQLALLOC=\"{spec}\": SQLite could not initialize with this allocator ({}); {keep}",
            result_name(rc)
        ));
        return;
    }
    // SAFETY: the functions are this SQLite's (found in its object by `Sqlite::open`), pinned
    // with the library.
    unsafe { sqlalloc::sqlite::set_functions(lib.functions) };
    let _ = PRIMARY.set(Primary {
        lo: lib.lo,
        hi: lib.hi,
        init: sq.init,
        path: sq.path.clone(),
    });
    start_live(target.as_ref());
    if let Some(target) = target {
        let _ = ACTIVE.set(Active {
            target,
            pid: std::process::id(),
        });
    }
}

/// Once SQLite runs with the allocator: the scrape endpoint (`SQLALLOC_LISTEN`) and the periodic
/// report (`SQLALLOC_REPORT_INTERVAL`, rewriting the `SQLALLOC_REPORT` file). A bad value costs
/// one line; the program runs on.
fn start_live(target: Option<&Target>) {
    match env(c"SQLALLOC_LISTEN") {
        Env::Unset => {}
        Env::Empty => {
            say("SQLALLOC_LISTEN is empty: give [HOST:]PORT, for instance 9187; no endpoint")
        }
        Env::NotUnicode => say("SQLALLOC_LISTEN is not valid UTF-8; no endpoint"),
        Env::Value(addr) => {
            if let Err(e) = sqlalloc::serve(&addr) {
                say(&format!("SQLALLOC_LISTEN=\"{addr}\": {e}; no endpoint"));
            }
        }
    }
    let every = match env(c"SQLALLOC_REPORT_INTERVAL") {
        Env::Unset => return,
        Env::Empty => {
            say("SQLALLOC_REPORT_INTERVAL is empty: give a whole number of seconds; the report is written at exit only");
            return;
        }
        Env::NotUnicode => {
            say("SQLALLOC_REPORT_INTERVAL is not valid UTF-8; the report is written at exit only");
            return;
        }
        Env::Value(v) => match sqlalloc::periodic::parse_interval(&v) {
            Ok(n) => n,
            Err(e) => {
                say(&format!(
                    "SQLALLOC_REPORT_INTERVAL: {e}; the report is written at exit only"
                ));
                return;
            }
        },
    };
    let file = match target {
        Some(t @ Target::File(..)) => t,
        _ => {
            say("SQLALLOC_REPORT_INTERVAL needs SQLALLOC_REPORT=json:PATH or prometheus:PATH; ignored");
            return;
        }
    };
    let spelled = match file {
        Target::File(Format::Json, p) => format!("json:{p}"),
        Target::File(_, p) => format!("prometheus:{p}"),
        Target::Stderr => unreachable!("checked above"),
    };
    if let Err(e) = sqlalloc::report_every(&spelled, every) {
        say(&format!(
            "SQLALLOC_REPORT_INTERVAL: {e}; the report is written at exit only"
        ));
    }
}

/// SQLite's name of a primary result code.
fn result_name(rc: c_int) -> String {
    let name = match rc & 0xff {
        1 => "SQLITE_ERROR",
        7 => "SQLITE_NOMEM",
        21 => "SQLITE_MISUSE",
        _ => return format!("SQLite error {rc}"),
    };
    name.to_string()
}

// ---------------------------------------------------------------------------------------------
// The exit report.

/// Run by the dynamic loader when the process exits (after the program's `atexit` handlers).
extern "C" fn at_exit() {
    if PRIMARY.get().is_none() {
        say_if_nothing_configured();
        return;
    }
    // A periodic report (here, or in a child forked after it started) writes its last file.
    if let Some(res) = sqlalloc::report_final() {
        if let Err(e) = res {
            say(&format!("cannot write the report: {e}"));
        }
        return;
    }
    let Some(a) = ACTIVE.get() else { return };
    if a.pid != std::process::id() {
        return;
    }
    let Some(report) = Report::capture_installed() else {
        return;
    };
    if let Err(e) = report.write_to(&a.target) {
        say(&format!("cannot write the report: {e}"));
    }
}

/// At exit, when `SQLALLOC` is set, no SQLite was configured and nothing was said yet: one line
/// saying so, and why that happens — when the process holds a SQLite the preload could not reach:
/// a loaded object whose file name mentions sqlite (better-sqlite3's `better_sqlite3.node`, say),
/// or a program file that contains SQLite's file-header string (a SQLite compiled into the
/// program: Go's go-sqlite3, rusqlite `bundled`). Processes with no SQLite at all (the shells,
/// `sed`s and wrappers a preloaded environment also reaches) stay silent.
fn say_if_nothing_configured() {
    if SAID.load(Ordering::Relaxed) || !matches!(env(c"SQLALLOC"), Env::Value(_)) {
        return;
    }
    let Some(seen) = unreached_sqlite() else {
        return;
    };
    say(&format!(
        "SQLALLOC is set but no SQLite in this process was configured, although it has one \
         ({seen}): that SQLite never called sqlite3_initialize through the dynamic linker, as a \
         SQLite compiled into the program or a binding with hidden symbols does (better-sqlite3, \
         rusqlite `bundled`, go-sqlite3). Link the system libsqlite3 instead, or install sqlalloc \
         from the program (docs/preload.md, \"Which programs it reaches\")"
    ));
}

/// Where this process holds a SQLite the preload did not reach, if it does: a loaded object named
/// like one, or the program file containing SQLite's magic string.
fn unreached_sqlite() -> Option<String> {
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: dl_iterate_phdr passes a valid info for the call; `data` is the Option below.
        let (info, found) = unsafe { (&*info, &mut *data.cast::<Option<String>>()) };
        let name = if info.dlpi_name.is_null() {
            String::new()
        } else {
            // SAFETY: the loader's NUL-terminated object name.
            unsafe { CStr::from_ptr(info.dlpi_name) }
                .to_string_lossy()
                .into_owned()
        };
        let base = name.rsplit('/').next().unwrap_or("").to_ascii_lowercase();
        if base.contains("sqlite") && !base.contains("sqlalloc") {
            *found = Some(format!("{name} is loaded"));
            return 1;
        }
        0
    }
    let mut found: Option<String> = None;
    // SAFETY: `visit` matches the callback type and only uses `found` during the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&mut found as *mut Option<String>).cast()) };
    found.or_else(|| {
        let exe = std::fs::read_link("/proc/self/exe").ok()?;
        file_contains(&exe, b"SQLite format 3\0")
            .then(|| format!("{} contains a SQLite", exe.display()))
    })
}

/// Whether the first 512 MiB of the file at `path` contain `needle` (read 1 MiB at a time).
fn file_contains(path: &std::path::Path, needle: &[u8]) -> bool {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut buf = vec![0u8; (1 << 20) + needle.len()];
    let mut kept = 0;
    for _ in 0..512 {
        let n = match f.read(&mut buf[kept..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        let have = kept + n;
        if buf[..have].windows(needle.len()).any(|w| w == needle) {
            return true;
        }
        // Keep the tail, in case the needle straddles two reads.
        kept = (needle.len() - 1).min(have);
        buf.copy_within(have - kept..have, 0);
    }
    false
}

#[used]
#[link_section = ".fini_array"]
static AT_EXIT: extern "C" fn() = at_exit;

// ---------------------------------------------------------------------------------------------
// Finding SQLite.

/// A SQLite library found in the process: its `sqlite3_initialize` and where it lives.
struct Sqlite {
    init: InitFn,
    path: String,
    file: CString,
}

/// The functions of the SQLite the setup installs into, from a pinned handle.
struct Library {
    #[allow(dead_code)] // kept open on purpose: pins the library
    handle: *mut c_void,
    config: ConfigFn,
    shutdown: Option<InitFn>,
    /// `sqlite3_memory_used`, `sqlite3_status64` and the connection functions.
    functions: Functions,
    lo: usize,
    hi: usize,
}

/// Look up `name` in `handle` (a dlopen handle, `RTLD_NEXT` or `RTLD_DEFAULT`).
fn lookup(handle: *mut c_void, name: &CStr) -> *mut c_void {
    // SAFETY: `name` is NUL-terminated; dlsym accepts any handle value returned by dlopen or the
    // pseudo-handles, and returns null when the symbol is not found.
    unsafe { libc::dlsym(handle, name.as_ptr()) }
}

/// A function pointer of type `F` from a `dlsym` result.
///
/// # Safety
/// `p` must be non-null and point to a function whose C type is `F` (an `extern "C" fn` type).
unsafe fn to_fn<F: Copy>(p: *mut c_void) -> F {
    assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
    // SAFETY: `F` is a function pointer type of the same size as `p` (checked), and `p` points to
    // a function of that type (caller's contract).
    unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) }
}

/// `name` looked up in `scope`, if it is defined in the object loaded at `base` (never this
/// library's own interposers, nor another library's function of that name).
fn find_in(scope: *mut c_void, base: usize, name: &CStr) -> Option<*mut c_void> {
    let p = lookup(scope, name);
    (!p.is_null() && object_of(p.cast_const()).is_some_and(|(_, b)| b == base)).then_some(p)
}

/// `dladdr(addr)`: the file name and base address of the object containing `addr`.
fn object_of(addr: *const c_void) -> Option<(CString, usize)> {
    // SAFETY: an all-zero Dl_info (null pointers) is a valid value of this plain C struct.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only compares `addr` with the loaded objects' ranges; `info` is writable.
    if unsafe { libc::dladdr(addr, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dladdr returned a NUL-terminated name owned by the loader.
    let name = unsafe { CStr::from_ptr(info.dli_fname) }.to_owned();
    Some((name, info.dli_fbase as usize))
}

/// `dlopen(file, RTLD_NOLOAD | RTLD_LAZY)`: a new reference to an already loaded object, or null.
fn open_loaded(file: &CStr) -> *mut c_void {
    // SAFETY: `file` is NUL-terminated; RTLD_NOLOAD never loads anything (so runs no constructor).
    unsafe { libc::dlopen(file.as_ptr(), libc::RTLD_NOLOAD | libc::RTLD_LAZY) }
}

fn close(handle: *mut c_void) {
    if !handle.is_null() {
        // SAFETY: `handle` came from a successful dlopen and is closed once.
        unsafe { libc::dlclose(handle) };
    }
}

impl Sqlite {
    /// The SQLite whose `sqlite3_initialize` the code at `caller` meant to call.
    fn of_caller(caller: *const c_void) -> Option<Sqlite> {
        let own = own_initialize();
        let usable = |f: *mut c_void| !f.is_null() && f as usize != own;
        let name = c"sqlite3_initialize";
        if !caller.is_null() {
            if let Some((file, _)) = object_of(caller) {
                let h = open_loaded(&file);
                if !h.is_null() {
                    let f = lookup(h, name);
                    close(h);
                    if usable(f) {
                        return Sqlite::from_fn(f);
                    }
                }
            }
        }
        let f = lookup(libc::RTLD_NEXT, name);
        if usable(f) {
            return Sqlite::from_fn(f);
        }
        let h = open_loaded(c"libsqlite3.so.0");
        if !h.is_null() {
            let f = lookup(h, name);
            close(h);
            if usable(f) {
                return Sqlite::from_fn(f);
            }
        }
        None
    }

    fn from_fn(f: *mut c_void) -> Option<Sqlite> {
        let (file, _) = object_of(f)?;
        // SAFETY: `f` is a non-null `sqlite3_initialize` exported by a SQLite library (not ours),
        // whose C type is `int (void)`.
        let init = unsafe { to_fn::<InitFn>(f) };
        Some(Sqlite {
            init,
            path: file.to_string_lossy().into_owned(),
            file,
        })
    }

    /// Open (and pin) this SQLite and find the functions the setup and the report need, all
    /// defined in the same object as `init`.
    /// A new handle on this SQLite's object (null when it cannot be reopened by name: close it
    /// with [`close`]), the scope to look its symbols up in, and the object's base address.
    fn scope(&self) -> Option<(*mut c_void, *mut c_void, usize)> {
        let (_, base) = object_of(self.init as *const c_void)?;
        let h = open_loaded(&self.file);
        // A SQLite built into the main program: it cannot be reopened by name; its symbols are
        // found through the global scope (and checked to be in the same object by `find_in`).
        let scope = if h.is_null() { libc::RTLD_DEFAULT } else { h };
        Some((h, scope, base))
    }

    fn open(&self) -> Option<Library> {
        let init_at = self.init as usize;
        let (h, scope, base) = self.scope()?;
        let find = |name: &CStr| find_in(scope, base, name);
        let Some(config) = find(c"sqlite3_config") else {
            close(h);
            return None;
        };
        let (lo, hi) = mapped_range(init_at).unwrap_or((init_at, init_at + 1));
        // In each block below, the pointer is non-null (`find` filters) and is the named SQLite
        // function, whose C type is the one given (the aliases above, sqlalloc::sqlite::ConfigFn).
        Some(Library {
            handle: h,
            // SAFETY: see above.
            config: unsafe { to_fn::<ConfigFn>(config) },
            // SAFETY: see above.
            shutdown: find(c"sqlite3_shutdown").map(|p| unsafe { to_fn::<InitFn>(p) }),
            // SAFETY: see above, for each function; all are of this one SQLite, which stays
            // loaded (pinned by `handle`).
            functions: unsafe {
                Functions::new(
                    find(c"sqlite3_memory_used").map(|p| to_fn::<MemoryUsedFn>(p)),
                    find(c"sqlite3_status64").map(|p| to_fn::<Status64Fn>(p)),
                    (|| {
                        Some(ConnectionFunctions {
                            db_status: to_fn(find(c"sqlite3_db_status")?),
                            db_mutex: to_fn(find(c"sqlite3_db_mutex")?),
                            mutex_try: to_fn(find(c"sqlite3_mutex_try")?),
                            mutex_leave: to_fn(find(c"sqlite3_mutex_leave")?),
                            db_filename: to_fn(find(c"sqlite3_db_filename")?),
                        })
                    })(),
                )
            },
            lo,
            hi,
        })
    }
}

impl Library {
    /// Whether SQLite's own allocator has ever served a block (so it was initialized, or is being
    /// initialized, by a call that did not come through here). Needs memstatus, SQLite's default.
    fn has_allocated(&self) -> bool {
        // sqlite3_status64 only reads SQLite's status array (its mutex is a no-op before
        // initialization).
        [SQLITE_STATUS_MALLOC_COUNT, SQLITE_STATUS_MEMORY_USED]
            .iter()
            .any(|&op| {
                self.functions
                    .status64(op)
                    .is_some_and(|(cur, high)| cur > 0 || high > 0)
            })
    }

    /// SQLite's current allocator (`SQLITE_CONFIG_GETMALLOC`, which sets up the default one
    /// first if none was configured).
    fn current_methods(&self) -> Sqlite3MemMethods {
        let mut m = Sqlite3MemMethods {
            x_malloc: None,
            x_free: None,
            x_realloc: None,
            x_size: None,
            x_roundup: None,
            x_init: None,
            x_shutdown: None,
            p_app_data: std::ptr::null_mut(),
        };
        // SAFETY: GETMALLOC writes one sqlite3_mem_methods through the pointer; `m` has that
        // layout. SQLite is not initialized at this point (checked by the caller).
        unsafe { (self.config)(SQLITE_CONFIG_GETMALLOC, &mut m as *mut Sqlite3MemMethods) };
        m
    }

    /// After a failed initialization with our allocator: shut SQLite down, put `saved` back and
    /// initialize again.
    fn restore(&self, saved: &Sqlite3MemMethods, init: InitFn) {
        if let Some(shutdown) = self.shutdown {
            // SAFETY: sqlite3_shutdown may be called at any time; it undoes the partial
            // initialization (malloc and mutex subsystems) so the allocator can be changed.
            unsafe { shutdown() };
        }
        // SAFETY: SQLite is not initialized (its initialization failed and it was shut down);
        // `saved` is the table GETMALLOC returned, which SQLite copies.
        let rc = unsafe { (self.config)(SQLITE_CONFIG_MALLOC, saved as *const Sqlite3MemMethods) };
        if rc == SQLITE_OK {
            // SAFETY: SQLite was just given back its own allocator while not initialized, so
            // sqlalloc's table is no longer in use.
            unsafe { sqlalloc::forget_installed() };
            // SAFETY: the real sqlite3_initialize; the program's own call follows it anyway.
            unsafe { init() };
        }
    }
}

/// The lowest and highest addresses of the loaded object whose segments contain `addr`.
fn mapped_range(addr: usize) -> Option<(usize, usize)> {
    struct Search {
        addr: usize,
        found: Option<(usize, usize)>,
    }
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: dl_iterate_phdr passes a valid info for the duration of the call, and `data`
        // is the `Search` handed to it below, used by nobody else meanwhile.
        let (info, search) = unsafe { (&*info, &mut *data.cast::<Search>()) };
        if info.dlpi_phdr.is_null() {
            return 0;
        }
        // SAFETY: the loader's program headers: `dlpi_phnum` entries at `dlpi_phdr`.
        let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
        let bias = info.dlpi_addr as usize;
        let (mut lo, mut hi, mut inside) = (usize::MAX, 0usize, false);
        for ph in phdrs.iter().filter(|p| p.p_type == libc::PT_LOAD) {
            let start = bias.wrapping_add(ph.p_vaddr as usize);
            let end = start.wrapping_add(ph.p_memsz as usize);
            lo = lo.min(start);
            hi = hi.max(end);
            inside |= (start..end).contains(&search.addr);
        }
        if inside {
            search.found = Some((lo, hi));
            return 1;
        }
        0
    }
    let mut search = Search { addr, found: None };
    // SAFETY: `visit` matches the callback type and only uses `search` during the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&mut search as *mut Search).cast()) };
    search.found
}
