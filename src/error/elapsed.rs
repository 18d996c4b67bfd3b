//! [`Elapsed`]: the error of a cancel scope that failed.

use std::fmt;

/// The error of a [`Fail`] future whose cancel scope was cancelled: its deadline was reached,
/// or [`CancelScope::cancel`] was called.
///
/// Unlike Python's `TimeoutError`, which quattro raises for both, the error keeps which of the
/// two happened: see [`is_deadline_reached`](Elapsed::is_deadline_reached) and
/// [`is_cancelled`](Elapsed::is_cancelled).
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
pub struct Elapsed(Cause);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Cause {
    Deadline,
    Cancelled,
}

impl Elapsed {
    pub(crate) fn deadline() -> Elapsed {
        Elapsed(Cause::Deadline)
    }

    pub(crate) fn cancelled() -> Elapsed {
        Elapsed(Cause::Cancelled)
    }

    /// The scope's deadline was reached.
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
    /// assert!(!err.is_cancelled());
    /// # }
    /// ```
    pub fn is_deadline_reached(&self) -> bool {
        self.0 == Cause::Deadline
    }

    /// The scope was cancelled by [`CancelScope::cancel`] (or by a linked
    /// `CancellationToken`) before its deadline.
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
    /// assert!(err.is_cancelled());
    /// assert!(!err.is_deadline_reached());
    /// # }
    /// ```
    ///
    /// [`CancelScope::cancel`]: crate::CancelScope::cancel
    pub fn is_cancelled(&self) -> bool {
        self.0 == Cause::Cancelled
    }
}

impl fmt::Debug for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Elapsed").field(&self.0).finish()
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Cause::Deadline => "deadline has elapsed".fmt(f),
            Cause::Cancelled => "cancel scope was cancelled".fmt(f),
        }
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for std::io::Error {
    fn from(err: Elapsed) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::TimedOut, err)
    }
}
