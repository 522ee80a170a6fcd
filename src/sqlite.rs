//! The few SQLite symbols sqlalloc uses, declared here without linking any library: the C
//! libraries (`libsqlalloc.a`, `libsqlalloc.so`) resolve them from the program they are linked into
//! or loaded by, so sqlalloc never brings a second SQLite into a process.

use std::ffi::{c_int, c_void};

pub const SQLITE_OK: c_int = 0;
pub const SQLITE_ERROR: c_int = 1;
pub const SQLITE_NOMEM: c_int = 7;
pub const SQLITE_MISUSE: c_int = 21;
pub const SQLITE_CONFIG_MALLOC: c_int = 4;

/// SQLite's `sqlite3_mem_methods`, field for field.
#[repr(C)]
pub struct Sqlite3MemMethods {
    pub x_malloc: Option<unsafe extern "C" fn(c_int) -> *mut c_void>,
    pub x_free: Option<unsafe extern "C" fn(*mut c_void)>,
    pub x_realloc: Option<unsafe extern "C" fn(*mut c_void, c_int) -> *mut c_void>,
    pub x_size: Option<unsafe extern "C" fn(*mut c_void) -> c_int>,
    pub x_roundup: Option<unsafe extern "C" fn(c_int) -> c_int>,
    pub x_init: Option<unsafe extern "C" fn(*mut c_void) -> c_int>,
    pub x_shutdown: Option<unsafe extern "C" fn(*mut c_void)>,
    pub p_app_data: *mut c_void,
}

extern "C" {
    /// `int sqlite3_config(int op, ...)`.
    pub fn sqlite3_config(op: c_int, ...) -> c_int;
}
