//! The figure, as a test: three threads, three scopes, one connection each, in one
//! process. Scope B has a cap of 16 MiB and runs a 1-million-row `ORDER BY` with
//! `temp_store=MEMORY`: it gets `SQLITE_NOMEM`, while A and C finish with the right results, and
//! B's connection then answers a small query. At a quiescent point the scopes' current bytes add
//! up to the process total exactly (and to `sqlite3_memory_used()`). Run under `system+scopes`
//! (header per block) and `memsys5:heap=256M+scopes` (side table), with `sqlite3_shutdown()`
//! between them.
//!
//! One test function: SQLite's configuration is process-wide, so the steps must not run in
//! parallel.

use rusqlite::{ffi, Connection, ErrorCode};
use sqlalloc::{Error, Scope};
use std::sync::Barrier;

fn shutdown() {
    // SAFETY: called only when no connection is open.
    assert_eq!(unsafe { ffi::sqlite3_shutdown() }, ffi::SQLITE_OK);
}

fn memory_used() -> i64 {
    // SAFETY: plain SQLite call, no argument.
    unsafe { ffi::sqlite3_memory_used() }
}

const MIB: u64 = 1 << 20;

/// Sum of the current bytes of every scope of the installed layer.
fn scopes_total() -> i64 {
    let layer = sqlalloc::installed().unwrap().scopes().unwrap();
    layer.list().iter().map(|s| s.stats.current_bytes).sum()
}

/// A: a table of 100 000 rows, summed.
fn work_a(db: &Connection) {
    db.execute_batch(
        "CREATE TABLE t(x INTEGER, y TEXT);
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000)
         INSERT INTO t SELECT x, printf('row-%06d', x) FROM c;
         CREATE INDEX t_y ON t(y);",
    )
    .unwrap();
    let (n, sum): (i64, i64) = db
        .query_row("SELECT count(*), sum(x) FROM t", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((n, sum), (100_000, 100_000 * 100_001 / 2));
    let last: String = db
        .query_row("SELECT y FROM t ORDER BY y DESC LIMIT 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(last, "row-100000");
}

/// B: a 1-million-row sort in memory, which its cap refuses; then a small query.
fn work_b(db: &Connection) {
    db.execute_batch("PRAGMA temp_store=MEMORY").unwrap();
    let mut st = db
        .prepare(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000)
             SELECT x, randomblob(24) FROM c ORDER BY 2",
        )
        .unwrap();
    let mut rows = st.query([]).unwrap();
    let err = loop {
        match rows.next() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("B: the 1-million-row sort finished under a 16 MiB cap"),
            Err(e) => break e,
        }
    };
    match &err {
        rusqlite::Error::SqliteFailure(e, _) if e.code == ErrorCode::OutOfMemory => {}
        other => panic!("B: expected SQLITE_NOMEM, got {other:?}"),
    }
    drop(rows);
    drop(st);
    let two: i64 = db
        .query_row("SELECT count(*) FROM (SELECT 1 UNION SELECT 2)", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(two, 2, "B's connection works again");
}

/// C: an aggregate and a join over 20 000 rows.
fn work_c(db: &Connection) {
    db.execute_batch(
        "CREATE TABLE k(id INTEGER PRIMARY KEY, g INTEGER);
         CREATE TABLE v(id INTEGER, w INTEGER);
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000)
         INSERT INTO k SELECT x, x % 10 FROM c;
         INSERT INTO v SELECT id, id * 2 FROM k;",
    )
    .unwrap();
    let mut st = db
        .prepare("SELECT g, sum(w) FROM k JOIN v USING (id) GROUP BY g ORDER BY g")
        .unwrap();
    let groups: Vec<(i64, i64)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(groups.len(), 10);
    let total: i64 = groups.iter().map(|g| g.1).sum();
    assert_eq!(total, 2 * 20_000 * 20_001 / 2);
    // Group 0 holds 10, 20, ..., 20000: w = 2 * id.
    assert_eq!(groups[0], (0, 2 * 10 * (2000 * 2001 / 2)));
}

fn figure(spec: &str) {
    shutdown();
    sqlalloc::install(spec).unwrap_or_else(|e| panic!("install {spec}: {e}"));
    let a = Scope::create("A", None).unwrap();
    let b = Scope::create("B", Some(16 * MIB)).unwrap();
    let c = Scope::create("C", None).unwrap();
    assert_eq!((a.id(), b.id(), c.id()), (1, 2, 3));
    assert_eq!(Scope::find("B"), Some(b));
    assert_eq!(b.max_bytes(), Some(16 * MIB));
    // The first connection initializes SQLite; its global allocations go to the default scope.
    let _init = Connection::open_in_memory().unwrap();
    let done = Barrier::new(4);
    let checked = Barrier::new(4);
    std::thread::scope(|sc| {
        for (scope, work) in [(a, work_a as fn(&Connection)), (b, work_b), (c, work_c)] {
            let (done, checked) = (&done, &checked);
            sc.spawn(move || {
                let _in = scope.enter();
                assert!(_in.entered());
                assert_eq!(Scope::current(), scope);
                let db = Connection::open_in_memory().unwrap();
                work(&db);
                // Quiescent: every thread holds its connection, nobody allocates.
                done.wait();
                checked.wait();
                drop(db);
            });
        }
        done.wait();
        let total = sqlalloc::stats().current_bytes;
        assert_eq!(scopes_total(), total, "{spec}: scopes add up to the total");
        assert_eq!(memory_used(), total, "{spec}: and to sqlite3_memory_used()");
        for s in [a, c] {
            let st = s.stats();
            assert_eq!(st.failed_calls, 0, "{spec}: {:?}", s.name());
            assert!(
                st.current_bytes > 0,
                "{spec}: {:?} holds its connection",
                s.name()
            );
        }
        let sb = b.stats();
        assert!(sb.failed_calls > 0, "{spec}: B was refused");
        assert!(
            sb.peak_bytes as u64 <= 16 * MIB,
            "{spec}: B's peak {}",
            sb.peak_bytes
        );
        assert!(
            sb.peak_bytes as u64 > 12 * MIB,
            "{spec}: B got near its cap"
        );
        assert!(
            a.stats().peak_bytes > 2 * MIB as i64,
            "{spec}: A did real work"
        );
        checked.wait();
    });
    // The connections are closed: their scopes are empty again.
    for s in [a, b, c] {
        let st = s.stats();
        assert_eq!(
            (st.current_bytes, st.current_count),
            (0, 0),
            "{spec}: {:?} after close",
            s.name()
        );
    }
    assert_eq!(scopes_total(), sqlalloc::stats().current_bytes);
    let report = sqlalloc::installed().unwrap().scopes().unwrap().list();
    let names: Vec<&str> = report.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["default", "A", "B", "C"]);
    assert_eq!(report[2].max_bytes, Some(16 * MIB));
    // The same in every report: the endpoint's families.
    let text = sqlalloc::metrics();
    let labels = format!(
        "backend=\"{}\",spec=\"{spec}\"",
        sqlalloc::installed().unwrap().backend().name()
    );
    for line in [
        format!(
            "sqlite_scope_limit_bytes{{{labels},scope=\"B\"}} {}",
            16 * MIB
        ),
        format!("sqlite_scope_current_bytes{{{labels},scope=\"A\"}} 0"),
        format!(
            "sqlite_scope_peak_bytes{{{labels},scope=\"B\"}} {}",
            b.stats().peak_bytes
        ),
        format!(
            "sqlite_scope_failed_calls_total{{{labels},scope=\"B\"}} {}",
            b.stats().failed_calls
        ),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{spec}: no {line:?} in\n{text}"
        );
    }
    assert!(b.stats().failed_calls > 0);
    drop(_init);
}

#[test]
fn three_threads_three_scopes() {
    // Without a scopes layer: no scope can be created, only the default one entered.
    shutdown();
    sqlalloc::install("system").unwrap();
    assert_eq!(Scope::create("A", None), Err(Error::NoScopes));
    assert_eq!(Scope::from_id(0), Some(Scope::DEFAULT));
    assert_eq!(Scope::from_id(1), None);
    assert_eq!(Scope::DEFAULT.stats(), sqlalloc::Stats::default());

    figure("system+scopes");
    figure("memsys5:heap=256M+scopes");

    // A scope of an allocator installed before is unknown to the new one.
    shutdown();
    sqlalloc::install("system+scopes+limit:max=1G").unwrap();
    let old = Scope::from_id(3);
    assert_eq!(old, None);
    let g = Scope::find("A");
    assert_eq!(g, None);
    let x = Scope::create("x", None).unwrap();
    assert!(x.enter().entered());
    assert_eq!(
        Scope::current(),
        Scope::DEFAULT,
        "the guard restored the default"
    );
    let db = Connection::open_in_memory().unwrap();
    let _in = x.enter();
    db.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (randomblob(100000));")
        .unwrap();
    assert!(x.stats().current_bytes > 100_000);
    assert_eq!(scopes_total(), sqlalloc::stats().current_bytes);
    assert_eq!(memory_used(), sqlalloc::stats().current_bytes);
    drop(_in);
    drop(db);
    assert_eq!(x.stats().current_bytes, 0);
}
