//! The [`CancelReason`] of a cancelled task or task group.

use std::fmt;

/// The reason a task or a task group was cancelled.
///
/// A cancelled [`TaskError`] gives its reason with [`TaskError::cancel_reason`], and a cancelled
/// [`GroupError`] with [`GroupError::cancel_reason`]. This tells a shutdown whose grace ran out
/// apart from [`TaskGroup::cancel`], and a sibling's failure apart from a deadline.
///
/// The first cause wins. A group records its reason once, when its cancellation starts and before
/// it aborts its tasks. A task that is already being cancelled for one reason keeps it when another
/// comes along. A group that is dropped inside an enclosing group that is cancelling, with the body
/// or the task that held it, takes the enclosing group's reason.
///
/// Whether the task ever ran is a separate question, answered by [`TaskError::is_unstarted`]. A
/// task waiting in the queue of a limited group that is cancelled has a reason like any other.
///
/// More reasons may be added, since the enum is `#[non_exhaustive]`: match with a wildcard arm.
///
/// # Examples
///
/// ```
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use quattro::{CancelReason, TaskGroup};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let mut worker = None;
/// let slot = &mut worker;
/// let err = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
///     // Ignores the shutdown request: it is cut when the grace runs out.
///     *slot = Some(tg.task("worker").spawn(std::future::pending::<Result<(), _>>()));
///     tg.request_shutdown(Duration::from_secs(5));
///     Ok(())
/// })
/// .await
/// .unwrap_err();
/// assert_eq!(err.cancel_reason(), Some(CancelReason::GraceRanOut));
/// assert_eq!(err.to_string(), "task group was cancelled: the grace period ran out");
///
/// let task_err = worker.unwrap().await.unwrap_err();
/// assert_eq!(task_err.cancel_reason(), Some(CancelReason::GraceRanOut));
/// assert_eq!(task_err.to_string(), "task was cancelled: the grace period ran out");
/// # }
/// ```
///
/// [`TaskError`]: crate::TaskError
/// [`TaskError::cancel_reason`]: crate::TaskError::cancel_reason
/// [`TaskError::is_unstarted`]: crate::TaskError::is_unstarted
/// [`GroupError`]: crate::GroupError
/// [`GroupError::cancel_reason`]: crate::GroupError::cancel_reason
/// [`TaskGroup::cancel`]: crate::TaskGroup::cancel
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CancelReason {
    /// The task's own handle aborted it with [`TaskHandle::abort`].
    ///
    /// [`TaskHandle::abort`]: crate::TaskHandle::abort
    Aborted,
    /// A task of the group, or its body, failed, and the failure cancelled the group.
    ///
    /// A failure is a returned `Err` or a panic. It cancels the group under the default failure
    /// policy, or when the handler of [`isolate_failures`] passes it back.
    ///
    /// [`isolate_failures`]: crate::group::Builder::isolate_failures
    Failure,
    /// The group was cancelled on request.
    ///
    /// [`TaskGroup::cancel`] was called, or a [`CancelScope`] around the group was cancelled with
    /// [`CancelScope::cancel`] or a linked `CancellationToken`.
    ///
    /// [`TaskGroup::cancel`]: crate::TaskGroup::cancel
    /// [`CancelScope`]: crate::CancelScope
    /// [`CancelScope::cancel`]: crate::CancelScope::cancel
    Cancelled,
    /// A graceful shutdown of the group was requested before the task started.
    ///
    /// A group that shuts down queues nothing. A task waiting for a slot under the concurrency
    /// limit is dropped at the request, and a spawn that would have to wait for a slot is refused,
    /// as are the producer tools such as [`TaskGroup::spawn_when_free`]. The request comes from
    /// [`TaskGroup::request_shutdown`] or a trigger on [`GroupScope`]. Running tasks are not
    /// cancelled by the request, only by the end of its grace ([`GraceRanOut`](Self::GraceRanOut)).
    ///
    /// [`TaskGroup::request_shutdown`]: crate::TaskGroup::request_shutdown
    /// [`TaskGroup::spawn_when_free`]: crate::TaskGroup::spawn_when_free
    /// [`GroupScope`]: crate::GroupScope
    ShutdownRequested,
    /// The grace period of a graceful shutdown ran out.
    ///
    /// The shutdown was requested for the group itself, or for a cancel scope or group around it
    /// (such as [`CancelScope::request_shutdown`]).
    ///
    /// [`CancelScope::request_shutdown`]: crate::CancelScope::request_shutdown
    GraceRanOut,
    /// The deadline of a cancel scope around the group was reached.
    ///
    /// For example the deadline of [`move_on_after`] or [`fail_at`], or one set with
    /// [`CancelScope::set_deadline`].
    ///
    /// [`move_on_after`]: crate::move_on_after
    /// [`fail_at`]: crate::fail_at
    /// [`CancelScope::set_deadline`]: crate::CancelScope::set_deadline
    DeadlineReached,
    /// The group's future was dropped early by something other than a quattro scope or group.
    ///
    /// For example a `tokio::select!` branch that lost, a `JoinHandle::abort` of the task running
    /// the group, or a plain `drop`.
    GroupDropped,
    /// The group finished normally.
    ///
    /// Background tasks are aborted once the body and every normal task are done, and a task
    /// spawned after that is refused.
    GroupFinished,
    /// The runtime dropped the task.
    ///
    /// The runtime shut down, or was already shut down when the task was spawned. When the runtime
    /// drops the group's future first, the tasks report [`GroupDropped`](Self::GroupDropped)
    /// instead.
    RuntimeShutdown,
}

impl CancelReason {
    /// The encoding kept in a node's atomic (`0`: no reason yet).
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            CancelReason::Aborted => 1,
            CancelReason::Failure => 2,
            CancelReason::Cancelled => 3,
            CancelReason::ShutdownRequested => 4,
            CancelReason::GraceRanOut => 5,
            CancelReason::DeadlineReached => 6,
            CancelReason::GroupDropped => 7,
            CancelReason::GroupFinished => 8,
            CancelReason::RuntimeShutdown => 9,
        }
    }

    /// The reason `to_u8` encoded; `None` for `0` (and anything else).
    pub(crate) fn from_u8(raw: u8) -> Option<CancelReason> {
        Some(match raw {
            1 => CancelReason::Aborted,
            2 => CancelReason::Failure,
            3 => CancelReason::Cancelled,
            4 => CancelReason::ShutdownRequested,
            5 => CancelReason::GraceRanOut,
            6 => CancelReason::DeadlineReached,
            7 => CancelReason::GroupDropped,
            8 => CancelReason::GroupFinished,
            9 => CancelReason::RuntimeShutdown,
            _ => return None,
        })
    }
}

/// Formats the reason as a clause that completes "task `fetch` was cancelled: …".
///
/// # Examples
///
/// ```
/// use quattro::CancelReason;
///
/// assert_eq!(CancelReason::Failure.to_string(), "the task group failed");
/// assert_eq!(CancelReason::GraceRanOut.to_string(), "the grace period ran out");
/// ```
impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CancelReason::Aborted => "its handle aborted it",
            CancelReason::Failure => "the task group failed",
            CancelReason::Cancelled => "the task group was cancelled",
            CancelReason::ShutdownRequested => "a shutdown was requested",
            CancelReason::GraceRanOut => "the grace period ran out",
            CancelReason::DeadlineReached => "a deadline was reached",
            CancelReason::GroupDropped => "the task group was dropped",
            CancelReason::GroupFinished => "the task group finished",
            CancelReason::RuntimeShutdown => "the runtime shut down",
        }
        .fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::CancelReason;

    #[test]
    fn every_reason_survives_its_encoding() {
        let all = [
            CancelReason::Aborted,
            CancelReason::Failure,
            CancelReason::Cancelled,
            CancelReason::ShutdownRequested,
            CancelReason::GraceRanOut,
            CancelReason::DeadlineReached,
            CancelReason::GroupDropped,
            CancelReason::GroupFinished,
            CancelReason::RuntimeShutdown,
        ];
        for reason in all {
            assert_ne!(reason.to_u8(), 0, "0 means no reason");
            assert_eq!(CancelReason::from_u8(reason.to_u8()), Some(reason));
        }
        assert_eq!(CancelReason::from_u8(0), None);
    }
}
