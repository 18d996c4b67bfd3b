//! The synchronisation primitives of the crate's shared state machines, behind one facade so
//! that [`loom`] can check them.
//!
//! Built with `RUSTFLAGS="--cfg quattro_loom"`, these are loom's model-checked types and the
//! `loom` unit tests run (see `tests/README.md`); otherwise they are `std`'s. The cfg has its
//! own name: `--cfg loom` would switch tokio into its own loom mode too.
//!
//! [`loom`]: https://docs.rs/loom

#[cfg(not(quattro_loom))]
pub(crate) use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize};
#[cfg(not(quattro_loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};

#[cfg(quattro_loom)]
pub(crate) use loom::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize};
#[cfg(quattro_loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};
