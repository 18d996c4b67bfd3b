//! [`TaskSet`]: a group's tasks whose results are taken as they complete, like a `JoinSet`.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, Location, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use pin_project::{pin_project, pinned_drop};
use tokio::task::Id;

use super::{TaskGroup, TaskHandle};
use crate::error::{CancelReason, TaskError, TaskLabel};
use crate::node::Node;

/// Tasks of a [`TaskGroup`] whose results are taken as they complete: the group's
/// `JoinSet`.
///
/// The tasks belong to the group like any other: they count against its concurrency limit,
/// see its deadlines, and their `Err` or panic is a failure of the group (under the default
/// policy it cancels the group, and with it the body that holds the set; under
/// [`isolate_failures`] the handler gets it and the set yields a failed [`TaskError`] with
/// its text). The set only changes where values go: to [`join_next`](Self::join_next), in
/// the order the tasks finish, so a body consumes results with memory bounded by what is in
/// flight, never by how many tasks it ran.
///
/// Dropping the set aborts the tasks it has not yielded, as dropping a `JoinSet` does (that
/// is a cancellation, not a failure); the group still waits for them to be dropped.
///
/// # Examples
///
/// ```
/// use std::convert::Infallible;
/// use quattro::TaskGroup;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let total = TaskGroup::builder()
///     .concurrency_limit(8)
///     .scope(|tg: TaskGroup<Infallible>| async move {
///         let mut set = tg.task_set();
///         for i in 0..100u64 {
///             set.spawn_when_free(async move { Ok(i) }).await; // at most 8 at once
///             while let Some(done) = set.try_join_next() {
///                 let _ = done.unwrap(); // consume as they finish
///             }
///         }
///         let mut total = 0;
///         while let Some(done) = set.join_next().await {
///             total += done.unwrap();
///         }
///         Ok(total)
///     })
///     .await;
/// assert!(total.is_ok());
/// # }
/// ```
///
/// [`isolate_failures`]: crate::group::Builder::isolate_failures
pub struct TaskSet<T, E> {
    group: TaskGroup<E>,
    results: Arc<Results<T>>,
    /// The handles of the tasks not known to be finished, to abort them; pruned as it grows.
    handles: Vec<TaskHandle<()>>,
    /// The length of `handles` after the last pruning.
    kept: usize,
}

/// What the set's tasks deliver, in the order they finish.
struct Results<T> {
    state: Mutex<Delivered<T>>,
}

struct Delivered<T> {
    ready: VecDeque<Result<(Id, T), TaskError>>,
    /// Tasks spawned and not yet yielded (running, queued, or ready).
    len: usize,
    /// The consumer, waiting in `join_next`.
    waiter: Option<Waker>,
}

impl<T> Results<T> {
    fn lock(&self) -> MutexGuard<'_, Delivered<T>> {
        // Every update is a single push or pop: a panic elsewhere cannot leave it torn.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn deliver(&self, result: Result<(Id, T), TaskError>) {
        let mut state = self.lock();
        state.ready.push_back(result);
        let waiter = state.waiter.take();
        drop(state);
        if let Some(waiter) = waiter {
            waiter.wake();
        }
    }
}

impl<E: Send + 'static> TaskGroup<E> {
    /// A new, empty [`TaskSet`] of this group: its tasks' results are taken as they complete.
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
    ///     let mut set = tg.task_set();
    ///     set.spawn(async { Ok("a") });
    ///     Ok(set.join_next().await.unwrap().unwrap())
    /// })
    /// .await;
    /// assert_eq!(out.unwrap(), "a");
    /// # }
    /// ```
    pub fn task_set<T: Send + 'static>(&self) -> TaskSet<T, E> {
        TaskSet {
            group: self.clone(),
            results: Arc::new(Results {
                state: Mutex::new(Delivered {
                    ready: VecDeque::new(),
                    len: 0,
                    waiter: None,
                }),
            }),
            handles: Vec::new(),
            kept: 0,
        }
    }
}

impl<T: Send + 'static, E: Send + 'static> TaskSet<T, E> {
    /// Spawns a normal task into the group, its result to be taken from this set. Under a
    /// full concurrency limit it waits in the group's queue, as with [`TaskGroup::spawn`].
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
    ///     let mut set = tg.task_set();
    ///     for i in 0..3 {
    ///         set.spawn(async move { Ok(i) });
    ///     }
    ///     assert_eq!(set.len(), 3);
    ///     let mut sum = 0;
    ///     while let Some(v) = set.join_next().await {
    ///         sum += v.unwrap();
    ///     }
    ///     Ok(sum)
    /// })
    /// .await;
    /// assert_eq!(out.unwrap(), 3);
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// Never; spawning into a closed group yields a cancelled result from the set.
    #[track_caller]
    pub fn spawn<F>(&mut self, fut: F)
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        let task = self.wrap(fut, Location::caller());
        let handle = self.group.spawn(task);
        self.keep(handle);
    }

    /// Spawns a normal task once a slot is free under the concurrency limit, waiting until
    /// then; see [`TaskGroup::spawn_when_free`].
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
    ///         let mut set = tg.task_set();
    ///         for i in 0..10 {
    ///             set.spawn_when_free(async move { Ok(i) }).await;
    ///         }
    ///         let mut n = 0;
    ///         while set.join_next().await.is_some() {
    ///             n += 1;
    ///         }
    ///         Ok(n)
    ///     })
    ///     .await;
    /// assert_eq!(out.unwrap(), 10);
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes drops `fut` unpolled (the set yields nothing
    /// for it).
    #[track_caller]
    pub fn spawn_when_free<F>(&mut self, fut: F) -> impl Future<Output = ()> + '_
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        let at = Location::caller();
        async move {
            let task = self.wrap(fut, at);
            let shared = &self.group.shared;
            let handle = match shared.spawn_when_free(task, None, Some(at)).await {
                Some(handle) => handle,
                None => TaskHandle::refused(&shared.node),
            };
            self.keep(handle);
        }
    }

    /// Spawns a normal task if a slot is free, never waiting; otherwise hands the future back.
    /// See [`TaskGroup::try_spawn`].
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
    ///         let mut set = tg.task_set();
    ///         set.try_spawn(async { Ok(1) }).unwrap();
    ///         assert!(set.try_spawn(async { Ok(2) }).unwrap_err().is_full());
    ///         Ok(set.join_next().await.unwrap().unwrap())
    ///     })
    ///     .await;
    /// assert_eq!(out.unwrap(), 1);
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// A [`SpawnError`](super::SpawnError) holding `fut` when no slot is free or the group is
    /// closed or shutting down.
    #[track_caller]
    pub fn try_spawn<F>(&mut self, fut: F) -> Result<(), super::SpawnError<F>>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        let permit = match self.group.try_reserve() {
            Ok(permit) => permit,
            Err(err) => return Err(err.with_future(fut)),
        };
        let handle = permit.spawn(self.wrap(fut, Location::caller()));
        self.keep(handle);
        Ok(())
    }

    /// Waits for the next task to finish and takes its result; `None` when the set is empty.
    ///
    /// A task that failed yields a failed [`TaskError`] with its error's text (its error
    /// itself goes to the group); one that was aborted or cancelled with the group yields a
    /// cancelled one.
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
    ///     let mut set = tg.task_set::<u8>();
    ///     assert!(set.join_next().await.is_none()); // empty
    ///     set.spawn(async { Ok(1) });
    ///     Ok(set.join_next().await.unwrap().unwrap())
    /// })
    /// .await;
    /// assert_eq!(out.unwrap(), 1);
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a result is taken only when it is returned; in a `select!` that picks
    /// another branch, the result stays in the set.
    pub async fn join_next(&mut self) -> Option<Result<T, TaskError>> {
        std::future::poll_fn(|cx| self.poll_join_next(cx)).await
    }

    /// [`join_next`](Self::join_next), with the tokio id of the task that finished.
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
    ///     let mut set = tg.task_set();
    ///     set.spawn(async { Ok(tokio::task::id()) });
    ///     let (id, inner) = set.join_next_with_id().await.unwrap().unwrap();
    ///     assert_eq!(id, inner);
    ///     Ok(())
    /// })
    /// .await;
    /// assert!(out.is_ok());
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`join_next`](Self::join_next).
    pub async fn join_next_with_id(&mut self) -> Option<Result<(Id, T), TaskError>> {
        std::future::poll_fn(|cx| self.poll_join_next_with_id(cx)).await
    }

    /// Takes the result of a task that already finished, without waiting; `None` when none
    /// has (or the set is empty).
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
    ///     let mut set = tg.task_set();
    ///     set.spawn(async { Ok(5) });
    ///     assert!(set.try_join_next().is_none()); // not run yet
    ///     tokio::task::yield_now().await;
    ///     Ok(set.try_join_next().unwrap().unwrap())
    /// })
    /// .await;
    /// assert_eq!(out.unwrap(), 5);
    /// # }
    /// ```
    pub fn try_join_next(&mut self) -> Option<Result<T, TaskError>> {
        self.take(None).map(|r| r.map(|(_, value)| value))
    }

    /// [`try_join_next`](Self::try_join_next), with the tokio id of the task that finished.
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
    ///     let mut set = tg.task_set();
    ///     set.spawn(async { Ok(()) });
    ///     tokio::task::yield_now().await;
    ///     Ok(set.try_join_next_with_id().unwrap().is_ok())
    /// })
    /// .await;
    /// assert!(out.unwrap());
    /// # }
    /// ```
    pub fn try_join_next_with_id(&mut self) -> Option<Result<(Id, T), TaskError>> {
        self.take(None)
    }

    /// Polls for the next result; the form of [`join_next`](Self::join_next) for hand-written
    /// futures and streams.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use std::future::poll_fn;
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let out = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
    ///     let mut set = tg.task_set();
    ///     set.spawn(async { Ok(3) });
    ///     Ok(poll_fn(|cx| set.poll_join_next(cx)).await.unwrap().unwrap())
    /// })
    /// .await;
    /// assert_eq!(out.unwrap(), 3);
    /// # }
    /// ```
    pub fn poll_join_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, TaskError>>> {
        self.poll_join_next_with_id(cx)
            .map(|r| r.map(|r| r.map(|(_, value)| value)))
    }

    /// Polls for the next result with its task's id; see
    /// [`join_next_with_id`](Self::join_next_with_id).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use std::future::poll_fn;
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let out = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
    ///     let mut set = tg.task_set::<()>();
    ///     Ok(poll_fn(|cx| set.poll_join_next_with_id(cx)).await.is_none())
    /// })
    /// .await;
    /// assert!(out.unwrap());
    /// # }
    /// ```
    pub fn poll_join_next_with_id(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<(Id, T), TaskError>>> {
        // A result taken uses tokio's coop budget, as `JoinSet::join_next` does: a loop over
        // results that keep coming still yields, so a timer around it can fire.
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        match self.take(Some(cx)) {
            Some(result) => {
                coop.made_progress();
                Poll::Ready(Some(result))
            }
            None if self.is_empty() => Poll::Ready(None),
            None => Poll::Pending,
        }
    }

    /// Aborts every task of the set that has not finished. Their results (cancelled) are
    /// still yielded by [`join_next`](Self::join_next).
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
    ///     let mut set = tg.task_set::<()>();
    ///     set.spawn(std::future::pending());
    ///     set.abort_all();
    ///     Ok(set.join_next().await.unwrap().unwrap_err().is_cancelled())
    /// })
    /// .await;
    /// assert!(out.unwrap());
    /// # }
    /// ```
    pub fn abort_all(&mut self) {
        for handle in self.handles.drain(..) {
            handle.abort();
        }
        self.kept = 0;
    }

    /// Lets every task of the set run on without the set: dropping the set no longer aborts
    /// them (they still belong to the group, which waits for them). Their results are still
    /// yielded.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, rx) = tokio::sync::oneshot::channel();
    /// let out = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
    ///     let mut set = tg.task_set();
    ///     set.spawn(async move {
    ///         let _ = tx.send("ran to the end");
    ///         Ok(())
    ///     });
    ///     set.detach_all();
    ///     drop(set);
    ///     Ok(())
    /// })
    /// .await;
    /// assert!(out.is_ok());
    /// assert_eq!(rx.await.unwrap(), "ran to the end");
    /// # }
    /// ```
    pub fn detach_all(&mut self) {
        self.handles.clear();
        self.kept = 0;
    }

    /// How many tasks of the set have not been yielded yet: running, queued, or finished
    /// and waiting in the set.
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
    ///     let mut set = tg.task_set();
    ///     set.spawn(async { Ok(()) });
    ///     assert_eq!(set.len(), 1);
    ///     set.join_next().await;
    ///     Ok(set.len())
    /// })
    /// .await;
    /// assert_eq!(out.unwrap(), 0);
    /// # }
    /// ```
    pub fn len(&self) -> usize {
        self.results.lock().len
    }

    /// Whether every task of the set was yielded.
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
    ///     Ok(tg.task_set::<()>().is_empty())
    /// })
    /// .await;
    /// assert!(out.unwrap());
    /// # }
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wraps `fut` to deliver its result here; the set counts it from now on.
    fn wrap<F>(&self, fut: F, at: &'static Location<'static>) -> SetTask<F, T> {
        SetTask {
            fut: Some(fut),
            to: Some(self.sender()),
            at,
            node: self.group.shared.node.clone(),
            started: false,
        }
    }

    fn sender(&self) -> Sender<T> {
        self.results.lock().len += 1;
        Sender(self.results.clone())
    }

    /// Keeps a task's handle to abort it with the set; drops the finished ones when the list
    /// doubled (amortised O(1), and the list stays about the size of what is in flight).
    fn keep(&mut self, handle: TaskHandle<()>) {
        self.handles.push(handle);
        if self.handles.len() >= (2 * self.kept).max(32) {
            self.handles.retain(|handle| !handle.is_finished());
            self.kept = self.handles.len();
        }
    }

    fn take(&mut self, cx: Option<&mut Context<'_>>) -> Option<Result<(Id, T), TaskError>> {
        let mut state = self.results.lock();
        match state.ready.pop_front() {
            Some(result) => {
                state.len -= 1;
                Some(result)
            }
            None => {
                if let Some(cx) = cx {
                    match &mut state.waiter {
                        Some(waker) if waker.will_wake(cx.waker()) => {}
                        waiter => *waiter = Some(cx.waker().clone()),
                    }
                }
                None
            }
        }
    }
}

impl<T, E> Drop for TaskSet<T, E> {
    fn drop(&mut self) {
        for handle in &self.handles {
            handle.abort();
        }
    }
}

impl<T, E> fmt::Debug for TaskSet<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.results.lock();
        f.debug_struct("TaskSet")
            .field("group", &self.group.shared.id)
            .field("len", &state.len)
            .field("ready", &state.ready.len())
            .finish()
    }
}

/// Where a set's task delivers its result; a task dropped before it delivered (aborted,
/// cancelled with the group, refused, never started) delivers "cancelled".
struct Sender<T>(Arc<Results<T>>);

/// A task of a set: runs `fut` and delivers its result to the set, passing its error on to
/// the group.
#[pin_project(PinnedDrop)]
struct SetTask<F, T> {
    #[pin]
    fut: Option<F>,
    to: Option<Sender<T>>,
    at: &'static Location<'static>,
    /// The group's node, for the reason it cancelled this task.
    node: Arc<Node>,
    /// Whether it was ever polled.
    started: bool,
}

impl<F, T, E> Future for SetTask<F, T>
where
    F: Future<Output = Result<T, E>>,
    E: 'static,
{
    type Output = Result<(), E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let fut = this
            .fut
            .as_mut()
            .as_pin_mut()
            .expect("polled after completion");
        let polled = match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(polled)) => polled,
            Err(payload) => {
                // The set learns of the panic; the group gets the payload, as for any task.
                send(this.to, Err(panicked(this.at)));
                resume_unwind(payload)
            }
        };
        // Dropped before the result goes out, so that the result comes once the future's
        // destructors ran; one that panics makes the task a panic, for the set and the group.
        let mut fut = this.fut;
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| fut.set(None))) {
            send(this.to, Err(panicked(this.at)));
            resume_unwind(payload)
        }
        match polled {
            Ok(value) => {
                send(this.to, Ok((tokio::task::id(), value)));
                Poll::Ready(Ok(()))
            }
            Err(error) => {
                send(
                    this.to,
                    Err(TaskError::reported(None, Some(*this.at), &error)),
                );
                Poll::Ready(Err(error))
            }
        }
    }
}

/// The error a set yields for a task that panicked (the payload goes to the group).
fn panicked(at: &'static Location<'static>) -> TaskError {
    let mut err = TaskError::panicked(None);
    err.set_label(TaskLabel::current_child(None, Some(at)));
    err
}

#[pinned_drop]
impl<F, T> PinnedDrop for SetTask<F, T> {
    fn drop(self: Pin<&mut Self>) {
        let this = self.project();
        if this.to.is_some() {
            // Dropped before it finished: drop the future first, so that the result comes
            // only once the task's destructors ran. A destructor that panics still lets the
            // result out (a set must never wait for a task that is gone).
            let mut fut = this.fut;
            let dropped = catch_unwind(AssertUnwindSafe(|| fut.set(None)));
            if dropped.is_err() {
                send(this.to, Err(panicked(this.at)));
            } else {
                // No reason recorded by the group: the set (or the runtime) aborted it.
                let reason = this.node.cancel_reason().unwrap_or(CancelReason::Aborted);
                let label = TaskLabel::current_child(None, Some(*this.at));
                let err = if *this.started {
                    let mut err = TaskError::cancelled(reason);
                    err.set_label(label);
                    err
                } else {
                    TaskError::unstarted(reason, Some(label))
                };
                send(this.to, Err(err));
            }
            if let Err(payload) = dropped {
                resume_unwind(payload);
            }
        }
    }
}

fn send<T>(to: &mut Option<Sender<T>>, result: Result<(Id, T), TaskError>) {
    if let Some(Sender(results)) = to.take() {
        results.deliver(result);
    }
}
