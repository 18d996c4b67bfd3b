//! Trio-style cancel scopes with deadlines.

mod fail;
mod move_on;
mod scoped;
mod shutdown;

use std::fmt;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::frame::{self as deadline, NO_DEADLINE};
use crate::node::{CAUGHT, Node};

pub use fail::Fail;
pub use move_on::MoveOn;
use scoped::Scoped;

/// A region of async code that can be cancelled, explicitly or when a deadline passes.
///
/// A `CancelScope` is a cheap, cloneable handle, and it is `Send + Sync`. It runs one future,
/// with [`move_on`](Self::move_on), which yields `None` if the scope was cancelled, or with
/// [`fail`](Self::fail), which yields `Err(Cancelled)`. The scope is cancelled when
/// [`cancel`](Self::cancel) is called or when its deadline passes. The functions
/// [`move_on_after`], [`move_on_at`], [`fail_after`] and [`fail_at`] create a scope and run a
/// future in it in one step.
///
/// # Semantics
///
/// - **The future is dropped.** When the scope is cancelled, the future inside it is dropped at
///   once, so no code in the scope runs after the cancellation point. Unlike asyncio's
///   `CancelledError`, this cannot be caught and ignored.
/// - **Polled first.** The inner future is polled before the scope checks its deadline. A
///   future that completes without suspending returns its value even if the deadline has
///   passed or [`cancel`](Self::cancel) was called, and
///   [`cancelled_caught`](Self::cancelled_caught) then stays `false`. Cancellation takes effect
///   at the next suspension point, as in Trio and `tokio::time::timeout`.
/// - **Nesting.** Cancelling an enclosing scope drops the scopes inside it, and only the outer
///   one reports `cancelled_caught() == true`. When an inner and an outer deadline fall at the
///   same instant, the outer scope wins. (Nested `tokio::time::timeout`s get this wrong: the
///   inner one is polled first and claims it.)
/// - **One timer.** The deadline can be read and changed while the scope runs.
///   [`set_deadline`](Self::set_deadline) resets the scope's single timer entry, a deadline in
///   the past cancels the scope promptly, and `None` removes it. A scope whose deadline is no
///   earlier than that of an enclosing scope in the same task arms no timer at all.
/// - **Deadlines flow into tasks.** [`current_effective_deadline`] returns the earliest deadline
///   of all enclosing scopes, also inside tasks spawned by a [`TaskGroup`] in the scope. A task
///   started with plain `tokio::spawn` does not see it, unless its future was wrapped with
///   [`in_current_scope`](crate::WithScope::in_current_scope).
/// - **Relative timeouts** become deadlines when the scope is created, as with
///   `tokio::time::timeout`. The addition saturates: `Duration::MAX` means "never" and does not
///   panic.
/// - All times are [`tokio::time::Instant`]s, so tokio's paused test clock applies.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use quattro::CancelScope;
/// use tokio::time::{sleep, Instant};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let scope = CancelScope::with_timeout(Duration::from_secs(1));
/// let handle = scope.clone();
/// let out = scope
///     .move_on(async move {
///         // Give the work more time while it runs.
///         handle.set_deadline(Some(Instant::now() + Duration::from_secs(5)));
///         sleep(Duration::from_secs(3)).await;
///         "done"
///     })
///     .await;
/// assert_eq!(out, Some("done"));
/// assert!(!scope.cancelled_caught());
/// # }
/// ```
///
/// Cancelling from elsewhere:
///
/// ```
/// use std::future::pending;
/// use quattro::CancelScope;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let scope = CancelScope::new();
/// let canceller = scope.clone();
/// tokio::spawn(async move { canceller.cancel() });
/// assert_eq!(scope.move_on(pending::<()>()).await, None);
/// assert!(scope.cancelled_caught());
/// # }
/// ```
///
/// [`current_effective_deadline`]: crate::current_effective_deadline
/// [`TaskGroup`]: crate::TaskGroup
#[derive(Clone)]
pub struct CancelScope {
    node: Arc<Node>,
}

impl CancelScope {
    /// Creates a scope with no deadline.
    ///
    /// It is cancelled only by [`cancel`](Self::cancel).
    ///
    /// # Examples
    ///
    /// ```
    /// let scope = quattro::CancelScope::new();
    /// assert_eq!(scope.deadline(), None);
    /// ```
    #[must_use]
    pub fn new() -> CancelScope {
        CancelScope::from_raw(NO_DEADLINE)
    }

    /// Creates a scope that is cancelled at `deadline`.
    ///
    /// A deadline in the past is allowed. The scope then cancels at the first suspension of the
    /// future it runs, and a future that is ready on its first poll still returns its value.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    ///
    /// let at = Instant::now() + Duration::from_secs(3);
    /// assert_eq!(quattro::CancelScope::with_deadline(at).deadline(), Some(at));
    /// ```
    #[must_use]
    pub fn with_deadline(deadline: Instant) -> CancelScope {
        CancelScope::from_raw(deadline::encode(deadline))
    }

    /// Creates a scope that is cancelled `timeout` from now.
    ///
    /// The deadline is computed here, not when the scope starts running. A timeout too large to add
    /// to the current instant, such as `Duration::MAX`, gives a deadline about thirty years away
    /// instead of panicking.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let scope = quattro::CancelScope::with_timeout(Duration::MAX); // "never", without panicking
    /// assert!(scope.deadline().is_some());
    /// ```
    #[must_use]
    pub fn with_timeout(timeout: Duration) -> CancelScope {
        CancelScope::with_deadline(deadline::deadline_after(timeout))
    }

    fn from_raw(raw: u64) -> CancelScope {
        CancelScope {
            node: Arc::new(Node::new(raw)),
        }
    }

    pub(crate) fn from_node(node: Arc<Node>) -> CancelScope {
        CancelScope { node }
    }

    /// Cancels the scope.
    ///
    /// This is idempotent and can be called from any thread. Before the scope runs, it precancels
    /// the scope, which then cancels at the first suspension of its future. While the scope runs,
    /// it wakes the task running the scope, which drops the inner future. After the scope finished,
    /// it only makes [`is_cancelled`](Self::is_cancelled) return `true` and cancels the token from
    /// [`cancellation_token`](Self::cancellation_token).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::future::pending;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let scope = quattro::CancelScope::new();
    /// scope.cancel(); // precancel
    /// let err = scope.fail(pending::<()>()).await.unwrap_err();
    /// assert!(err.is_cancel_called());
    /// # }
    /// ```
    pub fn cancel(&self) {
        self.node.cancel();
    }

    /// Returns the scope's own deadline.
    ///
    /// This is not the effective deadline, which also depends on the enclosing scopes: that one is
    /// returned by [`current_effective_deadline`](crate::current_effective_deadline).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(quattro::CancelScope::new().deadline(), None);
    /// ```
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        self.node.deadline()
    }

    /// Sets the scope's deadline, or removes it with `None`.
    ///
    /// While the scope runs, the change takes effect at once: the task running the scope is woken
    /// and resets the scope's single timer entry, so even thousands of changes use one timer. A
    /// deadline in the past cancels the scope at its next suspension. After the scope finished,
    /// this only changes what [`deadline`](Self::deadline) returns.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use quattro::CancelScope;
    /// use tokio::time::sleep;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let scope = CancelScope::with_timeout(Duration::from_secs(1));
    /// let handle = scope.clone();
    /// let out = scope
    ///     .move_on(async move {
    ///         handle.set_deadline(None); // no deadline any more
    ///         sleep(Duration::from_secs(2)).await;
    ///     })
    ///     .await;
    /// assert_eq!(out, Some(()));
    /// # }
    /// ```
    pub fn set_deadline(&self, deadline: Option<Instant>) {
        self.node.set_deadline(deadline);
    }

    /// Returns `true` if the scope ended because of its own cancellation.
    ///
    /// That is, its deadline passed or [`cancel`](Self::cancel) was called, and the scope dropped
    /// the future it ran. It is `false` while the scope runs, when its future completed (even if a
    /// cancellation came too late to interrupt it), and when the cancellation of an enclosing scope
    /// ended it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use quattro::CancelScope;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let scope = CancelScope::with_timeout(Duration::from_millis(5));
    /// scope.move_on(tokio::time::sleep(Duration::from_secs(1))).await;
    /// assert!(scope.cancelled_caught());
    /// # }
    /// ```
    #[must_use]
    pub fn cancelled_caught(&self) -> bool {
        self.node.state() & CAUGHT != 0
    }

    /// Returns `true` if [`cancel`](Self::cancel) was called or the deadline has passed.
    ///
    /// A token linked with [`cancel_on`](Self::cancel_on) counts once the running scope has seen
    /// its cancellation.
    ///
    /// # Examples
    ///
    /// ```
    /// let scope = quattro::CancelScope::new();
    /// assert!(!scope.is_cancelled());
    /// scope.cancel();
    /// assert!(scope.is_cancelled());
    /// ```
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.node.is_cancelled()
    }

    /// Runs `fut` in this scope, yielding `Some(output)`, or `None` if cancelled first.
    ///
    /// The returned [`MoveOn`] future drops `fut` as soon as the scope is cancelled. A scope runs
    /// once: create a new one for each run.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use quattro::CancelScope;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let scope = CancelScope::with_timeout(Duration::from_secs(1));
    /// assert_eq!(scope.move_on(async { 7 }).await, Some(7));
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// The returned future panics if this scope has already run, if it is polled after it
    /// completed, or if it must arm a timer outside a tokio runtime with the time driver enabled.
    ///
    /// # Cancel safety
    ///
    /// Dropping the returned future drops `fut` at once.
    pub fn move_on<F: IntoFuture>(&self, fut: F) -> MoveOn<F::IntoFuture> {
        MoveOn::new(Scoped::with_node(self.node.clone(), fut.into_future()))
    }

    /// Runs `fut` in this scope, yielding `Ok(output)`, or `Err(Cancelled)` if cancelled first.
    ///
    /// The returned [`Fail`] future drops `fut` as soon as the scope is cancelled. A scope runs
    /// once: create a new one for each run.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use quattro::CancelScope;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let scope = CancelScope::with_timeout(Duration::from_secs(1));
    /// assert_eq!(scope.fail(async { 7 }).await, Ok(7));
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The future yields [`Cancelled`](crate::Cancelled) if this scope is cancelled before `fut`
    /// completes. The error says whether the deadline or `cancel()` did it.
    ///
    /// # Panics
    ///
    /// The returned future panics if this scope has already run, if it is polled after it
    /// completed, or if it must arm a timer outside a tokio runtime with the time driver enabled.
    ///
    /// # Cancel safety
    ///
    /// Dropping the returned future drops `fut` at once.
    pub fn fail<F: IntoFuture>(&self, fut: F) -> Fail<F::IntoFuture> {
        Fail::new(Scoped::with_node(self.node.clone(), fut.into_future()))
    }

    /// Cancels this scope when `token` is cancelled.
    ///
    /// Any number of tokens can be linked, before or while the scope runs. The running scope
    /// watches them when its future is polled, and a token's cancellation wakes it. A token that is
    /// already cancelled cancels the scope at the next suspension of its future.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::future::pending;
    /// use tokio_util::sync::CancellationToken;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let token = CancellationToken::new();
    /// let scope = quattro::CancelScope::new();
    /// scope.cancel_on(token.clone());
    /// token.cancel();
    /// assert_eq!(scope.move_on(pending::<()>()).await, None);
    /// # }
    /// ```
    pub fn cancel_on(&self, token: CancellationToken) {
        self.node.link_token(token);
    }

    /// Returns a `CancellationToken` that is cancelled when this scope is cancelled.
    ///
    /// The token is cancelled by [`cancel`](Self::cancel), by a linked token, and when the running
    /// scope sees its deadline pass. Pass it to code that takes a `CancellationToken`. Cancelling
    /// the returned token cancels neither the scope (link a token with
    /// [`cancel_on`](Self::cancel_on) for that) nor the tokens given to other callers: each call
    /// returns a child of the scope's token.
    ///
    /// # Examples
    ///
    /// ```
    /// let scope = quattro::CancelScope::new();
    /// let token = scope.cancellation_token();
    /// scope.cancel();
    /// assert!(token.is_cancelled());
    /// ```
    #[must_use]
    pub fn cancellation_token(&self) -> CancellationToken {
        self.node.token().child_token()
    }
}

impl Default for CancelScope {
    fn default() -> CancelScope {
        CancelScope::new()
    }
}

impl fmt::Debug for CancelScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelScope")
            .field("deadline", &self.deadline())
            .field("is_cancelled", &self.is_cancelled())
            .field("cancelled_caught", &self.cancelled_caught())
            .finish()
    }
}

/// Runs `fut` with a deadline `timeout` from now, yielding `None` if the deadline passes first.
///
/// The deadline is computed when this function is called. `Duration::MAX` means "never". Use
/// [`MoveOn::cancel_scope`] to get a handle on the scope.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use quattro::move_on_after;
/// use tokio::time::sleep;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let fast = move_on_after(Duration::from_secs(1), async { 1 }).await;
/// let slow = move_on_after(Duration::from_secs(1), async {
///     sleep(Duration::from_secs(5)).await;
///     2
/// })
/// .await;
/// assert_eq!((fast, slow), (Some(1), None));
/// # }
/// ```
///
/// # Panics
///
/// The returned future panics if it is polled after it completed, or if it must arm its timer
/// outside a tokio runtime with the time driver enabled.
///
/// # Cancel safety
///
/// Dropping the returned future drops `fut` at once.
pub fn move_on_after<F: IntoFuture>(timeout: Duration, fut: F) -> MoveOn<F::IntoFuture> {
    let deadline = deadline::deadline_after(timeout);
    MoveOn::new(Scoped::new(Some(deadline), fut.into_future()))
}

/// Runs `fut` with the given deadline, yielding `None` if the deadline passes first.
///
/// A deadline in the past cancels at the first suspension of `fut`. Use [`MoveOn::cancel_scope`] to
/// get a handle on the scope.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use quattro::move_on_at;
/// use tokio::time::{sleep, Instant};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let deadline = Instant::now() + Duration::from_secs(1);
/// assert_eq!(move_on_at(deadline, sleep(Duration::from_secs(2))).await, None);
/// # }
/// ```
///
/// # Panics
///
/// The returned future panics if it is polled after it completed, or if it must arm its timer
/// outside a tokio runtime with the time driver enabled.
///
/// # Cancel safety
///
/// Dropping the returned future drops `fut` at once.
pub fn move_on_at<F: IntoFuture>(deadline: Instant, fut: F) -> MoveOn<F::IntoFuture> {
    MoveOn::new(Scoped::new(Some(deadline), fut.into_future()))
}

/// Runs `fut` with a deadline `timeout` from now, yielding `Err(Cancelled)` if it passes first.
///
/// The deadline is computed when this function is called. `Duration::MAX` means "never". Use
/// [`Fail::cancel_scope`] to get a handle on the scope.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use quattro::fail_after;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let res = fail_after(Duration::from_secs(1), std::future::pending::<()>()).await;
/// assert!(res.unwrap_err().is_deadline_reached());
/// # }
/// ```
///
/// # Errors
///
/// Yields [`Cancelled`](crate::Cancelled) if the deadline passes, or the scope is cancelled through
/// [`Fail::cancel_scope`], before `fut` completes.
///
/// # Panics
///
/// The returned future panics if it is polled after it completed, or if it must arm its timer
/// outside a tokio runtime with the time driver enabled.
///
/// # Cancel safety
///
/// Dropping the returned future drops `fut` at once.
pub fn fail_after<F: IntoFuture>(timeout: Duration, fut: F) -> Fail<F::IntoFuture> {
    let deadline = deadline::deadline_after(timeout);
    Fail::new(Scoped::new(Some(deadline), fut.into_future()))
}

/// Runs `fut` with the given deadline, yielding `Err(Cancelled)` if the deadline passes first.
///
/// This is the form for request deadlines: pass the deadline the request came with. A deadline in
/// the past cancels at the first suspension of `fut`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use quattro::fail_at;
/// use tokio::time::Instant;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let deadline = Instant::now() + Duration::from_secs(1);
/// assert_eq!(fail_at(deadline, async { "fast" }).await, Ok("fast"));
/// # }
/// ```
///
/// # Errors
///
/// Yields [`Cancelled`](crate::Cancelled) if the deadline passes, or the scope is cancelled through
/// [`Fail::cancel_scope`], before `fut` completes.
///
/// # Panics
///
/// The returned future panics if it is polled after it completed, or if it must arm its timer
/// outside a tokio runtime with the time driver enabled.
///
/// # Cancel safety
///
/// Dropping the returned future drops `fut` at once.
pub fn fail_at<F: IntoFuture>(deadline: Instant, fut: F) -> Fail<F::IntoFuture> {
    Fail::new(Scoped::new(Some(deadline), fut.into_future()))
}
