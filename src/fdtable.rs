//! A descriptor table of their own for the library's background threads (the scrape endpoint,
//! the periodic report writer).
//!
//! # Why
//!
//! While only one thread uses a process's descriptor table, Linux serves each descriptor system
//! call (`pread`, `pwrite`, `fcntl`, `fstat`, …) without taking a reference on the open file.
//! Once a second thread shares the table, every such call takes and drops one: two atomic
//! operations and an RCU section per call. SQLite on a file makes these calls by the hundred
//! thousand (speedtest1 `--size 25` on a file in `/dev/shm`: about 313 000 in 0.7 s, most of them
//! the `fcntl` locks and `pread`/`pwrite`), so merely having a second thread — even one asleep in
//! `poll` — made that run about 2 % slower (`make bench-live`, bench/notes.md); the
//! scrape endpoint's target is 1 %.
//!
//! # What
//!
//! So each background thread starts with `unshare(CLONE_FILES)`: it gets a copy of the table, and
//! the program's table is used by the program's threads alone again. The copy holds a reference to
//! every file the program had open then, which would, say, keep a pipe the program later closes
//! from ever reaching end of file at its reader; so the thread at once closes every descriptor of
//! its copy (`close_range`, or the list in `/proc/thread-self/fd` on a kernel before 5.9). From
//! then on the thread's own descriptors (the listening socket, the connections, the report files
//! being written) are not the program's: the program cannot close them by number (a daemon's
//! `closefrom(3)`), a `fork` does not inherit them, an `exec` does not leak them.
//!
//! The thread can then no longer write to the program's standard error by number; the one line
//! the periodic writer may print borrows the program's descriptor for the write, see
//! [`write_to_program_stderr`].
//!
//! Where `unshare` is refused (a seccomp profile that forbids it, as Docker's default one does
//! without `CAP_SYS_ADMIN`), the thread shares the program's table as any thread does, and its
//! callers keep the bookkeeping a shared table needs (the endpoint's sockets are closed in a
//! forked child, `src/forking.rs`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by a test of the fallback ([`crate::__share_descriptor_table_for_tests`]): act as if
/// `unshare` were refused.
pub(crate) static FORCE_SHARED: AtomicBool = AtomicBool::new(false);

/// Give the calling thread a descriptor table of its own, with nothing open in it. True when
/// done; false when the system refused (the thread then shares the process's table, as before,
/// and nothing was closed).
pub(crate) fn own_empty_table() -> bool {
    if cfg!(miri) || FORCE_SHARED.load(Ordering::Relaxed) {
        return false;
    }
    // SAFETY: `unshare(CLONE_FILES)` only makes this thread use a private copy of the descriptor
    // table; it reads or writes no memory of ours.
    if unsafe { libc::unshare(libc::CLONE_FILES) } != 0 {
        return false;
    }
    close_all_of_this_thread();
    true
}

/// Close every descriptor of the calling thread's (private) table.
fn close_all_of_this_thread() {
    // SAFETY: called right after `unshare(CLONE_FILES)`: the table is this thread's alone, and no
    // object of this thread owns a descriptor yet, so closing all of them closes nothing anybody
    // will use (the program's threads keep their own references in their own table).
    let done = unsafe { libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) } == 0;
    if done {
        return;
    }
    // A kernel before 5.9: the list of this thread's table (`/proc/self` would be the main
    // thread's), read whole before closing anything so that the directory's own descriptor,
    // closed when the listing ends, is not closed twice by anyone else.
    let fds: Vec<libc::c_int> = match std::fs::read_dir("/proc/thread-self/fd") {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => return,
    };
    for fd in fds {
        // SAFETY: as above; a number already closed (the listing's own) gives EBADF, harmless.
        unsafe { libc::close(fd) };
    }
}

/// Write `line` to the program's standard error from a background thread; `private`: the thread
/// has a table of its own, where descriptor 2 is not the program's. Then the program's current
/// descriptor 2 is borrowed for the write with `pidfd_getfd` (Linux 5.6): a duplicate sharing its
/// file offset, so the line lands where the program's own next line would (a reopen of
/// `/proc/self/fd/2` would not: a new offset, and the two overwrite each other in a file), and
/// closed again at once. Where that is refused the line is not written; the failure it reports
/// is reported again at exit by the program's own thread. Errors are ignored: a diagnostic line
/// must not become a failure of its own.
pub(crate) fn write_to_program_stderr(private: bool, line: &str) {
    use std::io::Write;
    if !private {
        let _ = crate::report::FdWriter(2).write_all(line.as_bytes());
        return;
    }
    if let Some(fd) = borrow_program_fd(2) {
        let _ = crate::report::FdWriter(fd.as_raw_fd()).write_all(line.as_bytes());
    }
}

/// A duplicate, in the calling thread's table, of the program's descriptor `n` (the table of the
/// process's main thread), or `None` where `pidfd_open`/`pidfd_getfd` are missing or refused.
fn borrow_program_fd(n: libc::c_int) -> Option<OwnedFd> {
    // SAFETY: pidfd_open of this process's own id with no flags; it returns a new descriptor or
    // -1, and reads no memory of ours.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
    let pidfd = libc::c_int::try_from(pidfd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: `pidfd` was just opened for this thread and is owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // SAFETY: pidfd_getfd with a valid pidfd, a descriptor number and no flags: it returns a new
    // descriptor (close-on-exec) in this thread's table or -1, and reads no memory of ours. A
    // process may always take its own descriptors.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), n, 0) };
    let fd = libc::c_int::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: the descriptor was just created for this thread and is owned by nobody else.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread with its own table sees none of the process's descriptors, and closing all of its
    /// copy leaves the process's open.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn the_thread_sees_none_and_is_not_seen() {
        let mine = std::fs::File::open("/dev/null").unwrap();
        let fd = mine.as_raw_fd();
        let (private, theirs_open) = std::thread::spawn(move || {
            let private = own_empty_table();
            // SAFETY: F_GETFD reads a descriptor's flags and nothing else.
            let open = unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0;
            (private, open)
        })
        .join()
        .unwrap();
        if !private {
            eprintln!("unshare(CLONE_FILES) refused here: nothing to check");
            return;
        }
        assert!(!theirs_open, "the thread still saw descriptor {fd}");
        // The thread's close_range closed its copy only: the process's descriptor is open.
        // SAFETY: as above.
        assert!(unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0);
        drop(mine);
    }
}
