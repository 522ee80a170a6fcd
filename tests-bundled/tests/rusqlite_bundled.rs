//! The rusqlite suite of the main crate (`tests/rusqlite.rs`), against rusqlite's `bundled`
//! SQLite: sqlalloc is built without its `link` feature, so the only `sqlite3_config` it can
//! call is the one of libsqlite3-sys, i.e. the bundled SQLite rusqlite uses.

#[path = "../../tests/rusqlite.rs"]
mod shared;

#[test]
fn sqlite_is_the_bundled_one() {
    // SAFETY: sqlite3_libversion_number takes no argument.
    let v = unsafe { rusqlite::ffi::sqlite3_libversion_number() };
    // The machine's SQLite is 3.40.1; libsqlite3-sys 0.40 bundles a newer one.
    assert!(v > 3_040_001, "linked SQLite {v} is not the bundled one");
    assert_eq!(v, rusqlite::ffi::SQLITE_VERSION_NUMBER);
}
