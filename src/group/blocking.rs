//! Blocking tasks, which run a closure on tokio's blocking thread pool as a normal task of a
//! group.
//!
//! The task is an ordinary child task (a `Child` around [`Blocking`]), so it is queued under
//! the limit, named, failed, aborted and counted like any other. Its first poll sends the
//! closure to the blocking pool, then it waits for the closure's outcome.
//!
//! A closure cannot be interrupted. When the task is cancelled, its future is dropped at once
//! and its handle resolves. From then on the closure's thread is counted by a slot of its own
//! ([`Shared::hold_slot`]), which the thread gives back once the closure has returned and its
//! outcome has been dropped. So the group, and whoever waits for its aborted tasks, waits for
//! the thread as it waits for any task's future to be dropped.

use std::any::Any;
use std::future::Future;
use std::mem;
use std::panic::{AssertUnwindSafe, Location, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker, ready};

use super::registry::TaskKey;
use super::shared::{Role, Shared, Who};
use super::{TaskBuilder, TaskGroup, TaskHandle};
use crate::error::panic;
use crate::frame::{self, Data, Drains, Enter};
use crate::node::Node;

impl<E: Send + 'static> TaskGroup<E> {
    /// Runs the blocking closure `f` on tokio's blocking thread pool as a normal task of the
    /// group.
    ///
    /// Use it for work that would stall an async worker thread: CPU-heavy computation,
    /// blocking I/O, a synchronous library. The group waits for the task, and the closure's
    /// `Err` or panic is a failure of the group, as for a task spawned with
    /// [`spawn`](Self::spawn). The closure goes to [`tokio::task::spawn_blocking`] when the
    /// task starts. Once it runs it cannot be interrupted, and the group waits for it even
    /// when the task is cancelled (see *Cancellation* below).
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), quattro::GroupError<std::io::Error>> {
    /// let sum = TaskGroup::scope(|tg| async move {
    ///     let data = vec![7u8; 1 << 20];
    ///     let sum = tg.spawn_blocking(move || {
    ///         // CPU-heavy work, off the async worker threads.
    ///         Ok::<_, std::io::Error>(data.iter().map(|&b| u64::from(b)).sum::<u64>())
    ///     });
    ///     Ok(sum.await?)
    /// })
    /// .await?;
    /// assert_eq!(sum, 7 << 20);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// CPU work that checks the request's deadline, and stops in time:
    ///
    /// ```
    /// use std::time::Duration;
    /// use quattro::{TaskGroup, current_effective_deadline, fail_after};
    /// use tokio::time::Instant;
    ///
    /// /// Scores `n` candidates, or as many as the deadline allows.
    /// fn search(n: u64) -> Result<u64, String> {
    ///     let mut best = 0;
    ///     for candidate in 0..n {
    ///         // Between two units of work: is the result still wanted, and in time?
    ///         if current_effective_deadline().is_some_and(|deadline| Instant::now() >= deadline) {
    ///             return Err(format!("out of time after {candidate} candidates"));
    ///         }
    ///         best = best.max(candidate * 7 % 1000); // a unit of CPU work
    ///     }
    ///     Ok(best)
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let best = fail_after(
    ///     Duration::from_secs(10),
    ///     TaskGroup::scope(|tg| async move {
    ///         let best = tg.task("search").spawn_blocking(|| search(10_000));
    ///         Ok(best.await.unwrap_or_default())
    ///     }),
    /// )
    /// .await;
    /// assert_eq!(best.unwrap().unwrap(), 999);
    /// # }
    /// ```
    ///
    /// # Semantics
    ///
    /// - **Concurrency limit.** A blocking task counts like any normal task. When every slot
    ///   is taken, it waits unstarted in the group's FIFO queue with the other tasks, so the
    ///   closure holds no thread until a slot frees. Its slot stays taken until the closure
    ///   has returned, even after the task was cancelled, so a group with a limit of `n` never
    ///   has more than `n` closures running.
    /// - **Failures.** An `Err` or a panic from the closure fails the group as an async task's
    ///   would. Under the default policy it cancels the group, and the panic is resumed in the
    ///   task awaiting the group, or captured with
    ///   [`capture_panics`](super::Builder::capture_panics). Under
    ///   [`isolate_failures`](super::Builder::isolate_failures) it goes to the handler.
    /// - **Deadlines and shutdown.** Inside the closure, [`current_effective_deadline`]
    ///   returns the deadline in force for the group's tasks. It is read live, so a deadline
    ///   moved while the closure runs shows at once. [`is_shutdown_requested`] tells whether a
    ///   graceful shutdown was requested for the group or an enclosing scope. Once the task is
    ///   cancelled, `current_effective_deadline()` is no later than now, so a closure that
    ///   checks it between two units of work stops when its result is no longer wanted.
    ///
    /// # Cancellation
    ///
    /// The task is cancelled when its handle is [aborted](TaskHandle::abort), when the group
    /// is cancelled (by [`cancel`](Self::cancel), a failure, or the end of a shutdown's
    /// grace), or when an enclosing cancel scope drops the group's future. Then:
    ///
    /// - If the closure has not started, because its task waits in the queue or was never
    ///   polled, it is dropped without running.
    /// - Otherwise the handle resolves at once to a cancelled [`TaskError`], but the closure
    ///   runs on until it returns. What it returns is then dropped: a value, an `Err` (logged
    ///   at DEBUG) or a panic (logged at WARN, after the panic hook has printed it). Like an
    ///   aborted async task, it adds nothing to the group's error. A panic in the destructor
    ///   of that value is a failure of the task, as for any task.
    /// - **The group does not return before the closure has returned** and its value has been
    ///   dropped, as tokio's runtime waits for its blocking threads when it shuts down. The
    ///   same holds for an enclosing quattro scope that cancels the group, since it waits for
    ///   the group's aborted tasks. Until then the closure keeps its slot under the
    ///   concurrency limit, and counts in [`len`](Self::len).
    ///
    /// So a closure that may run long should check [`current_effective_deadline`] (or
    /// [`is_shutdown_requested`]) now and then, or depend on something the cancellation
    /// closes, such as a channel whose sender the body holds. A group dropped outside any
    /// quattro scope, in a plain `tokio::select!` say, has nobody to wait for its aborted
    /// tasks, and a running closure then finishes on its own, detached.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use quattro::{TaskGroup, current_effective_deadline};
    /// use tokio::time::Instant;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let stopped = Arc::new(AtomicBool::new(false));
    /// let flag = stopped.clone();
    /// let err = TaskGroup::scope(|tg| async move {
    ///     let (started, running) = tokio::sync::oneshot::channel();
    ///     tg.spawn_blocking(move || {
    ///         let _ = started.send(());
    ///         // Works until told to stop: its cancellation reads as a deadline of "now".
    ///         while current_effective_deadline().is_none_or(|at| Instant::now() < at) {
    ///             std::thread::yield_now(); // a unit of work
    ///         }
    ///         flag.store(true, Ordering::SeqCst);
    ///         Ok(())
    ///     });
    ///     let _ = running.await;
    ///     Err::<(), _>("the body fails") // cancels the group and the blocking task
    /// })
    /// .await
    /// .unwrap_err();
    /// assert_eq!(err.to_string(), "task group failed: body: the body fails");
    /// assert!(stopped.load(Ordering::SeqCst)); // the group waited for the closure
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// This method does not panic; see [`spawn`](Self::spawn). A panic of the closure is a
    /// failure of the task.
    ///
    /// [`current_effective_deadline`]: crate::current_effective_deadline
    /// [`is_shutdown_requested`]: crate::is_shutdown_requested
    /// [`TaskError`]: crate::TaskError
    #[track_caller]
    pub fn spawn_blocking<F, T>(&self, f: F) -> TaskHandle<T>
    where
        F: FnOnce() -> Result<T, E> + Send + 'static,
        T: Send + 'static,
    {
        let task = Blocking::new(f, &self.shared, None, Location::caller());
        self.spawn_role(task, None, Role::Normal)
    }
}

impl<E: Send + 'static> TaskBuilder<'_, E> {
    /// Runs the blocking closure `f` as a normal task with this name; see
    /// [`TaskGroup::spawn_blocking`].
    ///
    /// The name shows in the group's errors and in the task's `task` span, which the closure
    /// runs in. Cancellation works as for [`TaskGroup::spawn_blocking`].
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let err = TaskGroup::scope(|tg| async move {
    ///     tg.task("parse-config").spawn_blocking(|| Err::<(), _>("bad syntax"));
    ///     Ok(())
    /// })
    /// .await
    /// .unwrap_err();
    /// assert_eq!(err.to_string(), "task group failed: task `parse-config`: bad syntax");
    /// # }
    /// ```
    #[track_caller]
    pub fn spawn_blocking<F, T>(self, f: F) -> TaskHandle<T>
    where
        F: FnOnce() -> Result<T, E> + Send + 'static,
        T: Send + 'static,
    {
        let name = Some(self.name.clone());
        let task = Blocking::new(f, &self.group.shared, name, Location::caller());
        self.group.spawn_role(task, Some(self.name), Role::Normal)
    }
}

/// The future of a blocking task, polled by the task's `Child` wrapper: sends the closure to
/// the blocking pool on its first poll, then waits for what it returns.
pub(crate) struct Blocking<F, T, E> {
    stage: Stage<F, T, E>,
    /// What names the task in a failure its thread reports (see [`OnThread::end`]).
    name: Option<Arc<str>>,
    at: &'static Location<'static>,
}

enum Stage<F, T, E> {
    /// Not polled yet (maybe waiting in the queue). The group is weak: a queued future must
    /// not keep its group alive.
    Unstarted(F, Weak<Shared<E>>),
    /// The closure was sent to the blocking pool.
    Sent {
        handoff: Arc<Handoff<T, E>>,
        group: Arc<Shared<E>>,
        /// The closure's own node, cancelled when the task is.
        node: Arc<Node>,
    },
    /// The outcome was taken, or the task let go of it.
    Done,
}

// Nothing in a `Blocking` is ever pinned: the closure is called, not polled.
impl<F, T, E> Unpin for Blocking<F, T, E> {}

impl<F, T, E> Blocking<F, T, E> {
    fn new(
        f: F,
        group: &Arc<Shared<E>>,
        name: Option<Arc<str>>,
        at: &'static Location<'static>,
    ) -> Self {
        Blocking {
            stage: Stage::Unstarted(f, Arc::downgrade(group)),
            name,
            at,
        }
    }
}

impl<F, T, E> Blocking<F, T, E>
where
    F: FnOnce() -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    /// Sends the closure to the blocking pool, to run in the frame this task is polled in.
    fn send(&mut self) {
        let Stage::Unstarted(f, group) = mem::replace(&mut self.stage, Stage::Done) else {
            return;
        };
        let group = group
            .upgrade()
            .expect("a task's wrapper keeps its group alive while it polls");
        // A node of its own under the group's (the innermost link here), pushed as the link
        // of the closure's frame: the group's deadlines and shutdown requests are read live
        // through it, and cancelling it when the task is cancelled shows in the closure.
        let node = Node::new_entered();
        let handoff = Arc::new(Handoff {
            state: Mutex::new(Hand::Waiting(None)),
        });
        let thread = OnThread {
            f: Some(f),
            handoff: Some(handoff.clone()),
            // The task's frame, as its wrapper installed it for this poll.
            data: frame::current(),
            node: Some(node.clone()),
            span: tracing::Span::current(),
            name: self.name.clone(),
            at: self.at,
            task: tokio::task::try_id(),
        };
        // The join handle is not needed: the handoff carries the outcome.
        drop(group.runtime.spawn_blocking(move || thread.run()));
        self.stage = Stage::Sent {
            handoff,
            group,
            node,
        };
    }
}

impl<F, T, E> Future for Blocking<F, T, E>
where
    F: FnOnce() -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    type Output = Result<T, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T, E>> {
        let this = &mut *self;
        if let Stage::Unstarted(..) = this.stage {
            this.send();
        }
        let Stage::Sent { handoff, .. } = &this.stage else {
            panic!("a blocking task was polled after it completed");
        };
        let Outcome { ran, mut drains } = ready!(handoff.poll(cx));
        this.stage = Stage::Done;
        // Groups dropped inside the closure left their tasks to this task, which waits for
        // them before it ends (this runs in the task's frame).
        drains.hand_up();
        match ran {
            Ran::Returned(result) => Poll::Ready(result),
            // Caught again by the task's wrapper: a panic of the task, with its payload.
            Ran::Panicked(payload) => resume_unwind(payload),
            Ran::NotRun => unreachable!("the handoff keeps an unrun closure pending"),
        }
    }
}

impl<F, T, E> Drop for Blocking<F, T, E> {
    fn drop(&mut self) {
        let Stage::Sent {
            handoff,
            group,
            node,
        } = mem::replace(&mut self.stage, Stage::Done)
        else {
            // Never sent: the closure is dropped unrun (with the task's frame installed).
            return;
        };
        // Cancelled while the closure runs: it sees a deadline of "now" from here on, and
        // its thread reports its own end to the group.
        node.cancel();
        if let Some(Outcome { ran, mut drains }) = handoff.abandon(&group) {
            // It returned before the task could take it: dropped here, in the task's frame,
            // as its thread would have. A panicking destructor is the task's (its wrapper
            // reports it).
            drains.hand_up();
            discard(ran);
        }
    }
}

/// How the closure ended.
enum Ran<T, E> {
    Returned(Result<T, E>),
    Panicked(Box<dyn Any + Send>),
    /// Dropped before it ran: the runtime is shutting down, or the task was cancelled while
    /// the closure waited for a thread.
    NotRun,
}

/// What the closure's thread hands to the task: how the closure ended, and what groups
/// dropped inside it left for an owner to wait for.
struct Outcome<T, E> {
    ran: Ran<T, E>,
    drains: Drains,
}

/// What the task and the closure's thread share.
struct Handoff<T, E> {
    state: Mutex<Hand<T, E>>,
}

enum Hand<T, E> {
    /// The closure runs, or waits for a thread; the task waits with this waker.
    Waiting(Option<Waker>),
    /// The closure ended before the task let go: its outcome, for the task to take.
    Ended(Outcome<T, E>),
    /// The task let go (it was cancelled) while the closure ran: the thread reports its own
    /// end, under this key, which counts it meanwhile.
    Abandoned(Arc<Shared<E>>, TaskKey),
    /// Taken.
    Taken,
}

impl<T, E> Handoff<T, E> {
    fn lock(&self) -> MutexGuard<'_, Hand<T, E>> {
        // Every update is one assignment: a panic cannot leave the state torn.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ready with the closure's outcome once it ended. An unrun closure (dropped by a runtime
    /// shutting down, which drops this task too) stays pending.
    fn poll(&self, cx: &mut Context<'_>) -> Poll<Outcome<T, E>> {
        let mut state = self.lock();
        match &mut *state {
            Hand::Waiting(waker) => {
                crate::waker::register(waker, cx.waker());
                Poll::Pending
            }
            Hand::Ended(Outcome {
                ran: Ran::NotRun, ..
            })
            | Hand::Abandoned(..)
            | Hand::Taken => Poll::Pending,
            Hand::Ended(_) => match mem::replace(&mut *state, Hand::Taken) {
                Hand::Ended(outcome) => Poll::Ready(outcome),
                _ => unreachable!("matched above"),
            },
        }
    }
}

impl<T, E> Handoff<T, E> {
    /// The task lets go: from here on, a running closure's thread holds a slot of its own
    /// until it reports its end. An outcome that arrived first is returned, to be dropped by
    /// the caller.
    fn abandon(&self, group: &Arc<Shared<E>>) -> Option<Outcome<T, E>> {
        let mut state = self.lock();
        match mem::replace(&mut *state, Hand::Taken) {
            // Reserved before the task's own slot is released (the task is being dropped, and
            // reports its end after this): the group never sees it idle meanwhile.
            Hand::Waiting(_) => {
                *state = Hand::Abandoned(group.clone(), group.hold_slot());
                None
            }
            Hand::Ended(outcome) => Some(outcome),
            other => {
                *state = other;
                None
            }
        }
    }

    /// The closure ended: hands the outcome to the task and wakes it, or, when the task let
    /// go, gives it back with the group and the key that counts the thread.
    #[allow(clippy::type_complexity)]
    fn finish(&self, outcome: Outcome<T, E>) -> Option<(Outcome<T, E>, Arc<Shared<E>>, TaskKey)> {
        let mut state = self.lock();
        match mem::replace(&mut *state, Hand::Taken) {
            Hand::Waiting(waker) => {
                *state = Hand::Ended(outcome);
                drop(state);
                if let Some(waker) = waker {
                    waker.wake();
                }
                None
            }
            Hand::Abandoned(group, key) => Some((outcome, group, key)),
            other => {
                *state = other;
                None
            }
        }
    }
}

/// The closure on its way to, and on, its blocking thread. Dropped unrun (a runtime shutting
/// down), it still hands over an outcome, so that a thread counted by the group is never lost.
struct OnThread<F, T, E> {
    f: Option<F>,
    /// `None` once the outcome was handed over.
    handoff: Option<Arc<Handoff<T, E>>>,
    /// The task's frame, installed around the closure.
    data: Data,
    /// The closure's node, lent to the frame while the closure runs.
    node: Option<Arc<Node>>,
    /// The task's span, entered around the closure.
    span: tracing::Span,
    name: Option<Arc<str>>,
    at: &'static Location<'static>,
    /// The id of the task that sent the closure: a failure reported from the thread names it.
    task: Option<tokio::task::Id>,
}

impl<F, T, E> OnThread<F, T, E>
where
    F: FnOnce() -> Result<T, E>,
{
    fn run(mut self) {
        let Some(f) = self.f.take() else {
            return;
        };
        // Cancelled while it waited for a pool thread (the task was dropped): it never
        // starts, as a task cancelled in the group's queue never does.
        let cancelled = self
            .node
            .as_ref()
            .is_some_and(|node| node.is_cancel_requested());
        let mut drains = Drains::default();
        let ran = {
            let _span = self.span.enter();
            let _enter = Enter::with_link(self.data, &mut self.node, Some(&mut drains));
            if cancelled {
                match catch_unwind(AssertUnwindSafe(|| drop(f))) {
                    Ok(()) => Ran::NotRun,
                    Err(payload) => Ran::Panicked(payload),
                }
            } else {
                match catch_unwind(AssertUnwindSafe(f)) {
                    Ok(result) => Ran::Returned(result),
                    Err(payload) => Ran::Panicked(payload),
                }
            }
        };
        self.end(Outcome { ran, drains });
    }

    /// Hands the outcome to the task; or, when the task was cancelled meanwhile, drops it in
    /// the task's frame and gives back the slot that counted this thread.
    fn end(&mut self, outcome: Outcome<T, E>) {
        let Some(handoff) = self.handoff.take() else {
            return;
        };
        if let Some(node) = &self.node {
            node.finish();
        }
        let Some((outcome, group, key)) = handoff.finish(outcome) else {
            return;
        };
        let Outcome { ran, mut drains } = outcome;
        let dropped = {
            let mut more = Drains::default();
            let _span = self.span.enter();
            let dropped = {
                let _enter = Enter::with_link(self.data, &mut self.node, Some(&mut more));
                catch_unwind(AssertUnwindSafe(|| discard(ran)))
            };
            drains.append(&mut more);
            dropped
        };
        let who = Who {
            task: self.task,
            name: self.name.take(),
            at: Some(self.at),
            item: None,
        };
        // Last: the group may return as soon as this slot is free.
        group.task_ended(key, who, None, dropped.err(), drains);
    }
}

impl<F, T, E> Drop for OnThread<F, T, E> {
    fn drop(&mut self) {
        if let Some(handoff) = self.handoff.take() {
            // Never ran. The group's tasks are being dropped with the runtime; still give back
            // the slot of a cancelled task, if this was one.
            let unrun = Outcome {
                ran: Ran::NotRun,
                drains: Drains::default(),
            };
            if let Some((_, group, key)) = handoff.finish(unrun) {
                let who = Who {
                    task: self.task,
                    name: self.name.take(),
                    at: Some(self.at),
                    item: None,
                };
                group.task_ended(key, who, None, None, Drains::default());
            }
        }
    }
}

/// Drops what a cancelled task's closure returned: nobody waits for it any more.
fn discard<T, E>(ran: Ran<T, E>) {
    match ran {
        Ran::Returned(Ok(value)) => drop(value),
        Ran::Returned(Err(error)) => {
            tracing::debug!("blocking task returned an error after it was cancelled: dropped");
            drop(error);
        }
        Ran::Panicked(payload) => {
            tracing::warn!(
                panic = panic::message(&*payload).unwrap_or(panic::NON_STRING),
                "blocking task panicked after it was cancelled: dropped",
            );
            drop(payload);
        }
        Ran::NotRun => {}
    }
}
