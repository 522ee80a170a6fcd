//! Live telemetry through the Rust API, in one process with the machine's SQLite: `serve` (bad
//! addresses, a second call, a real GET answered while SQLite works in another thread), the text
//! for a service's own `/metrics` (`metrics()`), `report_every`'s errors, and, with the feature
//! `prometheus-client`, the collector in a registry of the official client. Every exposition is
//! checked with `promtool check metrics` when promtool is installed (`make deps` installs it).
//! One test function: SQLite's configuration is process-wide.

use rusqlite::Connection;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// `promtool check metrics` on `text`, when promtool is on PATH (`make test` installs it first).
fn promtool(text: &str) {
    let Ok(mut c) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        assert!(
            std::env::var_os("SQLALLOC_REQUIRE_PROMTOOL").is_none(),
            "promtool is missing (Debian package prometheus)"
        );
        return;
    };
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn value(text: &str, prefix: &str) -> i64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
}

fn memory_used() -> i64 {
    // SAFETY: plain SQLite call.
    unsafe { libsqlite3_sys::sqlite3_memory_used() }
}

#[test]
fn serve_metrics_and_periodic_errors() {
    assert_eq!(
        sqlalloc::metrics(),
        "",
        "nothing installed: nothing to show"
    );
    sqlalloc::install("memsys5:heap=32M").unwrap();

    match sqlalloc::serve("1.2.3.4.5:80") {
        Err(e @ sqlalloc::Error::BadAddress { .. }) => {
            assert!(
                e.to_string().contains("'1.2.3.4.5' is not an IP address"),
                "{e}"
            );
            assert_eq!(e.sqlite_code(), 1);
        }
        other => panic!("{other:?}"),
    }
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = busy.local_addr().unwrap().to_string();
    match sqlalloc::serve(&taken) {
        Err(e @ sqlalloc::Error::CannotListen { .. }) => {
            assert!(
                e.to_string().contains(&format!("cannot listen on {taken}")),
                "{e}"
            )
        }
        other => panic!("{other:?}"),
    }
    let addr = sqlalloc::serve("127.0.0.1:0").unwrap();
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    match sqlalloc::serve("127.0.0.1:0") {
        Err(e @ sqlalloc::Error::AlreadyServing { .. }) => {
            assert!(e.to_string().contains(&addr.to_string()), "{e}");
            assert_eq!(e.sqlite_code(), 21);
        }
        other => panic!("{other:?}"),
    }
    for (target, secs, says) in [
        ("stderr", 1, "go to a file"),
        ("xml:/tmp/x", 1, "use stderr, json:PATH or prometheus:PATH"),
        ("json:/tmp/x.json", 0, "at least 1 second"),
    ] {
        let e = sqlalloc::report_every(target, secs).unwrap_err();
        assert!(matches!(e, sqlalloc::Error::BadReport { .. }), "{e:?}");
        assert!(e.to_string().contains(says), "{e}");
    }

    // SQLite works in another thread while the endpoint is scraped.
    let worker = std::thread::spawn(|| {
        let db = Connection::open_in_memory().unwrap();
        db.execute_batch("CREATE TABLE t(x)").unwrap();
        for i in 0..40 {
            db.execute(
                "INSERT INTO t SELECT randomblob(?1) FROM (WITH RECURSIVE c(i) AS (SELECT 1 \
                 UNION ALL SELECT i+1 FROM c WHERE i<200) SELECT i FROM c)",
                [100 + i],
            )
            .unwrap();
        }
        db
    });
    for _ in 0..20 {
        let r = get(addr, "/metrics");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r:.300}");
        promtool(r.split_once("\r\n\r\n").unwrap().1);
    }
    let db = worker.join().unwrap();

    // Quiescent: the endpoint, metrics() and SQLite agree.
    let r = get(addr, "/metrics");
    let body = r.split_once("\r\n\r\n").unwrap().1;
    let labels = "{backend=\"memsys5\",spec=\"memsys5:heap=32M\"}";
    let used = memory_used();
    assert_eq!(
        value(body, &format!("sqlite_memory_current_bytes{labels}")),
        used
    );
    assert_eq!(
        value(body, &format!("sqlite_memory_sqlite_used_bytes{labels}")),
        used
    );
    assert_eq!(
        value(body, &format!("sqlite_memory_allocator_heap_bytes{labels}")),
        32 << 20
    );
    let text = sqlalloc::metrics();
    promtool(&text);
    assert_eq!(
        value(&text, &format!("sqlite_memory_current_bytes{labels}")),
        used
    );
    let json = get(addr, "/stats.json");
    assert!(
        json.contains("\r\nContent-Type: application/json\r\n"),
        "{json:.300}"
    );
    assert!(
        json.contains(&format!("\"current_bytes\": {used},")),
        "{json:.600}"
    );

    #[cfg(feature = "prometheus-client")]
    {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(sqlalloc::prometheus_client::Collector));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert_eq!(
            value(&out, &format!("sqlite_memory_current_bytes{labels}")),
            used
        );
        assert!(
            out.contains("# TYPE sqlite_memory_calls counter\n"),
            "{out}"
        );
        let mallocs = value(
            &out,
            "sqlite_memory_calls_total{backend=\"memsys5\",spec=\"memsys5:heap=32M\",op=\"malloc\"}",
        );
        assert!(mallocs > 1000, "{out}");
        assert!(!out.contains("request_size"), "the histogram is left out");
    }
    drop(db);
    drop(busy);
}
