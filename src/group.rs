//! Task groups: structured fan-out where no task outlives the group and no error is lost.
//!
//! [`TaskGroup`], [`TaskHandle`] and [`GroupScope`] are re-exported at the crate root. The
//! rest is reached through a group's methods: [`Builder`] ([`TaskGroup::builder`]),
//! [`TaskBuilder`] ([`TaskGroup::task`]), [`BackgroundBuilder`] ([`TaskGroup::background`]),
//! [`SpawnPermit`] and [`SpawnError`] ([`TaskGroup::reserve`], [`TaskGroup::try_spawn`]),
//! [`TaskSet`] ([`TaskGroup::task_set`]); the failure policies a `Builder` carries
//! ([`CancelOnFailure`], [`IsolateFailures`], [`FailurePolicy`]) are only named in types.

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

/// A handle to a running task group: spawns tasks into it and cancels it.
///
/// A group is the tokio form of Python's `async with TaskGroup() as tg:` and Trio's nursery.
/// [`TaskGroup::scope`] runs a *body* with a handle to a new group and returns when the body
/// and every task spawned into the group are done:
///
/// ```
/// use std::time::Duration;
/// use quattro::TaskGroup;
///
/// # async fn fetch(i: u32) -> Result<u32, std::io::Error> { Ok(i) }
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), quattro::GroupError<std::io::Error>> {
/// let total = TaskGroup::builder()
///     .concurrency_limit(4) // at most 4 fetches at once; the rest wait, unspawned
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
/// - **No leaked tasks.** `scope` returns when the body and every *normal* task have finished;
///   *background* tasks (see [`spawn_background`](Self::spawn_background)) are then aborted and
///   dropped before it returns. When the group is cancelled (by a failure, by
///   [`cancel`](Self::cancel), or by an enclosing cancel scope), every task is aborted, and the
///   group (or the enclosing scope) returns only once every task's future has been dropped.
/// - **No lost errors.** A task that returns `Err`, and a body that returns `Err`, cancel the
///   group: the other tasks are aborted, the body is dropped, queued tasks are dropped
///   unspawned. `scope` then returns a [`GroupError`] holding *every* error, in order of
///   occurrence, each labelled with its task's id and name; errors that arrive while the
///   group is cancelling are kept too. Aborted tasks add nothing to it. (This is the default
///   failure policy; see [Failure policy](#failure-policy) for servers.)
/// - **Panics propagate.** A panicking task or body cancels the group the same way; once every
///   task is dropped, the first panic is resumed in the task awaiting `scope` (the other
///   failures, which that panic keeps from being returned, are logged with
///   `tracing::error!`). [`Builder::capture_panics`] returns panics in the `GroupError`
///   instead; it does not keep the group running.
/// - **Deadlines flow.** Every task runs with the deadlines of the cancel scopes that enclose
///   the *group* (Trio's rule): [`current_effective_deadline`] inside a task, and inside its
///   destructors, is the one around the group.
/// - **Concurrency limit.** With [`Builder::concurrency_limit`], at most `n` normal tasks run at
///   once; the others wait in a FIFO queue as plain futures and are spawned when a slot frees,
///   so a million queued items cost a million futures, not a million tasks. A group checks for
///   a failure before it starts the next queued task.
/// - **Spawning into a finished or cancelling group** never runs the future and never panics:
///   the returned handle resolves to a cancelled [`TaskError`].
/// - **Blocking and `!Send` work.** [`spawn_blocking`](Self::spawn_blocking) runs a closure
///   on tokio's blocking thread pool, and [`spawn_local`](Self::spawn_local) a `!Send` future
///   on the current `LocalSet`, as normal tasks: same limit and queue, same failures, same
///   deadlines. A closure cannot be interrupted: when a blocking task is cancelled its handle
///   resolves at once, but the group (or the enclosing scope that cancelled it) returns only
///   once the closure has returned, and its slot stays taken until then.
/// - **Tracing.** The group has a `task_group` span (parented to the span that was current
///   when the group first ran) and every task a `task` span inside it, with the task's name.
///
/// The handle is cheap to clone and `Send + Sync` (when `E: Send`): move clones into tasks to
/// let them spawn siblings.
///
/// # Failure policy
///
/// By default one failure cancels the whole group, as in Trio, asyncio and Python quattro
/// (Erlang's `one_for_all`): right for a request that fans out, where one failed part spoils
/// the whole. A server wants the opposite for its connections (Erlang's `one_for_one`):
/// [`Builder::isolate_failures`] hands each task's `Err` or panic to a handler, and the body
/// and the other tasks run on; memory does not grow with the number of failures handled. The
/// handler can pass a failure back to fail the group after all. Shutdown, the concurrency
/// limit, deadlines and the structured drop work the same under both policies.
///
/// | | default ([`CancelOnFailure`]) | [`isolate_failures`](Builder::isolate_failures) |
/// |---|---|---|
/// | a task returns `Err` | the group is cancelled; the error is in the `GroupError` | the handler gets it; nothing else happens |
/// | a task panics | cancelled; the panic is resumed (or returned, with `capture_panics`) | the handler gets it (`is_panic()`) |
/// | the body returns `Err` or panics | cancelled; returned or resumed | the same: the body owns the group |
/// | the failed task's handle yields | a [`TaskError`] (failed, with the error's text, or panicked) — if the body still runs | the same [`TaskError`] |
///
/// Under the default policy the body rarely sees a failed task's handle resolve: the failure
/// cancels the body at its next `.await` (Trio's rule). Either way awaiting a handle never
/// panics.
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
/// Name it once, on the handle, as [`Infallible`](std::convert::Infallible) (the standard
/// library's "cannot happen" error type): every `Ok(..)` in the body and the tasks is then
/// inferred, with no turbofish. The group can still end in a [`GroupError`], for a
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
    /// Options for a new group: a concurrency limit, capturing panics.
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

    /// Runs `body` with a handle to a new group, with no concurrency limit; see
    /// [`Builder::scope`].
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

    /// Spawns a normal task: the group waits for it, and its `Err` cancels the group.
    ///
    /// Under a concurrency limit, a task that finds every slot taken waits in the group's FIFO
    /// queue as a plain future (it is not spawned, and not polled, until a slot frees). Use
    /// [`spawn_when_free`](Self::spawn_when_free) to make the caller wait instead.
    ///
    /// Works from the body, from other tasks of the group and from anywhere else holding a
    /// clone of the handle.
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
    /// Never. Spawning into a group that has finished or is cancelling drops `fut` without
    /// polling it and returns a handle that resolves to a cancelled [`TaskError`].
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

    /// Spawns a background task: like [`spawn`](Self::spawn), but the group does not wait for
    /// it: once the body and every normal task are done, background tasks are aborted (that is
    /// not an error) and dropped before the group returns. An `Err` from a background task
    /// cancels the group like any other. Background tasks do not count against the
    /// concurrency limit.
    ///
    /// A background task yields `Result<(), E>`: it is there for its effects, and its output
    /// type is then inferred even for a `loop` that never ends.
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
    /// Never; see [`spawn`](Self::spawn).
    #[track_caller]
    pub fn spawn_background<F>(&self, fut: F) -> TaskHandle<()>
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        self.spawn_role(fut, None, Role::Background)
    }

    /// Spawns a normal task once a slot is free under the concurrency limit, waiting until
    /// then: backpressure for producers that would otherwise queue without bound.
    ///
    /// Without a limit it spawns at once. After a graceful shutdown was requested
    /// ([`request_shutdown`](Self::request_shutdown)) it spawns nothing, even with a slot free:
    /// the handle resolves to a cancelled [`TaskError`], so a producer loop ends.
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
    /// Dropping the returned future before it completes drops `fut` unpolled, and the place it
    /// held in the wait is lost. A group that closes while the caller waits ends the wait: the
    /// handle then resolves to a cancelled [`TaskError`].
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

    /// Options for one task: its name, used in errors and tracing spans.
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

    /// Cancels the group: the body is dropped and every task is aborted. The group's future
    /// then returns a [`GroupError`] for which
    /// [`is_cancelled`](crate::GroupError::is_cancelled) is true (holding any failures that
    /// happened before). Its [`cancel_reason`](crate::GroupError::cancel_reason), like that of
    /// the aborted tasks' [`TaskError`](crate::TaskError)s, is [`CancelReason::Cancelled`],
    /// unless the group was already cancelling for another reason (the first cause wins).
    ///
    /// Callable from the body, a task, or anywhere else; idempotent; does nothing once the
    /// group has finished.
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
        // Recorded before anything is aborted, and before the group closes: a task or a spawn
        // refused from here on finds it. A group that is already closed has its own reason.
        self.shared.node.record_cancel_reason(reason);
        // Closed at once, so that no spawn slips in before the group's next poll.
        if self.shared.close() {
            self.shared.node.cancel();
        }
    }

    /// Whether the group accepts no more tasks: it finished, or it is cancelling.
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

    /// How many normal tasks are running: spawned, and not yet ended (a task leaves the count
    /// as its future is dropped, before its handle resolves). Queued tasks do not count.
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
        self.shared.lock().normal_len()
    }

    /// Whether no normal task is running.
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

    /// A `CancellationToken` that is cancelled when the group is cancelling (a failure,
    /// [`cancel`](Self::cancel), or the group's future dropped from outside), for code that
    /// takes a token.
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
        self.shared.node.token()
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
            .finish_non_exhaustive()
    }
}

/// Options for a new [`TaskGroup`], from [`TaskGroup::builder`].
///
/// The type parameter is the group's failure policy: [`CancelOnFailure`] (the default: a
/// failure cancels the group), or [`IsolateFailures`] after
/// [`isolate_failures`](Builder::isolate_failures). See
/// [Failure policy](TaskGroup#failure-policy).
///
/// # Examples
///
/// A builder is `Clone`: one set of options for several groups.
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
    /// Lets at most `limit` normal tasks run at once; further tasks wait in a FIFO queue, as
    /// futures, until a slot frees (a task finishes, fails, panics or is aborted). Background
    /// tasks never count.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = quattro::TaskGroup::builder().concurrency_limit(16);
    /// ```
    ///
    /// # Panics
    ///
    /// Panics if `limit` is 0: such a group could never run a task.
    #[track_caller]
    pub fn concurrency_limit(mut self, limit: usize) -> Builder<P> {
        assert!(
            limit > 0,
            "TaskGroup concurrency_limit must be at least 1: a limit of 0 would never run a task"
        );
        self.options.limit = Some(limit);
        self
    }

    /// Puts the panics of the body and the tasks into the [`GroupError`] instead of resuming
    /// the first one in the task awaiting the group.
    ///
    /// This changes only how a panic that *fails the group* is returned, not whether it fails
    /// it: a panicking task still cancels the group like an `Err` (under the default
    /// [`CancelOnFailure`] policy), and the caller gets an `Err(GroupError)` whose
    /// [`has_panic`](crate::GroupError::has_panic) is true, from which
    /// [`resume_panic`](crate::GroupError::resume_panic) can still re-raise it. To keep a group
    /// running when one of its tasks panics (a server and its connections), use
    /// [`isolate_failures`](Self::isolate_failures); with both, a panic the failure handler
    /// passes back (or a panic of the handler itself) is captured rather than resumed.
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

    /// Isolates failures: a task's `Err` or panic goes to `handler` instead of cancelling the
    /// group, and the body and the other tasks run on (Erlang's `one_for_one`, without
    /// restarts), as a server wants for its connections.
    ///
    /// The handler gets the [`Failure`] by value: the task's name and id, and its error or
    /// panic ([`is_panic`](Failure::is_panic)). It returns `Ok(())` when the failure is
    /// handled (the group forgets it: memory does not grow with the number of failures
    /// handled), or `Err(failure)` to escalate it: the failure then fails the group as under
    /// the default policy, and the group's [`GroupError`] holds it (no failure is lost:
    /// each one either is handed to you or comes back in the error).
    ///
    /// - **Every task**, normal or background, hands its failures to the handler: its `Err`,
    ///   its panic (caught at the task, as always: the process never aborts because of it),
    ///   and a panic of its future's destructor. A failed task frees its slot under the
    ///   concurrency limit, and the next queued task starts.
    /// - **The body** is the group's owner: its own `Err` or panic still ends the group as
    ///   under the default policy (the tasks are cancelled, and the group returns the error or
    ///   resumes the panic).
    /// - **The handler runs synchronously in the task that failed**, before that task's
    ///   handle resolves, and outside the group's locks. Keep it short and never block in it
    ///   (log, count, send on a channel with `try_send`): it holds up that task's worker
    ///   thread. It may run on several threads at once, hence `Fn + Send + Sync`.
    /// - **A panic inside the handler** is caught and fails the group, as a panic of the task
    ///   it was handling: the group is cancelled, and the panic is resumed in the task
    ///   awaiting the group (or returned in the `GroupError` with
    ///   [`capture_panics`](Self::capture_panics)). The failure it was handling is lost with
    ///   it (it was the handler's).
    /// - **Handles**: awaiting the handle of a failed task yields a [`TaskError`], as under
    ///   the default policy: [`is_failed`](crate::TaskError::is_failed) with the error's text,
    ///   or [`is_panic`](crate::TaskError::is_panic). The body sees it and decides.
    /// - **Everything else is unchanged**: [`cancel`](TaskGroup::cancel), shutdown requests
    ///   and their grace, the concurrency limit, deadlines, and the structured drop (no task
    ///   outlives the group).
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

    /// Runs `body` with a handle to a new group and returns, once the body and every normal
    /// task are done, the body's value, or a [`GroupError`].
    ///
    /// Building the future touches nothing: the group captures the runtime when it is first
    /// polled, and reads the enclosing deadlines on every poll, so the future can be built outside a runtime, or
    /// built first and wrapped in a cancel scope afterwards.
    ///
    /// A task's failure cancels the group, or goes to the handler given to
    /// [`isolate_failures`](Self::isolate_failures), as the builder's policy says. See
    /// [`GroupScope`] for panics, errors and cancel safety.
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

/// Options for one task, from [`TaskGroup::task`].
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
    /// [`TaskGroup::spawn`] with this task's options.
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

    /// [`TaskGroup::spawn_background`] with this task's options.
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

    /// [`TaskGroup::spawn_when_free`] with this task's options.
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
    /// As for [`TaskGroup::spawn_when_free`].
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
