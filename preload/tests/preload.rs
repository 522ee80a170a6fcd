//! End-to-end tests of `libsqlalloc_preload.so` on unmodified programs: Debian's `sqlite3`
//! command-line program (linked with `libsqlite3.so.0`) and `preload/c/dlopen_workload.c` (which
//! loads SQLite with `dlopen(RTLD_LOCAL)` after it started, as language bindings do); plus the
//! C API report functions from a program linked with `libsqlalloc.a`.
//!
//! Run with `make preload-test` (builds `libsqlalloc.a` and the preload library in the same
//! target directory as this test, and installs the `sqlite3` package when it is missing).

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Compile `preload/c/<name>.c` (once per test run) with the repository's C flags.
fn c_program(name: &str, extra: &[&str]) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = profile_dir().join("preload-c").join(name);
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let st = Command::new(&cc)
        .args(["-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Werror"])
        .arg(format!("-I{}", root.join("include").display()))
        .arg("-o")
        .arg(&out)
        .arg(root.join(format!("preload/c/{name}.c")))
        .args(extra)
        .status()
        .expect("run the C compiler");
    assert!(st.success(), "{cc} failed on preload/c/{name}.c");
    out
}

fn dlopen_workload() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| c_program("dlopen_workload", &["-ldl", "-lpthread"]))
}

fn sqlite3_cli() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("sqlite3"))
        .find(|p| p.is_file())
        .expect(
            "the sqlite3 command-line program is missing: install Debian's package sqlite3 \
             (`make preload-test` does)",
        )
}

/// The `stats:` line the workload program prints: (malloc_calls, current_bytes, sqlite_used).
fn stats_line(stdout: &str) -> Option<(i64, i64, i64)> {
    let line = stdout.lines().find(|l| l.starts_with("stats: "))?;
    let nums: Vec<i64> = line
        .split_whitespace()
        .skip(1)
        .map(|kv| kv.split_once('=').unwrap().1.parse().unwrap())
        .collect();
    Some((nums[0], nums[1], nums[2]))
}

/// The workload's own result lines (before the stats line).
fn result_lines(stdout: &str) -> String {
    stdout
        .lines()
        .take_while(|l| !l.starts_with("stats: "))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A real script: schema, 50 000 single-row inserts, indexes, joins, aggregates, a window
/// function, deletes and updates, a VACUUM, an integrity check. Deterministic.
fn cli_script(dir: &Path) -> PathBuf {
    use std::fmt::Write;
    let mut s = String::new();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |m: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % m
    };
    let cities = [
        "Lyon", "Oslo", "Lima", "Kyoto", "Accra", "Quito", "Perth", "Turku",
    ];
    s.push_str(
        "CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT, joined INTEGER);\n\
         CREATE TABLE orders(id INTEGER PRIMARY KEY, customer INTEGER REFERENCES customers(id), \
         amount INTEGER, note TEXT);\nBEGIN;\n",
    );
    for i in 1..=2000 {
        let _ = writeln!(
            s,
            "INSERT INTO customers VALUES({i}, 'customer {i}', '{}', {});",
            cities[i % cities.len()],
            1_600_000_000 + i * 997
        );
    }
    for i in 1..=50_000u64 {
        let _ = writeln!(
            s,
            "INSERT INTO orders VALUES({i}, {}, {}, 'note {} {}');",
            1 + next(2000),
            1 + next(100_000),
            next(100_000),
            "x".repeat(next(40) as usize)
        );
    }
    s.push_str(
        "COMMIT;\n\
         CREATE INDEX orders_customer ON orders(customer);\n\
         CREATE INDEX customers_city ON customers(city);\n\
         SELECT city, count(*), sum(o.amount), printf('%.3f', avg(o.amount)) FROM customers c \
         JOIN orders o ON o.customer = c.id GROUP BY city ORDER BY city;\n\
         SELECT c.name, count(o.id) AS n, total(o.amount) FROM customers c LEFT JOIN orders o \
         ON o.customer = c.id GROUP BY c.id ORDER BY n DESC, c.id LIMIT 15;\n\
         SELECT customer, amount, rank() OVER (PARTITION BY customer ORDER BY amount DESC) FROM \
         orders WHERE customer <= 3 ORDER BY customer, 3, amount LIMIT 20;\n\
         SELECT length(group_concat(note)), max(length(note)) FROM orders;\n\
         DELETE FROM orders WHERE id % 3 = 0;\n\
         UPDATE customers SET city = upper(city) WHERE id % 7 = 0;\n\
         VACUUM;\n\
         PRAGMA integrity_check;\n\
         SELECT count(*), sum(amount) FROM orders;\n\
         SELECT city, count(*) FROM customers GROUP BY city ORDER BY city;\n",
    );
    let p = dir.join("script.sql");
    std::fs::write(&p, s).unwrap();
    p
}

/// Debian's sqlite3 runs the script under every backend: output byte-identical to a run without
/// the preload library, a report with malloc calls and `current_bytes == sqlite3_memory_used()`.
#[test]
fn sqlite3_cli_script_under_every_backend() {
    let dir = scratch("cli");
    let script = cli_script(&dir);
    let cli = sqlite3_cli();
    let mut base = command(&cli);
    base.arg(dir.join("base.db"));
    let baseline = run(base, Some(&script));
    assert!(baseline.stdout.contains("\nok\n"), "{}", baseline.stdout);
    assert!(baseline.stderr.is_empty(), "{}", baseline.stderr);
    for spec in [
        "system",
        "debug",
        "memsys3:heap=32M",
        "memsys5:heap=64M,min=64",
        "system+limit:max=64M",
    ] {
        let name = spec.split([':', '+']).next().unwrap();
        let report = dir.join(format!("{name}.json"));
        let _ = std::fs::remove_file(dir.join(format!("{name}.db")));
        let mut c = preloaded(&cli, Some(spec));
        c.arg(dir.join(format!("{name}.db")))
            .env("SQLALLOC_REPORT", format!("json:{}", report.display()));
        let r = run(c, Some(&script));
        assert!(
            r.stdout == baseline.stdout,
            "[{spec}] output differs from the run without the preload library"
        );
        assert!(r.stderr.is_empty(), "[{spec}] stderr: {}", r.stderr);
        let j = read_json(&report);
        assert_eq!(j["spec"], spec);
        assert_eq!(j["backend"], name);
        let mallocs = int(&j, "/stats/malloc_calls");
        assert!(mallocs > 100_000, "[{spec}] malloc_calls {mallocs}");
        assert_eq!(int(&j, "/stats/failed_calls"), 0, "[{spec}]");
        assert!(int(&j, "/stats/peak_bytes") > 1 << 20, "[{spec}]");
        assert_eq!(
            int(&j, "/stats/current_bytes"),
            int(&j, "/sqlite_memory_used"),
            "[{spec}] current_bytes vs sqlite3_memory_used()"
        );
        let hist: i64 = j["request_size_histogram"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["count"].as_i64().unwrap())
            .sum();
        assert_eq!(
            hist,
            mallocs + int(&j, "/stats/realloc_calls"),
            "[{spec}] histogram"
        );
        eprintln!(
            "[{spec}] identical output; malloc_calls {mallocs}, peak {} bytes",
            int(&j, "/stats/peak_bytes")
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A program that dlopens libsqlite3.so.0 (RTLD_LOCAL) after start: the allocator is in use,
/// counters agree with SQLite, and the C API (through the preload library) exports the report.
#[test]
fn dlopen_program_runs_on_the_allocator() {
    let prog = dlopen_workload();
    let plain = run(command(prog), None);
    assert!(
        stats_line(&plain.stdout).is_none(),
        "no sqlalloc without the preload"
    );
    let dir = scratch("dlopen");
    for spec in ["system", "memsys5", "memsys3", "tlsf", "debug:backtrace=4"] {
        let report = dir.join("r.json");
        let mut c = preloaded(prog, Some(spec));
        c.env("SQLALLOC_REPORT", format!("json:{}", report.display()));
        let r = run(c, None);
        assert!(r.stderr.is_empty(), "[{spec}] {}", r.stderr);
        assert_eq!(result_lines(&r.stdout), plain.stdout, "[{spec}]");
        let (mallocs, current, used) = stats_line(&r.stdout).expect("stats line");
        assert!(mallocs > 20_000, "[{spec}] malloc_calls {mallocs}");
        assert!(
            current > 0 && current == used,
            "[{spec}] {current} vs {used}"
        );
        let prom = r
            .stdout
            .split("--- prometheus\n")
            .nth(1)
            .expect("prometheus section");
        let want = format!("op=\"malloc\"}} {mallocs}\n");
        assert!(prom.contains(&want), "[{spec}] {want} not in\n{prom}");
        // At exit the database is still open: SQLite still holds memory, and the report reads
        // both counts at the same moment.
        let j = read_json(&report);
        let at_exit = int(&j, "/stats/current_bytes");
        assert!(at_exit > 0, "[{spec}]");
        assert_eq!(at_exit, int(&j, "/sqlite_memory_used"), "[{spec}]");
        assert!(int(&j, "/stats/malloc_calls") >= mallocs, "[{spec}]");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Four threads race to initialize SQLite: one install, everyone on the allocator.
#[test]
fn racing_threads_install_once() {
    let prog = dlopen_workload();
    for spec in ["system", "memsys5:heap=32M"] {
        let mut c = preloaded(prog, Some(spec));
        c.arg("threads");
        let r = run(c, None);
        assert!(r.stderr.is_empty(), "[{spec}] {}", r.stderr);
        let (mallocs, current, used) = stats_line(&r.stdout).expect("stats line");
        // The main workload alone makes about 61 000 calls; the threads add theirs.
        assert!(mallocs > 70_000, "[{spec}] malloc_calls {mallocs}");
        assert_eq!(current, used, "[{spec}]");
    }
}

/// `SQLALLOC` unset: nothing at all happens (no report either, even if one is asked for).
#[test]
fn unset_spec_does_nothing() {
    let dir = scratch("unset");
    let report = dir.join("r.json");
    let prog = dlopen_workload();
    let plain = run(command(prog), None);
    for spec in [None, Some("")] {
        let mut c = preloaded(prog, spec);
        c.env("SQLALLOC_REPORT", format!("json:{}", report.display()));
        let r = run(c, None);
        assert_eq!(r.stdout, plain.stdout, "{spec:?}");
        assert!(r.stderr.is_empty(), "{spec:?}: {}", r.stderr);
        assert!(!report.exists(), "{spec:?}: a report was written");
    }
    let q = dir.join("q.sql");
    std::fs::write(
        &q,
        "CREATE TABLE t(x); INSERT INTO t VALUES(1),(2); SELECT sum(x) FROM t;\n",
    )
    .unwrap();
    let mut c = preloaded(&sqlite3_cli(), None);
    c.arg(":memory:");
    let r = run(c, Some(&q));
    assert_eq!((r.stdout.as_str(), r.stderr.as_str()), ("3\n", ""));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A bad spec and heaps too small to initialize: one line naming the problem, the program runs
/// as without the library, no report.
#[test]
fn bad_specs_leave_the_host_working() {
    let dir = scratch("bad");
    let report = dir.join("r.json");
    let prog = dlopen_workload();
    let plain = run(command(prog), None);
    let q = dir.join("q.sql");
    std::fs::write(
        &q,
        "CREATE TABLE t(x); INSERT INTO t VALUES(1),(2); SELECT sum(x) FROM t;\n",
    )
    .unwrap();
    for (spec, needles) in [
        ("memsys9", &["'memsys9'", "default allocator"][..]),
        ("memsys5:heap=12X", &["'memsys5:heap=12X'", "unit 'X'"][..]),
        ("system+limit", &["'limit'"][..]),
        (
            "memsys5:heap=8",
            &["could not initialize", "SQLITE_NOMEM"][..],
        ),
        (
            "memsys3:heap=16",
            &["could not initialize", "SQLITE_NOMEM"][..],
        ),
        ("memsys5:heap=4K,min=8K", &["could not initialize"][..]),
        ("memsys5:heap=1000G", &["cannot allocate a heap"][..]),
    ] {
        let mut c = preloaded(prog, Some(spec));
        c.env("SQLALLOC_REPORT", format!("json:{}", report.display()));
        let r = run(c, None);
        assert_one_line(&r.stderr, needles);
        assert!(r.stderr.contains(spec), "{}", r.stderr);
        // Same output, and SQLite's default allocator: no sqlalloc stats.
        assert_eq!(r.stdout, plain.stdout, "[{spec}]");
        assert!(!report.exists(), "[{spec}] a report was written");
        // The same with the sqlite3 program.
        let mut c = preloaded(&sqlite3_cli(), Some(spec));
        c.arg(":memory:");
        let r = run(c, Some(&q));
        assert_eq!(r.stdout, "3\n", "[{spec}]");
        assert_one_line(&r.stderr, needles);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// SQLite initialized by a call that did not go through the preload library (the real
/// sqlite3_initialize taken from the library handle): left alone, one line.
#[test]
fn sqlite_initialized_by_someone_else_is_left_alone() {
    let prog = dlopen_workload();
    let plain = run(command(prog), None);
    let mut c = preloaded(prog, Some("memsys5"));
    c.arg("preinit").env("SQLALLOC_REPORT", "stderr");
    let r = run(c, None);
    assert_one_line(&r.stderr, &["already initialized", "libsqlite3.so.0"]);
    assert_eq!(r.stdout, plain.stdout);
}

/// A bad report target: one line, the allocator is still installed, no report.
#[test]
fn bad_report_target_is_one_line() {
    let prog = dlopen_workload();
    let mut c = preloaded(prog, Some("system"));
    c.env("SQLALLOC_REPORT", "xml:/tmp/x");
    let r = run(c, None);
    assert_one_line(&r.stderr, &["SQLALLOC_REPORT", "'xml:/tmp/x'"]);
    assert!(stats_line(&r.stdout).is_some_and(|s| s.0 > 0));
    let mut c = preloaded(prog, Some("system"));
    c.env("SQLALLOC_REPORT", "json:/nonexistent-dir/r.json");
    let r = run(c, None);
    assert_one_line(
        &r.stderr,
        &["cannot write the report", "/nonexistent-dir/r.json"],
    );
}

/// `debug` under the preload library reports an injected leak with its size and backtrace, in
/// the stderr table and in the JSON report.
#[test]
fn debug_reports_an_injected_leak() {
    let dir = scratch("leak");
    let prog = dlopen_workload();
    let mut c = preloaded(prog, Some("debug:backtrace=8"));
    c.args(["leak", "close"]).env("SQLALLOC_REPORT", "stderr");
    let r = run(c, None);
    assert!(r.stderr.contains("live blocks: 1\n"), "{}", r.stderr);
    assert!(r.stderr.contains("    123456 bytes at 0x"), "{}", r.stderr);
    assert!(r.stderr.contains("sqlite3Malloc"), "{}", r.stderr);

    let report = dir.join("leak.json");
    let mut c = preloaded(prog, Some("debug:backtrace=8"));
    c.args(["leak", "close"])
        .env("SQLALLOC_REPORT", format!("json:{}", report.display()));
    run(c, None);
    let j = read_json(&report);
    let blocks = j["live_blocks"].as_array().expect("live_blocks list");
    assert_eq!(blocks.len(), 1, "{j}");
    assert_eq!(blocks[0]["size"], 123_456);
    let bt = blocks[0]["backtrace"].as_array().unwrap();
    assert!(!bt.is_empty() && bt.len() <= 8, "{j}");
    assert!(
        bt.iter()
            .any(|f| f.as_str().unwrap().contains("dlopen_workload")),
        "the program's frame is in the backtrace: {j}"
    );
    assert_eq!(int(&j, "/stats/current_count"), 1);
    assert_eq!(
        int(&j, "/stats/current_bytes"),
        int(&j, "/sqlite_memory_used")
    );

    // Without the leak: an empty list (debug tracks blocks), not null.
    let mut c = preloaded(prog, Some("debug"));
    c.arg("close")
        .env("SQLALLOC_REPORT", format!("json:{}", report.display()));
    run(c, None);
    let j = read_json(&report);
    assert_eq!(j["live_blocks"], Value::Array(vec![]), "{j}");
    // Other backends do not track blocks: null.
    let mut c = preloaded(prog, Some("system"));
    c.arg("close")
        .env("SQLALLOC_REPORT", format!("json:{}", report.display()));
    run(c, None);
    assert_eq!(read_json(&report)["live_blocks"], Value::Null);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The Prometheus file: valid text exposition lines, cumulative buckets ending in `+Inf` equal
/// to `_count`, `%p` replaced by the process id.
/// A program's first open, when it is what initializes SQLite and installs the allocator, is
/// tracked like the others (the preload asks whether the SQLite is the configured one after the
/// open, not before it): opens in the constructor of a library initialized before the preload's.
#[test]
fn first_open_of_a_program_is_tracked() {
    let dir = scratch("firstopen");
    let lib = c_program("first_open", &["-shared", "-fPIC", "-lsqlite3"]);
    let mut c = preloaded(Path::new("true"), Some("system"));
    c.env(
        "LD_PRELOAD",
        format!("{} {}", preload_so().display(), lib.display()),
    );
    let report = dir.join("r.prom");
    c.env(
        "SQLALLOC_REPORT",
        format!("prometheus:{}", report.display()),
    );
    let r = run(c, None);
    assert!(r.stderr.is_empty(), "{}", r.stderr);
    let text = std::fs::read_to_string(&report).unwrap();
    // Both are in-memory databases: the second gets the first's label with a suffix.
    for label in [":memory:", ":memory:#2"] {
        let series = format!("connection=\"{label}\",use=\"schema\"}} ");
        assert!(text.contains(&series), "{label} is not tracked:\n{text}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn prometheus_report_file() {
    let dir = scratch("prom");
    let prog = dlopen_workload();
    let mut c = preloaded(prog, Some("memsys5:heap=32M,min=32+limit:max=30M"));
    c.env(
        "SQLALLOC_REPORT",
        format!("prometheus:{}/m-%p.prom", dir.display()),
    );
    let r = run(c, None);
    assert!(r.stderr.is_empty(), "{}", r.stderr);
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let f = &files[0];
    let pid = &f["m-".len()..f.len() - ".prom".len()];
    assert!(pid.parse::<u32>().is_ok(), "%p becomes the process id: {f}");
    let text = std::fs::read_to_string(dir.join(f)).unwrap();
    let labels = "backend=\"memsys5\",spec=\"memsys5:heap=32M,min=32+limit:max=30M\"";
    let mut buckets = Vec::new();
    let (mut count, mut calls) = (None, 0i64);
    for line in text.lines() {
        if line.starts_with("# HELP sqlite_memory_") || line.starts_with("# TYPE sqlite_memory_") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect(line);
        let value: i64 = value.parse().expect(line);
        assert!(series.starts_with("sqlite_memory_"), "{line}");
        assert!(series.contains(labels), "{line}");
        if series.starts_with("sqlite_memory_request_size_bytes_bucket") {
            buckets.push((series.to_string(), value));
        } else if series.starts_with("sqlite_memory_request_size_bytes_count") {
            count = Some(value);
        } else if series.starts_with("sqlite_memory_calls_total") && !series.contains("op=\"free\"")
        {
            calls += value;
        }
    }
    assert_eq!(buckets.len(), 32);
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "cumulative");
    assert!(buckets.last().unwrap().0.contains("le=\"+Inf\""));
    assert_eq!(Some(buckets.last().unwrap().1), count);
    assert_eq!(count, Some(calls), "_count = malloc + realloc calls");
    for name in [
        "sqlite_memory_current_bytes{",
        "sqlite_memory_peak_bytes{",
        "sqlite_memory_current_blocks{",
        "sqlite_memory_failed_calls_total{",
        "sqlite_memory_largest_request_bytes{",
        "sqlite_memory_limit_bytes{",
        "sqlite_memory_sqlite_used_bytes{",
        "# TYPE sqlite_memory_request_size_bytes histogram",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The preload library defines `sqlite3_initialize`, the five open and close functions (the
/// per-connection breakdown) and the C API, nothing else (no `malloc`), and references no SQLite
/// symbol (it finds SQLite at run time). `libsqlalloc.a` defines no
/// `sqlite3_*` symbol at all: linking it interposes nothing.
#[test]
fn symbols_of_the_libraries() {
    let nm = |args: &[&str], file: &Path| -> Vec<String> {
        let out = Command::new("nm")
            .args(args)
            .arg(file)
            .output()
            .expect("nm (binutils)");
        assert!(out.status.success(), "nm {file:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    };
    let so = preload_so();
    let defined: Vec<String> = nm(&["-D", "--defined-only"], &so)
        .iter()
        .filter(|l| l.contains(" T ") || l.contains(" W ") || l.contains(" D "))
        .map(|l| l.rsplit(' ').next().unwrap().to_string())
        .collect();
    let interposed = [
        "sqlite3_initialize",
        "sqlite3_open",
        "sqlite3_open16",
        "sqlite3_open_v2",
        "sqlite3_close",
        "sqlite3_close_v2",
    ];
    for s in interposed
        .iter()
        .chain(&["sqlalloc_report", "sqlalloc_serve", "sqlalloc_track"])
    {
        assert!(defined.iter().any(|d| d == s), "{s} is not exported");
    }
    for s in &defined {
        assert!(
            interposed.contains(&s.as_str()) || s.starts_with("sqlalloc_"),
            "unexpected export {s}"
        );
    }
    let undefined = nm(&["-D", "--undefined-only"], &so);
    assert!(
        !undefined.iter().any(|l| l.contains("sqlite3_")),
        "references SQLite: {undefined:?}"
    );

    let lib_a = profile_dir().join("libsqlalloc.a");
    assert!(
        lib_a.exists(),
        "{} is missing: `make lib` builds it",
        lib_a.display()
    );
    let bad: Vec<String> = nm(&["--defined-only"], &lib_a)
        .into_iter()
        .filter(|l| l.contains(" T sqlite3_") || l.ends_with(" T malloc"))
        .collect();
    assert!(bad.is_empty(), "libsqlalloc.a would interpose {bad:?}");
}

/// The code a program runs through the preload library sits together at the start of its text
/// (preload/build.rs groups what preload/hot-text.txt lists): the allocation entry points and
/// the counters' slow path lie in the first 192 KiB of `.text`, and after a SQLite workload
/// under `memsys5` at most 288 KiB of the library's code is resident (180–230 KiB measured; the
/// kernel maps file pages 64 KiB at a time around each page touched, and the whole text, about
/// 690 KiB, was 476–532 KiB resident without the grouping).
#[test]
fn running_code_is_grouped() {
    assert!(
        option_env!("SQLALLOC_TEXT_ORDERED").is_some(),
        "the preload library was linked without preload/hot-text.txt (no LLD linker found, or \
         SQLALLOC_NO_TEXT_ORDER set): see preload/build.rs"
    );
    let so = preload_so();
    let tool = |prog: &str, args: &[&str]| -> String {
        let out = Command::new(prog)
            .args(args)
            .arg(&so)
            .output()
            .unwrap_or_else(|e| panic!("{prog} (binutils): {e}"));
        assert!(out.status.success(), "{prog} {args:?} {so:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text_start = tool("readelf", &["-S", "-W"])
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let i = f.iter().position(|w| *w == ".text")?;
            u64::from_str_radix(f.get(i + 2)?, 16).ok()
        })
        .expect("a .text section");
    let symbols = tool("nm", &["--defined-only"]);
    for name in [
        "8sqlalloc9installed8x_malloc17h",
        "8sqlalloc9installed6x_free17h",
        "8sqlalloc8counters8Counters9slow_path17h",
    ] {
        let addrs: Vec<u64> = symbols
            .lines()
            .filter(|l| l.contains(name))
            .filter_map(|l| u64::from_str_radix(l.split(' ').next()?, 16).ok())
            .collect();
        assert!(!addrs.is_empty(), "no symbol {name} in {so:?}");
        for a in addrs {
            assert!(
                (text_start..text_start + (192 << 10)).contains(&a),
                "{name} at {a:#x}, not in the first 192 KiB of .text ({text_start:#x})"
            );
        }
    }
    let probe = c_program("resident_text", &["-lsqlite3"]);
    let r = run(preloaded(&probe, Some("memsys5:heap=64M")), None);
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("text_rss_kib="))
        .unwrap_or_else(|| panic!("no figures: {}{}", r.stdout, r.stderr));
    let num = |key: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.parse().ok())
            .unwrap_or_else(|| panic!("{key} in {line}"))
    };
    let (resident, size) = (num("text_rss_kib="), num("text_kib="));
    println!("resident code: {resident} KiB of {size} KiB");
    assert!(
        size > 400,
        "{line}: the library's code is smaller than this test assumes"
    );
    assert!(
        resident <= 288,
        "{line}: more of the library's code is resident than grouped code needs"
    );
}

/// The C API report functions from a program linked with libsqlalloc.a (no preload).
#[test]
fn c_api_report_from_a_linked_program() {
    let lib_a = profile_dir().join("libsqlalloc.a");
    assert!(
        lib_a.exists(),
        "{} is missing: `make lib` builds it",
        lib_a.display()
    );
    let prog = c_program(
        "report_api",
        &[
            lib_a.to_str().unwrap(),
            "-lsqlite3",
            "-lpthread",
            "-ldl",
            "-lm",
        ],
    );
    let dir = scratch("capi");
    let report = dir.join("r.json");
    let mut c = command(&prog);
    c.arg(&report);
    let r = run(c, None);
    assert!(!r.stdout.contains("FAIL"), "{}", r.stdout);
    let (mallocs, current, used) = stats_line(&r.stdout).expect("stats line");
    assert!(
        mallocs > 5000 && current > 0 && current == used,
        "{}",
        r.stdout
    );
    let j = read_json(&report);
    assert_eq!(j["spec"], "system+limit:max=64M");
    assert_eq!(int(&j, "/limit/max_bytes"), 64 << 20);
    assert_eq!(
        int(&j, "/stats/current_bytes"),
        int(&j, "/sqlite_memory_used")
    );
    assert!(r.stdout.contains(
        "sqlite_memory_limit_bytes{backend=\"system\",spec=\"system+limit:max=64M\"} 67108864"
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Where the system's `libsqlite3.so.0` is (from `ldconfig -p`).
fn system_libsqlite3() -> PathBuf {
    let out = Command::new("ldconfig")
        .arg("-p")
        .output()
        .or_else(|_| Command::new("/sbin/ldconfig").arg("-p").output())
        .expect("ldconfig -p");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with("libsqlite3.so.0 "))
        .filter_map(|l| l.rsplit_once("=> ").map(|(_, p)| PathBuf::from(p.trim())))
        .find(|p| p.exists())
        .expect("libsqlite3.so.0 in ldconfig's cache")
}

/// Two SQLite libraries in one process (a second copy loaded from another file): each call of
/// sqlite3_initialize reaches the SQLite that made it; the allocator is in the first, the second
/// works on its default allocator with one line saying so. A forked child that exits writes no
/// report of its own.
#[test]
fn second_sqlite_and_forked_child() {
    let dir = scratch("second");
    let copy = dir.join("libsqlite3-copy.so");
    std::fs::copy(system_libsqlite3(), &copy).unwrap();
    let prog = dlopen_workload();
    let mut c = preloaded(prog, Some("memsys5"));
    c.arg("fork").arg(format!("second={}", copy.display())).env(
        "SQLALLOC_REPORT",
        format!("json:{}/r-%p.json", dir.display()),
    );
    let r = run(c, None);
    assert_one_line(
        &r.stderr,
        &["another SQLite", "libsqlite3-copy.so", "default allocator"],
    );
    assert!(r.stdout.contains("child: ok\n42\n"), "{}", r.stdout);
    let (mallocs, current, used) = stats_line(&r.stdout).expect("stats line");
    assert!(mallocs > 20_000 && current == used, "{}", r.stdout);
    let reports: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("r-"))
        .collect();
    assert_eq!(reports.len(), 1, "only the parent reports: {reports:?}");
    let j = read_json(&dir.join(&reports[0]));
    assert_eq!(j["backend"], "memsys5");
    std::fs::remove_dir_all(&dir).unwrap();
}
