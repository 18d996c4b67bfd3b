//! Graceful shutdown of a cancel scope (see [`crate::shutdown`]).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::CancelScope;
use crate::frame as deadline;

impl CancelScope {
    /// Requests a graceful shutdown of the scope: the code running inside — its future, and
    /// every task and scope nested in it — sees the request ([`shutdown_requested`],
    /// [`is_shutdown_requested`], [`shutdown_token`]) and may finish on its own within
    /// `grace`; when `grace` runs out, the scope is cancelled hard.
    ///
    /// The grace is implemented by moving the scope's deadline to `now + grace` (unless it is
    /// already earlier), so [`current_effective_deadline`] inside shows the cut, and a task
    /// group nested in the scope is cut with the usual guarantee: the scope returns only after
    /// every task has been dropped. A future that finishes within the grace is a normal
    /// completion; when the grace runs out, [`cancelled_caught`](Self::cancelled_caught) is
    /// true (and `fail` reports a reached deadline). `Duration::ZERO` is a hard cancel at the
    /// next suspension.
    ///
    /// Callable from any thread, before the scope runs (the grace still counts from the call)
    /// or while it runs. Later calls can shorten the grace, never extend it.
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
    pub fn request_shutdown(&self, grace: Duration) {
        self.node.request_shutdown();
        self.node.shorten_deadline(deadline::deadline_after(grace));
    }

    /// A token that is cancelled when a graceful shutdown is requested for this scope, for
    /// code that takes a `CancellationToken`. Cancelling the token does not request a shutdown.
    ///
    /// It covers this scope's own requests; inside the scope,
    /// [`quattro::shutdown_token`](crate::shutdown_token) also covers the enclosing ones.
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
