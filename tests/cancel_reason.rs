//! Why a task or a group was cancelled (issue 15): `TaskError::cancel_reason`,
//! `TaskError::is_unstarted` and `GroupError::cancel_reason`, for every cause: a handle's abort,
//! a failure, `cancel()`, a shutdown request and the end of its grace, a deadline or a `cancel()`
//! of an enclosing scope, a group dropped from outside, a group's normal end, the runtime
//! shutting down; and which wins when several meet.

use std::convert::Infallible;
use std::future::pending;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quattro::{CancelReason, CancelScope, TaskError, TaskGroup, TaskHandle, move_on_after};
use tokio::time::sleep;

#[path = "task_group_util/mod.rs"]
mod util;
use util::*;

/// Handles taken out of a group's body, to be awaited after the group ended.
#[derive(Clone, Default)]
struct Handles(Arc<Mutex<Vec<TaskHandle<()>>>>);

impl Handles {
    fn keep(&self, handle: TaskHandle<()>) {
        self.0.lock().unwrap().push(handle);
    }

    /// Awaits every handle kept, in order; each must have been cancelled.
    async fn cancelled(&self) -> Vec<TaskError> {
        let handles = std::mem::take(&mut *self.0.lock().unwrap());
        let mut errors = Vec::new();
        for handle in handles {
            let err = handle.await.expect_err("the task was cancelled");
            assert!(err.is_cancelled(), "{err:?}");
            errors.push(err);
        }
        errors
    }

    /// The reasons of `cancelled`.
    async fn reasons(&self) -> Vec<CancelReason> {
        let errors = self.cancelled().await;
        errors.iter().map(|e| e.cancel_reason().unwrap()).collect()
    }
}

/// A task that runs until it is cancelled.
async fn forever<E>() -> Result<(), E> {
    sleep(NEVER).await;
    Ok(())
}

// ----- TaskGroup::cancel and the end of a shutdown's grace -------------------------------------

both_runtimes! {
    /// `cancel()`: the group and its tasks say so.
    async fn cancel_is_the_reason() {
        let handles = Handles::default();
        let h = handles.clone();
        let err = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
            h.keep(tg.task("worker").spawn(forever()));
            h.keep(tg.spawn_background(forever()));
            tokio::task::yield_now().await;
            tg.cancel();
            pending::<()>().await;
            Ok(())
        })
        .await
        .unwrap_err();
        assert!(err.is_cancelled());
        assert_eq!(err.cancel_reason(), Some(CancelReason::Cancelled));
        // `cancel()` needs no explanation: the text is what it always was.
        assert_eq!(err.to_string(), "task group was cancelled");

        let errors = handles.cancelled().await;
        for err in &errors {
            assert_eq!(err.cancel_reason(), Some(CancelReason::Cancelled));
            assert!(!err.is_unstarted());
            assert_eq!(err.to_string(), "task was cancelled: the task group was cancelled");
        }
        assert_eq!(errors.len(), 2);
    }
}

both_runtimes! {
    /// A shutdown whose grace runs out: distinguishable from `cancel()`, in the group's error
    /// and in the handles of the tasks it cut.
    async fn grace_ran_out_is_not_cancel() {
        let handles = Handles::default();
        let h = handles.clone();
        let err = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
            h.keep(tg.task("stubborn").spawn(forever())); // ignores the request
            tg.request_shutdown(ms(10));
            Ok(())
        })
        .await
        .unwrap_err();
        assert!(err.is_cancelled());
        assert_eq!(err.cancel_reason(), Some(CancelReason::GraceRanOut));
        assert_eq!(err.to_string(), "task group was cancelled: the grace period ran out");
        assert!(format!("{err:?}").contains("cancel_reason: Some(GraceRanOut)"), "{err:?}");

        let errors = handles.cancelled().await;
        assert_eq!(errors[0].cancel_reason(), Some(CancelReason::GraceRanOut));
        assert_eq!(errors[0].to_string(), "task was cancelled: the grace period ran out");
    }
}

both_runtimes! {
    /// A shutdown with no grace at all: the grace ran out at once.
    async fn zero_grace_ran_out_at_once() {
        let handles = Handles::default();
        let h = handles.clone();
        let err = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
            h.keep(tg.spawn(forever()));
            tg.request_shutdown(Duration::ZERO);
            pending::<()>().await;
            Ok(())
        })
        .await
        .unwrap_err();
        assert_eq!(err.cancel_reason(), Some(CancelReason::GraceRanOut));
        assert_eq!(handles.reasons().await, [CancelReason::GraceRanOut]);
    }
}

/// A soft timeout on the group's future (`GroupScope::shutdown_after`): the grace runs out.
#[tokio::test(start_paused = true)]
async fn shutdown_after_grace_ran_out() {
    let handles = Handles::default();
    let h = handles.clone();
    let err = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
        h.keep(tg.spawn(forever()));
        Ok(())
    })
    .shutdown_after(ms(100), ms(50))
    .await
    .unwrap_err();
    assert_eq!(err.cancel_reason(), Some(CancelReason::GraceRanOut));
    assert_eq!(handles.reasons().await, [CancelReason::GraceRanOut]);
}

/// Work that finishes within the grace is a normal completion: no reason anywhere.
#[tokio::test(start_paused = true)]
async fn finishing_within_the_grace_is_no_cancellation() {
    let out = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
        let worker = tg.spawn(async {
            quattro::shutdown_requested().await;
            sleep(ms(10)).await;
            Ok(7)
        });
        tg.request_shutdown(ms(50));
        Ok(worker.await.unwrap())
    })
    .await;
    assert_eq!(out.unwrap(), 7);
}

/// A `cancel()` during the grace is the first cause: it wins over the grace's end to come.
#[tokio::test(start_paused = true)]
async fn cancel_during_the_grace_wins() {
    let err = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
        tg.spawn(forever());
        tg.request_shutdown(ms(50));
        sleep(ms(10)).await;
        tg.cancel();
        Ok(())
    })
    .await
    .unwrap_err();
    assert_eq!(err.cancel_reason(), Some(CancelReason::Cancelled));
}

/// A failure that happens while the cut is under way (a destructor that panics as its task is
/// aborted) is kept, and the message still says what cancelled the group.
#[tokio::test(start_paused = true)]
async fn failure_during_the_cut_keeps_the_grace_as_the_reason() {
    struct PanicOnDrop;
    impl Drop for PanicOnDrop {
        fn drop(&mut self) {
            panic!("cleanup failed");
        }
    }
    let err = TaskGroup::builder()
        .capture_panics()
        .scope(|tg: TaskGroup<Infallible>| async move {
            tg.task("stubborn").spawn(async {
                let _guard = PanicOnDrop;
                forever::<Infallible>().await
            });
            tg.request_shutdown(ms(10));
            Ok(())
        })
        .await
        .unwrap_err();
    assert_eq!(err.cancel_reason(), Some(CancelReason::GraceRanOut));
    assert_eq!(
        err.to_string(),
        "task group failed: task `stubborn` panicked: cleanup failed \
         (and was cancelled: the grace period ran out)"
    );
}

// ----- Failures ----------------------------------------------------------------------------------

both_runtimes! {
    /// A sibling's failure cancels the others for that reason; the group is not "cancelled":
    /// its failure says what happened.
    async fn sibling_failure_is_the_reason() {
        let handles = Handles::default();
        let h = handles.clone();
        let err = TaskGroup::scope(|tg| async move {
            h.keep(tg.task("fetch").spawn(forever()));
            h.keep(tg.spawn_background(forever()));
            tokio::task::yield_now().await;
            tg.task("parse").spawn(async { Err::<(), _>("bad input") });
            pending::<()>().await;
            Ok(())
        })
        .await
        .unwrap_err();
        assert!(!err.is_cancelled());
        assert_eq!(err.cancel_reason(), None);
        assert_eq!(err.to_string(), "task group failed: task `parse`: bad input");

        let errors = handles.cancelled().await;
        assert_eq!(errors.len(), 2);
        for err in &errors {
            assert_eq!(err.cancel_reason(), Some(CancelReason::Failure));
            assert_eq!(err.to_string(), "task was cancelled: the task group failed");
        }
    }
}

both_runtimes! {
    /// A body that fails cancels the tasks for the same reason.
    async fn body_failure_is_the_reason() {
        let handles = Handles::default();
        let h = handles.clone();
        let err = TaskGroup::scope(|tg| async move {
            h.keep(tg.spawn(forever()));
            Err::<(), _>("the body gave up")
        })
        .await
        .unwrap_err();
        assert_eq!(err.cancel_reason(), None);
        assert_eq!(handles.reasons().await, [CancelReason::Failure]);
    }
}

both_runtimes! {
    /// A panic is a failure too (captured here, so that it is returned rather than resumed).
    async fn panic_is_a_failure() {
        let handles = Handles::default();
        let h = handles.clone();
        let err = TaskGroup::builder()
            .capture_panics()
            .scope(|tg: TaskGroup<Infallible>| async move {
                h.keep(tg.spawn(forever()));
                tg.spawn(async {
                    if true {
                        panic!("bug");
                    }
                    Ok(())
                });
                pending::<()>().await;
                Ok(())
            })
            .await
            .unwrap_err();
        assert!(err.has_panic());
        assert_eq!(handles.reasons().await, [CancelReason::Failure]);
    }
}

/// A failure that an isolating group's handler passes back cancels the group like any other.
#[tokio::test(start_paused = true)]
async fn escalated_failure_is_a_failure() {
    let handles = Handles::default();
    let h = handles.clone();
    let err = TaskGroup::builder()
        .isolate_failures(|failure: quattro::Failure<&'static str>| Err(failure))
        .scope(|tg| async move {
            h.keep(tg.spawn(forever()));
            tg.spawn(async { Err::<(), _>("fatal") });
            pending::<()>().await;
            Ok(())
        })
        .await
        .unwrap_err();
    assert_eq!(err.errors().collect::<Vec<_>>(), [&"fatal"]);
    assert_eq!(handles.reasons().await, [CancelReason::Failure]);
}

// ----- A handle's abort --------------------------------------------------------------------------

both_runtimes! {
    /// `TaskHandle::abort`: the task says its handle aborted it, and the group runs on.
    async fn handle_abort_is_the_reason() {
        let out = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
            let started = tg.task("fetch").spawn(forever());
            tokio::task::yield_now().await;
            started.abort();
            let err = started.await.unwrap_err();
            assert_eq!(err.cancel_reason(), Some(CancelReason::Aborted));
            assert!(!err.is_unstarted());
            assert_eq!(err.to_string(), "task was cancelled: its handle aborted it");
            // Aborted before the runtime got to it: the same.
            let fresh = tg.spawn(forever());
            fresh.abort();
            Ok(fresh.await.unwrap_err().cancel_reason())
        })
        .await;
        assert_eq!(out.unwrap(), Some(CancelReason::Aborted));
    }
}

both_runtimes! {
    /// The first cause wins: an abort after the group started cancelling keeps the group's
    /// reason; a group cancelled after the abort keeps the abort's.
    async fn first_cause_wins_between_abort_and_group() {
        let handles = Handles::default();
        let h = handles.clone();
        let err = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
            let aborted_first = tg.spawn(forever());
            let aborted_late = tg.spawn(forever());
            aborted_first.abort();
            tg.cancel();
            aborted_late.abort(); // the group got there first
            h.keep(aborted_first);
            h.keep(aborted_late);
            Ok(())
        })
        .await
        .unwrap_err();
        assert_eq!(err.cancel_reason(), Some(CancelReason::Cancelled));
        assert_eq!(
            handles.reasons().await,
            [CancelReason::Aborted, CancelReason::Cancelled]
        );
    }
}

// ----- Enclosing scopes --------------------------------------------------------------------------

both_runtimes! {
    /// The deadline of a `move_on_after` around the group: the group is dropped (its future
    /// yields nothing), and its tasks say a deadline was reached.
    async fn enclosing_deadline_is_the_reason() {
        let handles = Handles::default();
        let h = handles.clone();
        let out = move_on_after(
            ms(10),
            TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
                h.keep(tg.task("slow").spawn(forever()));
                h.keep(tg.spawn_background(forever()));
                pending::<()>().await;
                Ok(())
            }),
        )
        .await;
        assert!(out.is_none());
        let errors = handles.cancelled().await;
        assert_eq!(errors.len(), 2);
        for err in &errors {
            assert_eq!(err.cancel_reason(), Some(CancelReason::DeadlineReached));
            assert_eq!(err.to_string(), "task was cancelled: a deadline was reached");
        }
    }
}

both_runtimes! {
    /// `CancelScope::cancel` of a scope around the group: cancelled on request.
    async fn enclosing_scope_cancel_is_the_reason() {
        let handles = Handles::default();
        let h = handles.clone();
        let scope = CancelScope::new();
        let canceller = scope.clone();
        let out = scope
            .move_on(TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
                h.keep(tg.spawn(forever()));
                tokio::task::yield_now().await;
                canceller.cancel();
                pending::<()>().await;
                Ok(())
            }))
            .await;
        assert!(out.is_none());
        assert_eq!(handles.reasons().await, [CancelReason::Cancelled]);
    }
}

/// A scope around the group whose shutdown grace runs out: the grace ran out, not a deadline.
#[tokio::test(start_paused = true)]
async fn enclosing_scope_grace_ran_out_is_the_reason() {
    let handles = Handles::default();
    let h = handles.clone();
    let scope = CancelScope::new();
    let outer = scope.clone();
    let out = scope
        .move_on(TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
            h.keep(tg.spawn(forever()));
            outer.request_shutdown(ms(20));
            pending::<()>().await;
            Ok(())
        }))
        .await;
    assert!(out.is_none());
    assert_eq!(handles.reasons().await, [CancelReason::GraceRanOut]);
}

// ----- Dropped from outside ----------------------------------------------------------------------

both_runtimes! {
    /// A `select!` branch that loses drops the group: its tasks say the group was dropped.
    async fn group_dropped_by_select_is_the_reason() {
        let handles = Handles::default();
        let h = handles.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let group = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
            h.keep(tg.task("stream").spawn(forever()));
            let _ = tx.send(()); // the task was spawned: let the other branch win
            pending::<()>().await;
            Ok(())
        });
        tokio::select! {
            _ = group => unreachable!("the group never ends on its own"),
            _ = rx => {}
        }
        let errors = handles.cancelled().await;
        assert_eq!(errors[0].cancel_reason(), Some(CancelReason::GroupDropped));
        assert_eq!(errors[0].to_string(), "task was cancelled: the task group was dropped");
    }
}

both_runtimes! {
    /// A group dropped with the task of an enclosing group that fails takes that group's
    /// reason: its tasks were cancelled because the outer group failed.
    async fn nested_group_takes_the_enclosing_reason() {
        let handles = Handles::default();
        let h = handles.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let err = TaskGroup::scope(|outer| async move {
            outer.spawn(async move {
                TaskGroup::scope(|inner: TaskGroup<Infallible>| async move {
                    h.keep(inner.spawn(forever()));
                    let _ = tx.send(());
                    pending::<()>().await;
                    Ok(())
                })
                .await
                .map_err(|_| "inner")
            });
            let _ = rx.await;
            outer.spawn(async { Err::<(), _>("outer task failed") });
            pending::<()>().await;
            Ok(())
        })
        .await
        .unwrap_err();
        assert_eq!(err.errors().collect::<Vec<_>>(), [&"outer task failed"]);
        assert_eq!(handles.reasons().await, [CancelReason::Failure]);
    }
}

// ----- Normal end, refusals ----------------------------------------------------------------------

both_runtimes! {
    /// A background task is aborted when the group finished normally; a spawn into the
    /// finished group is refused, never started, for the same reason.
    async fn background_task_at_normal_end() {
        let handles = Handles::default();
        let h = handles.clone();
        let tg = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
            h.keep(tg.task("heartbeat").spawn_background(forever()));
            tg.spawn(async { Ok(()) }).await.unwrap();
            Ok(tg.clone())
        })
        .await
        .unwrap();
        let errors = handles.cancelled().await;
        assert_eq!(errors[0].cancel_reason(), Some(CancelReason::GroupFinished));
        assert!(!errors[0].is_unstarted());
        assert_eq!(errors[0].to_string(), "task was cancelled: the task group finished");

        let late = tg.spawn(async { Ok(()) }).await.unwrap_err();
        assert_eq!(late.cancel_reason(), Some(CancelReason::GroupFinished));
        assert!(late.is_unstarted());
        assert_eq!(
            late.to_string(),
            "task was cancelled before it started: the task group finished"
        );
    }
}

both_runtimes! {
    /// A spawn into a group that is cancelling is refused for the group's reason.
    async fn spawn_refused_while_cancelling() {
        let out = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
            tg.cancel();
            let refused = tg.spawn(async { Ok(()) }).await.unwrap_err();
            assert!(refused.is_unstarted());
            assert_eq!(refused.cancel_reason(), Some(CancelReason::Cancelled));
            Ok(())
        })
        .await;
        assert_eq!(out.unwrap_err().cancel_reason(), Some(CancelReason::Cancelled));
    }
}

// ----- Queued tasks (concurrency limit): never started -------------------------------------------

both_runtimes! {
    /// Tasks waiting for a slot when a sibling fails are dropped unstarted, for that reason,
    /// and named in the text.
    async fn queued_tasks_never_started_on_failure() {
        let handles = Handles::default();
        let h = handles.clone();
        let err = TaskGroup::builder()
            .concurrency_limit(2)
            .scope(|tg| async move {
                h.keep(tg.task("running").spawn(forever()));
                tg.spawn(async {
                    sleep(ms(5)).await;
                    Err::<(), _>("boom")
                });
                h.keep(tg.task("queued").spawn(forever())); // waits for a slot
                h.keep(tg.spawn(forever()));
                pending::<()>().await;
                Ok(())
            })
            .await
            .unwrap_err();
        assert_eq!(err.errors().collect::<Vec<_>>(), [&"boom"]);
        let errors = handles.cancelled().await;
        let unstarted: Vec<_> = errors.iter().map(TaskError::is_unstarted).collect();
        assert_eq!(unstarted, [false, true, true]);
        for err in &errors {
            assert_eq!(err.cancel_reason(), Some(CancelReason::Failure));
        }
        assert_eq!(
            errors[1].to_string(),
            "task `queued` was cancelled before it started: the task group failed"
        );
        // An unnamed queued task is named by where it was spawned.
        let text = errors[2].to_string();
        assert!(text.starts_with("task spawned at tests/cancel_reason.rs:"), "{text}");
        assert!(text.ends_with(" was cancelled before it started: the task group failed"), "{text}");
    }
}

both_runtimes! {
    /// A queued task aborted through its handle: never started, aborted.
    async fn queued_task_aborted_never_started() {
        let out = TaskGroup::builder()
            .concurrency_limit(1)
            .scope(|tg: TaskGroup<Infallible>| async move {
                let running = tg.spawn(forever());
                let queued = tg.spawn(forever());
                queued.abort();
                let err = queued.await.unwrap_err();
                running.abort();
                Ok((err.cancel_reason(), err.is_unstarted()))
            })
            .await;
        assert_eq!(out.unwrap(), (Some(CancelReason::Aborted), true));
    }
}

both_runtimes! {
    /// A shutdown request drops the queue at once (a group shutting down starts nothing new):
    /// the queued tasks never started, for the request itself, while the running one finishes
    /// within the grace.
    async fn queued_tasks_never_started_on_shutdown() {
        let out = TaskGroup::builder()
            .concurrency_limit(1)
            .scope(|tg: TaskGroup<Infallible>| async move {
                let running = tg.spawn(async {
                    quattro::shutdown_requested().await;
                    Ok(())
                });
                let queued = tg.task("next").spawn(async { Ok(()) });
                tg.request_shutdown(Duration::from_secs(60));
                let err = queued.await.unwrap_err();
                running.await.unwrap();
                Ok(err)
            })
            .await
            .unwrap();
        assert!(out.is_unstarted());
        assert_eq!(out.cancel_reason(), Some(CancelReason::ShutdownRequested));
        assert_eq!(
            out.to_string(),
            "task `next` was cancelled before it started: a shutdown was requested"
        );
    }
}

/// A queued task dropped when an enclosing deadline drops its group: never started, deadline.
#[tokio::test(start_paused = true)]
async fn queued_task_dropped_by_enclosing_deadline() {
    let handles = Handles::default();
    let h = handles.clone();
    let out = move_on_after(
        ms(10),
        TaskGroup::builder()
            .concurrency_limit(1)
            .scope(|tg: TaskGroup<Infallible>| async move {
                h.keep(tg.spawn(forever()));
                h.keep(tg.spawn(forever()));
                pending::<()>().await;
                Ok(())
            }),
    )
    .await;
    assert!(out.is_none());
    let errors = handles.cancelled().await;
    let got: Vec<_> = errors
        .iter()
        .map(|e| (e.cancel_reason().unwrap(), e.is_unstarted()))
        .collect();
    assert_eq!(
        got,
        [
            (CancelReason::DeadlineReached, false),
            (CancelReason::DeadlineReached, true)
        ]
    );
}

// ----- The runtime -------------------------------------------------------------------------------

/// A task dropped by its runtime shutting down, while its group still runs elsewhere: neither
/// its handle nor its group cancelled it.
#[test]
fn runtime_shutdown_is_the_reason() {
    let handles = Handles::default();
    let h = handles.clone();
    let mut group = Box::pin(TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
        h.keep(tg.spawn(forever()));
        pending::<()>().await;
        Ok(())
    }));
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    // One poll: the group spawns its task on this runtime, then the runtime goes away.
    first.block_on(async {
        let polled = futures::poll!(group.as_mut());
        assert!(polled.is_pending());
    });
    drop(first);

    let second = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let errors = second.block_on(handles.cancelled());
    assert_eq!(
        errors[0].cancel_reason(),
        Some(CancelReason::RuntimeShutdown)
    );
    assert_eq!(
        errors[0].to_string(),
        "task was cancelled: the runtime shut down"
    );
    drop(group);
}

// ----- The type ----------------------------------------------------------------------------------

#[test]
fn reasons_are_plain_values() {
    let reason = CancelReason::GraceRanOut;
    let copy = reason;
    assert_eq!(reason, copy);
    assert_ne!(reason, CancelReason::Cancelled);
    assert_eq!(format!("{reason:?}"), "GraceRanOut");
    assert_eq!(reason.to_string(), "the grace period ran out");
    let texts = [
        (CancelReason::Aborted, "its handle aborted it"),
        (CancelReason::Failure, "the task group failed"),
        (CancelReason::Cancelled, "the task group was cancelled"),
        (CancelReason::ShutdownRequested, "a shutdown was requested"),
        (CancelReason::GraceRanOut, "the grace period ran out"),
        (CancelReason::DeadlineReached, "a deadline was reached"),
        (CancelReason::GroupDropped, "the task group was dropped"),
        (CancelReason::GroupFinished, "the task group finished"),
        (CancelReason::RuntimeShutdown, "the runtime shut down"),
    ];
    for (reason, text) in texts {
        assert_eq!(reason.to_string(), text);
    }
}

/// A `TaskError` that is not a cancellation has no reason.
#[tokio::test]
async fn only_cancellations_have_a_reason() {
    let out = TaskGroup::builder()
        .isolate_failures(|_: quattro::Failure<&'static str>| Ok(()))
        .scope(|tg| async move {
            let failed = tg.spawn(async { Err::<(), _>("no") }).await.unwrap_err();
            Ok((
                failed.is_failed(),
                failed.cancel_reason(),
                failed.is_unstarted(),
            ))
        })
        .await;
    assert_eq!(out.unwrap(), (true, None, false));
}

/// A scope's deadline that passes while an enclosing group's shutdown grace runs is a
/// deadline, not the grace running out (the grace still had a minute to go).
#[tokio::test(start_paused = true)]
async fn a_deadline_inside_a_shutdown_grace_is_a_deadline() {
    TaskGroup::scope(|outer: TaskGroup<()>| async move {
        outer.request_shutdown(Duration::from_secs(60));
        let mut handle = None;
        let slot = &mut handle;
        let inner = TaskGroup::scope(|inner: TaskGroup<()>| async move {
            *slot = Some(inner.spawn(pending::<Result<(), ()>>()));
            pending::<Result<(), ()>>().await
        });
        assert!(move_on_after(ms(10), inner).await.is_none());
        let err = handle.unwrap().await.unwrap_err();
        assert_eq!(
            err.cancel_reason(),
            Some(CancelReason::DeadlineReached),
            "{err}"
        );
        Ok(())
    })
    .await
    .unwrap();
}
