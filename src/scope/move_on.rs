//! The [`MoveOn`] future, which yields `None` if its scope is cancelled.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project::pin_project;

use super::scoped::{Scoped, debug_scoped};
use crate::CancelScope;

/// Future returned by [`CancelScope::move_on`], [`move_on_after`] and [`move_on_at`].
///
/// It runs a future inside a cancel scope and yields `Some(output)`, or `None` if the scope is
/// cancelled first. See [`CancelScope`] for the semantics.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use quattro::move_on_after;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let fut = move_on_after(Duration::from_millis(10), tokio::time::sleep(Duration::from_secs(1)));
/// let scope = fut.cancel_scope();
/// assert_eq!(fut.await, None);
/// assert!(scope.cancelled_caught());
/// # }
/// ```
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
/// [`move_on_after`]: crate::move_on_after
/// [`move_on_at`]: crate::move_on_at
#[pin_project]
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct MoveOn<F: Future> {
    #[pin]
    scoped: Scoped<F>,
}

impl<F: Future> MoveOn<F> {
    pub(crate) fn new(scoped: Scoped<F>) -> MoveOn<F> {
        MoveOn { scoped }
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
    /// let fut = quattro::move_on_after(Duration::from_secs(1), std::future::pending::<()>());
    /// let scope = fut.cancel_scope();
    /// scope.cancel();
    /// assert_eq!(fut.await, None);
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
    /// let fut = quattro::move_on_after(Duration::from_secs(1), std::future::ready(7));
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
    /// let mut fut = std::pin::pin!(quattro::move_on_after(Duration::from_secs(1), async { 7 }));
    /// assert!(quattro::MoveOn::get_mut(fut.as_mut()).is_some());
    /// fut.as_mut().await;
    /// assert!(quattro::MoveOn::get_mut(fut.as_mut()).is_none()); // completed
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
    /// let fut = quattro::move_on_after(Duration::from_secs(1), std::future::ready(7));
    /// let inner = fut.into_inner().expect("not polled yet");
    /// # drop(inner);
    /// ```
    pub fn into_inner(self) -> Option<F> {
        self.scoped.into_inner()
    }
}

impl<F: Future> Future for MoveOn<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().scoped.poll(cx).map(Result::ok)
    }
}

impl<F: Future> fmt::Debug for MoveOn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_scoped(&self.scoped, "MoveOn", f)
    }
}
