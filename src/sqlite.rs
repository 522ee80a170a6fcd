//! The one SQLite function sqlalloc calls, `sqlite3_config`, declared here without linking any
//! library: the C libraries (`libsqlalloc.a`, `libsqlalloc.so`) resolve it from the program they
//! are linked into or loaded by, so sqlalloc never brings a second SQLite into a process.
//!
//! With the default feature `link` the symbol is referenced directly (a program using
//! `libsqlalloc` links SQLite anyway). Without it there is no reference at all and the function is
//! supplied at run time with [`crate::set_sqlite3_config`]: that is how the preload library works
//! in programs that `dlopen` SQLite after they start. With the feature `libsqlite3-sys` (the Rust
//! API for rusqlite and sqlx) the function is the one libsqlite3-sys links, so a `bundled` SQLite
//! is configured as surely as the system one.

use std::ffi::{c_int, c_void};

/// SQLite result or config code.
pub const SQLITE_OK: c_int = 0;
/// SQLite result or config code.
pub const SQLITE_ERROR: c_int = 1;
/// SQLite result or config code.
pub const SQLITE_NOMEM: c_int = 7;
/// SQLite result code: a table is full (the `scopes` layer holds no more scopes).
pub const SQLITE_FULL: c_int = 13;
/// SQLite result or config code.
pub const SQLITE_MISUSE: c_int = 21;
/// SQLite result or config code.
pub const SQLITE_CONFIG_MALLOC: c_int = 4;
/// SQLite result or config code.
pub const SQLITE_CONFIG_GETMALLOC: c_int = 5;

/// SQLite's `sqlite3_mem_methods`, field for field.
#[repr(C)]
pub struct Sqlite3MemMethods {
    /// `xMalloc`.
    pub x_malloc: Option<unsafe extern "C" fn(c_int) -> *mut c_void>,
    /// `xFree`.
    pub x_free: Option<unsafe extern "C" fn(*mut c_void)>,
    /// `xRealloc`.
    pub x_realloc: Option<unsafe extern "C" fn(*mut c_void, c_int) -> *mut c_void>,
    /// `xSize`.
    pub x_size: Option<unsafe extern "C" fn(*mut c_void) -> c_int>,
    /// `xRoundup`.
    pub x_roundup: Option<unsafe extern "C" fn(c_int) -> c_int>,
    /// `xInit`.
    pub x_init: Option<unsafe extern "C" fn(*mut c_void) -> c_int>,
    /// `xShutdown`.
    pub x_shutdown: Option<unsafe extern "C" fn(*mut c_void)>,
    /// `pAppData`.
    pub p_app_data: *mut c_void,
}

/// Whether this build references SQLite's symbols directly (feature `link`). The preload library
/// must be built without it and checks this at compile time.
pub const LINKED: bool = cfg!(feature = "link");

/// Type of SQLite's `int sqlite3_config(int op, ...)`.
pub type ConfigFn = unsafe extern "C" fn(c_int, ...) -> c_int;

#[cfg(all(feature = "link", not(feature = "libsqlite3-sys")))]
extern "C" {
    /// `int sqlite3_config(int op, ...)`, resolved from the program at link or load time.
    fn sqlite3_config(op: c_int, ...) -> c_int;
}

/// A `sqlite3_config` supplied at run time (see [`crate::set_sqlite3_config`]).
static OVERRIDE: std::sync::OnceLock<ConfigFn> = std::sync::OnceLock::new();

/// Use `f` as `sqlite3_config` from now on (the first call wins). Returns whether `f` is now
/// the one in use.
pub fn set_config_fn(f: ConfigFn) -> bool {
    let _ = OVERRIDE.set(f);
    OVERRIDE.get().is_some_and(|&g| g as usize == f as usize)
}

/// The `sqlite3_config` to call: the one set at run time, else the one of libsqlite3-sys
/// (feature `libsqlite3-sys`: the SQLite that rusqlite and sqlx link, `bundled` or system), else
/// the linked one (feature `link`).
pub fn config_fn() -> Option<ConfigFn> {
    if let Some(&f) = OVERRIDE.get() {
        return Some(f);
    }
    #[cfg(feature = "libsqlite3-sys")]
    {
        // Referencing the function through the crate makes this crate depend on libsqlite3-sys,
        // so the linker sees its SQLite (a `bundled` static library) after this reference.
        Some(libsqlite3_sys::sqlite3_config as ConfigFn)
    }
    #[cfg(all(feature = "link", not(feature = "libsqlite3-sys")))]
    {
        Some(sqlite3_config as ConfigFn)
    }
    #[cfg(not(any(feature = "link", feature = "libsqlite3-sys")))]
    {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// The SQLite functions reports call: those of the SQLite the allocator went into.

/// Type of SQLite's `sqlite3_int64 sqlite3_memory_used(void)`.
pub type MemoryUsedFn = unsafe extern "C" fn() -> i64;
/// Type of SQLite's `int sqlite3_status64(int op, sqlite3_int64 *cur, sqlite3_int64 *hiwtr,
/// int reset)`.
pub type Status64Fn = unsafe extern "C" fn(c_int, *mut i64, *mut i64, c_int) -> c_int;

/// `SQLITE_STATUS_MEMORY_USED`.
pub const SQLITE_STATUS_MEMORY_USED: c_int = 0;
/// `SQLITE_STATUS_PAGECACHE_USED`.
pub const SQLITE_STATUS_PAGECACHE_USED: c_int = 1;
/// `SQLITE_STATUS_PAGECACHE_OVERFLOW`.
pub const SQLITE_STATUS_PAGECACHE_OVERFLOW: c_int = 2;
/// `SQLITE_STATUS_MALLOC_SIZE`.
pub const SQLITE_STATUS_MALLOC_SIZE: c_int = 5;
/// `SQLITE_STATUS_MALLOC_COUNT`.
pub const SQLITE_STATUS_MALLOC_COUNT: c_int = 9;

/// Type of `int sqlite3_db_status(sqlite3*, int op, int *cur, int *hiwtr, int reset)`.
pub type DbStatusFn =
    unsafe extern "C" fn(*mut c_void, c_int, *mut c_int, *mut c_int, c_int) -> c_int;
/// Type of `sqlite3_mutex *sqlite3_db_mutex(sqlite3*)`.
pub type DbMutexFn = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
/// Type of `int sqlite3_mutex_try(sqlite3_mutex*)`.
pub type MutexTryFn = unsafe extern "C" fn(*mut c_void) -> c_int;
/// Type of `void sqlite3_mutex_leave(sqlite3_mutex*)`.
pub type MutexLeaveFn = unsafe extern "C" fn(*mut c_void);
/// Type of `const char *sqlite3_db_filename(sqlite3*, const char *zDbName)`.
pub type DbFilenameFn =
    unsafe extern "C" fn(*mut c_void, *const std::ffi::c_char) -> *const std::ffi::c_char;

/// The SQLite functions the per-connection breakdown calls ([`crate::connections`]).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionFunctions {
    /// `sqlite3_db_status`.
    pub db_status: DbStatusFn,
    /// `sqlite3_db_mutex`.
    pub db_mutex: DbMutexFn,
    /// `sqlite3_mutex_try`.
    pub mutex_try: MutexTryFn,
    /// `sqlite3_mutex_leave`.
    pub mutex_leave: MutexLeaveFn,
    /// `sqlite3_db_filename`.
    pub db_filename: DbFilenameFn,
}

/// The SQLite functions that reports call, all of one SQLite library: the one whose
/// `sqlite3_config` installed the allocator. Made only by [`Functions::new`] (unsafe: its methods
/// call the pointers) or [`Functions::default`] (none known).
#[derive(Debug, Clone, Copy, Default)]
pub struct Functions {
    memory_used: Option<MemoryUsedFn>,
    status64: Option<Status64Fn>,
    connections: Option<ConnectionFunctions>,
}

/// Functions supplied at run time ([`set_functions`]).
static FUNCTIONS: std::sync::OnceLock<Functions> = std::sync::OnceLock::new();

#[cfg(all(feature = "link", not(feature = "libsqlite3-sys")))]
extern "C" {
    fn sqlite3_memory_used() -> i64;
    fn sqlite3_status64(op: c_int, cur: *mut i64, hiwtr: *mut i64, reset: c_int) -> c_int;
    fn sqlite3_db_status(
        db: *mut c_void,
        op: c_int,
        cur: *mut c_int,
        hiwtr: *mut c_int,
        reset: c_int,
    ) -> c_int;
    fn sqlite3_db_mutex(db: *mut c_void) -> *mut c_void;
    fn sqlite3_mutex_try(m: *mut c_void) -> c_int;
    fn sqlite3_mutex_leave(m: *mut c_void);
    fn sqlite3_db_filename(
        db: *mut c_void,
        name: *const std::ffi::c_char,
    ) -> *const std::ffi::c_char;
}

/// Use `f` for the SQLite functions reports call (the first call wins), for builds that find
/// SQLite at run time (the preload library, next to [`set_config_fn`]). Returns whether `f` is
/// the set in use.
///
/// # Safety
/// Each function must be the one of that name of the SQLite whose `sqlite3_config` the allocator
/// is installed with, callable for the rest of the process.
pub unsafe fn set_functions(f: Functions) -> bool {
    let _ = FUNCTIONS.set(f);
    FUNCTIONS.get().is_some_and(|g| {
        g.memory_used.map(|p| p as usize) == f.memory_used.map(|p| p as usize)
            && g.status64.map(|p| p as usize) == f.status64.map(|p| p as usize)
            && g.connections.map(|c| c.db_status as usize)
                == f.connections.map(|c| c.db_status as usize)
    })
}

/// The SQLite functions of the SQLite [`config_fn`] configures: the ones set at run time, else
/// those of libsqlite3-sys, else the linked ones, else none. (The same precedence as
/// [`config_fn`], so that they belong to the same library.)
pub fn functions() -> Functions {
    if let Some(&f) = FUNCTIONS.get() {
        return f;
    }
    #[cfg(feature = "libsqlite3-sys")]
    {
        use libsqlite3_sys as s;
        // The crate's functions take `*mut sqlite3` and `*mut sqlite3_mutex`; ours take
        // `*mut c_void`: the same pointer passed the same way, only the pointee type differs.
        // SAFETY: each transmute is between function pointers of identical ABI (extern "C", same
        // arity, every argument a pointer or `c_int` in the same order, same return type).
        let conn = unsafe {
            ConnectionFunctions {
                db_status: std::mem::transmute::<
                    unsafe extern "C" fn(
                        *mut s::sqlite3,
                        c_int,
                        *mut c_int,
                        *mut c_int,
                        c_int,
                    ) -> c_int,
                    DbStatusFn,
                >(s::sqlite3_db_status),
                db_mutex: std::mem::transmute::<
                    unsafe extern "C" fn(*mut s::sqlite3) -> *mut s::sqlite3_mutex,
                    DbMutexFn,
                >(s::sqlite3_db_mutex),
                mutex_try: std::mem::transmute::<
                    unsafe extern "C" fn(*mut s::sqlite3_mutex) -> c_int,
                    MutexTryFn,
                >(s::sqlite3_mutex_try),
                mutex_leave: std::mem::transmute::<
                    unsafe extern "C" fn(*mut s::sqlite3_mutex),
                    MutexLeaveFn,
                >(s::sqlite3_mutex_leave),
                db_filename: std::mem::transmute::<
                    unsafe extern "C" fn(
                        *mut s::sqlite3,
                        *const std::ffi::c_char,
                    ) -> *const std::ffi::c_char,
                    DbFilenameFn,
                >(s::sqlite3_db_filename),
            }
        };
        Functions {
            memory_used: Some(s::sqlite3_memory_used as MemoryUsedFn),
            status64: Some(s::sqlite3_status64 as Status64Fn),
            connections: Some(conn),
        }
    }
    #[cfg(all(feature = "link", not(feature = "libsqlite3-sys")))]
    {
        Functions {
            memory_used: Some(sqlite3_memory_used as MemoryUsedFn),
            status64: Some(sqlite3_status64 as Status64Fn),
            connections: Some(ConnectionFunctions {
                db_status: sqlite3_db_status,
                db_mutex: sqlite3_db_mutex,
                mutex_try: sqlite3_mutex_try,
                mutex_leave: sqlite3_mutex_leave,
                db_filename: sqlite3_db_filename,
            }),
        }
    }
    #[cfg(not(any(feature = "link", feature = "libsqlite3-sys")))]
    {
        Functions::default()
    }
}

impl Functions {
    /// The functions of one SQLite library (`None`: not known).
    ///
    /// # Safety
    /// Each function given must be the SQLite function of that name (`sqlite3_memory_used`,
    /// `sqlite3_status64`, and those of [`ConnectionFunctions`]), all of one SQLite library,
    /// callable from any thread for as long as the value (or a copy) is used.
    pub unsafe fn new(
        memory_used: Option<MemoryUsedFn>,
        status64: Option<Status64Fn>,
        connections: Option<ConnectionFunctions>,
    ) -> Functions {
        Functions {
            memory_used,
            status64,
            connections,
        }
    }

    /// Whether `sqlite3_status64` is known.
    pub fn has_status64(&self) -> bool {
        self.status64.is_some()
    }

    /// Whether `sqlite3_memory_used` is known.
    pub fn has_memory_used(&self) -> bool {
        self.memory_used.is_some()
    }

    /// The connection functions, when all of them are known.
    pub fn connections(&self) -> Option<ConnectionFunctions> {
        self.connections
    }

    /// `sqlite3_memory_used()`, when the function is known.
    pub fn memory_used(&self) -> Option<i64> {
        let f = self.memory_used?;
        // SAFETY: `f` is SQLite's sqlite3_memory_used (the contract of `new`, or linked); it
        // takes no argument and only reads SQLite's status counters.
        Some(unsafe { f() })
    }

    /// `sqlite3_status64(op)` without resetting: `(current, highwater)`, or `None` when the
    /// function is not known or refuses `op`.
    pub fn status64(&self, op: c_int) -> Option<(i64, i64)> {
        let f = self.status64?;
        let (mut cur, mut high) = (0i64, 0i64);
        // SAFETY: `f` is SQLite's sqlite3_status64 (as above); the two out-parameters are
        // writable for the call, and `reset` 0 changes nothing. It takes SQLite's malloc or
        // pcache mutex, which is fine: reports are never made from an allocation path.
        let rc = unsafe { f(op, &mut cur, &mut high, 0) };
        (rc == SQLITE_OK).then_some((cur, high))
    }
}
