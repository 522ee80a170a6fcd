//! Live telemetry from C: `sqlalloc_serve` (the scrape endpoint) and `sqlalloc_report_every`
//! (a report file rewritten periodically). What they do is [`crate::serve()`]'s and
//! [`crate::periodic`]'s.

use super::result::{c_str, fail, ok, set_result};
use crate::sqlite;
use std::ffi::{c_char, c_int};

/// Serve the installed allocator's reports over HTTP from a background thread: `GET /metrics`
/// (Prometheus text exposition format 0.0.4, the `sqlite_memory_*` metrics) and
/// `GET /stats.json` (the JSON report). `addr` is `"[HOST:]PORT"`: HOST an IPv4 address, an IPv6
/// address in brackets or `localhost`, 127.0.0.1 when left out (any other address only when
/// written out); PORT 0 picks a free port. What `SQLALLOC_LISTEN` does under the preload.
///
/// Returns SQLITE_OK; SQLITE_ERROR for an address that does not parse or cannot be bound (the
/// port is in use, say: `sqlalloc_errmsg()` names the address and the reason); SQLITE_MISUSE when
/// `addr` is NULL or this process serves already. In a child forked after the call, the
/// endpoint's sockets are closed and the child may call this again (with another port).
///
/// # Safety
/// `addr` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn sqlalloc_serve(addr: *const c_char) -> c_int {
    // SAFETY: NULL or NUL-terminated by the caller's contract; used only during this call.
    let addr = match unsafe { c_str(addr, "sqlalloc_serve", "addr") } {
        Ok(a) => a,
        Err(rc) => return rc,
    };
    let Ok(addr) = addr.to_str() else {
        return set_result(
            sqlite::SQLITE_ERROR,
            "sqlalloc_serve: the address is not valid UTF-8",
        );
    };
    match crate::serve::serve(addr) {
        Ok(_) => ok(),
        Err(e) => fail(e.sqlite_code(), format_args!("sqlalloc_serve: {e}")),
    }
}

/// Rewrite the report `target` (`"json:PATH"` or `"prometheus:PATH"`, `%p` in PATH for the
/// process id) every `seconds` seconds from a background thread, each time whole and atomically
/// (a new file with an unpredictable name in the same directory, renamed over PATH). What
/// `SQLALLOC_REPORT_INTERVAL` does under the preload. Children forked later keep their own writer.
///
/// Returns SQLITE_OK; SQLITE_ERROR for a bad target or `seconds < 1` (`sqlalloc_errmsg()` says
/// which); SQLITE_MISUSE when `target` is NULL or a periodic report runs already.
///
/// # Safety
/// `target` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn sqlalloc_report_every(target: *const c_char, seconds: c_int) -> c_int {
    // SAFETY: NULL or NUL-terminated by the caller's contract; used only during this call.
    let target = match unsafe { c_str(target, "sqlalloc_report_every", "target") } {
        Ok(t) => t.to_string_lossy(),
        Err(rc) => return rc,
    };
    let Ok(seconds) = u64::try_from(seconds) else {
        return set_result(
            sqlite::SQLITE_ERROR,
            &format!("sqlalloc_report_every: interval {seconds}: must be at least 1 second"),
        );
    };
    match crate::periodic::report_every(&target, seconds) {
        Ok(()) => ok(),
        Err(e) => fail(e.sqlite_code(), format_args!("sqlalloc_report_every: {e}")),
    }
}
