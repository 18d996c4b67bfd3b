//! Graceful shutdown of a task group (see [`crate::shutdown`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::TaskGroup;
use super::scope::GroupScope;
use super::shared::Role;
use crate::error::CancelReason;
use crate::frame as deadline;
use crate::shutdown::{ShutdownOn, SoftDeadline};

impl<E: Send + 'static> TaskGroup<E> {
    /// Requests a graceful shutdown of the group, which is cancelled if it has not finished
    /// within `grace`.
    ///
    /// The body, every task (background tasks included) and everything nested in them see the
    /// request through [`shutdown_requested`], [`is_shutdown_requested`] and
    /// [`shutdown_token`], and may finish on their own within `grace`. When `grace` runs out,
    /// the group is cancelled as by [`cancel`](Self::cancel), for
    /// [`CancelReason::GraceRanOut`]. `Duration::ZERO` cancels it at once.
    ///
    /// It can be called from anywhere. Later calls can shorten the grace, never extend it. It
    /// does nothing once the group is finishing or cancelling.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use std::time::Duration;
    /// use quattro::TaskGroup;
    /// use tokio::time::sleep;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let out = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
    ///     let worker = tg.spawn(async {
    ///         quattro::shutdown_requested().await;
    ///         sleep(Duration::from_millis(100)).await; // finish the job in hand
    ///         Ok("finished")
    ///     });
    ///     tg.request_shutdown(Duration::from_secs(1));
    ///     Ok(worker.await.unwrap())
    /// })
    /// .await;
    /// assert_eq!(out.unwrap(), "finished");
    /// # }
    /// ```
    ///
    /// # Semantics
    ///
    /// - **Queued tasks**, which wait for a slot and never started, are dropped unpolled at
    ///   the request, since they have nothing to finish. Their handles resolve to a cancelled
    ///   [`TaskError`] that [`is_unstarted`](crate::TaskError::is_unstarted), for
    ///   [`CancelReason::ShutdownRequested`].
    /// - **New tasks.** From the request on, the group no longer queues. A
    ///   [`spawn`](Self::spawn) that would have to wait for a slot is refused, and its handle
    ///   resolves to a cancelled `TaskError`. One that finds a free slot, or a group without a
    ///   limit, still runs and sees the request at once, so work in flight can fan out to
    ///   finish. The producer tools ([`spawn_when_free`](Self::spawn_when_free),
    ///   [`reserve`](Self::reserve), [`try_reserve`](Self::try_reserve),
    ///   [`try_spawn`](Self::try_spawn)) are refused even with a slot free, so that a
    ///   producer loop ends.
    /// - **Within the grace**, the group completes as usual when the body and the normal
    ///   tasks are done. It returns the body's value, or a [`GroupError`] with every error,
    ///   since a task that fails during the grace still fails the group.
    /// - **When the grace runs out**, every task is aborted. Once every task has been dropped,
    ///   the group returns a [`GroupError`] for which
    ///   [`is_cancelled`](crate::GroupError::is_cancelled) is true. Its
    ///   [`cancel_reason`](crate::GroupError::cancel_reason), like that of the aborted tasks'
    ///   [`TaskError`]s, is [`CancelReason::GraceRanOut`], where [`cancel`](Self::cancel)
    ///   gives [`CancelReason::Cancelled`]. Until then, the end of the grace is the group's
    ///   deadline, and [`current_effective_deadline`] shows it in the group's tasks.
    /// - **Nested groups.** Only this group drops its queue. A request for an enclosing scope
    ///   or group reaches this group's tasks, which observe it, but leaves this group's queue
    ///   alone: a group nested in work that is finishing is part of that work.
    ///
    /// [`shutdown_requested`]: crate::shutdown_requested
    /// [`is_shutdown_requested`]: crate::is_shutdown_requested
    /// [`shutdown_token`]: crate::shutdown_token
    /// [`current_effective_deadline`]: crate::current_effective_deadline
    /// [`GroupError`]: crate::GroupError
    /// [`TaskError`]: crate::TaskError
    pub fn request_shutdown(&self, grace: Duration) {
        let shared = &self.shared;
        if shared.is_closed() {
            return;
        }
        let node = &shared.node;
        node.request_shutdown();
        // Queued tasks never start now. They are dropped last, outside the lock: a destructor
        // that panics must not stop the request from taking effect.
        let (queued, dropping) = shared.take_queue();
        if grace.is_zero() {
            // No grace at all: it ran out at once.
            self.cancel_with(CancelReason::GraceRanOut);
        } else {
            let at = deadline::deadline_after(grace);
            // Moving the cut wakes the group and shows it to the tasks'
            // `current_effective_deadline()`. Concurrent requests keep the earliest cut.
            if node.shorten_deadline(at) {
                // The hard cut: a background task (it does not keep the group open, and is
                // aborted with the others when the group is done).
                let group = self.clone();
                let timer = async move {
                    tokio::time::sleep_until(at).await;
                    group.cancel_with(CancelReason::GraceRanOut);
                    Ok(())
                };
                let name: Arc<str> = Arc::from("shutdown-grace");
                // Refused only when the group closed meanwhile: then there is nothing to cut.
                let _ = shared.try_spawn::<_, ()>(timer, Some(name), Role::Background, true);
            } else {
                // An earlier cut is already set; wake the group: it may be idle now.
                node.wake();
            }
        }
        shared.drop_unstarted(queued);
        drop(dropping);
    }

    /// Returns a `CancellationToken` that is cancelled when a graceful shutdown of this group
    /// is requested.
    ///
    /// Hand it to code that takes a token. Cancelling the token does not request a shutdown.
    /// Inside the group, [`shutdown_token`](crate::shutdown_token) also covers requests for
    /// the enclosing scopes and groups.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// quattro::TaskGroup::scope(|tg: quattro::TaskGroup<Infallible>| async move {
    ///     let token = tg.shutdown_token();
    ///     tg.spawn(async move {
    ///         token.cancelled().await; // e.g. a library loop that takes a token
    ///         Ok(())
    ///     });
    ///     tg.request_shutdown(std::time::Duration::from_secs(1));
    ///     Ok(())
    /// })
    /// .await
    /// .unwrap();
    /// # }
    /// ```
    #[must_use]
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shared.node.own_shutdown_token().child_token()
    }
}

impl<B, Fut, R, E: Send + 'static> GroupScope<B, Fut, R, E> {
    /// Runs the group until `trigger` completes, then requests its graceful shutdown with
    /// `grace`.
    ///
    /// This is "serve until ctrl-c, give the connections 5 seconds, then cut" (see
    /// [`TaskGroup::request_shutdown`]). `trigger` is any future, such as
    /// `tokio::signal::ctrl_c()`. Its output is ignored, so an error from it triggers the
    /// shutdown too. It is polled beside the group, not inside it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use std::time::Duration;
    /// use quattro::TaskGroup;
    /// use tokio::time::sleep;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let ctrl_c = sleep(Duration::from_secs(1)); // stands in for `tokio::signal::ctrl_c()`
    /// let err = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
    ///     tg.spawn(std::future::pending::<Result<(), Infallible>>()); // ignores the request
    ///     quattro::shutdown_requested().await;
    ///     Ok(())
    /// })
    /// .shutdown_on(ctrl_c, Duration::from_secs(5))
    /// .await
    /// .unwrap_err();
    /// assert!(err.is_cancelled()); // the grace ran out
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// See [`ShutdownOn`].
    pub fn shutdown_on<T: std::future::Future>(
        self,
        trigger: T,
        grace: Duration,
    ) -> ShutdownOn<Self, T> {
        // `false` until the group has started: `ShutdownOn` then retries.
        ShutdownOn::new(self, trigger, grace, |scope, grace| {
            scope
                .group()
                .map(|group| group.request_shutdown(grace))
                .is_some()
        })
    }

    /// Requests the group's graceful shutdown at `deadline`, with `grace`.
    ///
    /// This is a soft deadline: a group that has not finished `grace` after `deadline` is
    /// cancelled. The timer is armed on the first poll, so the future can still be built
    /// outside a runtime.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use std::time::Duration;
    /// use quattro::TaskGroup;
    /// use tokio::time::{Instant, sleep};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let start = Instant::now();
    /// let out = TaskGroup::scope(|_tg: TaskGroup<Infallible>| async move {
    ///     quattro::shutdown_requested().await; // the body sees it, like the tasks
    ///     sleep(Duration::from_millis(100)).await; // finish the job in hand
    ///     Ok("finished")
    /// })
    /// .shutdown_at(start + Duration::from_secs(1), Duration::from_secs(5))
    /// .await;
    /// assert_eq!(out.unwrap(), "finished");
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

    /// Requests the group's graceful shutdown `timeout` from now, with `grace`.
    ///
    /// This is a soft timeout, measured from this call rather than from the first poll. A
    /// group that has not finished `grace` after the timeout is cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let jobs = TaskGroup::scope(|tg: TaskGroup<()>| async move {
    ///     let mut done = 0;
    ///     while !quattro::is_shutdown_requested() {
    ///         tg.spawn(async {
    ///             tokio::time::sleep(Duration::from_millis(300)).await;
    ///             Ok(())
    ///         })
    ///         .await
    ///         .map_err(|_| ())?;
    ///         done += 1;
    ///     }
    ///     Ok(done)
    /// })
    /// .shutdown_after(Duration::from_secs(1), Duration::from_secs(1))
    /// .await;
    /// assert_eq!(jobs.unwrap(), 4);
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
