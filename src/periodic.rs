//! Periodic report files: the report of the installed allocator rewritten every N seconds by a
//! background thread (`SQLALLOC_REPORT_INTERVAL`, `sqlalloc_report_every`,
//! [`crate::report_every`]), and once more at exit by whoever calls [`final_write`] (the preload
//! library's exit hook).
//!
//! Each write is whole and atomic ([`crate::report::write_file_atomically`]: a new file with an
//! unpredictable name in the same directory, renamed over the path), so a reader polling the
//! file — node_exporter's textfile collector, a `tail`, a test — never sees half a report, and a
//! process stopped by `SIGTERM` (no exit hook runs) leaves its last whole file behind.
//!
//! The writer and [`final_write`] never write at the same time (a flag taken with a
//! compare-exchange, not a mutex, so that a child forked while a parent thread held it can
//! simply clear it). After [`final_write`] the writer stops. In a child forked after the writer
//! started, the writer is started again (`src/forking.rs`); `%p` in the path gives each process
//! its own file.
//!
//! Writing to a file, the writer thread has a descriptor table of its own (`src/fdtable.rs`), so
//! that it does not slow SQLite's file I/O down; writing to standard error it shares the
//! program's, to follow the program's redirections.

use crate::error::Error;
use crate::report::{FdWriter, Report, Target};
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The target and the interval, set once per process.
static CONFIG: OnceLock<(Target, Duration)> = OnceLock::new();
/// Process id of the process whose writer thread runs (0: none).
static RUNNING_PID: AtomicU32 = AtomicU32::new(0);
/// Set while a report is being written.
static WRITING: AtomicBool = AtomicBool::new(false);
/// Set by [`final_write`]: the writer writes no more.
static STOPPED: AtomicBool = AtomicBool::new(false);
/// Set once a failed write was reported on stderr (one line per process, not one per interval).
static SAID: AtomicBool = AtomicBool::new(false);

/// Parse `SQLALLOC_REPORT_INTERVAL`: a whole number of seconds, at least 1.
pub fn parse_interval(s: &str) -> Result<u64, String> {
    let t = s.trim();
    match t.parse::<u64>() {
        Ok(0) => Err(format!("'{s}': the interval must be at least 1 second")),
        Ok(n) if n > 86_400 * 365 => Err(format!("'{s}': the interval is over a year")),
        Ok(n) => Ok(n),
        Err(_) if t.is_empty() => Err("empty interval: give a whole number of seconds".into()),
        Err(_) => Err(format!(
            "'{s}' is not a whole number of seconds (an integer, at least 1)"
        )),
    }
}

/// Rewrite the report `target` (`json:PATH` or `prometheus:PATH`) every `seconds` seconds from a
/// new background thread, until [`final_write`]. Errors: [`Error::BadReport`] for a bad target
/// or interval, [`Error::AlreadyReporting`] when a periodic report runs already.
pub fn report_every(target: &str, seconds: u64) -> Result<(), Error> {
    let bad = |reason: String| Error::BadReport {
        what: target.to_string(),
        reason,
    };
    let t = Target::parse(target).map_err(bad)?;
    if t == Target::Stderr {
        return Err(bad(
            "periodic reports go to a file: use json:PATH or prometheus:PATH".into(),
        ));
    }
    if seconds == 0 {
        return Err(Error::BadReport {
            what: seconds.to_string(),
            reason: "the interval must be at least 1 second".into(),
        });
    }
    if CONFIG.set((t, Duration::from_secs(seconds))).is_err() {
        return Err(Error::AlreadyReporting);
    }
    crate::forking::register();
    spawn().map_err(|e| Error::BadReport {
        what: target.to_string(),
        reason: format!("cannot start the writer thread: {e}"),
    })
}

/// Start the writer thread of this process.
fn spawn() -> io::Result<()> {
    let Some((target, every)) = CONFIG.get() else {
        return Ok(());
    };
    RUNNING_PID.store(std::process::id(), Ordering::Release);
    std::thread::Builder::new()
        .name("sqlalloc-report".into())
        .spawn(move || run(target, *every))
        .map(drop)
        .inspect_err(|_| RUNNING_PID.store(0, Ordering::Release))
}

fn run(target: &Target, every: Duration) {
    // A descriptor table of its own (src/fdtable.rs), unless the report goes to the program's
    // standard error, which the writer must keep reaching by number as the program redirects it.
    let private = matches!(target, Target::File(..)) && crate::fdtable::own_empty_table();
    let mut next = Instant::now() + every;
    loop {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += every;
        if STOPPED.load(Ordering::Acquire) {
            return;
        }
        if !WRITING.swap(true, Ordering::Acquire) {
            if STOPPED.load(Ordering::Acquire) {
                WRITING.store(false, Ordering::Release);
                return;
            }
            let res = write(target);
            WRITING.store(false, Ordering::Release);
            if let Err(e) = res {
                if !SAID.swap(true, Ordering::Relaxed) {
                    let line = format!("sqlalloc: cannot write the periodic report: {e}\n");
                    crate::fdtable::write_to_program_stderr(private, &line);
                }
            }
        }
        // A late wake-up (a suspended process) skips the missed rounds instead of catching up.
        let now = Instant::now();
        if next < now {
            next = now + every;
        }
    }
}

fn write(target: &Target) -> io::Result<()> {
    match Report::capture_installed() {
        Some(r) => r.write_to(target),
        None => Ok(()),
    }
}

/// Whether this process's periodic writer runs.
pub fn running_here() -> bool {
    let pid = RUNNING_PID.load(Ordering::Acquire);
    pid != 0 && pid == std::process::id()
}

/// Stop the writer and write the report once more, now (at exit). `None` when no periodic writer
/// runs in this process. Waits at most 2 s for a write in progress to finish.
pub fn final_write() -> Option<io::Result<()>> {
    if !running_here() {
        return None;
    }
    let (target, _) = CONFIG.get()?;
    STOPPED.store(true, Ordering::Release);
    let start = Instant::now();
    while WRITING.swap(true, Ordering::Acquire) {
        if start.elapsed() > Duration::from_secs(2) {
            return Some(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "a periodic write did not finish within 2 s",
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // WRITING stays set: nobody writes after the final report.
    Some(write(target))
}

/// In a forked child (the `pthread_atfork` handler): start the writer again if it ran in the
/// parent.
pub(crate) fn after_fork_in_child() {
    if RUNNING_PID.load(Ordering::Acquire) == 0 || STOPPED.load(Ordering::Acquire) {
        return;
    }
    // A parent thread may have been writing at the fork: that write does not exist here.
    WRITING.store(false, Ordering::Release);
    SAID.store(false, Ordering::Relaxed);
    if spawn().is_err() {
        let _ = FdWriter(2)
            .write_all(b"sqlalloc: cannot start the periodic report writer in a forked child\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_whole_seconds_of_at_least_one() {
        assert_eq!(parse_interval("1"), Ok(1));
        assert_eq!(parse_interval(" 30 "), Ok(30));
        for (bad, says) in [
            ("0", "at least 1 second"),
            ("-1", "not a whole number"),
            ("1.5", "not a whole number"),
            ("abc", "not a whole number"),
            ("", "empty interval"),
            ("99999999999", "over a year"),
        ] {
            let e = parse_interval(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
