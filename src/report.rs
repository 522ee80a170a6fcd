//! Human-readable reports: the leak list. Written without going through SQLite and without
//! taking any lock SQLite might hold.

use crate::methods::MemMethods;
use crate::stack::Stack;
use std::ffi::c_int;
use std::io::{self, Write};

/// An `io::Write` over a raw file descriptor (not closed on drop).
pub struct FdWriter(pub c_int);

impl Write for FdWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: `buf` is a valid readable slice; a bad fd only makes write(2) fail.
        let n = unsafe { libc::write(self.0, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Write a summary line and one line per live block (with its backtrace when kept) to `out`.
/// Returns the number of blocks listed.
pub fn write_leaks(s: &Stack, out: &mut dyn Write) -> io::Result<usize> {
    let st = s.stats();
    writeln!(
        out,
        "sqlalloc: {} live block(s), {} byte(s) in use (allocator {})",
        st.current_count,
        st.current_bytes,
        s.spec()
    )?;
    let mut n = 0usize;
    let mut res = Ok(());
    s.live_blocks(&mut |b| {
        if res.is_err() {
            return;
        }
        n += 1;
        res = (|| {
            writeln!(out, "  leak: {} bytes at {:#x}", b.requested, b.addr)?;
            for (i, pc) in b.backtrace.iter().enumerate() {
                writeln!(out, "    #{i} {pc:#x} {}", symbolize(*pc))?;
            }
            Ok(())
        })();
    });
    res.map(|()| n)
}

/// Name of the function containing code address `pc`, from the dynamic symbol table (`dladdr`),
/// or "?" when unknown.
pub fn symbolize(pc: usize) -> String {
    let mut info: libc::Dl_info = empty_dl_info();
    // `pc` is a return address: look up `pc - 1` so that a call at the very end of a function is
    // attributed to it. dladdr only compares the address; it never dereferences it.
    let addr = pc.wrapping_sub(1) as *const libc::c_void;
    // SAFETY: dladdr reads no memory at `addr`; `info` is a valid out-parameter.
    let ok = unsafe { libc::dladdr(addr, &mut info) };
    if ok == 0 {
        return "?".to_string();
    }
    let name = if info.dli_sname.is_null() {
        None
    } else {
        // SAFETY: dladdr returned a NUL-terminated symbol name that lives as long as the object.
        Some(
            unsafe { std::ffi::CStr::from_ptr(info.dli_sname) }
                .to_string_lossy()
                .into_owned(),
        )
    };
    let file = if info.dli_fname.is_null() {
        String::new()
    } else {
        // SAFETY: as above, for the object's file name.
        unsafe { std::ffi::CStr::from_ptr(info.dli_fname) }
            .to_string_lossy()
            .into_owned()
    };
    match name {
        Some(n) => format!("{n} ({file})"),
        None => format!("({file}+{:#x})", pc.wrapping_sub(info.dli_fbase as usize)),
    }
}

fn empty_dl_info() -> libc::Dl_info {
    libc::Dl_info {
        dli_fname: std::ptr::null(),
        dli_fbase: std::ptr::null_mut(),
        dli_sname: std::ptr::null(),
        dli_saddr: std::ptr::null_mut(),
    }
}
