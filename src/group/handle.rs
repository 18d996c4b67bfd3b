//! Handles to the tasks of a group, and the slot through which a queued task's handle learns
//! that it was spawned.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

use tokio::task::{Id, JoinError, JoinHandle};

use super::child::Deliver;
use super::shared::Dequeue;
use crate::error::TaskError;

/// What a task's handle awaits: the task's own output, through tokio's `JoinHandle`.
type Output<T> = Result<T, TaskError>;

/// Where the handle of a task that waits in the group's queue finds the task's `JoinHandle`
/// once it is spawned, or its result if it never is. A task spawned at once needs none: its
/// handle holds the `JoinHandle` from the start, and a task costs no allocation of quattro's.
pub(crate) struct ResultSlot<T> {
    state: Mutex<SlotState<T>>,
}

struct SlotState<T> {
    /// Set when the task is dropped unspawned (or refused).
    result: Option<Output<T>>,
    /// Set when the task is spawned, until the handle takes it.
    join: Option<JoinHandle<Output<T>>>,
    /// A result or a join handle was stored (and may have been taken since).
    settled: bool,
    waker: Option<Waker>,
    /// The handle asked for an abort, possibly before the task was spawned.
    aborted: bool,
}

impl<T> ResultSlot<T> {
    fn new() -> Arc<ResultSlot<T>> {
        Arc::new(ResultSlot {
            state: Mutex::new(SlotState {
                result: None,
                join: None,
                settled: false,
                waker: None,
                aborted: false,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Aborts the task; `queue` is the group whose queue may still hold it.
    fn abort(&self, queue: Option<&Weak<dyn Dequeue>>) {
        let spawned = {
            let mut state = self.lock();
            state.aborted = true;
            state.join.as_ref().map(JoinHandle::abort_handle)
        };
        if let Some(handle) = spawned {
            handle.abort();
            return;
        }
        // Still queued: take it out and drop it now, unpolled (its drop resolves the handle).
        // If it is being started meanwhile, `Pending::start` sees the flag instead.
        let group = queue.and_then(Weak::upgrade);
        let removed = group.and_then(|group| group.dequeue(self as *const Self as usize));
        drop(removed);
        self.settle(|state| state.result = Some(Err(TaskError::cancelled())));
    }

    /// Stores the first outcome; a later one (a task aborted while it was being spawned) is
    /// dropped.
    fn settle(&self, store: impl FnOnce(&mut SlotState<T>)) {
        let waker = {
            let mut state = self.lock();
            if state.settled {
                return;
            }
            store(&mut state);
            state.settled = true;
            state.waker.take()
        };
        // The handle may be gone: dropping a handle does not cancel the task.
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The sink of a task spawned for a [`TaskHandle`]: the value is the task's output. Only a
/// task that has to wait in the queue gets a [`ResultSlot`].
pub(crate) struct ToHandle<T> {
    slot: Option<Arc<ResultSlot<T>>>,
}

impl<T> ToHandle<T> {
    pub(crate) fn new() -> Self {
        ToHandle { slot: None }
    }
}

impl<T: Send + 'static> Deliver for ToHandle<T> {
    type Value = T;
    type Output = Output<T>;

    fn deliver(self, result: Output<T>) -> Output<T> {
        result
    }

    fn never_spawned(self) {
        if let Some(slot) = self.slot {
            slot.settle(|state| state.result = Some(Err(TaskError::cancelled())));
        }
    }

    type Ticket = Arc<ResultSlot<T>>;

    fn queue(&mut self) -> Arc<ResultSlot<T>> {
        self.slot.get_or_insert_with(ResultSlot::new).clone()
    }

    type Control = Option<Arc<ResultSlot<T>>>;

    fn control(&self) -> Self::Control {
        self.slot.clone()
    }

    fn spawned(slot: Self::Control, join: JoinHandle<Output<T>>) {
        let Some(slot) = slot else { return };
        let abort = join.abort_handle();
        let (aborted, waker) = {
            let mut state = slot.lock();
            // Under the slot's lock: either `abort` sees the join handle, or this its flag.
            // Settled already means aborted too: the handle resolved to cancelled.
            if !state.settled {
                state.join = Some(join);
                state.settled = true;
            }
            (state.aborted, state.waker.take())
        };
        if aborted {
            abort.abort();
        }
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn is_aborted(slot: &Self::Control) -> bool {
        slot.as_ref().is_some_and(|slot| slot.lock().aborted)
    }

    fn key(&self) -> usize {
        self.slot
            .as_ref()
            .map_or(0, |slot| Arc::as_ptr(slot) as usize)
    }
}

/// A handle to one task of a [`TaskGroup`]: await it for the task's value.
///
/// Awaiting yields `Ok(value)` when the task succeeded, or a [`TaskError`] when it was
/// cancelled (aborted, refused by a finished group, or cancelled with its group), failed (its
/// error went to the group's [`GroupError`]) or panicked.
///
/// # When the task failed
///
/// The task's error value belongs to the group: it goes to the [`GroupError`] (and cancels the
/// group), once. The handle yields a [`TaskError`] that says which task failed and carries the
/// error's *text* ([`Reported`]), so `let v = handle.await?;` in a body whose error type is
/// `anyhow::Error`, `Box<dyn Error + Send + Sync>` or `io::Error` compiles and keeps the
/// message: ``task `fetch` failed: connection refused``. The text is written when the task
/// fails, for the error types listed under [`Reported`]; for others the message says that the
/// error went to the group. Whatever the body returns with that `?` is recorded after the
/// task's own failure, so the group's error reads, in order, the task's error and then the
/// body's.
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
/// Dropping the handle does **not** cancel the task (use [`abort`](Self::abort)): the group
/// owns its tasks.
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
/// # Panics
///
/// Polling the handle again after it yielded its result panics, like polling any finished
/// future.
///
/// # Cancel safety
///
/// Awaiting a handle is cancel safe: dropping the `.await` loses nothing, the task runs on and
/// a later `.await` of the same handle still gets the value (poll it by `&mut`).
///
/// [`TaskGroup`]: crate::TaskGroup
/// [`GroupError`]: crate::GroupError
/// [`Reported`]: crate::Reported
pub struct TaskHandle<T> {
    state: HandleState<T>,
}

enum HandleState<T> {
    /// The task runs (or ran): its output comes through tokio's join handle.
    Spawned(JoinHandle<Output<T>>),
    /// The task waits in the group's queue, or was refused.
    Queued {
        slot: Arc<ResultSlot<T>>,
        /// The group, whose queue an abort takes the task out of.
        queue: Option<Weak<dyn Dequeue>>,
    },
    /// The result was taken.
    Done(Option<Id>),
}

impl<T> TaskHandle<T> {
    pub(crate) fn spawned(join: JoinHandle<Output<T>>) -> Self {
        TaskHandle {
            state: HandleState::Spawned(join),
        }
    }

    pub(crate) fn queued(slot: Arc<ResultSlot<T>>, queue: Weak<dyn Dequeue>) -> Self {
        TaskHandle {
            state: HandleState::Queued {
                slot,
                queue: Some(queue),
            },
        }
    }

    /// A handle that is already resolved to "cancelled": the group refused the task.
    pub(crate) fn refused() -> Self {
        let slot = ResultSlot::new();
        slot.settle(|state| state.result = Some(Err(TaskError::cancelled())));
        TaskHandle {
            state: HandleState::Queued { slot, queue: None },
        }
    }

    /// Cancels this one task. This is not a failure of the group: the group goes on, and the
    /// handle resolves to a cancelled [`TaskError`].
    ///
    /// A task still waiting for a free slot (under a concurrency limit) is never polled.
    /// Aborting a finished task does nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let out = TaskGroup::scope(|tg| async move {
    ///     let forever = tg.spawn(std::future::pending::<Result<(), ()>>());
    ///     forever.abort();
    ///     Ok(forever.await.unwrap_err().is_cancelled())
    /// })
    /// .await;
    /// assert_eq!(out.unwrap(), true);
    /// # }
    /// ```
    pub fn abort(&self) {
        match &self.state {
            HandleState::Spawned(join) => join.abort(),
            HandleState::Queued { slot, queue } => slot.abort(queue.as_ref()),
            HandleState::Done(_) => {}
        }
    }

    /// The tokio id of the task; `None` while it waits in the queue, unspawned, or when the
    /// group refused it.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let out = TaskGroup::builder()
    ///     .concurrency_limit(1)
    ///     .scope(|tg| async move {
    ///         let first = tg.spawn(async { Ok::<_, ()>(tokio::task::id()) });
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
            HandleState::Queued { slot, .. } => slot.lock().join.as_ref().map(JoinHandle::id),
            HandleState::Done(id) => *id,
        }
    }

    /// Whether the task has ended (its result, whatever it is, is ready).
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let out = TaskGroup::scope(|tg| async move {
    ///     let task = tg.spawn(async { Ok::<_, ()>(1) });
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
            HandleState::Queued { slot, .. } => {
                let state = slot.lock();
                state.result.is_some() || state.join.as_ref().is_some_and(JoinHandle::is_finished)
            }
            HandleState::Done(_) => true,
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
                    return Poll::Ready(out.unwrap_or_else(join_error));
                }
                HandleState::Queued { slot, .. } => {
                    let mut state = slot.lock();
                    if let Some(result) = state.result.take() {
                        drop(state);
                        self.state = HandleState::Done(None);
                        return Poll::Ready(result);
                    }
                    if let Some(join) = state.join.take() {
                        drop(state);
                        self.state = HandleState::Spawned(join);
                        continue;
                    }
                    match &mut state.waker {
                        Some(waker) if waker.will_wake(cx.waker()) => {}
                        slot => *slot = Some(cx.waker().clone()),
                    }
                    return Poll::Pending;
                }
                HandleState::Done(_) => panic!("a TaskHandle was polled after it completed"),
            }
        }
    }
}

/// A task's join error as the handle reports it. The task catches its future's panics, so
/// this is an abort, or the runtime shutting down.
fn join_error<T>(err: JoinError) -> Output<T> {
    Err(if err.is_panic() {
        TaskError::panicked(None)
    } else {
        TaskError::cancelled()
    })
}

impl<T> fmt::Debug for TaskHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.id())
            .field("is_finished", &self.is_finished())
            .finish()
    }
}
