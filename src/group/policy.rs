//! Failure policies, which decide what a task's `Err` or panic does to its group.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::error::Failure;

/// A type-erased failure handler, as the group's shared state keeps it.
pub(crate) type Handler<E> = Arc<dyn Fn(Failure<E>) -> Result<(), Failure<E>> + Send + Sync>;

/// A failure policy, which decides what a task's `Err` or panic does to its group.
///
/// It is the type parameter of [`Builder`](super::Builder). There are two policies, those of
/// Erlang/OTP's supervisors that restart nothing:
///
/// - [`CancelOnFailure`], the default (`one_for_all`, the rule of Trio and asyncio). The
///   first failure cancels the group.
/// - [`IsolateFailures`], set by
///   [`Builder::isolate_failures`](super::Builder::isolate_failures) (`one_for_one`). Each
///   failure goes to a handler, and the rest of the group runs on.
///
/// The trait is sealed. It exists only to name these two policies in [`Builder::scope`]'s
/// bounds.
///
/// # Examples
///
/// ```
/// use quattro::group::{Builder, CancelOnFailure};
/// use quattro::TaskGroup;
///
/// let default: Builder<CancelOnFailure> = TaskGroup::builder();
/// let same: Builder = TaskGroup::builder(); // `CancelOnFailure` is the default parameter
/// ```
///
/// [`Builder::scope`]: super::Builder::scope
pub trait FailurePolicy<E>: sealed::Sealed<E> {}

pub(crate) mod sealed {
    use super::Handler;

    /// Keeps [`FailurePolicy`](super::FailurePolicy) implementable only inside the crate.
    pub trait Sealed<E> {
        /// The handler failures go to; `None`: they cancel the group.
        fn into_handler(self) -> Option<Handler<E>>;
    }
}

/// The default failure policy, under which a task's `Err` or panic cancels its group.
///
/// The other tasks are aborted, the body is dropped, and queued tasks are dropped unspawned.
/// The group returns every failure in its [`GroupError`], or resumes the first panic (see
/// [`Builder::capture_panics`]). This is Erlang's `one_for_all`, without the restart.
///
/// # Examples
///
/// ```
/// use quattro::TaskGroup;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let err = TaskGroup::builder() // a `Builder<CancelOnFailure>`
///     .scope(|tg| async move {
///         tg.task("a").spawn(async { Err::<(), _>("boom") });
///         std::future::pending::<()>().await; // dropped: the failure cancels the body
///         Ok(())
///     })
///     .await
///     .unwrap_err();
/// assert_eq!(err.to_string(), "task group failed: task `a`: boom");
/// # }
/// ```
///
/// [`GroupError`]: crate::GroupError
/// [`Builder::capture_panics`]: super::Builder::capture_panics
#[derive(Debug, Default, Clone, Copy)]
pub struct CancelOnFailure;

impl<E> sealed::Sealed<E> for CancelOnFailure {
    fn into_handler(self) -> Option<Handler<E>> {
        None
    }
}

impl<E> FailurePolicy<E> for CancelOnFailure {}

/// The isolating failure policy, under which each task's `Err` or panic goes to a handler and
/// the rest of the group runs on.
///
/// It is set by [`Builder::isolate_failures`](super::Builder::isolate_failures). It holds the
/// handler behind an `Arc`, so a builder with this policy is cheap to clone, and every group
/// built from the clones shares the handler.
///
/// # Examples
///
/// ```
/// use quattro::{Failure, TaskGroup};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let options = TaskGroup::builder().isolate_failures(|failure: Failure<String>| {
///     eprintln!("handled: {failure}");
///     Ok(())
/// });
/// // One set of options for two groups: the clones share the handler.
/// let a = options.clone().scope(|tg| async move {
///     tg.spawn(async { Err::<(), _>(String::from("a failed")) });
///     Ok("a")
/// });
/// let b = options.scope(|tg| async move {
///     tg.spawn(async { Err::<(), _>(String::from("b failed")) });
///     Ok("b")
/// });
/// assert_eq!((a.await.unwrap(), b.await.unwrap()), ("a", "b"));
/// # }
/// ```
pub struct IsolateFailures<H, E> {
    handler: Arc<H>,
    _error: PhantomData<fn() -> E>,
}

impl<H, E> IsolateFailures<H, E> {
    pub(crate) fn new(handler: H) -> Self {
        IsolateFailures {
            handler: Arc::new(handler),
            _error: PhantomData,
        }
    }
}

impl<H, E> Clone for IsolateFailures<H, E> {
    fn clone(&self) -> Self {
        IsolateFailures {
            handler: self.handler.clone(),
            _error: PhantomData,
        }
    }
}

impl<H, E> fmt::Debug for IsolateFailures<H, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IsolateFailures").finish_non_exhaustive()
    }
}

impl<H, E> sealed::Sealed<E> for IsolateFailures<H, E>
where
    H: Fn(Failure<E>) -> Result<(), Failure<E>> + Send + Sync + 'static,
{
    fn into_handler(self) -> Option<Handler<E>> {
        Some(self.handler)
    }
}

impl<H, E> FailurePolicy<E> for IsolateFailures<H, E> where
    H: Fn(Failure<E>) -> Result<(), Failure<E>> + Send + Sync + 'static
{
}
