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
use crate::methods::MemMethods;
use crate::stack::Stack;
use std::ffi::c_int;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::sync::OnceLock;

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
// SQLite's own count, for the cross-check in reports.

/// Type of SQLite's `sqlite3_int64 sqlite3_memory_used(void)`.
pub type MemoryUsedFn = unsafe extern "C" fn() -> i64;

#[cfg(feature = "link")]
extern "C" {
    /// `sqlite3_int64 sqlite3_memory_used(void)`, resolved from the program like
    /// `sqlite3_config` (see [`crate::sqlite`]).
    fn sqlite3_memory_used() -> i64;
}

/// A `sqlite3_memory_used` supplied at run time (by the preload library).
static MEMORY_USED: OnceLock<MemoryUsedFn> = OnceLock::new();

/// Use `f` as SQLite's `sqlite3_memory_used` in reports (the first call wins; for builds without
/// the `link` feature, which find SQLite at run time). Returns whether `f` is the one in use.
///
/// # Safety
/// `f` must be the `sqlite3_memory_used` of the SQLite the allocator is installed in, callable
/// for as long as reports are made.
pub unsafe fn set_memory_used_fn(f: MemoryUsedFn) -> bool {
    let _ = MEMORY_USED.set(f);
    MEMORY_USED.get().is_some_and(|&g| g as usize == f as usize)
}

/// The `sqlite3_memory_used` to call, if one is known.
fn memory_used_fn() -> Option<MemoryUsedFn> {
    if let Some(&f) = MEMORY_USED.get() {
        return Some(f);
    }
    #[cfg(feature = "link")]
    {
        Some(sqlite3_memory_used as MemoryUsedFn)
    }
    #[cfg(not(feature = "link"))]
    {
        None
    }
}

/// SQLite's `sqlite3_memory_used()` now, when the function is known (see [`set_memory_used_fn`]).
pub fn sqlite_memory_used() -> Option<i64> {
    let f = memory_used_fn()?;
    // SAFETY: `f` is SQLite's sqlite3_memory_used (linked, or supplied under the contract of
    // `set_memory_used_fn`); it takes no argument and only reads SQLite's status counters.
    Some(unsafe { f() })
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
    /// Backend name (`system`, `debug`, `memsys3`, `memsys5`).
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
    /// Live blocks, for backends that track them (`debug`); `None` for the others.
    pub live_blocks: Option<Vec<Block>>,
}

impl Report {
    /// Capture the state of `s` now. `memory_used` is SQLite's `sqlite3_memory_used` (or `None`);
    /// it is read just before and just after the counters, again (a few times) if another thread
    /// allocated in between, so that the two agree on one moment.
    pub fn capture(s: &Stack, memory_used: Option<&dyn Fn() -> i64>) -> Report {
        let (stats, used) = match memory_used {
            None => (s.stats(), None),
            Some(f) => {
                let mut tries = 0;
                loop {
                    let before = f();
                    let st = s.stats();
                    let after = f();
                    tries += 1;
                    if before == after || tries == 5 {
                        break (st, Some(after));
                    }
                }
            }
        };
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
            sqlite_memory_used: used,
            live_blocks,
        }
    }

    /// Capture the installed allocator (with `sqlite3_memory_used()` when it is known), or `None`
    /// when nothing is installed.
    pub fn capture_installed() -> Option<Report> {
        let s = crate::installed::current()?;
        let used = memory_used_fn().map(|f| {
            move || {
                // SAFETY: as in `sqlite_memory_used`.
                unsafe { f() }
            }
        });
        Some(Report::capture(
            s,
            used.as_ref().map(|f| f as &dyn Fn() -> i64),
        ))
    }

    /// Render in `format`.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Text => render_text(self, TEXT_MAX_BLOCKS),
            Format::Json => render_json(self),
            Format::Prometheus => render_prometheus(self),
        }
    }

    /// Write to `target` (a file target is written whole under a temporary name, then renamed).
    pub fn write_to(&self, target: &Target) -> io::Result<()> {
        match target {
            Target::Stderr => {
                // One write for the whole table, so lines of other threads do not interleave.
                FdWriter(2).write_all(self.render(Format::Text).as_bytes())
            }
            Target::File(format, path) => {
                let path = expand_path(path);
                let tmp = format!("{path}.tmp{}", std::process::id());
                std::fs::write(&tmp, self.render(*format))
                    .and_then(|()| std::fs::rename(&tmp, &path))
                    .inspect_err(|_| {
                        let _ = std::fs::remove_file(&tmp);
                    })
                    .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))
            }
        }
    }
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

/// A Prometheus label value, escaped.
fn prom_label(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    crate::render::escape(&mut o, s);
    o
}

/// The Prometheus text exposition format (0.0.4). Every sample carries the labels
/// `backend="..."` and `spec="..."`. Metrics:
///
/// | name | type | meaning |
/// |---|---|---|
/// | `sqlite_memory_current_bytes` | gauge | bytes in live blocks (sum of `xSize`) |
/// | `sqlite_memory_peak_bytes` | gauge | highest `current_bytes` since install or reset |
/// | `sqlite_memory_current_blocks` | gauge | live blocks |
/// | `sqlite_memory_calls_total{op="malloc"\|"free"\|"realloc"}` | counter | calls of xMalloc, xFree, xRealloc |
/// | `sqlite_memory_failed_calls_total` | counter | xMalloc/xRealloc calls that returned NULL |
/// | `sqlite_memory_largest_request_bytes` | gauge | largest size asked of xMalloc/xRealloc |
/// | `sqlite_memory_request_size_bytes` | histogram | request sizes, power-of-two buckets (`_bucket{le}`, `_count`; no `_sum`: sizes are not summed) |
/// | `sqlite_memory_limit_bytes` | gauge | the `limit` layer's cap (only with `+limit`) |
/// | `sqlite_memory_sqlite_used_bytes` | gauge | `sqlite3_memory_used()` read with the counters (only when SQLite could be asked) |
pub fn render_prometheus(r: &Report) -> String {
    let st = &r.stats;
    let mut o = String::new();
    crate::render::write_prometheus(
        &mut o,
        &[(&[("backend", &r.backend), ("spec", &r.spec)], *st)],
    );
    let labels = format!(
        "backend=\"{}\",spec=\"{}\"",
        prom_label(&r.backend),
        prom_label(&r.spec)
    );
    let mut buckets = Vec::with_capacity(HIST_BUCKETS + 1);
    let mut cum = 0u64;
    for (i, c) in r.histogram.iter().enumerate() {
        cum += c;
        let le = bucket_le(i).map_or_else(|| "+Inf".to_string(), |v| v.to_string());
        buckets.push((format!(",le=\"{le}\""), cum.to_string()));
    }
    let _ = writeln!(
        o,
        "# HELP sqlite_memory_request_size_bytes Sizes requested from xMalloc and xRealloc."
    );
    let _ = writeln!(o, "# TYPE sqlite_memory_request_size_bytes histogram");
    for (le, v) in &buckets {
        let _ = writeln!(
            o,
            "sqlite_memory_request_size_bytes_bucket{{{labels}{le}}} {v}"
        );
    }
    let _ = writeln!(
        o,
        "sqlite_memory_request_size_bytes_count{{{labels}}} {cum}"
    );
    let mut metric = |name: &str, help: &str, v: String| {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} gauge");
        let _ = writeln!(o, "{name}{{{labels}}} {v}");
    };
    if let Some((max, _)) = r.limit {
        metric(
            "sqlite_memory_limit_bytes",
            "Hard cap on current_bytes set by the limit layer.",
            max.to_string(),
        );
    }
    if let Some(u) = r.sqlite_memory_used {
        metric(
            "sqlite_memory_sqlite_used_bytes",
            "sqlite3_memory_used() read together with the counters.",
            u.to_string(),
        );
    }
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
        let r = Report::capture(&s, Some(&|| 42));
        assert_eq!(r.sqlite_memory_used, Some(42));
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
