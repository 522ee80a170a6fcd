//! Fuzz target: random malloc/realloc/free actions on the `jemalloc` backend (with and without a
//! `limit` layer), checked against the shadow model of `fuzz/harness.rs`. Built with the crate
//! feature `jemalloc` (fuzz/Cargo.toml); see there for what AddressSanitizer sees of it.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::run_input("jemalloc", data);
});
