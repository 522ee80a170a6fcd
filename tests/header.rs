//! The checked-in C header must be exactly what cbindgen generates from the sources now.
//! Regenerate it with `make header`.

#[test]
fn checked_in_header_matches_cbindgen() {
    let generated = std::fs::read_to_string(concat!(env!("OUT_DIR"), "/sqlalloc.h"))
        .expect("build.rs writes $OUT_DIR/sqlalloc.h");
    let checked_in =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/include/sqlalloc.h"))
            .expect("include/sqlalloc.h is checked in");
    if generated != checked_in {
        let line = generated
            .lines()
            .zip(checked_in.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || "at the end".to_string(),
                |i| format!("first difference at line {}", i + 1),
            );
        panic!("include/sqlalloc.h differs from what cbindgen generates ({line}); run `make header` and review the change");
    }
}
