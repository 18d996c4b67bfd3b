//! [`Settled`]: a future that turns its item's error or panic into a value.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project::pin_project;

use crate::error::TaskError;

/// Wraps a future so that it never fails: its `Err` and its panic become a
/// [`TaskError`] value. What [`gather_settled`](crate::gather_settled()) runs each item in.
///
/// # Examples
///
/// ```
/// use quattro::gather::Settled;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let out = Settled::new(async { Err::<(), _>("bad") }).await;
/// assert_eq!(out.unwrap().unwrap_err().into_error(), Some("bad"));
/// # }
/// ```
///
/// # Cancel safety
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
    ///
    /// # Examples
    ///
    /// Spawned into a group, a settled future cannot fail it: the group's error type is
    /// [`Infallible`].
    ///
    /// ```
    /// use quattro::{TaskGroup, gather::Settled};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let slot = TaskGroup::scope(|tg| async move {
    ///     let handle = tg.spawn(Settled::new(async { Err::<u8, _>("bad") }));
    ///     Ok(handle.await.unwrap())
    /// })
    /// .await
    /// .unwrap();
    /// assert_eq!(slot.unwrap_err().into_error(), Some("bad"));
    /// # }
    /// ```
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
        let settled = match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(Ok(value))) => Ok(value),
            Ok(Poll::Ready(Err(error))) => Err(TaskError::failed(error)),
            Err(payload) => Err(TaskError::panicked(Some(payload))),
        };
        // A panicked future must not be polled again; drop it now either way.
        inner.set(None);
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
