//! [`Settled`]: a future that turns its item's error or panic into a value.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project::pin_project;

use crate::error::TaskError;

/// Wraps a future so that its `Err` or its panic becomes a [`TaskError`] value.
///
/// `gather_settled` and `gather_settled!` run each item in one; it is not public API. A panic
/// in the item's poll or in its destructor (run as soon as it finished) is caught.
///
/// Dropping it drops the inner future.
#[pin_project]
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Settled<F> {
    #[pin]
    inner: Option<F>,
}

impl<F> Settled<F> {
    /// Wraps `inner`.
    pub fn new(inner: F) -> Settled<F> {
        Settled { inner: Some(inner) }
    }
}

impl<F, T, E> Future for Settled<F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<Result<T, TaskError<E>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut inner = self.project().inner;
        let fut = inner
            .as_mut()
            .as_pin_mut()
            .expect("polled after completion");
        let mut settled = match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(Ok(value))) => Ok(value),
            Ok(Poll::Ready(Err(error))) => Err(TaskError::failed(error)),
            Err(payload) => Err(TaskError::panicked(Some(payload))),
        };
        // A panicked future must not be polled again; drop it now either way. Its destructor
        // is part of the item: a panic there is the item's outcome too, not the group's
        // failure (the first panic wins).
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| inner.set(None))) {
            if !matches!(&settled, Err(err) if err.is_panic()) {
                settled = Err(TaskError::panicked(Some(payload)));
            }
        }
        Poll::Ready(Ok(settled))
    }
}

impl<F> fmt::Debug for Settled<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settled")
            .field("done", &self.inner.is_none())
            .finish()
    }
}
