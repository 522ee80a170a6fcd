//! Fuzz target: the scrape endpoint's request parser (`sqlalloc::serve::route`) on arbitrary
//! bytes, fed whole and in every split a client could send them in. It must never panic, must
//! decide as soon as the head is complete or over the limit, and must not change its mind when
//! more bytes arrive after it decided.
#![no_main]

#[path = "../http_check.rs"]
mod http_check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    http_check::check(data);
});
