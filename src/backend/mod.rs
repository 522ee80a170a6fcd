//! The allocators. Each implements [`crate::MemMethods`] once and documents its algorithm, block
//! layout and invariants at the top of its module.

pub mod debug;
pub mod memsys3;
pub mod memsys5;
pub mod system;

pub use debug::Debug;
pub use memsys3::Memsys3;
pub use memsys5::Memsys5;
pub use system::System;
