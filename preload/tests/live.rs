//! Live telemetry under the preload library, on unmodified programs (Python's `sqlite3` module,
//! the `sqlite3` shell): the scrape endpoint (`SQLALLOC_LISTEN`) read with curl and checked with
//! `promtool check metrics` on every scrape, the periodic report file
//! (`SQLALLOC_REPORT_INTERVAL`) read while it is rewritten, forked children, and bad settings and
//! bad clients. Every network exchange is with 127.0.0.1; every loop is bounded in count and time.
//!
//! Needs `python3`, `curl` and `promtool` (Debian packages python3, curl, prometheus: `make deps`).

mod common;

use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn python() -> PathBuf {
    PathBuf::from("python3")
}

/// A port nobody listens on now (bound and released; the tests bind it again at once).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP exchange with curl: (status, content type, body).
fn curl(port: u16, path: &str, extra: &[&str]) -> (u16, String, String) {
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "5", "-D", "-"])
        .args(extra)
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl (Debian package curl; make deps)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status from curl: {text:?} {:?}", out.stderr));
    let ctype = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .unwrap_or("")
        .to_string();
    (status, ctype, body.to_string())
}

/// `promtool check metrics` on `text`: panics with promtool's words when it finds a problem.
fn promtool(text: &str) {
    let mut c = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; make deps)");
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n--- exposition:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the sample `name{...}` (the first one) in an exposition.
fn metric(text: &str, name: &str) -> Option<i64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

/// A long-running Python program: SQLite work in rounds of 50 ms (tables grow and shrink), then
/// it prints `QUIET <sqlite3_memory_used()>` and waits for a line on stdin before it exits.
/// Prints the checksum of its results first (the same with or without the preload).
const PY_SERVICE: &str = r#"
import ctypes, sqlite3, sys, time
lib = ctypes.CDLL("libsqlite3.so.0")
lib.sqlite3_memory_used.restype = ctypes.c_int64
rounds = int(sys.argv[1])
db = sqlite3.connect(":memory:")
db.execute("create table t(k integer primary key, v blob)")
total = 0
for r in range(rounds):
    n = 200 + (r * 37) % 900
    db.execute("insert into t(v) select zeroblob(?) from (with recursive c(i) as (select 1 union all select i+1 from c where i<?) select i from c)", (64 + r % 300, n))
    if r % 3 == 2:
        db.execute("delete from t where k % 2 = ?", (r % 2,))
    total += db.execute("select count(*), sum(length(v)) from t").fetchone()[1] or 0
    time.sleep(0.05)
db.commit()
print("result", total, flush=True)
print("QUIET", lib.sqlite3_memory_used(), flush=True)
sys.stdin.readline()
"#;

fn write_script(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Spawn `c` with piped stdio; the child is killed when the guard drops (a failed assertion
/// leaves no process behind).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(mut c: Command) -> Running {
    Running(
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    )
}

/// Lines of the child's stdout, read by a thread (so the test can poll with a deadline).
fn stdout_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Send `req` on a new connection and read the whole answer (bounded by 8 s).
fn raw(port: u16, req: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    s.write_all(req).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The endpoint on a long-running unmodified Python program, scraped every 100 ms: every scrape
/// is 200 with the 0.0.4 content type and passes promtool, the figures move, and at a quiescent
/// point `sqlite_memory_current_bytes` equals the program's own `sqlite3_memory_used()`. Bad
/// requests and bad clients in between get their HTTP error and change nothing.
#[test]
fn endpoint_on_a_running_python_program() {
    let dir = scratch("endpoint");
    let script = write_script(&dir, "service.py", PY_SERVICE);
    let rounds = "120"; // about 6 s of work
    let plain = run(
        {
            let mut c = command(&python());
            c.arg(&script).arg(rounds).stdin(Stdio::null());
            c
        },
        None,
    );
    let port = free_port();
    let mut c = preloaded(&python(), Some("system"));
    c.arg(&script)
        .arg(rounds)
        .env("SQLALLOC_LISTEN", port.to_string());
    let mut child = spawn(c);
    let lines = stdout_lines(&mut child.0);

    let start = Instant::now();
    let (mut scrapes, mut currents, mut mallocs) = (0, std::collections::BTreeSet::new(), vec![]);
    let mut result = None;
    let used = loop {
        assert!(start.elapsed() < Duration::from_secs(60), "no QUIET line");
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
            if let Some(r) = line.strip_prefix("result ") {
                result = Some(r.to_string());
                continue;
            }
            if let Some(u) = line.strip_prefix("QUIET ") {
                break u.parse::<i64>().unwrap();
            }
            continue;
        }
        // Not up yet (the interpreter starts, SQLite initializes): connection refused.
        let out = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "5",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .arg(format!("http://127.0.0.1:{port}/metrics"))
            .output()
            .unwrap();
        if out.stdout != b"200" {
            continue;
        }
        let (status, ctype, body) = curl(port, "/metrics", &[]);
        assert_eq!(status, 200);
        assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
        promtool(&body);
        scrapes += 1;
        currents.insert(metric(&body, "sqlite_memory_current_bytes").unwrap());
        mallocs.push(metric(&body, "sqlite_memory_calls_total").unwrap());
        // Now and then, a bad client between two scrapes.
        match scrapes % 10 {
            3 => assert!(raw(port, b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405 ")),
            5 => {
                assert!(raw(port, b"GET /etc/passwd HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "))
            }
            7 => assert!(
                raw(port, b"\x16\x03\x01\x02\x00garbage\r\n\r\n").starts_with("HTTP/1.1 400 ")
            ),
            9 => {
                // Half a request, then the client goes away.
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.write_all(b"GET /metr").unwrap();
            }
            _ => {}
        }
    };
    assert!(
        scrapes >= 20,
        "only {scrapes} scrapes while the program ran"
    );
    assert!(
        currents.len() >= 5,
        "current_bytes did not move: {currents:?}"
    );
    assert!(mallocs.windows(2).all(|w| w[0] <= w[1]), "{mallocs:?}");
    assert!(mallocs.last() > mallocs.first(), "{mallocs:?}");

    // Quiescent: the program waits on stdin and allocates nothing.
    let (_, _, body) = curl(port, "/metrics", &[]);
    promtool(&body);
    assert_eq!(
        metric(&body, "sqlite_memory_current_bytes"),
        Some(used),
        "{body}"
    );
    assert_eq!(metric(&body, "sqlite_memory_sqlite_used_bytes"), Some(used));
    assert_eq!(metric(&body, "sqlite_memory_sqlite_memstatus"), Some(1));
    for name in [
        "sqlite_memory_allocator_arena_bytes",
        "sqlite_memory_process_resident_bytes",
        "sqlite_memory_sqlite_pagecache_overflow_bytes",
    ] {
        assert!(
            metric(&body, name).is_some_and(|v| v >= 0),
            "{name} missing:\n{body}"
        );
    }
    let (status, ctype, json) = curl(port, "/stats.json", &[]);
    assert_eq!((status, ctype.as_str()), (200, "application/json"));
    let j: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(int(&j, "/stats/current_bytes"), used);
    assert_eq!(j["sqlite_status"]["memstatus"], true);
    let head = raw(port, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.ends_with("\r\n\r\n") && head.contains("Content-Length: "),
        "HEAD has no body: {head}"
    );

    // 100 connections at once, all answered; a client that stalls is dropped after 5 s while
    // scrapes go on.
    let mut staller = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let t0 = Instant::now();
    let mut conns: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    for s in &mut conns {
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    }
    for s in &mut conns {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out:.200}");
    }
    let long = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
    assert!(raw(port, long.as_bytes()).starts_with("HTTP/1.1 431 "));
    staller
        .set_read_timeout(Some(Duration::from_secs(9)))
        .unwrap();
    let mut b = [0u8; 16];
    let n = staller.read(&mut b).unwrap_or(usize::MAX);
    let waited = t0.elapsed();
    assert_eq!(n, 0, "the stalled client is closed without an answer");
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(9),
        "dropped after {waited:?}"
    );
    assert_eq!(curl(port, "/metrics", &[]).0, 200, "later scrapes work");

    child.0.stdin.take().unwrap().write_all(b"done\n").unwrap();
    let status = child.0.wait().unwrap();
    assert!(status.success());
    let mut err = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(err, "", "nothing on stderr");
    assert_eq!(
        result.as_deref(),
        plain
            .stdout
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("result ")),
        "the program's results are unchanged"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Whether `text` is a whole Prometheus report (first and last family present, ends in a newline).
fn whole_prometheus(text: &str) -> bool {
    text.starts_with("# HELP sqlite_memory_current_bytes ")
        && text.ends_with('\n')
        && text
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("sqlite_memory_process_resident_bytes{"))
}

/// The periodic file: rewritten while the program runs, never seen half-written by a reader
/// polling it every 2 ms, every version passing promtool; a symlink at the path is replaced, not
/// followed; the last file survives SIGTERM; a normal exit writes it once more and leaves no
/// temporary file.
#[test]
fn periodic_file_is_always_whole() {
    let dir = scratch("periodic");
    let script = write_script(&dir, "service.py", PY_SERVICE);
    let path = dir.join("sqlite.prom");
    let victim = dir.join("victim");
    std::fs::write(&victim, "keep me\n").unwrap();
    std::os::unix::fs::symlink(&victim, &path).unwrap();
    let mut c = preloaded(&python(), Some("memsys5:heap=32M"));
    c.arg(&script)
        .arg("80")
        .env("SQLALLOC_REPORT", format!("prometheus:{}", path.display()))
        .env("SQLALLOC_REPORT_INTERVAL", "1");
    let mut child = spawn(c);
    let lines = stdout_lines(&mut child.0);
    let start = Instant::now();
    let mut versions = std::collections::BTreeSet::new();
    let mut reads = 0;
    loop {
        assert!(start.elapsed() < Duration::from_secs(60), "no QUIET line");
        if let Ok(l) = lines.try_recv() {
            if l.starts_with("QUIET ") {
                break;
            }
        }
        if let Ok(text) = std::fs::read_to_string(&path) {
            if text != "keep me\n" {
                reads += 1;
                assert!(whole_prometheus(&text), "half-written file read:\n{text}");
                versions.insert(text);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(reads > 100, "{reads} reads");
    assert!(versions.len() >= 2, "rewritten {} time(s)", versions.len());
    for v in &versions {
        promtool(v);
        assert!(v.contains("sqlite_memory_allocator_heap_bytes{"), "{v}");
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me\n");
    assert!(!path.is_symlink(), "the symlink was replaced by the report");
    // SIGTERM: no exit hook runs; the last whole file stays.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let _ = child.0.wait();
    assert!(whole_prometheus(&std::fs::read_to_string(&path).unwrap()));

    // A normal exit: one more write, and no temporary file left in the directory.
    std::fs::remove_file(&path).unwrap();
    let json = dir.join("final.json");
    let mut c = preloaded(&python(), Some("system"));
    c.arg(&script)
        .arg("10")
        .env("SQLALLOC_REPORT", format!("json:{}", json.display()))
        .env("SQLALLOC_REPORT_INTERVAL", "1");
    let mut child = spawn(c);
    let lines = stdout_lines(&mut child.0);
    let used = loop {
        let l = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("QUIET line");
        if let Some(u) = l.strip_prefix("QUIET ") {
            break u.parse::<i64>().unwrap();
        }
    };
    child.0.stdin.take().unwrap().write_all(b"done\n").unwrap();
    assert!(child.0.wait().unwrap().success());
    let j = read_json(&json);
    assert_eq!(
        int(&j, "/stats/current_bytes"),
        int(&j, "/sqlite_memory_used")
    );
    assert!(int(&j, "/stats/peak_bytes") >= used);
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A pre-fork server: a parent that serves and writes a periodic file forks two children. Each
/// child keeps a file of its own (`%p`) rewritten while it runs and written at its exit, and does
/// not hold the parent's listening socket; the parent's endpoint keeps answering.
#[test]
fn forked_children_keep_their_own_file_and_no_socket() {
    let dir = scratch("prefork");
    let script = write_script(
        &dir,
        "prefork.py",
        r#"
import os, sqlite3, sys, time
def work(n):
    db = sqlite3.connect(":memory:")
    db.execute("create table t(v)")
    db.executemany("insert into t values (?)", [(os.urandom(50),) for _ in range(n)])
    return db
keep = work(2000)
kids = []
for i in range(2):
    pid = os.fork()
    if pid == 0:
        db = work(5000 * (i + 1))
        print("child", os.getpid(), flush=True)
        time.sleep(3.5)
        sys.exit(0)
    kids.append(pid)
for k in kids:
    os.waitpid(k, 0)
print("parent", os.getpid(), flush=True)
sys.stdin.readline()
"#,
    );
    let port = free_port();
    let mut c = preloaded(&python(), Some("system"));
    c.arg(&script)
        .env("SQLALLOC_LISTEN", port.to_string())
        .env(
            "SQLALLOC_REPORT",
            format!("prometheus:{}/r-%p.prom", dir.display()),
        )
        .env("SQLALLOC_REPORT_INTERVAL", "1");
    let mut child = spawn(c);
    let lines = stdout_lines(&mut child.0);
    let mut kids = vec![];
    while kids.len() < 2 {
        let l = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("child lines");
        let pid: u32 = l.strip_prefix("child ").expect(&l).parse().unwrap();
        kids.push(pid);
    }
    let parent = child.0.id();
    // The listening socket's inode, from the kernel's table (state 0A: LISTEN).
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let inode = tcp
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f[1].ends_with(&format!(":{port:04X}")) && f[3] == "0A")
        .map(|f| f[9].to_string())
        .expect("the parent listens");
    // What a process's threads have open: the main thread's table (/proc/PID/fd) and those of its
    // other threads (the endpoint's server thread has a table of its own, src/fdtable.rs).
    let links = |dir: String| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                    .map(|p| p.display().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let sockets = |pid: u32| -> Vec<String> {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"));
        tasks
            .map(|d| {
                d.filter_map(|t| t.ok())
                    .flat_map(|t| links(format!("{}/fd", t.path().display())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let listening = format!("socket:[{inode}]");
    assert!(sockets(parent).contains(&listening), "the parent holds it");
    // Where this process may unshare its descriptor table, so may the preloaded one: then the
    // socket is not among the program's own descriptors.
    if unshare_allowed() {
        assert!(
            !links(format!("/proc/{parent}/fd")).contains(&listening),
            "the listening socket is among the program's descriptors"
        );
    }
    // While the children sleep (3.5 s): their files appear, and they hold no listening socket.
    let t0 = Instant::now();
    for &k in &kids {
        let f = dir.join(format!("r-{k}.prom"));
        while !f.exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(3),
                "no periodic file from child {k}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !sockets(k).contains(&listening),
            "child {k} holds the listening socket"
        );
        promtool(&std::fs::read_to_string(&f).unwrap());
    }
    assert_eq!(curl(port, "/metrics", &[]).0, 200);
    let l = lines
        .recv_timeout(Duration::from_secs(30))
        .expect("parent line");
    assert_eq!(l, format!("parent {parent}"));
    // The children wrote once more at exit: their own SQLite figures, different from each other.
    let calls: Vec<i64> = kids
        .iter()
        .map(|k| {
            let t = std::fs::read_to_string(dir.join(format!("r-{k}.prom"))).unwrap();
            promtool(&t);
            metric(&t, "sqlite_memory_calls_total").unwrap()
        })
        .collect();
    assert_ne!(calls[0], calls[1], "each child has its own figures");
    let (_, _, body) = curl(port, "/metrics", &[]);
    promtool(&body);
    child.0.stdin.take().unwrap().write_all(b"\n").unwrap();
    assert!(child.0.wait().unwrap().success());
    let mut err = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(err, "", "nothing on stderr");
    assert!(dir.join(format!("r-{parent}.prom")).exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Whether a thread of this process may take a descriptor table of its own (a seccomp profile
/// may forbid `unshare`).
fn unshare_allowed() -> bool {
    std::thread::spawn(|| {
        // SAFETY: unshare(CLONE_FILES) gives this short-lived thread a copy of the table; it
        // touches no memory, and the copy is dropped when the thread ends.
        unsafe { libc::unshare(libc::CLONE_FILES) == 0 }
    })
    .join()
    .unwrap()
}

/// Bad `SQLALLOC_LISTEN` and `SQLALLOC_REPORT_INTERVAL` values and a port in use: one line each,
/// naming the problem, and the program's results unchanged.
#[test]
fn bad_live_settings_cost_one_line() {
    let dir = scratch("badlive");
    let sql = dir.join("w.sql");
    std::fs::write(
        &sql,
        "create table t(x);\n\
         with recursive c(i) as (select 1 union all select i+1 from c where i<5000)\n\
         insert into t select i from c;\nselect count(*), sum(x) from t;\n",
    )
    .unwrap();
    let cli = PathBuf::from("sqlite3");
    let expected = run(
        {
            let mut c = command(&cli);
            c.arg(":memory:");
            c
        },
        Some(&sql),
    )
    .stdout;
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port().to_string();
    let report = format!("json:{}/r.json", dir.display());
    let cases: Vec<(&str, &str, Vec<String>)> = vec![
        (
            "SQLALLOC_LISTEN",
            ":0x",
            vec![
                "SQLALLOC_LISTEN=\":0x\"".into(),
                "port '0x' is not a number".into(),
            ],
        ),
        (
            "SQLALLOC_LISTEN",
            "1.2.3.4.5:80",
            vec!["host '1.2.3.4.5' is not an IP address".into()],
        ),
        (
            "SQLALLOC_LISTEN",
            "localhost:99999",
            vec!["port 99999 is out of range".into()],
        ),
        (
            "SQLALLOC_LISTEN",
            "",
            vec!["SQLALLOC_LISTEN is empty".into()],
        ),
        (
            "SQLALLOC_LISTEN",
            &busy_port,
            vec![
                format!("cannot listen on 127.0.0.1:{busy_port}"),
                "in use".into(),
            ],
        ),
        (
            "SQLALLOC_REPORT_INTERVAL",
            "0",
            vec!["at least 1 second".into()],
        ),
        (
            "SQLALLOC_REPORT_INTERVAL",
            "-1",
            vec!["'-1' is not a whole number of seconds".into()],
        ),
        (
            "SQLALLOC_REPORT_INTERVAL",
            "1.5",
            vec!["'1.5' is not a whole number".into()],
        ),
        (
            "SQLALLOC_REPORT_INTERVAL",
            "abc",
            vec!["'abc' is not a whole number".into()],
        ),
    ];
    for (var, value, needles) in &cases {
        let mut c = preloaded(&cli, Some("system"));
        c.arg(":memory:").env(var, value);
        if *var == "SQLALLOC_REPORT_INTERVAL" {
            c.env("SQLALLOC_REPORT", &report);
        }
        let r = run(c, Some(&sql));
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        assert_one_line(&r.stderr, &needles);
        assert_eq!(r.stdout, expected, "{var}={value}: results changed");
    }
    // An interval without a file to rewrite.
    let mut c = preloaded(&cli, Some("system"));
    c.arg(":memory:").env("SQLALLOC_REPORT_INTERVAL", "1");
    let r = run(c, Some(&sql));
    assert_one_line(
        &r.stderr,
        &["SQLALLOC_REPORT_INTERVAL needs SQLALLOC_REPORT=json:PATH"],
    );
    drop(busy);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The periodic writer, which has a descriptor table of its own, still says on the program's
/// standard error, once, that it cannot write; with standard error a regular file (not opened for
/// appending) its line and the program's later lines share one offset, none overwriting another.
#[test]
fn periodic_write_failure_is_said_once_on_the_programs_stderr() {
    let dir = scratch("periodic-fail");
    let script = write_script(
        &dir,
        "slow.py",
        r#"
import sqlite3, sys, time
db = sqlite3.connect(":memory:")
db.execute("create table t(v)")
sys.stderr.write("program: before\n"); sys.stderr.flush()
for i in range(26):
    db.execute("insert into t values (?)", (i,))
    time.sleep(0.1)
sys.stderr.write("program: after\n"); sys.stderr.flush()
print("rows", db.execute("select count(*) from t").fetchone()[0])
"#,
    );
    let err_path = dir.join("stderr.txt");
    let err_file = std::fs::File::create(&err_path).unwrap();
    let mut c = preloaded(&python(), Some("system"));
    c.arg(&script)
        .env(
            "SQLALLOC_REPORT",
            format!("json:{}/missing/r.json", dir.display()),
        )
        .env("SQLALLOC_REPORT_INTERVAL", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err_file);
    let out = c.output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "rows 26\n");
    let err = std::fs::read_to_string(&err_path).unwrap();
    let lines: Vec<&str> = err.lines().collect();
    let periodic = "sqlalloc: cannot write the periodic report: ";
    assert_eq!(lines.first(), Some(&"program: before"), "{err}");
    assert_eq!(
        lines.iter().filter(|l| l.starts_with(periodic)).count(),
        1,
        "{err}"
    );
    let at = lines.iter().position(|l| l.starts_with(periodic)).unwrap();
    assert!(
        lines[at].ends_with("No such file or directory (os error 2)"),
        "{err}"
    );
    let after = lines.iter().position(|l| *l == "program: after");
    assert!(after.is_some_and(|a| a > at), "{err}");
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("sqlalloc: cannot write the report: "),
        "the exit hook's line: {err}"
    );
    assert_eq!(lines.len(), 4, "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A program whose SQLite the preload cannot reach (rusqlite `bundled`, compiled into the
/// program) gets one line at exit saying so; programs without any SQLite (a shell) stay silent.
#[test]
fn says_when_no_sqlite_was_reached() {
    let Some(bundled) = std::env::var_os("SQLALLOC_BUNDLED_EXAMPLE").map(PathBuf::from) else {
        panic!(
            "SQLALLOC_BUNDLED_EXAMPLE is not set: `make preload-test` builds tests-bundled's \
             example `unreached` and passes its path"
        );
    };
    let r = run(preloaded(&bundled, Some("system")), None);
    assert!(r.stdout.contains("42"), "{}", r.stdout);
    assert_one_line(
        &r.stderr,
        &[
            "SQLALLOC is set but no SQLite in this process was configured",
            "contains a SQLite",
            "Link the system libsqlite3",
        ],
    );
    let mut c = preloaded(Path::new("sh"), Some("system"));
    c.args(["-c", "true"]).env("SQLALLOC_REPORT", "stderr");
    let r = run(c, None);
    assert_eq!(r.stderr, "", "no SQLite in sh: nothing said");
}

/// The per-connection breakdown of an unmodified Python program: three connections (one with
/// `check_same_thread=False` used from two threads at once) and a SQL function that opens and
/// closes a connection of its own while SQLite holds the calling connection's mutex; scraped 10
/// times a second for 20 s. No crash, no deadlock, every scrape passes promtool and shows every
/// connection, and at the end the connections plus `other` add up to SQLite's total.
#[test]
fn connections_of_a_python_program() {
    let dir = scratch("conns");
    let script = write_script(
        &dir,
        "conns.py",
        r#"
import ctypes, sqlite3, sys, threading, time
lib = ctypes.CDLL("libsqlite3.so.0")
lib.sqlite3_memory_used.restype = ctypes.c_int64
dur, path = float(sys.argv[1]), sys.argv[2]
a = sqlite3.connect(path + "/a.db", isolation_level=None)
a.execute("create table t(x)")
b = sqlite3.connect(":memory:", isolation_level=None)
b.execute("create table t(x)")
shared = sqlite3.connect(path + "/shared.db", check_same_thread=False, isolation_level=None)
shared.execute("create table t(x)")
def opener(x):
    c = sqlite3.connect(":memory:")
    c.execute("select 1").fetchone()
    c.close()
    return x
a.create_function("opener", 1, opener)
print("open", flush=True)
end = time.time() + dur
def worker():
    while time.time() < end:
        shared.execute("insert into t values (randomblob(200))")
        time.sleep(0.001)
ts = [threading.Thread(target=worker) for _ in range(2)]
for t in ts: t.start()
n = 0
while time.time() < end:
    a.execute("insert into t select opener(randomblob(300))")
    b.execute("insert into t values (randomblob(500))")
    n += 1
    time.sleep(0.005)
for t in ts: t.join()
print("QUIET", n, flush=True)
sys.stdin.readline()
"#,
    );
    let port = free_port();
    let mut c = preloaded(&python(), Some("system"));
    c.arg(&script)
        .arg("20")
        .arg(&dir)
        .env("SQLALLOC_LISTEN", port.to_string());
    let mut child = spawn(c);
    let lines = stdout_lines(&mut child.0);
    assert_eq!(lines.recv_timeout(Duration::from_secs(30)).unwrap(), "open");
    let a_db = format!("{}/a.db", dir.display());
    let shared_db = format!("{}/shared.db", dir.display());
    let start = Instant::now();
    let mut scrapes = 0;
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(45),
            "no end: a deadlock?"
        );
        if let Ok(l) = lines.try_recv() {
            assert!(l.starts_with("QUIET "), "{l}");
            break;
        }
        let (status, _, body) = curl(port, "/metrics", &[]);
        assert_eq!(status, 200);
        promtool(&body);
        for conn in [a_db.as_str(), ":memory:", shared_db.as_str()] {
            let line = format!("connection=\"{conn}\",use=\"cache\"}}");
            assert!(body.contains(&line), "no figures for {conn}:\n{body}");
        }
        scrapes += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(scrapes >= 100, "{scrapes} scrapes in 20 s");
    // Quiescent: every connection read now, and they add up.
    let (_, _, json) = curl(port, "/stats.json", &[]);
    let j: Value = serde_json::from_str(&json).unwrap();
    let conns = j["connections"].as_array().unwrap();
    assert_eq!(
        conns.len(),
        3,
        "the opener's connections are gone: {conns:?}"
    );
    let sum: i64 = conns
        .iter()
        .map(|c| {
            assert_eq!(c["sampled_by"], "reader", "{c}");
            int(c, "/cache") + int(c, "/schema") + int(c, "/stmt")
        })
        .sum();
    assert_eq!(
        sum + int(&j, "/connections_other_bytes"),
        int(&j, "/sqlite_memory_used")
    );
    child.0.stdin.take().unwrap().write_all(b"\n").unwrap();
    assert!(child.0.wait().unwrap().success());
    let mut err = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(err, "", "nothing on stderr");
    std::fs::remove_dir_all(&dir).unwrap();
}
