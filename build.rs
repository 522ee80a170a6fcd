//! Generates the C header `sqlalloc.h` from the C API in `src/ffi/` with cbindgen.
//!
//! The header is written to `$OUT_DIR/sqlalloc.h` on every build. The checked-in copy in
//! `include/sqlalloc.h` is what users see; `tests/header.rs` fails when the two differ, and
//! `make header` (which sets `SQLALLOC_UPDATE_HEADER=1`) refreshes the checked-in copy.
use std::env;
use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    // The C API is in src/ffi/, its struct sqlalloc_stats is src/counters.rs's Stats: any file
    // of the crate can change the header.
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=SQLALLOC_UPDATE_HEADER");
    // Test executables export the functions named `*_backtrace_test*`, so that
    // `report::symbolize` (dladdr) can name them in the debug backend's backtraces
    // (tests/debug_death.rs checks it). Only those: exporting everything would keep unused code
    // (and its references to SQLite) alive in test binaries that do not link SQLite.
    if env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux") {
        println!("cargo:rustc-link-arg-tests=-Wl,--export-dynamic-symbol=*_backtrace_test*");
    }

    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml must parse");
    let bindings = cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate sqlalloc.h");
    let generated = out_dir.join("sqlalloc.h");
    bindings.write_to_file(&generated);
    if env::var_os("SQLALLOC_UPDATE_HEADER").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(crate_dir.join("include")).expect("create include/");
        std::fs::copy(&generated, crate_dir.join("include/sqlalloc.h"))
            .expect("copy sqlalloc.h into include/");
    }
}
