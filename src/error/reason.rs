//! [`CancelReason`]: why a task or a task group was cancelled.

use std::fmt;

/// Why a task, or a task group, was cancelled.
///
/// A cancelled [`TaskError`] says why with [`TaskError::cancel_reason`], and a cancelled
/// [`GroupError`] with [`GroupError::cancel_reason`]: a shutdown whose grace period ran out is
/// then told apart from [`TaskGroup::cancel`], a sibling's failure from a deadline.
///
/// The first cause wins. A group records its reason once, when its cancellation starts and
/// before it aborts its tasks; a task that was already being cancelled for one reason keeps it
/// when another comes along. A group that is dropped inside another one that is cancelling (with
/// the body or the task that held it) takes the enclosing group's reason.
///
/// Whether the task ever ran is a separate question, answered by [`TaskError::is_unstarted`]:
/// a task waiting in the queue of a limited group that is cancelled has a reason like any other.
///
/// More reasons may be added (the enum is `#[non_exhaustive]`): match with a wildcard arm.
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
    /// The task's own handle aborted it ([`TaskHandle::abort`]).
    ///
    /// [`TaskHandle::abort`]: crate::TaskHandle::abort
    Aborted,
    /// A task of the group, or its body, failed (returned `Err` or panicked), and the failure
    /// cancelled the group: the default failure policy, or a failure the handler of
    /// [`isolate_failures`] passed back.
    ///
    /// [`isolate_failures`]: crate::group::Builder::isolate_failures
    Failure,
    /// The group was cancelled on request: [`TaskGroup::cancel`], or a [`CancelScope`] around
    /// the group was cancelled with [`CancelScope::cancel`] (or a `CancellationToken` linked to
    /// it).
    ///
    /// [`TaskGroup::cancel`]: crate::TaskGroup::cancel
    /// [`CancelScope`]: crate::CancelScope
    /// [`CancelScope::cancel`]: crate::CancelScope::cancel
    Cancelled,
    /// A graceful shutdown of the group was requested ([`TaskGroup::request_shutdown`] and the
    /// triggers on [`GroupScope`]): the task was waiting for a slot under the concurrency
    /// limit, and a group that shuts down starts nothing new. Tasks that run are not cancelled
    /// by the request, only by the end of its grace ([`GraceRanOut`](Self::GraceRanOut)).
    ///
    /// [`TaskGroup::request_shutdown`]: crate::TaskGroup::request_shutdown
    /// [`GroupScope`]: crate::GroupScope
    ShutdownRequested,
    /// The grace period of a graceful shutdown ran out: of the group itself, or of a cancel
    /// scope around it ([`CancelScope::request_shutdown`]).
    ///
    /// [`CancelScope::request_shutdown`]: crate::CancelScope::request_shutdown
    GraceRanOut,
    /// The deadline of a cancel scope around the group was reached (`move_on_after`,
    /// `fail_at`, [`CancelScope::set_deadline`], ...).
    ///
    /// [`CancelScope::set_deadline`]: crate::CancelScope::set_deadline
    DeadlineReached,
    /// The group's future was dropped before it finished, by something other than a quattro
    /// scope or group: a `tokio::select!` branch that lost, a `JoinHandle::abort` of the task
    /// running it, a plain `drop`.
    GroupDropped,
    /// The group finished normally: a background task is aborted once the body and every
    /// normal task are done, and a task spawned after that is refused.
    GroupFinished,
    /// The runtime dropped the task: it shut down (or was shut down when the task was
    /// spawned). When the runtime also drops the group's future first, the tasks report
    /// [`GroupDropped`](Self::GroupDropped) instead: whichever the runtime dropped first.
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

/// A clause that completes "task `fetch` was cancelled: ...".
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
