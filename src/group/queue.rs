//! The queue of a limited group, for tasks waiting for a slot and producers waiting to spawn.
//!
//! A queued task is one allocation, shared by the group's queue and the task's handle. The
//! future waits in it until a slot frees, and the same allocation then gives the handle the
//! task's `JoinHandle`. Aborting a queued task takes its future out at once (O(1)), and the
//! queue skips the empty entry when it comes up.
//!
//! Producers waiting in `spawn_when_free` queue in arrival order, and a freed slot is *granted*
//! to exactly one of them. It is reserved under the group's lock, so that nobody else can take
//! it before that producer runs.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::{AssertUnwindSafe, Location, catch_unwind, resume_unwind};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};

use tokio::task::{Id, JoinHandle};

use super::handle::{Output, ToHandle};
use super::registry::TaskKey;
use super::shared::Shared;
use crate::error::{CancelReason, TaskError, TaskLabel};
use crate::loom::{Mutex, MutexGuard};

/// A queued task, as the group's queue sees it.
pub(crate) trait Start<E>: Send + Sync {
    /// Whether the task still waits (not aborted).
    fn is_waiting(&self) -> bool;

    /// Takes the task out of the queue to be started, if it still waits; called under the
    /// group's lock by [`Queue::pop`]. From here on an abort of the task no longer counts it
    /// out of the queue (the queue already did).
    fn claim(&self) -> bool {
        self.is_waiting()
    }

    /// Spawns the task under `key`, reserved for it. Gives `key` back, unused, if the task was
    /// aborted meanwhile.
    fn start(self: Arc<Self>, shared: &Arc<Shared<E>>, key: TaskKey) -> Result<(), TaskKey>;

    /// Resolves the handle as cancelled for `reason` and drops the future (the group closed,
    /// or is shutting down). The caller runs this in the frame the task would have had.
    fn cancel(&self, reason: CancelReason);
}

/// A queued task, as its handle sees it.
pub(crate) trait QueuedHandle<T>: Send + Sync {
    /// Ready with the task's `JoinHandle` once it started, or with an error if it never will.
    fn poll_started(&self, cx: &mut Context<'_>) -> Poll<Result<JoinHandle<Output<T>>, TaskError>>;

    /// Aborts the task, queued or started; a queued one is cancelled for `reason`.
    fn abort(&self, group: &Weak<dyn Unqueue>, reason: CancelReason);

    fn id(&self) -> Option<Id>;

    fn is_finished(&self) -> bool;
}

/// What a handle needs from its group to abort a queued task.
pub(crate) trait Unqueue: Send + Sync {
    /// A queued task was aborted: drops its future in the frame its task would have had, and
    /// stops counting it as waiting once it is gone.
    /// `queued`: the task was still counted in the queue (not yet claimed for a start).
    /// `label` names the task if its destructor panics.
    fn unqueue(&self, unstarted: Box<dyn Send>, queued: bool, label: &dyn Fn() -> TaskLabel);
}

/// What names a queued task in its failures: its name, or for an unnamed one where it was
/// spawned (a word either way).
pub(crate) trait QueuedName: Send + 'static {
    fn take(&mut self) -> (Option<Arc<str>>, Option<&'static Location<'static>>);

    /// The label of the task that never started.
    fn label(&self) -> TaskLabel;
}

impl QueuedName for &'static Location<'static> {
    fn take(&mut self) -> (Option<Arc<str>>, Option<&'static Location<'static>>) {
        (None, Some(*self))
    }

    fn label(&self) -> TaskLabel {
        TaskLabel::Child {
            id: None,
            name: None,
            at: Some(*self),
        }
    }
}

impl QueuedName for Option<Arc<str>> {
    fn take(&mut self) -> (Option<Arc<str>>, Option<&'static Location<'static>>) {
        (Option::take(self), None)
    }

    fn label(&self) -> TaskLabel {
        TaskLabel::Child {
            id: None,
            name: self.clone(),
            at: None,
        }
    }
}

/// A task waiting for a slot, and then the way its handle reaches the started task.
pub(crate) struct QueuedTask<F, T, N> {
    state: Mutex<Stage<F, T, N>>,
}

enum Stage<F, T, N> {
    /// In the queue.
    Waiting {
        fut: F,
        name: N,
        /// Boxed: only a handle awaited before its task starts needs one, and a million
        /// queued tasks then cost a word less each.
        waker: Option<Box<Waker>>,
    },
    /// Taken out of the queue by the group (under its lock), to be spawned.
    Claimed {
        fut: F,
        name: N,
        waker: Option<Box<Waker>>,
    },
    /// Being spawned.
    Starting {
        waker: Option<Box<Waker>>,
        aborted: bool,
    },
    /// Spawned; `None` once the handle took the `JoinHandle`.
    Started(Option<JoinHandle<Output<T>>>),
    /// Aborted, or dropped with the queue, before it started: why, and its name for the
    /// handle's error (`None` once the handle took it).
    Cancelled(CancelReason, Option<N>),
}

impl<F, T, N> QueuedTask<F, T, N> {
    pub(crate) fn new(fut: F, name: N) -> Arc<Self> {
        Arc::new(QueuedTask {
            state: Mutex::new(Stage::Waiting {
                fut,
                name,
                waker: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Stage<F, T, N>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the future out of a waiting (or claimed, not yet started) task, leaving it
    /// cancelled for `reason`, and wakes its handle. Says whether the task was still counted
    /// in the queue (not yet claimed), decided under the same lock as the take.
    fn take_cancelled(&self, reason: CancelReason) -> Option<(F, bool)> {
        let mut state = self.lock();
        if !matches!(*state, Stage::Waiting { .. } | Stage::Claimed { .. }) {
            return None;
        }
        let cancelled = Stage::Cancelled(reason, None);
        let queued = matches!(*state, Stage::Waiting { .. });
        let (Stage::Waiting { fut, name, waker } | Stage::Claimed { fut, name, waker }) =
            std::mem::replace(&mut *state, cancelled)
        else {
            unreachable!("checked above")
        };
        *state = Stage::Cancelled(reason, Some(name));
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        Some((fut, queued))
    }
}

impl<F, T, N, E> Start<E> for QueuedTask<F, T, N>
where
    F: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    N: QueuedName,
    E: Send + 'static,
{
    fn is_waiting(&self) -> bool {
        // A flag beside the lock would save this lock, but cost a word a queued task: a
        // million queued tasks are what the queue is for.
        matches!(*self.lock(), Stage::Waiting { .. })
    }

    fn claim(&self) -> bool {
        let mut state = self.lock();
        if !matches!(*state, Stage::Waiting { .. }) {
            return false;
        }
        let placeholder = Stage::Cancelled(CancelReason::Aborted, None);
        let Stage::Waiting { fut, name, waker } = std::mem::replace(&mut *state, placeholder)
        else {
            unreachable!("checked above")
        };
        *state = Stage::Claimed { fut, name, waker };
        true
    }

    fn start(self: Arc<Self>, shared: &Arc<Shared<E>>, key: TaskKey) -> Result<(), TaskKey> {
        let (fut, mut name) = {
            let mut state = self.lock();
            let starting = Stage::Starting {
                waker: None,
                aborted: false,
            };
            match std::mem::replace(&mut *state, starting) {
                Stage::Waiting { fut, name, waker } | Stage::Claimed { fut, name, waker } => {
                    *state = Stage::Starting {
                        waker,
                        aborted: false,
                    };
                    (fut, name)
                }
                other => {
                    *state = other;
                    return Err(key);
                }
            }
        };
        let (name, at) = name.take();
        let join = shared.spawn_reserved(key, fut, ToHandle::new(), name, at);
        // Even when the handle is gone, look: it may have aborted the task while it was being
        // spawned (and been dropped since), and that abort is applied here or never.
        let waker = {
            let mut state = self.lock();
            let (aborted, waker) = match &mut *state {
                Stage::Starting { waker, aborted } => (*aborted, waker.take()),
                _ => (false, None),
            };
            if aborted {
                // Only marks the task: it is dropped by tokio, not here under the lock.
                join.abort();
            }
            *state = Stage::Started(Some(join));
            waker
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    fn cancel(&self, reason: CancelReason) {
        drop(self.take_cancelled(reason));
    }
}

impl<F, T, N> QueuedHandle<T> for QueuedTask<F, T, N>
where
    F: Send + 'static,
    T: Send,
    N: QueuedName,
{
    fn poll_started(&self, cx: &mut Context<'_>) -> Poll<Result<JoinHandle<Output<T>>, TaskError>> {
        let mut state = self.lock();
        match &mut *state {
            Stage::Waiting { waker, .. }
            | Stage::Claimed { waker, .. }
            | Stage::Starting { waker, .. } => {
                match waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    Some(waker) => **waker = cx.waker().clone(),
                    waker => *waker = Some(Box::new(cx.waker().clone())),
                }
                Poll::Pending
            }
            Stage::Started(join) => Poll::Ready(Ok(join.take().expect("taken once"))),
            Stage::Cancelled(reason, name) => {
                let label = name.as_mut().map(|name| {
                    let (name, at) = name.take();
                    TaskLabel::Child { id: None, name, at }
                });
                Poll::Ready(Err(TaskError::unstarted(*reason, label)))
            }
        }
    }

    fn abort(&self, group: &Weak<dyn Unqueue>, reason: CancelReason) {
        {
            let mut state = self.lock();
            match &mut *state {
                // A claimed task is out of the queue's count already: its start finds it
                // cancelled and gives its slot back.
                Stage::Waiting { .. } | Stage::Claimed { .. } => {}
                Stage::Starting { aborted, .. } => {
                    *aborted = true;
                    return;
                }
                Stage::Started(join) => {
                    if let Some(join) = join {
                        join.abort();
                    }
                    return;
                }
                Stage::Cancelled(..) => return,
            }
        }
        let Some((fut, queued)) = self.take_cancelled(reason) else {
            // Claimed or started meanwhile: try again from that stage.
            return self.abort(group, reason);
        };
        let label = || match &*self.lock() {
            Stage::Cancelled(_, Some(name)) => name.label(),
            _ => TaskLabel::Child {
                id: None,
                name: None,
                at: None,
            },
        };
        match group.upgrade() {
            Some(group) => group.unqueue(Box::new(fut), queued, &label),
            None => drop(fut),
        }
    }

    fn id(&self) -> Option<Id> {
        match &*self.lock() {
            Stage::Started(Some(join)) => Some(join.id()),
            _ => None,
        }
    }

    fn is_finished(&self) -> bool {
        match &*self.lock() {
            Stage::Started(Some(join)) => join.is_finished(),
            Stage::Cancelled(..) => true,
            _ => false,
        }
    }
}

/// The queue of a limited group.
pub(crate) struct Queue<E> {
    tasks: VecDeque<Arc<dyn Start<E>>>,
    /// Tasks in `tasks` that still wait (not aborted).
    waiting: usize,
}

impl<E> Default for Queue<E> {
    fn default() -> Self {
        Queue {
            tasks: VecDeque::new(),
            waiting: 0,
        }
    }
}

impl<E> Queue<E> {
    pub(crate) fn push(&mut self, task: Arc<dyn Start<E>>) {
        // Aborted entries wait to be skipped when they come up; in a queue that never drains
        // (a saturated server group whose callers give up), drop them once they are the
        // majority, so that memory follows the tasks that still wait. Amortised O(1).
        if self.tasks.len() >= 64 && self.tasks.len() >= 2 * self.waiting {
            self.tasks.retain(|task| task.is_waiting());
        }
        self.tasks.push_back(task);
        self.waiting += 1;
    }

    /// The next task that still waits; aborted ones are skipped (and released).
    pub(crate) fn pop(&mut self) -> Option<Arc<dyn Start<E>>> {
        while let Some(task) = self.tasks.pop_front() {
            if task.claim() {
                self.waiting -= 1;
                return Some(task);
            }
        }
        None
    }

    /// How many tasks wait.
    pub(crate) fn len(&self) -> usize {
        self.waiting
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.waiting == 0
    }

    /// A queued task was aborted through its handle.
    pub(crate) fn unqueued(&mut self) {
        self.waiting = self.waiting.saturating_sub(1);
        if self.waiting == 0 {
            // Only aborted entries are left: release them now.
            self.tasks.clear();
        }
    }

    /// Takes every queued task out, to be cancelled for `reason` by the caller outside the
    /// group's lock.
    pub(crate) fn take(&mut self, reason: CancelReason) -> QueuedTasks<E> {
        self.waiting = 0;
        QueuedTasks(std::mem::take(&mut self.tasks), reason)
    }
}

/// Queued tasks taken out of a closing group, and why. Dropping them resolves each handle as
/// cancelled and drops each future; every one is dropped even if a destructor panics (the first
/// panic is resumed after).
pub(crate) struct QueuedTasks<E>(VecDeque<Arc<dyn Start<E>>>, CancelReason);

impl<E> Drop for QueuedTasks<E> {
    fn drop(&mut self) {
        let mut panic = None;
        let reason = self.1;
        while let Some(task) = self.0.pop_front() {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| task.cancel(reason))) {
                panic.get_or_insert(payload);
            }
        }
        if let Some(payload) = panic {
            resume_unwind(payload);
        }
    }
}

/// Producers waiting for a free slot, in arrival order.
#[derive(Default)]
pub(crate) struct Producers(VecDeque<Arc<Grant>>);

impl Producers {
    pub(crate) fn push(&mut self, grant: Arc<Grant>) {
        // Producers that stopped waiting are skipped when they come up; drop them once they
        // could be the majority (producers giving up on a saturated group), amortised O(1).
        if self.0.len() >= 64 && self.0.len().is_power_of_two() {
            self.0.retain(|grant| grant.is_waiting());
        }
        self.0.push_back(grant);
    }

    /// Whether any producer still waits.
    pub(crate) fn is_empty(&mut self) -> bool {
        while self.0.front().is_some_and(|grant| !grant.is_waiting()) {
            self.0.pop_front();
        }
        self.0.is_empty()
    }

    /// Grants `key` to the first producer that still waits; gives it back if there is none.
    pub(crate) fn grant(&mut self, mut key: TaskKey) -> Result<(), TaskKey> {
        while let Some(grant) = self.0.pop_front() {
            match grant.settle(Granted::Slot(key)) {
                Ok(()) => return Ok(()),
                Err(Granted::Slot(back)) => key = back,
                Err(_) => unreachable!("a refused grant gives back what it was handed"),
            }
        }
        Err(key)
    }

    /// Refuses every waiting producer (the group closed or is shutting down).
    pub(crate) fn refuse_all(&mut self) {
        for grant in self.0.drain(..) {
            let _ = grant.settle(Granted::Refused);
        }
    }
}

/// What a waiting producer is given.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Granted {
    /// Still waiting.
    Nothing,
    /// A slot, reserved under this key.
    Slot(TaskKey),
    /// No slot will come: the group closed or is shutting down.
    Refused,
    /// The producer stopped waiting (its future was dropped).
    Gone,
}

/// The place where one waiting producer receives its slot.
pub(crate) struct Grant {
    state: Mutex<(Granted, Option<Waker>)>,
}

impl Grant {
    pub(crate) fn new() -> Arc<Grant> {
        Arc::new(Grant {
            state: Mutex::new((Granted::Nothing, None)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, (Granted, Option<Waker>)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_waiting(&self) -> bool {
        self.lock().0 == Granted::Nothing
    }

    /// Hands `granted` over if the producer still waits, and wakes it; gives it back if not.
    fn settle(&self, granted: Granted) -> Result<(), Granted> {
        let mut state = self.lock();
        if state.0 != Granted::Nothing {
            return Err(granted);
        }
        state.0 = granted;
        let waker = state.1.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Ready once something was granted (take it with [`leave`](Self::leave)), registering
    /// `cx` while nothing was.
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.lock();
        match state.0 {
            Granted::Nothing => {
                crate::waker::register(&mut state.1, cx.waker());
                Poll::Pending
            }
            _ => Poll::Ready(()),
        }
    }

    /// The producer stops waiting; returns a slot granted meanwhile, for the caller to give
    /// back.
    pub(crate) fn leave(&self) -> Option<TaskKey> {
        let mut state = self.lock();
        match std::mem::replace(&mut state.0, Granted::Gone) {
            Granted::Slot(key) => Some(key),
            _ => None,
        }
    }
}

/// Model checks of the queue's hand-overs under `loom` (see `src/loom.rs`).
#[cfg(all(test, quattro_loom))]
mod loom_tests {
    use super::{Grant, Granted, QueuedTask};
    use crate::error::CancelReason;
    use crate::group::registry::TaskKey;
    use crate::group::shared::Role;

    /// A slot granted to a producer that gives up at the same moment is never lost: either the
    /// producer takes it, or the grant fails and the group keeps it.
    #[test]
    fn a_granted_slot_is_taken_or_given_back() {
        loom::model(|| {
            let key = TaskKey::new(Role::Normal);
            let grant = Grant::new();
            let granter = grant.clone();
            let t = loom::thread::spawn(move || granter.settle(Granted::Slot(key)).is_ok());
            let taken = grant.leave();
            let granted = t.join().unwrap();
            assert_eq!(granted, taken.is_some(), "the slot went nowhere, or twice");
        });
    }

    /// Two aborts of one queued task at once: exactly one takes its future out.
    #[test]
    fn a_queued_task_is_cancelled_once() {
        loom::model(|| {
            let task = QueuedTask::<u8, (), ()>::new(7, ());
            let other = task.clone();
            let t = loom::thread::spawn(move || {
                other
                    .take_cancelled(CancelReason::ShutdownRequested)
                    .is_some()
            });
            let here = task.take_cancelled(CancelReason::Aborted).is_some();
            let there = t.join().unwrap();
            assert!(
                here ^ there,
                "cancelled {} times",
                u8::from(here) + u8::from(there)
            );
        });
    }

    /// The group takes a task out of its queue to start it while the task's handle aborts it
    /// on another thread: the queue counts the task out exactly once, so a second task still
    /// waiting is never lost from the count (a double count-out made the group look idle
    /// with a task queued, and could clear live entries).
    #[test]
    fn a_task_claimed_and_aborted_at_once_is_counted_out_once() {
        use std::sync::{Arc, Weak};

        use super::{Queue, QueuedHandle, Start, Unqueue};
        use crate::loom::Mutex;

        type Fut = std::future::Ready<Result<(), ()>>;

        /// The group's side of an abort: the queue under its lock.
        struct Group(Mutex<Queue<()>>);
        impl Unqueue for Group {
            fn unqueue(
                &self,
                unstarted: Box<dyn Send>,
                queued: bool,
                _: &dyn Fn() -> crate::error::TaskLabel,
            ) {
                if queued {
                    self.0.lock().unwrap().unqueued();
                }
                drop(unstarted);
            }
        }

        loom::model(|| {
            let first =
                QueuedTask::<Fut, (), Option<Arc<str>>>::new(std::future::ready(Ok(())), None);
            let second =
                QueuedTask::<Fut, (), Option<Arc<str>>>::new(std::future::ready(Ok(())), None);
            let mut queue = Queue::<()>::default();
            queue.push(first.clone() as Arc<dyn Start<()>>);
            queue.push(second as Arc<dyn Start<()>>);
            let group = Arc::new(Group(Mutex::new(queue)));
            let weak: Weak<dyn Unqueue> = Arc::downgrade(&group) as Weak<Group>;
            let aborter = first.clone();
            let t = loom::thread::spawn(move || {
                QueuedHandle::<()>::abort(&*aborter, &weak, CancelReason::Aborted)
            });
            let popped = group.0.lock().unwrap().pop().expect("a task still waits");
            t.join().unwrap();
            let popped_first = std::ptr::addr_eq(Arc::as_ptr(&popped), Arc::as_ptr(&first));
            let left = group.0.lock().unwrap().len();
            // The pop claimed the first task (the abort must not count it out again: the
            // second still waits), or the abort came first and the pop took the second.
            let expected = if popped_first { 1 } else { 0 };
            assert_eq!(left, expected, "tasks counted in the queue");
        });
    }
}
