//! Handles to the tasks of a group.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tokio::sync::oneshot;
use tokio::task::{AbortHandle, Id};

use crate::error::TaskError;

/// Lets a handle abort a task that may still wait in the group's queue, unspawned.
#[derive(Default)]
pub(crate) struct QueuedControl {
    aborted: AtomicBool,
    spawned: OnceLock<AbortHandle>,
}

impl QueuedControl {
    fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst)
    }

    /// Records the task's abort handle once it is spawned; aborts it if the handle asked for
    /// that in the meantime.
    pub(crate) fn spawned(&self, handle: AbortHandle) {
        let handle = self.spawned.get_or_init(|| handle);
        if self.is_aborted() {
            handle.abort();
        }
    }

    fn abort(&self) {
        self.aborted.store(true, Ordering::SeqCst);
        if let Some(handle) = self.spawned.get() {
            handle.abort();
        }
    }
}

pub(crate) enum Control {
    Spawned(AbortHandle),
    Queued(Arc<QueuedControl>),
    /// Refused: the group had finished or was cancelling.
    Refused,
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
/// # Cancel safety
///
/// Awaiting a handle is cancel safe: dropping the `.await` loses nothing, the task runs on and
/// a later `.await` of the same handle still gets the value (poll it by `&mut`).
///
/// [`TaskGroup`]: crate::TaskGroup
/// [`GroupError`]: crate::GroupError
pub struct TaskHandle<T> {
    result: oneshot::Receiver<Result<T, TaskError>>,
    control: Control,
}

impl<T> TaskHandle<T> {
    pub(crate) fn new(result: oneshot::Receiver<Result<T, TaskError>>, control: Control) -> Self {
        TaskHandle { result, control }
    }

    /// A handle that is already resolved to "cancelled": the group refused the task.
    pub(crate) fn refused() -> Self {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Err(TaskError::cancelled()));
        TaskHandle::new(rx, Control::Refused)
    }

    /// Cancels this one task. This is not a failure of the group: the group goes on, and the
    /// handle resolves to a cancelled [`TaskError`].
    ///
    /// A task still waiting for a free slot (under a concurrency limit) is dropped without
    /// ever being polled. Aborting a finished task does nothing.
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
        match &self.control {
            Control::Spawned(handle) => handle.abort(),
            Control::Queued(control) => control.abort(),
            Control::Refused => {}
        }
    }

    /// The tokio id of the task; `None` while it waits in the queue, unspawned, or when the
    /// group refused it.
    pub fn id(&self) -> Option<Id> {
        match &self.control {
            Control::Spawned(handle) => Some(handle.id()),
            Control::Queued(control) => control.spawned.get().map(AbortHandle::id),
            Control::Refused => None,
        }
    }

    /// Whether the task has ended (its result, whatever it is, is ready).
    pub fn is_finished(&self) -> bool {
        !self.result.is_empty() || self.result.is_terminated()
    }
}

impl<T> Future for TaskHandle<T> {
    type Output = Result<T, TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.result)
            .poll(cx)
            // The sender always sends before it is dropped; a closed channel without a value
            // can only mean the task was torn down with its runtime.
            .map(|res| res.unwrap_or_else(|_| Err(TaskError::cancelled())))
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
