//! The [`Cancelled`] error, returned by a `fail` scope that was cancelled.

use std::fmt;

/// Error returned by a [`Fail`] future whose scope was cancelled.
///
/// A scope is cancelled when its deadline is reached or when [`CancelScope::cancel`] is called, and
/// the error says which: see [`is_deadline_reached`](Cancelled::is_deadline_reached) and
/// [`is_cancel_called`](Cancelled::is_cancel_called). Python's quattro raises `TimeoutError` for
/// both, and tokio's `time::error::Elapsed` only knows deadlines.
///
/// It converts into an `io::Error` of kind [`TimedOut`](std::io::ErrorKind::TimedOut).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use quattro::fail_after;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let err = fail_after(Duration::from_millis(10), std::future::pending::<()>())
///     .await
///     .unwrap_err();
/// assert!(err.is_deadline_reached());
/// assert_eq!(err.to_string(), "deadline has elapsed");
/// # }
/// ```
///
/// [`Fail`]: crate::Fail
/// [`CancelScope::cancel`]: crate::CancelScope::cancel
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cancelled(Cause);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Cause {
    Deadline,
    Cancelled,
}

impl Cancelled {
    pub(crate) fn deadline() -> Cancelled {
        Cancelled(Cause::Deadline)
    }

    pub(crate) fn cancel_called() -> Cancelled {
        Cancelled(Cause::Cancelled)
    }

    /// Returns `true` if the scope's deadline was reached.
    ///
    /// This includes the end of the grace period of a graceful shutdown
    /// ([`CancelScope::request_shutdown`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let err = quattro::fail_after(Duration::from_secs(1), std::future::pending::<()>())
    ///     .await
    ///     .unwrap_err();
    /// assert!(err.is_deadline_reached());
    /// assert!(!err.is_cancel_called());
    /// # }
    /// ```
    ///
    /// [`CancelScope::request_shutdown`]: crate::CancelScope::request_shutdown
    #[must_use]
    pub fn is_deadline_reached(&self) -> bool {
        self.0 == Cause::Deadline
    }

    /// Returns `true` if the scope was cancelled by [`CancelScope::cancel`] or a linked token.
    ///
    /// A linked token is one passed to [`CancelScope::cancel_on`]. When both `cancel()` and the
    /// deadline came before the scope noticed, this one is reported.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::CancelScope;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let scope = CancelScope::new();
    /// scope.cancel();
    /// let err = scope.fail(std::future::pending::<()>()).await.unwrap_err();
    /// assert!(err.is_cancel_called());
    /// assert!(!err.is_deadline_reached());
    /// # }
    /// ```
    ///
    /// [`CancelScope::cancel`]: crate::CancelScope::cancel
    /// [`CancelScope::cancel_on`]: crate::CancelScope::cancel_on
    #[must_use]
    pub fn is_cancel_called(&self) -> bool {
        self.0 == Cause::Cancelled
    }
}

impl fmt::Debug for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Cancelled").field(&self.0).finish()
    }
}

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Cause::Deadline => "deadline has elapsed".fmt(f),
            Cause::Cancelled => "cancel scope was cancelled".fmt(f),
        }
    }
}

impl std::error::Error for Cancelled {}

/// Converts the error into an `io::Error` of kind [`TimedOut`](std::io::ErrorKind::TimedOut).
impl From<Cancelled> for std::io::Error {
    fn from(err: Cancelled) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::TimedOut, err)
    }
}
