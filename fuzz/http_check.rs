//! The properties of the endpoint's request parser, shared by the `http` fuzz target and the
//! corpus replay (`tests/fuzz_corpus.rs`).

use sqlalloc::serve::{route, Answer, MAX_HEAD};

/// Check `route` on `data` and on each of its prefixes.
pub fn check(data: &[u8]) {
    let whole = route(data);
    // Past the limit, the answer never waits for more bytes.
    if data.len() >= MAX_HEAD {
        assert!(whole.is_some(), "{} bytes and no decision", data.len());
    }
    if let Some(Answer::Error(status, reason)) = whole {
        assert!(
            [400, 404, 405, 431, 505].contains(&status),
            "unexpected status {status} {reason}"
        );
    }
    // The first prefix that decides fixes the answer: a longer one gives the same (the server
    // stops reading there), unless the longer one is over the limit.
    // Every split in the first 256 bytes, around every line feed, and every 61st byte after:
    // each `route` call reads the whole prefix, so checking all of them would be quadratic.
    let last = data.len().min(MAX_HEAD + 64);
    let mut ends: Vec<usize> = (0..=last.min(256)).collect();
    for (i, &b) in data[..last].iter().enumerate() {
        if b == b'\n' || i % 61 == 0 {
            ends.extend([i, i + 1]);
        }
    }
    ends.push(last);
    ends.sort_unstable();
    ends.dedup();
    let mut first = None;
    for end in ends.into_iter().filter(|&e| e <= last) {
        let a = route(&data[..end]);
        match (first, a) {
            (None, Some(a)) => first = Some((end, a)),
            (Some((_, f)), Some(a)) => {
                assert!(
                    a == f || matches!(a, Answer::Error(431, _)),
                    "answer changed from {f:?} to {a:?} at {end} bytes"
                );
            }
            (Some((at, f)), None) => panic!("decided {f:?} at {at} bytes, undecided at {end}"),
            (None, None) => {}
        }
    }
}
