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
