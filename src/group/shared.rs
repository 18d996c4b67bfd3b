//! The state a group's handles and its scope future share: the live tasks, the queue of tasks
//! waiting for a slot, and the failures seen so far.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};

use tokio::runtime::Handle;
use tokio::sync::Notify;

use super::child::{Child, Deliver, Ended};
use super::handle::{TaskHandle, ToHandle};
use super::registry::{Registry, TaskKey};
use crate::error::{Failure, TaskLabel};
use crate::frame::{self, Data, Drain, Drainable, Drains, Enter};
use crate::node::{Node, SHUTDOWN};

/// A normal task waiting for a slot under the concurrency limit: the future and where its
/// value goes, boxed, and nothing else (no task, no span, no join entry), so that a long queue
/// costs little more than its futures.
type Queued<E> = Box<dyn Start<E>>;

/// A queued task, type-erased: it turns into a child task when a slot frees.
trait Start<E>: Send {
    /// Spawns the task under `key`, reserved for it; called outside the group's lock.
    fn start(self: Box<Self>, shared: &Arc<Shared<E>>, key: TaskKey);

    /// Identifies the task for [`Dequeue::dequeue`].
    fn key(&self) -> usize;
}

/// Lets a handle take its task out of the queue when it is aborted there.
pub(crate) trait Dequeue: Send + Sync {
    /// Removes the queued task with this key, to be dropped by the caller (outside the lock).
    fn dequeue(&self, key: usize) -> Option<Box<dyn Send>>;
}

impl<E: Send + 'static> Dequeue for Shared<E> {
    fn dequeue(&self, key: usize) -> Option<Box<dyn Send>> {
        let mut state = self.lock();
        let at = state.queue.iter().position(|queued| queued.key() == key)?;
        let queued = state.queue.remove(at)?;
        Some(Box::new(QueuedTasks(VecDeque::from([queued]))))
    }
}

/// A queued task. `N` is `()` for an unnamed task, so that the queue does not pay for the
/// name of every task (16 bytes, a few percent of a queued item).
struct Pending<F, S: Deliver, N> {
    /// `Some` until started; a queued task dropped unstarted tells its sink. One `Option` for
    /// both: a second would cost a word per queued task.
    task: Option<(F, S)>,
    name: N,
}

/// The name of a queued task, if it has one.
trait QueuedName: Send + 'static {
    fn take(&mut self) -> Option<Arc<str>>;
}

impl QueuedName for () {
    fn take(&mut self) -> Option<Arc<str>> {
        None
    }
}

impl QueuedName for Option<Arc<str>> {
    fn take(&mut self) -> Option<Arc<str>> {
        Option::take(self)
    }
}

impl<F, S, N, E> Start<E> for Pending<F, S, N>
where
    F: Future<Output = Result<S::Value, E>> + Send + 'static,
    S: Deliver,
    N: QueuedName,
    E: Send + 'static,
{
    fn start(mut self: Box<Self>, shared: &Arc<Shared<E>>, key: TaskKey) {
        let (fut, sink) = self.task.take().expect("a queued task starts once");
        let control = sink.control();
        if S::is_aborted(&control) {
            // Aborted by its handle while queued (which already resolved): never polled.
            shared.drop_unstarted(fut);
            sink.never_spawned();
            shared.task_ended(key, None, None, None, Drains::default());
            return;
        }
        let name = self.name.take();
        let join = shared.spawn_reserved(key, Role::Normal, fut, sink, name);
        S::spawned(control, join);
    }

    fn key(&self) -> usize {
        self.task.as_ref().map_or(0, |(_, sink)| sink.key())
    }
}

impl<F, S: Deliver, N> Drop for Pending<F, S, N> {
    fn drop(&mut self) {
        if let Some((fut, sink)) = self.task.take() {
            // Never spawned: the group closed (or its handle aborted it) while it waited.
            drop(fut);
            sink.never_spawned();
        }
    }
}

/// Queued tasks taken out of a closing group, to be dropped outside its lock.
pub(crate) struct QueuedTasks<E>(#[allow(dead_code)] VecDeque<Queued<E>>);

/// What `spawn_with` did with a task it accepted.
pub(crate) enum Spawned<S: Deliver> {
    Now(tokio::task::JoinHandle<S::Output>),
    /// Queued until a slot frees under the limit.
    Queued(S::Ticket),
}

/// Whether a task counts against the limit and keeps the group open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Normal,
    Background,
}

pub(crate) struct Shared<E> {
    pub(crate) node: Arc<Node>,
    /// The effective deadline (encoded) the group saw where it runs, at its latest poll: what
    /// its children inherit.
    outer_deadline: AtomicU64,
    /// The frame flags (`CANCELLED`, `SHUTDOWN`) the group saw at its latest poll.
    outer_flags: AtomicU8,
    pub(crate) runtime: Handle,
    pub(crate) span: tracing::Span,
    pub(crate) id: u64,
    limit: Option<usize>,
    state: Mutex<State<E>>,
    /// Wakes producers waiting in `spawn_when_free`.
    slot_freed: Notify,
    waiting_producers: AtomicUsize,
}

pub(crate) struct State<E> {
    tasks: Registry,
    queue: VecDeque<Queued<E>>,
    /// No more spawns: the group finished or is cancelling.
    closed: bool,
    /// Every task was aborted: a task spawned meanwhile is aborted as it is attached.
    aborted_all: bool,
    /// Background tasks were aborted (the group finished): the same for them.
    aborted_background: bool,
    pub(crate) failures: Vec<Failure<E>>,
    /// Aborted tasks of groups dropped inside the children, handed up as the children ended.
    drains: Drains,
    /// Whether any failure so far is a panic.
    pub(crate) panicked: bool,
    /// Whoever waits for the tasks: the group's future, or the scope that adopted them.
    waiter: Option<Waker>,
    /// Tasks that reported their end, until tokio marks them finished too: a group returns
    /// only once its tasks' handles say `is_finished`. Pruned as it grows.
    ending: Vec<tokio::task::AbortHandle>,
    /// The length of `ending` after the last pruning.
    ending_kept: usize,
}

// What needs no `E: 'static`: the group future's `Drop` calls these.
impl<E> Shared<E> {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State<E>> {
        // A panic while the lock was held cannot leave the state torn: every update is a
        // single push or pop. Keep going rather than turn one panic into many.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the group to new tasks (the group itself then cancels on its next poll);
    /// returns whether it was open.
    pub(crate) fn close(&self) -> bool {
        let was_open = !std::mem::replace(&mut self.lock().closed, true);
        self.wake_producers();
        was_open
    }

    /// Records the context the group runs in (read where it is polled), for its children;
    /// writes only what changed.
    pub(crate) fn publish(&self, outer: &Data) {
        let (deadline, cancelled) = frame::lookup();
        let raw = frame::encode_opt(deadline);
        if self.outer_deadline.load(Ordering::Relaxed) != raw {
            self.outer_deadline.store(raw, Ordering::Release);
        }
        let mut flags = outer.flags & frame::SHUTDOWN;
        if cancelled {
            flags |= frame::CANCELLED;
        }
        if self.outer_flags.load(Ordering::Relaxed) != flags {
            self.outer_flags.store(flags, Ordering::Release);
        }
    }

    /// The flags of a frame inside the group. The group's own deadline (a shutdown's cut) and
    /// cancellation are read live, from its node pushed as the frame's link.
    fn inner_flags(&self, flags: u8) -> u8 {
        let mut flags = flags | frame::OWNER;
        if self.node.state() & SHUTDOWN != 0 {
            flags |= frame::SHUTDOWN;
        }
        flags
    }

    /// The frame the group's body runs in: the one the group is polled in. The body runs in
    /// the group's task, so the outer timers still count.
    pub(crate) fn body_frame(&self, outer: &Data) -> Data {
        Data {
            flags: self.inner_flags(outer.flags),
            ..*outer
        }
    }

    /// The frame a child task runs in: what the group published. No timer of the group's task
    /// can be leaned on from here.
    pub(crate) fn child_frame(&self) -> Data {
        let published = frame::decode(self.outer_deadline.load(Ordering::Acquire));
        let flags = self.outer_flags.load(Ordering::Acquire);
        Data {
            fixed: published,
            local: None,
            task: 0,
            flags: self.inner_flags(flags),
        }
    }

    /// Drops a future that never started, in the frame its task would have had.
    pub(crate) fn drop_unstarted<T>(&self, unstarted: T) {
        let mut data = self.child_frame();
        data.flags &= !frame::OWNER;
        let mut link = Some(self.node.clone());
        let _enter = Enter::with_link(data, &mut link, None);
        drop(unstarted);
    }

    fn wake_producers(&self) {
        if self.waiting_producers.load(Ordering::SeqCst) > 0 {
            self.slot_freed.notify_waiters();
        }
    }

    /// A task ended (its future is dropped): forgets it, records its failure (and the panic of
    /// its finished future's destructor, if any), and wakes whoever waits for what changed.
    /// Called from the task, without the group's lock held.
    pub(crate) fn task_ended(
        &self,
        key: TaskKey,
        name: Option<Arc<str>>,
        failure: Option<Ended<E>>,
        drop_panic: Option<Box<dyn std::any::Any + Send>>,
        mut drains: Drains,
    ) {
        let mut state = self.lock();
        let handed_drains = !drains.is_empty();
        state.drains.append(&mut drains);
        let role = match state.tasks.release(key) {
            Some((role, abort)) => {
                if let Some(abort) = abort {
                    state.still_finishing(abort);
                }
                Some(role)
            }
            None => None,
        };
        let failures = failure.into_iter().chain(drop_panic.map(Ended::Panic));
        let mut failed = false;
        for failure in failures {
            let label = TaskLabel::Child {
                id: tokio::task::try_id(),
                name: name.clone(),
            };
            state.record(label, failure);
            failed = true;
        }
        let freed = role == Some(Role::Normal);
        // Wake the waiter only when it has something to do: for a failure, to start a queued
        // task or let a waiting producer in, or when a count reached zero. A thousand tasks
        // ending wake it once. Producers are let in by the group, not from here: it must see a
        // failure, or its own completion, and close first.
        let producers = self.waiting_producers.load(Ordering::SeqCst) > 0;
        let wake = failed
            || handed_drains
            || (freed && (state.tasks.normal() == 0 || !state.queue.is_empty() || producers))
            || state.tasks.is_empty();
        let waiter = if wake { state.waiter.take() } else { None };
        drop(state);
        if let Some(waiter) = waiter {
            waiter.wake();
        }
    }
}

impl<E> State<E> {
    fn record(&mut self, label: TaskLabel, failure: Ended<E>) {
        match failure {
            Ended::Error(error) => {
                tracing::error!(task = %label, "task failed");
                self.failures.push(Failure::from_error(label, error));
            }
            Ended::Panic(payload) => {
                tracing::error!(task = %label, "task panicked");
                self.failures.push(Failure::from_panic(label, payload));
                self.panicked = true;
            }
        }
    }

    /// Registers `cx` to be woken when a task ends with something for the waiter to do.
    fn register_waiter(&mut self, cx: &Context<'_>) {
        match &mut self.waiter {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            waiter => *waiter = Some(cx.waker().clone()),
        }
    }

    pub(crate) fn normal_len(&self) -> usize {
        self.tasks.normal()
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.tasks.normal() == 0 && self.queue.is_empty()
    }

    pub(crate) fn is_drained(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Releases the handed-up drains that emptied; ready when none is left.
    pub(crate) fn poll_drains(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.drains.poll(cx)
    }

    /// Keeps an ended task's abort handle until tokio marks the task finished (the rest of its
    /// poll, on another worker, after it reported its end). Each pruning drops the finished
    /// ones, and runs when the list doubled: amortised O(1) a task, and the list stays about
    /// the size of the tasks ending at once.
    fn still_finishing(&mut self, abort: tokio::task::AbortHandle) {
        self.ending.push(abort);
        if self.ending.len() >= (2 * self.ending_kept).max(64) {
            self.ending.retain(|abort| !abort.is_finished());
            self.ending_kept = self.ending.len();
        }
    }

    /// Whether every ended task is also finished for tokio (its handle's `is_finished`).
    pub(crate) fn all_finished(&mut self) -> bool {
        self.ending.retain(|abort| !abort.is_finished());
        self.ending_kept = self.ending.len();
        self.ending.is_empty()
    }
}

impl<E: Send + 'static> Shared<E> {
    pub(crate) fn new(
        node: Arc<Node>,
        runtime: Handle,
        span: tracing::Span,
        id: u64,
        limit: Option<usize>,
    ) -> Shared<E> {
        Shared {
            node,
            outer_deadline: AtomicU64::new(frame::NO_DEADLINE),
            outer_flags: AtomicU8::new(0),
            runtime,
            span,
            id,
            limit,
            state: Mutex::new(State {
                tasks: Registry::default(),
                queue: VecDeque::new(),
                closed: false,
                aborted_all: false,
                aborted_background: false,
                failures: Vec::new(),
                drains: Drains::default(),
                panicked: false,
                waiter: None,
                ending: Vec::new(),
                ending_kept: 0,
            }),
            slot_freed: Notify::new(),
            waiting_producers: AtomicUsize::new(0),
        }
    }

    #[inline(always)]
    fn child<F, S: Deliver>(
        self: &Arc<Self>,
        key: TaskKey,
        fut: F,
        sink: S,
        name: Option<Arc<str>>,
    ) -> Child<F, S, E> {
        let span = tracing::debug_span!(
            parent: &self.span,
            "task",
            group.id = self.id,
            task.name = name.as_deref().unwrap_or(""),
        );
        Child::new(fut, (self.clone(), key), sink, name, span)
    }

    /// Spawns a task delivering its value to a handle, or queues it when the limit is
    /// reached. Gives `fut` back when the group is closed or (unless `queue_if_full`) when no
    /// slot is free.
    #[inline(always)]
    pub(crate) fn try_spawn<F, T>(
        self: &Arc<Self>,
        fut: F,
        name: Option<Arc<str>>,
        role: Role,
        queue_if_full: bool,
    ) -> Result<TaskHandle<T>, F>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
    {
        match self.spawn_with(fut, ToHandle::new(), name, role, queue_if_full) {
            Ok(Spawned::Now(join)) => Ok(TaskHandle::spawned(join)),
            Ok(Spawned::Queued(slot)) => {
                // The handle, not the queued task, keeps the way back to the queue: the queue
                // is what a long limited run holds a million of.
                let queue: Weak<dyn Dequeue> = Arc::downgrade(self) as Weak<Shared<E>>;
                Ok(TaskHandle::queued(slot, queue))
            }
            Err((fut, _unused_sink)) => Err(fut),
        }
    }

    /// Spawns a task delivering its value to `sink`, or queues it when the limit is reached.
    /// Gives both back when the group is closed or (unless `queue_if_full`) no slot is free.
    #[inline(always)]
    pub(crate) fn spawn_with<F, S>(
        self: &Arc<Self>,
        fut: F,
        mut sink: S,
        name: Option<Arc<str>>,
        role: Role,
        queue_if_full: bool,
    ) -> Result<Spawned<S>, (F, S)>
    where
        F: Future<Output = Result<S::Value, E>> + Send + 'static,
        S: Deliver,
    {
        let mut state = self.lock();
        if state.closed {
            return Err((fut, sink));
        }
        let full = role == Role::Normal
            && self
                .limit
                .is_some_and(|limit| state.tasks.normal() + state.queue.len() >= limit);
        // After a shutdown request the group no longer queues (see `TaskGroup::shutdown`).
        if full && (!queue_if_full || self.node.own_shutdown_requested()) {
            return Err((fut, sink));
        }
        if !full {
            let key = state.tasks.reserve(role);
            drop(state);
            return Ok(Spawned::Now(
                self.spawn_reserved(key, role, fut, sink, name),
            ));
        }
        let ticket = sink.queue();
        let task = Some((fut, sink));
        let queued: Queued<E> = match name {
            None => Box::new(Pending { task, name: () }),
            named => Box::new(Pending { task, name: named }),
        };
        state.queue.push_back(queued);
        Ok(Spawned::Queued(ticket))
    }

    /// Spawns `fut` as the child task counted under `key`. Called without the group's lock: a
    /// runtime that is shutting down drops the task inside `spawn`, and the task reports its
    /// end to the group.
    #[inline(always)]
    fn spawn_reserved<F, S>(
        self: &Arc<Self>,
        key: TaskKey,
        role: Role,
        fut: F,
        sink: S,
        name: Option<Arc<str>>,
    ) -> tokio::task::JoinHandle<S::Output>
    where
        F: Future<Output = Result<S::Value, E>> + Send + 'static,
        S: Deliver,
    {
        let child = self.child(key, fut, sink, name);
        let join = self.runtime.spawn(child);
        let abort = join.abort_handle();
        let mut state = self.lock();
        let attached = state.tasks.attach(key, abort);
        // Aborted while it was being spawned: `abort` found no handle to abort then.
        let abort_now = attached
            && (state.aborted_all || (role == Role::Background && state.aborted_background));
        drop(state);
        if abort_now {
            join.abort();
        }
        join
    }

    /// Spawns, waiting first for a free slot under the limit.
    pub(crate) async fn spawn_when_free<F, T>(
        self: &Arc<Self>,
        fut: F,
        name: Option<Arc<str>>,
    ) -> Option<TaskHandle<T>>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
    {
        let mut fut = fut;
        loop {
            let notified = self.slot_freed.notified();
            tokio::pin!(notified);
            // Registered, and counted as waiting, before the check: a slot freed in between
            // then notifies this producer instead of finding nobody waiting.
            notified.as_mut().enable();
            self.waiting_producers.fetch_add(1, Ordering::SeqCst);
            let _waiting = WaitingProducer(&self.waiting_producers);
            match self.try_spawn(fut, name.clone(), Role::Normal, false) {
                Ok(handle) => return Some(handle),
                Err(back) => fut = back,
            }
            if self.lock().closed || self.node.own_shutdown_requested() {
                return None;
            }
            notified.await;
        }
    }

    /// Registers `cx` to be woken when a task ends with something for the group to do, and
    /// tells whether any task (or the body) failed so far.
    pub(crate) fn reap(&self, state: &mut State<E>, cx: &mut Context<'_>) -> bool {
        state.register_waiter(cx);
        // Under the lock the caller decides in: a producer let in now finds the group closed
        // if this poll closes it.
        if self.limit.is_some_and(|limit| state.tasks.normal() < limit) {
            self.wake_producers();
        }
        !state.failures.is_empty()
    }

    /// Starts queued tasks while slots are free, unless something failed or the group closed.
    /// Called without the lock; the tasks are spawned outside it.
    ///
    /// Registers `cx` under the same lock as the check that ends it: a task that ends after
    /// that check wakes the group, one that ended before it freed a slot the check saw.
    pub(crate) fn start_queued(self: &Arc<Self>, cx: &mut Context<'_>) {
        let Some(limit) = self.limit else {
            return;
        };
        loop {
            let mut state = self.lock();
            state.register_waiter(cx);
            if state.closed || !state.failures.is_empty() || state.tasks.normal() >= limit {
                return;
            }
            let Some(queued) = state.queue.pop_front() else {
                return;
            };
            let key = state.tasks.reserve(Role::Normal);
            drop(state);
            queued.start(self, key);
        }
    }

    /// Records a panic caught by the group itself (in a destructor it ran).
    pub(crate) fn record_panic(&self, label: TaskLabel, payload: Box<dyn std::any::Any + Send>) {
        self.lock().record(label, Ended::Panic(payload));
    }

    /// Closes the group to new tasks and aborts every task. Returns the queued futures, to be
    /// dropped by the caller outside the lock (their destructors may call into the group).
    pub(crate) fn close_and_abort(&self, state: &mut State<E>) -> QueuedTasks<E> {
        state.closed = true;
        state.aborted_all = true;
        state.tasks.abort(None);
        self.wake_producers();
        QueuedTasks(std::mem::take(&mut state.queue))
    }

    /// Takes the queued tasks out for a shutdown request (they never started), to be dropped
    /// by the caller outside the lock, and wakes waiting producers (they are refused now).
    pub(crate) fn take_queue(&self) -> QueuedTasks<E> {
        let queued = std::mem::take(&mut self.lock().queue);
        self.wake_producers();
        QueuedTasks(queued)
    }

    /// Closes the group to new tasks after normal completion and aborts background tasks.
    pub(crate) fn close_after_completion(&self, state: &mut State<E>) {
        state.closed = true;
        state.aborted_background = true;
        state.tasks.abort(Some(Role::Background));
        self.wake_producers();
    }

    /// Tears the group down when its future is dropped from outside: closes it and aborts
    /// every task, before any user destructor runs. Returns the queued futures (dropped by the
    /// caller after the body) and the group as a drain, for the enclosing owner to await.
    pub(crate) fn abandon(self: &Arc<Self>) -> Abandoned {
        let mut state = self.lock();
        let queued = self.close_and_abort(&mut state);
        let live = !(state.is_drained() && state.drains.is_empty());
        drop(state);
        Abandoned {
            queued: Box::new(queued),
            drain: live.then(|| self.clone() as Drain),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    pub(crate) fn limit(&self) -> Option<usize> {
        self.limit
    }
}

/// What is left of a group dropped from outside once its tasks were aborted.
pub(crate) struct Abandoned {
    /// The queued futures, never started.
    pub(crate) queued: Box<dyn Send>,
    /// The group's aborted tasks, for the enclosing owner (`None`: nothing left to await).
    pub(crate) drain: Option<Drain>,
}

impl<E: Send + 'static> Drainable for Shared<E> {
    fn poll_drained(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.lock();
        state.register_waiter(cx);
        if !state.is_drained() {
            return Poll::Pending;
        }
        std::task::ready!(poll_all_finished(&mut state, cx));
        state.poll_drains(cx)
    }
}

/// Ready once every ended task is finished for tokio. That takes at most the rest of a poll on
/// another worker, so the caller is simply polled again.
pub(crate) fn poll_all_finished<E>(state: &mut State<E>, cx: &mut Context<'_>) -> Poll<()> {
    if state.all_finished() {
        return Poll::Ready(());
    }
    cx.waker().wake_by_ref();
    Poll::Pending
}

/// Counts a producer waiting for a slot, also when its future is dropped.
struct WaitingProducer<'a>(&'a AtomicUsize);

impl Drop for WaitingProducer<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
