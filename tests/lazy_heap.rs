//! A fixed heap costs nothing until used (issue 15): creating and initializing a 256 MiB
//! memsys5 or memsys3 heap, alone or under the stack the C API and the preload build, makes the
//! process's resident size (`/proc/self/statm`) grow by less than 2 MiB, and a few blocks written
//! grow it by about their own size. One test, alone in its process, so that no other test's
//! memory moves the figure.

use sqlalloc::backend::{Memsys3, Memsys5, Tlsf};
use sqlalloc::MemMethods;
use std::ptr::NonNull;

const MIB: usize = 1 << 20;

/// Resident bytes of the process (`/proc/self/statm`, second field, in pages).
fn rss() -> Option<usize> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = s.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
    Some(pages * page)
}

/// Create an allocator with `make`, init it, and check the growth of the resident size; then
/// write four 1 MiB blocks and check that the growth follows them.
fn costs_nothing_until_used<M: MemMethods>(name: &str, make: impl FnOnce() -> M) {
    let before = rss().unwrap();
    let m = make();
    m.init().unwrap();
    let laid_out = rss().unwrap();
    assert!(
        laid_out < before + 2 * MIB,
        "{name}: a 256 MiB heap made the process {} KiB larger",
        (laid_out - before) >> 10
    );
    let blocks: Vec<NonNull<u8>> = (0..4).map(|_| m.malloc(MIB - 64).unwrap()).collect();
    for &p in &blocks {
        // SAFETY: a live block of at least MiB - 64 bytes.
        unsafe { p.as_ptr().write_bytes(0x5a, MIB - 64) };
    }
    let used = rss().unwrap();
    assert!(
        used >= laid_out + 4 * MIB - 4 * 64 * 1024 && used < laid_out + 4 * MIB + 2 * MIB,
        "{name}: 4 MiB written made the process {} KiB larger",
        (used - laid_out) >> 10
    );
    for p in blocks {
        // SAFETY: live blocks, freed once.
        unsafe { m.free(p) };
    }
}

#[test]
fn a_large_heap_costs_nothing_until_used() {
    if rss().is_none() {
        eprintln!("no /proc/self/statm here: skipped");
        return;
    }
    costs_nothing_until_used("memsys5", || Memsys5::new(256 * MIB, 64).unwrap());
    costs_nothing_until_used("memsys5 shards=4", || {
        Memsys5::with_shards(256 * MIB, 64, 4).unwrap()
    });
    costs_nothing_until_used("memsys3", || Memsys3::new(256 * MIB).unwrap());
    costs_nothing_until_used("tlsf", || Tlsf::new(256 * MIB).unwrap());
    costs_nothing_until_used("tlsf shards=4", || Tlsf::with_shards(256 * MIB, 4).unwrap());
    costs_nothing_until_used("stack tlsf", || sqlalloc::build("tlsf:heap=256M").unwrap());
    costs_nothing_until_used("stack memsys5", || {
        sqlalloc::build("memsys5:heap=256M,min=64").unwrap()
    });
    costs_nothing_until_used("stack memsys3", || {
        sqlalloc::build("memsys3:heap=256M").unwrap()
    });
}
