//! The allocators. Each implements [`crate::MemMethods`] once and documents its algorithm, block
//! layout and invariants at the top of its module.
//!
//! `jemalloc` and `mimalloc` are built only with the cargo features of the same names; `rust`
//! (the program's `#[global_allocator]`) is always built.

pub mod debug;
mod fixed;
#[cfg(feature = "jemalloc")]
pub mod jemalloc;
pub mod memsys3;
pub mod memsys5;
#[cfg(feature = "mimalloc")]
pub mod mimalloc;
pub mod rust;
pub mod system;
#[cfg(test)]
mod test_support;
pub mod tlsf;

pub use debug::Debug;
#[cfg(feature = "jemalloc")]
pub use jemalloc::Jemalloc;
pub use memsys3::Memsys3;
pub use memsys5::Memsys5;
#[cfg(feature = "mimalloc")]
pub use mimalloc::Mimalloc;
pub use rust::Rust;
pub use system::System;
pub use tlsf::Tlsf;
