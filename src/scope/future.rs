//! The futures that run a cancel scope: [`MoveOn`] and [`Fail`], both thin layers over
//! [`Scoped`], which does the work.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use pin_project::{pin_project, pinned_drop};
use tokio::time::{Sleep, sleep_until};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::chain::{
    self, CANCEL_REQUESTED, CANCELLED, CAUGHT, DEADLINE_CHANGED, Enter, FINISHED, Node,
    TOKENS_CHANGED,
};
use crate::deadline::{self, NO_DEADLINE};
use crate::{CancelScope, Elapsed};

/// Where a [`Scoped`] future is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Built, not yet polled: the scope is entered on the first poll.
    Idle,
    /// The inner future runs.
    Running,
    /// The inner future is gone; aborted tasks handed to the scope are being awaited.
    Draining,
    /// The output was returned.
    Done,
}

/// How the scope learns that its deadline passed.
enum Timer {
    /// No timer needed: no deadline, or not decided yet.
    None,
    /// An enclosing scope polled by the same task has an earlier or equal deadline; its timer
    /// fires first and wins the tie. Kept until the deadlines change or that scope finishes.
    Ancestor { covering: Arc<Node>, epoch: u64 },
    /// The scope's own timer (in `Scoped::sleep`) is armed.
    Own,
}

/// Runs a future inside a cancel scope; yields its output or why the scope cancelled it.
#[pin_project(PinnedDrop, project = ScopedProj)]
pub(crate) struct Scoped<F: Future> {
    #[pin]
    inner: Option<F>,
    /// The scope's node. `None` only while it is the thread's current node, during a poll.
    node: Option<Arc<Node>>,
    #[pin]
    sleep: Option<Sleep>,
    timer: Timer,
    /// The waker last handed to the node, so that it is replaced only when it changes.
    waker: Option<Waker>,
    tokens: Vec<Pin<Box<WaitForCancellationFutureOwned>>>,
    output: Option<Result<F::Output, Elapsed>>,
    phase: Phase,
}

impl<F: Future> Scoped<F> {
    pub(crate) fn new(node: Arc<Node>, inner: F) -> Scoped<F> {
        Scoped {
            inner: Some(inner),
            node: Some(node),
            sleep: None,
            timer: Timer::None,
            waker: None,
            tokens: Vec::new(),
            output: None,
            phase: Phase::Idle,
        }
    }

    fn node(&self) -> &Arc<Node> {
        self.node
            .as_ref()
            .expect("node is only lent out during a poll")
    }

    fn get_ref(&self) -> Option<&F> {
        self.inner.as_ref()
    }

    fn inner_pin_mut(self: Pin<&mut Self>) -> Option<Pin<&mut F>> {
        self.project().inner.as_pin_mut()
    }

    fn phase(&self) -> Phase {
        self.phase
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = Result<F::Output, Elapsed>;

    #[track_caller]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        match *this.phase {
            Phase::Idle => {
                let node = this.node.as_ref().expect("node present outside a poll");
                node.enter(chain::current());
                *this.phase = Phase::Running;
            }
            Phase::Running => {}
            Phase::Draining => return poll_drain(this, cx),
            Phase::Done => panic!("a cancel scope future was polled after it completed"),
        }

        // The inner future is polled first: a future that completes without suspending returns
        // its value even if the scope was cancelled meanwhile (cancellation is delivered at a
        // suspension point, as in Trio and `tokio::time::timeout`).
        let polled = {
            let _enter = Enter::new(this.node);
            let inner = this.inner.as_mut().as_pin_mut();
            let polled = inner.expect("inner future present while running").poll(cx);
            if polled.is_ready() {
                // Dropped while the node is still current, as `chain::drop_in` would.
                this.inner.set(None);
            }
            polled
        };
        if let Poll::Ready(value) = polled {
            *this.output = Some(Ok(value));
            *this.phase = Phase::Draining;
            return poll_drain(this, cx);
        }

        let node = this.node.as_ref().expect("node returned after the poll");
        chain::register_waker_once(node, this.waker, cx.waker());
        let mut flags = node.state() & (DEADLINE_CHANGED | TOKENS_CHANGED);
        if flags != 0 {
            flags = node.take_flags(DEADLINE_CHANGED | TOKENS_CHANGED);
        }
        if flags & TOKENS_CHANGED != 0 {
            watch_tokens(node, this.tokens);
        }
        if flags & DEADLINE_CHANGED != 0 || timer_stale(this.timer) {
            arm_timer(node, this.timer, this.sleep.as_mut());
        }
        if let Some(sleep) = this.sleep.as_mut().as_pin_mut() {
            if sleep.poll(cx).is_ready() {
                node.mark_deadline_reached();
            }
        }
        if this
            .tokens
            .iter_mut()
            .any(|t| t.as_mut().poll(cx).is_ready())
        {
            node.cancel();
        }

        let state = node.state();
        if state & CANCELLED == 0 || node.ancestor_cancelled() {
            // An enclosing scope that is cancelled too claims the cancellation: it will drop
            // this future, and its timer or `cancel()` has woken (or will wake) this task.
            return Poll::Pending;
        }
        node.set_flags(CAUGHT);
        tracing::debug!(deadline = ?node.deadline(), "cancel scope cancelled");
        chain::drop_in(this.node, this.inner.as_mut());
        let err = if state & CANCEL_REQUESTED != 0 {
            Elapsed::cancelled()
        } else {
            Elapsed::deadline()
        };
        *this.output = Some(Err(err));
        *this.phase = Phase::Draining;
        poll_drain(this, cx)
    }
}

/// Waits for the tasks handed to this scope, then marks it finished and yields the output.
fn poll_drain<F: Future>(
    mut this: ScopedProj<'_, F>,
    cx: &mut Context<'_>,
) -> Poll<Result<F::Output, Elapsed>> {
    let node = this.node.as_ref().expect("node present outside a poll");
    ready!(node.poll_orphans(cx));
    if node.state() & FINISHED == 0 && node.finish() {
        // Orphans arrived between the drain and `finish`; later ones go further up.
        ready!(node.poll_orphans(cx));
    }
    *this.phase = Phase::Done;
    this.sleep.set(None);
    forget_waker(node, this.waker);
    Poll::Ready(this.output.take().expect("output stored before draining"))
}

/// Replaces the task's waker in a node that is done with it (if one was handed over), so that
/// a later `cancel()` (or anything else that wakes the node) does not wake a task that has
/// moved on, and the node no longer keeps that task alive.
fn forget_waker(node: &Node, last: &mut Option<Waker>) {
    if last.take().is_some() {
        node.register_waker(Waker::noop());
    }
}

fn watch_tokens(node: &Node, tokens: &mut Vec<Pin<Box<WaitForCancellationFutureOwned>>>) {
    tokens.extend(
        node.take_linked_tokens()
            .into_iter()
            .map(|token| Box::pin(token.cancelled_owned())),
    );
}

/// Whether the timer decision must be made (again): never made, or made on the strength of
/// an ancestor whose deadline may have moved or which has finished.
fn timer_stale(timer: &Timer) -> bool {
    match timer {
        Timer::None => true,
        Timer::Own => false,
        Timer::Ancestor { covering, epoch } => {
            *epoch != chain::deadline_epoch() || covering.state() & FINISHED != 0
        }
    }
}

/// Arms, moves or disarms the scope's single timer for its current deadline.
fn arm_timer(node: &Node, timer: &mut Timer, mut sleep: Pin<&mut Option<Sleep>>) {
    let epoch = chain::deadline_epoch();
    let raw = node.deadline_raw();
    if raw == NO_DEADLINE {
        // Not `Timer::None`, which means "undecided": an `Own` timer that is disarmed.
        *timer = Timer::Own;
        sleep.set(None);
        return;
    }
    if let Some(covering) = node.covering_ancestor_in_task(raw) {
        *timer = Timer::Ancestor { covering, epoch };
        sleep.set(None);
        return;
    }
    *timer = Timer::Own;
    let at = deadline::decode(raw).expect("checked above");
    match sleep.as_mut().as_pin_mut() {
        // One timer entry for the scope's whole life: moving the deadline resets it.
        Some(armed) => armed.reset(at),
        None => {
            if tokio::runtime::Handle::try_current().is_err() {
                panic!(
                    "a CancelScope with a deadline (move_on/fail, move_on_after, fail_at, ...) \
                     must be polled inside a tokio runtime with the time driver enabled"
                );
            }
            sleep.set(Some(sleep_until(at)));
        }
    }
}

#[pinned_drop]
impl<F: Future> PinnedDrop for Scoped<F> {
    fn drop(self: Pin<&mut Self>) {
        let mut this = self.project();
        if matches!(*this.phase, Phase::Idle | Phase::Done) {
            // Never entered, or finished and drained: nothing left to hand over.
            return;
        }
        chain::drop_in(this.node, this.inner.as_mut());
        let node = this.node.as_ref().expect("node present outside a poll");
        if *this.phase == Phase::Running && node.state() & CANCELLED == 0 && node.is_cancelled() {
            // Dropped by an enclosing scope whose deadline tied with ours (the outer one claims
            // the tie, and ours had no timer of its own): our deadline passed too, so the token
            // handed out by `cancellation_token()` must fire, as `is_cancelled()` says.
            node.mark_deadline_reached();
        }
        forget_waker(node, this.waker);
        // Dropped from outside (an enclosing scope, a select, a failing group): whatever was
        // handed to this scope and not yet drained goes to the nearest live ancestor (with
        // none, it is dropped here: its tasks are aborted but nobody waits for them).
        node.abandon(None);
    }
}

/// Shows the scope's state and the phase of the future.
fn debug_scoped<F: Future>(
    scoped: &Scoped<F>,
    name: &str,
    f: &mut fmt::Formatter<'_>,
) -> fmt::Result {
    let scope = CancelScope::from_node(scoped.node().clone());
    f.debug_struct(name)
        .field("phase", &scoped.phase())
        .field("deadline", &scope.deadline())
        .field("is_cancelled", &scope.is_cancelled())
        .field("cancelled_caught", &scope.cancelled_caught())
        .finish()
}

/// Future returned by [`CancelScope::move_on`], [`move_on_after`] and [`move_on_at`]: runs a
/// future inside a cancel scope and yields `Some(output)`, or `None` when the scope was
/// cancelled first.
///
/// See [`CancelScope`] for the semantics.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use quattro::move_on_after;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let fut = move_on_after(Duration::from_millis(10), tokio::time::sleep(Duration::from_secs(1)));
/// let scope = fut.cancel_scope();
/// assert_eq!(fut.await, None);
/// assert!(scope.cancelled_caught());
/// # }
/// ```
///
/// # Panics
///
/// Panics when polled after it completed, when its scope was already run by another
/// future (a scope runs once), and when it must arm its timer (a deadline, and the inner
/// future is pending) outside a tokio runtime with the time driver.
///
/// # Cancel safety
///
/// Dropping the future drops the inner future at once (while the scope's deadline is still
/// visible to its destructors) and does not wait for anything.
///
/// [`move_on_after`]: crate::move_on_after
/// [`move_on_at`]: crate::move_on_at
#[pin_project]
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct MoveOn<F: Future> {
    #[pin]
    scoped: Scoped<F>,
}

impl<F: Future> MoveOn<F> {
    pub(crate) fn new(node: Arc<Node>, inner: F) -> MoveOn<F> {
        MoveOn {
            scoped: Scoped::new(node, inner),
        }
    }

    /// A handle to the scope this future runs, to cancel it, move its deadline or, after it
    /// completed, ask whether it was cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let fut = quattro::move_on_after(Duration::from_secs(1), std::future::pending::<()>());
    /// let scope = fut.cancel_scope();
    /// scope.cancel();
    /// assert_eq!(fut.await, None);
    /// assert!(scope.cancelled_caught());
    /// # }
    /// ```
    pub fn cancel_scope(&self) -> CancelScope {
        CancelScope::from_node(self.scoped.node().clone())
    }

    /// The inner future, unless it completed or was dropped by a cancellation.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let fut = quattro::move_on_after(Duration::from_secs(1), std::future::ready(7));
    /// assert!(fut.get_ref().is_some()); // not polled yet
    /// # }
    /// ```
    pub fn get_ref(&self) -> Option<&F> {
        self.scoped.get_ref()
    }

    /// The inner future, pinned, unless it completed or was dropped by a cancellation.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut fut = std::pin::pin!(quattro::move_on_after(Duration::from_secs(1), async { 7 }));
    /// assert!(quattro::MoveOn::get_mut(fut.as_mut()).is_some());
    /// fut.as_mut().await;
    /// assert!(quattro::MoveOn::get_mut(fut.as_mut()).is_none()); // completed
    /// # }
    /// ```
    pub fn get_mut(self: Pin<&mut Self>) -> Option<Pin<&mut F>> {
        self.project().scoped.inner_pin_mut()
    }
}

impl<F: Future> Future for MoveOn<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().scoped.poll(cx).map(Result::ok)
    }
}

impl<F: Future> fmt::Debug for MoveOn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_scoped(&self.scoped, "MoveOn", f)
    }
}

/// Future returned by [`CancelScope::fail`], [`fail_after`] and [`fail_at`]: runs a future
/// inside a cancel scope and yields `Ok(output)`, or `Err(Elapsed)` when the scope was
/// cancelled first.
///
/// The error tells whether the deadline was reached or [`CancelScope::cancel`] was called.
/// See [`CancelScope`] for the semantics.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use quattro::fail_after;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let slow = tokio::time::sleep(Duration::from_secs(1));
/// let err = fail_after(Duration::from_millis(10), slow).await.unwrap_err();
/// assert!(err.is_deadline_reached());
/// # }
/// ```
///
/// # Panics
///
/// Panics when polled after it completed, when its scope was already run by another
/// future (a scope runs once), and when it must arm its timer (a deadline, and the inner
/// future is pending) outside a tokio runtime with the time driver.
///
/// # Errors
///
/// [`Elapsed`] when the scope was cancelled (deadline or `cancel()`) before the inner future
/// completed. A cancellation of an *enclosing* scope is not this future's error: the
/// enclosing scope drops this future instead.
///
/// # Cancel safety
///
/// Dropping the future drops the inner future at once (while the scope's deadline is still
/// visible to its destructors) and does not wait for anything.
///
/// [`fail_after`]: crate::fail_after
/// [`fail_at`]: crate::fail_at
#[pin_project]
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Fail<F: Future> {
    #[pin]
    scoped: Scoped<F>,
}

impl<F: Future> Fail<F> {
    pub(crate) fn new(node: Arc<Node>, inner: F) -> Fail<F> {
        Fail {
            scoped: Scoped::new(node, inner),
        }
    }

    /// A handle to the scope this future runs, to cancel it, move its deadline or, after it
    /// completed, ask whether it was cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let fut = quattro::fail_after(Duration::from_secs(1), std::future::pending::<()>());
    /// let scope = fut.cancel_scope();
    /// scope.cancel();
    /// assert!(fut.await.unwrap_err().is_cancelled());
    /// assert!(scope.cancelled_caught());
    /// # }
    /// ```
    pub fn cancel_scope(&self) -> CancelScope {
        CancelScope::from_node(self.scoped.node().clone())
    }

    /// The inner future, unless it completed or was dropped by a cancellation.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let fut = quattro::fail_after(Duration::from_secs(1), std::future::ready(7));
    /// assert!(fut.get_ref().is_some()); // not polled yet
    /// # }
    /// ```
    pub fn get_ref(&self) -> Option<&F> {
        self.scoped.get_ref()
    }

    /// The inner future, pinned, unless it completed or was dropped by a cancellation.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut fut = std::pin::pin!(quattro::fail_after(Duration::from_secs(1), async { 7 }));
    /// assert!(quattro::Fail::get_mut(fut.as_mut()).is_some());
    /// fut.as_mut().await.unwrap();
    /// assert!(quattro::Fail::get_mut(fut.as_mut()).is_none()); // completed
    /// # }
    /// ```
    pub fn get_mut(self: Pin<&mut Self>) -> Option<Pin<&mut F>> {
        self.project().scoped.inner_pin_mut()
    }
}

impl<F: Future> Future for Fail<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().scoped.poll(cx)
    }
}

impl<F: Future> fmt::Debug for Fail<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_scoped(&self.scoped, "Fail", f)
    }
}
