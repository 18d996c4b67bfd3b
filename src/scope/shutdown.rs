//! Graceful shutdown of a cancel scope (see [`crate::shutdown`]).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::CancelScope;
use crate::frame as deadline;

impl CancelScope {
    /// Requests a graceful shutdown of the scope, with `grace` to finish.
    ///
    /// The request reaches the code running inside the scope: its future, and every task and scope
    /// nested in it. That code sees the request through [`shutdown_requested`],
    /// [`is_shutdown_requested`] and [`shutdown_token`], and may finish on its own. A future that
    /// finishes within the grace completes normally. When the grace runs out, the scope is
    /// cancelled: [`cancelled_caught`](Self::cancelled_caught) returns `true`, and `fail` yields a
    /// [`Cancelled`] whose `is_deadline_reached()` is `true`. `Duration::ZERO` cancels the scope at
    /// its next suspension.
    ///
    /// The grace works by moving the scope's deadline to `now + grace`, unless it is already
    /// earlier. So [`current_effective_deadline`] inside the scope returns the cut, and a task
    /// group nested in the scope is cut with the usual guarantee: the scope returns only after
    /// every task has been dropped.
    ///
    /// This can be called from any thread, before the scope runs or while it runs. The grace counts
    /// from the call. Later calls can shorten the grace, never extend it.
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
    /// let scope = CancelScope::new();
    /// let handle = scope.clone();
    /// let out = scope
    ///     .move_on(async move {
    ///         handle.request_shutdown(Duration::from_secs(1));
    ///         quattro::shutdown_requested().await; // at once
    ///         sleep(Duration::from_millis(10)).await; // finish up
    ///         "clean exit"
    ///     })
    ///     .await;
    /// assert_eq!(out, Some("clean exit"));
    /// assert!(!scope.cancelled_caught());
    /// # }
    /// ```
    ///
    /// [`shutdown_requested`]: crate::shutdown_requested
    /// [`is_shutdown_requested`]: crate::is_shutdown_requested
    /// [`shutdown_token`]: crate::shutdown_token
    /// [`current_effective_deadline`]: crate::current_effective_deadline
    /// [`Cancelled`]: crate::Cancelled
    pub fn request_shutdown(&self, grace: Duration) {
        self.node.request_shutdown();
        self.node.shorten_deadline(deadline::deadline_after(grace));
    }

    /// Returns a `CancellationToken` that is cancelled when this scope's shutdown is requested.
    ///
    /// Cancelling the token does not request a shutdown. The token covers the requests for this
    /// scope only. Inside the scope, [`quattro::shutdown_token`](crate::shutdown_token) also covers
    /// the requests for the enclosing scopes and groups.
    ///
    /// # Examples
    ///
    /// ```
    /// let scope = quattro::CancelScope::new();
    /// let token = scope.shutdown_token();
    /// scope.request_shutdown(std::time::Duration::from_secs(1));
    /// assert!(token.is_cancelled());
    /// ```
    #[must_use]
    pub fn shutdown_token(&self) -> CancellationToken {
        self.node.own_shutdown_token().child_token()
    }
}
