//! Local tasks, which run `!Send` futures as tasks of a group on the current `LocalSet`.
//!
//! A local task with a free slot is an ordinary child task, spawned with
//! `tokio::task::spawn_local`. One that must wait for a slot cannot wait in the group's queue,
//! which is shared with other threads, since its future is not `Send`. So the task is spawned
//! on the `LocalSet` at once, as a [`Queued`] future that holds the user's future unpolled,
//! and a `Send` entry ([`LocalEntry`]) takes its place in the group's queue. When the queue
//! reaches the entry, the waiting task gets the slot and runs the future as a child under it.
//! While it waits, the task is counted by a background key. The entry keeps the group open,
//! and the key makes the group wait for the task (and abort it).

use std::future::Future;
use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker, ready};

use pin_project::{pin_project, pinned_drop};
use tokio::task::AbortHandle;

use super::child::Child;
use super::handle::{Output, ToHandle};
use super::queue::Start;
use super::registry::TaskKey;
use super::shared::{Admit, Role, Shared, Who};
use super::{TaskBuilder, TaskGroup, TaskHandle};
use crate::error::{CancelReason, TaskError, TaskLabel};
use crate::frame::Drains;

impl<E: Send + 'static> TaskGroup<E> {
    /// Spawns a `!Send` future as a normal task of the group, on the current
    /// [`LocalSet`](tokio::task::LocalSet).
    ///
    /// Use it in a group that runs inside a `LocalSet` or a `LocalRuntime`, for tasks that
    /// hold `Rc`s, `RefCell`s or a client that is not `Send`. The `LocalSet` must keep
    /// running until the group returns, so run the group inside it, with
    /// `LocalSet::run_until` or in a task spawned on it, as below.
    ///
    /// The rules of [`spawn`](Self::spawn) hold. The group waits for the task, and the task's
    /// `Err` or panic is a failure of the group. [Aborting](TaskHandle::abort) its handle
    /// cancels it alone. It runs in the group's frame, so it sees the group's deadlines and
    /// shutdown requests. When the group is cancelled, the task is aborted, and the group
    /// waits until its future is dropped. Its value must be `Send`, as for every
    /// [`TaskHandle`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::cell::Cell;
    /// use std::convert::Infallible;
    /// use std::rc::Rc;
    /// use quattro::TaskGroup;
    /// use tokio::task::LocalSet;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let total = Rc::new(Cell::new(0)); // not `Send`
    /// let group = TaskGroup::builder()
    ///     .concurrency_limit(2) // the others wait their turn, unpolled
    ///     .scope(|tg: TaskGroup<Infallible>| {
    ///         let total = total.clone();
    ///         async move {
    ///             for i in 1..=4 {
    ///                 let total = total.clone();
    ///                 tg.spawn_local(async move {
    ///                     tokio::task::yield_now().await;
    ///                     total.set(total.get() + i);
    ///                     Ok(())
    ///                 });
    ///             }
    ///             Ok(())
    ///         }
    ///     });
    /// LocalSet::new().run_until(group).await.unwrap();
    /// assert_eq!(total.get(), 10);
    /// # }
    /// ```
    ///
    /// # Concurrency limit
    ///
    /// Under a concurrency limit, a local task waits for a slot in the same FIFO queue as the
    /// tasks of `spawn` and [`spawn_blocking`](Self::spawn_blocking), in call order, and at
    /// most `n` normal tasks run, local or not. A `!Send` future cannot wait in that queue
    /// itself, because other threads take tasks out of it. So a local task that must wait is
    /// spawned on the `LocalSet` at once, and its future waits there, unpolled, until the
    /// queue reaches it. A queued local task therefore costs a tokio task, where a queued
    /// `spawn` costs only its future, and its handle has an [`id`](TaskHandle::id) while it
    /// waits. Aborting it drops its future at once, and its place in the queue is skipped when
    /// it comes up. After a shutdown request, a local task that would have to wait is refused,
    /// as with `spawn`.
    ///
    /// # Panics
    ///
    /// Panics if called outside a `LocalSet` or a `LocalRuntime`, as
    /// [`tokio::task::spawn_local`] does: for instance from a task spawned with `spawn`,
    /// which runs on the runtime's worker threads. The group is left as it was: `fut` is
    /// dropped, and the slot it took is freed (or its place in the queue skipped).
    ///
    /// Spawning into a group that has finished or is cancelling does not panic. `fut` is
    /// dropped unpolled, and the handle resolves to a cancelled [`TaskError`].
    ///
    /// [`TaskError`]: crate::TaskError
    #[track_caller]
    pub fn spawn_local<F, T>(&self, fut: F) -> TaskHandle<T>
    where
        F: Future<Output = Result<T, E>> + 'static,
        T: Send + 'static,
    {
        spawn_local(&self.shared, fut, None)
    }
}

impl<E: Send + 'static> TaskBuilder<'_, E> {
    /// Spawns a `!Send` future as a normal task with this name; see
    /// [`TaskGroup::spawn_local`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::rc::Rc;
    /// use quattro::TaskGroup;
    /// use tokio::task::LocalSet;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let err = LocalSet::new()
    ///     .run_until(TaskGroup::scope(|tg| async move {
    ///         let state = Rc::new("not Send");
    ///         tg.task("local-job").spawn_local(async move { Err::<(), _>(*state) });
    ///         Ok(())
    ///     }))
    ///     .await
    ///     .unwrap_err();
    /// assert_eq!(err.to_string(), "task group failed: task `local-job`: not Send");
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// Panics if called outside a `LocalSet` or a `LocalRuntime`, as
    /// [`TaskGroup::spawn_local`] does.
    #[track_caller]
    pub fn spawn_local<F, T>(self, fut: F) -> TaskHandle<T>
    where
        F: Future<Output = Result<T, E>> + 'static,
        T: Send + 'static,
    {
        spawn_local(&self.group.shared, fut, Some(self.name))
    }
}

#[track_caller]
fn spawn_local<F, T, E>(group: &Arc<Shared<E>>, fut: F, name: Option<Arc<str>>) -> TaskHandle<T>
where
    F: Future<Output = Result<T, E>> + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let at = Location::caller();
    let mut queued = None;
    let admitted = group.admit(|| {
        let entry = Arc::new(LocalEntry {
            place: Mutex::new(Place::Waiting(None)),
            abort: OnceLock::new(),
        });
        queued = Some(entry.clone());
        entry
    });
    match admitted {
        None => {
            tracing::debug!(parent: &group.span, "spawn into a closed task group refused");
            drop(fut);
            TaskHandle::refused(&group.node)
        }
        Some(Admit::Slot(key)) => {
            // Dropped with the future if `spawn_local` panics: it reports the task's end.
            let child = group.child(key, fut, ToHandle::new(), name, Some(at));
            let join = tokio::task::spawn_local(child);
            if group.attach(key, Role::Normal, join.abort_handle()) {
                join.abort();
            }
            TaskHandle::spawned(join, &group.node)
        }
        Some(Admit::Queued(key)) => {
            let entry = queued.expect("made when the task was queued");
            // Dropped with the future if `spawn_local` panics: it leaves its place in the queue
            // and gives back its key.
            let task = Queued {
                fut: Some(fut),
                entry: entry.clone(),
                group: group.clone(),
                key: Some(key),
                name,
                at,
                child: None,
            };
            let join = tokio::task::spawn_local(task);
            let abort = join.abort_handle();
            // Before the task first runs: it runs on this thread, once the caller yields.
            let _ = entry.abort.set(abort.clone());
            if group.attach(key, Role::Background, abort) {
                join.abort();
            }
            TaskHandle::spawned(join, &group.node)
        }
    }
}

/// A local task's place in the group's queue: what the queue hands it, and its way to wake
/// the task.
struct LocalEntry {
    place: Mutex<Place>,
    /// The task's abort handle, set by its spawner before the task first runs; kept by the
    /// group under the slot it is given.
    abort: OnceLock<AbortHandle>,
}

enum Place {
    /// In the queue; the waiting task is woken with this waker.
    Waiting(Option<Waker>),
    /// The queue reached it: a slot reserved under this key, for the task to take.
    Slot(TaskKey),
    /// The queue was dropped (the group closed, or is shutting down): the task never runs.
    Refused(CancelReason),
    /// The task took its slot, or was dropped.
    Gone,
}

/// What the queue gave a waiting local task.
enum Turn {
    Slot(TaskKey),
    /// Never to run, for this reason (`None`: the task itself gave up its place).
    Refused(Option<CancelReason>),
}

impl LocalEntry {
    fn lock(&self) -> MutexGuard<'_, Place> {
        // Every update is one assignment: a panic cannot leave the state torn.
        self.place.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the queue gave the task, registering `cx` while it waits.
    fn poll_turn(&self, cx: &mut Context<'_>) -> Poll<Turn> {
        let mut place = self.lock();
        match &mut *place {
            Place::Waiting(waker) => {
                crate::waker::register(waker, cx.waker());
                Poll::Pending
            }
            Place::Slot(key) => {
                let key = *key;
                *place = Place::Gone;
                Poll::Ready(Turn::Slot(key))
            }
            Place::Refused(reason) => Poll::Ready(Turn::Refused(Some(*reason))),
            Place::Gone => Poll::Ready(Turn::Refused(None)),
        }
    }

    /// The task goes away without taking its turn; returns a slot granted meanwhile, to give
    /// back.
    fn leave(&self) -> Option<TaskKey> {
        match std::mem::replace(&mut *self.lock(), Place::Gone) {
            Place::Slot(key) => Some(key),
            _ => None,
        }
    }
}

impl<E> Start<E> for LocalEntry {
    fn is_waiting(&self) -> bool {
        // An entry whose task is gone still counts as waiting until the queue reaches it (and
        // `start` declines the slot): only the queue takes an entry out of its count, so that
        // an entry is never uncounted twice.
        matches!(*self.lock(), Place::Waiting(_) | Place::Gone)
    }

    fn start(self: Arc<Self>, _group: &Arc<Shared<E>>, key: TaskKey) -> bool {
        let mut place = self.lock();
        let Place::Waiting(waker) = &mut *place else {
            return false;
        };
        let waker = waker.take();
        *place = Place::Slot(key);
        drop(place);
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    fn cancel(&self, reason: CancelReason) {
        let mut place = self.lock();
        if let Place::Waiting(waker) = &mut *place {
            let waker = waker.take();
            *place = Place::Refused(reason);
            drop(place);
            // The task drops its future itself, on its own thread; the group waits for it
            // under its background key.
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

/// A local task that waits for a slot, then runs its future as a child under that slot.
#[pin_project(PinnedDrop)]
struct Queued<F, T: Send + 'static, E> {
    /// The future, until it starts.
    fut: Option<F>,
    entry: Arc<LocalEntry>,
    group: Arc<Shared<E>>,
    /// The background key that counts the task while it waits; `None` once given back.
    key: Option<TaskKey>,
    name: Option<Arc<str>>,
    at: &'static Location<'static>,
    /// The started task.
    #[pin]
    child: Option<Child<F, ToHandle<T>, E>>,
}

impl<F, T, E> Future for Queued<F, T, E>
where
    F: Future<Output = Result<T, E>>,
    T: Send + 'static,
    E: Send + 'static,
{
    type Output = Output<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Output<T>> {
        let mut this = self.project();
        if this.child.is_none() {
            match ready!(this.entry.poll_turn(cx)) {
                Turn::Slot(key) => {
                    let abort = this.entry.abort.get().cloned();
                    let abort = abort.expect("set by the spawner before the task first runs");
                    let aborted = this.group.attach(key, Role::Normal, abort);
                    let fut = this.fut.take().expect("the future waits until its turn");
                    let name = this.name.take();
                    let child = this
                        .group
                        .child(key, fut, ToHandle::new(), name, Some(*this.at));
                    this.child.set(Some(child));
                    // Counted by its slot from here on.
                    give_back(this.group, this.key, None, None, this.at);
                    if aborted {
                        // The group aborted its tasks meanwhile: dropped unpolled.
                        this.child.set(None);
                        let reason = this.group.node.cancel_reason();
                        let reason = reason.unwrap_or(CancelReason::Aborted);
                        return Poll::Ready(Err(TaskError::unstarted(reason, None)));
                    }
                }
                Turn::Refused(reason) => {
                    let reason = reason
                        .or_else(|| this.group.node.cancel_reason())
                        .unwrap_or(CancelReason::Aborted);
                    let label = this.name.clone().map(|name| TaskLabel::Child {
                        id: None,
                        name: Some(name),
                        at: None,
                    });
                    let panic = drop_unstarted(this.group, this.fut.take());
                    give_back(this.group, this.key, this.name.take(), panic, this.at);
                    return Poll::Ready(Err(TaskError::unstarted(reason, label)));
                }
            }
        }
        let child = this.child.as_pin_mut().expect("started above");
        child.poll(cx)
    }
}

#[pinned_drop]
impl<F, T: Send + 'static, E> PinnedDrop for Queued<F, T, E> {
    fn drop(self: Pin<&mut Self>) {
        let this = self.project();
        if this.child.is_some() {
            // Started: the child reports the task's end as it is dropped.
            return;
        }
        if let Some(key) = this.entry.leave() {
            // Aborted just as its turn came: the slot goes on to the next task.
            this.group.release_unused(key);
        }
        let panic = drop_unstarted(this.group, this.fut.take());
        give_back(this.group, this.key, this.name.take(), panic, this.at);
    }
}

/// Drops a local task's future that never started, in the frame its task would have had;
/// returns the panic of its destructor.
fn drop_unstarted<F, E>(
    group: &Shared<E>,
    fut: Option<F>,
) -> Option<Box<dyn std::any::Any + Send>> {
    let fut = fut?;
    catch_unwind(AssertUnwindSafe(|| group.drop_unstarted(fut))).err()
}

/// Gives back the key that counted a waiting local task, with the panic of its future's
/// destructor, if any (a failure of the task).
fn give_back<E>(
    group: &Arc<Shared<E>>,
    key: &mut Option<TaskKey>,
    name: Option<Arc<str>>,
    panic: Option<Box<dyn std::any::Any + Send>>,
    at: &'static Location<'static>,
) {
    if let Some(key) = key.take() {
        let who = Who {
            name,
            at: Some(at),
            item: None,
        };
        group.task_ended(key, who, None, panic, Drains::default());
    }
}
