//! The [`Payload`] of a captured panic, which can be shared between threads.

use std::any::Any;
use std::fmt;
use std::sync::{Mutex, PoisonError};

/// A panic payload, held so that the error types that carry one are `Sync`.
///
/// A `Box<dyn Any + Send>` is not `Sync`. tokio's `JoinError` solves this with a wrapper that
/// hands the payload out only through `&mut self` or by value, which needs `unsafe`; this crate
/// forbids `unsafe`, so the payload sits in a [`Mutex`] instead (`Sync` for any `Send` value).
/// The lock is taken only to read the panic message for `Display` and `Debug`, so it is never
/// contended in practice; a lock poisoned by a panicking formatter is recovered (reading the
/// message cannot leave the payload half-changed). The mutex is boxed: panics are rare, and a
/// pointer keeps `TaskError`, which every task's handle yields, as small as before.
pub(crate) struct Payload(Box<Mutex<Box<dyn Any + Send + 'static>>>);

impl Payload {
    pub(crate) fn new(payload: Box<dyn Any + Send + 'static>) -> Payload {
        Payload(Box::new(Mutex::new(payload)))
    }

    /// The payload, to resume the panic with or to downcast.
    pub(crate) fn into_inner(self) -> Box<dyn Any + Send + 'static> {
        (*self.0)
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Calls `f` with the panic's message: the payload when it is a `&str` or a `String` (what
    /// `panic!` produces), otherwise `None`.
    pub(crate) fn with_message<R>(&self, f: impl FnOnce(Option<&str>) -> R) -> R {
        let payload = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(message(&**payload))
    }
}

/// The message of a panic payload, when it has one.
pub(crate) fn message(payload: &(dyn Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}

/// Shown for a panic whose payload is not a string.
pub(crate) const NON_STRING: &str = "<non-string panic payload>";

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_message(|message| f.write_str(message.unwrap_or(NON_STRING)))
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_message(|message| fmt::Debug::fmt(message.unwrap_or(NON_STRING), f))
    }
}
