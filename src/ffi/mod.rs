//! The C ABI of `libsqlalloc`: every `#[no_mangle]` function of `include/sqlalloc.h` (generated
//! from this folder by cbindgen), one file per area of the API:
//!
//! | file | functions |
//! |---|---|
//! | `install.rs` | `sqlalloc_install`, `sqlalloc_get_stats` (`sqlalloc_stats`), `sqlalloc_reset_peak`, `sqlalloc_installed_spec` |
//! | `fault.rs` | `sqlalloc_fault_*` (`sqlalloc_fault_stats`) |
//! | `report.rs` | `sqlalloc_report`, `sqlalloc_report_to_buffer`, `sqlalloc_leak_report` |
//! | `serve.rs` | `sqlalloc_serve`, `sqlalloc_report_every` |
//! | `track.rs` | `sqlalloc_track`, `sqlalloc_untrack`, `sqlalloc_sample` |
//! | `scope.rs` | `sqlalloc_scope_create`, `sqlalloc_scope_enter`, `sqlalloc_scope_get_stats` (`sqlalloc_scope`) |
//! | `result.rs` | `sqlalloc_errmsg`, and the result convention all of them follow |
//!
//! Each function is a thin layer over the core: it checks its pointers, converts its
//! arguments, calls the same function the Rust API calls (the installed allocator is
//! [`crate::installed`]'s), and turns the outcome into a SQLite result code with the reason kept
//! for `sqlalloc_errmsg()` (`result.rs`). Nothing outside this folder imports from it.
//!
//! No function here can unwind: they are `extern "C"` (an unwinding panic aborts) and the
//! libraries are built with `panic = "abort"`.

mod fault;
mod install;
mod report;
mod result;
mod scope;
mod serve;
mod track;
