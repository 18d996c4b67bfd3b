//! The [`Scoped`] future, which runs a cancel scope under [`MoveOn`] and [`Fail`].
//!
//! A scope keeps its deadline in the future itself and allocates nothing unless a
//! [`CancelScope`] handle is asked for. On every poll it reads the frame in force
//! ([`crate::frame`]) and installs its own around the inner future, with the earlier deadline of
//! the two. It also decides afresh whether it needs a timer of its own. It needs none when an
//! enclosing scope polled by the same task has an earlier or equal deadline, since that one
//! fires first and wins the tie.
//!
//! [`MoveOn`]: super::MoveOn
//! [`Fail`]: super::Fail
//! [`CancelScope`]: crate::CancelScope

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker, ready};

use pin_project::{pin_project, pinned_drop};
use tokio::task::coop;
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::Cancelled;
use crate::frame::{self, Data, Drains, Enter, HandUp, earliest};
use crate::node::{self, CANCELLED, CAUGHT, ENTERED, FINISHED, Node, SHUTDOWN, TOKENS_CHANGED};

/// Where a [`Scoped`] future is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Built, not yet polled.
    Idle,
    /// The inner future runs.
    Running,
    /// The inner future is gone; aborted tasks handed to the scope are being awaited.
    Draining,
    /// The output was returned.
    Done,
}

/// Runs a future inside a cancel scope; yields its output or why the scope cancelled it.
///
/// Everything a handle needs lives behind one pointer, made when a handle is asked for: a
/// scope without one stays small, which matters when scopes nest (each layer holds the next).
#[pin_project(PinnedDrop, project = ScopedProj)]
pub(crate) struct Scoped<F: Future> {
    #[pin]
    inner: Option<F>,
    /// The deadline while there is no handle; with one, the node's deadline is used instead.
    deadline: Option<Instant>,
    /// The handle's side, made when a handle is asked for.
    handle: OnceLock<Box<HandleSide>>,
    /// The timer, armed at the first `Pending` when no enclosing scope covers the deadline.
    #[pin]
    sleep: Option<Sleep>,
    /// The waker the timer was last polled with (see [`registered`]); `NONE` when not polled.
    timer_waker: (usize, usize),
    /// Aborted tasks of groups dropped inside the scope, awaited before it completes.
    drains: Drains,
    /// The output, kept while drains are awaited.
    output: Option<Result<F::Output, Cancelled>>,
    phase: Phase,
    /// The scope ended by its own cancellation.
    caught: bool,
}

/// The part of a scope that only a scope with a handle needs.
struct HandleSide {
    node: Arc<Node>,
    /// A clone of `node` that the poll lends to the frame as its link.
    link: Option<Arc<Node>>,
    /// The waker last handed to the node, so that it is replaced only when it changes.
    waker: Option<Waker>,
    tokens: Vec<Pin<Box<WaitForCancellationFutureOwned>>>,
}

impl HandleSide {
    fn new(node: Arc<Node>) -> Box<HandleSide> {
        Box::new(HandleSide {
            link: Some(node.clone()),
            node,
            waker: None,
            tokens: Vec::new(),
        })
    }
}

impl<F: Future> Scoped<F> {
    pub(crate) fn new(deadline: Option<Instant>, inner: F) -> Scoped<F> {
        Scoped {
            inner: Some(inner),
            deadline,
            handle: OnceLock::new(),
            sleep: None,
            timer_waker: NONE,
            drains: Drains::default(),
            output: None,
            phase: Phase::Idle,
            caught: false,
        }
    }

    pub(crate) fn with_node(node: Arc<Node>, inner: F) -> Scoped<F> {
        let scoped = Scoped::new(None, inner);
        let _ = scoped.handle.set(HandleSide::new(node));
        scoped
    }

    /// The scope's shared state, made now if no handle was asked for before.
    pub(super) fn node(&self) -> &Arc<Node> {
        let side = self.handle.get_or_init(|| {
            let node = Node::new(frame::encode_opt(self.deadline));
            let mut flags = 0;
            if self.phase != Phase::Idle {
                flags |= ENTERED;
            }
            if self.caught {
                flags |= CAUGHT;
            }
            if self.phase == Phase::Done {
                flags |= FINISHED;
            }
            node.set_flags(flags);
            HandleSide::new(Arc::new(node))
        });
        &side.node
    }

    pub(super) fn get_ref(&self) -> Option<&F> {
        self.inner.as_ref()
    }

    pub(super) fn inner_pin_mut(self: Pin<&mut Self>) -> Option<Pin<&mut F>> {
        self.project().inner.as_pin_mut()
    }

    pub(super) fn into_inner(mut self) -> Option<F> {
        // `Scoped` has a destructor, so the field is taken rather than moved out.
        self.inner.take()
    }
}

/// The frame the inner future runs in: the outer one narrowed by this scope. `fixed` is the
/// scope's deadline when it has no handle; a handle's node is pushed as a link instead, read
/// live.
#[inline]
fn inner_frame(
    outer: &Data,
    fixed: Option<Instant>,
    own: Option<Instant>,
    node_state: u32,
    task: usize,
) -> Data {
    let mut flags = outer.flags | frame::OWNER;
    if node_state & SHUTDOWN != 0 {
        flags |= frame::SHUTDOWN;
    }
    Data {
        fixed: earliest(outer.fixed, fixed),
        local: earliest(outer.local_for(task), own),
        task,
        flags,
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = Result<F::Output, Cancelled>;

    #[track_caller]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        match *this.phase {
            Phase::Idle => {
                if let Some(side) = this.handle.get() {
                    side.node.enter();
                }
                *this.phase = Phase::Running;
            }
            Phase::Running => {}
            Phase::Draining => return poll_drain(this, cx),
            Phase::Done => panic!("a cancel scope future was polled after it completed"),
        }
        let mut side = this.handle.get_mut();
        let entry = Entry::read(side.as_deref().map(|side| &**side), *this.deadline, cx);
        // The inner future is polled first: a future that completes without suspending returns
        // its value even if the scope was cancelled meanwhile (cancellation is delivered at a
        // suspension point, as in Trio and `tokio::time::timeout`).
        let outer = frame::current();
        let data = entry.frame(&outer);
        let polled = if side.is_none() && data == outer {
            // Inside a scope with no later deadline, polled by the same task, this one changes
            // nothing in the frame: nothing to install. (A group dropped in here hands its
            // tasks to that enclosing owner, whose own cancellation is the only one that can
            // cut this scope short.)
            poll_bare(this.inner.as_mut(), cx)
        } else {
            let link = side.as_mut().map(|side| &mut side.link);
            poll_inner(this.inner.as_mut(), link, this.drains, &outer, &data, cx)
        };
        match polled {
            Poll::Ready(value) => on_ready(this, value, cx),
            // The frame around the scope is back in force.
            Poll::Pending => poll_cancel(this, &entry, &outer, cx),
        }
    }
}

/// The inner future completed: finishes at once, or once the drains handed up are empty.
///
/// Apart from the poll so that its temporaries are not on the stack while the inner future
/// runs: nested scopes add up, and a debug build keeps every temporary of a function.
fn on_ready<F: Future>(
    this: ScopedProj<'_, F>,
    value: F::Output,
    cx: &mut Context<'_>,
) -> Poll<Result<F::Output, Cancelled>> {
    if this.drains.is_empty() {
        finish(this);
        return Poll::Ready(Ok(value));
    }
    *this.output = Some(Ok(value));
    *this.phase = Phase::Draining;
    poll_drain(this, cx)
}

/// What a poll of the scope reads before polling the inner future.
struct Entry {
    /// The scope's deadline when it has no handle (a handle's is read live, as a link).
    fixed: Option<Instant>,
    /// The scope's deadline.
    own: Option<Instant>,
    /// The state of the scope's node, if it has one.
    node_state: u32,
    /// Identifies the task polling the scope (its waker's data pointer).
    task: usize,
}

impl Entry {
    #[inline]
    fn read(side: Option<&HandleSide>, deadline: Option<Instant>, cx: &Context<'_>) -> Entry {
        let (fixed, own, node_state) = match side {
            Some(side) => {
                // Linked to what encloses it now, also after a move to another task.
                side.node.link_to_current();
                (None, side.node.deadline(), side.node.state())
            }
            None => (deadline, deadline, 0),
        };
        Entry {
            fixed,
            own,
            node_state,
            task: cx.waker().data() as usize,
        }
    }

    /// The frame the inner future runs in, made of the one around the scope.
    #[inline]
    fn frame(&self, outer: &Data) -> Data {
        inner_frame(outer, self.fixed, self.own, self.node_state, self.task)
    }
}

/// Polls the inner future in the scope's frame; a finished one is dropped there too, so that
/// its destructors still see the scope.
#[inline]
fn poll_inner<F: Future>(
    mut inner: Pin<&mut Option<F>>,
    link: Option<&mut Option<Arc<Node>>>,
    drains: &mut Drains,
    outer: &Data,
    data: &Data,
    cx: &mut Context<'_>,
) -> Poll<F::Output> {
    let mut enter = Enter::over(*outer, *data, Some(drains));
    if let Some(link) = link {
        enter.push_link(link);
    }
    // As in `poll_bare`, written out: one frame less per nested scope in a debug build.
    let fut = inner.as_mut().as_pin_mut();
    let polled = fut.expect("inner future present while running").poll(cx);
    if polled.is_ready() {
        inner.set(None);
    }
    polled
}

/// Polls the inner future in the frame in force; a finished one is dropped there too.
#[inline]
fn poll_bare<F: Future>(mut inner: Pin<&mut Option<F>>, cx: &mut Context<'_>) -> Poll<F::Output> {
    let fut = inner.as_mut().as_pin_mut();
    let polled = fut.expect("inner future present while running").poll(cx);
    if polled.is_ready() {
        inner.set(None);
    }
    polled
}

/// Installs the scope's frame, with its node as a link when it has a handle.
fn enter<'a>(
    data: Data,
    handle: &'a mut OnceLock<Box<HandleSide>>,
    drains: &'a mut Drains,
) -> Enter<'a> {
    let mut enter = Enter::new(data, Some(drains));
    if let Some(side) = handle.get_mut() {
        enter.push_link(&mut side.link);
    }
    enter
}

/// After the inner future returned `Pending`: arms the timer, and decides whether the scope is
/// cancelled (by its deadline or its handle) and the cancellation is its own to claim.
fn poll_cancel<F: Future>(
    mut this: ScopedProj<'_, F>,
    entry: &Entry,
    outer: &Data,
    cx: &mut Context<'_>,
) -> Poll<Result<F::Output, Cancelled>> {
    if !this.drains.is_empty() {
        // Release the drains that emptied; the rest wake this task when they do.
        let _ = this.drains.poll(cx);
    }
    let (own, cancel) = match this.handle.get_mut() {
        None => (entry.own, false),
        Some(side) => poll_handle(side, entry.own, cx),
    };

    // One timer: none when a scope polled by this task has an earlier or equal deadline.
    let covered = outer.local_for(entry.task);
    let fired = match own {
        Some(at) if covered.is_none_or(|covered| at < covered) => {
            let waker = registered(cx.waker());
            match this.sleep.as_mut().as_pin_mut() {
                // One timer entry for the scope's whole life: moving the deadline resets it.
                Some(armed) if armed.deadline() != at => {
                    armed.reset(at);
                    *this.timer_waker = NONE;
                }
                Some(_) => {}
                None => arm(this.sleep.as_mut(), at),
            }
            let sleep = this.sleep.as_mut().as_pin_mut().expect("armed above");
            if *this.timer_waker == waker {
                // The timer holds this task's waker already: polling it again would only
                // register the same waker again. Whether it fired is one load.
                sleep.is_elapsed()
            } else {
                *this.timer_waker = waker;
                poll_timer(sleep, cx).is_ready()
            }
        }
        _ => {
            if this.sleep.is_some() {
                this.sleep.set(None);
                *this.timer_waker = NONE;
            }
            false
        }
    };
    if !fired && !cancel {
        return Poll::Pending;
    }
    // An enclosing scope that is cancelled too claims the cancellation: it drops this future,
    // and its timer or `cancel()` has woken (or will wake) this task. A fixed deadline in the
    // frame was set by a scope on this poll's stack (a task edge resets it), so when it has
    // passed, that scope (or one further out with an earlier timer) claims it as soon as this
    // poll returns to it, even when a combinator gave this future a waker of its own.
    let outer_expired = outer.flags & frame::CANCELLED != 0
        || outer.fixed.is_some_and(|fixed| fixed <= Instant::now())
        || covered.is_some_and(|covered| covered <= Instant::now())
        || frame::links_expired();
    if outer_expired {
        return Poll::Pending;
    }

    *this.caught = true;
    let err = if cancel {
        Cancelled::cancel_called()
    } else {
        Cancelled::deadline()
    };
    if let Some(side) = this.handle.get() {
        if fired {
            side.node.mark_deadline_reached();
        }
        side.node.set_flags(CAUGHT);
    }
    tracing::debug!(deadline = ?own, "cancel scope cancelled");
    {
        // The inner future's destructors run in the scope's frame, now cancelled.
        let mut data = entry.frame(outer);
        data.flags |= frame::CANCELLED;
        let _enter = enter(data, this.handle, this.drains);
        this.inner.set(None);
    }
    *this.output = Some(Err(err));
    *this.phase = Phase::Draining;
    poll_drain(this, cx)
}

/// The handle's part of a `Pending` poll: registers the waker, picks up linked tokens, and
/// returns the deadline and whether the scope is cancelled, as they are now.
#[cold]
fn poll_handle(
    side: &mut HandleSide,
    before: Option<Instant>,
    cx: &mut Context<'_>,
) -> (Option<Instant>, bool) {
    let node = &side.node;
    // Registered before the state is read: a `cancel()` or `set_deadline()` from elsewhere
    // either finds this waker, or is seen below.
    node::register_waker_once(node, &mut side.waker, cx.waker());
    // A handle may have moved the deadline or cancelled the scope during the poll.
    let own = node.deadline();
    if own != before {
        // Scopes inside leaned on the old deadline: poll again so that they decide their
        // timers afresh.
        cx.waker().wake_by_ref();
    }
    let mut cancel = node.is_cancel_requested();
    if node.state() & TOKENS_CHANGED != 0 && node.take_flags(TOKENS_CHANGED) != 0 {
        side.tokens.extend(
            node.take_linked_tokens()
                .into_iter()
                .map(|token| Box::pin(token.cancelled_owned())),
        );
    }
    if side
        .tokens
        .iter_mut()
        .any(|t| t.as_mut().poll(cx).is_ready())
    {
        node.cancel();
        cancel = true;
    }
    (own, cancel)
}

/// No waker: a vtable is never at address 0.
const NONE: (usize, usize) = (0, 0);

/// Identifies a waker (as `Waker::will_wake` does: its data and vtable), to tell whether the
/// timer already holds it.
fn registered(waker: &Waker) -> (usize, usize) {
    (waker.data() as usize, waker.vtable() as *const _ as usize)
}

/// Arms the scope's one timer entry.
#[track_caller]
fn arm(mut sleep: Pin<&mut Option<Sleep>>, at: Instant) {
    // Outside a runtime with the time driver tokio panics; say which future needed one.
    // (Checking up front would cost a clone of the runtime handle every time.) The timer is
    // built in place: moving it out of the closure would copy it twice.
    let armed = std::panic::catch_unwind(AssertUnwindSafe(|| sleep.set(Some(sleep_until(at)))));
    if armed.is_err() {
        panic!(
            "a CancelScope with a deadline (move_on/fail, move_on_after, fail_at, ...) \
             must be polled inside a tokio runtime with the time driver enabled"
        );
    }
}

/// Polls the timer, unconstrained by tokio's coop budget when it is used up (as
/// `tokio::time::timeout` does when the inner future used it): a busy inner future must not
/// starve its deadline. A timer check costs next to nothing, so it is not worth reading the
/// budget before every poll of the inner future to tell who used it.
fn poll_timer(sleep: Pin<&mut Sleep>, cx: &mut Context<'_>) -> Poll<()> {
    if !coop::has_budget_remaining() {
        let mut unconstrained = coop::unconstrained(sleep);
        Pin::new(&mut unconstrained).poll(cx)
    } else {
        sleep.poll(cx)
    }
}

/// Waits for the tasks handed to this scope, then finishes and yields the output.
fn poll_drain<F: Future>(
    this: ScopedProj<'_, F>,
    cx: &mut Context<'_>,
) -> Poll<Result<F::Output, Cancelled>> {
    ready!(this.drains.poll(cx));
    let output = this.output.take().expect("output stored before draining");
    finish(this);
    Poll::Ready(output)
}

/// Marks the scope done: drops its timer and lets go of the task's waker.
#[inline]
fn finish<F: Future>(this: ScopedProj<'_, F>) {
    *this.phase = Phase::Done;
    let mut sleep = this.sleep;
    if sleep.is_some() {
        sleep.set(None);
    }
    if let Some(side) = this.handle.get_mut() {
        side.node.finish();
        if side.waker.take().is_some() {
            side.node.forget_waker();
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
        // Dropped from outside (an enclosing scope, a select, a failing group). Whatever was
        // handed to this scope goes to the enclosing owner, also if a destructor below panics.
        let mut hand_up = HandUp(std::mem::take(this.drains));
        if this.inner.is_some() {
            let (fixed, state) = match this.handle.get() {
                Some(side) => (None, side.node.state()),
                None => (*this.deadline, 0),
            };
            let data = inner_frame(&frame::current(), fixed, None, state, 0);
            let _enter = enter(data, this.handle, &mut hand_up.0);
            this.inner.set(None);
        }
        if let Some(side) = this.handle.get() {
            let node = &side.node;
            if *this.phase == Phase::Running
                && node.state() & CANCELLED == 0
                && node.deadline_passed()
            {
                // Dropped by an enclosing scope whose deadline tied with ours (the outer one
                // claims the tie): our deadline passed too, so the token handed out by
                // `cancellation_token()` must fire, as `is_cancelled()` says.
                node.mark_deadline_reached();
            }
            node.finish();
            node.forget_waker();
        }
    }
}

/// Shows the scope's state and the phase of the future.
pub(super) fn debug_scoped<F: Future>(
    scoped: &Scoped<F>,
    name: &str,
    f: &mut fmt::Formatter<'_>,
) -> fmt::Result {
    let (deadline, cancelled) = match scoped.handle.get() {
        Some(side) => (side.node.deadline(), side.node.is_cancelled()),
        None => (
            scoped.deadline,
            scoped.deadline.is_some_and(|at| at <= Instant::now()),
        ),
    };
    f.debug_struct(name)
        .field("phase", &scoped.phase)
        .field("deadline", &deadline)
        .field("is_cancelled", &cancelled)
        .field("cancelled_caught", &scoped.caught)
        .finish()
}
