//! Task groups, whose tasks never outlive the group and whose errors are never lost.
//!
//! [`TaskGroup`], [`TaskHandle`] and [`GroupScope`] are re-exported at the crate root. The
//! other types are reached through a group's methods:
//!
//! - [`Builder`], from [`TaskGroup::builder`], and its failure policies ([`CancelOnFailure`],
//!   [`IsolateFailures`], [`FailurePolicy`]).
//! - [`TaskBuilder`], from [`TaskGroup::task`], and [`BackgroundBuilder`], from
//!   [`TaskGroup::background`].
//! - [`SpawnPermit`] and [`SpawnError`], from [`TaskGroup::reserve`] and
//!   [`TaskGroup::try_spawn`].
//! - [`TaskSet`], from [`TaskGroup::task_set`].

mod background;
mod blocking;
mod child;
mod handle;
mod local;
mod permit;
mod policy;
mod queue;
mod registry;
mod scope;
mod shared;
mod shutdown;
mod slots;
mod task_set;

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::error::{CancelReason, Failure};

pub use background::BackgroundBuilder;
pub use handle::TaskHandle;
pub use permit::{SpawnError, SpawnPermit};
pub use policy::{CancelOnFailure, FailurePolicy, IsolateFailures};
pub(crate) use scope::GroupBody;
pub use scope::GroupScope;
pub use task_set::TaskSet;

pub(crate) use child::Deliver;
use scope::Options;
use shared::{Role, Shared};

/// A handle to a running task group, used to spawn tasks into it and to cancel it.
///
/// A group is the tokio form of Python's `async with TaskGroup() as tg:` and of Trio's
/// nursery. [`TaskGroup::scope`] runs a *body* with a handle to a new group, and returns when
/// the body and every task spawned into the group are done.
///
/// The handle is cheap to clone, and is `Send + Sync` when `E: Send`. Move clones into tasks
/// to let them spawn siblings.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use quattro::TaskGroup;
///
/// # async fn fetch(i: u32) -> Result<u32, std::io::Error> { Ok(i) }
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), quattro::GroupError<std::io::Error>> {
/// let total = TaskGroup::builder()
///     .concurrency_limit(4) // at most 4 fetches run at once, the rest wait unspawned
///     .scope(|tg| async move {
///         tg.spawn_background(async {
///             loop {
///                 tokio::time::sleep(Duration::from_secs(1)).await; // a heartbeat
///             }
///         });
///         let handles: Vec<_> = (0..10).map(|i| tg.spawn(fetch(i))).collect();
///         let mut total = 0;
///         for handle in handles {
///             total += handle.await.unwrap_or(0);
///         }
///         Ok(total)
///     })
///     .await?;
/// assert_eq!(total, 45);
/// # Ok(())
/// # }
/// ```
///
/// # Semantics
///
/// - **No leaked tasks.** `scope` returns when the body and every *normal* task have
///   finished. *Background* tasks (see [`spawn_background`](Self::spawn_background)) are
///   then aborted, and dropped before it returns. When the group is cancelled, by a failure,
///   by [`cancel`](Self::cancel) or by an enclosing cancel scope, every task is aborted. The
///   group, or the enclosing scope, returns only once every task's future has been dropped.
/// - **No lost errors.** A task or a body that returns `Err` cancels the group. The other
///   tasks are aborted, the body is dropped, and queued tasks are dropped unspawned. `scope`
///   then returns a [`GroupError`] holding *every* error in order of occurrence, each labelled
///   with its task's id and name. Errors that arrive while the group is cancelling are kept
///   too, and aborted tasks add none. This is the default failure policy; servers want the
///   other one (see [Failure policy](#failure-policy)).
/// - **Panics propagate.** A panicking task or body cancels the group the same way. Once
///   every task is dropped, the first panic is resumed in the task awaiting `scope`, and the
///   other failures are logged with `tracing::error!`. With [`Builder::capture_panics`], the
///   panics are returned in the `GroupError` instead, and the group is still cancelled.
/// - **Deadlines flow.** Every task runs under the deadlines of the cancel scopes around the
///   *group*, as in Trio. Inside a task, and in its destructors, [`current_effective_deadline`]
///   returns the deadline around the group.
/// - **Concurrency limit.** With [`Builder::concurrency_limit`], at most `n` normal tasks run
///   at once. The others wait in a FIFO queue as plain futures and are spawned when a slot
///   frees, so a million queued items cost a million futures, not a million tasks. A queued
///   task never starts after a failure that cancels the group.
/// - **Spawning into a closed group**, one that finished or is cancelling, never runs the
///   future and never panics. The returned handle resolves to a cancelled [`TaskError`].
/// - **Blocking and `!Send` work.** [`spawn_blocking`](Self::spawn_blocking) runs a closure on
///   tokio's blocking thread pool, and [`spawn_local`](Self::spawn_local) runs a `!Send`
///   future on the current `LocalSet`. Both are normal tasks, with the same limit and queue,
///   the same failures and the same deadlines. A closure cannot be interrupted: when a
///   blocking task is cancelled its handle resolves at once, but the group (or the enclosing
///   scope that cancelled it) returns only after the closure has returned, and the closure
///   keeps its slot until then.
/// - **Tracing.** The group has a `task_group` span, whose parent is the span that was
///   current when the group was first polled. Every task has a `task` span inside it, with
///   the task's name.
///
/// # Failure policy
///
/// By default one failure cancels the whole group, as in Trio, asyncio and Python's quattro
/// (Erlang's `one_for_all`). That suits a request that fans out, where one failed part spoils
/// the whole. A server wants the opposite for its connections (Erlang's `one_for_one`). With
/// [`Builder::isolate_failures`], each task's `Err` or panic goes to a handler, and the body
/// and the other tasks run on. Memory does not grow with the number of failures handled, and
/// the handler can return a failure to fail the group after all. Shutdown, the concurrency
/// limit, deadlines and the structured drop work the same under both policies.
///
/// | | default ([`CancelOnFailure`]) | [`isolate_failures`](Builder::isolate_failures) |
/// |---|---|---|
/// | a task returns `Err` | the group is cancelled; the error is in the `GroupError` | the handler gets it; nothing else happens |
/// | a task panics | cancelled; the panic is resumed (or returned, with `capture_panics`) | the handler gets it (`is_panic()`) |
/// | the body returns `Err` or panics | cancelled; returned or resumed | the same: the body owns the group |
/// | the failed task's handle yields | a [`TaskError`] (failed, with the error's text, or panicked), if the body still runs | the same [`TaskError`] |
///
/// Under the default policy the body rarely sees a failed task's handle resolve, because the
/// failure cancels the body at its next `.await` (Trio's rule). Under either policy, awaiting
/// a handle never panics.
///
/// ```
/// use quattro::{Failure, TaskGroup};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let served = TaskGroup::builder()
///     .isolate_failures(|failure: Failure<String>| {
///         eprintln!("request failed: {failure}"); // e.g. `tracing::warn!`
///         Ok(())
///     })
///     .scope(|tg| async move {
///         for i in 0..10 {
///             tg.task(format!("request-{i}")).spawn(async move {
///                 if i == 3 {
///                     return Err(format!("bad request {i}"));
///                 }
///                 Ok(())
///             });
///         }
///         Ok("served") // the nine others ran to completion
///     })
///     .await;
/// assert_eq!(served.unwrap(), "served");
/// # }
/// ```
///
/// # Groups that never fail
///
/// When neither the body nor any task ever returns `Err`, nothing tells Rust the error type.
/// Name it once, on the handle, as [`Infallible`](std::convert::Infallible), the standard
/// library's "cannot happen" error type. Every `Ok(..)` in the body and the tasks is then
/// inferred without a turbofish. The group can still end in a [`GroupError`], for a
/// cancellation or a captured panic.
///
/// ```
/// use std::convert::Infallible;
/// use quattro::TaskGroup;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let sum = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
///     let a = tg.spawn(async { Ok(20) });
///     let b = tg.spawn(async { Ok(22) });
///     Ok(a.await.unwrap() + b.await.unwrap())
/// })
/// .await
/// .unwrap();
/// assert_eq!(sum, 42);
/// # }
/// ```
///
/// # Comparison to `JoinSet`
///
/// A `JoinSet` aborts its tasks when dropped, but leaves the rest to you: joining every task,
/// noticing the first error, aborting the others, collecting their errors, bounding
/// concurrency, and waiting for aborted tasks to actually stop. A group does all of that, and
/// carries deadlines into its tasks.
///
/// [`current_effective_deadline`]: crate::current_effective_deadline
/// [`GroupError`]: crate::GroupError
/// [`TaskError`]: crate::TaskError
/// [`CancelOnFailure`]: crate::group::CancelOnFailure
pub struct TaskGroup<E> {
    shared: Arc<Shared<E>>,
}

impl<E> Clone for TaskGroup<E> {
    fn clone(&self) -> Self {
        TaskGroup {
            shared: self.shared.clone(),
        }
    }
}

impl TaskGroup<()> {
    /// Returns a [`Builder`] to configure a new group.
    ///
    /// The builder sets the concurrency limit, how panics are returned, and the failure
    /// policy.
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
    ///     .concurrency_limit(2)
    ///     .scope(|tg: TaskGroup<Infallible>| async move {
    ///         tg.spawn(async { Ok(()) });
    ///         Ok(1)
    ///     })
    ///     .await;
    /// assert_eq!(out.unwrap(), 1);
    /// # }
    /// ```
    pub fn builder() -> Builder {
        Builder {
            options: Options::default(),
            policy: CancelOnFailure,
        }
    }

    /// Runs `body` with a handle to a new group with default options.
    ///
    /// This is `TaskGroup::builder().scope(body)`: the group has no concurrency limit, and a
    /// failure cancels it. The future returns the body's value once the body and every normal
    /// task are done, or a [`GroupError`]. See [`GroupScope`] for when it panics and what its
    /// error holds.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let err = TaskGroup::scope(|tg| async move {
    ///     tg.spawn(async { Err::<(), _>("no") });
    ///     std::future::pending::<()>().await; // dropped when the task fails
    ///     Ok(())
    /// })
    /// .await
    /// .unwrap_err();
    /// assert_eq!(err.errors().collect::<Vec<_>>(), [&"no"]);
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// See [`GroupScope`].
    ///
    /// [`GroupError`]: crate::GroupError
    pub fn scope<B, Fut, R, E>(body: B) -> GroupScope<B, Fut, R, E>
    where
        B: FnOnce(TaskGroup<E>) -> Fut,
        Fut: Future<Output = Result<R, E>>,
        E: Send + 'static,
    {
        TaskGroup::builder().scope(body)
    }
}

impl<E: Send + 'static> TaskGroup<E> {
    pub(crate) fn from_shared(shared: Arc<Shared<E>>) -> Self {
        TaskGroup { shared }
    }

    /// Spawns a normal task into the group, returning a [`TaskHandle`] to await its value.
    ///
    /// The group waits for the task before it completes, and the task's `Err` or panic is a
    /// failure of the group. Under a concurrency limit, a task that finds every slot taken
    /// waits in the group's FIFO queue as a plain future, neither spawned nor polled until a
    /// slot frees. Use [`spawn_when_free`](Self::spawn_when_free) to make the caller wait
    /// instead.
    ///
    /// It can be called from the body, from the group's tasks, or from anywhere else that holds
    /// a clone of the handle.
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
    ///     let handle = tg.spawn(async { Ok("hello") });
    ///     Ok(handle.await.unwrap())
    /// })
    /// .await;
    /// assert_eq!(out.unwrap(), "hello");
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// This method does not panic. Spawning into a group that has finished or is cancelling
    /// drops `fut` without polling it, and the handle resolves to a cancelled [`TaskError`].
    /// So does a spawn that would have to wait for a slot after
    /// [`request_shutdown`](Self::request_shutdown).
    ///
    /// [`TaskError`]: crate::TaskError
    #[track_caller]
    #[inline]
    pub fn spawn<F, T>(&self, fut: F) -> TaskHandle<T>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
    {
        self.spawn_role(fut, None, Role::Normal)
    }

    /// Spawns a background task, which the group does not wait for.
    ///
    /// Once the body and every normal task are done, the group aborts its background tasks,
    /// and they are dropped before it returns. That is not an error. A background task's `Err`
    /// or panic is a failure of the group like any other task's, and background tasks do not
    /// count against the concurrency limit.
    ///
    /// The task yields `Result<(), E>`, since it runs for its effects, so its type is inferred
    /// even for a `loop` that never ends. Use [`background`](Self::background) for a
    /// background task that returns a value.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use std::time::Duration;
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let out = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
    ///     tg.spawn_background(async {
    ///         loop {
    ///             tokio::time::sleep(Duration::from_secs(1)).await;
    ///         }
    ///     });
    ///     Ok("the body is done, so the group is")
    /// })
    /// .await;
    /// assert!(out.is_ok());
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// This method does not panic; see [`spawn`](Self::spawn).
    #[track_caller]
    pub fn spawn_background<F>(&self, fut: F) -> TaskHandle<()>
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        self.spawn_role(fut, None, Role::Background)
    }

    /// Spawns a normal task once a slot is free under the concurrency limit, waiting until
    /// then.
    ///
    /// This gives backpressure to producers that would otherwise queue tasks without bound.
    /// Without a limit it spawns at once. After [`request_shutdown`](Self::request_shutdown)
    /// it spawns nothing, even with a slot free, and the handle resolves to a cancelled
    /// [`TaskError`], so that a producer loop ends.
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
    ///     .concurrency_limit(2)
    ///     .scope(|tg: TaskGroup<Infallible>| async move {
    ///         for i in 0..100 {
    ///             // Never more than 2 tasks exist, running or queued.
    ///             tg.spawn_when_free(async move { Ok(i) }).await;
    ///         }
    ///         Ok(())
    ///     })
    ///     .await;
    /// assert!(out.is_ok());
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Dropping the returned future before it completes drops `fut` unpolled and gives up its
    /// place in line. A slot granted at that moment goes back to the group. If the group
    /// closes while the caller waits, the future completes with a handle that resolves to a
    /// cancelled [`TaskError`].
    ///
    /// [`TaskError`]: crate::TaskError
    #[track_caller]
    pub fn spawn_when_free<F, T>(&self, fut: F) -> impl Future<Output = TaskHandle<T>> + '_
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
    {
        // Where the task is spawned, taken here: an `async fn` cannot see its caller.
        let at = std::panic::Location::caller();
        // The handle is the output: awaiting it is the caller's choice.
        #[allow(clippy::async_yields_async)]
        async move {
            self.shared
                .spawn_when_free(fut, None, Some(at))
                .await
                .unwrap_or_else(|| TaskHandle::refused(&self.shared.node))
        }
    }

    /// Returns a [`TaskBuilder`] that gives the task it spawns a name.
    ///
    /// The name appears in the group's errors and in the task's tracing span.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let err = TaskGroup::scope(|tg| async move {
    ///     tg.task("fetch-users").spawn(async { Err::<(), _>("timeout") });
    ///     Ok(())
    /// })
    /// .await
    /// .unwrap_err();
    /// assert_eq!(err.to_string(), "task group failed: task `fetch-users`: timeout");
    /// # }
    /// ```
    pub fn task(&self, name: impl Into<Arc<str>>) -> TaskBuilder<'_, E> {
        TaskBuilder {
            group: self,
            name: name.into(),
        }
    }

    /// Cancels the group, dropping the body and aborting every task.
    ///
    /// The group's future then returns a [`GroupError`] for which
    /// [`is_cancelled`](crate::GroupError::is_cancelled) is true, holding any failures that
    /// happened before. Its [`cancel_reason`](crate::GroupError::cancel_reason) is
    /// [`CancelReason::Cancelled`], and so is that of the aborted tasks'
    /// [`TaskError`](crate::TaskError)s.
    ///
    /// It can be called from the body, from a task, or from anywhere else. It is idempotent,
    /// and does nothing if the group has already finished or is already cancelling: the first
    /// cause wins.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let err = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
    ///     let canceller = tg.clone();
    ///     tg.spawn(async move {
    ///         canceller.cancel();
    ///         Ok(())
    ///     });
    ///     std::future::pending::<()>().await;
    ///     Ok(())
    /// })
    /// .await
    /// .unwrap_err();
    /// assert!(err.is_cancelled());
    /// assert!(err.failures().is_empty());
    /// # }
    /// ```
    ///
    /// [`GroupError`]: crate::GroupError
    pub fn cancel(&self) {
        self.cancel_with(CancelReason::Cancelled);
    }

    /// [`cancel`](Self::cancel), for `reason`.
    pub(crate) fn cancel_with(&self, reason: CancelReason) {
        // Recorded as the group closes, under its lock, before anything is aborted: a task
        // or a spawn refused from here on finds it. A group that is already closed has its
        // own reason. Closed at once, so that no spawn slips in before the group's next poll.
        if self.shared.close_with(reason) {
            self.shared.node.cancel();
        }
    }

    /// Returns `true` if the group is closed to new tasks, because it has finished or is
    /// cancelling.
    ///
    /// A group that is shutting down is not closed, though it refuses a task that would have
    /// to wait for a slot (see [`request_shutdown`](Self::request_shutdown)).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let tg = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
    ///     assert!(!tg.is_closed()); // running: accepts tasks
    ///     Ok(tg.clone())
    /// })
    /// .await
    /// .unwrap();
    /// assert!(tg.is_closed()); // finished: a spawn is refused
    /// assert!(tg.spawn(async { Ok(()) }).await.unwrap_err().is_cancelled());
    /// # }
    /// ```
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Returns the number of normal tasks running in the group.
    ///
    /// A task counts from when it is spawned until its future is dropped, which happens before
    /// its handle resolves. Queued tasks do not count. A slot held by a [`SpawnPermit`], or by
    /// the closure of a cancelled blocking task that is still running, counts as a task.
    ///
    /// This is the meaning of tokio's `TaskTracker::len` (tasks not yet ended), not of
    /// `JoinSet::len` (tasks whose result was not yet taken): for that, see
    /// [`TaskSet::len`](crate::group::TaskSet::len).
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
    ///         let a = tg.spawn(async { Ok(1) });
    ///         let b = tg.spawn(async { Ok(2) }); // waits in the queue
    ///         assert_eq!(tg.len(), 1); // queued tasks do not count
    ///         let sum = a.await.unwrap() + b.await.unwrap();
    ///         assert_eq!(tg.len(), 0); // both ended
    ///         Ok(sum)
    ///     })
    ///     .await;
    /// assert_eq!(out.unwrap(), 3);
    /// # }
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.shared.len()
    }

    /// Returns `true` if no normal task is running.
    ///
    /// See [`len`](Self::len) for what counts.
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
    ///     assert!(tg.is_empty());
    ///     let task = tg.spawn(async { Ok("done") });
    ///     assert!(!tg.is_empty());
    ///     let value = task.await.unwrap();
    ///     assert!(tg.is_empty()); // the task ended before its handle resolved
    ///     Ok(value)
    /// })
    /// .await;
    /// assert_eq!(out.unwrap(), "done");
    /// # }
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns a `CancellationToken` that is cancelled when the group is cancelled.
    ///
    /// Hand it to code that takes a token. It fires on a failure that cancels the group, on
    /// [`cancel`](Self::cancel), when the grace of a shutdown runs out, and when the group's
    /// future is dropped before it finishes. It does not fire when the group finishes
    /// normally. Cancelling the returned token cancels neither the group nor the tokens given
    /// to other callers (each call returns a child of the group's token).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let err = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
    ///     let token = tg.cancellation_token(); // e.g. for a library that takes one
    ///     assert!(!token.is_cancelled());
    ///     tg.cancel();
    ///     assert!(token.is_cancelled());
    ///     Ok(())
    /// })
    /// .await
    /// .unwrap_err();
    /// assert!(err.is_cancelled());
    /// # }
    /// ```
    #[must_use]
    pub fn cancellation_token(&self) -> tokio_util::sync::CancellationToken {
        self.shared.node.token().child_token()
    }

    /// Spawns a normal task that hands its value to `sink` instead of a handle; `false` when
    /// the group refused it (closed).
    #[inline(always)]
    pub(crate) fn spawn_to<F, S>(&self, fut: F, sink: S) -> bool
    where
        F: Future<Output = Result<S::Value, E>> + Send + 'static,
        S: Deliver,
    {
        self.shared.spawn_with(fut, sink).is_ok()
    }

    #[track_caller]
    #[inline(always)]
    fn spawn_role<F, T>(&self, fut: F, name: Option<Arc<str>>, role: Role) -> TaskHandle<T>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
    {
        match self.shared.try_spawn(fut, name, role, true) {
            Ok(handle) => handle,
            Err(refused) => {
                tracing::debug!(parent: &self.shared.span, "spawn into a closed task group refused");
                drop(refused);
                TaskHandle::refused(&self.shared.node)
            }
        }
    }
}

impl<E> fmt::Debug for TaskGroup<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskGroup")
            .field("id", &self.shared.id)
            .field("concurrency_limit", &self.shared.limit())
            .field("slots", self.shared.slots())
            .field("registry", &self.shared.registry)
            .finish_non_exhaustive()
    }
}

/// A builder for a new [`TaskGroup`], returned by [`TaskGroup::builder`].
///
/// The type parameter is the group's failure policy. It is [`CancelOnFailure`] by default,
/// under which a failure cancels the group, and [`IsolateFailures`] after
/// [`isolate_failures`](Builder::isolate_failures). See
/// [Failure policy](TaskGroup#failure-policy).
///
/// # Examples
///
/// A builder is `Clone`, so one set of options can build several groups.
///
/// ```
/// use std::convert::Infallible;
/// use quattro::TaskGroup;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let options = TaskGroup::builder().concurrency_limit(8).capture_panics();
/// let calm = options.clone().scope(|tg: TaskGroup<Infallible>| async move {
///     tg.spawn(async { Ok(()) });
///     Ok("calm")
/// });
/// let buggy = options.scope(|tg: TaskGroup<Infallible>| async move {
///     tg.spawn(async { if true { panic!("a bug") } Ok(()) });
///     Ok("buggy")
/// });
/// assert_eq!(calm.await.unwrap(), "calm");
/// assert!(buggy.await.unwrap_err().has_panic()); // captured, not resumed
/// # }
/// ```
#[derive(Debug, Default, Clone)]
#[must_use = "a builder does nothing until `.scope(..)` is called and awaited"]
pub struct Builder<P = CancelOnFailure> {
    options: Options,
    policy: P,
}

impl<P> Builder<P> {
    /// Lets at most `limit` normal tasks run at once.
    ///
    /// Further tasks wait in a FIFO queue, as futures, until a running task finishes, fails,
    /// panics or is aborted, and frees its slot. Background tasks never count.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = quattro::TaskGroup::builder().concurrency_limit(16);
    /// ```
    ///
    /// # Panics
    ///
    /// Panics if `limit` is 0, since such a group could never run a task.
    #[track_caller]
    pub fn concurrency_limit(mut self, limit: usize) -> Builder<P> {
        assert!(
            limit > 0,
            "TaskGroup concurrency_limit must be at least 1: a limit of 0 would never run a task"
        );
        self.options.limit = Some(limit);
        self
    }

    /// Makes the group return the panics of the body and the tasks in its [`GroupError`],
    /// instead of resuming the first one.
    ///
    /// This changes only how a panic that *fails the group* is returned, not whether it fails
    /// it. Under the default [`CancelOnFailure`] policy, a panicking task still cancels the
    /// group like an `Err`. The caller then gets an `Err(GroupError)` whose
    /// [`has_panic`](crate::GroupError::has_panic) is true, and
    /// [`resume_panic`](crate::GroupError::resume_panic) can still re-raise the panic.
    ///
    /// To keep a group running when one of its tasks panics, as a server does for its
    /// connections, use [`isolate_failures`](Self::isolate_failures). With both, a panic that
    /// the failure handler returns, or a panic of the handler itself, is captured rather than
    /// resumed.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let err = TaskGroup::builder()
    ///     .capture_panics()
    ///     .scope(|tg: TaskGroup<Infallible>| async move {
    ///         tg.spawn(async { if true { panic!("bug") } Ok(()) });
    ///         std::future::pending::<()>().await; // still cancelled by the panic
    ///         Ok(())
    ///     })
    ///     .await
    ///     .unwrap_err();
    /// assert!(err.failures()[0].is_panic()); // returned, not resumed
    /// # }
    /// ```
    ///
    /// [`GroupError`]: crate::GroupError
    pub fn capture_panics(mut self) -> Builder<P> {
        self.options.capture_panics = true;
        self
    }

    /// Makes each task's `Err` or panic go to `handler` instead of cancelling the group.
    ///
    /// The body and the other tasks run on, as a server wants for its connections (Erlang's
    /// `one_for_one`, without restarts). The handler gets the [`Failure`] by value, with the
    /// task's name and id and its error or panic ([`is_panic`](Failure::is_panic)). It
    /// returns `Ok(())` when it has handled the failure, and the group forgets it, so memory
    /// does not grow with the number of failures handled. It returns `Err(failure)` to
    /// escalate it: the failure then fails the group as under the default policy, and the
    /// group's [`GroupError`] holds it. Either way, no failure is lost.
    ///
    /// Calling it again replaces the handler.
    ///
    /// # Examples
    ///
    /// A server whose connections fail alone:
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use quattro::{Failure, TaskGroup};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let failed = Arc::new(AtomicUsize::new(0));
    /// let counter = failed.clone();
    /// let served = TaskGroup::builder()
    ///     .concurrency_limit(100)
    ///     .isolate_failures(move |failure: Failure<std::io::Error>| {
    ///         eprintln!("connection failed: {failure}"); // e.g. `tracing::warn!`
    ///         counter.fetch_add(1, Ordering::Relaxed);
    ///         Ok(()) // handled: the group runs on
    ///     })
    ///     .scope(|tg| async move {
    ///         let bad = tg.task("conn-1").spawn(async {
    ///             Err::<u32, _>(std::io::Error::other("reset by peer"))
    ///         });
    ///         let good = tg.task("conn-2").spawn(async { Ok(1) });
    ///         assert!(bad.await.unwrap_err().is_failed()); // the body sees it and goes on
    ///         Ok(good.await.unwrap())
    ///     })
    ///     .await;
    /// assert_eq!(served.unwrap(), 1);
    /// assert_eq!(failed.load(Ordering::Relaxed), 1);
    /// # }
    /// ```
    ///
    /// Escalating what must not be isolated, here a panic (a bug):
    ///
    /// ```
    /// use quattro::{Failure, TaskGroup};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let err = TaskGroup::builder()
    ///     .capture_panics()
    ///     .isolate_failures(|failure: Failure<String>| {
    ///         if failure.is_panic() {
    ///             return Err(failure); // fails the group, as by default
    ///         }
    ///         Ok(())
    ///     })
    ///     .scope(|tg| async move {
    ///         tg.task("parse").spawn(async { Err::<(), _>(String::from("bad input")) });
    ///         tg.task("bug").spawn(async { if true { panic!("oops") } Ok(()) });
    ///         std::future::pending::<()>().await; // cancelled by the escalated panic
    ///         Ok(())
    ///     })
    ///     .await
    ///     .unwrap_err();
    /// assert_eq!(err.to_string(), "task group failed: task `bug` panicked: oops");
    /// # }
    /// ```
    ///
    /// # Semantics
    ///
    /// - **Every task**, normal or background, sends its failures to the handler: its `Err`,
    ///   its panic, and a panic of its future's destructor. Panics are caught in the task, as
    ///   always, so the process never aborts because of one. A failed task frees its slot
    ///   under the concurrency limit, and the next queued task starts.
    /// - **The body** owns the group. Its own `Err` or panic still ends the group as under the
    ///   default policy: the tasks are cancelled, and the group returns the error or resumes
    ///   the panic.
    /// - **The handler runs synchronously in the task that failed**, before that task's handle
    ///   resolves and outside the group's locks. It holds up that task's worker thread, so
    ///   keep it short and never block in it: log, count, or `try_send` on a channel. It may
    ///   run on several threads at once, hence `Fn + Send + Sync`.
    /// - **A panic in the handler** is caught and fails the group, as a panic of the task it
    ///   was handling would. The group is cancelled, and the panic is resumed in the task
    ///   awaiting the group, or returned in the `GroupError` with
    ///   [`capture_panics`](Self::capture_panics). The failure the handler was given is lost
    ///   with it.
    /// - **Handles** of failed tasks yield a [`TaskError`], as under the default policy:
    ///   [`is_failed`](crate::TaskError::is_failed) with the error's text, or
    ///   [`is_panic`](crate::TaskError::is_panic). The body sees it and decides what to do.
    /// - **Everything else is unchanged**: [`cancel`](TaskGroup::cancel), shutdown requests
    ///   and their grace, the concurrency limit, deadlines, and the structured drop (no task
    ///   outlives the group).
    ///
    /// [`GroupError`]: crate::GroupError
    /// [`TaskError`]: crate::TaskError
    pub fn isolate_failures<E, H>(self, handler: H) -> Builder<IsolateFailures<H, E>>
    where
        H: Fn(Failure<E>) -> Result<(), Failure<E>> + Send + Sync + 'static,
    {
        Builder {
            options: self.options,
            policy: IsolateFailures::new(handler),
        }
    }

    /// Runs `body` with a handle to a new group built with these options.
    ///
    /// The future returns the body's value once the body and every normal task are done, or a
    /// [`GroupError`]. A task's failure cancels the group, or goes to the handler given to
    /// [`isolate_failures`](Self::isolate_failures), as the builder's policy says. See
    /// [`GroupScope`] for when the future panics and what its error holds.
    ///
    /// Building the future does nothing yet. The group captures the runtime when it is first
    /// polled, and reads the enclosing deadlines on every poll. So the future can be built
    /// outside a runtime, or built first and wrapped in a cancel scope afterwards.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let out = TaskGroup::builder()
    ///     .scope(|tg| async move {
    ///         tg.spawn(async { Ok::<_, String>(()) });
    ///         Ok("done")
    ///     })
    ///     .await;
    /// assert_eq!(out.unwrap(), "done");
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// See [`GroupScope`].
    ///
    /// [`GroupError`]: crate::GroupError
    pub fn scope<B, Fut, R, E>(self, body: B) -> GroupScope<B, Fut, R, E>
    where
        B: FnOnce(TaskGroup<E>) -> Fut,
        Fut: Future<Output = Result<R, E>>,
        E: Send + 'static,
        P: FailurePolicy<E>,
    {
        GroupScope::new(body, self.options, self.policy.into_handler())
    }

    /// [`scope`](Self::scope) for the crate's own named bodies.
    pub(crate) fn scope_body<B: GroupBody<E>, E: Send + 'static>(
        self,
        body: B,
    ) -> GroupScope<B, B::Future, B::Output, E>
    where
        P: FailurePolicy<E>,
    {
        GroupScope::new(body, self.options, self.policy.into_handler())
    }
}

/// A builder for one named task of a group, returned by [`TaskGroup::task`].
///
/// The name appears in the group's errors and in the task's tracing span.
///
/// # Examples
///
/// ```
/// use quattro::TaskGroup;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let err = TaskGroup::scope(|tg| async move {
///     let builder = tg.task("fetch-users");
///     builder.spawn(async { Err::<(), _>("timeout") });
///     Ok(())
/// })
/// .await
/// .unwrap_err();
/// assert_eq!(err.failures()[0].task_name(), Some("fetch-users"));
/// # }
/// ```
#[must_use = "a task builder does nothing until one of its spawn methods is called"]
pub struct TaskBuilder<'a, E> {
    group: &'a TaskGroup<E>,
    name: Arc<str>,
}

impl<'a, E> TaskBuilder<'a, E> {
    fn into_parts(self) -> (&'a TaskGroup<E>, Arc<str>) {
        (self.group, self.name)
    }
}

impl<E: Send + 'static> TaskBuilder<'_, E> {
    /// Spawns a normal task with this name; see [`TaskGroup::spawn`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let _ = quattro::TaskGroup::scope(|tg: quattro::TaskGroup<Infallible>| async move {
    ///     tg.task("worker").spawn(async { Ok(()) });
    ///     Ok(())
    /// })
    /// .await;
    /// # }
    /// ```
    #[track_caller]
    pub fn spawn<F, T>(self, fut: F) -> TaskHandle<T>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
    {
        self.group.spawn_role(fut, Some(self.name), Role::Normal)
    }

    /// Spawns a background task with this name; see [`TaskGroup::spawn_background`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let _ = quattro::TaskGroup::scope(|tg: quattro::TaskGroup<Infallible>| async move {
    ///     tg.task("heartbeat").spawn_background(std::future::pending());
    ///     Ok(())
    /// })
    /// .await;
    /// # }
    /// ```
    #[track_caller]
    pub fn spawn_background<F>(self, fut: F) -> TaskHandle<()>
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        self.group
            .spawn_role(fut, Some(self.name), Role::Background)
    }

    /// Spawns a normal task with this name once a slot is free; see
    /// [`TaskGroup::spawn_when_free`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let _ = quattro::TaskGroup::builder()
    ///     .concurrency_limit(1)
    ///     .scope(|tg: quattro::TaskGroup<Infallible>| async move {
    ///         tg.task("job").spawn_when_free(async { Ok(()) }).await;
    ///         Ok(())
    ///     })
    ///     .await;
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// The same as for [`TaskGroup::spawn_when_free`].
    pub async fn spawn_when_free<F, T>(self, fut: F) -> TaskHandle<T>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
    {
        self.group
            .shared
            .spawn_when_free(fut, Some(self.name), None)
            .await
            .unwrap_or_else(|| TaskHandle::refused(&self.group.shared.node))
    }
}

impl<E> fmt::Debug for TaskBuilder<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskBuilder")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}
