//! Task sets, which return the results of a group's tasks as they complete, like a `JoinSet`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use pin_project::{pin_project, pinned_drop};
use tokio::task::Id;

use super::{TaskGroup, TaskHandle};
use crate::error::TaskError;
use crate::waker::Ready;

/// A set of tasks of a [`TaskGroup`], whose results are returned in the order they complete.
///
/// It is the group's `JoinSet`. The tasks belong to the group like any other: they count
/// against its concurrency limit, see its deadlines, and their `Err` or panic is a failure of
/// the group. Under the default policy, a failure cancels the group, and with it the body that
/// holds the set. Under [`isolate_failures`], the handler gets it, and the set yields a failed
/// [`TaskError`] with the error's text.
///
/// The set changes only where values go: to [`join_next`](Self::join_next), in the order the
/// tasks finish. So a body can consume results with memory bounded by what is in flight, not
/// by how many tasks it ran.
///
/// Dropping the set aborts the tasks it has not yielded, as dropping a `JoinSet` does. That is
/// a cancellation, not a failure, and the group still waits for them to be dropped.
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
    /// The handles of the tasks not yet yielded, by slot; a slot's generation tells a late
    /// notice of a detached task from the task that reuses the slot.
    slots: Vec<(u32, Option<TaskHandle<T>>)>,
    free: Vec<usize>,
    /// Tasks not yet yielded.
    len: usize,
    /// Which tasks ended (pushed by the tasks themselves).
    ended: Arc<Ended>,
    /// A task that ended, whose handle is being awaited: it resolves once the group counted
    /// the task out, so a slot is free again when its result is yielded.
    joining: Option<usize>,
}

/// The slots of the tasks that ended (index and generation), in the order they ended, and
/// the set waiting for one.
struct Ended {
    state: Mutex<Ready<(usize, u32)>>,
}

impl Ended {
    fn new() -> Arc<Ended> {
        Arc::new(Ended {
            state: Mutex::new(Ready::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Ready<(usize, u32)>> {
        // Every update is a single push or pop: a panic elsewhere cannot leave it torn.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, slot: (usize, u32)) {
        let waiter = self.lock().push(slot);
        if let Some(waiter) = waiter {
            waiter.wake();
        }
    }

    /// The next task that ended; registers `cx` if none did (and `cx` is given).
    fn pop(&self, cx: Option<&mut Context<'_>>) -> Option<(usize, u32)> {
        self.lock().pop(cx)
    }
}

impl<E: Send + 'static> TaskGroup<E> {
    /// Creates an empty [`TaskSet`] for tasks of this group.
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
    #[must_use]
    pub fn task_set<T: Send + 'static>(&self) -> TaskSet<T, E> {
        TaskSet {
            group: self.clone(),
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
            ended: Ended::new(),
            joining: None,
        }
    }
}

impl<T: Send + 'static, E: Send + 'static> TaskSet<T, E> {
    /// Spawns a normal task into the group, with its result returned by this set.
    ///
    /// Under a full concurrency limit, the task waits in the group's queue, as with
    /// [`TaskGroup::spawn`].
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
    /// This method does not panic. Spawning into a closed group yields a cancelled result
    /// from the set.
    #[track_caller]
    pub fn spawn<F>(&mut self, fut: F)
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        let (slot, task) = self.wrap(fut);
        let handle = self.group.spawn(task);
        self.keep(slot, handle);
    }

    /// Spawns a normal task once a slot is free under the concurrency limit, waiting until
    /// then.
    ///
    /// See [`TaskGroup::spawn_when_free`]. After a shutdown request, or once the group has
    /// closed, nothing is spawned and the set yields a cancelled result for the task.
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
    /// Dropping the future before it completes drops `fut` unpolled, and the set yields
    /// nothing for it. A slot granted at that moment goes back to the group.
    #[track_caller]
    pub fn spawn_when_free<F>(&mut self, fut: F) -> impl Future<Output = ()> + '_
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        let at = std::panic::Location::caller();
        async move {
            // The slot first, then the task: nothing of the set is held while it waits.
            let reserved = self.group.shared.acquire().await;
            let (slot, task) = self.wrap(fut);
            let shared = &self.group.shared;
            let handle = match reserved {
                Some(key) => super::permit::spawn_under(shared, key, task, at),
                None => {
                    shared.drop_unstarted(task);
                    TaskHandle::refused(&shared.node)
                }
            };
            self.keep(slot, handle);
        }
    }

    /// Spawns a normal task if a slot is free, or returns the future without waiting.
    ///
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
    /// Returns a [`SpawnError`](super::SpawnError) holding `fut` if no slot is free, if the
    /// group is closed, or if a shutdown of the group was requested.
    #[track_caller]
    pub fn try_spawn<F>(&mut self, fut: F) -> Result<(), super::SpawnError<F>>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        let key = match self.group.shared.try_acquire() {
            Ok(key) => key,
            Err(refusal) => return Err(super::SpawnError::new(fut, refusal)),
        };
        let at = std::panic::Location::caller();
        let (slot, task) = self.wrap(fut);
        let handle = super::permit::spawn_under(&self.group.shared, key, task, at);
        self.keep(slot, handle);
        Ok(())
    }

    /// Waits until one of the tasks in the set completes and returns its result.
    ///
    /// Returns `None` if the set is empty. A task that failed yields a failed [`TaskError`]
    /// with its error's text, since the error itself goes to the group. A task that was
    /// aborted, or cancelled with the group, yields a cancelled one.
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
    /// This method is cancel safe. A result is removed from the set only when it is returned,
    /// so if `join_next` is used in a `tokio::select!` and another branch completes first, the
    /// result stays in the set.
    pub async fn join_next(&mut self) -> Option<Result<T, TaskError>> {
        std::future::poll_fn(|cx| self.poll_join_next(cx)).await
    }

    /// Waits until one of the tasks in the set completes and returns its result, with the
    /// tokio id of the task.
    ///
    /// Returns `None` if the set is empty. A failed or cancelled task yields a [`TaskError`]
    /// without an id, as for [`join_next`](Self::join_next).
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
    /// This method is cancel safe, as [`join_next`](Self::join_next) is.
    pub async fn join_next_with_id(&mut self) -> Option<Result<(Id, T), TaskError>> {
        std::future::poll_fn(|cx| self.poll_join_next_with_id(cx)).await
    }

    /// Returns the result of a task that has already completed, without waiting.
    ///
    /// Returns `None` if no task has completed, or if the set is empty.
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
        self.try_join_next_with_id()
            .map(|r| r.map(|(_, value)| value))
    }

    /// Returns the result of a task that has already completed, with the tokio id of the
    /// task, without waiting.
    ///
    /// Returns `None` if no task has completed, or if the set is empty. See
    /// [`try_join_next`](Self::try_join_next).
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
        match self.poll_take(None) {
            Poll::Ready(next) => next,
            Poll::Pending => None,
        }
    }

    /// Polls for one of the tasks in the set to complete.
    ///
    /// This is the form of [`join_next`](Self::join_next) for hand-written futures and
    /// streams. It returns `Poll::Ready(None)` if the set is empty. Like
    /// `JoinSet::poll_join_next`, it may return `Poll::Pending` when tokio's coop budget is
    /// spent, even if a task has completed.
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

    /// Polls for one of the tasks in the set to complete, returning its result with the
    /// tokio id of the task.
    ///
    /// See [`poll_join_next`](Self::poll_join_next) and
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
        let next = std::task::ready!(self.poll_take(Some(cx)));
        if next.is_some() {
            coop.made_progress();
        }
        Poll::Ready(next)
    }

    /// Aborts every task of the set that has not finished.
    ///
    /// This does not remove the tasks from the set. Their cancelled results are still
    /// returned by [`join_next`](Self::join_next).
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
        for handle in self.slots.iter().filter_map(|(_, handle)| handle.as_ref()) {
            handle.abort();
        }
    }

    /// Removes every task from the set without aborting it.
    ///
    /// As with `JoinSet::detach_all`, the tasks run on. They still belong to the group, which
    /// waits for them. The set forgets them: it yields nothing for them, and dropping it does
    /// not abort them.
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
        for index in 0..self.slots.len() {
            if self.slots[index].1.is_some() {
                self.release(index);
            }
        }
        self.joining = None;
        // The detached tasks still report their end. They report it to a list of their own,
        // freed with the last of them, so that a set that detaches and never joins stays
        // small.
        self.ended = Ended::new();
    }

    /// Returns the number of tasks in the set.
    ///
    /// A task stays in the set, running, queued, or finished, until its result is returned or
    /// it is detached, as in tokio's `JoinSet::len`. [`TaskGroup::len`] counts the group's
    /// running tasks instead.
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
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Returns `true` if the set holds no task.
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
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wraps `fut` to notice the set when it ends, in a slot of its own; the set counts it
    /// from now on.
    fn wrap<F>(&mut self, fut: F) -> (usize, Notify<F>) {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.slots.push((0, None));
                self.slots.len() - 1
            }
        };
        let generation = self.slots[index].0;
        let task = Notify {
            fut,
            slot: (index, generation),
            ended: Some(self.ended.clone()),
        };
        (index, task)
    }

    /// Counts the task spawned into the slot `wrap` took. Not in `wrap`: a refused task's
    /// destructor may panic on the way, and the slot is then lost (its notice ignored, as its
    /// handle never comes), never counted as a task to wait for.
    fn keep(&mut self, index: usize, handle: TaskHandle<T>) {
        self.slots[index].1 = Some(handle);
        self.len += 1;
    }

    /// Forgets the task in slot `index`; a late notice of it is then ignored.
    fn release(&mut self, index: usize) {
        let (generation, handle) = &mut self.slots[index];
        *handle = None;
        *generation = generation.wrapping_add(1);
        self.free.push(index);
        self.len -= 1;
    }

    /// The next result: the handle of the next task that ended, once it resolves (after the
    /// group counted the task out); `None` when the set is empty.
    /// The next result; without `cx` (`try_join_next`), only one that is ready, and no waker
    /// registered (one registered by `poll_join_next` stays).
    fn poll_take(
        &mut self,
        mut cx: Option<&mut Context<'_>>,
    ) -> Poll<Option<Result<(Id, T), TaskError>>> {
        loop {
            if let Some(index) = self.joining {
                let handle = self.slots[index]
                    .1
                    .as_mut()
                    .expect("a joined slot has a handle");
                let out = match cx.as_deref_mut() {
                    Some(cx) => std::task::ready!(Pin::new(&mut *handle).poll(cx)),
                    // A finished handle is ready, and registers no waker. Outside the coop
                    // budget, as in `JoinSet::try_join_next`: a ready result must not read as
                    // none because the caller's budget ran out.
                    None if handle.is_finished() => {
                        let mut noop = Context::from_waker(Waker::noop());
                        let mut handle = tokio::task::coop::unconstrained(&mut *handle);
                        std::task::ready!(Pin::new(&mut handle).poll(&mut noop))
                    }
                    None => return Poll::Pending,
                };
                let id = handle.id();
                self.joining = None;
                self.release(index);
                return Poll::Ready(Some(out.map(|value| {
                    (id.expect("a task that returned a value was spawned"), value)
                })));
            }
            match self.ended.pop(cx.as_deref_mut()) {
                Some((index, generation)) => {
                    let live = self.slots.get(index);
                    if live.is_some_and(|(g, handle)| *g == generation && handle.is_some()) {
                        self.joining = Some(index);
                    }
                }
                None if self.len == 0 => return Poll::Ready(None),
                None => return Poll::Pending,
            }
        }
    }
}

impl<T, E> Drop for TaskSet<T, E> {
    fn drop(&mut self) {
        for handle in self.slots.iter().filter_map(|(_, handle)| handle.as_ref()) {
            handle.abort();
        }
    }
}

impl<T, E> fmt::Debug for TaskSet<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskSet")
            .field("group", &self.group.shared.id)
            .field("len", &self.len)
            .field("ended", &self.ended.lock().len())
            .finish()
    }
}

/// A task of a set: runs `fut` and tells the set, by its slot, when it ended (finished,
/// panicked, or dropped unfinished). Its value goes to its handle, which the set awaits.
#[pin_project(PinnedDrop)]
struct Notify<F> {
    #[pin]
    fut: F,
    slot: (usize, u32),
    /// `None` once the set was told.
    ended: Option<Arc<Ended>>,
}

impl<F: Future> Future for Notify<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let out = std::task::ready!(this.fut.poll(cx));
        if let Some(ended) = this.ended.take() {
            ended.push(*this.slot);
        }
        Poll::Ready(out)
    }
}

#[pinned_drop]
impl<F> PinnedDrop for Notify<F> {
    fn drop(self: Pin<&mut Self>) {
        // Aborted, cancelled with the group, refused, or unwound by a panic: the set awaits
        // the handle, which says which.
        let this = self.project();
        if let Some(ended) = this.ended.take() {
            ended.push(*this.slot);
        }
    }
}
