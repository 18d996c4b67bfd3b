//! The state shared by a group's handles and its future.
//!
//! It holds the live tasks, the queue of tasks waiting for a slot, and the failures seen so
//! far.

use std::cell::Cell;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};

use tokio::runtime::Handle;

use super::child::{Child, Deliver, Ended};
use super::handle::{TaskHandle, ToHandle};
use super::policy::Handler;
use super::queue::{Grant, Granted, Producers, Queue, QueuedTask, QueuedTasks, Start, Unqueue};
use super::registry::{Registry, TaskKey};
use crate::error::{CancelReason, Failure, TaskLabel};
use crate::frame::{self, Data, Drain, Drainable, Drains, Enter};
use crate::node::{Node, SHUTDOWN};

/// Why the group gave no slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Every slot is taken (or promised to producers that wait).
    Full,
    /// The group is closed or shutting down: no slot will come.
    Closed,
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
    /// Where the tasks' failures go when the group isolates them; `None`: they cancel it.
    handler: Option<Handler<E>>,
    state: Mutex<State<E>>,
    /// Abort handles of tasks just spawned, on their way to the registry (see
    /// [`attach`](Shared::attach)). Taken after `state` when both are held.
    attaching: Mutex<Attaching>,
    /// [`WAITING`] and [`DRAINS`], kept under the lock, read without it: a poll of the group
    /// that finds only `WAITING` has nothing to do (see [`Shared::is_quiet`]).
    signals: AtomicU8,
}

/// The group's future is registered as the waiter, and no event has taken its waker since.
const WAITING: u8 = 1 << 0;
/// Drains handed up by the tasks wait in the state.
const DRAINS: u8 = 1 << 1;

/// Abort handles handed over by spawners, moved into the registry in batches, and the abort
/// flags a spawner must see when it hands one over.
///
/// A spawner holds the group's lock to reserve its task's entry, then spawns without it. Had it
/// to take that lock again to store the abort handle, every spawn would contend twice with the
/// tasks ending on other threads (a second trip of the lock's cache line, about a fifth of a
/// spawn's cost on a multi-thread runtime). This lock is the spawner's own in practice.
#[derive(Default)]
struct Attaching {
    handles: Vec<(TaskKey, tokio::task::AbortHandle)>,
    /// Every task was aborted: a task handed over from then on is aborted at once.
    aborted_all: bool,
    /// Background tasks were aborted (the group finished): the same for them.
    aborted_background: bool,
}

impl Attaching {
    /// Moves the handles into the registry. The handle of a task that already ended is kept
    /// until tokio marks it finished, as `task_ended` keeps the others. Drained in place: the
    /// batch keeps its capacity for the next handles.
    fn move_into<E>(&mut self, state: &mut State<E>) {
        for (key, abort) in self.handles.drain(..) {
            if let Err(abort) = state.tasks.attach(key, abort) {
                state.still_finishing(abort);
            }
        }
    }
}

/// How many abort handles wait before their spawner moves them into the registry.
const ATTACH_BATCH: usize = 32;

pub(crate) struct State<E> {
    tasks: Registry,
    /// Normal tasks waiting for a slot under the limit.
    queue: Queue<E>,
    /// Producers waiting in `spawn_when_free` for a slot.
    producers: Producers,
    /// No more spawns: the group finished or is cancelling.
    closed: bool,
    /// The body returned.
    pub(crate) body_done: bool,
    pub(crate) failures: Vec<Failure<E>>,
    /// The group's future was dropped before it finished: nobody will read `failures`, so
    /// failures are logged (at ERROR: they would be lost otherwise) and dropped.
    abandoned: bool,
    /// Aborted tasks of groups dropped inside the children, handed up as the children ended.
    drains: Drains,
    /// Futures taken out of the group that another thread is dropping (see [`Dropping`]).
    dropping: usize,
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
    pub(crate) fn limit(&self) -> Option<usize> {
        self.limit
    }

    /// Releases the drains handed up that emptied; ready when none is left.
    pub(crate) fn poll_drains(&self, state: &mut State<E>, cx: &mut Context<'_>) -> Poll<()> {
        let polled = state.drains.poll(cx);
        if polled.is_ready() {
            self.signals.fetch_and(!DRAINS, Ordering::Release);
        }
        polled
    }

    /// Takes the waiter's waker, to wake it: the next poll of the group does its work.
    fn take_waiter(&self, state: &mut State<E>) -> Option<Waker> {
        self.signals.fetch_and(!WAITING, Ordering::Release);
        state.waiter.take()
    }

    /// Whether a poll of the group's future, which registered its waiter at its last full
    /// poll with the same waker, would find nothing to do: no task failed, ended the last
    /// normal task, or handed up drains since (each takes the waiter to wake it), and no
    /// drain waits. The caller checks the node's cancellation and its body's own drains.
    pub(crate) fn is_quiet(&self) -> bool {
        self.signals.load(Ordering::Acquire) == WAITING
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State<E>> {
        // A panic while the lock was held cannot leave the state torn: every update is a
        // single push or pop. Keep going rather than turn one panic into many.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the group to new tasks (the group itself then cancels on its next poll);
    /// returns whether it was open.
    pub(crate) fn close(&self) -> bool {
        let mut state = self.lock();
        let was_open = !std::mem::replace(&mut state.closed, true);
        state.producers.refuse_all();
        was_open
    }

    /// Closes the group for `reason`, recorded under the lock that closes it: the group's own
    /// poll, which decides under that lock, then reads the same reason (a failure or the
    /// group's end coming first keeps theirs). Returns whether it was open.
    pub(crate) fn close_with(&self, reason: CancelReason) -> bool {
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        self.node.record_cancel_reason(reason);
        state.closed = true;
        state.producers.refuse_all();
        true
    }

    /// Records the fixed part of the context the group runs in (read where it is polled), for
    /// its children. What is fixed in the group's own task is published here; what its task
    /// inherited from further out, and the deadlines that can move, the children read live,
    /// walking up from the group's node.
    pub(crate) fn publish(&self, outer: &Data) {
        let flags = outer.flags & (frame::CANCELLED | frame::SHUTDOWN);
        self.node.publish(outer.fixed, flags);
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
        let flags = self.node.published_flags();
        Data {
            // Nothing is fixed in the child's own task yet; the group's publication is read
            // live through its node, pushed as the frame's link.
            fixed: None,
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

    /// A task ended (its future is dropped): forgets it, records its failure (and the panic of
    /// its finished future's destructor, if any), hands its slot to the next queued task or
    /// waiting producer, and wakes whoever waits for what changed. Called from the task,
    /// without the group's lock held.
    pub(crate) fn task_ended(
        self: &Arc<Self>,
        key: TaskKey,
        who: Who,
        failure: Option<Ended<E>>,
        drop_panic: Option<Box<dyn std::any::Any + Send>>,
        mut drains: Drains,
    ) {
        let label = || who.label();
        let failures = [
            failure.map(|failure| failure.into_failure(label())),
            drop_panic.map(|payload| Failure::from_panic(label(), payload)),
        ];
        // An isolating group hands them to its handler first, in this task and without the
        // lock; only what the handler passes back (or its own panic) fails the group.
        let failures = match &self.handler {
            Some(handler) => failures.map(|f| f.and_then(|f| isolate(handler, f))),
            None => failures,
        };
        let mut state = self.lock();
        let handed_drains = !drains.is_empty();
        if handed_drains {
            state.drains.append(&mut drains);
            self.signals.fetch_or(DRAINS, Ordering::Release);
        }
        let role = match state.tasks.release(key) {
            Some((role, abort)) => {
                if let Some(abort) = abort {
                    state.still_finishing(abort);
                }
                Some(role)
            }
            None => None,
        };
        let mut failed = false;
        for failure in failures.into_iter().flatten() {
            state.record(failure);
            failed = true;
        }
        // The freed slot goes on from here, under the lock that saw any failure: no round trip
        // through the group's own task. Not while this thread is starting queued tasks (a
        // runtime shutting down drops a task inside `spawn`): that loop takes the slot.
        let next = match role {
            Some(Role::Normal) if !Starting::defer_for(self) => self.hand_on_slot(&mut state),
            _ => None,
        };
        // The batch of abort handles keeps the ended tasks among them allocated (their whole
        // tokio task, the size of their future). A spawner moves it every few spawns; a group
        // that went idle moves it here, unless a spawner holds it right now (it is active,
        // then), so that a quiet group keeps none of them.
        // Likewise the ended tasks kept until tokio marks them finished: all but this one are
        // by now, most likely.
        if role == Some(Role::Normal) && state.is_idle() {
            self.try_settle_attaching(&mut state);
            state.prune_finished();
        }
        // Wake the waiter only when it has something to do: for a failure or new drains, or
        // when a count reached zero. A thousand tasks ending wake it once.
        let wake = failed
            || handed_drains
            || (role == Some(Role::Normal) && state.is_idle())
            || state.tasks.is_empty();
        let waiter = if wake {
            self.take_waiter(&mut state)
        } else {
            None
        };
        drop(state);
        if let Some(waiter) = waiter {
            waiter.wake();
        }
        if let Some(next) = next {
            self.start_queued(next);
        }
    }

    /// Takes a free slot for the next queued task (returned, to be started by the caller
    /// outside the lock) or grants it to the first waiting producer. Nothing starts once the
    /// group closed or something failed.
    fn hand_on_slot(&self, state: &mut State<E>) -> Option<(Arc<dyn Start<E>>, TaskKey)> {
        let limit = self.limit?;
        if state.closed || !state.failures.is_empty() || state.tasks.normal() >= limit {
            return None;
        }
        if let Some(task) = state.queue.pop() {
            return Some((task, state.tasks.reserve(Role::Normal)));
        }
        // Once the body is done, the last task ending completes the group: a producer still
        // waiting is refused when it closes, not let in to keep it open.
        let completing = state.body_done && state.tasks.normal() == 0;
        if !completing && !state.producers.is_empty() {
            let key = state.tasks.reserve(Role::Normal);
            if let Err(key) = state.producers.grant(key) {
                state.tasks.release(key);
            }
        }
        None
    }

    /// Starts `next` and, while slots are free, the queued tasks after it.
    fn start_queued(self: &Arc<Self>, next: (Arc<dyn Start<E>>, TaskKey)) {
        let starting = Starting::enter(self);
        let mut next = Some(next);
        while let Some((task, key)) = next.take() {
            let started = task.start(self, key);
            // Only when a slot came free meanwhile (the task just spawned ended at once, or
            // this one was aborted) is there more to start from here.
            if started && !starting.take_deferred() {
                break;
            }
            let mut state = self.lock();
            if !started {
                // Aborted while it was being taken out: its slot is free again.
                state.tasks.release(key);
            }
            next = self.hand_on_slot(&mut state);
            if next.is_none() {
                // The slot freed here may have been the group's last: it can complete now.
                wake_if_idle(self, state);
            }
        }
    }

    /// Gives back a slot reserved for a producer that stopped waiting.
    pub(crate) fn release_unused(self: &Arc<Self>, key: TaskKey) {
        let mut state = self.lock();
        state.tasks.release(key);
        let next = self.hand_on_slot(&mut state);
        wake_if_idle(self, state);
        if let Some(next) = next {
            self.start_queued(next);
        }
    }
}

/// What names a task in its failures: its given name, or a `gather` item's input position
/// (and the item's name, if the gather names its items).
pub(crate) struct Who {
    pub(crate) name: Option<Arc<str>>,
    pub(crate) at: Option<&'static std::panic::Location<'static>>,
    pub(crate) item: Option<usize>,
    /// The task's id when its end is reported from elsewhere (a blocking task's thread);
    /// `None`: the task reporting is the one that ended.
    pub(crate) task: Option<tokio::task::Id>,
}

impl Who {
    fn label(&self) -> TaskLabel {
        let id = self.task.or_else(tokio::task::try_id);
        match self.item {
            Some(index) => TaskLabel::Item {
                index,
                id,
                name: self.name.clone(),
            },
            None => TaskLabel::Child {
                id,
                name: self.name.clone(),
                at: self.at,
            },
        }
    }
}

thread_local! {
    /// The group (its address) whose queued tasks this thread is starting, and whether one of
    /// its tasks ended meanwhile and left its slot to that loop (see [`Shared::start_queued`]).
    static STARTING: (Cell<usize>, Cell<bool>) = const { (Cell::new(0), Cell::new(false)) };
}

/// Marks this thread as starting a group's queued tasks until dropped.
struct Starting {
    prev: usize,
    prev_deferred: bool,
}

impl Starting {
    fn enter<E>(group: &Shared<E>) -> Starting {
        STARTING.with(|(current, deferred)| Starting {
            prev: current.replace(group as *const Shared<E> as usize),
            prev_deferred: deferred.replace(false),
        })
    }

    /// Whether a task of `group` that just ended must leave its slot to the loop starting
    /// that group's queued tasks on this thread (a runtime shutting down drops a task inside
    /// `spawn`): handing it on from here would recurse once per queued task.
    fn defer_for<E>(group: &Shared<E>) -> bool {
        STARTING.with(|(current, deferred)| {
            let defer = current.get() == group as *const Shared<E> as usize;
            if defer {
                deferred.set(true);
            }
            defer
        })
    }

    /// Whether a slot was left to this loop since the last call.
    fn take_deferred(&self) -> bool {
        STARTING.with(|(_, deferred)| deferred.replace(false))
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        STARTING.with(|(current, deferred)| {
            current.set(self.prev);
            deferred.set(self.prev_deferred);
        });
    }
}

impl<E> State<E> {
    /// Records a failure of the group. It is returned to the caller (in the `GroupError`, or
    /// as the resumed panic), so it is logged at DEBUG only; `finish` logs at ERROR the ones
    /// it cannot return. Once the group was abandoned, nobody will read it: logged at ERROR
    /// and dropped.
    pub(crate) fn record(&mut self, failure: Failure<E>) {
        if self.abandoned {
            log_lost(&failure);
            return;
        }
        tracing::debug!(task = %failure.label(), panic = failure.is_panic(), "task group failure");
        self.panicked |= failure.is_panic();
        self.failures.push(failure);
    }

    /// Registers `cx` to be woken when a task ends with something for the waiter to do.
    fn register_waiter(&mut self, cx: &Context<'_>) {
        crate::waker::register(&mut self.waiter, cx.waker());
    }

    pub(crate) fn normal_len(&self) -> usize {
        self.tasks.normal()
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.tasks.normal() == 0 && self.queue.is_empty() && self.dropping == 0
    }

    /// Whether a new normal task must wait: every slot taken, or tasks queued before it.
    fn is_full(&self, limit: Option<usize>) -> bool {
        limit.is_some_and(|limit| self.tasks.normal() + self.queue.len() >= limit)
    }

    pub(crate) fn is_drained(&self) -> bool {
        self.tasks.is_empty() && self.dropping == 0
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
        self.prune_finished();
        self.ending.is_empty()
    }

    /// Lets go of the ended tasks that tokio marked finished.
    fn prune_finished(&mut self) {
        self.ending.retain(|abort| !abort.is_finished());
        self.ending_kept = self.ending.len();
    }
}

impl<E: Send + 'static> Shared<E> {
    pub(crate) fn new(
        node: Arc<Node>,
        runtime: Handle,
        span: tracing::Span,
        id: u64,
        limit: Option<usize>,
        handler: Option<Handler<E>>,
    ) -> Shared<E> {
        Shared {
            node,
            runtime,
            span,
            id,
            limit,
            handler,
            state: Mutex::new(State {
                tasks: Registry::default(),
                queue: Queue::default(),
                producers: Producers::default(),
                closed: false,
                body_done: false,
                failures: Vec::new(),
                abandoned: false,
                drains: Drains::default(),
                dropping: 0,
                panicked: false,
                waiter: None,
                ending: Vec::new(),
                ending_kept: 0,
            }),
            attaching: Mutex::new(Attaching::default()),
            signals: AtomicU8::new(0),
        }
    }

    #[inline(always)]
    pub(crate) fn child<F, S: Deliver>(
        self: &Arc<Self>,
        key: TaskKey,
        fut: F,
        sink: S,
        name: Option<Arc<str>>,
        at: Option<&'static std::panic::Location<'static>>,
    ) -> Child<F, S, E> {
        let span = tracing::debug_span!(
            parent: &self.span,
            "task",
            group.id = self.id,
            task.name = name.as_deref().unwrap_or(""),
        );
        Child::new(fut, (self.clone(), key), sink, name, at, span)
    }

    /// Spawns a task delivering its value to a handle, or queues it when the limit is
    /// reached. Gives `fut` back when the group is closed or (unless `queue_if_full`) when no
    /// slot is free.
    #[track_caller]
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
        let mut state = self.lock();
        if state.closed {
            return Err(fut);
        }
        if role == Role::Normal && state.is_full(self.limit) {
            // After a shutdown request the group no longer queues (see `TaskGroup::request_shutdown`).
            if !queue_if_full || self.node.own_shutdown_requested() {
                return Err(fut);
            }
            // One allocation, shared by the queue and the handle.
            let (queued, handle) = match name {
                None => {
                    let task = QueuedTask::new(fut, std::panic::Location::caller());
                    (task.clone() as Arc<dyn Start<E>>, task as _)
                }
                named => {
                    let task = QueuedTask::new(fut, named);
                    (task.clone() as Arc<dyn Start<E>>, task as _)
                }
            };
            state.queue.push(queued);
            drop(state);
            let group: Weak<dyn Unqueue> = Arc::downgrade(self) as Weak<Shared<E>>;
            return Ok(TaskHandle::queued(handle, group, &self.node));
        }
        let key = state.tasks.reserve(role);
        drop(state);
        let at = std::panic::Location::caller();
        let join = self.spawn_reserved(key, role, fut, ToHandle::new(), name, Some(at));
        Ok(TaskHandle::spawned(join, &self.node))
    }

    /// Spawns a task delivering its value to `sink` at once. Gives both back when the group is
    /// closed or no slot is free (it never queues: `gather` pulls its input only as slots
    /// free).
    #[inline(always)]
    pub(crate) fn spawn_with<F, S>(self: &Arc<Self>, fut: F, sink: S) -> Result<(), (F, S)>
    where
        F: Future<Output = Result<S::Value, E>> + Send + 'static,
        S: Deliver,
    {
        let mut state = self.lock();
        if state.closed || state.is_full(self.limit) {
            return Err((fut, sink));
        }
        let key = state.tasks.reserve(Role::Normal);
        drop(state);
        self.spawn_reserved(key, Role::Normal, fut, sink, None, None);
        Ok(())
    }

    /// Spawns `fut` as the child task counted under `key`. Called without the group's lock: a
    /// runtime that is shutting down drops the task inside `spawn`, and the task reports its
    /// end to the group.
    #[track_caller]
    #[inline(always)]
    pub(crate) fn spawn_reserved<F, S>(
        self: &Arc<Self>,
        key: TaskKey,
        role: Role,
        fut: F,
        sink: S,
        name: Option<Arc<str>>,
        at: Option<&'static std::panic::Location<'static>>,
    ) -> tokio::task::JoinHandle<S::Output>
    where
        F: Future<Output = Result<S::Value, E>> + Send + 'static,
        S: Deliver,
    {
        let child = self.child(key, fut, sink, name, at);
        let join = self.runtime.spawn(child);
        if self.attach(key, role, join.abort_handle()) {
            join.abort();
        }
        join
    }

    /// Spawns, waiting first for a free slot under the limit. Producers wait in arrival order;
    /// `None` when the group closes or is asked to shut down first.
    pub(crate) async fn spawn_when_free<F, T>(
        self: &Arc<Self>,
        fut: F,
        name: Option<Arc<str>>,
        at: Option<&'static std::panic::Location<'static>>,
    ) -> Option<TaskHandle<T>>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
    {
        let key = self.acquire().await?;
        let join = self.spawn_reserved(key, Role::Normal, fut, ToHandle::new(), name, at);
        Some(TaskHandle::spawned(join, &self.node))
    }

    /// Takes a slot under the limit for a task to come, waiting for one in arrival order
    /// behind the producers already waiting; `None` when the group closes or is asked to shut
    /// down first. The caller owns the slot: it spawns under the key, or gives it back with
    /// [`release_unused`](Self::release_unused).
    pub(crate) async fn acquire(self: &Arc<Self>) -> Option<TaskKey> {
        // One lock decides and, if it must wait, queues the producer: a slot freed meanwhile
        // is granted to the producers in order, this one included.
        let grant = {
            let mut state = self.lock();
            match self.take_free_slot(&mut state) {
                Ok(key) => return Some(key),
                Err(Refusal::Closed) => return None,
                Err(Refusal::Full) => {
                    let grant = Grant::new();
                    state.producers.push(grant.clone());
                    grant
                }
            }
        };
        let mut waiting = Waiting {
            grant: &grant,
            group: self,
        };
        let granted = std::future::poll_fn(|cx| waiting.grant.poll(cx)).await;
        match (granted, waiting.take()) {
            (Granted::Slot(_), Some(key)) => Some(key),
            _ => None,
        }
    }

    /// Takes a free slot without waiting. Fair to waiting producers: while any waits, there is
    /// no free slot for a newcomer.
    pub(crate) fn try_acquire(&self) -> Result<TaskKey, Refusal> {
        self.take_free_slot(&mut self.lock())
    }

    /// Reserves a slot if one is free for a newcomer (none while producers wait before it).
    fn take_free_slot(&self, state: &mut State<E>) -> Result<TaskKey, Refusal> {
        if state.closed || self.node.own_shutdown_requested() {
            return Err(Refusal::Closed);
        }
        if state.is_full(self.limit) || !state.producers.is_empty() {
            return Err(Refusal::Full);
        }
        Ok(state.tasks.reserve(Role::Normal))
    }

    /// Registers `cx` to be woken when a task ends with something for the group to do, and
    /// tells whether any task (or the body) failed so far.
    pub(crate) fn reap(&self, state: &mut State<E>, cx: &mut Context<'_>) -> bool {
        state.register_waiter(cx);
        self.signals.fetch_or(WAITING, Ordering::Release);
        !state.failures.is_empty()
    }

    /// Reports the failure of a task that did not get to end on its own: to the handler of an
    /// isolating group first, as `task_ended` does; what comes back fails the group, which is
    /// woken to cancel the rest.
    fn fail(&self, failure: Failure<E>) {
        let failure = match &self.handler {
            Some(handler) => isolate(handler, failure),
            None => Some(failure),
        };
        if let Some(failure) = failure {
            let mut state = self.lock();
            state.record(failure);
            let waiter = self.take_waiter(&mut state);
            drop(state);
            if let Some(waiter) = waiter {
                waiter.wake();
            }
        }
    }

    /// Records a panic caught by the group itself (in a destructor it ran).
    pub(crate) fn record_panic(&self, label: TaskLabel, payload: Box<dyn std::any::Any + Send>) {
        self.lock().record(Failure::from_panic(label, payload));
    }

    /// Closes the group to new tasks and aborts every task. Returns the queued futures, to be
    /// dropped by the caller outside the lock (their destructors may call into the group).
    ///
    /// The caller has recorded why on the node.
    pub(crate) fn close_and_abort(&self, state: &mut State<E>) -> QueuedTasks<E> {
        state.closed = true;
        self.settle_attaching(state, |attaching| attaching.aborted_all = true);
        state.tasks.abort(None);
        state.producers.refuse_all();
        let reason = self.node.cancel_reason();
        debug_assert!(reason.is_some(), "a group cancels its tasks for a reason");
        state.queue.take(reason.unwrap_or(CancelReason::Cancelled))
    }

    /// Takes the queued tasks out for a shutdown request (they never started), to be dropped
    /// by the caller outside the lock, and wakes waiting producers (they are refused now).
    ///
    /// The group does not complete until the caller has dropped them (see [`Dropping`]): a
    /// shutdown requested from another thread drops them there.
    pub(crate) fn take_queue(&self) -> (QueuedTasks<E>, Dropping<'_, E>) {
        let mut state = self.lock();
        state.producers.refuse_all();
        let queued = state.queue.take(CancelReason::ShutdownRequested);
        state.dropping += 1;
        (queued, Dropping(self))
    }

    /// Closes the group to new tasks after normal completion and aborts background tasks.
    pub(crate) fn close_after_completion(&self, state: &mut State<E>) {
        // Why the background tasks are aborted, and later spawns refused.
        self.node.record_cancel_reason(CancelReason::GroupFinished);
        state.closed = true;
        self.settle_attaching(state, |attaching| attaching.aborted_background = true);
        state.tasks.abort(Some(Role::Background));
        state.producers.refuse_all();
    }

    /// Tears the group down when its future is dropped from outside: closes it and aborts
    /// every task, before any user destructor runs. Returns the queued futures (dropped by the
    /// caller after the body) and the group as a drain, for the enclosing owner to await.
    pub(crate) fn abandon(self: &Arc<Self>) -> Abandoned {
        let mut state = self.lock();
        // Failures recorded so far, and any that arrive from here on, reach nobody.
        state.abandoned = true;
        for failure in std::mem::take(&mut state.failures) {
            log_lost(&failure);
        }
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
}

/// Hands `failure` to an isolating group's handler; returns what fails the group: the
/// failure, when the handler passes it back, or the handler's own panic.
fn isolate<E>(handler: &Handler<E>, failure: Failure<E>) -> Option<Failure<E>> {
    let label = failure.label().clone();
    tracing::debug!(task = %label, panic = failure.is_panic(), "task failure handed to the failure handler");
    match catch_unwind(AssertUnwindSafe(|| handler(failure))) {
        Ok(Ok(())) => None,
        Ok(Err(escalated)) => Some(escalated),
        Err(payload) => {
            tracing::debug!(task = %label, "the failure handler panicked");
            Some(Failure::from_panic(label, payload))
        }
    }
}

/// Logs a failure of a group whose future was dropped before it finished: it reaches nobody.
fn log_lost<E>(failure: &Failure<E>) {
    tracing::error!(
        task = %failure.label(),
        panic = failure.is_panic(),
        "task group failure lost: the group was dropped before it finished",
    );
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
        std::task::ready!(self.poll_all_finished(&mut state, cx));
        self.poll_drains(&mut state, cx)
    }
}

/// A producer waiting for a slot. If its future is dropped after a slot was granted, the slot
/// goes back to the group.
struct Waiting<'a, E: Send + 'static> {
    grant: &'a Arc<Grant>,
    group: &'a Arc<Shared<E>>,
}

impl<E: Send + 'static> Waiting<'_, E> {
    /// Stops waiting; returns the slot granted, if any.
    fn take(&mut self) -> Option<TaskKey> {
        self.grant.leave()
    }
}

impl<E: Send + 'static> Drop for Waiting<'_, E> {
    fn drop(&mut self) {
        if let Some(key) = self.take() {
            self.group.release_unused(key);
        }
    }
}

impl<E: Send + 'static> Unqueue for Shared<E> {
    fn unqueue(&self, unstarted: Box<dyn Send>, queued: bool, label: &dyn Fn() -> TaskLabel) {
        let dropping = {
            let mut state = self.lock();
            if queued {
                state.queue.unqueued();
            }
            state.dropping += 1;
            Dropping(self)
        };
        // Dropped (maybe on another thread) before the group can count it gone. A destructor
        // that panics is the task's failure, as a running task's is: it must not unwind into
        // whoever aborted the task (an `abort_all` loop would stop half-way).
        let dropped = catch_unwind(AssertUnwindSafe(|| self.drop_unstarted(unstarted)));
        if let Err(payload) = dropped {
            self.fail(Failure::from_panic(label(), payload));
        }
        drop(dropping);
    }
}

/// Futures taken out of the group that the caller is dropping, on whatever thread it runs: the
/// group completes only once they are gone (structured, like its tasks). Counted until this
/// guard drops, also on unwind.
pub(crate) struct Dropping<'a, E>(&'a Shared<E>);

impl<E> Drop for Dropping<'_, E> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.dropping -= 1;
        wake_if_idle(self.0, state);
    }
}

/// Releases the lock, waking the group if it has nothing left to run (it may complete now).
fn wake_if_idle<E>(shared: &Shared<E>, mut state: MutexGuard<'_, State<E>>) {
    let waiter = if state.is_idle() {
        shared.take_waiter(&mut state)
    } else {
        None
    };
    drop(state);
    if let Some(waiter) = waiter {
        waiter.wake();
    }
}

/// How [`Shared::admit`] let a task in.
pub(crate) enum Admit {
    /// A slot was free: reserved under this key, for the caller to spawn the task in.
    Slot(TaskKey),
    /// Every slot was taken: the task's entry waits in the queue, and this background key
    /// counts the waiting task meanwhile (see [`Shared::admit`]).
    Queued(TaskKey),
}

// For tasks the group does not spawn itself: `local.rs` and `blocking.rs`.
impl<E> Shared<E> {
    /// Lets in a normal task that the caller spawns itself: reserves a slot for it, or, when
    /// every slot is taken, puts `entry` in the queue (the same FIFO as `try_spawn`'s tasks)
    /// and reserves a background key. That key counts the waiting task until its entry starts
    /// it: the group does not drain (and aborts it) without it, while the entry keeps the group
    /// open and holds its place in line. `None` when the group refuses it, as `try_spawn`
    /// does: closed, or full after a shutdown request.
    pub(crate) fn admit(&self, entry: impl FnOnce() -> Arc<dyn Start<E>>) -> Option<Admit> {
        let mut state = self.lock();
        if state.closed {
            return None;
        }
        if state.is_full(self.limit) {
            if self.node.own_shutdown_requested() {
                return None;
            }
            state.queue.push(entry());
            return Some(Admit::Queued(state.tasks.reserve(Role::Background)));
        }
        Some(Admit::Slot(state.tasks.reserve(Role::Normal)))
    }

    /// Keeps the abort handle of a task spawned by the caller under `key`; returns whether
    /// to abort it at once (the group aborted its tasks while it was being spawned, when
    /// there was no handle to abort yet).
    ///
    /// The handle waits in a batch, moved into the registry by the spawner every
    /// [`ATTACH_BATCH`] handles, or by whoever aborts the group's tasks or waits for them to
    /// finish, before it does (see [`settle_attaching`](Self::settle_attaching)). An abort
    /// sets its flag under the batch's lock, so a handle handed over after it is refused here.
    pub(crate) fn attach(&self, key: TaskKey, role: Role, abort: tokio::task::AbortHandle) -> bool {
        let mut attaching = self.attaching();
        if attaching.aborted_all || (role == Role::Background && attaching.aborted_background) {
            return true;
        }
        attaching.handles.push((key, abort));
        let full = attaching.handles.len() >= ATTACH_BATCH;
        drop(attaching);
        if full {
            self.settle_attaching(&mut self.lock(), |_| {});
        }
        false
    }

    fn attaching(&self) -> MutexGuard<'_, Attaching> {
        // Every update is a push, a take or a flag: a panic elsewhere cannot leave it torn.
        self.attaching.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves the abort handles handed over so far into the registry, after `flag` (an abort
    /// flag) was set under the batch's lock.
    fn settle_attaching(&self, state: &mut State<E>, flag: impl FnOnce(&mut Attaching)) {
        let mut attaching = self.attaching();
        flag(&mut attaching);
        attaching.move_into(state);
    }

    /// [`settle_attaching`](Self::settle_attaching), unless a spawner holds the batch.
    fn try_settle_attaching(&self, state: &mut State<E>) {
        if let Ok(mut attaching) = self.attaching.try_lock() {
            attaching.move_into(state);
        }
    }

    /// Ready once every ended task is finished for tokio. That takes at most the rest of a
    /// poll on another worker, so the caller is simply polled again.
    pub(crate) fn poll_all_finished(&self, state: &mut State<E>, cx: &mut Context<'_>) -> Poll<()> {
        self.settle_attaching(state, |_| {});
        if state.all_finished() {
            return Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Counts work that outlives its task (the thread of a cancelled blocking task) as a
    /// running normal task: it holds a slot, and the group waits for it, until `task_ended`
    /// is called with the key returned.
    pub(crate) fn hold_slot(&self) -> TaskKey {
        self.lock().tasks.reserve(Role::Normal)
    }
}
