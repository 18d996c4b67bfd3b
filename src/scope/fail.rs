//! The [`Fail`] future, which yields `Err(Cancelled)` if its scope is cancelled.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project::pin_project;

use super::scoped::{Scoped, debug_scoped};
use crate::{CancelScope, Cancelled};

/// Future returned by [`CancelScope::fail`], [`fail_after`] and [`fail_at`].
///
/// It runs a future inside a cancel scope and yields `Ok(output)`, or `Err(Cancelled)` if the scope
/// is cancelled first. The error tells whether the deadline was reached or [`CancelScope::cancel`]
/// was called. See [`CancelScope`] for the semantics.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use quattro::fail_after;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let slow = tokio::time::sleep(Duration::from_secs(1));
/// let err = fail_after(Duration::from_millis(10), slow).await.unwrap_err();
/// assert!(err.is_deadline_reached());
/// # }
/// ```
///
/// # Errors
///
/// Yields [`Cancelled`] if the scope is cancelled, by its deadline or by `cancel()`, before the
/// inner future completes. The cancellation of an enclosing scope is not this future's error: the
/// enclosing scope drops this future instead.
///
/// # Panics
///
/// Panics if polled after it completed, or if its scope was already run by another future (a scope
/// runs once). Also panics if it must arm its timer outside a tokio runtime with the time driver
/// enabled, which happens when the scope has a deadline and the inner future is pending.
///
/// # Cancel safety
///
/// Dropping the future drops the inner future at once, while the scope's deadline is still visible
/// to its destructors. It does not wait for anything.
///
/// [`fail_after`]: crate::fail_after
/// [`fail_at`]: crate::fail_at
#[pin_project]
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Fail<F: Future> {
    #[pin]
    scoped: Scoped<F>,
}

impl<F: Future> Fail<F> {
    pub(crate) fn new(scoped: Scoped<F>) -> Fail<F> {
        Fail { scoped }
    }

    /// Returns a handle to the scope this future runs.
    ///
    /// Use it to cancel the scope or move its deadline, or, after the future completed, to ask
    /// whether the scope was cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let fut = quattro::fail_after(Duration::from_secs(1), std::future::pending::<()>());
    /// let scope = fut.cancel_scope();
    /// scope.cancel();
    /// assert!(fut.await.unwrap_err().is_cancel_called());
    /// assert!(scope.cancelled_caught());
    /// # }
    /// ```
    pub fn cancel_scope(&self) -> CancelScope {
        CancelScope::from_node(self.scoped.node().clone())
    }

    /// Gets a reference to the inner future.
    ///
    /// Returns `None` once the inner future completed or was dropped by a cancellation.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let fut = quattro::fail_after(Duration::from_secs(1), std::future::ready(7));
    /// assert!(fut.get_ref().is_some()); // not polled yet
    /// # }
    /// ```
    pub fn get_ref(&self) -> Option<&F> {
        self.scoped.get_ref()
    }

    /// Gets a pinned mutable reference to the inner future.
    ///
    /// Returns `None` once the inner future completed or was dropped by a cancellation.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut fut = std::pin::pin!(quattro::fail_after(Duration::from_secs(1), async { 7 }));
    /// assert!(quattro::Fail::get_mut(fut.as_mut()).is_some());
    /// fut.as_mut().await.unwrap();
    /// assert!(quattro::Fail::get_mut(fut.as_mut()).is_none()); // completed
    /// # }
    /// ```
    #[must_use]
    pub fn get_mut(self: Pin<&mut Self>) -> Option<Pin<&mut F>> {
        self.project().scoped.inner_pin_mut()
    }

    /// Consumes this future, returning the inner future.
    ///
    /// Returns `None` once the inner future completed or was dropped by a cancellation.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let fut = quattro::fail_after(Duration::from_secs(1), std::future::ready(7));
    /// let inner = fut.into_inner().expect("not polled yet");
    /// # drop(inner);
    /// ```
    pub fn into_inner(self) -> Option<F> {
        self.scoped.into_inner()
    }
}

impl<F: Future> Future for Fail<F> {
    type Output = Result<F::Output, Cancelled>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().scoped.poll(cx)
    }
}

impl<F: Future> fmt::Debug for Fail<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_scoped(&self.scoped, "Fail", f)
    }
}
