//! Handles to the tasks of a group, and the slot a task delivers its value to.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

use tokio::task::{AbortHandle, Id};

use super::child::Deliver;
use super::shared::Dequeue;
use crate::error::TaskError;

/// Where a task's value waits for its handle, and how the handle aborts the task: one
/// allocation per task, shared by the task and its handle, also while the task waits in the
/// group's queue, unspawned.
///
/// Everything sits under one uncontended mutex: each field is written about once, and a lock is
/// cheaper than the `OnceLock`s and atomics it replaced, and rules out their interleavings.
pub(crate) struct ResultSlot<T> {
    state: Mutex<SlotState<T>>,
}

struct SlotState<T> {
    result: Option<Result<T, TaskError>>,
    /// The result was delivered (and may have been taken since).
    delivered: bool,
    waker: Option<Waker>,
    /// Set when the task is spawned.
    abort: Option<AbortHandle>,
    /// The handle asked for an abort, possibly before the task was spawned.
    aborted: bool,
}

impl<T> ResultSlot<T> {
    pub(crate) fn new() -> Arc<ResultSlot<T>> {
        Arc::new(ResultSlot {
            state: Mutex::new(SlotState {
                result: None,
                delivered: false,
                waker: None,
                abort: None,
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
            state.abort.clone()
        };
        // Outside the lock: aborting may drop the task's future right here (a runtime shutting
        // down), and its drop delivers to this slot.
        if let Some(handle) = spawned {
            handle.abort();
            return;
        }
        // Still queued: take it out and drop it now, unpolled (its drop resolves the handle).
        // If it is being started meanwhile, `Pending::start` sees the flag instead.
        let group = queue.and_then(Weak::upgrade);
        let removed = group.and_then(|group| group.dequeue(self as *const Self as usize));
        drop(removed);
        self.store(Err(TaskError::cancelled()));
    }

    /// Stores the first result; later ones (a task aborted while it was being spawned) are
    /// dropped.
    fn store(&self, result: Result<T, TaskError>) {
        let waker = {
            let mut state = self.lock();
            if state.delivered {
                return;
            }
            state.result = Some(result);
            state.delivered = true;
            state.waker.take()
        };
        // The handle may be gone: dropping a handle does not cancel the task.
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T: Send + 'static> Deliver for Arc<ResultSlot<T>> {
    type Value = T;

    fn deliver(self, result: Result<T, TaskError>) {
        self.store(result);
    }

    type Control = Arc<ResultSlot<T>>;

    fn control(&self) -> Arc<ResultSlot<T>> {
        self.clone()
    }

    fn spawned(slot: Arc<ResultSlot<T>>, abort: AbortHandle) {
        let mut state = slot.lock();
        // Under the slot's lock: either `abort` sees the handle, or this sees its flag.
        let aborted = state.aborted.then(|| abort.clone());
        state.abort = Some(abort);
        drop(state);
        if let Some(abort) = aborted {
            abort.abort();
        }
    }

    fn is_aborted(slot: &Arc<ResultSlot<T>>) -> bool {
        slot.lock().aborted
    }

    fn key(&self) -> usize {
        Arc::as_ptr(self) as usize
    }
}

/// A handle to one task of a [`TaskGroup`]: await it for the task's value.
///
/// Awaiting yields `Ok(value)` when the task succeeded, or a [`TaskError`] when it was
/// cancelled (aborted, refused by a finished group, or cancelled with its group), failed (its
/// error went to the group's [`GroupError`]) or panicked.
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
pub struct TaskHandle<T> {
    slot: Arc<ResultSlot<T>>,
    /// The group, when the task was queued there: an abort takes it out of the queue.
    queue: Option<Weak<dyn Dequeue>>,
}

impl<T> TaskHandle<T> {
    pub(crate) fn new(slot: Arc<ResultSlot<T>>, queue: Option<Weak<dyn Dequeue>>) -> Self {
        TaskHandle { slot, queue }
    }

    /// A handle that is already resolved to "cancelled": the group refused the task.
    pub(crate) fn refused() -> Self {
        let slot = ResultSlot::new();
        {
            let mut state = slot.lock();
            state.result = Some(Err(TaskError::cancelled()));
            state.delivered = true;
        }
        TaskHandle { slot, queue: None }
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
        self.slot.abort(self.queue.as_ref());
    }

    /// The tokio id of the task; `None` while it waits in the queue, unspawned, or when the
    /// group refused it.
    pub fn id(&self) -> Option<Id> {
        self.slot.lock().abort.as_ref().map(AbortHandle::id)
    }

    /// Whether the task has ended (its result, whatever it is, is ready).
    pub fn is_finished(&self) -> bool {
        self.slot.lock().delivered
    }
}

impl<T> Future for TaskHandle<T> {
    type Output = Result<T, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.slot.lock();
        if let Some(result) = state.result.take() {
            return Poll::Ready(result);
        }
        assert!(
            !state.delivered,
            "a TaskHandle was polled after it completed"
        );
        match &mut state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
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
