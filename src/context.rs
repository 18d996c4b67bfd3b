//! The [`WithScope`] extension trait and its [`InCurrentScope`] future.
//!
//! They carry the context of the enclosing scopes and groups into a future that runs without
//! structure, such as one spawned with plain `tokio::spawn`.
//!
//! # Design
//!
//! The context lives in the per-poll frame ([`crate::frame`]) that scopes and groups install
//! around the code they poll. A task of a group gets it from its group. A task started with
//! plain `tokio::spawn` is polled by the runtime alone and gets nothing. The wrapper captures
//! the context where it is made, in a *carrier* node (see [`crate::node`]):
//!
//! - `carried`: the innermost scope handle or group in force there. Through it the whole chain
//!   of enclosing handles and groups is read live (deadlines that move, `cancel()`, shutdown
//!   requests), skipping the ones that finished, as the core does for a group's chain.
//! - the carrier's publication: the fixed deadline and the cancelled and shutdown flags of the
//!   frame there. Scopes without a handle (`move_on_after` and friends) have no shared state, so
//!   their deadlines can only be copied. They cannot move, so the copy reads as the original
//!   while the scope runs. The copy counts while `carried` has not finished, since everything
//!   inside a handle or group ends before it does. With no handle or group around the capture,
//!   it counts for the wrapper's whole life.
//!
//! On every poll (and drop) of the inner future, the wrapper pushes the carrier as the innermost
//! link of the frame in force there, and sets its `parent` to what encloses the wrapper *there*.
//! The deadline and shutdown lookups follow both links. Whatever decides that an enclosing scope
//! will drop the future follows `parent` only: nothing on the carried side ever drops it. A
//! shutdown *token* hangs from one chain, the carried one. So while the future is polled inside a
//! handle or group, a request there is forwarded to the carrier ([`forward`]).
//!
//! Two things are deliberately not carried:
//! - the `OWNER` flag: a group dropped inside the future gives its aborted tasks to an owner only
//!   when one really polls the wrapper (the frame in force where it is polled). In a plain task
//!   they are released, as in any plain task.
//! - the captured `CANCELLED` flag, into the frame flags: it is seen through the carrier's
//!   publication (a deadline of "now"), but a scope inside the future must not wait for an
//!   enclosing cancellation to drop it, since none will.

use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use pin_project::{pin_project, pinned_drop};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::frame::{self, Data, Enter};
use crate::node::{self, Node};

/// An extension trait that carries the context of enclosing scopes and groups into a future.
///
/// The context is the effective deadline and any graceful shutdown request. It follows the futures
/// that scopes and groups poll, and [`TaskGroup::spawn`] carries it into its tasks. A task started
/// with plain `tokio::spawn`, by your code or by a library, sees none of it:
/// [`current_effective_deadline`] returns `None` there and [`shutdown_requested`] never completes.
/// `fut.in_current_scope()` captures the context where it is called, and the returned
/// [`InCurrentScope`] installs that context on every poll of `fut`, wherever it runs. The name
/// follows tracing's `Instrument::in_current_span`, which does the same for a span.
///
/// Only the view is carried. Plain `tokio::spawn` is not structured: the task is not cancelled at
/// the deadline or with the scope, and it can outlive the scope. To tie a task's life to the scope,
/// spawn it in a [`TaskGroup`] instead. See [`InCurrentScope`] for exactly what is carried, and
/// what happens once the scope has ended.
///
/// This trait is implemented for every [`Future`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use quattro::{WithScope, current_effective_deadline, move_on_after};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// move_on_after(Duration::from_secs(5), async {
///     let deadline = current_effective_deadline();
///     assert!(deadline.is_some());
///
///     // A library spawns with plain `tokio::spawn`: the task sees nothing of the scope...
///     let plain = tokio::spawn(async { current_effective_deadline() });
///     assert_eq!(plain.await.unwrap(), None);
///
///     // ...unless the future carries the context it was made in.
///     let carried = tokio::spawn(async { current_effective_deadline() }.in_current_scope());
///     assert_eq!(carried.await.unwrap(), deadline);
/// })
/// .await;
/// # }
/// ```
///
/// [`TaskGroup`]: crate::TaskGroup
/// [`TaskGroup::spawn`]: crate::TaskGroup::spawn
/// [`current_effective_deadline`]: crate::current_effective_deadline
/// [`shutdown_requested`]: crate::shutdown_requested
pub trait WithScope: Future + Sized {
    /// Wraps the future so that it runs in the context of the scopes and groups around this call.
    ///
    /// The context is captured by this call, not when the future is first polled. Outside any scope
    /// or group nothing is captured or allocated, and the future runs in the context it is polled
    /// in, as it would unwrapped. See the [trait docs](WithScope) and [`InCurrentScope`] for what
    /// is carried.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use quattro::{CancelScope, WithScope, is_shutdown_requested};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let scope = CancelScope::new();
    /// let handle = scope.clone();
    /// let task = scope
    ///     .move_on(async move {
    ///         let task = tokio::spawn(async { is_shutdown_requested() }.in_current_scope());
    ///         handle.request_shutdown(Duration::from_secs(1));
    ///         task
    ///     })
    ///     .await
    ///     .unwrap();
    /// assert!(task.await.unwrap()); // the scope's request reached the spawned task
    /// # }
    /// ```
    fn in_current_scope(self) -> InCurrentScope<Self> {
        InCurrentScope::new(self)
    }
}

impl<F: Future> WithScope for F {}

/// Future returned by [`WithScope::in_current_scope`].
///
/// It runs a future in the context of the cancel scopes and task groups around the place where it
/// was created, wherever it is polled. Inside it, [`current_effective_deadline`],
/// [`is_shutdown_requested`], [`shutdown_requested`] and [`shutdown_token`] answer as they did
/// there. A scope or group created inside nests under that context: deadlines combine, and a group
/// carries them into its tasks. The context is installed on every poll of the inner future and
/// while it is dropped, so its destructors see it too.
///
/// # Examples
///
/// A worker started with plain `tokio::spawn` (as a library would) observes the shutdown of
/// the group around the spawn:
///
/// ```
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use quattro::{TaskGroup, WithScope};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let out = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
///     let worker = tokio::spawn(
///         async {
///             quattro::shutdown_requested().await;
///             "stopped"
///         }
///         .in_current_scope(),
///     );
///     tg.request_shutdown(Duration::from_secs(1));
///     Ok(worker.await.unwrap())
/// })
/// .await;
/// assert_eq!(out.unwrap(), "stopped");
/// # }
/// ```
///
/// # What is carried
///
/// - **Live**: the enclosing [`CancelScope`] handles and task groups. A later
///   [`set_deadline`](crate::CancelScope::set_deadline), [`cancel`](crate::CancelScope::cancel) or
///   [`request_shutdown`](crate::CancelScope::request_shutdown) on any of them is seen at once, as
///   in the code they enclose.
/// - **A copy**: the deadlines of enclosing scopes without a handle ([`move_on_after`],
///   [`fail_at`], ...), which have no shared state to read. They cannot move, so the copy matches
///   the original while those scopes run. The copy counts until the innermost handle or group
///   around the call finishes, since everything inside it has ended by then. With no handle or
///   group around the call, it counts for the future's whole life. For a deadline that ends with
///   its scope, give the scope a handle ([`CancelScope::with_timeout`] and
///   [`CancelScope::move_on`]).
///
/// # Once the scope has ended
///
/// A scope or group that has finished no longer counts. When the future runs on after the scopes
/// around its creation have ended, in a detached task or awaited again later, their deadlines and
/// cancellations drop out of the view. Scopes and groups further out that still run, such as a
/// server's group, still count. A shutdown request stays seen once made, as the tokens for it stay
/// cancelled.
///
/// # Not structured
///
/// Only the view is carried. The future is not dropped at the deadline or when a scope is
/// cancelled, and nobody awaits a task it runs in: plain `tokio::spawn` is not structured. Spawn it
/// in a [`TaskGroup`] to tie its life to the scope. A group dropped inside the future aborts its
/// tasks without waiting for them, as it does in any plain task.
///
/// Polled inside another scope or group, awaited in place or run by a task of a group, the future
/// sees both contexts: the earlier deadline, and the shutdown requests of either. Only the scopes
/// and groups around it *there* can drop it, and only they wait for the tasks of a group dropped
/// inside it.
///
/// # Panics
///
/// Panics if polled after it completed.
///
/// # Cancel safety
///
/// Dropping it drops the inner future at once, in the carried context. It does not wait for
/// anything.
///
/// [`current_effective_deadline`]: crate::current_effective_deadline
/// [`is_shutdown_requested`]: crate::is_shutdown_requested
/// [`shutdown_requested`]: crate::shutdown_requested
/// [`shutdown_token`]: crate::shutdown_token
/// [`CancelScope`]: crate::CancelScope
/// [`CancelScope::with_timeout`]: crate::CancelScope::with_timeout
/// [`CancelScope::move_on`]: crate::CancelScope::move_on
/// [`move_on_after`]: crate::move_on_after
/// [`fail_at`]: crate::fail_at
/// [`TaskGroup`]: crate::TaskGroup
#[pin_project(PinnedDrop)]
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct InCurrentScope<F> {
    /// `None` once it completed (it is dropped in the context, like a scope's inner future).
    #[pin]
    inner: Option<F>,
    /// The carrier node; `None` when nothing was captured. Lent to the frame during a poll.
    carrier: Option<Arc<Node>>,
    /// Whether the carrier's `parent` is set (it was last polled inside a handle or group).
    linked: bool,
    /// Forwards a shutdown request of the chain the future is polled in to the carrier, whose
    /// chain token hangs from the captured chain only (see [`forward`]).
    forward: Option<(Arc<Node>, Pin<Box<WaitForCancellationFutureOwned>>)>,
    /// The waker last handed to the carrier: a chain token made later inside (in a task of a
    /// group in the future) wakes the wrapper, so that it starts forwarding.
    waker: Option<Waker>,
}

impl<F> InCurrentScope<F> {
    fn new(inner: F) -> InCurrentScope<F> {
        InCurrentScope {
            inner: Some(inner),
            carrier: capture(),
            linked: false,
            forward: None,
            waker: None,
        }
    }

    /// Gets a reference to the inner future.
    ///
    /// Returns `None` once the inner future completed.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::WithScope;
    ///
    /// let fut = std::future::ready(7).in_current_scope();
    /// assert!(fut.get_ref().is_some());
    /// ```
    pub fn get_ref(&self) -> Option<&F> {
        self.inner.as_ref()
    }

    /// Gets a pinned mutable reference to the inner future.
    ///
    /// Returns `None` once the inner future completed.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::{InCurrentScope, WithScope};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut fut = std::pin::pin!(async { 7 }.in_current_scope());
    /// assert!(InCurrentScope::get_mut(fut.as_mut()).is_some());
    /// assert_eq!(fut.as_mut().await, 7);
    /// assert!(InCurrentScope::get_mut(fut.as_mut()).is_none()); // completed
    /// # }
    /// ```
    #[must_use]
    pub fn get_mut(self: Pin<&mut Self>) -> Option<Pin<&mut F>> {
        self.project().inner.as_pin_mut()
    }

    /// Consumes this wrapper, returning the inner future.
    ///
    /// Returns `None` once the inner future completed. The captured context is released.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::WithScope;
    ///
    /// let inner = std::future::ready(7).in_current_scope().into_inner();
    /// assert!(inner.is_some());
    /// ```
    pub fn into_inner(mut self) -> Option<F> {
        // The wrapper has a destructor, so the field is taken rather than moved out.
        self.inner.take()
    }
}

/// Captures the context in force: `None` (and no allocation) when there is nothing to carry.
fn capture() -> Option<Arc<Node>> {
    let data = frame::current();
    let flags = data.flags & (frame::CANCELLED | frame::SHUTDOWN);
    let captured = frame::with_link(|node| node.cloned());
    if captured.is_none() && data.fixed.is_none() && flags == 0 {
        return None;
    }
    // `data.local` is left behind: a timer armed in this task can't be leaned on elsewhere, and
    // its deadline is in `fixed` or in a link anyway.
    let carrier = Node::carrier(captured);
    carrier.publish(data.fixed, flags);
    Some(Arc::new(carrier))
}

impl<F: Future> Future for InCurrentScope<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let mut inner = this.inner;
        let Some(carrier) = this.carrier.as_ref() else {
            // Nothing captured: it runs in the context it is polled in, as it would unwrapped.
            return poll_inner(inner, cx);
        };
        node::register_waker_once(carrier, this.waker, cx.waker());
        let here = relink(carrier, this.linked);
        forward(carrier, here.as_ref(), this.forward, cx);
        let asked = carrier.shutdown.1.get().is_some();
        let (polled, drop_panic) = {
            let _enter = enter(this.carrier);
            let fut = inner.as_mut().as_pin_mut();
            let polled = fut
                .expect("`InCurrentScope` polled after it completed")
                .poll(cx);
            // A finished future is dropped at once, in the carried context. A destructor that
            // panics must not skip `finish` below: a wrapper captured inside would keep the
            // copied deadline for good.
            let drop_panic = polled
                .is_ready()
                .then(|| catch_unwind(AssertUnwindSafe(|| inner.set(None))).err())
                .flatten();
            (polled, drop_panic)
        };
        let carrier = this.carrier.as_ref().expect("given back by the frame");
        if polled.is_ready() {
            carrier.finish();
            *this.forward = None;
            if let Some(payload) = drop_panic {
                resume_unwind(payload);
            }
        } else if !asked {
            // A token may have been asked for inside during this poll.
            forward(carrier, here.as_ref(), this.forward, cx);
        }
        polled
    }
}

/// Polls the inner future; a finished one is dropped at once, in the frame in force.
#[inline]
fn poll_inner<F: Future>(mut inner: Pin<&mut Option<F>>, cx: &mut Context<'_>) -> Poll<F::Output> {
    let fut = inner.as_mut().as_pin_mut();
    let polled = fut
        .expect("`InCurrentScope` polled after it completed")
        .poll(cx);
    if polled.is_ready() {
        inner.set(None);
    }
    polled
}

/// Installs the carried context over the frame in force: the carrier as the innermost link,
/// and the shutdown flag seen at the capture. Nothing else of the frame changes: the timers
/// of the task can still be leaned on, and only a real owner around collects drains.
fn enter(carrier: &mut Option<Arc<Node>>) -> Enter<'_> {
    let shutdown = carrier
        .as_ref()
        .map_or(0, |node| node.published_flags() & frame::SHUTDOWN);
    let mut enter = Enter::narrow(
        |outer| Data {
            flags: outer.flags | shutdown,
            ..*outer
        },
        None,
    );
    enter.push_link(carrier);
    enter
}

/// Makes the carrier's parent the innermost handle or group where it is polled now (what can
/// drop it), and returns that node. In a plain task there is none, and nothing is written.
fn relink(carrier: &Node, linked: &mut bool) -> Option<Arc<Node>> {
    let here = frame::with_link(|node| node.cloned());
    if here.is_some() || *linked {
        carrier.link_to_current();
        *linked = here.is_some();
    }
    here
}

/// Polled inside a handle or group, the future sees that chain's shutdown requests through the
/// carrier's `parent`, except in a token: a token hangs from one chain, the captured one. So
/// once a token hangs from the carrier, a request in the chain it is polled in is forwarded as
/// a request for the carrier itself (which, like every request, stays).
fn forward(
    carrier: &Node,
    here: Option<&Arc<Node>>,
    slot: &mut Option<(Arc<Node>, Pin<Box<WaitForCancellationFutureOwned>>)>,
    cx: &mut Context<'_>,
) {
    let here =
        here.filter(|_| carrier.shutdown.1.get().is_some() && !carrier.own_shutdown_requested());
    let Some(here) = here else {
        *slot = None;
        return;
    };
    if !slot
        .as_ref()
        .is_some_and(|(from, _)| Arc::ptr_eq(from, here))
    {
        // Polled in a new place: watch the chain there.
        let requested = Box::pin(here.chain_shutdown_token().cancelled_owned());
        *slot = Some((here.clone(), requested));
    }
    let (_, requested) = slot.as_mut().expect("set above");
    if requested.as_mut().poll(cx).is_ready() {
        carrier.request_shutdown();
        *slot = None;
    }
}

#[pinned_drop]
impl<F> PinnedDrop for InCurrentScope<F> {
    fn drop(self: Pin<&mut Self>) {
        let mut this = self.project();
        if this.inner.is_none() {
            return;
        }
        let Some(carrier) = this.carrier.as_ref() else {
            return;
        };
        // Dropped before it completed: its destructors run in the carried context too, and
        // `finish` runs even if one of them panics.
        drop(relink(carrier, this.linked));
        let dropped = {
            let _enter = enter(this.carrier);
            catch_unwind(AssertUnwindSafe(|| this.inner.set(None)))
        };
        if let Some(carrier) = this.carrier.as_ref() {
            carrier.finish();
        }
        if let Err(payload) = dropped {
            resume_unwind(payload);
        }
    }
}

impl<F> fmt::Debug for InCurrentScope<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let carrier = self.carrier.as_ref();
        f.debug_struct("InCurrentScope")
            .field("captured", &carrier.is_some())
            .field(
                "deadline",
                &carrier.and_then(|node| frame::carried_deadline(node)),
            )
            .field(
                "shutdown_requested",
                &carrier.is_some_and(|node| node.shutdown_requested_in_chain()),
            )
            .field("completed", &self.inner.is_none())
            .finish()
    }
}
