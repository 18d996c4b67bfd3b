//! The future that runs a task group, [`GroupScope`].

use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker, ready};

use pin_project::{pin_project, pinned_drop};
use tokio::runtime::Handle;

use super::TaskGroup;
use super::policy::Handler;
use super::shared::{Abandoned, Shared};
use crate::error::{CancelReason, Failure, GroupError, TaskLabel};
use crate::frame::{self, Data, Drains, Enter, HandUp};
use crate::node::{self, Node};

/// Where the group is in its life.
enum Phase<B> {
    /// Built, not polled: holds the body closure. The group captures the runtime on its first
    /// poll and reads the context it runs in on every poll, so the future can be built
    /// anywhere.
    Idle(B),
    /// The body and the tasks run.
    Running,
    /// Normal completion: background tasks were aborted and are being awaited.
    Finishing,
    /// Cancelled (a failure, `cancel()`): every task was aborted and is being awaited.
    Cancelling,
    /// The output was returned.
    Done,
}

/// Options fixed when the group is built.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Options {
    pub(crate) limit: Option<usize>,
    pub(crate) capture_panics: bool,
}

/// Future returned by [`TaskGroup::scope`] and [`Builder::scope`].
///
/// It runs the body and every task of the group, and yields the body's value once all of them
/// are done. See [`TaskGroup`] for the semantics.
///
/// The type parameters are the body closure `B`, its future `Fut`, its value `R` and the
/// group's error type `E`. Code that stores or returns the future rarely needs to spell them,
/// since `impl Future<Output = Result<R, GroupError<E>>>` names it.
///
/// # Examples
///
/// ```
/// use quattro::TaskGroup;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let n = TaskGroup::scope(|tg| async move {
///     for i in 0..10 {
///         tg.spawn(async move { Ok::<_, String>(i) });
///     }
///     Ok(10)
/// })
/// .await
/// .unwrap();
/// assert_eq!(n, 10);
/// # }
/// ```
///
/// # Errors
///
/// Returns a [`GroupError`] if the body or a task failed, holding every error in order of
/// occurrence, and with [`Builder::capture_panics`] every panic. Under
/// [`Builder::isolate_failures`], it holds the body's failures and those the handler returned
/// or panicked on, not those it handled.
///
/// The error is also returned, marked cancelled, when [`TaskGroup::cancel`] was called or a
/// graceful shutdown's grace ran out. [`GroupError::cancel_reason`] says which.
///
/// # Panics
///
/// - Panics on its first poll outside a tokio runtime, since the group needs one to spawn
///   its tasks.
/// - When the body or a task panicked, and the group was not built with
///   [`Builder::capture_panics`], the first panic is resumed in the task awaiting the group,
///   as `std::thread::scope` does. That happens after every other task was aborted and
///   dropped. Under [`Builder::isolate_failures`], a task's panic goes to the failure handler
///   instead, and only a panic the handler returns, or a panic of the handler itself, is
///   resumed.
/// - Panics if polled after it completed.
///
/// # Cancel safety
///
/// Dropping the future, in a `tokio::select!` or because an enclosing cancel scope fired,
/// drops the body at once and aborts every task. Queued tasks are dropped unpolled. When an
/// enclosing quattro scope or group drops it, that scope waits for the aborted tasks to be
/// dropped before it completes. Otherwise nothing waits for them: a task being polled on
/// another thread at that moment, or a running blocking closure, may end after the drop.
/// Failures that reach a dropped group are logged at ERROR, since nobody can receive them.
///
/// [`GroupError::cancel_reason`]: crate::GroupError::cancel_reason
/// [`Builder::scope`]: crate::group::Builder::scope
/// [`Builder::capture_panics`]: crate::group::Builder::capture_panics
/// [`Builder::isolate_failures`]: crate::group::Builder::isolate_failures
#[pin_project(PinnedDrop)]
#[must_use = "futures do nothing unless you `.await` or poll them"]
//
// The struct carries no trait bounds (they sit on the impls): an `async` block holding a group
// must be `Send` when its parts are, and the compiler checks that with lifetimes erased, where a
// bound like `E: 'static` on the definition could no longer be proven for `E = &'static str`.
pub struct GroupScope<B, Fut, R, E> {
    phase: Phase<B>,
    #[pin]
    body: Option<Fut>,
    /// The body's value, once it returned one.
    value: Option<R>,
    shared: Option<Arc<Shared<E>>>,
    /// The group's node, lent to the thread while the body is polled or dropped.
    node: Option<Arc<Node>>,
    waker: Option<Waker>,
    options: Options,
    /// The failure handler of an isolating group, until the group starts.
    handler: Option<Handler<E>>,
    /// Whether a cancellation request (`TaskGroup::cancel`, or the end of a shutdown's grace),
    /// not a failure, started the cancellation.
    cancelled: bool,
    /// Aborted tasks of groups dropped inside the body, awaited before the group completes.
    drains: Drains,
    /// [`Shared::abandon`] for this `E`, chosen where `E: Send + 'static` is known, so that
    /// `Drop` (which cannot have bounds the struct lacks) can reach it.
    abandon: fn(&Arc<Shared<E>>) -> Abandoned,
}

/// The body of a task group: what [`TaskGroup::scope`] runs with a handle to the new group.
///
/// Implemented for every `FnOnce(TaskGroup<E>) -> impl Future<Output = Result<R, E>>`. It is
/// not public API: it lets the crate's own bodies (such as `gather`'s) be named types, and it
/// appears in [`GroupScope`]'s `Future` impl only as a bound that every closure meets.
///
/// # Examples
///
/// An `async fn` that takes the group's handle is a body, like a closure:
///
/// ```
/// use quattro::TaskGroup;
///
/// async fn body(tg: TaskGroup<std::io::Error>) -> Result<u32, std::io::Error> {
///     let a = tg.spawn(async { Ok(20) });
///     let b = tg.spawn(async { Ok(22) });
///     Ok(a.await.unwrap_or(0) + b.await.unwrap_or(0))
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// assert_eq!(TaskGroup::scope(body).await.unwrap(), 42);
/// let doubled = TaskGroup::scope(|tg| async move { Ok(body(tg).await? * 2) });
/// assert_eq!(doubled.await.unwrap(), 84);
/// # }
/// ```
pub trait GroupBody<E>: sealed::Sealed<E> {
    /// The body's value when it succeeds.
    type Output;
    /// The body's future.
    type Future: Future<Output = Result<Self::Output, E>>;

    /// Starts the body with a handle to its group.
    fn start(self, group: TaskGroup<E>) -> Self::Future;
}

impl<B, Fut, R, E> GroupBody<E> for B
where
    B: FnOnce(TaskGroup<E>) -> Fut,
    Fut: Future<Output = Result<R, E>>,
{
    type Output = R;
    type Future = Fut;

    fn start(self, group: TaskGroup<E>) -> Fut {
        self(group)
    }
}

pub(crate) mod sealed {
    /// Keeps [`GroupBody`](super::GroupBody) implementable only inside the crate.
    pub trait Sealed<E> {}

    impl<B, Fut, E> Sealed<E> for B where B: FnOnce(crate::TaskGroup<E>) -> Fut {}
    impl<I: Iterator, T, E> Sealed<E> for crate::gather::GatherBody<I, T> {}
}

static NEXT_GROUP_ID: AtomicU64 = AtomicU64::new(1);

impl<B, Fut, R, E: Send + 'static> GroupScope<B, Fut, R, E> {
    pub(crate) fn new(body: B, options: Options, handler: Option<Handler<E>>) -> Self {
        GroupScope {
            phase: Phase::Idle(body),
            body: None,
            value: None,
            shared: None,
            node: None,
            waker: None,
            options,
            handler,
            cancelled: false,
            drains: Drains::default(),
            abandon: Shared::<E>::abandon,
        }
    }

    /// A handle to the group once it started (first poll), for a shutdown trigger.
    pub(crate) fn group(&self) -> Option<TaskGroup<E>> {
        self.shared.clone().map(TaskGroup::from_shared)
    }
}

impl<B, Fut, R, E> Future for GroupScope<B, Fut, R, E>
where
    B: GroupBody<E, Future = Fut, Output = R>,
    Fut: Future<Output = Result<R, E>>,
    E: Send + 'static,
{
    type Output = Result<R, GroupError<E>>;

    #[track_caller]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Phase::Done = this.phase {
            panic!("a task group future was polled after it completed");
        }
        if let Phase::Idle(_) = this.phase {
            let shared = start(*this.options, this.handler.take());
            *this.node = Some(shared.node.clone());
            *this.shared = Some(shared);
        }
        let shared = this.shared.as_ref().expect("set on the first poll");
        // The group's context is read afresh on every poll, and passed on to its children.
        shared.node.link_to_current();
        let outer = frame::current();
        shared.publish(&outer);
        let data = shared.body_frame(&outer);
        if let Phase::Idle(_) = this.phase {
            let Phase::Idle(body) = std::mem::replace(this.phase, Phase::Running) else {
                unreachable!()
            };
            let tg = TaskGroup::from_shared(shared.clone());
            let _enter = Enter::with_link(data, this.node, Some(this.drains));
            this.body.set(Some(body.start(tg)));
        }

        if let Phase::Running = this.phase {
            let mut failed = false;
            if let Some(body) = this.body.as_mut().as_pin_mut() {
                let polled = {
                    let _enter = Enter::with_link(data, this.node, Some(this.drains));
                    catch_unwind(AssertUnwindSafe(|| body.poll(cx)))
                };
                match polled {
                    Ok(Poll::Pending) => {}
                    Ok(Poll::Ready(Ok(value))) => {
                        drop_body(data, this.node, this.drains, this.body.as_mut());
                        *this.value = Some(value);
                        shared.lock().body_done = true;
                    }
                    Ok(Poll::Ready(Err(error))) => {
                        drop_body(data, this.node, this.drains, this.body.as_mut());
                        // Returned to the caller: not logged at ERROR (see `State::record`).
                        shared
                            .lock()
                            .record(Failure::from_error(TaskLabel::Body, error));
                        failed = true;
                    }
                    Err(payload) => {
                        // The body is unwinding: drop what is left of it, then cancel and drain
                        // the children before the panic is resumed.
                        drop_body(data, this.node, this.drains, this.body.as_mut());
                        shared
                            .lock()
                            .record(Failure::from_panic(TaskLabel::Body, payload));
                        failed = true;
                    }
                }
            }
            // The waiter registered at the last full poll is this task's, and nothing took it
            // since: nothing for the group to do, unless it was cancelled (seen below).
            let same_task = this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
            // Registered before the cancellation flag is read: a `cancel()` from elsewhere
            // either finds this waker, or is seen below.
            node::register_waker_once(&shared.node, this.waker, cx.waker());
            if !failed
                && same_task
                && this.body.is_some()
                && this.drains.is_empty()
                && shared.is_quiet()
                && shared.node.cancel_reason().is_none()
            {
                return Poll::Pending;
            }
            let mut state = shared.lock();
            failed |= shared.reap(&mut state, cx);
            // Release the drains that emptied, in a group that may live as long as a server.
            let _ = shared.poll_drains(&mut state, cx);
            if !this.drains.is_empty() {
                let _ = this.drains.poll(cx);
            }
            // A `cancel()` (or a grace's end) closes the group and records why under this
            // lock, so it is seen here even before it cancels the node.
            let cancelled = shared.node.cancel_reason().is_some();
            if failed || cancelled {
                tracing::debug!(parent: &shared.span, failed, cancelled, "task group cancelling");
                // Why, for the tasks about to be aborted: the first cause recorded wins, and
                // the error says "cancelled" exactly when the tasks do.
                shared.node.record_cancel_reason(CancelReason::Failure);
                *this.cancelled = matches!(
                    shared.node.cancel_reason(),
                    Some(CancelReason::Cancelled | CancelReason::GraceRanOut)
                );
                // Cancel the node first: children being dropped must already see it.
                shared.node.cancel();
                let queued = shared.close_and_abort(&mut state);
                drop(state);
                // A destructor that panics here must not unwind out of the group: the tasks
                // still need draining, and the panic is a failure like any other.
                let body = this.body.as_mut();
                let (node, drains) = (&mut *this.node, &mut *this.drains);
                let mut cancelled_frame = data;
                cancelled_frame.flags |= frame::CANCELLED;
                if let Err(payload) = catch_unwind(AssertUnwindSafe(|| {
                    drop_body(cancelled_frame, node, drains, body)
                })) {
                    shared.record_panic(TaskLabel::Body, payload);
                }
                if let Err(payload) =
                    catch_unwind(AssertUnwindSafe(|| shared.drop_unstarted(queued)))
                {
                    let label = TaskLabel::Child {
                        id: None,
                        name: None,
                        at: None,
                    };
                    shared.record_panic(label, payload);
                }
                *this.phase = Phase::Cancelling;
            } else if this.body.is_none() && shared.try_complete(&mut state) {
                drop(state);
                *this.phase = Phase::Finishing;
            } else {
                return Poll::Pending;
            }
        }

        ready!(poll_drained(shared, this.drains, this.waker, cx));
        *this.phase = Phase::Done;
        let cancelled = this.cancelled.then(|| {
            let reason = shared.node.cancel_reason();
            reason.unwrap_or(CancelReason::Cancelled)
        });
        let mut state = shared.lock();
        let failures = std::mem::take(&mut state.failures);
        let panicked = state.panicked;
        drop(state);
        Poll::Ready(finish(
            failures,
            panicked,
            cancelled,
            this.options,
            this.value.take(),
        ))
    }
}

/// Builds the shared state on the first poll: the group's node, the runtime.
#[track_caller]
fn start<E: Send + 'static>(options: Options, handler: Option<Handler<E>>) -> Arc<Shared<E>> {
    let runtime = Handle::try_current().unwrap_or_else(|_| {
        panic!("TaskGroup::scope must be polled inside a tokio runtime: it spawns tasks")
    });
    let node = Node::new_group();
    let id = NEXT_GROUP_ID.fetch_add(1, Ordering::Relaxed);
    let span = tracing::debug_span!(
        "task_group",
        group.id = id,
        limit = options.limit,
        isolated = handler.is_some()
    );
    Arc::new(Shared::new(node, runtime, span, id, options.limit, handler))
}

/// Waits until every task, and every task handed to the group by a dropped one, has ended,
/// collecting the failures that arrive meanwhile, then marks the node finished.
fn poll_drained<E: Send + 'static>(
    shared: &Shared<E>,
    body_drains: &mut Drains,
    waker: &mut Option<Waker>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    node::register_waker_once(&shared.node, waker, cx.waker());
    ready!(body_drains.poll(cx));
    let mut state = shared.lock();
    shared.reap(&mut state, cx);
    if !shared.is_drained(&state) {
        return Poll::Pending;
    }
    ready!(shared.poll_all_finished(cx));
    ready!(shared.poll_drains(&mut state, cx));
    drop(state);
    shared.node.finish();
    // Task handles may keep the node (for its cancel reason): not the task that ran the group.
    if waker.take().is_some() {
        shared.node.forget_waker();
    }
    Poll::Ready(())
}

fn finish<R, E>(
    failures: Vec<Failure<E>>,
    panicked: bool,
    cancelled: Option<CancelReason>,
    options: &Options,
    value: Option<R>,
) -> Result<R, GroupError<E>> {
    if panicked && !options.capture_panics {
        let mut payload = None;
        for failure in failures {
            if payload.is_none() && failure.is_panic() {
                payload = failure.into_panic();
            } else {
                // Only the first panic is resumed; the rest must not vanish silently.
                tracing::error!(
                    task = %failure.label(),
                    panic = failure.is_panic(),
                    "task group failure not returned: a panic is being resumed",
                );
            }
        }
        resume_unwind(payload.expect("a panic was recorded"));
    }
    match value {
        Some(value) if failures.is_empty() && cancelled.is_none() => Ok(value),
        _ => Err(GroupError::new(failures, cancelled)),
    }
}

/// Drops the body inside the group's frame, so that its destructors still see the group's
/// context and hand the tasks of groups they drop to the group.
fn drop_body<Fut>(
    data: Data,
    node: &mut Option<Arc<Node>>,
    drains: &mut Drains,
    mut body: Pin<&mut Option<Fut>>,
) {
    if body.is_some() {
        let _enter = Enter::with_link(data, node, Some(drains));
        body.set(None);
    }
}

#[pinned_drop]
impl<B, Fut, R, E> PinnedDrop for GroupScope<B, Fut, R, E> {
    fn drop(self: Pin<&mut Self>) {
        let mut this = self.project();
        let Some(shared) = this.shared.take() else {
            return;
        };
        if let Phase::Done = this.phase {
            return;
        }
        // Dropped from outside. Abort first, before any user destructor runs: no task outlives
        // the group, whatever a destructor below does (a panic included). Closed first, so that
        // the body's destructors cannot spawn; and why, before that (see `TaskGroup::cancel`).
        shared.node.record_cancel_reason(dropped_reason());
        shared.close();
        shared.node.cancel();
        shared.node.finish();
        if this.waker.take().is_some() {
            shared.node.forget_waker();
        }
        let Abandoned { queued, drain } = (this.abandon)(&shared);
        // Handed to the enclosing owner last, also on unwind: the group's aborted tasks, then
        // what the body handed up.
        let _group = drain.map(|drain| HandUp(Drains::from(drain)));
        let mut body_drains = HandUp(std::mem::take(this.drains));
        let mut data = shared.body_frame(&frame::current());
        data.flags |= frame::CANCELLED;
        drop_body(data, this.node, &mut body_drains.0, this.body.as_mut());
        shared.drop_unstarted(queued);
    }
}

/// Why a group's future is being dropped from outside, read from the frame the drop runs in.
///
/// A group dropped with the body or a task of an enclosing group that is cancelling (or
/// finishing) takes that group's reason. A cancel scope around it that was cancelled drops it
/// when its deadline passed (or its grace ran out: a shutdown was requested there), or when
/// its `cancel()` was called. Anything else (a `select!`, a plain drop) just dropped it.
fn dropped_reason() -> CancelReason {
    // An enclosing group that is cancelling (or finishing) gives its reason. Else the
    // outermost handle (or group) around it that expired claimed the cancellation, as the
    // outer scope wins a tie: its deadline passed (its grace, if a shutdown was requested
    // there), or its `cancel()` was called.
    let chain = frame::with_link(|link| {
        let mut outermost = None;
        let mut next = link.cloned();
        while let Some(node) = next {
            if let Some(reason) = node.cancel_reason() {
                return Ok(reason);
            }
            if node.deadline_passed() {
                outermost = Some(if node.own_shutdown_requested() {
                    CancelReason::GraceRanOut
                } else {
                    CancelReason::DeadlineReached
                });
            } else if node.is_cancel_requested() {
                outermost = Some(CancelReason::Cancelled);
            }
            next = node.parent();
        }
        Err(outermost)
    });
    match chain {
        Ok(reason) | Err(Some(reason)) => reason,
        // A scope without a handle: only a deadline. Or a group's publication: cancelled.
        Err(None) => match frame::lookup() {
            (Some(at), _) if at <= tokio::time::Instant::now() => CancelReason::DeadlineReached,
            (_, true) => CancelReason::Cancelled,
            _ => CancelReason::GroupDropped,
        },
    }
}

impl<B, Fut, R, E> fmt::Debug for GroupScope<B, Fut, R, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match self.phase {
            Phase::Idle(_) => "idle",
            Phase::Running => "running",
            Phase::Finishing => "finishing",
            Phase::Cancelling => "cancelling",
            Phase::Done => "done",
        };
        f.debug_struct("GroupScope")
            .field("phase", &phase)
            .field("body_running", &self.body.is_some())
            .field("concurrency_limit", &self.options.limit)
            .finish()
    }
}
