//! Error types.
//!
//! Every error of this crate is `Send + Sync` when its error parameter is, and implements
//! [`std::error::Error`] when that parameter is `Debug + Display`. So `?` carries a [`GroupError`]
//! or a [`TaskError`] into `anyhow::Error` or `Box<dyn Error + Send + Sync>`.

mod cancelled;
mod group_error;
mod label;
pub(crate) mod panic;
mod reason;
mod task_error;

pub use cancelled::Cancelled;
pub use group_error::{Failure, GroupError};
pub(crate) use label::TaskLabel;
pub use reason::CancelReason;
pub use task_error::{Reported, TaskError};
