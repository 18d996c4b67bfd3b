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
use super::queue::{Grant, Producers, Queue, QueuedTask, QueuedTasks, Start, Unqueue};
use super::registry::{Registry, TaskKey};
use super::slots::{GaveBack, Slots};
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
    /// The normal tasks' slots, taken and given back without `state`'s lock when nobody waits
    /// for one (see [`Slots`]). Changed under that lock otherwise.
    slots: Slots,
    /// The tasks' abort handles, under a lock of their own: taken after `state` when both
    /// are held; a spawner takes only this one (see [`attach`](Shared::attach)).
    pub(crate) registry: Registry,
    /// [`WAITING`] and [`DRAINS`], kept under the lock, read without it: a poll of the group
    /// that finds only `WAITING` has nothing to do (see [`Shared::is_quiet`]).
    signals: AtomicU8,
}

/// The group's future is registered as the waiter, and no event has taken its waker since.
const WAITING: u8 = 1 << 0;
/// Drains handed up by the tasks wait in the state.
const DRAINS: u8 = 1 << 1;

pub(crate) struct State<E> {
    /// Background tasks running (normal ones count in [`Shared::slots`]).
    background: usize,
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
        self.slots.close();
        state.producers.refuse_all();
        self.sync_backlog(&mut state);
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
        self.slots.close();
        state.producers.refuse_all();
        self.sync_backlog(&mut state);
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

    /// A task ended (its future is dropped): gives its slot back, records its failure (and the
    /// panic of its finished future's destructor, if any), hands its slot to the next queued
    /// task or waiting producer, and wakes whoever waits for what changed. Called from the
    /// task, without the group's lock held.
    ///
    /// A normal task that ends well, while others still run and nobody waits for a slot,
    /// takes no lock at all (see [`Slots`]): its abort handle stays in the registry until a
    /// pruning finds it finished.
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
        let failed = failures.iter().any(Option::is_some);
        let handed_drains = !drains.is_empty();
        let role = key.role();
        // A task that ends well gives its slot back before the lock is taken, if at all: a
        // slow path that decides under the lock after this sees the slot free, one that
        // decided before set the backlog seen here.
        let quiet = !failed && !handed_drains && role == Role::Normal;
        // A quiet task's slot, kept for the first task waiting for one.
        let mut held = None;
        // A task that did not end quietly: its key is given back under the lock, after its
        // failure or drains are recorded.
        let mut unquiet = None;
        if quiet {
            match self.slots.give_back_or_hold() {
                GaveBack::Quietly(running) => {
                    self.registry.running_fell_to(running);
                    return;
                }
                GaveBack::Held => held = Some(key),
                GaveBack::Locked => {}
            }
        } else {
            unquiet = Some(key);
        }
        let mut state = self.lock();
        if handed_drains {
            state.drains.append(&mut drains);
            self.signals.fetch_or(DRAINS, Ordering::Release);
        }
        for failure in failures.into_iter().flatten() {
            state.record(failure);
        }
        // A failure or drains are recorded before the count drops: a group that sees its
        // last task gone (it may complete, or a drain may report done) sees them too.
        if let Some(key) = unquiet {
            self.release_locked(&mut state, key);
        }
        // The freed slot goes on from here, under the lock that saw any failure: no round trip
        // through the group's own task. Not while this thread is starting queued tasks (a
        // runtime shutting down drops a task inside `spawn`): that loop takes the slot.
        let next = match role {
            Role::Normal if !Starting::defer_for(self) => self.hand_on_slot(&mut state, held),
            _ => {
                if let Some(key) = held {
                    self.release_locked(&mut state, key);
                }
                None
            }
        };
        let idle = role == Role::Normal && self.is_idle(&state);
        // Wake the waiter only when it has something to do: for a failure or new drains, or
        // when a count reached zero. A thousand tasks ending wake it once.
        let wake = failed || handed_drains || idle || self.is_drained(&state);
        let waiter = if wake {
            self.take_waiter(&mut state)
        } else {
            None
        };
        drop(state);
        // Ended tasks keep their whole tokio task allocated (the size of their future) while
        // the registry holds their abort handles: a group that went idle lets go of them, so
        // that a quiet group keeps none (all but this task are finished by now, most likely).
        if idle {
            self.registry.prune();
        }
        if let Some(waiter) = waiter {
            waiter.wake();
        }
        if let Some(next) = next {
            self.start_queued(next);
        }
    }

    /// Takes a free slot for the next queued task (returned, to be started by the caller
    /// outside the lock) or grants it to the first waiting producer: the slot `held` by a
    /// task that just ended (still counted), or else a free one. Nothing starts once the
    /// group closed or something failed; a held slot is then given back.
    fn hand_on_slot(
        &self,
        state: &mut State<E>,
        held: Option<TaskKey>,
    ) -> Option<(Arc<dyn Start<E>>, TaskKey)> {
        let Some(limit) = self.limit else {
            if let Some(key) = held {
                self.release_locked(state, key);
            }
            return None;
        };
        // The slots taken by others than the one held.
        let others = self.slots.taken() - usize::from(held.is_some());
        let mut held = held;
        let next = if state.closed || !state.failures.is_empty() || others >= limit {
            None
        } else if let Some(task) = state.queue.pop() {
            Some((task, self.slot_for_next(held.take())))
        } else {
            // Once the body is done, the last task ending completes the group: a producer
            // still waiting is refused when it closes, not let in to keep it open.
            let completing = state.body_done && others == 0;
            if !completing && !state.producers.is_empty() {
                if let Err(key) = state.producers.grant(self.slot_for_next(held.take())) {
                    self.release_locked(state, key);
                }
            }
            None
        };
        if let Some(key) = held {
            self.release_locked(state, key);
        }
        self.sync_backlog(state);
        next
    }

    /// The slot for the next waiting task: the one `held` by a task that just ended, or a
    /// new one. Under the lock, which decided that a slot is free.
    fn slot_for_next(&self, held: Option<TaskKey>) -> TaskKey {
        held.unwrap_or_else(|| {
            self.slots.take_locked();
            TaskKey::new(Role::Normal)
        })
    }

    /// Tells the fast path whether anybody waits for a slot. Under the lock, after the queue
    /// or the producers changed.
    fn sync_backlog(&self, state: &mut State<E>) {
        let backlog = !state.queue.is_empty() || !state.producers.is_empty();
        self.slots.set_backlog(backlog);
    }

    /// Gives back a task's place in the counts under the lock, which the caller then uses to
    /// hand the slot on and wake the group.
    fn release_locked(&self, state: &mut State<E>, key: TaskKey) {
        match key.role() {
            Role::Normal => {
                self.slots.give_back();
            }
            Role::Background => state.background -= 1,
        }
    }

    /// Starts `next` and, while slots are free, the queued tasks after it.
    fn start_queued(self: &Arc<Self>, next: (Arc<dyn Start<E>>, TaskKey)) {
        let starting = Starting::enter(self);
        let mut next = Some(next);
        while let Some((task, key)) = next.take() {
            let unused = task.start(self, key).err();
            // Only when a slot came free meanwhile (the task just spawned ended at once, or
            // this one was aborted) is there more to start from here.
            if unused.is_none() && !starting.take_deferred() {
                break;
            }
            let mut state = self.lock();
            if let Some(key) = unused {
                // Aborted while it was being taken out: its slot is free again.
                self.release_locked(&mut state, key);
            }
            next = self.hand_on_slot(&mut state, None);
            if next.is_none() {
                // The slot freed here may have been the group's last: it can complete now.
                wake_if_idle(self, state);
            }
        }
    }

    /// Gives back a slot reserved for a producer that stopped waiting.
    pub(crate) fn release_unused(self: &Arc<Self>, key: TaskKey) {
        let mut state = self.lock();
        self.release_locked(&mut state, key);
        let next = self.hand_on_slot(&mut state, None);
        wake_if_idle(self, state);
        if let Some(next) = next {
            self.start_queued(next);
        }
    }

    /// The slots' count and flags, for `Debug`.
    pub(crate) fn slots(&self) -> &Slots {
        &self.slots
    }

    /// The normal tasks running (or reserved).
    pub(crate) fn len(&self) -> usize {
        self.slots.taken()
    }

    /// Whether no normal task runs or waits to, and nothing taken out is being dropped.
    pub(crate) fn is_idle(&self, state: &State<E>) -> bool {
        self.slots.taken() == 0 && state.queue.is_empty() && state.dropping == 0
    }

    /// Whether no task at all runs, and nothing taken out is being dropped.
    pub(crate) fn is_drained(&self, state: &State<E>) -> bool {
        self.slots.taken() == 0 && state.background == 0 && state.dropping == 0
    }

    /// Whether a new normal task must wait: every slot taken, or tasks queued before it.
    /// Stops fast-path spawners until the caller settles the backlog (see [`Slots::hold`]).
    fn hold_full(&self, state: &State<E>) -> bool {
        let taken = self.slots.hold();
        taken + state.queue.len() >= self.slots.limit()
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
            slots: Slots::new(limit),
            state: Mutex::new(State {
                background: 0,
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
            }),
            registry: Registry::default(),
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
        // A free slot, nobody waiting for one: no lock.
        let key = if role == Role::Normal && self.slots.try_take() {
            TaskKey::new(role)
        } else {
            let mut state = self.lock();
            if state.closed {
                return Err(fut);
            }
            match role {
                Role::Background => state.background += 1,
                Role::Normal if self.hold_full(&state) => {
                    // After a shutdown request the group no longer queues (see
                    // `TaskGroup::request_shutdown`).
                    if !queue_if_full || self.node.own_shutdown_requested() {
                        self.sync_backlog(&mut state);
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
                    // The backlog stays set: a task that ends hands its slot on.
                    state.queue.push(queued);
                    drop(state);
                    let group: Weak<dyn Unqueue> = Arc::downgrade(self) as Weak<Shared<E>>;
                    return Ok(TaskHandle::queued(handle, group, &self.node));
                }
                Role::Normal => {
                    self.slots.take_locked();
                    self.sync_backlog(&mut state);
                }
            }
            TaskKey::new(role)
        };
        let at = std::panic::Location::caller();
        let join = self.spawn_reserved(key, fut, ToHandle::new(), name, Some(at));
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
        if !self.slots.try_take() {
            let mut state = self.lock();
            if state.closed || self.hold_full(&state) {
                self.sync_backlog(&mut state);
                return Err((fut, sink));
            }
            self.slots.take_locked();
            self.sync_backlog(&mut state);
        }
        let key = TaskKey::new(Role::Normal);
        self.spawn_reserved(key, fut, sink, None, None);
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
        fut: F,
        sink: S,
        name: Option<Arc<str>>,
        at: Option<&'static std::panic::Location<'static>>,
    ) -> tokio::task::JoinHandle<S::Output>
    where
        F: Future<Output = Result<S::Value, E>> + Send + 'static,
        S: Deliver,
    {
        let role = key.role();
        let child = self.child(key, fut, sink, name, at);
        let join = self.runtime.spawn(child);
        if self.attach(role, join.abort_handle()) {
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
        let join = self.spawn_reserved(key, fut, ToHandle::new(), name, at);
        Some(TaskHandle::spawned(join, &self.node))
    }

    /// Takes a slot under the limit for a task to come, waiting for one in arrival order
    /// behind the producers already waiting; `None` when the group closes or is asked to shut
    /// down first. The caller owns the slot: it spawns under the key, or gives it back with
    /// [`release_unused`](Self::release_unused).
    pub(crate) async fn acquire(self: &Arc<Self>) -> Option<TaskKey> {
        // One lock decides and, if it must wait, queues the producer: a slot freed meanwhile
        // is granted to the producers in order, this one included.
        if let Some(key) = self.take_slot_unlocked() {
            return Some(key);
        }
        let grant = {
            let mut state = self.lock();
            let grant = match self.take_free_slot(&mut state) {
                Ok(key) => Ok(key),
                Err(Refusal::Closed) => Err(None),
                Err(Refusal::Full) => {
                    let grant = Grant::new();
                    state.producers.push(grant.clone());
                    Err(Some(grant))
                }
            };
            self.sync_backlog(&mut state);
            match grant {
                Ok(key) => return Some(key),
                Err(None) => return None,
                Err(Some(grant)) => grant,
            }
        };
        let mut waiting = Waiting {
            grant: &grant,
            group: self,
        };
        std::future::poll_fn(|cx| waiting.grant.poll(cx)).await;
        // A slot, or `None`: refused.
        waiting.take()
    }

    /// Takes a free slot without waiting. Fair to waiting producers: while any waits, there is
    /// no free slot for a newcomer.
    pub(crate) fn try_acquire(&self) -> Result<TaskKey, Refusal> {
        if let Some(key) = self.take_slot_unlocked() {
            return Ok(key);
        }
        let mut state = self.lock();
        let taken = self.take_free_slot(&mut state);
        self.sync_backlog(&mut state);
        taken
    }

    /// Takes a slot without the lock, if one is free and nobody waits for one.
    fn take_slot_unlocked(&self) -> Option<TaskKey> {
        let free = !self.node.own_shutdown_requested() && self.slots.try_take();
        free.then(|| TaskKey::new(Role::Normal))
    }

    /// Reserves a slot if one is free for a newcomer (none while producers wait before it).
    /// The caller settles the backlog after (see [`hold_full`](Self::hold_full)).
    fn take_free_slot(&self, state: &mut State<E>) -> Result<TaskKey, Refusal> {
        if state.closed || self.node.own_shutdown_requested() {
            return Err(Refusal::Closed);
        }
        if self.hold_full(state) || !state.producers.is_empty() {
            return Err(Refusal::Full);
        }
        self.slots.take_locked();
        Ok(TaskKey::new(Role::Normal))
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
        self.slots.close();
        self.registry.abort_all();
        state.producers.refuse_all();
        let reason = self.node.cancel_reason();
        debug_assert!(reason.is_some(), "a group cancels its tasks for a reason");
        let queued = state.queue.take(reason.unwrap_or(CancelReason::Cancelled));
        self.sync_backlog(state);
        queued
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
        self.sync_backlog(&mut state);
        state.dropping += 1;
        (queued, Dropping(self))
    }

    /// Completes the group if no normal task runs or waits to: closes it to new tasks and
    /// aborts the background tasks. Returns whether it did. The slots are closed only if none
    /// is taken, in one step: a spawner that took one without the lock meanwhile keeps the
    /// group open.
    pub(crate) fn try_complete(&self, state: &mut State<E>) -> bool {
        if !(state.queue.is_empty() && state.dropping == 0 && self.slots.close_if_empty()) {
            return false;
        }
        // Why the background tasks are aborted, and later spawns refused.
        self.node.record_cancel_reason(CancelReason::GroupFinished);
        state.closed = true;
        self.registry.abort_background();
        state.producers.refuse_all();
        self.sync_backlog(state);
        true
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
        let live = !(self.is_drained(&state) && state.drains.is_empty());
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
        if !self.is_drained(&state) {
            return Poll::Pending;
        }
        std::task::ready!(self.poll_all_finished(cx));
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
                self.sync_backlog(&mut state);
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
    let waiter = if shared.is_idle(&state) {
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
        let admitted = if self.hold_full(&state) {
            if self.node.own_shutdown_requested() {
                None
            } else {
                state.queue.push(entry());
                state.background += 1;
                Some(Admit::Queued(TaskKey::new(Role::Background)))
            }
        } else {
            self.slots.take_locked();
            Some(Admit::Slot(TaskKey::new(Role::Normal)))
        };
        self.sync_backlog(&mut state);
        admitted
    }

    /// Keeps the abort handle of a task of `role` spawned by the caller; returns whether
    /// to abort it at once (the group aborted its tasks while it was being spawned, when
    /// there was no handle to abort yet).
    ///
    /// Takes the registry's lock only, not the group's: the tasks ending on other threads
    /// take it only to prune (see [`Registry`]). An abort sets its flag under that lock, so a
    /// handle handed over after it is refused here.
    pub(crate) fn attach(&self, role: Role, abort: tokio::task::AbortHandle) -> bool {
        self.registry.attach(role, abort)
    }

    /// Ready once every task is finished for tokio: its end reported, and the rest of its
    /// poll done. That takes at most the rest of a poll on another worker, so the caller is
    /// simply polled again.
    pub(crate) fn poll_all_finished(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.registry.all_finished() {
            return Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Counts work that outlives its task (the thread of a cancelled blocking task) as a
    /// running normal task: it holds a slot, and the group waits for it, until `task_ended`
    /// is called with the key returned.
    pub(crate) fn hold_slot(&self) -> TaskKey {
        let _state = self.lock();
        self.slots.take_locked();
        TaskKey::new(Role::Normal)
    }
}
