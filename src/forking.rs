//! What the live telemetry does in a child after `fork` (`pthread_atfork`, registered once by the
//! first [`crate::serve()`] or [`crate::report_every`]).
//!
//! Pre-fork servers (gunicorn, uwsgi, Apache's prefork) set up in a parent and serve from forked
//! children. Threads do not survive `fork`, so in a child:
//!
//! - the scrape endpoint's sockets are closed, since nobody in the child answers them
//!   ([`crate::serve()`]'s thread stays in the parent), and the child may call `serve` again on a
//!   port of its own;
//! - the periodic report writer is started again, so that every child forked after it started
//!   keeps its own file up to date (with `%p` in the path, one file per process).
//!
//! The handler runs in the child as its only thread, after the C library made `malloc` usable
//! again; it takes no lock a parent thread might have held at the fork.

use std::sync::Once;

static REGISTERED: Once = Once::new();

/// Register the child handler (once per process; children inherit the registration).
pub(crate) fn register() {
    REGISTERED.call_once(|| {
        // SAFETY: `in_child` is an `extern "C" fn()` that lives as long as this library (a
        // library unloaded with dlclose has its handlers removed by the C library).
        unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    });
}

extern "C" fn in_child() {
    crate::serve::after_fork_in_child();
    crate::periodic::after_fork_in_child();
}
