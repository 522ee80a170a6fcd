//! Who holds SQLite's memory: the registry of tracked connections and their figures, for every
//! report (`sqlite_connection_bytes{connection,use}`).
//!
//! A connection is tracked by the preload library for every `sqlite3_open*` of the SQLite it
//! configured (and untracked at `sqlite3_close*`), or by the program: `sqlalloc_track(db, label)`
//! / `sqlalloc_untrack(db)` in C, `sqlalloc::track` in Rust (feature `rusqlite`). Each tracked connection is sampled with
//! `sqlite3_db_status`: `CACHE_USED_SHARED` (its page cache, a shared cache divided among the
//! connections that share it, so that the figures add up), `SCHEMA_USED`, `STMT_USED`, and
//! `LOOKASIDE_USED` (lookaside *slots* in use: a count, not bytes; the lookaside buffer itself is
//! one allocation made at open and counted in "other"). What SQLite holds beyond the tracked
//! connections — closed connections' leftovers, untracked connections, the global page cache's
//! free lines, `sqlite3_malloc` calls of the program, mutexes — is `connection="other"`: SQLite's
//! total minus the sum.
//!
//! # Reading while the program runs
//!
//! `sqlite3_db_status` takes the connection's mutex. A report is made on another thread (the
//! endpoint, the periodic writer) while the program uses its connections, so:
//!
//! - a connection with a mutex (`SQLITE_OPEN_FULLMUTEX`, SQLite's default serialized mode) is read
//!   only if `sqlite3_mutex_try` gets its mutex at once; a busy connection shows its last sample
//!   and that sample's age. The reader never waits on a connection;
//! - a connection without one (`SQLITE_OPEN_NOMUTEX`, rusqlite's default, or
//!   `SQLITE_CONFIG_MULTITHREAD`) is never read from another thread: it is sampled by its owner,
//!   when the program calls `sqlalloc_sample(db)` (Rust: the guard's `sample()`) and when it is
//!   tracked, and reports say `sampled by the owner` with the age;
//! - a connection being closed is never touched: the close interposer (or `sqlalloc_untrack`)
//!   removes it from the registry before SQLite frees it, and the reader only touches connections
//!   while it holds the registry.
//!
//! Lock order: the registry's mutex, then (only ever *tried*) a connection's mutex. Nothing here
//! waits on a connection's mutex while holding the registry, so a program that opens or closes a
//! connection from inside a SQL function (holding another connection's mutex) cannot deadlock with
//! a reader. The owner's own sampling reads its connection before taking the registry.
//!
//! Tracking costs nothing on the allocation path: the registry is touched at open, close, sample
//! and report time only.

use crate::error::Error;
use crate::sqlite::{self, ConnectionFunctions};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{c_int, c_void, CStr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `SQLITE_DBSTATUS_LOOKASIDE_USED`.
const LOOKASIDE_USED: c_int = 0;
/// `SQLITE_DBSTATUS_SCHEMA_USED`.
const SCHEMA_USED: c_int = 2;
/// `SQLITE_DBSTATUS_STMT_USED`.
const STMT_USED: c_int = 3;
/// `SQLITE_DBSTATUS_CACHE_USED_SHARED`.
const CACHE_USED_SHARED: c_int = 11;

/// One connection's figures at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    /// Page cache bytes (`CACHE_USED_SHARED`).
    pub cache: i64,
    /// Schema bytes (`SCHEMA_USED`).
    pub schema: i64,
    /// Prepared statements' bytes (`STMT_USED`).
    pub stmt: i64,
    /// Lookaside slots in use (`LOOKASIDE_USED`; a count).
    pub lookaside_slots: i64,
}

impl Sample {
    /// The bytes of the sample (cache, schema, statements).
    pub fn bytes(&self) -> i64 {
        self.cache + self.schema + self.stmt
    }
}

/// Who took a connection's last sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampledBy {
    /// The report's reader, which got the connection's mutex at once.
    Reader,
    /// The thread that owns the connection (`sqlalloc_sample`, or when it was tracked): a
    /// connection without a mutex is never read from another thread.
    Owner,
}

/// A tracked connection as a report shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The label (unique among tracked connections).
    pub label: String,
    /// Whether the connection has a mutex (so the reader may try it).
    pub has_mutex: bool,
    /// The last sample, who took it, and how old it is.
    pub last: Option<(Sample, SampledBy, Duration)>,
    /// Whether the reader found the connection busy this time (its sample is an older one).
    pub busy: bool,
}

/// A connection handle, kept as an address (the registry never dereferences it itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Db(*mut c_void);

// SAFETY: the pointer is only passed to SQLite's thread-safe functions under the rules of the
// module doc (a connection with a mutex, tried; a connection without one, by its owner only).
unsafe impl Send for Db {}

struct Entry {
    db: Db,
    label: String,
    /// The label asked for (given, or the default) and the suffix number it got (1: none).
    base: String,
    n: usize,
    has_mutex: bool,
    last: Option<(Sample, SampledBy, Instant)>,
}

/// The tracked connections, and what makes their labels unique cheaply: a program with
/// hundreds of `:memory:` connections gets `:memory:`, `:memory:#2`, … without a search through
/// every label per open (which made tracking N connections cost O(N³) string comparisons).
struct Registry {
    entries: Vec<Entry>,
    /// Every label in use.
    labels: BTreeSet<String>,
    /// Per base label: the suffix numbers handed out and given back.
    suffixes: BTreeMap<String, Suffixes>,
}

/// The suffix numbers of one base label: the smallest one given back is reused first (so a pool
/// that reopens its connections keeps the same few labels, and Prometheus the same series).
struct Suffixes {
    /// The next number never handed out (1: the bare base).
    next: usize,
    /// Numbers given back by untracked connections.
    free: BTreeSet<usize>,
}

impl Default for Suffixes {
    fn default() -> Self {
        Suffixes {
            next: 1,
            free: BTreeSet::new(),
        }
    }
}

impl Registry {
    /// A unique label for `base`, and its suffix number.
    fn label_for(&mut self, base: &str) -> (String, usize) {
        let sfx = self.suffixes.entry(base.to_string()).or_default();
        loop {
            let n = sfx.free.pop_first().unwrap_or_else(|| {
                sfx.next += 1;
                sfx.next - 1
            });
            let label = if n == 1 {
                base.to_string()
            } else {
                format!("{base}#{n}")
            };
            // Taken only when a label was given that looks like a suffixed one (`x#2`), or is
            // "other": that number stays out of use while the base has connections.
            if label != "other" && !self.labels.contains(&label) {
                self.labels.insert(label.clone());
                return (label, n);
            }
        }
    }

    /// Forget entry `i`, giving its label and number back.
    fn remove(&mut self, i: usize) -> Entry {
        // `remove`, not `swap_remove`: the reports list connections in the order they came.
        let e = self.entries.remove(i);
        self.labels.remove(&e.label);
        if let Some(sfx) = self.suffixes.get_mut(&e.base) {
            sfx.free.insert(e.n);
            // A base with no connection left starts afresh (and its map entry goes).
            if sfx.free.len() == sfx.next.saturating_sub(1) {
                self.suffixes.remove(&e.base);
            }
        }
        e
    }
}

/// The registry of tracked connections.
static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    entries: Vec::new(),
    labels: BTreeSet::new(),
    suffixes: BTreeMap::new(),
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

fn functions() -> Result<ConnectionFunctions, Error> {
    sqlite::functions().connections().ok_or(Error::NoSqlite)
}

/// Read a connection's figures. Takes its mutex (recursively) for each call.
///
/// # Safety
/// `db` must be an open connection of the SQLite `f` belongs to, not being closed, and either
/// the caller holds its mutex or owns the connection (no other thread uses it meanwhile).
unsafe fn read(f: &ConnectionFunctions, db: Db) -> Sample {
    let get = |op| {
        let (mut cur, mut high) = (0 as c_int, 0 as c_int);
        // SAFETY: `db` is open and usable here (the function's contract); the out-parameters are
        // writable; reset 0 changes nothing.
        let rc = unsafe { (f.db_status)(db.0, op, &mut cur, &mut high, 0) };
        if rc == sqlite::SQLITE_OK {
            i64::from(cur)
        } else {
            0
        }
    };
    Sample {
        cache: get(CACHE_USED_SHARED),
        schema: get(SCHEMA_USED),
        stmt: get(STMT_USED),
        lookaside_slots: get(LOOKASIDE_USED),
    }
}

/// The label of a connection: `label`, or its main database's file name, `:memory:` for none.
///
/// # Safety
/// As [`read`].
unsafe fn default_label(f: &ConnectionFunctions, db: Db) -> String {
    // SAFETY: `db` is open (the contract); "main" is NUL-terminated. The returned string lives
    // while the connection does and is copied at once.
    let p = unsafe { (f.db_filename)(db.0, c"main".as_ptr()) };
    if p.is_null() {
        return ":memory:".into();
    }
    // SAFETY: non-null: a NUL-terminated file name owned by the connection.
    let name = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    if name.is_empty() {
        ":memory:".into()
    } else {
        name
    }
}

/// Start tracking `db` under `label` (None: its main database's file name, `:memory:` for none);
/// a label already in use gets a suffix (`#2`, `#3`, …). Returns the label given. The connection
/// is sampled now, by the caller (its owner).
///
/// # Safety
/// `db` must be an open connection of the SQLite sqlalloc configured, used by no other thread
/// during the call, and must be untracked ([`untrack`]) before it is closed.
pub unsafe fn track(db: *mut c_void, label: Option<&str>) -> Result<String, Error> {
    if db.is_null() {
        return Err(Error::UnknownConnection);
    }
    let f = functions()?;
    let db = Db(db);
    // SAFETY: `db` is open and owned by the caller (the contract).
    let (base, first, has_mutex) = unsafe {
        (
            label.map_or_else(|| default_label(&f, db), str::to_string),
            read(&f, db),
            !(f.db_mutex)(db.0).is_null(),
        )
    };
    let mut reg = registry();
    if reg.entries.iter().any(|e| e.db == db) {
        return Err(Error::AlreadyTracked);
    }
    let (label, n) = reg.label_for(&base);
    reg.entries.push(Entry {
        db,
        label: label.clone(),
        base,
        n,
        has_mutex,
        last: Some((first, SampledBy::Owner, Instant::now())),
    });
    Ok(label)
}

/// Stop tracking `db` (before it is closed); returns the label it had.
/// [`Error::UnknownConnection`] when it is not tracked.
pub fn untrack(db: *mut c_void) -> Result<String, Error> {
    let mut reg = registry();
    match reg.entries.iter().position(|e| e.db == Db(db)) {
        Some(i) => Ok(reg.remove(i).label),
        None => Err(Error::UnknownConnection),
    }
}

/// Sample `db` now, from its owner (`sqlalloc_sample`): what the reports show for a connection
/// that has no mutex. [`Error::UnknownConnection`] when it is not tracked.
///
/// # Safety
/// `db` must be open and the caller must own it (no other thread uses it during the call).
pub unsafe fn sample(db: *mut c_void) -> Result<(), Error> {
    if db.is_null() || !registry().entries.iter().any(|e| e.db == Db(db)) {
        return Err(Error::UnknownConnection);
    }
    let f = functions()?;
    // Read before taking the registry (lock order: see the module doc).
    // SAFETY: open and owned by the caller (the contract).
    let s = unsafe { read(&f, Db(db)) };
    let mut reg = registry();
    match reg.entries.iter_mut().find(|e| e.db == Db(db)) {
        Some(e) => {
            e.last = Some((s, SampledBy::Owner, Instant::now()));
            Ok(())
        }
        None => Err(Error::UnknownConnection),
    }
}

/// Every tracked connection, sampled now where the rules allow (see the module doc).
pub fn snapshot() -> Vec<Connection> {
    let f = sqlite::functions().connections();
    let mut reg = registry();
    let now = Instant::now();
    reg.entries
        .iter_mut()
        .map(|e| {
            let mut busy = false;
            if let (Some(f), true) = (f.as_ref(), e.has_mutex) {
                // SAFETY: `e.db` is tracked, so open and not being closed (closers untrack under
                // the registry, which this thread holds); a connection with a mutex may be used
                // from any thread once its mutex is held.
                let m = unsafe { (f.db_mutex)(e.db.0) };
                // SAFETY: `m` is the connection's mutex (non-null: `has_mutex`).
                if !m.is_null() && unsafe { (f.mutex_try)(m) } == sqlite::SQLITE_OK {
                    // SAFETY: the connection's mutex is held by this thread; released below.
                    let s = unsafe { read(f, e.db) };
                    // SAFETY: taken by the successful try above.
                    unsafe { (f.mutex_leave)(m) };
                    e.last = Some((s, SampledBy::Reader, now));
                } else {
                    busy = true;
                }
            }
            Connection {
                label: e.label.clone(),
                has_mutex: e.has_mutex,
                last: e
                    .last
                    .map(|(s, by, at)| (s, by, now.saturating_duration_since(at))),
                busy,
            }
        })
        .collect()
}

/// How many connections are tracked.
pub fn count() -> usize {
    registry().entries.len()
}

/// A rusqlite connection in the per-connection breakdown, until the guard drops (feature
/// `rusqlite`). See `sqlalloc::track`.
#[cfg(feature = "rusqlite")]
#[derive(Debug)]
pub struct Tracked<'c> {
    db: *mut c_void,
    label: String,
    _conn: std::marker::PhantomData<&'c rusqlite::Connection>,
}

#[cfg(feature = "rusqlite")]
impl<'c> Tracked<'c> {
    /// Track `conn` (see [`crate::track`]).
    pub fn new(conn: &'c rusqlite::Connection, label: Option<&str>) -> Result<Tracked<'c>, Error> {
        // SAFETY: `handle` only returns the connection's pointer; it stays open while `conn` is
        // borrowed, which the guard does for its whole life.
        let db = unsafe { conn.handle() }.cast::<c_void>();
        // SAFETY: `db` is open; `&rusqlite::Connection` is not `Send` (`Connection` is not
        // `Sync`), so this thread is the one using it; the guard untracks it before `conn` can
        // be closed (it borrows `conn`).
        let label = unsafe { track(db, label) }?;
        Ok(Tracked {
            db,
            label,
            _conn: std::marker::PhantomData,
        })
    }

    /// The label the connection is shown under.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Sample the connection now (what reports show for a connection without a mutex,
    /// rusqlite's default: see [`sample`]).
    pub fn sample(&self) -> Result<(), Error> {
        // SAFETY: open (borrowed by the guard) and used by this thread (the guard is not `Send`).
        unsafe { sample(self.db) }
    }
}

#[cfg(feature = "rusqlite")]
impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        let _ = untrack(self.db);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> Registry {
        Registry {
            entries: Vec::new(),
            labels: BTreeSet::new(),
            suffixes: BTreeMap::new(),
        }
    }

    fn add(r: &mut Registry, id: usize, base: &str) -> String {
        let (label, n) = r.label_for(base);
        r.entries.push(Entry {
            db: Db(std::ptr::without_provenance_mut(id)),
            label: label.clone(),
            base: base.to_string(),
            n,
            has_mutex: false,
            last: None,
        });
        label
    }

    fn drop_id(r: &mut Registry, id: usize) -> String {
        let i = r.entries.iter().position(|e| e.db.0.addr() == id).unwrap();
        r.remove(i).label
    }

    /// Labels are unique; a number given back is the first reused; "other" and a given label
    /// that looks suffixed are never handed out twice; entries keep their order.
    #[test]
    fn labels_are_unique_and_reused_smallest_first() {
        let mut r = empty();
        let got: Vec<String> = (1..=4).map(|i| add(&mut r, i, ":memory:")).collect();
        assert_eq!(got, [":memory:", ":memory:#2", ":memory:#3", ":memory:#4"]);
        assert_eq!(drop_id(&mut r, 3), ":memory:#3");
        assert_eq!(drop_id(&mut r, 2), ":memory:#2");
        assert_eq!(add(&mut r, 5, ":memory:"), ":memory:#2");
        assert_eq!(add(&mut r, 6, ":memory:"), ":memory:#3");
        assert_eq!(add(&mut r, 7, ":memory:"), ":memory:#5");
        let order: Vec<&str> = r.entries.iter().map(|e| e.label.as_str()).collect();
        assert_eq!(
            order,
            [
                ":memory:",
                ":memory:#4",
                ":memory:#2",
                ":memory:#3",
                ":memory:#5"
            ]
        );
        // A label given as "x#2" takes that name: the base "x" then skips it.
        assert_eq!(add(&mut r, 8, "x#2"), "x#2");
        assert_eq!(add(&mut r, 9, "x"), "x");
        assert_eq!(add(&mut r, 10, "x"), "x#3");
        assert_eq!(add(&mut r, 11, "other"), "other#2");
        // A base whose connections are all gone starts afresh.
        for id in [1, 4, 5, 6, 7] {
            drop_id(&mut r, id);
        }
        assert!(!r.suffixes.contains_key(":memory:"));
        assert_eq!(add(&mut r, 12, ":memory:"), ":memory:");
        let mut all: Vec<&String> = r.entries.iter().map(|e| &e.label).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), r.entries.len());
        assert_eq!(r.labels.len(), r.entries.len());
    }

    /// Tracking many connections with one base stays cheap: each label is found without a
    /// search through every label (10 000 would take minutes at O(N³)).
    #[test]
    fn many_connections_of_one_base() {
        let mut r = empty();
        for i in 1..=10_000 {
            add(&mut r, i, ":memory:");
        }
        assert_eq!(r.entries.last().unwrap().label, ":memory:#10000");
        assert_eq!(r.labels.len(), 10_000);
    }
}
