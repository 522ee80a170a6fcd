//! Reports from C: `sqlalloc_report` (to stderr or a file), `sqlalloc_report_to_buffer` (for a
//! metrics endpoint of the program's own) and `sqlalloc_leak_report` (the live blocks). What a
//! report holds and how it is rendered is [`crate::report`]'s.

use super::result::{c_str, fail, not_installed, ok, require_installed, set_result};
use crate::report::{self, FdWriter, Format, Report, Target};
use crate::sqlite;
use std::ffi::{c_char, c_int};

/// Write a report of the installed allocator to `target`: `"stderr"` (a short table),
/// `"json:PATH"` or `"prometheus:PATH"` (the syntax of `SQLALLOC_REPORT`; `%p` in PATH is replaced
/// by the process id; the file is written under a temporary name and renamed over PATH). The
/// report carries the backend and spec, every counter of `sqlalloc_stats`, the request-size
/// histogram, `sqlite3_memory_used()` read at the same moment, and for the `debug` backend the
/// live blocks with sizes and backtraces.
///
/// Returns SQLITE_OK; SQLITE_MISUSE when `target` is NULL; SQLITE_ERROR for a bad target, when no
/// sqlalloc allocator is installed, or when the file cannot be written (`sqlalloc_errmsg()` says
/// which).
///
/// # Safety
/// `target` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn sqlalloc_report(target: *const c_char) -> c_int {
    // SAFETY: NULL or NUL-terminated by the caller's contract; used only during this call.
    let target = match unsafe { c_str(target, "sqlalloc_report", "target") } {
        Ok(t) => t.to_string_lossy(),
        Err(rc) => return rc,
    };
    let target = match Target::parse(&target) {
        Ok(t) => t,
        Err(e) => return fail(sqlite::SQLITE_ERROR, format_args!("sqlalloc_report: {e}")),
    };
    let Some(report) = Report::capture_installed() else {
        return not_installed();
    };
    match report.write_to(&target) {
        Ok(()) => ok(),
        Err(e) => fail(sqlite::SQLITE_ERROR, format_args!("sqlalloc_report: {e}")),
    }
}

/// Render a report of the installed allocator in `format` (`"text"`, `"json"` or `"prometheus"`)
/// into `buf`, for a metrics endpoint. Like `snprintf`: at most `len - 1` bytes are written,
/// followed by a NUL (when `len > 0`), and the full length of the report (without the NUL) is
/// returned, so a return value `>= len` means the report was cut; call with `buf = NULL, len = 0`
/// to learn the size.
///
/// Returns -1 when `format` is NULL or unknown, `buf` is NULL with `len > 0`, or nothing is
/// installed (`sqlalloc_errmsg()` says which).
///
/// # Safety
/// `format` must be NULL or a NUL-terminated string; `buf` must be NULL or point to `len`
/// writable bytes.
#[no_mangle]
pub unsafe extern "C" fn sqlalloc_report_to_buffer(
    format: *const c_char,
    buf: *mut c_char,
    len: usize,
) -> i64 {
    // SAFETY: NULL or NUL-terminated by the caller's contract; used only during this call.
    let format = match unsafe { c_str(format, "sqlalloc_report_to_buffer", "format") } {
        Ok(f) => f.to_string_lossy(),
        Err(_) => return -1,
    };
    if buf.is_null() && len > 0 {
        set_result(
            sqlite::SQLITE_MISUSE,
            "sqlalloc_report_to_buffer: buf is NULL but len is not 0",
        );
        return -1;
    }
    let format = match Format::parse(&format) {
        Ok(f) => f,
        Err(e) => {
            fail(
                sqlite::SQLITE_ERROR,
                format_args!("sqlalloc_report_to_buffer: {e}"),
            );
            return -1;
        }
    };
    let Some(report) = Report::capture_installed() else {
        not_installed();
        return -1;
    };
    let text = report.render(format);
    if len > 0 {
        let n = text.len().min(len - 1);
        // SAFETY: `buf` has `len` writable bytes (caller's contract) and `n + 1 <= len`; `text`
        // is a separate Rust allocation, so the ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), n);
            buf.add(n).write(0);
        }
    }
    ok();
    i64::try_from(text.len()).unwrap_or(i64::MAX)
}

/// Write the list of live blocks (address, requested size, backtrace when the `debug` backend
/// keeps one) to file descriptor `fd`, one line each, after a summary line. Only the `debug`
/// backend tracks blocks; for other backends only the summary line is written.
///
/// Returns the number of live blocks listed, or -1 when nothing is installed or writing failed.
#[no_mangle]
pub extern "C" fn sqlalloc_leak_report(fd: c_int) -> i64 {
    let Ok(s) = require_installed() else {
        return -1;
    };
    match report::write_leaks(s, &mut FdWriter(fd)) {
        Ok(n) => {
            ok();
            i64::try_from(n).unwrap_or(i64::MAX)
        }
        Err(e) => {
            fail(
                sqlite::SQLITE_ERROR,
                format_args!("sqlalloc_leak_report: {e}"),
            );
            -1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::result::sqlalloc_errmsg;
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn c_api_checks_its_arguments() {
        // SAFETY: NULL and valid C strings only; buffers are sized as passed.
        unsafe {
            assert_eq!(sqlalloc_report(std::ptr::null()), sqlite::SQLITE_MISUSE);
            assert_eq!(sqlalloc_report(c"xml:/x".as_ptr()), sqlite::SQLITE_ERROR);
            let msg = CStr::from_ptr(sqlalloc_errmsg()).to_string_lossy();
            assert!(msg.contains("'xml:/x'"), "{msg}");
            assert_eq!(
                sqlalloc_report_to_buffer(std::ptr::null(), std::ptr::null_mut(), 0),
                -1
            );
            assert_eq!(
                sqlalloc_report_to_buffer(c"json".as_ptr(), std::ptr::null_mut(), 5),
                -1
            );
            assert_eq!(
                sqlalloc_report_to_buffer(c"yaml".as_ptr(), std::ptr::null_mut(), 0),
                -1
            );
            let msg = CStr::from_ptr(sqlalloc_errmsg()).to_string_lossy();
            assert!(msg.contains("'yaml'"), "{msg}");
        }
    }
}
