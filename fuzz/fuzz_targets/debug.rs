//! Fuzz target: random malloc/realloc/free actions on the `debug` backend (with and without a
//! `limit` layer), checked against the shadow model of `fuzz/harness.rs`.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::run_input("debug", data);
});
