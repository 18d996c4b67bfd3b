//! Graceful shutdown of cancel scopes and task groups.
//!
//! Deadlines and `cancel()` are hard: the future is dropped where it stands. A server also needs a
//! soft phase: stop taking work, finish what is in progress, then exit. Any cancel scope or task
//! group can be asked to shut down with a grace period:
//!
//! - **The request** reaches the code running inside: the scope's future, the group's body, every
//!   task of the group, and every task and scope nested in those. That code observes it with
//!   [`shutdown_requested`] (a future, for example in a `select!` between two requests of a
//!   connection), [`is_shutdown_requested`] (a cheap check) or [`shutdown_token`] (a
//!   `CancellationToken`). The request itself drops nothing. A task started with plain
//!   `tokio::spawn` is not inside and never sees the request, unless its future was wrapped with
//!   [`in_current_scope`](crate::WithScope::in_current_scope).
//! - **The grace period** starts with the request. Whatever has not finished when it runs out is
//!   cancelled, with the usual structured guarantee: every task of a group has been dropped before
//!   the group's or scope's future returns. The end of the grace is the hard deadline of the scope
//!   or group, so [`current_effective_deadline`] inside returns it, ready to be passed on. Work
//!   that finishes within the grace completes normally, with its value or its errors.
//! - **Triggers** are an explicit call ([`CancelScope::request_shutdown`],
//!   [`TaskGroup::request_shutdown`]), a soft deadline ([`MoveOn::shutdown_at`],
//!   [`GroupScope::shutdown_after`], …) or any future, such as `tokio::signal::ctrl_c()`
//!   ([`MoveOn::shutdown_on`], [`GroupScope::shutdown_on`], …).
//!
//! When the grace runs out, a cancel scope reports its own cancellation:
//! [`CancelScope::cancelled_caught`] returns `true`, `move_on` yields `None`, and `fail` yields a
//! [`Cancelled`] whose `is_deadline_reached()` is `true`. A task group returns a [`GroupError`]
//! whose `is_cancelled()` is `true`.
//!
//! # Examples
//!
//! Run a server until a trigger fires (here a timer standing in for `ctrl_c()`), then give its
//! connections 5 seconds to finish the request they are serving:
//!
//! ```
//! use std::time::Duration;
//! use quattro::TaskGroup;
//! use tokio::time::sleep;
//!
//! async fn connection(id: u32) -> Result<u32, std::io::Error> {
//!     let mut served = 0;
//!     loop {
//!         tokio::select! {
//!             // Between two requests: stop when asked to.
//!             _ = quattro::shutdown_requested() => return Ok(served),
//!             _ = sleep(Duration::from_millis(300)) => {} // the next request arrives
//!         }
//!         sleep(Duration::from_millis(500 * u64::from(id))).await; // serve it
//!         served += 1;
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let ctrl_c = sleep(Duration::from_secs(2)); // stands in for `tokio::signal::ctrl_c()`
//! let served = TaskGroup::scope(|tg| async move {
//!     let handles: Vec<_> = (1..=3).map(|id| tg.spawn(connection(id))).collect();
//!     let mut total = 0;
//!     for handle in handles {
//!         total += handle.await.unwrap_or(0);
//!     }
//!     Ok(total)
//! })
//! .shutdown_on(ctrl_c, Duration::from_secs(5))
//! .await;
//! assert!(served.is_ok()); // every connection finished within the grace
//! # }
//! ```
//!
//! [`current_effective_deadline`]: crate::current_effective_deadline
//! [`CancelScope::request_shutdown`]: crate::CancelScope::request_shutdown
//! [`CancelScope::cancelled_caught`]: crate::CancelScope::cancelled_caught
//! [`TaskGroup::request_shutdown`]: crate::TaskGroup::request_shutdown
//! [`GroupScope::shutdown_on`]: crate::GroupScope::shutdown_on
//! [`GroupScope::shutdown_after`]: crate::GroupScope::shutdown_after
//! [`MoveOn::shutdown_at`]: crate::MoveOn::shutdown_at
//! [`MoveOn::shutdown_on`]: crate::MoveOn::shutdown_on
//! [`Cancelled`]: crate::Cancelled
//! [`GroupError`]: crate::GroupError

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{Ordering, fence};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use pin_project::pin_project;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::frame::{self, Carriers, SHUTDOWN as FRAME_SHUTDOWN};
use crate::node::{Node, SHUTDOWN};

mod trigger;

pub use trigger::{ShutdownOn, SoftDeadline};

impl Node {
    /// Records a shutdown request for this node and fires its tokens.
    pub(crate) fn request_shutdown(&self) {
        self.set_flags(SHUTDOWN);
        // Pairs with the fence in `armed_token`: either it sees the bit, or this sees its
        // token.
        fence(Ordering::SeqCst);
        for token in [&self.shutdown.0, &self.shutdown.1] {
            if let Some(token) = token.get() {
                token.cancel();
            }
        }
    }

    /// Whether a shutdown was requested for this node itself.
    pub(crate) fn own_shutdown_requested(&self) -> bool {
        self.state() & SHUTDOWN != 0
    }

    /// Whether a shutdown was requested for this node or any node enclosing it, including, for
    /// a carrier, the chain it was captured in (see [`crate::context`]).
    pub(crate) fn shutdown_requested_in_chain(&self) -> bool {
        self.requested_in_chain(&mut Carriers::default())
    }

    fn requested_in_chain(&self, seen: &mut Carriers) -> bool {
        if self.shutdown_requested_here(seen) {
            return true;
        }
        let mut next = self.parent();
        while let Some(node) = next {
            if node.shutdown_requested_here(seen) {
                return true;
            }
            next = node.parent();
        }
        false
    }

    /// This node's own request, or, for a carrier, one in the chain it was captured in (each
    /// carrier's chain walked once, see [`Carriers`]).
    #[inline]
    fn shutdown_requested_here(&self, seen: &mut Carriers) -> bool {
        self.own_shutdown_requested()
            || self
                .carried()
                .is_some_and(|captured| seen.first_visit(self) && captured.requested_in_chain(seen))
    }

    /// Where a node's chain token hangs: the parent's, or for a carrier the token of the chain
    /// it was captured in. (A carrier's future also sees the requests of the chain it is polled
    /// in; its wrapper forwards those as a request for the carrier itself.)
    fn token_parent(&self) -> Option<Arc<Node>> {
        match self.carried() {
            Some(captured) => Some(captured.clone()),
            None => self.parent(),
        }
    }

    /// The token in `cell` (one of this node's), created with `init` if missing, and
    /// cancelled if this node's request came first.
    fn armed_token<'a>(
        &self,
        cell: &'a OnceLock<CancellationToken>,
        init: impl FnOnce() -> CancellationToken,
    ) -> &'a CancellationToken {
        let token = cell.get_or_init(init);
        // Pairs with the fence in `request_shutdown`.
        fence(Ordering::SeqCst);
        if self.own_shutdown_requested() {
            token.cancel();
        }
        token
    }

    /// The token that fires on this node's own request.
    pub(crate) fn own_shutdown_token(&self) -> &CancellationToken {
        self.armed_token(&self.shutdown.0, CancellationToken::new)
    }

    /// The token that fires on a request for this node or any enclosing one: a child of the
    /// parent's (for a carrier, of the chain it was captured in; see [`Node::token_parent`]). Created on demand, for the missing ancestors too (iteratively: chains can be
    /// thousands of nodes deep). Only for entered nodes, whose parent is known.
    pub(crate) fn chain_shutdown_token(&self) -> CancellationToken {
        if let Some(token) = self.shutdown.1.get() {
            return token.clone();
        }
        // The nearest enclosing node that has its token, and the ones below it that do not.
        let mut missing = Vec::new();
        let mut token = None;
        let mut next = self.token_parent();
        while let Some(node) = next {
            if let Some(found) = node.shutdown.1.get() {
                token = Some(found.clone());
                break;
            }
            // A scope polled inside a future captured inside it closes a cycle: the chain
            // ends where it comes back.
            if std::ptr::eq(&*node, self) || missing.iter().any(|m| Arc::ptr_eq(m, &node)) {
                break;
            }
            next = node.token_parent();
            missing.push(node);
        }
        for node in missing.into_iter().rev() {
            token = Some(
                node.armed_token(&node.shutdown.1, || {
                    token.map_or_else(CancellationToken::new, |t| t.child_token())
                })
                .clone(),
            );
            node.wake_forwarding_carrier();
        }
        let token = self
            .armed_token(&self.shutdown.1, || {
                token.map_or_else(CancellationToken::new, |t| t.child_token())
            })
            .clone();
        self.wake_forwarding_carrier();
        token
    }

    /// A carrier's chain token hangs from the captured chain; its wrapper forwards requests
    /// of the chain it is polled in, once it sees the token. Made now, maybe in another task
    /// (of a group inside the wrapped future), the token wakes the wrapper to start forwarding.
    fn wake_forwarding_carrier(&self) {
        if self.carried().is_some() {
            self.wake();
        }
    }
}

/// Returns `true` if a graceful shutdown has been requested for the calling code.
///
/// A request counts when it is made for any cancel scope or task group that encloses the caller,
/// also across task boundaries: a task of a group sees the requests for its group and for every
/// scope and group around the group. Outside any scope or group this returns `false`.
///
/// The check is cheap and does not allocate, so it suits loops that look between two units of
/// work.
///
/// A task started with plain `tokio::spawn`, by your code or inside a library, sees no enclosing
/// scope or group, so this returns `false` there. Spawn it with
/// [`TaskGroup::spawn`](crate::TaskGroup::spawn) instead, which also cuts the task at the end of
/// the grace. When a library does the spawning, wrap its future with
/// [`in_current_scope`](crate::WithScope::in_current_scope), which carries the request and the
/// deadline into the task.
///
/// # Examples
///
/// ```
/// use quattro::{CancelScope, is_shutdown_requested};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let scope = CancelScope::new();
/// let handle = scope.clone();
/// let served = scope
///     .move_on(async move {
///         let mut served = 0;
///         while !is_shutdown_requested() {
///             served += 1; // serve one request
///             if served == 3 {
///                 handle.request_shutdown(std::time::Duration::from_secs(5)); // from anywhere
///             }
///         }
///         served
///     })
///     .await;
/// assert_eq!(served, Some(3));
/// # }
/// ```
#[must_use]
pub fn is_shutdown_requested() -> bool {
    frame::current().flags & FRAME_SHUTDOWN != 0
        || frame::with_link(|node| node.is_some_and(|node| node.shutdown_requested_in_chain()))
}

/// Waits until a graceful shutdown is requested for the calling code.
///
/// The future completes at once if a request was already made. See [`is_shutdown_requested`] for
/// which requests count. The enclosing scopes and groups are looked up when the future is created,
/// or on its first poll if it was created outside any. Outside any scope or group it never
/// completes. The first call in a scope or group allocates its token, and later calls clone it.
///
/// A task started with plain `tokio::spawn`, by your code or inside a library, sees no enclosing
/// scope or group, so this future never completes there. Spawn it with
/// [`TaskGroup::spawn`](crate::TaskGroup::spawn) instead, which also cuts the task at the end of
/// the grace. When a library does the spawning, wrap its future with
/// [`in_current_scope`](crate::WithScope::in_current_scope), which carries the request and the
/// deadline into the task.
///
/// # Examples
///
/// A connection loop that stops between two requests:
///
/// ```
/// use std::time::Duration;
/// use quattro::CancelScope;
/// use tokio::time::sleep;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let scope = CancelScope::new();
/// let handle = scope.clone();
/// tokio::spawn(async move {
///     sleep(Duration::from_secs(1)).await;
///     handle.request_shutdown(Duration::from_secs(5));
/// });
/// let served = scope
///     .move_on(async {
///         let mut served = 0;
///         loop {
///             tokio::select! {
///                 _ = quattro::shutdown_requested() => break served,
///                 _ = sleep(Duration::from_millis(300)) => served += 1,
///             }
///         }
///     })
///     .await;
/// assert_eq!(served, Some(3));
/// assert!(!scope.cancelled_caught()); // finished within the grace
/// # }
/// ```
///
/// # Cancel safety
///
/// This method is cancel safe. Dropping the future loses nothing, and a new `shutdown_requested()`
/// completes at once after a request was made.
pub fn shutdown_requested() -> ShutdownRequested {
    ShutdownRequested {
        wait: current_wait(),
        looked_up: false,
    }
}

fn current_wait() -> Option<WaitForCancellationFutureOwned> {
    frame::with_link(|node| node.map(|node| node.chain_shutdown_token().cancelled_owned()))
}

/// Returns a `CancellationToken` that is cancelled when a graceful shutdown reaches the caller.
///
/// See [`is_shutdown_requested`] for which requests count. The token is a child of the one the
/// crate watches, so cancelling it does not request a shutdown. Outside any scope or group it is a
/// fresh token that nothing cancels.
///
/// A task started with plain `tokio::spawn`, by your code or inside a library, sees no enclosing
/// scope or group, so the token it gets is never cancelled there. Spawn it with
/// [`TaskGroup::spawn`](crate::TaskGroup::spawn) instead, which also cuts the task at the end of
/// the grace. When a library does the spawning, wrap its future with
/// [`in_current_scope`](crate::WithScope::in_current_scope), which carries the request and the
/// deadline into the task.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use quattro::CancelScope;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let scope = CancelScope::new();
/// let handle = scope.clone();
/// let out = scope
///     .move_on(async move {
///         let token = quattro::shutdown_token();
///         handle.request_shutdown(Duration::from_secs(1));
///         token.cancelled().await; // e.g. inside a library that takes a token
///         "stopped"
///     })
///     .await;
/// assert_eq!(out, Some("stopped"));
/// # }
/// ```
#[must_use]
pub fn shutdown_token() -> CancellationToken {
    frame::with_link(|node| {
        node.map_or_else(CancellationToken::new, |node| {
            node.chain_shutdown_token().child_token()
        })
    })
}

/// Future returned by [`shutdown_requested`].
///
/// # Examples
///
/// Created outside any scope, it looks for one where it is first polled:
///
/// ```
/// use std::time::Duration;
/// use quattro::{CancelScope, ShutdownRequested};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let requested: ShutdownRequested = quattro::shutdown_requested();
/// let scope = CancelScope::new();
/// scope.request_shutdown(Duration::from_secs(1)); // before it runs: allowed
/// let out = scope.move_on(async { requested.await; "asked to stop" }).await;
/// assert_eq!(out, Some("asked to stop"));
/// # }
/// ```
///
/// # Cancel safety
///
/// This future is cancel safe (see [`shutdown_requested`]).
#[pin_project]
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct ShutdownRequested {
    #[pin]
    wait: Option<WaitForCancellationFutureOwned>,
    looked_up: bool,
}

impl Future for ShutdownRequested {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        if this.wait.is_none() && !*this.looked_up {
            // Created outside any scope: look again where it is polled.
            *this.looked_up = true;
            this.wait.set(current_wait());
        }
        match this.wait.as_pin_mut() {
            Some(wait) => wait.poll(cx),
            None => Poll::Pending,
        }
    }
}

impl fmt::Debug for ShutdownRequested {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownRequested")
            .field("in_scope", &self.wait.is_some())
            .finish()
    }
}
