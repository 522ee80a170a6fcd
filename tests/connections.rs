//! The per-connection breakdown with the machine's SQLite: three connections with cache sizes of
//! 2, 8 and 32 MiB (`cache_size` −2000, −8000, −32000) read a database larger than all three;
//! each connection's cache figure stays within its `cache_size` + 5%, and the connections'
//! figures plus `other` equal SQLite's total. Connections opened without a mutex (rusqlite's
//! default) are never read by another thread: their figures are the owner's samples. One test
//! function: SQLite's configuration is process-wide.

use rusqlite::{Connection, OpenFlags};
use std::ffi::c_void;

fn handle(c: &Connection) -> *mut c_void {
    // SAFETY: only the pointer is taken; `c` outlives every use below.
    unsafe { c.handle() }.cast()
}

fn value(text: &str, prefix: &str) -> Option<i64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

#[test]
fn three_caches_and_other_add_up() {
    sqlalloc::install("system").unwrap();
    let dir = std::env::temp_dir().join(format!("sqlalloc-conns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("big.db");
    {
        let w = Connection::open(&path).unwrap();
        w.execute_batch(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; CREATE TABLE t(x);
             WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<48000)
             INSERT INTO t SELECT randomblob(1000) FROM c;",
        )
        .unwrap();
    }
    assert!(
        std::fs::metadata(&path).unwrap().len() > 45 << 20,
        "a database over 45 MiB"
    );
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_FULL_MUTEX;
    let conns: Vec<(Connection, i64)> = [2000i64, 8000, 32000]
        .iter()
        .map(|&kib| {
            let c = Connection::open_with_flags(&path, flags).unwrap();
            c.execute_batch(&format!("PRAGMA cache_size=-{kib}"))
                .unwrap();
            (c, kib * 1024)
        })
        .collect();
    let labels: Vec<String> = conns
        .iter()
        .enumerate()
        .map(|(i, (c, _))| {
            // SAFETY: open, used by this thread only; untracked below before it is closed.
            unsafe { sqlalloc::connections::track(handle(c), Some(&format!("c{i}"))) }.unwrap()
        })
        .collect();
    assert_eq!(labels, ["c0", "c1", "c2"]);
    // A second connection under a label in use gets a suffix; "other" is never a label.
    let extra = Connection::open_in_memory().unwrap();
    // SAFETY: as above.
    let l = unsafe { sqlalloc::connections::track(handle(&extra), Some("c1")) }.unwrap();
    assert_eq!(l, "c1#2");
    assert!(matches!(
        // SAFETY: as above (already tracked: refused before it is read).
        unsafe { sqlalloc::connections::track(handle(&extra), None) },
        Err(sqlalloc::Error::AlreadyTracked)
    ));
    assert_eq!(
        sqlalloc::connections::untrack(handle(&extra)).unwrap(),
        "c1#2"
    );
    let other = Connection::open_in_memory().unwrap();
    // SAFETY: as above.
    let l = unsafe { sqlalloc::connections::track(handle(&other), Some("other")) }.unwrap();
    assert_eq!(l, "other#2");
    sqlalloc::connections::untrack(handle(&other)).unwrap();

    for (c, _) in &conns {
        let n: i64 = c
            .query_row("SELECT sum(length(x)) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 48000 * 1000);
    }
    let text = sqlalloc::metrics();
    let mut sum = 0;
    for (i, (_, cap)) in conns.iter().enumerate() {
        let l = format!("connection=\"c{i}\"");
        let get = |u: &str| {
            value(
                &text,
                &format!(
                    "sqlite_connection_bytes{{backend=\"system\",spec=\"system\",{l},use=\"{u}\"}}"
                ),
            )
            .unwrap_or_else(|| panic!("no {u} for c{i}:\n{text}"))
        };
        let cache = get("cache");
        assert!(
            cache > cap * 9 / 10 && cache <= cap + cap / 20,
            "c{i}: cache {cache} bytes, cache_size {cap} bytes"
        );
        sum += cache + get("schema") + get("stmt");
    }
    let other = value(
        &text,
        "sqlite_connection_bytes{backend=\"system\",spec=\"system\",connection=\"other\",use=\"other\"}",
    )
    .unwrap();
    // SAFETY: plain SQLite call.
    let total = unsafe { libsqlite3_sys::sqlite3_memory_used() };
    assert_eq!(sum + other, total, "{text}");
    assert!((0..1 << 20).contains(&other), "other {other}");

    // Without a mutex: the reader keeps the owner's samples.
    let nomutex = Connection::open_in_memory().unwrap(); // rusqlite: SQLITE_OPEN_NO_MUTEX
                                                         // SAFETY: as above.
    unsafe { sqlalloc::connections::track(handle(&nomutex), Some("nomutex")) }.unwrap();
    nomutex
        .execute_batch("CREATE TABLE u(y); INSERT INTO u VALUES (randomblob(100000));")
        .unwrap();
    let snap = sqlalloc::connections::snapshot();
    let nm = snap.iter().find(|c| c.label == "nomutex").unwrap();
    assert!(!nm.has_mutex);
    let (s0, by, _) = nm.last.unwrap();
    assert_eq!(by, sqlalloc::connections::SampledBy::Owner);
    // SAFETY: open and used by this thread.
    unsafe { sqlalloc::connections::sample(handle(&nomutex)) }.unwrap();
    let snap = sqlalloc::connections::snapshot();
    let (s1, by, _) = snap
        .iter()
        .find(|c| c.label == "nomutex")
        .unwrap()
        .last
        .unwrap();
    assert_eq!(by, sqlalloc::connections::SampledBy::Owner);
    assert!(
        s1.cache > s0.cache,
        "the owner's sample saw the new pages: {s0:?} {s1:?}"
    );
    let c0 = snap.iter().find(|c| c.label == "c0").unwrap();
    assert_eq!(c0.last.unwrap().1, sqlalloc::connections::SampledBy::Reader);

    // Busy: a connection whose mutex another thread holds keeps its last sample.
    {
        let c = &conns[0].0;
        let m = {
            // SAFETY: the connection's mutex (FULLMUTEX), entered and left on this thread.
            unsafe { libsqlite3_sys::sqlite3_db_mutex(c.handle()) }
        };
        let held = std::sync::atomic::AtomicBool::new(false);
        let release = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let mp = m as usize;
            let (held, release) = (&held, &release);
            s.spawn(move || {
                let m = mp as *mut libsqlite3_sys::sqlite3_mutex;
                // SAFETY: entering and leaving a valid recursive mutex on this thread.
                unsafe { libsqlite3_sys::sqlite3_mutex_enter(m) };
                held.store(true, std::sync::atomic::Ordering::SeqCst);
                while !release.load(std::sync::atomic::Ordering::SeqCst) {
                    std::thread::yield_now();
                }
                // SAFETY: entered above on this thread.
                unsafe { libsqlite3_sys::sqlite3_mutex_leave(m) };
            });
            while !held.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::yield_now();
            }
            let t0 = std::time::Instant::now();
            let snap = sqlalloc::connections::snapshot();
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(1),
                "the reader waited"
            );
            let c0 = snap.iter().find(|c| c.label == "c0").unwrap();
            assert!(c0.busy && c0.last.is_some(), "{c0:?}");
            release.store(true, std::sync::atomic::Ordering::SeqCst);
        });
    }

    #[cfg(feature = "rusqlite")]
    {
        let c = Connection::open_in_memory().unwrap();
        let guard = sqlalloc::track(&c, Some("guarded")).unwrap();
        assert_eq!(guard.label(), "guarded");
        guard.sample().unwrap();
        assert!(sqlalloc::connections::snapshot()
            .iter()
            .any(|x| x.label == "guarded"));
        drop(guard);
        assert!(!sqlalloc::connections::snapshot()
            .iter()
            .any(|x| x.label == "guarded"));
    }

    assert!(matches!(
        sqlalloc::connections::untrack(std::ptr::null_mut()),
        Err(sqlalloc::Error::UnknownConnection)
    ));
    sqlalloc::connections::untrack(handle(&nomutex)).unwrap();
    for (c, _) in &conns {
        sqlalloc::connections::untrack(handle(c)).unwrap();
    }
    assert_eq!(sqlalloc::connections::count(), 0);
    drop(conns);
    std::fs::remove_dir_all(&dir).unwrap();
}
