//! Fuzz target: random malloc/realloc/free actions on the `tlsf` backend (with and without
//! shards and a `limit` layer), checked against the shadow model of `fuzz/harness.rs`.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::run_input("tlsf", data);
});
