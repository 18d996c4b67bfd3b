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
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use pin_project::{pin_project, pinned_drop};
use tokio::task::AbortHandle;

use super::child::Child;
use super::handle::{Output, ToHandle};
use super::queue::{Start, Unqueue};
use super::registry::TaskKey;
use super::shared::{Admit, Role, Shared, Who};
use super::{TaskBuilder, TaskGroup, TaskHandle};
use crate::error::{CancelReason, TaskError, TaskLabel};
use crate::frame::Drains;
use crate::loom::{Mutex, MutexGuard};

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
        let entry = LocalEntry::new();
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
            if group.attach(Role::Normal, join.abort_handle()) {
                join.abort();
            }
            TaskHandle::spawned(join, &group.node)
        }
        Some(Admit::Queued(key)) => {
            let entry = queued.expect("made when the task was queued");
            // Dropped with the future if `spawn_local` panics: it leaves its place in the queue
            // and gives back its key.
            let task = Queued {
                stage: Stage::Waiting { fut },
                entry: entry.clone(),
                group: group.clone(),
                key: Some(key),
                name,
                at,
            };
            let join = tokio::task::spawn_local(task);
            let abort = join.abort_handle();
            // Before the task first runs: it runs on this thread, once the caller yields.
            entry.set_abort(abort.clone());
            if group.attach(Role::Background, abort) {
                join.abort();
            }
            TaskHandle::spawned(join, &group.node)
        }
    }
}

/// A local task's place in the group's queue: what the queue hands it, and its way to wake
/// the task.
struct LocalEntry {
    state: Mutex<EntryState>,
}

struct EntryState {
    place: Place,
    /// The task's abort handle, set by its spawner before the task first runs, for the group
    /// to keep under the slot it is given. Held only while the task has not taken its turn:
    /// an abort handle keeps the whole tokio task allocated (its future's room included), and
    /// an entry can stay in the queue long after its task is gone.
    abort: Option<AbortHandle>,
}

enum Place {
    /// In the queue, counted in its length; the waiting task is woken with this waker.
    Waiting(Option<Waker>),
    /// Taken out of the queue (and out of its count) by the group, under the group's lock, to
    /// be given a slot. From here on a task that goes away must not count itself out again.
    Claimed(Option<Waker>),
    /// The queue reached it: a slot reserved under this key, for the task to take.
    Slot(TaskKey),
    /// The queue was dropped (the group closed, or is shutting down): the task never runs.
    Refused(CancelReason),
    /// The task took its slot, or was dropped.
    Gone,
}

/// What the queue gave a waiting local task.
enum Turn {
    /// A slot under this key, with the task's abort handle, to keep under it.
    Slot(TaskKey, AbortHandle),
    /// Never to run, for this reason (`None`: the task itself gave up its place).
    Refused(Option<CancelReason>),
}

/// Where a task that goes away without taking its turn left its entry.
enum Left {
    /// Still counted in the queue: the task counts itself out.
    Queued,
    /// A slot was granted meanwhile: to give back.
    Slot(TaskKey),
    /// Nothing to undo: the group already took the entry out of its queue (claimed or
    /// dropped it).
    Out,
}

impl LocalEntry {
    fn new() -> Arc<LocalEntry> {
        Arc::new(LocalEntry {
            state: Mutex::new(EntryState {
                place: Place::Waiting(None),
                abort: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, EntryState> {
        // Every update is one assignment: a panic cannot leave the state torn.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the task's abort handle until the task takes its turn; dropped at once if the
    /// task is already gone.
    fn set_abort(&self, abort: AbortHandle) {
        let mut state = self.lock();
        if !matches!(state.place, Place::Gone) {
            state.abort = Some(abort);
        }
    }

    /// What the queue gave the task, registering `cx` while it waits.
    fn poll_turn(&self, cx: &mut Context<'_>) -> Poll<Turn> {
        let mut state = self.lock();
        match &mut state.place {
            Place::Waiting(waker) | Place::Claimed(waker) => {
                crate::waker::register(waker, cx.waker());
                Poll::Pending
            }
            Place::Slot(_) => {
                let Place::Slot(key) = std::mem::replace(&mut state.place, Place::Gone) else {
                    unreachable!("matched above")
                };
                let abort = state.abort.take();
                let abort = abort.expect("set by the spawner before the task first runs");
                Poll::Ready(Turn::Slot(key, abort))
            }
            Place::Refused(reason) => Poll::Ready(Turn::Refused(Some(*reason))),
            Place::Gone => Poll::Ready(Turn::Refused(None)),
        }
    }

    /// The task goes away without taking its turn: says what it must undo. Decided under the
    /// entry's lock, against the group's [`claim`](Start::claim): exactly one of them counts
    /// the entry out of the queue.
    fn leave(&self) -> Left {
        let mut state = self.lock();
        state.abort = None;
        match std::mem::replace(&mut state.place, Place::Gone) {
            Place::Waiting(_) => Left::Queued,
            Place::Slot(key) => Left::Slot(key),
            Place::Claimed(_) | Place::Refused(_) | Place::Gone => Left::Out,
        }
    }
}

impl<E> Start<E> for LocalEntry {
    fn is_waiting(&self) -> bool {
        // An entry whose task is gone counted itself out of the queue as it left (see
        // `Queued`'s drop): the queue can drop it when it compacts.
        matches!(self.lock().place, Place::Waiting(_))
    }

    fn claim(&self) -> bool {
        let mut state = self.lock();
        let Place::Waiting(waker) = &mut state.place else {
            return false;
        };
        state.place = Place::Claimed(waker.take());
        true
    }

    fn start(self: Arc<Self>, _group: &Arc<Shared<E>>, key: TaskKey) -> Result<(), TaskKey> {
        let mut state = self.lock();
        let (Place::Waiting(waker) | Place::Claimed(waker)) = &mut state.place else {
            // The task went away after the claim: the caller gives the slot back.
            return Err(key);
        };
        let waker = waker.take();
        state.place = Place::Slot(key);
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    fn cancel(&self, reason: CancelReason) {
        let mut state = self.lock();
        // Only a waiting entry: the queue hands its entries over unclaimed.
        if let Place::Waiting(waker) = &mut state.place {
            let waker = waker.take();
            state.place = Place::Refused(reason);
            drop(state);
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
struct Queued<F, T: Send + 'static, E: Send + 'static> {
    /// The future, waiting and then running: one place for it, so that a queued task costs
    /// about one future (the future is moved into the child when it starts).
    #[pin]
    stage: Stage<F, T, E>,
    entry: Arc<LocalEntry>,
    group: Arc<Shared<E>>,
    /// The background key that counts the task while it waits; `None` once given back.
    key: Option<TaskKey>,
    name: Option<Arc<str>>,
    at: &'static Location<'static>,
}

#[pin_project(project = StageProj, project_replace = StageOwn)]
enum Stage<F, T: Send + 'static, E> {
    /// Waiting for its turn, unpolled (so not pinned: it moves into the child).
    Waiting { fut: F },
    /// Started: the child reports the task's end as it is dropped.
    Running(#[pin] Child<F, ToHandle<T>, E>),
    /// Never started, and its future is gone.
    Done,
}

impl<F, T: Send + 'static, E> Stage<F, T, E> {
    /// Takes out the future of a task that has not started.
    fn take_unstarted(self: Pin<&mut Self>) -> Option<F> {
        if !matches!(*self, Stage::Waiting { .. }) {
            return None;
        }
        match self.project_replace(Stage::Done) {
            StageOwn::Waiting { fut } => Some(fut),
            _ => unreachable!("checked above"),
        }
    }
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
        if !matches!(*this.stage, Stage::Running(_)) {
            match ready!(this.entry.poll_turn(cx)) {
                Turn::Slot(key, abort) => {
                    // The registry keeps this task's handle twice from here: as the background
                    // task it was while it waited, and as the normal one it is now. The first
                    // only matters if the group aborts its background tasks, which it does
                    // when it completes, once no normal task runs: this one has ended by then.
                    let aborted = this.group.attach(Role::Normal, abort);
                    let fut = this.stage.as_mut().take_unstarted();
                    let fut = fut.expect("the future waits until its turn");
                    let name = this.name.take();
                    let child = this
                        .group
                        .child(key, fut, ToHandle::new(), name, Some(*this.at));
                    this.stage.set(Stage::Running(child));
                    // Counted by its slot from here on.
                    give_back(this.group, this.key, None, None, this.at);
                    if aborted {
                        // The group aborted its tasks meanwhile: dropped unpolled.
                        this.stage.set(Stage::Done);
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
                    let fut = this.stage.as_mut().take_unstarted();
                    let panic = drop_unstarted(this.group, fut);
                    give_back(this.group, this.key, this.name.take(), panic, this.at);
                    return Poll::Ready(Err(TaskError::unstarted(reason, label)));
                }
            }
        }
        match this.stage.project() {
            StageProj::Running(child) => child.poll(cx),
            _ => unreachable!("started above"),
        }
    }
}

#[pinned_drop]
impl<F, T: Send + 'static, E: Send + 'static> PinnedDrop for Queued<F, T, E> {
    fn drop(self: Pin<&mut Self>) {
        let this = self.project();
        if matches!(*this.stage, Stage::Running(_)) {
            // Started: the child reports the task's end as it is dropped.
            return;
        }
        match this.entry.leave() {
            Left::Queued => {
                // Aborted while it waited: out of the queue's count now, as an aborted queued
                // `spawn` is, so that the queue can drop its entry when it compacts (it was
                // counted as waiting, and kept with the task's abort handle, until the queue
                // reached it). Nothing to drop there: the future is dropped below, in the
                // task, which its background key counts until then.
                let none = || TaskLabel::Child {
                    id: None,
                    name: None,
                    at: None,
                };
                Unqueue::unqueue(&**this.group, Box::new(()), true, &none);
            }
            // Aborted just as its turn came: the slot goes on to the next task.
            Left::Slot(key) => this.group.release_unused(key),
            Left::Out => {}
        }
        let panic = drop_unstarted(this.group, this.stage.take_unstarted());
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
            task: None,
        };
        group.task_ended(key, who, None, panic, Drains::default());
    }
}

/// Model checks of a local task's place in the queue under `loom` (see `src/loom.rs`).
#[cfg(all(test, quattro_loom))]
mod loom_tests {
    use std::sync::Arc;

    use super::{Left, LocalEntry};
    use crate::group::queue::{Queue, Start};
    use crate::loom::Mutex;

    /// The group takes a local task's entry out of its queue to give it a slot while the task
    /// goes away (aborted) on another thread: the entry is counted out of the queue exactly
    /// once, so that a second task still waiting keeps its count (the group must not look
    /// idle with it queued), and a task that left after the claim declines its slot.
    #[test]
    fn a_local_task_claimed_and_aborted_at_once_is_counted_out_once() {
        loom::model(|| {
            let first = LocalEntry::new();
            let second = LocalEntry::new();
            let mut queue = Queue::<()>::default();
            queue.push(first.clone() as Arc<dyn Start<()>>);
            queue.push(second as Arc<dyn Start<()>>);
            let group = Arc::new(Mutex::new(queue));
            let shared = group.clone();
            let leaver = first.clone();
            let t = loom::thread::spawn(move || match leaver.leave() {
                Left::Queued => {
                    shared.lock().unwrap().unqueued();
                    true
                }
                Left::Slot(_) => unreachable!("no slot is given in this model"),
                Left::Out => false,
            });
            let popped = group.lock().unwrap().pop().expect("a task still waits");
            let counted_out_by_task = t.join().unwrap();
            let popped_first = std::ptr::addr_eq(Arc::as_ptr(&popped), Arc::as_ptr(&first));
            // Either the pop claimed the first entry (and its task, gone, must not count it
            // out again) or the task left first and the pop took the second.
            assert_ne!(
                popped_first, counted_out_by_task,
                "counted out twice, or never"
            );
            let left = group.lock().unwrap().len();
            assert_eq!(
                left,
                usize::from(popped_first),
                "tasks counted in the queue"
            );
            assert!(
                !Start::<()>::is_waiting(&*first),
                "the left entry can be dropped by compaction"
            );
        });
    }
}
