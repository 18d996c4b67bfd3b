//! The [`ShutdownOn`] and [`SoftDeadline`] futures, which trigger a graceful shutdown.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};

use crate::frame;
use crate::scope::{Fail, MoveOn};

/// A shutdown trigger that fires at a deadline.
///
/// It is the trigger of the `shutdown_at` and `shutdown_after` methods, such as
/// [`MoveOn::shutdown_at`]. Its timer is armed on its first poll, so the future it triggers can be
/// built outside a runtime.
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
///
/// # Panics
///
/// Panics if polled outside a tokio runtime with the time driver enabled.
///
/// # Cancel safety
///
/// Dropping it only drops its timer.
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

/// Future returned by the `shutdown_on`, `shutdown_at` and `shutdown_after` methods.
///
/// It runs the scope or group ([`MoveOn`], [`Fail`] or [`GroupScope`](crate::GroupScope)), and
/// requests its graceful shutdown with the given grace when the trigger completes. It yields what
/// the scope or group yields.
///
/// The trigger is polled beside the scope or group, outside it, so it does not see the scope's
/// deadlines. It is polled until it completes once or the scope or group finishes, and its output
/// is ignored.
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
/// # Panics
///
/// Panics if polled after it completed. It also panics when the scope or group future inside, or
/// the trigger, panics when polled: see their own `# Panics`.
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

    /// Gets a reference to the scope or group future that the shutdown is for.
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

    /// Returns `true` if the trigger has fired.
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
    /// Requests a graceful shutdown of this scope when `trigger` completes.
    ///
    /// The scope runs as usual until then, and the request gives it `grace` to finish (see
    /// [`CancelScope::request_shutdown`](crate::CancelScope::request_shutdown)). `trigger` is any
    /// future, such as `tokio::signal::ctrl_c()`. Its output is ignored, so an error from it
    /// triggers the shutdown too.
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

    /// Requests a graceful shutdown of this scope at `deadline`.
    ///
    /// This is a soft deadline: the scope is asked to finish at `deadline`, with `grace`, and is
    /// cancelled at `deadline + grace` at the latest.
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

    /// Requests a graceful shutdown of this scope `timeout` from now.
    ///
    /// This is a soft timeout, computed when this method is called: the scope is asked to finish
    /// `timeout` from now, with `grace`.
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
    /// Requests a graceful shutdown of this scope when `trigger` completes.
    ///
    /// See [`MoveOn::shutdown_on`]. When the grace runs out, the scope yields a
    /// [`Cancelled`](crate::Cancelled) whose `is_deadline_reached()` is `true`.
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

    /// Requests a graceful shutdown of this scope at `deadline`.
    ///
    /// See [`MoveOn::shutdown_at`].
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

    /// Requests a graceful shutdown of this scope `timeout` from now.
    ///
    /// See [`MoveOn::shutdown_after`].
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
