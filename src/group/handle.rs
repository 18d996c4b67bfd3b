//! Task handles, and the sink that delivers a task's value to its handle.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use tokio::task::{Id, JoinError, JoinHandle};

use super::child::Deliver;
use super::queue::{QueuedHandle, Unqueue};
use crate::error::{CancelReason, TaskError};
use crate::node::Node;

/// What a task's handle awaits: the task's own output, through tokio's `JoinHandle`.
pub(crate) type Output<T> = Result<T, TaskError>;

/// The sink of a task with a handle: the value is the task's output, which the handle awaits
/// through the task's `JoinHandle`.
pub(crate) struct ToHandle<T>(PhantomData<fn() -> T>);

impl<T> ToHandle<T> {
    pub(crate) fn new() -> Self {
        ToHandle(PhantomData)
    }
}

impl<T: Send + 'static> Deliver for ToHandle<T> {
    type Value = T;
    type Output = Output<T>;

    fn deliver(self, result: Output<T>) -> Output<T> {
        result
    }
}

/// A handle to a task of a [`TaskGroup`], which can be awaited for the task's value.
///
/// Awaiting it yields `Ok(value)` when the task succeeded. It yields a [`TaskError`] when the
/// task failed (its error went to the group), panicked, or was cancelled: aborted, refused by
/// the group, or cancelled with it. The error's [`cancel_reason`] says why it was cancelled.
///
/// Dropping the handle does **not** cancel the task, since the group owns its tasks. Use
/// [`abort`](Self::abort) for that.
///
/// # Examples
///
/// ```
/// use quattro::TaskGroup;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let sum = TaskGroup::scope(|tg| async move {
///     let a = tg.spawn(async { Ok::<_, std::io::Error>(1) });
///     let b = tg.spawn(async { Ok(2) });
///     Ok(a.await.unwrap() + b.await.unwrap())
/// })
/// .await
/// .unwrap();
/// assert_eq!(sum, 3);
/// # }
/// ```
///
/// # When the task failed
///
/// A failed task's error value belongs to the group. It goes once to the group's
/// [`GroupError`], and cancels the group. In a group built with [`isolate_failures`], it goes
/// to the failure handler instead, and the body runs on to see the handle resolve.
///
/// The handle yields a [`TaskError`] that names the failed task and carries the error's
/// *text* ([`Reported`]). So `let v = handle.await?;` compiles in a body whose error type is
/// `anyhow::Error`, `Box<dyn Error + Send + Sync>` or `io::Error`, and keeps the message:
/// ``task `fetch` failed: connection refused``. The text is written when the task fails, for
/// the error types listed under [`Reported`]. For other types, the message says that the
/// error went to the group. Whatever the body returns through that `?` is recorded after the
/// task's own failure, so the group's error lists the task's error first, then the body's.
///
/// ```
/// use quattro::TaskGroup;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let err = TaskGroup::scope(|tg| async move {
///     let fetch = tg
///         .task("fetch")
///         .spawn(async { Err::<u32, _>(std::io::Error::other("connection refused")) });
///     let n = fetch.await?;
///     Ok(n)
/// })
/// .await
/// .unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "task group failed with 2 errors: task `fetch`: connection refused; \
///      body: task `fetch` failed: connection refused"
/// );
/// # }
/// ```
///
/// # Panics
///
/// Polling the handle again after it yielded its result panics, like polling any finished
/// future.
///
/// # Cancel safety
///
/// Awaiting a handle is cancel safe. Dropping the `.await` loses nothing: the task runs on,
/// and a later `.await` of the same handle, polled by `&mut`, still gets the value.
///
/// [`TaskGroup`]: crate::TaskGroup
/// [`GroupError`]: crate::GroupError
/// [`cancel_reason`]: crate::TaskError::cancel_reason
/// [`Reported`]: crate::Reported
/// [`isolate_failures`]: crate::group::Builder::isolate_failures
pub struct TaskHandle<T> {
    state: HandleState<T>,
    /// Where the group records why it cancels its tasks before it aborts them (its node's
    /// shared reason): an aborted task's `JoinError` does not say who aborted it. `None` for a
    /// refused task, whose reason is known at once.
    group: Option<Arc<AtomicU8>>,
    /// [`abort`](Self::abort) was called while the group had no reason of its own: the first
    /// cause wins.
    aborted: AtomicBool,
}

enum HandleState<T> {
    /// The task runs (or ran): its output comes through tokio's join handle.
    Spawned(JoinHandle<Output<T>>),
    /// The task waits in the group's queue: the queue entry tells when it starts.
    Queued {
        task: Arc<dyn QueuedHandle<T>>,
        /// The group, told when an abort takes the task out of its queue.
        group: Weak<dyn Unqueue>,
    },
    /// The group refused the task: it resolves as cancelled, for this reason.
    Refused(CancelReason),
    /// The result was taken.
    Done(Option<Id>),
}

impl<T> TaskHandle<T> {
    /// The handle of a task spawned into the group whose node is `node`.
    pub(crate) fn spawned(join: JoinHandle<Output<T>>, node: &Arc<Node>) -> Self {
        TaskHandle {
            state: HandleState::Spawned(join),
            group: node.shared_reason(),
            aborted: AtomicBool::new(false),
        }
    }

    /// The handle of a task queued in the group whose node is `node`.
    pub(crate) fn queued(
        task: Arc<dyn QueuedHandle<T>>,
        group: Weak<dyn Unqueue>,
        node: &Arc<Node>,
    ) -> Self {
        TaskHandle {
            state: HandleState::Queued { task, group },
            group: node.shared_reason(),
            aborted: AtomicBool::new(false),
        }
    }

    /// A handle that is already resolved to "cancelled": the group whose node is `node`
    /// refused the task. It is closed (and then says why: it records its reason before it
    /// closes), or it is shutting down.
    pub(crate) fn refused(node: &Node) -> Self {
        let reason = node
            .cancel_reason()
            .unwrap_or(CancelReason::ShutdownRequested);
        TaskHandle {
            state: HandleState::Refused(reason),
            group: None,
            aborted: AtomicBool::new(false),
        }
    }

    /// The group's reason for cancelling its tasks, once it has one.
    fn group_reason(&self) -> Option<CancelReason> {
        let reason = self.group.as_ref()?.load(Ordering::Acquire);
        CancelReason::from_u8(reason)
    }

    /// Aborts the task.
    ///
    /// This is not a failure of the group, which goes on. The handle resolves to a cancelled
    /// [`TaskError`] whose [`cancel_reason`](TaskError::cancel_reason) is
    /// [`CancelReason::Aborted`], unless the group was already cancelling its tasks for a
    /// reason of its own: the first cause wins.
    ///
    /// A task still waiting for a slot under a concurrency limit is never polled. Aborting a
    /// finished task does nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let out = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
    ///     let forever = tg.spawn(std::future::pending::<Result<(), Infallible>>());
    ///     forever.abort();
    ///     Ok(forever.await.unwrap_err().is_cancelled())
    /// })
    /// .await;
    /// assert_eq!(out.unwrap(), true);
    /// # }
    /// ```
    ///
    /// [`CancelReason::Aborted`]: crate::CancelReason::Aborted
    pub fn abort(&self) {
        let reason = self.group_reason();
        if reason.is_none() {
            // Read by this handle's own poll, which `&mut` orders after this call.
            self.aborted.store(true, Ordering::Relaxed);
        }
        match &self.state {
            HandleState::Spawned(join) => join.abort(),
            HandleState::Queued { task, group } => {
                task.abort(group, reason.unwrap_or(CancelReason::Aborted));
            }
            HandleState::Refused(_) | HandleState::Done(_) => {}
        }
    }

    /// Returns the tokio [`Id`] of the task, or `None` if it has not been spawned.
    ///
    /// The id is `None` while the task waits in the group's queue, and stays `None` if the
    /// group refused the task or it was cancelled before it started. A queued local task is
    /// the exception: it has an id while it waits (see
    /// [`TaskGroup::spawn_local`](crate::TaskGroup::spawn_local)).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let out = TaskGroup::builder()
    ///     .concurrency_limit(1)
    ///     .scope(|tg: TaskGroup<Infallible>| async move {
    ///         let first = tg.spawn(async { Ok(tokio::task::id()) });
    ///         let second = tg.spawn(async { Ok(tokio::task::id()) });
    ///         assert!(second.id().is_none()); // queued: not a tokio task yet
    ///         let id = first.id().unwrap();
    ///         assert_eq!(first.await.unwrap(), id); // the id tokio gives it
    ///         Ok(second.await.unwrap())
    ///     })
    ///     .await;
    /// assert!(out.is_ok());
    /// # }
    /// ```
    pub fn id(&self) -> Option<Id> {
        match &self.state {
            HandleState::Spawned(join) => Some(join.id()),
            HandleState::Queued { task, .. } => task.id(),
            HandleState::Refused(_) => None,
            HandleState::Done(id) => *id,
        }
    }

    /// Returns `true` if the task has ended.
    ///
    /// Its result, whatever it is, is then ready, or was already taken.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let out = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
    ///     let task = tg.spawn(async { Ok(1) });
    ///     assert!(!task.is_finished()); // spawned, not run yet
    ///     tokio::task::yield_now().await; // lets it run
    ///     assert!(task.is_finished());
    ///     Ok(task.await.unwrap())
    /// })
    /// .await;
    /// assert_eq!(out.unwrap(), 1);
    /// # }
    /// ```
    pub fn is_finished(&self) -> bool {
        match &self.state {
            HandleState::Spawned(join) => join.is_finished(),
            HandleState::Queued { task, .. } => task.is_finished(),
            HandleState::Refused(_) | HandleState::Done(_) => true,
        }
    }
}

impl<T> Future for TaskHandle<T> {
    type Output = Result<T, TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match &mut self.state {
                HandleState::Spawned(join) => {
                    let out = std::task::ready!(Pin::new(&mut *join).poll(cx));
                    let id = join.id();
                    self.state = HandleState::Done(Some(id));
                    return Poll::Ready(out.unwrap_or_else(|err| self.join_error(err)));
                }
                HandleState::Queued { task, .. } => {
                    match std::task::ready!(task.poll_started(cx)) {
                        Ok(join) => self.state = HandleState::Spawned(join),
                        Err(err) => {
                            self.state = HandleState::Done(None);
                            return Poll::Ready(Err(err));
                        }
                    }
                }
                HandleState::Refused(reason) => {
                    let reason = *reason;
                    self.state = HandleState::Done(None);
                    return Poll::Ready(Err(TaskError::unstarted(reason, None)));
                }
                HandleState::Done(_) => panic!("a TaskHandle was polled after it completed"),
            }
        }
    }
}

impl<T> TaskHandle<T> {
    /// A task's join error as the handle reports it. The task catches its future's panics, so
    /// this is an abort: by this handle, by the group (which recorded why first), or by the
    /// runtime shutting down (neither of the two).
    fn join_error(&self, err: JoinError) -> Output<T> {
        if err.is_panic() {
            return Err(TaskError::panicked(None));
        }
        let reason = if self.aborted.load(Ordering::Relaxed) {
            CancelReason::Aborted
        } else {
            self.group_reason().unwrap_or(CancelReason::RuntimeShutdown)
        };
        Err(TaskError::cancelled(reason))
    }
}

impl<T> fmt::Debug for TaskHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.id())
            .field("is_finished", &self.is_finished())
            .finish()
    }
}
