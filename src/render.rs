//! [`Stats`] as JSON and as Prometheus text exposition format, with the names of the preload
//! library's reports ([`crate::report`]), so that a scrape of a Rust program and of a preloaded C
//! program line up.
//!
//! JSON uses the field names of the C struct `sqlalloc_stats` (the `"stats"` object of a JSON
//! report):
//!
//! ```json
//! {"current_bytes": 1234, "peak_bytes": 5678, "current_count": 12, "malloc_calls": 90, "free_calls": 78, "realloc_calls": 3, "failed_calls": 0, "largest_request": 4368}
//! ```
//!
//! Prometheus (text format 0.0.4):
//!
//! | metric | type | field |
//! |---|---|---|
//! | `sqlite_memory_current_bytes` | gauge | `current_bytes` |
//! | `sqlite_memory_peak_bytes` | gauge | `peak_bytes` |
//! | `sqlite_memory_current_blocks` | gauge | `current_count` |
//! | `sqlite_memory_calls_total{op="malloc"\|"free"\|"realloc"}` | counter | `malloc_calls`, `free_calls`, `realloc_calls` |
//! | `sqlite_memory_failed_calls_total` | counter | `failed_calls` |
//! | `sqlite_memory_largest_request_bytes` | gauge | `largest_request` |
//!
//! [`prometheus`] and [`json`] put several heaps in one document, told apart by a `heap` label
//! (or key): SQLite's heap from [`crate::stats`] next to the Rust heap from a
//! [`StatsAlloc`](crate::StatsAlloc).

use crate::Stats;
use std::fmt::Write;

/// Escape a string for a JSON string literal or a Prometheus label value (both accept `\\`,
/// `\"` and `\n`; other control characters are written as JSON's `\u00XX`).
pub(crate) fn escape(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// `{k="v",k2="v2"` (without the closing brace), escaped; empty for no labels.
fn label_prefix(labels: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in labels.iter().enumerate() {
        out.push(if i == 0 { '{' } else { ',' });
        out.push_str(k);
        out.push_str("=\"");
        escape(&mut out, v);
        out.push('"');
    }
    out
}

/// One sample line: `name{labels,extra} value`.
fn sample(out: &mut String, name: &str, labels: &str, extra: &str, v: i64) {
    let _ = match (labels.is_empty(), extra.is_empty()) {
        (true, true) => writeln!(out, "{name} {v}"),
        (true, false) => writeln!(out, "{name}{{{extra}}} {v}"),
        (false, true) => writeln!(out, "{name}{labels}}} {v}"),
        (false, false) => writeln!(out, "{name}{labels},{extra}}} {v}"),
    };
}

/// How to read one counter of a [`Stats`].
pub(crate) type Get = fn(&Stats) -> i64;

/// One metric: name, type, help text, and its samples (extra label, counter).
pub(crate) type Metric = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, Get)],
);

/// The metric families of a [`Stats`]: name, type, help text, and the samples (extra label,
/// counter). Shared with the full report ([`crate::report::families`]).
pub(crate) const STATS_METRICS: [Metric; 6] = [
    (
        "sqlite_memory_current_bytes",
        "gauge",
        "Bytes in live SQLite allocations (sum of xSize), as sqlite3_memory_used() counts them.",
        &[("", |s| s.current_bytes)],
    ),
    (
        "sqlite_memory_peak_bytes",
        "gauge",
        "Highest current_bytes since the allocator was installed or the peak was reset.",
        &[("", |s| s.peak_bytes)],
    ),
    (
        "sqlite_memory_current_blocks",
        "gauge",
        "Live SQLite allocations.",
        &[("", |s| s.current_count)],
    ),
    (
        "sqlite_memory_calls_total",
        "counter",
        "Calls of the allocator by SQLite, by operation.",
        &[
            ("op=\"malloc\"", |s| s.malloc_calls),
            ("op=\"free\"", |s| s.free_calls),
            ("op=\"realloc\"", |s| s.realloc_calls),
        ],
    ),
    (
        "sqlite_memory_failed_calls_total",
        "counter",
        "Calls of xMalloc or xRealloc that returned NULL.",
        &[("", |s| s.failed_calls)],
    ),
    (
        "sqlite_memory_largest_request_bytes",
        "gauge",
        "Largest size requested from xMalloc or xRealloc.",
        &[("", |s| s.largest_request)],
    ),
];

/// Write the samples of several label sets in Prometheus text format: each metric's `# HELP` and
/// `# TYPE` once, then one sample (or one per `op`) per label set.
pub fn write_prometheus(out: &mut String, sets: &[(&[(&str, &str)], Stats)]) {
    let sets: Vec<(String, &Stats)> = sets.iter().map(|(l, s)| (label_prefix(l), s)).collect();
    for (name, kind, help, samples) in STATS_METRICS {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, s) in &sets {
            for (extra, get) in samples {
                sample(out, name, labels, extra, get(s));
            }
        }
    }
}

impl Stats {
    /// The counters as one JSON object, field names as in the C `sqlalloc_stats`.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"current_bytes\": {}, \"peak_bytes\": {}, \"current_count\": {}, \
             \"malloc_calls\": {}, \"free_calls\": {}, \"realloc_calls\": {}, \
             \"failed_calls\": {}, \"largest_request\": {}}}",
            self.current_bytes,
            self.peak_bytes,
            self.current_count,
            self.malloc_calls,
            self.free_calls,
            self.realloc_calls,
            self.failed_calls,
            self.largest_request
        )
    }

    /// The counters in Prometheus text exposition format, without labels.
    pub fn to_prometheus(&self) -> String {
        self.to_prometheus_with(&[])
    }

    /// The counters in Prometheus text exposition format, every sample with `labels`
    /// (for example `&[("app", "billing")]`).
    pub fn to_prometheus_with(&self, labels: &[(&str, &str)]) -> String {
        let mut out = String::new();
        write_prometheus(&mut out, &[(labels, *self)]);
        out
    }
}

/// Several heaps in one JSON object, keyed by heap name: `{"sqlite": {...}, "rust": {...}}`.
pub fn json(heaps: &[(&str, Stats)]) -> String {
    let mut out = String::from("{");
    for (i, (name, s)) in heaps.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push('"');
        escape(&mut out, name);
        out.push_str("\": ");
        out.push_str(&s.to_json());
    }
    out.push('}');
    out
}

/// Several heaps in one Prometheus document, each sample labelled `heap="NAME"`:
/// `prometheus(&[("sqlite", sqlalloc::stats()), ("rust", RUST_HEAP.stats())])`.
pub fn prometheus(heaps: &[(&str, Stats)]) -> String {
    let labels: Vec<[(&str, &str); 1]> = heaps.iter().map(|(n, _)| [("heap", *n)]).collect();
    let sets: Vec<(&[(&str, &str)], Stats)> = labels
        .iter()
        .zip(heaps)
        .map(|(l, (_, s))| (&l[..], *s))
        .collect();
    let mut out = String::new();
    write_prometheus(&mut out, &sets);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Stats {
        Stats {
            current_bytes: 1234,
            peak_bytes: 5678,
            current_count: 12,
            malloc_calls: 90,
            free_calls: 78,
            realloc_calls: 3,
            failed_calls: 1,
            largest_request: 4368,
        }
    }

    #[test]
    fn json_has_every_field() {
        assert_eq!(
            sample().to_json(),
            "{\"current_bytes\": 1234, \"peak_bytes\": 5678, \"current_count\": 12, \
             \"malloc_calls\": 90, \"free_calls\": 78, \"realloc_calls\": 3, \"failed_calls\": 1, \
             \"largest_request\": 4368}"
        );
        assert_eq!(
            json(&[("sqlite", sample()), ("a\"b", Stats::default())]),
            format!(
                "{{\"sqlite\": {}, \"a\\\"b\": {}}}",
                sample().to_json(),
                Stats::default().to_json()
            )
        );
    }

    #[test]
    fn prometheus_exposition() {
        let text = prometheus(&[("sqlite", sample()), ("rust", Stats::default())]);
        let lines: Vec<&str> = text.lines().collect();
        // 6 metrics with HELP and TYPE, 8 samples per heap.
        assert_eq!(lines.len(), 6 * 2 + 8 * 2);
        assert_eq!(
            &lines[..4],
            &[
                "# HELP sqlite_memory_current_bytes Bytes in live SQLite allocations (sum of xSize), as sqlite3_memory_used() counts them.",
                "# TYPE sqlite_memory_current_bytes gauge",
                "sqlite_memory_current_bytes{heap=\"sqlite\"} 1234",
                "sqlite_memory_current_bytes{heap=\"rust\"} 0",
            ]
        );
        assert!(text.contains("# TYPE sqlite_memory_calls_total counter\n"));
        assert!(text.contains("sqlite_memory_calls_total{heap=\"sqlite\",op=\"realloc\"} 3\n"));
        assert!(text.contains("sqlite_memory_failed_calls_total{heap=\"sqlite\"} 1\n"));
        let bare = sample().to_prometheus();
        assert!(
            bare.contains("\nsqlite_memory_largest_request_bytes 4368\n"),
            "{bare}"
        );
        assert!(
            bare.contains("\nsqlite_memory_calls_total{op=\"free\"} 78\n"),
            "{bare}"
        );
        let l = sample().to_prometheus_with(&[("app", "x\"y"), ("n", "1")]);
        assert!(
            l.contains("sqlite_memory_peak_bytes{app=\"x\\\"y\",n=\"1\"} 5678\n"),
            "{l}"
        );
    }
}
