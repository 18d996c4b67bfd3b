//! Structured concurrency for tokio.
//!
//! (The crate guide is written in full once the task group lands.)
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![doc(test(
    no_crate_inject,
    attr(deny(warnings, rust_2018_idioms), allow(dead_code, unused_variables))
))]

mod chain;
mod deadline;
mod error;
pub mod gather;
pub mod group;
pub mod propagate;
mod scope;

pub use deadline::current_effective_deadline;
pub use error::{Elapsed, Failure, GroupError, Reported, TaskError};
#[doc(hidden)]
pub use gather::__private;
pub use gather::{gather, gather_settled};
pub use group::{GroupScope, TaskGroup, TaskHandle};
pub use scope::{CancelScope, Fail, MoveOn, fail_after, fail_at, move_on_after, move_on_at};
