//! Triggers for a graceful shutdown: [`ShutdownOn`] runs a scope or group and asks it to shut
//! down when a trigger future completes; [`SoftDeadline`] is the trigger of `shutdown_at` and
//! `shutdown_after`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};

use crate::frame;
use crate::scope::{Fail, MoveOn};

/// A trigger that fires at a deadline: the soft deadline of [`MoveOn::shutdown_at`] and the
/// like. Its timer is armed on the first poll, so the future it triggers can be built outside
/// a runtime.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use quattro::{CancelScope, MoveOn, ShutdownOn, shutdown::SoftDeadline};
///
/// // Built before any runtime exists: the timer waits for the first poll.
/// let run: ShutdownOn<MoveOn<_>, SoftDeadline> = CancelScope::new()
///     .move_on(async { quattro::shutdown_requested().await; "stopped" })
///     .shutdown_after(Duration::from_secs(1), Duration::from_secs(1));
/// let rt = tokio::runtime::Builder::new_current_thread()
///     .enable_time()
///     .start_paused(true)
///     .build()
///     .unwrap();
/// assert_eq!(rt.block_on(run), Some("stopped"));
/// ```
#[pin_project]
#[must_use = "futures do nothing unless you `.await` or poll them"]
#[derive(Debug)]
pub struct SoftDeadline {
    at: Instant,
    #[pin]
    sleep: Option<Sleep>,
}

impl SoftDeadline {
    pub(crate) fn at(at: Instant) -> SoftDeadline {
        SoftDeadline { at, sleep: None }
    }

    /// A soft deadline `timeout` from now (computed at the call).
    pub(crate) fn after(timeout: Duration) -> SoftDeadline {
        SoftDeadline::at(frame::deadline_after(timeout))
    }
}

impl Future for SoftDeadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        if this.sleep.is_none() {
            this.sleep.set(Some(sleep_until(*this.at)));
        }
        this.sleep.as_pin_mut().expect("set above").poll(cx)
    }
}

/// Future returned by the `shutdown_on`, `shutdown_at` and `shutdown_after` methods of
/// [`MoveOn`], [`Fail`] and [`GroupScope`](crate::GroupScope): runs the scope or group, and
/// requests its graceful shutdown with the given grace when the trigger completes. Yields what
/// the scope or group yields.
///
/// The trigger is polled beside the scope or group, outside it (it does not see the scope's
/// deadlines), until it completes once or the scope or group finishes; its output is ignored.
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
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// tokio::spawn(async move {
///     sleep(Duration::from_secs(1)).await;
///     let _ = stop.send(()); // e.g. on ctrl-c
/// });
/// let scope = CancelScope::new();
/// let out = scope
///     .move_on(async {
///         quattro::shutdown_requested().await;
///         sleep(Duration::from_secs(10)).await; // more than the grace: cut off
///     })
///     .shutdown_on(stopped, Duration::from_secs(2))
///     .await;
/// assert_eq!(out, None);
/// assert!(scope.cancelled_caught()); // the grace ran out
/// # }
/// ```
///
/// # Cancel safety
///
/// Dropping it drops the scope's or group's future (see their own `# Cancel safety`) and the
/// trigger.
#[pin_project]
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct ShutdownOn<F, T> {
    #[pin]
    inner: F,
    #[pin]
    trigger: Option<T>,
    grace: Duration,
    /// Requests the shutdown of `inner`; `false` when it cannot yet (a group not started).
    request: fn(&F, Duration) -> bool,
    /// The trigger fired and the request is still to be made.
    pending: bool,
}

impl<F, T> ShutdownOn<F, T> {
    pub(crate) fn new(
        inner: F,
        trigger: T,
        grace: Duration,
        request: fn(&F, Duration) -> bool,
    ) -> ShutdownOn<F, T> {
        ShutdownOn {
            inner,
            trigger: Some(trigger),
            grace,
            request,
            pending: false,
        }
    }

    /// The future the shutdown is for.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use quattro::CancelScope;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let run = CancelScope::new()
    ///     .move_on(std::future::pending::<()>())
    ///     .shutdown_after(Duration::from_secs(60), Duration::from_secs(5));
    /// let scope = run.get_ref().cancel_scope(); // of the `MoveOn` inside
    /// scope.cancel(); // a hard stop, without waiting for the soft deadline
    /// assert_eq!(run.await, None);
    /// assert!(scope.cancelled_caught());
    /// # }
    /// ```
    pub fn get_ref(&self) -> &F {
        &self.inner
    }

    /// Whether the trigger has fired.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use quattro::CancelScope;
    /// use tokio::time::{sleep, timeout};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let mut run = std::pin::pin!(CancelScope::new()
    ///     .move_on(async {
    ///         quattro::shutdown_requested().await;
    ///         sleep(Duration::from_secs(1)).await; // wrap up
    ///     })
    ///     .shutdown_after(Duration::from_secs(1), Duration::from_secs(5)));
    /// assert!(!run.is_triggered());
    /// assert!(timeout(Duration::from_millis(1500), &mut run).await.is_err()); // wrapping up
    /// assert!(run.is_triggered());
    /// assert_eq!(run.await, Some(()));
    /// # }
    /// ```
    pub fn is_triggered(&self) -> bool {
        self.trigger.is_none()
    }
}

impl<F: Future, T: Future> Future for ShutdownOn<F, T> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        if let Some(trigger) = this.trigger.as_mut().as_pin_mut() {
            if trigger.poll(cx).is_ready() {
                this.trigger.set(None);
                *this.pending = true;
            }
        }
        if *this.pending && (this.request)(this.inner.as_ref().get_ref(), *this.grace) {
            *this.pending = false;
        }
        let out = this.inner.as_mut().poll(cx);
        if out.is_pending()
            && *this.pending
            && (this.request)(this.inner.as_ref().get_ref(), *this.grace)
        {
            // The group started in this poll: the request is made now; poll again to act on it.
            *this.pending = false;
            cx.waker().wake_by_ref();
        }
        out
    }
}

impl<F: fmt::Debug, T> fmt::Debug for ShutdownOn<F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownOn")
            .field("inner", &self.inner)
            .field("grace", &self.grace)
            .field("triggered", &self.is_triggered())
            .finish()
    }
}

impl<F: Future> MoveOn<F> {
    /// Runs this scope until `trigger` completes, then requests its graceful shutdown with
    /// `grace` (see [`CancelScope::request_shutdown`](crate::CancelScope::request_shutdown)).
    ///
    /// `trigger` is any future, such as `tokio::signal::ctrl_c()` (its output is ignored: an
    /// error from it triggers the shutdown too).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use quattro::CancelScope;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// drop(stop); // the trigger completes, here with an error: that counts too
    /// let out = CancelScope::new()
    ///     .move_on(async { quattro::shutdown_requested().await; "drained" })
    ///     .shutdown_on(stopped, Duration::from_secs(5))
    ///     .await;
    /// assert_eq!(out, Some("drained"));
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// See [`ShutdownOn`].
    pub fn shutdown_on<T: Future>(self, trigger: T, grace: Duration) -> ShutdownOn<Self, T> {
        ShutdownOn::new(self, trigger, grace, |scope, grace| {
            scope.cancel_scope().request_shutdown(grace);
            true
        })
    }

    /// A soft deadline: requests the scope's graceful shutdown at `deadline`, with `grace`;
    /// the scope is cut off at `deadline + grace` at the latest.
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
    /// let start = Instant::now();
    /// let out = CancelScope::new()
    ///     .move_on(async {
    ///         quattro::shutdown_requested().await;
    ///         sleep(Duration::from_millis(100)).await; // wrap up
    ///         "done"
    ///     })
    ///     .shutdown_at(start + Duration::from_secs(1), Duration::from_secs(1))
    ///     .await;
    /// assert_eq!(out, Some("done"));
    /// assert_eq!(start.elapsed(), Duration::from_millis(1100));
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// See [`ShutdownOn`].
    pub fn shutdown_at(self, deadline: Instant, grace: Duration) -> ShutdownOn<Self, SoftDeadline> {
        self.shutdown_on(SoftDeadline::at(deadline), grace)
    }

    /// A soft timeout: requests the scope's graceful shutdown `timeout` from now (computed at
    /// the call), with `grace`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use quattro::CancelScope;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let scope = CancelScope::new();
    /// let out = scope
    ///     .move_on(std::future::pending::<()>()) // ignores the request
    ///     .shutdown_after(Duration::from_secs(1), Duration::from_secs(1))
    ///     .await;
    /// assert_eq!(out, None);
    /// assert!(scope.cancelled_caught());
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// See [`ShutdownOn`].
    pub fn shutdown_after(
        self,
        timeout: Duration,
        grace: Duration,
    ) -> ShutdownOn<Self, SoftDeadline> {
        self.shutdown_on(SoftDeadline::after(timeout), grace)
    }
}

impl<F: Future> Fail<F> {
    /// [`MoveOn::shutdown_on`] for a `fail` scope: when the grace runs out, the scope yields
    /// a [`Cancelled`](crate::Cancelled) for which `is_deadline_reached()` is true.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use quattro::CancelScope;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let trigger = tokio::time::sleep(Duration::from_secs(1));
    /// let err = CancelScope::new()
    ///     .fail(std::future::pending::<()>())
    ///     .shutdown_on(trigger, Duration::ZERO) // no grace: a hard cancel
    ///     .await
    ///     .unwrap_err();
    /// assert!(err.is_deadline_reached());
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// See [`ShutdownOn`].
    pub fn shutdown_on<T: Future>(self, trigger: T, grace: Duration) -> ShutdownOn<Self, T> {
        ShutdownOn::new(self, trigger, grace, |scope, grace| {
            scope.cancel_scope().request_shutdown(grace);
            true
        })
    }

    /// [`MoveOn::shutdown_at`] for a `fail` scope.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use quattro::CancelScope;
    /// use tokio::time::Instant;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let start = Instant::now();
    /// let err = CancelScope::new()
    ///     .fail(std::future::pending::<()>()) // ignores the request
    ///     .shutdown_at(start + Duration::from_secs(1), Duration::from_secs(2))
    ///     .await
    ///     .unwrap_err();
    /// assert!(err.is_deadline_reached());
    /// assert_eq!(start.elapsed(), Duration::from_secs(3)); // cut at deadline + grace
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// See [`ShutdownOn`].
    pub fn shutdown_at(self, deadline: Instant, grace: Duration) -> ShutdownOn<Self, SoftDeadline> {
        self.shutdown_on(SoftDeadline::at(deadline), grace)
    }

    /// [`MoveOn::shutdown_after`] for a `fail` scope.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use quattro::CancelScope;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let out = CancelScope::new()
    ///     .fail(async {
    ///         quattro::shutdown_requested().await;
    ///         "flushed" // within the grace: a normal completion
    ///     })
    ///     .shutdown_after(Duration::from_secs(1), Duration::from_secs(5))
    ///     .await;
    /// assert_eq!(out.unwrap(), "flushed");
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// See [`ShutdownOn`].
    pub fn shutdown_after(
        self,
        timeout: Duration,
        grace: Duration,
    ) -> ShutdownOn<Self, SoftDeadline> {
        self.shutdown_on(SoftDeadline::after(timeout), grace)
    }
}
