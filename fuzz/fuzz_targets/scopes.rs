//! Fuzz target: random malloc/realloc/free actions through the `scopes` layer over each kind of
//! backend (a side table or a header per block), each malloc in one of four scopes (two capped),
//! checked against the shadow model of `fuzz/harness.rs`: every scope holds exactly the blocks
//! charged to it, and no cap is passed.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::run_input("scopes", data);
});
