//! The per-connection breakdown from C: `sqlalloc_track`, `sqlalloc_untrack`, `sqlalloc_sample`.
//! What tracking means and the rules of reading a connection are [`crate::connections`]'s.

use super::result::{c_str, fail, ok};
use std::ffi::{c_char, c_int};

/// SQLite's connection type, opaque here (`typedef struct sqlite3 sqlite3;` in the header, the
/// same declaration as sqlite3.h's, so both headers may be included in either order).
/// Not `#[repr(C)]`: cbindgen then declares it opaque rather than defining it.
#[allow(non_camel_case_types)]
pub struct sqlite3 {
    _private: [u8; 0],
}

/// Track the connection `db` in every report (`sqlite_connection_bytes{connection="LABEL"}`), under
/// `label`, or, when `label` is NULL, its main database's file name (`:memory:` for none); a label
/// in use gets a suffix (`#2`, …). Programs under the preload library need not call it: every
/// connection of the SQLite it configured is tracked from `sqlite3_open*` to `sqlite3_close*`.
/// Call it from the thread that uses `db`, and call `sqlalloc_untrack(db)` before closing it.
///
/// Returns SQLITE_OK; SQLITE_MISUSE for a NULL `db` or one tracked already; SQLITE_ERROR when the
/// SQLite functions it needs are unknown (`sqlalloc_errmsg()` says which).
///
/// # Safety
/// `db` must be NULL or an open connection of the SQLite sqlalloc configured; `label` NULL or a
/// NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn sqlalloc_track(db: *mut sqlite3, label: *const c_char) -> c_int {
    let label = if label.is_null() {
        None
    } else {
        // SAFETY: non-null and NUL-terminated by the caller's contract; copied at once.
        match unsafe { c_str(label, "sqlalloc_track", "label") } {
            Ok(l) => Some(l.to_string_lossy().into_owned()),
            Err(rc) => return rc,
        }
    };
    if db.is_null() {
        return fail(crate::sqlite::SQLITE_MISUSE, "sqlalloc_track: db is NULL");
    }
    // SAFETY: `db` is an open connection used by the calling thread (the caller's contract).
    match unsafe { crate::connections::track(db.cast(), label.as_deref()) } {
        Ok(_) => ok(),
        Err(e) => fail(e.sqlite_code(), format_args!("sqlalloc_track: {e}")),
    }
}

/// Stop tracking `db`; call it before closing `db`.
///
/// Returns SQLITE_OK; SQLITE_MISUSE for NULL or a connection that is not tracked.
#[no_mangle]
pub extern "C" fn sqlalloc_untrack(db: *mut sqlite3) -> c_int {
    match crate::connections::untrack(db.cast()) {
        Ok(_) => ok(),
        Err(e) => fail(e.sqlite_code(), format_args!("sqlalloc_untrack: {e}")),
    }
}

/// Sample the tracked connection `db` now, from the thread that uses it: what reports show for a
/// connection opened without a mutex (`SQLITE_OPEN_NOMUTEX`, or under
/// `SQLITE_CONFIG_MULTITHREAD`), which a report's reader never reads itself.
///
/// Returns SQLITE_OK; SQLITE_MISUSE for NULL or a connection that is not tracked.
///
/// # Safety
/// `db` must be NULL or an open connection, used by the calling thread only during the call.
#[no_mangle]
pub unsafe extern "C" fn sqlalloc_sample(db: *mut sqlite3) -> c_int {
    // SAFETY: the caller's contract.
    match unsafe { crate::connections::sample(db.cast()) } {
        Ok(()) => ok(),
        Err(e) => fail(e.sqlite_code(), format_args!("sqlalloc_sample: {e}")),
    }
}
