//! The state a group's handles and its scope future share: the join sets, the queue of tasks
//! waiting for a slot, and the failures seen so far.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};

use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::task::{Id, JoinError, JoinSet};

use super::child::{Child, Deliver, Exit};
use super::handle::{ResultSlot, TaskHandle};
use crate::chain::Node;
use crate::error::{Failure, TaskLabel};

/// A normal task waiting for a slot under the concurrency limit: the future and where its
/// value goes, boxed, and nothing else (no task, no span, no join entry), so that a long queue
/// costs little more than its futures.
type Queued<E> = Box<dyn Start<E>>;

/// A queued task, type-erased: it turns into a child task when a slot frees.
trait Start<E>: Send {
    fn start(self: Box<Self>, shared: &Shared<E>, state: &mut State<E>);

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
    /// Both `Some` until started; a queued task dropped unstarted tells its sink.
    fut: Option<F>,
    sink: Option<S>,
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
    fn start(mut self: Box<Self>, shared: &Shared<E>, state: &mut State<E>) {
        let (fut, sink) = (self.fut.take(), self.sink.take());
        let (fut, sink) = fut.zip(sink).expect("a queued task starts once");
        if S::is_aborted(&sink.control()) {
            // Aborted by its handle while queued (which already resolved): never polled, and
            // dropped by the runtime rather than here under the group's lock, where its
            // destructors could not call into the group.
            let discard = async move {
                drop((fut, sink));
                Ok(())
            };
            state.background.spawn_on(discard, &shared.runtime);
            return;
        }
        let name = self.name.take();
        shared.spawn_child(state, Role::Normal, fut, sink, name);
    }

    fn key(&self) -> usize {
        self.sink.as_ref().map_or(0, S::key)
    }
}

impl<F, S: Deliver, N> Drop for Pending<F, S, N> {
    fn drop(&mut self) {
        if let Some(sink) = self.sink.take() {
            // Never spawned: the group closed (or its handle aborted it) while it waited.
            drop(self.fut.take());
            sink.deliver(Err(crate::error::TaskError::cancelled()));
        }
    }
}

/// Queued tasks taken out of a closing group, to be dropped outside its lock.
pub(crate) struct QueuedTasks<E>(#[allow(dead_code)] VecDeque<Queued<E>>);

/// What `spawn_with` did with a task it accepted.
pub(crate) enum Spawned {
    Now,
    /// Queued until a slot frees under the limit.
    Queued,
}

/// Whether a task counts against the limit and keeps the group open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Normal,
    Background,
}

pub(crate) struct Shared<E> {
    pub(crate) node: Arc<Node>,
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
    normal: JoinSet<Exit<E>>,
    background: JoinSet<Exit<E>>,
    queue: VecDeque<Queued<E>>,
    /// No more spawns: the group finished or is cancelling.
    closed: bool,
    /// Names of named tasks, to label a panic (whose future, and name, are gone).
    names: HashMap<Id, Arc<str>>,
    pub(crate) failures: Vec<Failure<E>>,
    /// Whether any failure so far is a panic.
    pub(crate) panicked: bool,
}

/// What reaping found.
pub(crate) struct Reaped {
    pub(crate) failed: bool,
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

    fn wake_producers(&self) {
        if self.waiting_producers.load(Ordering::SeqCst) > 0 {
            self.slot_freed.notify_waiters();
        }
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
            runtime,
            span,
            id,
            limit,
            state: Mutex::new(State {
                normal: JoinSet::new(),
                background: JoinSet::new(),
                queue: VecDeque::new(),
                closed: false,
                names: HashMap::new(),
                failures: Vec::new(),
                panicked: false,
            }),
            slot_freed: Notify::new(),
            waiting_producers: AtomicUsize::new(0),
        }
    }

    #[inline(always)]
    fn child<F, S: Deliver>(&self, fut: F, sink: S, name: Option<Arc<str>>) -> Child<F, S> {
        let span = tracing::debug_span!(
            parent: &self.span,
            "task",
            group.id = self.id,
            task.name = name.as_deref().unwrap_or(""),
        );
        Child::new(fut, self.node.clone(), sink, name, span)
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
        let slot = ResultSlot::new();
        match self.spawn_with(fut, slot.clone(), name, role, queue_if_full) {
            Ok(Spawned::Now) => Ok(TaskHandle::new(slot, None)),
            Ok(Spawned::Queued) => {
                // The handle, not the queued task, keeps the way back to the queue: the queue
                // is what a long limited run holds a million of.
                let queue: Weak<dyn Dequeue> = Arc::downgrade(self) as Weak<Shared<E>>;
                Ok(TaskHandle::new(slot, Some(queue)))
            }
            Err((fut, _unused_slot)) => Err(fut),
        }
    }

    /// Spawns a task delivering its value to `sink`, or queues it when the limit is reached.
    /// Gives both back when the group is closed or (unless `queue_if_full`) no slot is free.
    #[inline(always)]
    pub(crate) fn spawn_with<F, S>(
        self: &Arc<Self>,
        fut: F,
        sink: S,
        name: Option<Arc<str>>,
        role: Role,
        queue_if_full: bool,
    ) -> Result<Spawned, (F, S)>
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
                .is_some_and(|limit| state.normal.len() + state.queue.len() >= limit);
        // After a shutdown request the group no longer queues (see `TaskGroup::shutdown`).
        if full && (!queue_if_full || self.node.own_shutdown_requested()) {
            return Err((fut, sink));
        }
        if !full {
            self.spawn_child(&mut state, role, fut, sink, name);
            return Ok(Spawned::Now);
        }
        let (fut, sink) = (Some(fut), Some(sink));
        let queued: Queued<E> = match name {
            None => Box::new(Pending {
                fut,
                sink,
                name: (),
            }),
            named => Box::new(Pending {
                fut,
                sink,
                name: named,
            }),
        };
        state.queue.push_back(queued);
        Ok(Spawned::Queued)
    }

    /// Spawns `fut` as a child task into the role's join set, under the group's lock.
    #[inline(always)]
    fn spawn_child<F, S>(
        &self,
        state: &mut State<E>,
        role: Role,
        fut: F,
        sink: S,
        name: Option<Arc<str>>,
    ) where
        F: Future<Output = Result<S::Value, E>> + Send + 'static,
        S: Deliver,
    {
        let named = name.clone();
        let control = sink.control();
        let child = self.child(fut, sink, name);
        let set = match role {
            Role::Normal => &mut state.normal,
            Role::Background => &mut state.background,
        };
        let abort = set.spawn_on(child, &self.runtime);
        if let Some(name) = named {
            state.names.insert(abort.id(), name);
        }
        S::spawned(control, abort);
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

    /// Reaps finished tasks, records failures and starts queued tasks in the freed slots
    /// (unless something failed). Registers `cx` to be woken by the next completion.
    pub(crate) fn reap(&self, state: &mut State<E>, cx: &mut Context<'_>) -> Reaped {
        let mut reaped = Reaped { failed: false };
        let mut freed = false;
        loop {
            match state.normal.poll_join_next_with_id(cx) {
                Poll::Ready(Some(res)) => {
                    freed = true;
                    reaped.failed |= state.record(res);
                    if !reaped.failed && !state.closed {
                        self.start_queued(state);
                    }
                }
                Poll::Ready(None) => {
                    if reaped.failed || state.closed || !self.start_queued(state) {
                        break;
                    }
                }
                Poll::Pending => break,
            }
        }
        while let Poll::Ready(Some(res)) = state.background.poll_join_next_with_id(cx) {
            reaped.failed |= state.record(res);
        }
        if freed && self.waiting_producers.load(Ordering::SeqCst) > 0 {
            self.slot_freed.notify_waiters();
        }
        reaped
    }

    /// Starts queued tasks while slots are free; returns whether it started any.
    fn start_queued(&self, state: &mut State<E>) -> bool {
        let limit = self.limit.unwrap_or(usize::MAX);
        let mut started = false;
        while state.normal.len() < limit {
            let Some(queued) = state.queue.pop_front() else {
                break;
            };
            // A task aborted while queued is still spawned, and aborted at once by
            // `spawned`: the runtime then drops it unpolled on its own time, not here under
            // the group's lock, where its destructors could not call into the group.
            queued.start(self, state);
            started = true;
        }
        started
    }

    /// Records a panic caught by the group itself (in a destructor it ran).
    pub(crate) fn record_panic(&self, label: TaskLabel, payload: Box<dyn std::any::Any + Send>) {
        let mut state = self.lock();
        state.failures.push(Failure::from_panic(label, payload));
        state.panicked = true;
    }

    /// Closes the group to new tasks and aborts every task. Returns the queued futures, to be
    /// dropped by the caller outside the lock (their destructors may call into the group).
    pub(crate) fn close_and_abort(&self, state: &mut State<E>) -> QueuedTasks<E> {
        state.closed = true;
        state.normal.abort_all();
        state.background.abort_all();
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
        state.background.abort_all();
        self.wake_producers();
    }

    /// Tears the group down when its future is dropped from outside: closes it, aborts every
    /// task, drops the queue, and hands the aborted join sets (and whatever was handed to this
    /// group) to the nearest live enclosing scope or group, which waits for them. With none,
    /// the sets are dropped: aborted, not awaited.
    pub(crate) fn abandon(&self, node_slot: &mut Option<Arc<Node>>) {
        let mut state = self.lock();
        let queued = self.close_and_abort(&mut state);
        let (normal, background) = state.take_sets();
        drop(state);
        super::scope::drop_queued(node_slot, queued);
        self.node.finish();
        let mut orphans = self.node.take_orphans();
        for set in [normal, background] {
            if !set.is_empty() {
                orphans.push(Box::new(set));
            }
        }
        if let Some(parent) = self.node.parent() {
            for orphan in orphans {
                parent.adopt(orphan);
            }
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    pub(crate) fn limit(&self) -> Option<usize> {
        self.limit
    }
}

impl<E: Send + 'static> State<E> {
    /// Records a task's end; returns whether it is a failure.
    fn record(&mut self, res: Result<(Id, Exit<E>), JoinError>) -> bool {
        match res {
            Ok((id, Ok(()))) => {
                self.forget_name(id);
                false
            }
            Ok((id, Err(failure))) => {
                self.forget_name(id);
                let label = TaskLabel::Child {
                    id: Some(id),
                    name: failure.name,
                };
                tracing::error!(task = %label, "task failed");
                self.failures
                    .push(Failure::from_error(label, failure.error));
                true
            }
            Err(err) if err.is_panic() => {
                let id = err.id();
                let label = TaskLabel::Child {
                    id: Some(id),
                    name: self.forget_name(id),
                };
                tracing::error!(task = %label, "task panicked");
                self.failures
                    .push(Failure::from_panic(label, err.into_panic()));
                self.panicked = true;
                true
            }
            // Aborted: not a failure.
            Err(err) => {
                self.forget_name(err.id());
                false
            }
        }
    }

    fn forget_name(&mut self, id: Id) -> Option<Arc<str>> {
        if self.names.is_empty() {
            None
        } else {
            self.names.remove(&id)
        }
    }

    pub(crate) fn normal_len(&self) -> usize {
        self.normal.len()
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.normal.is_empty() && self.queue.is_empty()
    }

    pub(crate) fn is_drained(&self) -> bool {
        self.normal.is_empty() && self.background.is_empty()
    }

    /// The join sets, for a group dropped from outside: handed to an enclosing scope to wait.
    pub(crate) fn take_sets(&mut self) -> (JoinSet<Exit<E>>, JoinSet<Exit<E>>) {
        (
            std::mem::take(&mut self.normal),
            std::mem::take(&mut self.background),
        )
    }
}

/// Counts a producer waiting for a slot, also when its future is dropped.
struct WaitingProducer<'a>(&'a AtomicUsize);

impl Drop for WaitingProducer<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
