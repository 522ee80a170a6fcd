//! Reports: what the installed allocator has done, in three formats, and the leak list.
//!
//! A [`Report`] is captured at one moment ([`Report::capture`]): the backend and spec, every
//! counter of `sqlalloc_stats`, the request-size histogram, the limit layer's state, SQLite's own
//! `sqlite3_memory_used()` read at the same moment when it can be called, and for the `debug`
//! backend the live blocks with their sizes and backtraces. It is then rendered as
//!
//! - [`Format::Text`]: a short human table (what `SQLALLOC_REPORT=stderr` prints);
//! - [`Format::Json`]: one JSON object (`json:PATH`);
//! - [`Format::Prometheus`]: the Prometheus text exposition format, metric family
//!   `sqlite_memory_*` (`prometheus:PATH`), listed in [`render_prometheus`].
//!
//! A [`Target`] names where a report goes, with the syntax of `SQLALLOC_REPORT` and of the C
//! function `sqlalloc_report`: `stderr`, `json:PATH` or `prometheus:PATH`. `%p` in a path is
//! replaced by the process id. Files are written to a temporary name beside `PATH` and renamed
//! over it, so a reader (a Prometheus textfile collector, say) never sees half a report.
//!
//! Nothing here goes through SQLite's allocator or takes a lock SQLite might hold; the only SQLite
//! function called is `sqlite3_memory_used()`, never from an allocation path.

use crate::counters::{Stats, HIST_BUCKETS};
use crate::methods::{Held, MemMethods};
use crate::sqlite::{self, Functions};
use crate::stack::Stack;
use std::ffi::c_int;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::Path;

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

// ---------------------------------------------------------------------------------------------
// SQLite's own view.

/// SQLite's own figures (`sqlite3_status64`), read through the SQLite the allocator went into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SqliteStatus {
    /// Whether SQLite counts its memory (`SQLITE_CONFIG_MEMSTATUS`, on by default). When it does
    /// not, `memory_used`, `memory_used_peak`, `malloc_count` and `largest_request` read 0 in
    /// SQLite and are not facts: reports leave them out and say so. Inferred: SQLite counts none
    /// of the blocks that the allocator's counters show live.
    pub memstatus: bool,
    /// `SQLITE_STATUS_MEMORY_USED`, current: `sqlite3_memory_used()`.
    pub memory_used: i64,
    /// `SQLITE_STATUS_MEMORY_USED`, highwater: `sqlite3_memory_highwater(0)`.
    pub memory_used_peak: i64,
    /// `SQLITE_STATUS_MALLOC_COUNT`, current: live allocations SQLite counts.
    pub malloc_count: i64,
    /// `SQLITE_STATUS_PAGECACHE_USED`, current: pages taken from a `SQLITE_CONFIG_PAGECACHE`
    /// buffer (0 without one).
    pub pagecache_used: i64,
    /// `SQLITE_STATUS_PAGECACHE_OVERFLOW`, current: bytes of page-cache lines that came from the
    /// allocator (counted whether memstatus is on or not).
    pub pagecache_overflow: i64,
    /// `SQLITE_STATUS_MALLOC_SIZE`, highwater: the largest request SQLite made.
    pub largest_request: i64,
}

impl SqliteStatus {
    /// Read now, through `f`; `None` when `sqlite3_status64` is not known. `live_blocks` is the
    /// allocator's count of live blocks read at the same moment (to tell whether memstatus is on).
    pub fn read(f: &Functions, live_blocks: i64) -> Option<SqliteStatus> {
        if !f.has_status64() {
            return None;
        }
        let get = |op| f.status64(op).unwrap_or((0, 0));
        let (memory_used, memory_used_peak) = get(sqlite::SQLITE_STATUS_MEMORY_USED);
        let (malloc_count, _) = get(sqlite::SQLITE_STATUS_MALLOC_COUNT);
        let (pagecache_used, _) = get(sqlite::SQLITE_STATUS_PAGECACHE_USED);
        let (pagecache_overflow, _) = get(sqlite::SQLITE_STATUS_PAGECACHE_OVERFLOW);
        let (_, largest_request) = get(sqlite::SQLITE_STATUS_MALLOC_SIZE);
        let memstatus =
            live_blocks <= 0 || malloc_count > 0 || memory_used > 0 || memory_used_peak > 0;
        Some(SqliteStatus {
            memstatus,
            memory_used,
            memory_used_peak,
            malloc_count,
            pagecache_used,
            pagecache_overflow,
            largest_request,
        })
    }
}

/// The process's resident set size in bytes (`/proc/self/statm`, second field, times the page
/// size), or `None` where that file cannot be read.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(page).ok().map(|p| pages * p)
}

// ---------------------------------------------------------------------------------------------
// The report.

/// One live block in a [`Report`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Address as handed to SQLite.
    pub addr: usize,
    /// Bytes requested for it.
    pub size: usize,
    /// Return addresses of the allocating call stack, innermost first (empty unless the `debug`
    /// backend keeps backtraces).
    pub backtrace: Vec<usize>,
}

/// Everything a report shows, captured at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Process id.
    pub pid: u32,
    /// Backend name (`system`, `debug`, `memsys3`, `memsys5`, `tlsf`, …).
    pub backend: String,
    /// The spec the allocator was built from.
    pub spec: String,
    /// Every counter of `sqlalloc_stats`.
    pub stats: Stats,
    /// Request sizes of xMalloc and xRealloc calls: bucket `i` counts requests of
    /// `2^(i-1) < n <= 2^i` bytes (bucket 0: 0 or 1 byte), the last bucket everything larger.
    pub histogram: [u64; HIST_BUCKETS],
    /// The limit layer: `(max_bytes, used_bytes)`.
    pub limit: Option<(u64, u64)>,
    /// `sqlite3_memory_used()` read at the same moment as `stats`, when SQLite could be asked.
    pub sqlite_memory_used: Option<i64>,
    /// SQLite's `sqlite3_status64` figures, when SQLite could be asked.
    pub sqlite_status: Option<SqliteStatus>,
    /// What the allocator holds beyond the live blocks ([`MemMethods::footprint`]).
    pub allocator: Vec<Held>,
    /// The process's resident set size in bytes ([`resident_bytes`]).
    pub resident_bytes: Option<u64>,
    /// The tracked connections ([`crate::connections`]), sampled where the rules allow.
    pub connections: Vec<crate::connections::Connection>,
    /// The scopes of the `scopes` layer, when there is one ([`crate::Scope`]).
    pub scopes: Option<Vec<crate::scopes::ScopeInfo>>,
    /// Live blocks, for backends that track them (`debug`); `None` for the others.
    pub live_blocks: Option<Vec<Block>>,
}

impl Report {
    /// Capture the state of `s` now, asking SQLite through `sqlite` (see
    /// [`sqlite::functions`]). `sqlite3_memory_used()` is read just before and just after the
    /// counters, again (a few times) if another thread allocated in between, so that the two agree
    /// on one moment. Takes no lock of the allocator: the counters, the footprint and the limit
    /// are read without one.
    pub fn capture(s: &Stack, sqlite: &Functions) -> Report {
        let (stats, used) = if !sqlite.has_memory_used() {
            (s.stats(), None)
        } else {
            let mut tries = 0;
            loop {
                let before = sqlite.memory_used();
                let st = s.stats();
                let after = sqlite.memory_used();
                tries += 1;
                if before == after || tries == 5 {
                    break (st, after);
                }
            }
        };
        let sqlite_status = SqliteStatus::read(sqlite, stats.current_count);
        let memstatus = sqlite_status.is_none_or(|st| st.memstatus);
        let live_blocks = (s.backend().name() == "debug").then(|| {
            let mut v = Vec::new();
            s.live_blocks(&mut |b| {
                v.push(Block {
                    addr: b.addr,
                    size: b.requested,
                    backtrace: b.backtrace.to_vec(),
                })
            });
            v
        });
        Report {
            pid: std::process::id(),
            backend: s.backend().name().to_string(),
            spec: s.spec().to_string(),
            stats,
            histogram: s.counters().histogram(),
            limit: s.limit().map(|l| (l.max(), l.used())),
            // With memstatus off, sqlite3_memory_used() reads 0: not a fact.
            sqlite_memory_used: used.filter(|_| memstatus),
            sqlite_status,
            allocator: s.footprint(),
            resident_bytes: resident_bytes(),
            connections: if crate::connections::count() > 0 {
                crate::connections::snapshot()
            } else {
                Vec::new()
            },
            scopes: s.scopes().map(|sc| sc.list()),
            live_blocks,
        }
    }

    /// Capture the installed allocator (asking the SQLite it went into), or `None` when nothing
    /// is installed.
    pub fn capture_installed() -> Option<Report> {
        let s = crate::installed::current()?;
        Some(Report::capture(s, &sqlite::functions()))
    }

    /// Render in `format`.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Text => render_text(self, TEXT_MAX_BLOCKS),
            Format::Json => render_json(self),
            Format::Prometheus => render_prometheus(self),
        }
    }

    /// Write to `target`. A file target is written whole under a temporary name in the same
    /// directory, then renamed over the path ([`write_file_atomically`]).
    pub fn write_to(&self, target: &Target) -> io::Result<()> {
        match target {
            Target::Stderr => {
                // One write for the whole table, so lines of other threads do not interleave.
                FdWriter(2).write_all(self.render(Format::Text).as_bytes())
            }
            Target::File(format, path) => {
                let path = expand_path(path);
                write_file_atomically(Path::new(&path), self.render(*format).as_bytes())
                    .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))
            }
        }
    }
}

/// Write `bytes` to `path` so that a reader sees either the old file or the new one, whole: they
/// go to a new file in the same directory, named `.NAME.XXXXXXXXXXXXXXXX.tmp` (16 random hex
/// digits, from `getrandom`), created with `O_CREAT | O_EXCL | O_NOFOLLOW` and mode 0666 less the
/// umask, which is then renamed over `path` (the convention of node_exporter's textfile
/// collector, which ignores names not ending in `.prom`). A symlink planted under the temporary
/// name makes the create fail rather than be followed, and `rename` replaces a symlink at `path`
/// itself, never its target. On error the temporary file is removed.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name in the path"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut last = None;
    for _ in 0..4 {
        let tmp = dir.join(format!(
            ".{}.{:016x}.tmp",
            name.to_string_lossy(),
            random_u64()
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp);
        let mut file = match file {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                last = Some(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        let res = file
            .write_all(bytes)
            .and_then(|()| std::fs::rename(&tmp, path));
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        return res;
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free temporary name")))
}

/// 64 random bits from the kernel (`getrandom`), or, if it refuses, from the clock, the process
/// id and a counter (temporary names must not be predictable; they must never repeat either).
fn random_u64() -> u64 {
    let mut v = 0u64;
    // SAFETY: getrandom writes at most 8 bytes into `v`, which has 8 writable bytes.
    let n = unsafe { libc::getrandom((&mut v as *mut u64).cast(), 8, libc::GRND_NONBLOCK) };
    if n == 8 {
        return v;
    }
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ (u64::from(std::process::id()) << 32)
        ^ COUNT
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// A report format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A short human table.
    Text,
    /// One JSON object.
    Json,
    /// Prometheus text exposition format (version 0.0.4).
    Prometheus,
}

impl Format {
    /// Parse a format name: `text`, `json` or `prometheus`.
    pub fn parse(s: &str) -> Result<Format, String> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            "prometheus" => Ok(Format::Prometheus),
            _ => Err(format!(
                "unknown report format '{s}' (use text, json or prometheus)"
            )),
        }
    }
}

/// Where a report goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The text table on standard error.
    Stderr,
    /// A file in the given format (`json:PATH`, `prometheus:PATH`); `%p` in the path stands for
    /// the process id.
    File(Format, String),
}

impl Target {
    /// Parse `stderr`, `json:PATH` or `prometheus:PATH`. The error names the offending part.
    pub fn parse(s: &str) -> Result<Target, String> {
        let s = s.trim();
        if s == "stderr" {
            return Ok(Target::Stderr);
        }
        let (kind, path) = s.split_once(':').unwrap_or((s, ""));
        let format = match kind {
            "json" => Format::Json,
            "prometheus" => Format::Prometheus,
            _ => {
                return Err(format!(
                    "bad report target '{s}': use stderr, json:PATH or prometheus:PATH"
                ))
            }
        };
        if path.is_empty() {
            return Err(format!(
                "bad report target '{s}': '{kind}:' needs a file path"
            ));
        }
        Ok(Target::File(format, path.to_string()))
    }
}

/// Replace `%p` by the process id.
fn expand_path(path: &str) -> String {
    path.replace("%p", &std::process::id().to_string())
}

/// Most live blocks listed by the text table (the JSON report lists all).
pub const TEXT_MAX_BLOCKS: usize = 20;

/// Upper bound of histogram bucket `i` in bytes, `None` for the last (unbounded) bucket.
pub fn bucket_le(i: usize) -> Option<u64> {
    (i + 1 < HIST_BUCKETS).then(|| 1u64 << i)
}

/// The text table (what `SQLALLOC_REPORT=stderr` prints), listing at most `max_blocks` live
/// blocks.
pub fn render_text(r: &Report, max_blocks: usize) -> String {
    let mut o = String::new();
    let st = &r.stats;
    let _ = writeln!(
        o,
        "sqlalloc report (pid {}): backend {}, spec \"{}\"",
        r.pid, r.backend, r.spec
    );
    let used = match r.sqlite_memory_used {
        Some(u) => format!("   sqlite3_memory_used() = {u}"),
        None => String::new(),
    };
    let rows: [(&str, i64, &str); 8] = [
        ("current_bytes", st.current_bytes, &used),
        ("peak_bytes", st.peak_bytes, ""),
        ("current_count", st.current_count, "   live blocks"),
        ("malloc_calls", st.malloc_calls, ""),
        ("free_calls", st.free_calls, ""),
        ("realloc_calls", st.realloc_calls, ""),
        ("failed_calls", st.failed_calls, ""),
        ("largest_request", st.largest_request, "   bytes"),
    ];
    for (name, v, note) in rows {
        let _ = writeln!(o, "  {name:<16}{v:>16}{note}");
    }
    if let Some((max, used)) = r.limit {
        let _ = writeln!(o, "  {:<16}{:>16}   of {} bytes", "limit_used", used, max);
    }
    if let Some(st) = &r.sqlite_status {
        if st.memstatus {
            let _ = writeln!(
                o,
                "  sqlite3_status64: memory_used {} (peak {}), allocations {}, largest request {}",
                st.memory_used, st.memory_used_peak, st.malloc_count, st.largest_request
            );
        } else {
            let _ = writeln!(
                o,
                "  sqlite3_status64: memstatus is off (SQLITE_CONFIG_MEMSTATUS 0): SQLite does \
                 not count its memory; the counters above are the only figures"
            );
        }
        let _ = writeln!(
            o,
            "  sqlite3_status64: page cache overflow {} bytes, page cache buffer {} pages used",
            st.pagecache_overflow, st.pagecache_used
        );
    }
    if !r.allocator.is_empty() {
        let _ = writeln!(o, "  allocator ({}):", r.backend);
        for h in &r.allocator {
            let _ = writeln!(o, "  {:<28}{:>16}   {}", h.key, h.bytes, h.help);
        }
    }
    if let Some(scopes) = &r.scopes {
        let _ = writeln!(o, "  scopes ({}):", scopes.len());
        for sc in scopes {
            let cap = sc
                .max_bytes
                .map_or_else(String::new, |m| format!(", cap {m}"));
            let _ = writeln!(
                o,
                "    {:<28}{:>12} bytes, peak {}, failed calls {}{cap}",
                sc.name, sc.stats.current_bytes, sc.stats.peak_bytes, sc.stats.failed_calls
            );
        }
    }
    if !r.connections.is_empty() {
        let _ = writeln!(o, "  connections ({} tracked):", r.connections.len());
        for c in &r.connections {
            match c.last {
                Some((s, by, age)) => {
                    let by = match by {
                        crate::connections::SampledBy::Reader => "read",
                        crate::connections::SampledBy::Owner => "sampled by its owner",
                    };
                    let busy = if c.busy { ", busy now" } else { "" };
                    let _ = writeln!(
                        o,
                        "    {:<28}{:>12} bytes: cache {}, schema {}, stmt {} ({by} {}s ago{busy})",
                        c.label,
                        s.bytes(),
                        s.cache,
                        s.schema,
                        s.stmt,
                        age.as_secs()
                    );
                }
                None => {
                    let _ = writeln!(o, "    {:<28} not sampled yet", c.label);
                }
            }
        }
        let _ = writeln!(
            o,
            "    {:<28}{:>12} bytes (SQLite's total minus the connections)",
            "other",
            sqlite_total(r) - connections_bytes(r)
        );
    }
    if let Some(rss) = r.resident_bytes {
        let _ = writeln!(
            o,
            "  {:<16}{:>16}   bytes resident, whole process",
            "process_rss", rss
        );
    }
    let total: u64 = r.histogram.iter().sum();
    if total > 0 {
        let _ = writeln!(o, "  request size (bytes)      calls");
        let widest = r.histogram.iter().copied().max().unwrap_or(1).max(1);
        for (i, &c) in r.histogram.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let lo = if i == 0 { 0 } else { (1u64 << (i - 1)) + 1 };
            let range = match bucket_le(i) {
                Some(hi) if hi == lo => format!("{hi}"),
                Some(hi) => format!("{lo}-{hi}"),
                None => format!("{lo}+"),
            };
            let bar = "#".repeat(((c * 30).div_ceil(widest)) as usize);
            let _ = writeln!(o, "  {range:>20}{c:>11}  {bar}");
        }
    }
    if let Some(blocks) = &r.live_blocks {
        let _ = writeln!(o, "  live blocks: {}", blocks.len());
        for b in blocks.iter().take(max_blocks) {
            let _ = writeln!(o, "    {} bytes at {:#x}", b.size, b.addr);
            for (i, pc) in b.backtrace.iter().enumerate() {
                let _ = writeln!(o, "      #{i} {pc:#x} {}", symbolize(*pc));
            }
        }
        if blocks.len() > max_blocks {
            let _ = writeln!(
                o,
                "    ... and {} more (the JSON report lists all)",
                blocks.len() - max_blocks
            );
        }
    }
    o
}

/// `s` as a JSON string literal.
fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    crate::render::escape(&mut o, s);
    o.push('"');
    o
}

/// The JSON report: one object.
///
/// ```text
/// { "pid", "backend", "spec",
///   "stats": { every field of sqlalloc_stats },
///   "sqlite_memory_used": n | null,
///   "limit": { "max_bytes", "used_bytes" } | null,
///   "sqlite_status": { "memstatus": bool, ["memory_used", "memory_used_peak", "malloc_count",
///                      "largest_request" only when memstatus is on,] "pagecache_used",
///                      "pagecache_overflow" } | null (SQLite could not be asked),
///   "allocator": { KEY: bytes, ... } (MemMethods::footprint: what the allocator holds),
///   "process_resident_bytes": n | null,
///   "request_size_histogram": [ { "le": 2^i | null, "count": n }, ... ]   (not cumulative)
///   "live_blocks": [ { "addr": "0x..", "size": n, "backtrace": [ "0x.. symbol (file)" ] } ]
///                  | null (backend does not track blocks) }
/// ```
pub fn render_json(r: &Report) -> String {
    let st = &r.stats;
    let mut o = String::new();
    let _ = write!(
        o,
        "{{\n  \"pid\": {},\n  \"backend\": {},\n  \"spec\": {},\n",
        r.pid,
        json_str(&r.backend),
        json_str(&r.spec)
    );
    let _ = writeln!(o, "  \"stats\": {},", st.to_json());
    let used = r
        .sqlite_memory_used
        .map_or_else(|| "null".to_string(), |u| u.to_string());
    let _ = writeln!(o, "  \"sqlite_memory_used\": {used},");
    match r.limit {
        Some((max, used)) => {
            let _ = writeln!(
                o,
                "  \"limit\": {{\"max_bytes\": {max}, \"used_bytes\": {used}}},"
            );
        }
        None => o.push_str("  \"limit\": null,\n"),
    }
    match &r.sqlite_status {
        None => o.push_str("  \"sqlite_status\": null,\n"),
        Some(st) => {
            let _ = write!(o, "  \"sqlite_status\": {{\"memstatus\": {}", st.memstatus);
            if st.memstatus {
                let _ = write!(
                    o,
                    ", \"memory_used\": {}, \"memory_used_peak\": {}, \"malloc_count\": {}, \
                     \"largest_request\": {}",
                    st.memory_used, st.memory_used_peak, st.malloc_count, st.largest_request
                );
            }
            let _ = writeln!(
                o,
                ", \"pagecache_used\": {}, \"pagecache_overflow\": {}}},",
                st.pagecache_used, st.pagecache_overflow
            );
        }
    }
    o.push_str("  \"allocator\": {");
    for (i, h) in r.allocator.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(o, "{sep}{}: {}", json_str(h.key), h.bytes);
    }
    o.push_str("},\n");
    let rss = r
        .resident_bytes
        .map_or_else(|| "null".to_string(), |v| v.to_string());
    let _ = writeln!(o, "  \"process_resident_bytes\": {rss},");
    match &r.scopes {
        None => o.push_str("  \"scopes\": null,\n"),
        Some(scopes) => {
            o.push_str("  \"scopes\": [");
            for (i, sc) in scopes.iter().enumerate() {
                let sep = if i == 0 { "\n" } else { ",\n" };
                let cap = sc
                    .max_bytes
                    .map_or_else(|| "null".to_string(), |m| m.to_string());
                let _ = write!(
                    o,
                    "{sep}    {{\"id\": {}, \"name\": {}, \"max_bytes\": {cap}, \"stats\": {}}}",
                    sc.id,
                    json_str(&sc.name),
                    sc.stats.to_json()
                );
            }
            o.push_str("\n  ],\n");
        }
    }
    o.push_str("  \"connections\": [");
    for (i, c) in r.connections.iter().enumerate() {
        let sep = if i == 0 { "\n" } else { ",\n" };
        let _ = write!(o, "{sep}    {{\"label\": {}", json_str(&c.label));
        if let Some((s, by, age)) = c.last {
            let by = match by {
                crate::connections::SampledBy::Reader => "reader",
                crate::connections::SampledBy::Owner => "owner",
            };
            let _ = write!(
                o,
                ", \"cache\": {}, \"schema\": {}, \"stmt\": {}, \"lookaside_slots\": {}, \
                 \"sampled_by\": \"{by}\", \"age_seconds\": {:.3}",
                s.cache,
                s.schema,
                s.stmt,
                s.lookaside_slots,
                age.as_secs_f64()
            );
        }
        let _ = write!(o, ", \"busy\": {}, \"mutex\": {}}}", c.busy, c.has_mutex);
    }
    o.push_str(if r.connections.is_empty() {
        "],\n"
    } else {
        "\n  ],\n"
    });
    if !r.connections.is_empty() {
        let _ = writeln!(
            o,
            "  \"connections_other_bytes\": {},",
            sqlite_total(r) - connections_bytes(r)
        );
    }
    o.push_str("  \"request_size_histogram\": [");
    for (i, c) in r.histogram.iter().enumerate() {
        let le = bucket_le(i).map_or_else(|| "null".to_string(), |v| v.to_string());
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(o, "{sep}{{\"le\": {le}, \"count\": {c}}}");
    }
    o.push_str("],\n");
    match &r.live_blocks {
        None => o.push_str("  \"live_blocks\": null\n"),
        Some(blocks) => {
            o.push_str("  \"live_blocks\": [");
            for (i, b) in blocks.iter().enumerate() {
                let sep = if i == 0 { "\n" } else { ",\n" };
                let bt: Vec<String> = b
                    .backtrace
                    .iter()
                    .map(|&pc| json_str(&format!("{pc:#x} {}", symbolize(pc))))
                    .collect();
                let _ = write!(
                    o,
                    "{sep}    {{\"addr\": \"{:#x}\", \"size\": {}, \"backtrace\": [{}]}}",
                    b.addr,
                    b.size,
                    bt.join(", ")
                );
            }
            o.push_str(if blocks.is_empty() { "]\n" } else { "\n  ]\n" });
        }
    }
    o.push_str("}\n");
    o
}

/// The type of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// A value that goes up and down.
    Gauge,
    /// A value that only goes up (its name ends in `_total`).
    Counter,
    /// A histogram: `_bucket{le}` and `_count` samples (no `_sum`: sizes are not summed).
    Histogram,
}

impl MetricType {
    /// The word of the `# TYPE` line.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Gauge => "gauge",
            MetricType::Counter => "counter",
            MetricType::Histogram => "histogram",
        }
    }
}

/// One sample of a [`Family`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Appended to the family's name: `""`, or `"_bucket"` / `"_count"` for a histogram.
    pub suffix: &'static str,
    /// Label names and values (not escaped), `backend` and `spec` first.
    pub labels: Vec<(&'static str, String)>,
    /// The value (every sqlalloc figure is an integer).
    pub value: i64,
}

/// One metric family of a report: what the Prometheus text format writes as `# HELP`, `# TYPE`
/// and sample lines, and what a client library's collector registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    /// Metric name (`sqlite_memory_*`), counters ending in `_total`.
    pub name: String,
    /// One-line help text, base units.
    pub help: String,
    /// The type.
    pub kind: MetricType,
    /// The samples.
    pub samples: Vec<Sample>,
}

/// The metric families of a report, in the order the exposition writes them. Every sample carries
/// the labels `backend` and `spec`. The families (see docs/preload.md, "Every metric", for the
/// table with sources):
///
/// - the counters: `sqlite_memory_current_bytes`, `_peak_bytes`, `_current_blocks`,
///   `_calls_total{op}`, `_failed_calls_total`, `_largest_request_bytes`;
/// - `sqlite_memory_request_size_bytes` (histogram);
/// - `sqlite_memory_limit_bytes` (with `+limit`);
/// - SQLite's own view, when SQLite could be asked: `sqlite_memory_sqlite_memstatus` (1 or 0),
///   and with memstatus on `sqlite_memory_sqlite_used_bytes`, `_sqlite_used_peak_bytes`,
///   `_sqlite_allocations`, `_sqlite_largest_request_bytes`; always
///   `sqlite_memory_sqlite_pagecache_used_pages` and `_sqlite_pagecache_overflow_bytes`;
/// - what the allocator holds: `sqlite_memory_allocator_<key>` for each [`Held`] figure;
/// - `sqlite_memory_process_resident_bytes`.
pub fn families(r: &Report) -> Vec<Family> {
    let base = || labels_of(r, None);
    let mut out = Vec::new();
    for (name, kind, help, samples) in crate::render::STATS_METRICS {
        let samples = samples
            .iter()
            .map(|(extra, get)| {
                let mut labels = base();
                if let Some((k, v)) = extra.split_once("=\"") {
                    let k: &'static str = match k {
                        "op" => "op",
                        _ => unreachable!("STATS_METRICS has only `op` labels"),
                    };
                    labels.push((k, v.trim_end_matches('"').to_string()));
                }
                Sample {
                    suffix: "",
                    labels,
                    value: get(&r.stats),
                }
            })
            .collect();
        out.push(Family {
            name: name.to_string(),
            help: help.to_string(),
            kind: if kind == "counter" {
                MetricType::Counter
            } else {
                MetricType::Gauge
            },
            samples,
        });
    }
    let mut buckets = Vec::with_capacity(HIST_BUCKETS + 1);
    let mut cum = 0u64;
    for (i, c) in r.histogram.iter().enumerate() {
        cum += c;
        let le = bucket_le(i).map_or_else(|| "+Inf".to_string(), |v| v.to_string());
        let mut labels = base();
        labels.push(("le", le));
        buckets.push(Sample {
            suffix: "_bucket",
            labels,
            value: to_i64(cum),
        });
    }
    buckets.push(Sample {
        suffix: "_count",
        labels: base(),
        value: to_i64(cum),
    });
    out.push(Family {
        name: "sqlite_memory_request_size_bytes".into(),
        help: "Sizes requested from xMalloc and xRealloc.".into(),
        kind: MetricType::Histogram,
        samples: buckets,
    });
    let gauge = |name: &str, help: &str, v: i64| Family {
        name: name.to_string(),
        help: help.to_string(),
        kind: MetricType::Gauge,
        samples: vec![Sample {
            suffix: "",
            labels: base(),
            value: v,
        }],
    };
    if let Some((max, _)) = r.limit {
        out.push(gauge(
            "sqlite_memory_limit_bytes",
            "Hard cap on current_bytes set by the limit layer.",
            to_i64(max),
        ));
    }
    if let Some(st) = &r.sqlite_status {
        out.push(gauge(
            "sqlite_memory_sqlite_memstatus",
            "1 when SQLite counts its own memory (SQLITE_CONFIG_MEMSTATUS on); 0 when it does \
             not, and its memory_used, allocations and largest-request figures are then absent \
             rather than zero.",
            i64::from(st.memstatus),
        ));
    }
    if let Some(u) = r.sqlite_memory_used {
        out.push(gauge(
            "sqlite_memory_sqlite_used_bytes",
            "sqlite3_memory_used() read together with the counters, in bytes.",
            u,
        ));
    }
    if let Some(st) = r.sqlite_status {
        if st.memstatus {
            out.push(gauge(
                "sqlite_memory_sqlite_used_peak_bytes",
                "sqlite3_status64(SQLITE_STATUS_MEMORY_USED) highwater, in bytes.",
                st.memory_used_peak,
            ));
            out.push(gauge(
                "sqlite_memory_sqlite_allocations",
                "sqlite3_status64(SQLITE_STATUS_MALLOC_COUNT): live allocations as SQLite counts \
                 them.",
                st.malloc_count,
            ));
            out.push(gauge(
                "sqlite_memory_sqlite_largest_request_bytes",
                "sqlite3_status64(SQLITE_STATUS_MALLOC_SIZE) highwater: the largest request \
                 SQLite made, in bytes.",
                st.largest_request,
            ));
        }
        out.push(gauge(
            "sqlite_memory_sqlite_pagecache_used_pages",
            "sqlite3_status64(SQLITE_STATUS_PAGECACHE_USED): pages taken from a \
             SQLITE_CONFIG_PAGECACHE buffer (0 without one).",
            st.pagecache_used,
        ));
        out.push(gauge(
            "sqlite_memory_sqlite_pagecache_overflow_bytes",
            "sqlite3_status64(SQLITE_STATUS_PAGECACHE_OVERFLOW): bytes of page-cache lines \
             taken from the allocator.",
            st.pagecache_overflow,
        ));
    }
    for h in &r.allocator {
        out.push(gauge(
            &format!("sqlite_memory_allocator_{}", h.key),
            h.help,
            to_i64(h.bytes),
        ));
    }
    connection_families(r, &mut out);
    scope_families(r, &mut out);
    if let Some(rss) = r.resident_bytes {
        out.push(gauge(
            "sqlite_memory_process_resident_bytes",
            "Resident set size of the whole process (/proc/self/statm), in bytes.",
            to_i64(rss),
        ));
    }
    out
}

/// The labels every sample of a report carries (`backend`, `spec`), and `extra` after them.
fn labels_of(r: &Report, extra: Option<(&'static str, &str)>) -> Vec<(&'static str, String)> {
    let mut v = vec![("backend", r.backend.clone()), ("spec", r.spec.clone())];
    v.extend(extra.map(|(k, val)| (k, val.to_string())));
    v
}

/// SQLite's total as the per-connection breakdown divides it: `sqlite3_memory_used()` when read,
/// else the counters' `current_bytes` (equal while memstatus is on).
pub fn sqlite_total(r: &Report) -> i64 {
    r.sqlite_memory_used.unwrap_or(r.stats.current_bytes)
}

/// The bytes of the tracked connections' last samples, summed.
pub fn connections_bytes(r: &Report) -> i64 {
    r.connections
        .iter()
        .filter_map(|c| c.last.map(|(s, _, _)| s.bytes()))
        .sum()
}

/// The per-connection families (nothing when no connection is tracked).
fn connection_families(r: &Report, out: &mut Vec<Family>) {
    if r.connections.is_empty() {
        return;
    }
    let base = |conn: &str| labels_of(r, Some(("connection", conn)));
    let mut bytes = Vec::new();
    let (mut slots, mut ages, mut owner) = (Vec::new(), Vec::new(), Vec::new());
    for c in &r.connections {
        let Some((s, by, age)) = c.last else { continue };
        for (use_, v) in [("cache", s.cache), ("schema", s.schema), ("stmt", s.stmt)] {
            let mut labels = base(&c.label);
            labels.push(("use", use_.to_string()));
            bytes.push(Sample {
                suffix: "",
                labels,
                value: v,
            });
        }
        let one = |v: i64| Sample {
            suffix: "",
            labels: base(&c.label),
            value: v,
        };
        slots.push(one(s.lookaside_slots));
        ages.push(one(i64::try_from(age.as_secs()).unwrap_or(i64::MAX)));
        owner.push(one(i64::from(by == crate::connections::SampledBy::Owner)));
    }
    let mut other = base("other");
    other.push(("use", "other".to_string()));
    bytes.push(Sample {
        suffix: "",
        labels: other,
        value: sqlite_total(r) - connections_bytes(r),
    });
    let family = |name: &str, help: &str, samples| Family {
        name: name.to_string(),
        help: help.to_string(),
        kind: MetricType::Gauge,
        samples,
    };
    out.push(family(
        "sqlite_connection_bytes",
        "Bytes of SQLite's memory by tracked connection and use (sqlite3_db_status \
         CACHE_USED_SHARED, SCHEMA_USED, STMT_USED, at the connection's last sample); \
         connection=\"other\" is SQLite's total minus the tracked connections' sum.",
        bytes,
    ));
    out.push(family(
        "sqlite_connection_lookaside_slots",
        "Lookaside slots in use by the connection (sqlite3_db_status LOOKASIDE_USED; a count).",
        slots,
    ));
    out.push(family(
        "sqlite_connection_sample_age_seconds",
        "Age of the connection's last sample, in seconds (a busy connection, or one without a \
         mutex, keeps an older sample).",
        ages,
    ));
    out.push(family(
        "sqlite_connection_sampled_by_owner",
        "1 when the connection's last sample was taken by its own thread (sqlalloc_sample, or \
         when it was tracked): a connection without a mutex is never read by another thread.",
        owner,
    ));
}

/// The scope families (nothing without a `scopes` layer).
fn scope_families(r: &Report, out: &mut Vec<Family>) {
    let Some(scopes) = &r.scopes else { return };
    let labels = |name: &str| labels_of(r, Some(("scope", name)));
    let each = |get: &dyn Fn(&crate::scopes::ScopeInfo) -> Option<i64>| -> Vec<Sample> {
        scopes
            .iter()
            .filter_map(|s| {
                Some(Sample {
                    suffix: "",
                    labels: labels(&s.name),
                    value: get(s)?,
                })
            })
            .collect()
    };
    let mut family = |name: &str, kind, help: &str, samples: Vec<Sample>| {
        if !samples.is_empty() {
            out.push(Family {
                name: name.to_string(),
                help: help.to_string(),
                kind,
                samples,
            });
        }
    };
    family(
        "sqlite_scope_current_bytes",
        MetricType::Gauge,
        "Bytes of SQLite's live blocks charged to the scope (sum of xSize; the scopes add up to \
         sqlite_memory_current_bytes).",
        each(&|s| Some(s.stats.current_bytes)),
    );
    family(
        "sqlite_scope_peak_bytes",
        MetricType::Gauge,
        "Highest current_bytes of the scope since it was created.",
        each(&|s| Some(s.stats.peak_bytes)),
    );
    family(
        "sqlite_scope_limit_bytes",
        MetricType::Gauge,
        "The scope's cap (only scopes created with one).",
        each(&|s| s.max_bytes.map(to_i64)),
    );
    family(
        "sqlite_scope_failed_calls_total",
        MetricType::Counter,
        "xMalloc/xRealloc calls of the scope that returned NULL (its cap, or the heap).",
        each(&|s| Some(s.stats.failed_calls)),
    );
}

/// `v` as an `i64`, saturating.
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A Prometheus label value, escaped.
fn prom_label(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    crate::render::escape(&mut o, s);
    o
}

/// Families in the Prometheus text exposition format (0.0.4).
pub fn write_families(out: &mut String, families: &[Family]) {
    for f in families {
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.as_str());
        for s in &f.samples {
            out.push_str(&f.name);
            out.push_str(s.suffix);
            for (i, (k, v)) in s.labels.iter().enumerate() {
                out.push(if i == 0 { '{' } else { ',' });
                let _ = write!(out, "{k}=\"{}\"", prom_label(v));
            }
            if !s.labels.is_empty() {
                out.push('}');
            }
            let _ = writeln!(out, " {}", s.value);
        }
    }
}

/// The Prometheus text exposition format (0.0.4) of a report: [`families`], written out.
pub fn render_prometheus(r: &Report) -> String {
    let mut o = String::new();
    write_families(&mut o, &families(r));
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend;

    fn sample() -> Report {
        let mut histogram = [0u64; HIST_BUCKETS];
        histogram[0] = 1;
        histogram[3] = 5;
        histogram[HIST_BUCKETS - 1] = 2;
        Report {
            pid: 7,
            backend: "debug".into(),
            spec: "debug:backtrace=2+limit:max=1M".into(),
            stats: Stats {
                current_bytes: 100,
                peak_bytes: 200,
                current_count: 2,
                malloc_calls: 6,
                free_calls: 4,
                realloc_calls: 2,
                failed_calls: 1,
                largest_request: 1 << 31,
            },
            histogram,
            limit: Some((1 << 20, 100)),
            sqlite_memory_used: Some(100),
            sqlite_status: Some(SqliteStatus {
                memstatus: true,
                memory_used: 100,
                memory_used_peak: 300,
                malloc_count: 2,
                pagecache_used: 0,
                pagecache_overflow: 64,
                largest_request: 1 << 31,
            }),
            allocator: vec![Held {
                key: "overhead_bytes",
                help: "Guards and headers of the live blocks.",
                bytes: 48,
            }],
            resident_bytes: Some(1 << 24),
            connections: Vec::new(),
            scopes: None,
            live_blocks: Some(vec![Block {
                addr: 0x1000,
                size: 64,
                backtrace: vec![sample as *const () as usize + 1],
            }]),
        }
    }

    #[test]
    fn targets_parse_and_bad_ones_name_the_part() {
        assert_eq!(Target::parse(" stderr "), Ok(Target::Stderr));
        assert_eq!(
            Target::parse("json:/tmp/a.json"),
            Ok(Target::File(Format::Json, "/tmp/a.json".into()))
        );
        assert_eq!(
            Target::parse("prometheus:x:y"),
            Ok(Target::File(Format::Prometheus, "x:y".into()))
        );
        let e = Target::parse("xml:/tmp/a").unwrap_err();
        assert!(e.contains("'xml:/tmp/a'"), "{e}");
        let e = Target::parse("json:").unwrap_err();
        assert!(e.contains("needs a file path"), "{e}");
        assert!(Target::parse("").is_err());
        assert!(Format::parse("yaml").unwrap_err().contains("'yaml'"));
    }

    #[test]
    fn prometheus_histogram_is_cumulative_and_labelled() {
        let p = render_prometheus(&sample());
        let l = "backend=\"debug\",spec=\"debug:backtrace=2+limit:max=1M\"";
        for line in [
            format!("sqlite_memory_current_bytes{{{l}}} 100"),
            format!("sqlite_memory_calls_total{{{l},op=\"realloc\"}} 2"),
            format!("sqlite_memory_request_size_bytes_bucket{{{l},le=\"1\"}} 1"),
            format!("sqlite_memory_request_size_bytes_bucket{{{l},le=\"4\"}} 1"),
            format!("sqlite_memory_request_size_bytes_bucket{{{l},le=\"8\"}} 6"),
            format!("sqlite_memory_request_size_bytes_bucket{{{l},le=\"1073741824\"}} 6"),
            format!("sqlite_memory_request_size_bytes_bucket{{{l},le=\"+Inf\"}} 8"),
            format!("sqlite_memory_request_size_bytes_count{{{l}}} 8"),
            format!("sqlite_memory_limit_bytes{{{l}}} 1048576"),
            format!("sqlite_memory_sqlite_used_bytes{{{l}}} 100"),
            format!("sqlite_memory_sqlite_memstatus{{{l}}} 1"),
            format!("sqlite_memory_sqlite_used_peak_bytes{{{l}}} 300"),
            format!("sqlite_memory_sqlite_allocations{{{l}}} 2"),
            format!("sqlite_memory_sqlite_pagecache_overflow_bytes{{{l}}} 64"),
            format!("sqlite_memory_allocator_overhead_bytes{{{l}}} 48"),
            format!("sqlite_memory_process_resident_bytes{{{l}}} 16777216"),
            "# TYPE sqlite_memory_request_size_bytes histogram".to_string(),
        ] {
            assert!(p.lines().any(|x| x == line), "missing {line:?} in\n{p}");
        }
        assert!(!p.contains("_sum"), "no _sum is tracked");
        // Every sample line is `name{labels} value` with an integer value.
        for line in p.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = line.rsplit_once(' ').unwrap();
            assert!(v.parse::<i64>().is_ok(), "{line}");
        }
        assert_eq!(prom_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn memstatus_off_leaves_sqlites_zeros_out_and_says_so() {
        let mut r = sample();
        r.sqlite_memory_used = None;
        r.sqlite_status = Some(SqliteStatus {
            memstatus: false,
            pagecache_overflow: 8,
            ..SqliteStatus::default()
        });
        let p = render_prometheus(&r);
        assert!(p.contains("\nsqlite_memory_sqlite_memstatus{"), "{p}");
        assert!(p.contains("} 0\n"), "{p}");
        for absent in [
            "sqlite_memory_sqlite_used_bytes",
            "sqlite_memory_sqlite_used_peak_bytes",
            "sqlite_memory_sqlite_allocations",
            "sqlite_memory_sqlite_largest_request_bytes",
        ] {
            assert!(!p.contains(absent), "{absent} in\n{p}");
        }
        assert!(p.contains("sqlite_memory_sqlite_pagecache_overflow_bytes{"));
        let t = render_text(&r, 0);
        assert!(t.contains("memstatus is off"), "{t}");
        let j = render_json(&r);
        assert!(
            j.contains("\"sqlite_status\": {\"memstatus\": false, \"pagecache_used\""),
            "{j}"
        );
        assert!(!j.contains("\"memory_used\""), "{j}");
        // Read through SQLite: memstatus off is inferred from live blocks SQLite does not count.
        unsafe extern "C" fn zeros(_: c_int, cur: *mut i64, hi: *mut i64, _: c_int) -> c_int {
            // SAFETY: the out-parameters are valid (sqlite3_status64's contract).
            unsafe { (*cur, *hi) = (0, 0) };
            0
        }
        // SAFETY: `zeros` has the signature and the behaviour sqlite3_status64 promises.
        let f = unsafe { Functions::new(None, Some(zeros), None) };
        assert!(!SqliteStatus::read(&f, 3).unwrap().memstatus);
        assert!(
            SqliteStatus::read(&f, 0).unwrap().memstatus,
            "nothing live: zeros are facts"
        );
        assert_eq!(SqliteStatus::read(&Functions::default(), 3), None);
    }

    #[test]
    fn json_and_text_carry_every_counter_and_the_blocks() {
        let r = sample();
        let j = render_json(&r);
        for key in [
            "\"current_bytes\": 100",
            "\"peak_bytes\": 200",
            "\"current_count\": 2",
            "\"malloc_calls\": 6",
            "\"free_calls\": 4",
            "\"realloc_calls\": 2",
            "\"failed_calls\": 1",
            "\"largest_request\": 2147483648",
            "\"sqlite_memory_used\": 100",
            "{\"le\": 8, \"count\": 5}",
            "{\"le\": null, \"count\": 2}",
            "\"addr\": \"0x1000\", \"size\": 64",
            "\"max_bytes\": 1048576",
        ] {
            assert!(j.contains(key), "missing {key} in\n{j}");
        }
        // Each frame is its address followed by where dladdr places it (the test binary here).
        let exe = std::env::current_exe().unwrap();
        let exe = exe.file_name().unwrap().to_string_lossy();
        assert!(
            j.contains("\"backtrace\": [\"0x") && j.contains(&*exe),
            "backtrace symbolized:\n{j}"
        );
        let t = render_text(&r, 0);
        assert!(t.contains("sqlite3_memory_used() = 100"), "{t}");
        assert!(t.contains("live blocks: 1"), "{t}");
        assert!(t.contains("... and 1 more"), "{t}");
        assert!(t.contains("1073741825+"), "{t}");
        assert_eq!(json_str("a\"\u{1}\\"), "\"a\\\"\\u0001\\\\\"");
    }

    #[test]
    fn capture_reads_a_stack_and_writes_files() {
        let s = Stack::new(Box::new(backend::System), Some(1 << 20), "system".into());
        let p = s.malloc(100).unwrap();
        let q = s.malloc(5000).unwrap();
        // SAFETY: `q` is a live block of `s`.
        let q = unsafe { s.realloc(q, 9000) }.unwrap();
        unsafe extern "C" fn used() -> i64 {
            42
        }
        // SAFETY: `used` has the signature and the behaviour sqlite3_memory_used promises.
        let fns = unsafe { Functions::new(Some(used), None, None) };
        let r = Report::capture(&s, &fns);
        assert_eq!(r.sqlite_memory_used, Some(42));
        assert!(r.resident_bytes.is_some_and(|v| v > 0));
        assert_eq!(r.stats.malloc_calls, 2);
        assert_eq!(r.stats.realloc_calls, 1);
        assert_eq!(r.histogram[bucket_index(100)], 1);
        assert_eq!(r.histogram[bucket_index(5000)], 1);
        assert_eq!(r.histogram[bucket_index(9000)], 1);
        assert_eq!(r.live_blocks, None, "system does not track blocks");
        assert_eq!(r.limit.map(|l| l.1), Some(r.stats.current_bytes as u64));
        let dir = std::env::temp_dir().join(format!("sqlalloc-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r-%p.prom").to_string_lossy().into_owned();
        r.write_to(&Target::File(Format::Prometheus, path.clone()))
            .unwrap();
        let written = std::fs::read_to_string(expand_path(&path)).unwrap();
        assert_eq!(written, render_prometheus(&r));
        let bad = Target::File(Format::Json, "/nonexistent-dir/x.json".into());
        let e = r.write_to(&bad).unwrap_err().to_string();
        assert!(e.contains("/nonexistent-dir/x.json"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        // SAFETY: `p` and `q` are live blocks of `s`.
        unsafe {
            s.free(p);
            s.free(q);
        }
    }

    fn bucket_index(n: usize) -> usize {
        crate::counters::bucket(n)
    }
}
