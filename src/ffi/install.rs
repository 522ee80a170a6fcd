//! Install and stats: `sqlalloc_install`, `sqlalloc_get_stats`, `sqlalloc_reset_peak`,
//! `sqlalloc_installed_spec`. The struct `sqlalloc_stats` is the core's
//! [`Stats`](crate::counters::Stats), `#[repr(C)]`, renamed for C in cbindgen.toml.

use super::result::{c_str, fail, ok, out_ptr, require_installed, set_result};
use crate::counters::Stats;
use crate::installed;
use crate::sqlite;
use std::ffi::{c_char, c_int, CStr, CString};
use std::sync::Mutex;

/// Install the allocator named by `spec` (for example `"memsys5:heap=64M,min=64+limit:max=48M"`)
/// into SQLite. Must be called before SQLite initializes (or after `sqlite3_shutdown()`).
///
/// Returns SQLITE_OK; SQLITE_ERROR for a bad spec (nothing is installed, `sqlalloc_errmsg()` names
/// the offending part); SQLITE_MISUSE when SQLite is already initialized (nothing changes) or
/// `spec` is NULL; SQLITE_NOMEM when a heap cannot be had.
///
/// # Safety
/// `spec` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn sqlalloc_install(spec: *const c_char) -> c_int {
    // SAFETY: NULL or NUL-terminated by the caller's contract; used only during this call.
    let spec = match unsafe { c_str(spec, "sqlalloc_install", "spec") } {
        Ok(s) => s,
        Err(rc) => return rc,
    };
    let Ok(spec) = spec.to_str() else {
        return set_result(sqlite::SQLITE_ERROR, "bad spec: not valid UTF-8");
    };
    match installed::install_spec(spec) {
        Ok(()) => ok(),
        Err(e) => fail(e.sqlite_code(), e),
    }
}

/// Write the installed allocator's counters, read now, to `*out`.
///
/// Returns SQLITE_OK; SQLITE_MISUSE when `out` is NULL; SQLITE_ERROR when no sqlalloc allocator
/// has been installed (`*out` is not written).
///
/// # Safety
/// `out` must be NULL or point to writable memory for one `sqlalloc_stats`.
#[no_mangle]
pub unsafe extern "C" fn sqlalloc_get_stats(out: *mut Stats) -> c_int {
    let out = match out_ptr(out, "sqlalloc_get_stats", "out") {
        Ok(p) => p,
        Err(rc) => return rc,
    };
    let s = match require_installed() {
        Ok(s) => s,
        Err(rc) => return rc,
    };
    // SAFETY: `out` is non-null and writable by the caller's contract.
    unsafe { out.as_ptr().write(s.stats()) };
    ok()
}

/// Start a new peak (`peak_bytes`) from the current value. No effect when nothing is installed.
#[no_mangle]
pub extern "C" fn sqlalloc_reset_peak() {
    if let Some(s) = installed::current() {
        s.counters().reset_peak();
    }
}

/// The C copy of the installed spec last handed out by `sqlalloc_installed_spec`. Replaced only
/// when the installed spec differs, i.e. after a re-install, so a pointer handed out stays valid
/// until the next install as documented. (Never taken on an allocation path.)
static SPEC_C: Mutex<Option<CString>> = Mutex::new(None);

/// The spec of the installed allocator (normalized), or "" when none is installed. The string
/// stays valid until the next `sqlalloc_install` call.
#[no_mangle]
pub extern "C" fn sqlalloc_installed_spec() -> *const c_char {
    static EMPTY: &CStr = c"";
    let Some(s) = installed::current() else {
        return EMPTY.as_ptr();
    };
    let mut cached = SPEC_C.lock().unwrap_or_else(|e| e.into_inner());
    if cached.as_ref().map(|c| c.as_bytes()) != Some(s.spec().as_bytes()) {
        // A spec never holds a NUL (the parser refuses every byte outside its grammar, and a
        // C caller cannot pass one); if a Rust `configure` name did, the text is cut there.
        let text = s.spec().split('\0').next().unwrap_or("");
        *cached = CString::new(text).ok();
    }
    cached.as_ref().map_or(EMPTY.as_ptr(), |c| c.as_ptr())
}
