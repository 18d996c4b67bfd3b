//! Deadlines: when they are computed, how they move, how they flow into
//! `current_effective_deadline()`, and that a scope leaves no timer behind.
//!
//! Exact timings use tokio's paused clock. Behaviours that depend on timers racing other tasks
//! also run on a two-worker multi-thread runtime with real time (see [`on_both_runtimes!`]),
//! where only order and semantics are asserted, never tight bounds.

use std::future::{Future, pending};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quattro::{
    CancelScope, current_effective_deadline, fail_after, fail_at, move_on_after, move_on_at,
};
use tokio::time::{Instant, advance, sleep, sleep_until};
use tokio_test::{assert_pending, assert_ready, assert_ready_eq, task};

// ---------------------------------------------------------------------------------------------
// Helpers

#[macro_use]
mod scope_util;
use scope_util::*;

/// Records `current_effective_deadline()` when it is dropped.
struct RecordDeadlineOnDrop(Arc<Mutex<Option<Option<Instant>>>>);

impl Drop for RecordDeadlineOnDrop {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = Some(current_effective_deadline());
    }
}

fn drop_recorder() -> (RecordDeadlineOnDrop, Arc<Mutex<Option<Option<Instant>>>>) {
    let seen = Arc::new(Mutex::new(None));
    (RecordDeadlineOnDrop(seen.clone()), seen)
}

// ---------------------------------------------------------------------------------------------
// current_effective_deadline(): nesting and flow

#[tokio::test(start_paused = true)]
async fn effective_deadline_is_the_scope_deadline_inside_and_none_outside() {
    assert_eq!(current_effective_deadline(), None);
    let deadline = Instant::now() + secs(10);
    let seen = move_on_at(deadline, async { current_effective_deadline() }).await;
    assert_eq!(seen, Some(Some(deadline)));
    assert_eq!(current_effective_deadline(), None);
}

#[tokio::test(start_paused = true)]
async fn effective_deadline_is_the_earliest_of_nested_scopes() {
    let deadline = Instant::now() + secs(10);
    move_on_at(deadline, async move {
        assert_eq!(current_effective_deadline(), Some(deadline));

        let earlier = deadline - secs(5);
        fail_at(earlier, async move {
            assert_eq!(current_effective_deadline(), Some(earlier));
        })
        .await
        .unwrap();
        assert_eq!(current_effective_deadline(), Some(deadline));

        move_on_at(deadline + secs(5), async move {
            assert_eq!(current_effective_deadline(), Some(deadline));
        })
        .await
        .unwrap();

        // A scope without a deadline inherits the enclosing one.
        CancelScope::new()
            .move_on(async move {
                assert_eq!(current_effective_deadline(), Some(deadline));
            })
            .await
            .unwrap();
    })
    .await
    .unwrap();
    assert_eq!(current_effective_deadline(), None);
}

#[tokio::test(start_paused = true)]
async fn effective_deadline_is_the_outer_one_again_after_an_inner_fail_times_out() {
    let start = Instant::now();
    let deadline = start + secs(1);
    let out = move_on_at(deadline, async move {
        assert_eq!(current_effective_deadline(), Some(deadline));

        let fail_deadline = deadline - ms(700);
        let res = fail_at(fail_deadline, async move {
            assert_eq!(current_effective_deadline(), Some(fail_deadline));
            sleep(secs(1)).await;
        })
        .await;
        assert!(res.unwrap_err().is_deadline_reached());
        assert_eq!(start.elapsed(), ms(300));
        assert_eq!(current_effective_deadline(), Some(deadline));

        move_on_at(deadline + secs(1), async move {
            assert_eq!(current_effective_deadline(), Some(deadline));
        })
        .await
        .unwrap();
        "done"
    })
    .await;
    assert_eq!(out, Some("done"));
    assert_eq!(current_effective_deadline(), None);
}

#[tokio::test(start_paused = true)]
async fn effective_deadline_follows_moved_and_removed_deadlines() {
    let deadline = Instant::now() + secs(10);
    let scope = CancelScope::with_deadline(deadline);
    let handle = scope.clone();
    scope
        .move_on(async move {
            assert_eq!(current_effective_deadline(), Some(deadline));

            // A move is visible at once, without a suspension.
            let later = deadline + secs(1);
            handle.set_deadline(Some(later));
            assert_eq!(current_effective_deadline(), Some(later));

            let fail_deadline = deadline - secs(5);
            fail_at(fail_deadline, async move {
                assert_eq!(current_effective_deadline(), Some(fail_deadline));
            })
            .await
            .unwrap();
            assert_eq!(current_effective_deadline(), Some(later));

            move_on_at(deadline + secs(5), async move {
                assert_eq!(current_effective_deadline(), Some(later));
                // Moving the outer deadline from inside an inner scope shows through too.
                handle.set_deadline(None);
                assert_eq!(current_effective_deadline(), Some(deadline + secs(5)));
            })
            .await
            .unwrap();
            assert_eq!(current_effective_deadline(), None);
        })
        .await
        .unwrap();
    assert_eq!(current_effective_deadline(), None);
    assert!(!scope.cancelled_caught());
}

#[tokio::test(start_paused = true)]
async fn precancelled_scope_has_an_effective_deadline_of_now_inside_only() {
    let scope = CancelScope::with_deadline(Instant::now() + secs(10));
    scope.cancel();
    assert_eq!(current_effective_deadline(), None);
    let seen = scope.move_on(async { current_effective_deadline() }).await;
    let seen = seen
        .expect("a ready future returns its value")
        .expect("cancelled counts");
    assert!(seen <= Instant::now());
    assert_eq!(current_effective_deadline(), None);
}

#[tokio::test(start_paused = true)]
async fn cancel_makes_the_effective_deadline_now_at_once() {
    let deadline = Instant::now() + secs(10);
    let outer = CancelScope::with_deadline(deadline);
    let handle = outer.clone();
    let out = outer
        .move_on(async move {
            move_on_after(secs(60), async move {
                assert_eq!(current_effective_deadline(), Some(deadline));
                // Cancelling an enclosing scope shows in the inner one before any suspension.
                handle.cancel();
                let seen = current_effective_deadline().unwrap();
                assert!(seen <= Instant::now());
                sleep(secs(1)).await;
            })
            .await;
            unreachable!("the outer scope was cancelled");
        })
        .await;
    assert_eq!(out, None::<()>);
    assert!(outer.cancelled_caught());
}

#[tokio::test(start_paused = true)]
async fn effective_deadline_is_readable_in_drop_of_a_future_cancelled_by_its_deadline() {
    let deadline = Instant::now() + secs(1);
    let (guard, seen) = drop_recorder();
    let out = move_on_at(deadline, async move {
        let _guard = guard;
        sleep(secs(5)).await;
    })
    .await;
    assert_eq!(out, None);
    assert_eq!(*seen.lock().unwrap(), Some(Some(deadline)));
}

#[tokio::test(start_paused = true)]
async fn effective_deadline_is_readable_in_drop_of_a_future_cancelled_by_cancel() {
    let scope = CancelScope::with_timeout(secs(10));
    let handle = scope.clone();
    let (guard, seen) = drop_recorder();
    let out = scope
        .fail(async move {
            let _guard = guard;
            sleep(secs(1)).await;
            handle.cancel();
            sleep(secs(5)).await;
        })
        .await;
    assert!(out.unwrap_err().is_cancel_called());
    let seen = seen.lock().unwrap().expect("dropped").expect("a deadline");
    assert!(seen <= Instant::now());
}

#[tokio::test(start_paused = true)]
async fn effective_deadline_in_drop_sees_the_inner_chain_when_an_outer_scope_cancels() {
    let outer_deadline = Instant::now() + secs(1);
    let inner_deadline = outer_deadline + secs(1);
    let (guard, seen) = drop_recorder();
    let out = move_on_at(outer_deadline, async move {
        // The inner deadline is later: the drop sees the outer one, as the chain is intact.
        move_on_at(inner_deadline, async move {
            let _guard = guard;
            pending::<()>().await;
        })
        .await;
    })
    .await;
    assert_eq!(out, None);
    assert_eq!(*seen.lock().unwrap(), Some(Some(outer_deadline)));
}

#[tokio::test(start_paused = true)]
async fn effective_deadline_is_readable_in_drop_when_the_task_is_aborted() {
    let deadline = Instant::now() + secs(10);
    let (guard, seen) = drop_recorder();
    let task = tokio::spawn(move_on_at(deadline, async move {
        let _guard = guard;
        pending::<()>().await;
    }));
    sleep(secs(1)).await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_eq!(*seen.lock().unwrap(), Some(Some(deadline)));
}

#[test]
fn effective_deadline_is_none_without_a_runtime() {
    assert_eq!(current_effective_deadline(), None);
}

#[test]
fn a_scope_around_a_ready_future_runs_without_a_runtime() {
    // Building and running a scope whose future never suspends touches no timer.
    let deadline = Instant::now() + secs(10);
    let seen =
        futures::executor::block_on(move_on_at(deadline, async { current_effective_deadline() }));
    assert_eq!(seen, Some(Some(deadline)));
    assert_eq!(current_effective_deadline(), None);
}

// ---------------------------------------------------------------------------------------------
// When a deadline is computed, and extreme values

#[tokio::test(start_paused = true)]
async fn relative_timeout_becomes_a_deadline_when_the_scope_is_created() {
    let start = Instant::now();
    let fut = move_on_after(secs(2), sleep(secs(5)));
    let scope = fut.cancel_scope();
    assert_eq!(scope.deadline(), Some(start + secs(2)));
    // Time spent before the first poll counts against the timeout.
    sleep(secs(1)).await;
    assert_eq!(fut.await, None);
    assert_eq!(start.elapsed(), secs(2));
    assert!(scope.cancelled_caught());

    let start = Instant::now();
    let scope = CancelScope::with_timeout(secs(2));
    advance(secs(1)).await;
    assert!(
        scope
            .fail(sleep(secs(5)))
            .await
            .unwrap_err()
            .is_deadline_reached()
    );
    assert_eq!(start.elapsed(), secs(2));
}

#[tokio::test(start_paused = true)]
async fn deadline_is_readable_before_during_and_after_the_run() {
    let deadline = Instant::now() + secs(1) + Duration::from_nanos(7);
    let scope = CancelScope::with_deadline(deadline);
    assert_eq!(scope.deadline(), Some(deadline));
    let handle = scope.clone();
    let out = scope
        .move_on(async move {
            assert_eq!(handle.deadline(), Some(deadline));
            sleep(secs(2)).await;
        })
        .await;
    assert_eq!(out, None);
    assert_eq!(scope.deadline(), Some(deadline));
    assert_eq!(CancelScope::new().deadline(), None);
    assert_eq!(CancelScope::default().deadline(), None);
}

#[tokio::test(start_paused = true)]
async fn duration_max_means_never_and_does_not_panic() {
    let start = Instant::now();
    let scope = CancelScope::with_timeout(Duration::MAX);
    let deadline = scope.deadline().expect("a far-future deadline");
    assert!(deadline > start + secs(20 * 365 * 86_400));
    let handle = scope.clone();
    let out = scope
        .fail(async move {
            assert_eq!(current_effective_deadline(), handle.deadline());
            sleep(secs(3600)).await;
            7
        })
        .await;
    assert_eq!(out, Ok(7));
    assert_eq!(start.elapsed(), secs(3600));
    assert!(!scope.is_cancelled());

    assert_eq!(move_on_after(Duration::MAX, sleep(secs(1))).await, Some(()));
    assert_eq!(fail_after(Duration::MAX, async { 1 }).await, Ok(1));
}

#[tokio::test(start_paused = true)]
async fn deadline_far_in_the_future_does_not_panic() {
    let far = Instant::now() + secs(1000 * 365 * 86_400);
    let scope = CancelScope::with_deadline(far);
    assert!(scope.deadline().unwrap() > Instant::now() + secs(100 * 365 * 86_400));
    assert_eq!(scope.move_on(sleep(secs(1))).await, Some(()));
    assert!(!scope.cancelled_caught());
}

#[tokio::test(start_paused = true)]
async fn duration_zero_cancels_at_the_first_suspension() {
    let start = Instant::now();
    // Ready on the first poll: the value wins.
    assert_eq!(fail_after(Duration::ZERO, async { 7 }).await, Ok(7));
    let fut = fail_after(Duration::ZERO, sleep(secs(1)));
    let scope = fut.cancel_scope();
    assert!(fut.await.unwrap_err().is_deadline_reached());
    assert!(scope.cancelled_caught());
    assert_eq!(move_on_after(Duration::ZERO, sleep(secs(1))).await, None);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn deadlines_far_in_the_past_cancel_at_once() {
    let start = Instant::now();
    for ago in [
        ms(1),
        secs(3600),
        secs(365 * 86_400),
        secs(200 * 365 * 86_400),
    ] {
        let past = start - ago;
        let scope = CancelScope::with_deadline(past);
        assert!(scope.deadline().unwrap() <= start);
        assert!(scope.is_cancelled());
        let res = scope.fail(sleep(secs(1))).await;
        assert!(res.unwrap_err().is_deadline_reached(), "{ago:?} ago");
        assert!(scope.cancelled_caught());
        // A ready future still returns its value.
        assert_eq!(move_on_at(past, async { 3 }).await, Some(3));
    }
    // Within the range the encoding covers, the deadline reads back exactly.
    let past = start - secs(3600);
    assert_eq!(CancelScope::with_deadline(past).deadline(), Some(past));
    assert_eq!(start.elapsed(), Duration::ZERO);
}

// ---------------------------------------------------------------------------------------------
// Moving deadlines while the scope runs

on_both_runtimes! {
    /// Python: test_move_on_after_move_deadline / test_fail_after_move_deadline.
    async fn move_deadline_later(clock) {
        let start = Instant::now();
        let scope = CancelScope::with_timeout(clock.t(1));
        let handle = scope.clone();
        let res = scope
            .fail(async move {
                sleep(clock.t(1) / 10).await;
                handle.set_deadline(handle.deadline().map(|d| d + clock.t(1)));
                clock.forever().await;
            })
            .await;
        assert!(res.unwrap_err().is_deadline_reached());
        assert!(scope.cancelled_caught());
        clock.assert_elapsed(start, 2);
    }

    /// Python: test_move_on_after_remove_deadline / test_fail_after_remove_deadline.
    async fn remove_deadline(clock) {
        let start = Instant::now();
        let scope = CancelScope::with_timeout(clock.t(2));
        let handle = scope.clone();
        let out = scope
            .move_on(async move {
                handle.set_deadline(None);
                sleep(clock.t(3)).await;
                "finished"
            })
            .await;
        assert_eq!(out, Some("finished"));
        assert!(!scope.cancelled_caught());
        assert!(!scope.is_cancelled());
        assert_eq!(scope.deadline(), None);
        clock.assert_elapsed(start, 3);
    }

    /// Python: test_move_on_after_move_deadline_to_past.
    async fn move_deadline_into_the_past(clock) {
        let start = Instant::now();
        let scope = CancelScope::with_timeout(clock.t(5));
        let handle = scope.clone();
        let res = scope
            .fail(async move {
                sleep(clock.t(1)).await;
                handle.set_deadline(Some(Instant::now() - clock.t(1)));
                clock.forever().await;
            })
            .await;
        assert!(res.unwrap_err().is_deadline_reached());
        assert!(scope.cancelled_caught());
        // Promptly: on the paused clock no time passes between the move and the cancellation.
        clock.assert_elapsed(start, 1);
    }

    /// Python: test_fail_after_move_noop.
    async fn moving_the_deadline_by_zero_changes_nothing(clock) {
        let start = Instant::now();
        let scope = CancelScope::with_timeout(clock.t(2));
        let handle = scope.clone();
        let res = scope
            .fail(async move {
                sleep(clock.t(1)).await;
                handle.set_deadline(handle.deadline());
                clock.forever().await;
            })
            .await;
        assert!(res.unwrap_err().is_deadline_reached());
        clock.assert_elapsed(start, 2);
        // Nothing lingers after the scope.
        sleep(clock.t(1)).await;
        clock.assert_elapsed(start, 3);
    }

    /// Python: test_deadline_outside_context.
    async fn deadline_set_before_the_scope_runs_applies(clock) {
        let start = Instant::now();
        let scope = CancelScope::new();
        scope.set_deadline(Some(start + clock.t(1)));
        let res = scope.fail(clock.forever()).await;
        assert!(res.unwrap_err().is_deadline_reached());
        clock.assert_elapsed(start, 1);
    }

    async fn set_deadline_from_another_task_takes_effect_at_once(clock) {
        let start = Instant::now();
        let scope = CancelScope::with_timeout(clock.t(100));
        let handle = scope.clone();
        let mover = tokio::spawn(async move {
            sleep(clock.t(1)).await;
            handle.set_deadline(Some(Instant::now() + clock.t(1)));
        });
        let res = scope.fail(clock.forever()).await;
        assert!(res.unwrap_err().is_deadline_reached());
        clock.assert_elapsed(start, 2);
        mover.await.unwrap();
    }

    /// An inner scope whose deadline is later than the outer one leans on the outer timer;
    /// when the outer deadline moves away, the inner deadline must still fire on time.
    async fn inner_deadline_fires_after_the_covering_outer_deadline_moves_later(clock) {
        let start = Instant::now();
        let outer = CancelScope::with_timeout(clock.t(1));
        let handle = outer.clone();
        let inner = CancelScope::with_timeout(clock.t(2));
        let inner2 = inner.clone();
        let out = outer
            .move_on(async move {
                let res = inner2
                    .fail(async move {
                        sleep(clock.t(1) / 2).await;
                        handle.set_deadline(Some(start + clock.t(5)));
                        clock.forever().await;
                    })
                    .await;
                assert!(res.unwrap_err().is_deadline_reached());
                clock.assert_elapsed(start, 2);
                "inner fired"
            })
            .await;
        assert_eq!(out, Some("inner fired"));
        assert!(inner.cancelled_caught());
        assert!(!outer.cancelled_caught());
    }

    async fn inner_deadline_fires_after_the_covering_outer_deadline_is_removed(clock) {
        let start = Instant::now();
        let outer = CancelScope::with_timeout(clock.t(1));
        let handle = outer.clone();
        let inner = CancelScope::with_timeout(clock.t(2));
        let inner2 = inner.clone();
        let out = outer
            .move_on(async move {
                inner2
                    .move_on(async move {
                        handle.set_deadline(None);
                        clock.forever().await;
                    })
                    .await
            })
            .await;
        assert_eq!(out, Some(None));
        assert!(inner.cancelled_caught());
        assert!(!outer.cancelled_caught());
        clock.assert_elapsed(start, 2);
    }

    /// An outer deadline moved before an inner one that has its own timer wins.
    async fn outer_deadline_moved_earlier_than_the_inner_wins(clock) {
        let start = Instant::now();
        let outer = CancelScope::with_timeout(clock.t(5));
        let handle = outer.clone();
        let inner = CancelScope::with_timeout(clock.t(3));
        let inner2 = inner.clone();
        let out = outer
            .move_on(async move {
                inner2
                    .move_on(async move {
                        sleep(clock.t(1) / 2).await;
                        handle.set_deadline(Some(start + clock.t(1)));
                        clock.forever().await;
                    })
                    .await;
                unreachable!("the outer scope was cancelled");
            })
            .await;
        assert_eq!(out, None::<()>);
        assert!(outer.cancelled_caught());
        assert!(!inner.cancelled_caught());
        clock.assert_elapsed(start, 1);
    }
}

/// Python: test_set_deadline_inside.
#[tokio::test(start_paused = true)]
async fn set_deadline_inside_a_scope_without_deadline_cancels_at_the_next_suspension() {
    let start = Instant::now();
    let scope = CancelScope::new();
    let handle = scope.clone();
    let res = scope
        .fail(async move {
            handle.set_deadline(Some(Instant::now() - secs(1)));
            tokio::task::yield_now().await;
            unreachable!("cancelled at the yield");
        })
        .await;
    assert!(res.unwrap_err().is_deadline_reached());
    assert!(scope.cancelled_caught());
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn set_deadline_after_the_scope_finished_has_no_effect() {
    let start = Instant::now();
    let scope = CancelScope::with_timeout(secs(5));
    let handle = scope.clone();
    let mut task = task::spawn(async move {
        let out = handle.move_on(sleep(secs(1))).await;
        pending::<()>().await;
        out
    });
    assert_pending!(task.poll());
    advance(secs(1)).await;
    assert!(task.is_woken());
    assert_pending!(task.poll());

    let past = Instant::now() - secs(1);
    scope.set_deadline(Some(past));
    assert_eq!(scope.deadline(), Some(past));
    scope.set_deadline(None);
    scope.set_deadline(Some(start + secs(2)));
    assert!(!task.is_woken(), "a finished scope must not wake its task");
    advance(secs(10)).await;
    assert!(!task.is_woken());
    assert!(!scope.cancelled_caught());
}

// ---------------------------------------------------------------------------------------------
// One timer, and nothing left behind

#[tokio::test(start_paused = true)]
async fn ten_thousand_deadline_moves_wake_the_task_once_at_the_final_deadline() {
    let start = Instant::now();
    let scope = CancelScope::with_timeout(ms(1));
    let (body, polls) = count_polls(pending::<()>());
    let mut task = task::spawn(scope.move_on(body));
    assert_pending!(task.poll());

    // Each move is followed by a poll that resets the timer: every old deadline (1 ms to
    // 10 s) would wake the task if its timer entry were left behind.
    for i in 1..=10_000u64 {
        scope.set_deadline(Some(start + ms(i)));
        assert!(task.is_woken(), "a move wakes the running scope");
        assert_pending!(task.poll());
    }
    let last = start + secs(20);
    scope.set_deadline(Some(last));
    assert_pending!(task.poll());
    let polls_before = polls.load(Ordering::SeqCst);
    assert_eq!(polls_before, 10_002);

    advance(secs(20) - ms(1)).await;
    assert!(!task.is_woken(), "woken before the final deadline");
    advance(ms(1)).await;
    assert!(task.is_woken(), "not woken at the final deadline");
    assert_ready_eq!(task.poll(), None);
    // The inner future was polled once more, at the deadline, and then dropped.
    assert_eq!(polls.load(Ordering::SeqCst), polls_before + 1);
    assert!(scope.cancelled_caught());
    assert_eq!(Instant::now(), last);
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_deadline_moves_between_two_polls_leave_one_timer() {
    let start = Instant::now();
    let scope = CancelScope::with_timeout(ms(1));
    let mut task = task::spawn(scope.fail(pending::<()>()));
    assert_pending!(task.poll());
    for i in 1..=10_000u64 {
        scope.set_deadline(Some(start + ms(i)));
    }
    scope.set_deadline(Some(start + secs(20)));
    assert!(task.is_woken());
    assert_pending!(task.poll());
    advance(secs(20) - ms(1)).await;
    assert!(!task.is_woken());
    advance(ms(1)).await;
    assert!(task.is_woken());
    let err = assert_ready!(task.poll()).unwrap_err();
    assert!(err.is_deadline_reached());
}

#[tokio::test(start_paused = true)]
async fn a_finished_scope_leaves_no_timer_behind() {
    let mut task = task::spawn(async {
        // Completes without suspending: no timer is ever armed.
        assert_eq!(move_on_after(secs(1), async { 5 }).await, Some(5));
        // Completes at 500 ms, before its 2 s deadline.
        assert_eq!(fail_after(secs(2), sleep(ms(500))).await, Ok(()));
        // Nested: the inner one leans on the outer timer or has its own; both must go.
        let out = move_on_after(secs(3), async {
            move_on_after(secs(4), sleep(ms(100))).await;
            move_on_after(secs(2), sleep(ms(100))).await;
        })
        .await;
        assert_eq!(out, Some(()));
        pending::<()>().await;
    });
    assert_pending!(task.poll());
    advance(ms(500)).await;
    assert!(task.is_woken());
    assert_pending!(task.poll());
    advance(ms(100)).await;
    assert!(task.is_woken());
    assert_pending!(task.poll());
    advance(ms(100)).await;
    assert!(task.is_woken());
    assert_pending!(task.poll());
    // Every old deadline passes; nothing may wake the task.
    advance(secs(10)).await;
    assert!(!task.is_woken(), "a stray wake-up after the scopes exited");
}

#[tokio::test(start_paused = true)]
async fn later_awaits_are_unaffected_after_a_scope_exits() {
    let start = Instant::now();
    assert_eq!(move_on_after(secs(1), async { 1 }).await, Some(1));
    assert_eq!(move_on_after(secs(1), sleep(ms(10))).await, Some(()));
    assert_eq!(move_on_after(secs(1), sleep(secs(2))).await, None);
    assert_eq!(start.elapsed(), secs(1) + ms(10));
    // Well past every deadline above.
    sleep(secs(5)).await;
    assert_eq!(start.elapsed(), secs(6) + ms(10));
    assert_eq!(current_effective_deadline(), None);
}

#[tokio::test(start_paused = true)]
async fn existing_sleep_until_is_not_shortened_by_a_scope() {
    // A sibling deadline in the same task is not affected by a scope that came and went.
    let start = Instant::now();
    let own = sleep_until(start + secs(3));
    tokio::pin!(own);
    assert_eq!(move_on_after(secs(1), &mut own).await, None);
    own.await;
    assert_eq!(start.elapsed(), secs(3));
}

on_both_runtimes! {
    /// An inner scope that leaned on the outer timer gets its own when its deadline moves
    /// before the outer one.
    async fn covered_inner_deadline_moved_earlier_fires_on_time(clock) {
        let start = Instant::now();
        let outer = CancelScope::with_timeout(clock.t(5));
        let inner = CancelScope::with_timeout(clock.t(10));
        let handle = inner.clone();
        let out = outer
            .move_on(async move {
                let res = handle
                    .clone()
                    .fail(async move {
                        sleep(clock.t(1) / 2).await;
                        handle.set_deadline(Some(start + clock.t(1)));
                        clock.forever().await;
                    })
                    .await;
                assert!(res.unwrap_err().is_deadline_reached());
                "inner fired"
            })
            .await;
        assert_eq!(out, Some("inner fired"));
        assert!(inner.cancelled_caught());
        assert!(!outer.cancelled_caught());
        clock.assert_elapsed(start, 1);
    }

    /// Python: test_taskgroup_deadlines. Tasks of a group see the deadline of the scope around
    /// the group, and may nest their own.
    async fn group_tasks_see_the_deadline_of_the_scope_around_the_group(clock) {
        let out = quattro::TaskGroup::scope(|tg| async move {
            tg.spawn(async {
                assert_eq!(current_effective_deadline(), None);
                Ok::<_, ()>(())
            })
            .await
            .unwrap();
            Ok(())
        })
        .await;
        assert!(out.is_ok());

        let deadline = Instant::now() + clock.t(100);
        let out = move_on_at(deadline, async move {
            assert_eq!(current_effective_deadline(), Some(deadline));
            quattro::TaskGroup::scope(|tg| async move {
                tg.spawn(async move {
                    assert_eq!(current_effective_deadline(), Some(deadline));
                    let earlier = deadline - clock.t(1);
                    move_on_at(earlier, async move {
                        assert_eq!(current_effective_deadline(), Some(earlier));
                    })
                    .await
                    .unwrap();
                    assert_eq!(current_effective_deadline(), Some(deadline));
                    Ok::<_, ()>(())
                })
                .await
                .unwrap();
                Ok(())
            })
            .await
        })
        .await;
        assert!(matches!(out, Some(Ok(()))));
    }
}

/// A `LocalSet` polls its tasks inside the poll of whatever drives it, so a task spawned on it
/// inside a scope starts under that scope's chain; its own scopes must still get their own
/// timer, since the enclosing scope's timer wakes another task.
#[tokio::test(start_paused = true)]
async fn scope_in_a_local_set_task_started_inside_a_scope_fires_on_time() {
    let start = Instant::now();
    let local = tokio::task::LocalSet::new();
    let outer = CancelScope::with_deadline(start + secs(1));
    let inner = CancelScope::with_deadline(start + secs(2));
    let inner2 = inner.clone();
    let out = outer
        .move_on(local.run_until(async move {
            let task = tokio::task::spawn_local(inner2.move_on(pending::<()>()));
            tokio::task::yield_now().await; // the local task enters its scope here
            task.await
        }))
        .await;
    assert!(out.is_none());
    assert_eq!(start.elapsed(), secs(1));
    // The outer scope is gone; the local task's own deadline is at 2 s.
    let driven = tokio::time::timeout(secs(60), local).await;
    assert!(driven.is_ok(), "the local task's scope never fired");
    assert!(inner.cancelled_caught());
    assert_eq!(start.elapsed(), secs(2));
}

// ---------------------------------------------------------------------------------------------
// Regressions of the core rebuild (frame-based deadlines)

/// Polls a 2 s scope once as the body of an outer scope of `outer` in task A, sends it (boxed)
/// to task B, which awaits it (for at most 60 s); task A keeps its outer scope alive
/// (`keep_outer`) or lets it end at once. Yields what the inner scope returned (`None` when B
/// gave up waiting) and when, measured from the start.
async fn move_scope_to_another_task(
    outer: Duration,
    keep_outer: bool,
) -> (Option<Option<()>>, Duration) {
    type Boxed = Pin<Box<dyn Future<Output = Option<()>> + Send>>;
    let start = Instant::now();
    let (tx, rx) = tokio::sync::oneshot::channel::<Boxed>();
    let b = tokio::spawn(async move {
        let inner = rx.await.unwrap();
        let out = tokio::time::timeout(secs(60), inner).await.ok();
        (out, start.elapsed())
    });
    let a = tokio::spawn(async move {
        move_on_after(outer, async move {
            let mut inner: Boxed = Box::pin(move_on_after(secs(2), pending::<()>()));
            assert!(futures::poll!(inner.as_mut()).is_pending());
            tx.send(inner).ok().unwrap();
            if keep_outer {
                pending::<()>().await;
            }
        })
        .await
    });
    let (out, at) = b.await.unwrap();
    a.abort();
    let _ = a.await;
    (out, at)
}

/// Regression (core rebuild, item 4): a 2 s scope first polled in task A under an earlier
/// enclosing scope (1 s, still running) leaned on that scope's timer; moved to task B, it was
/// never woken (the enclosing timer wakes task A) and completed only when B gave up at 60 s.
/// It must complete at exactly 2 s in task B.
#[tokio::test(start_paused = true)]
async fn scope_moved_to_another_task_fires_at_its_deadline_under_an_earlier_outer() {
    let (out, at) = move_scope_to_another_task(secs(1), true).await;
    assert_eq!(
        out,
        Some(None),
        "the moved 2 s scope never fired (waited until {at:?})"
    );
    assert_eq!(at, secs(2), "the moved 2 s scope fired at {at:?}");
}

/// Regression (core rebuild, item 4): as above with an enclosing scope of the same deadline
/// (2 s, which wins the tie in task A).
#[tokio::test(start_paused = true)]
async fn scope_moved_to_another_task_fires_at_its_deadline_under_an_equal_outer() {
    let (out, at) = move_scope_to_another_task(secs(2), true).await;
    assert_eq!(
        out,
        Some(None),
        "the moved 2 s scope never fired (waited until {at:?})"
    );
    assert_eq!(at, secs(2), "the moved 2 s scope fired at {at:?}");
}

/// Companion of the item 4 regressions: with a later enclosing scope (60 s), alive or ended,
/// and with an earlier one that ended before the move, the moved scope fires at 2 s.
#[tokio::test(start_paused = true)]
async fn scope_moved_to_another_task_fires_at_its_deadline_other_outers() {
    for (outer, keep) in [(secs(60), true), (secs(60), false), (secs(1), false)] {
        let (out, at) = move_scope_to_another_task(outer, keep).await;
        assert_eq!(out, Some(None), "outer {outer:?}, kept {keep}: never fired");
        assert_eq!(at, secs(2), "outer {outer:?}, kept {keep}: fired at {at:?}");
    }
}

/// Regression (core rebuild, item 4), on the multi-thread runtime: a 200 ms scope polled once
/// under a 100 ms enclosing scope that keeps running, then moved to another task, must fire
/// there (it was never woken on the old code).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_moved_to_another_task_fires_at_its_deadline_multi_thread() {
    let out = tokio::time::timeout(secs(10), async {
        type Boxed = Pin<Box<dyn Future<Output = Option<()>> + Send>>;
        let (tx, rx) = tokio::sync::oneshot::channel::<Boxed>();
        let start = Instant::now();
        let a = tokio::spawn(move_on_after(ms(100), async move {
            let mut inner: Boxed = Box::pin(move_on_after(ms(200), pending::<()>()));
            assert!(futures::poll!(inner.as_mut()).is_pending());
            tx.send(inner).ok().unwrap();
            pending::<()>().await;
        }));
        let out = tokio::spawn(async move { rx.await.unwrap().await })
            .await
            .unwrap();
        a.abort();
        (out, start.elapsed())
    })
    .await;
    let (out, at) = out.expect("the moved 200 ms scope did not fire within 10 s");
    assert_eq!(out, None);
    assert!(at >= ms(200), "fired early: {at:?}");
}

/// Regression (core rebuild, item 5): a scope polled once inside an enclosing 1 s scope and
/// re-awaited (pinned, `&mut`) after that scope ended reported the dead parent's expired
/// deadline from `current_effective_deadline()` and sent `grpc-timeout: 0n`; it must report
/// its own 60 s deadline.
#[tokio::test(start_paused = true)]
async fn scope_reawaited_after_its_enclosing_scope_ended_reports_its_own_deadline() {
    use quattro::propagate;
    let start = Instant::now();
    /// When, the effective deadline, and the `grpc-timeout` it would send.
    type Reading = (Duration, Option<Instant>, Option<Duration>);
    let seen: Arc<Mutex<Vec<Reading>>> = Arc::default();
    let rec = seen.clone();
    let mut inner = std::pin::pin!(move_on_after(secs(60), async move {
        loop {
            let remaining = propagate::header_value().map(|t| t.to_duration());
            rec.lock()
                .unwrap()
                .push((start.elapsed(), current_effective_deadline(), remaining));
            sleep(ms(500)).await;
        }
    }));
    let outer = move_on_after(secs(1), async {
        tokio::select! {
            biased;
            _ = &mut inner => unreachable!("the inner scope ended"),
            _ = std::future::ready(()) => {}
        }
    })
    .await;
    assert_eq!(outer, Some(()));
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].1, Some(start + secs(1)), "inside the outer scope");
    }
    advance(secs(2)).await;
    let out = tokio::time::timeout(secs(1), &mut inner).await;
    assert!(out.is_err(), "the re-awaited scope ended at once: {out:?}");
    let seen = seen.lock().unwrap();
    assert!(
        seen.len() >= 2,
        "the re-awaited scope never ran its body: {seen:?}"
    );
    for &(at, deadline, remaining) in &seen[1..] {
        assert_eq!(deadline, Some(start + secs(60)), "read at {at:?}");
        let remaining = remaining.expect("no grpc-timeout inside a 60 s scope");
        assert!(
            remaining > secs(50),
            "grpc-timeout {remaining:?} at {at:?} (expected the 60 s scope's)"
        );
    }
}

/// Regression (core rebuild, item 6): in the task of a `CancelScope`, moving its deadline
/// shows at once in `current_effective_deadline()`, also under an enclosing scope.
#[tokio::test(start_paused = true)]
async fn effective_deadline_follows_set_deadline_in_the_same_task() {
    let start = Instant::now();
    let cs = CancelScope::new();
    let out = move_on_at(
        start + secs(10),
        cs.move_on(async {
            assert_eq!(current_effective_deadline(), Some(start + secs(10)));
            cs.set_deadline(Some(start + secs(5)));
            assert_eq!(current_effective_deadline(), Some(start + secs(5)));
            cs.set_deadline(Some(start + secs(20)));
            assert_eq!(current_effective_deadline(), Some(start + secs(10)));
            cs.set_deadline(Some(start + secs(3)));
            assert_eq!(current_effective_deadline(), Some(start + secs(3)));
            tokio::task::yield_now().await;
            assert_eq!(current_effective_deadline(), Some(start + secs(3)));
            cs.set_deadline(None);
            assert_eq!(current_effective_deadline(), Some(start + secs(10)));
            sleep(secs(1)).await;
            cs.set_deadline(Some(start + secs(4)));
            assert_eq!(current_effective_deadline(), Some(start + secs(4)));
        }),
    )
    .await;
    assert_eq!(out, Some(Some(())));
}

type Ask = tokio::sync::mpsc::Receiver<()>;
type Answer = tokio::sync::mpsc::Sender<Option<Instant>>;

/// Serves `current_effective_deadline()` on request, until the asking side is dropped.
async fn serve_deadline(mut ask: Ask, answer: Answer) {
    while ask.recv().await.is_some() {
        answer.send(current_effective_deadline()).await.unwrap();
    }
}

/// Under `cs`, a group whose body and whose child each serve their effective deadline (the
/// child is asked directly: the group's task is not polled between a move and the child's read).
async fn deadline_readers(
    cs: CancelScope,
    body: (Ask, Answer),
    child: (Ask, Answer),
) -> Option<()> {
    cs.move_on(quattro::TaskGroup::scope(|tg| async move {
        tg.spawn(async move {
            serve_deadline(child.0, child.1).await;
            Ok(())
        });
        serve_deadline(body.0, body.1).await;
        Ok::<(), ()>(())
    }))
    .await
    .map(|r| r.unwrap())
}

/// The asking ends of [`deadline_readers`]: (to the body, to the child).
struct Readers {
    body: (
        tokio::sync::mpsc::Sender<()>,
        tokio::sync::mpsc::Receiver<Option<Instant>>,
    ),
    child: (
        tokio::sync::mpsc::Sender<()>,
        tokio::sync::mpsc::Receiver<Option<Instant>>,
    ),
}

impl Readers {
    fn spawn(cs: CancelScope) -> (Readers, tokio::task::JoinHandle<Option<()>>) {
        let (ask_b, asked_b) = tokio::sync::mpsc::channel(1);
        let (answer_b, answered_b) = tokio::sync::mpsc::channel(1);
        let (ask_c, asked_c) = tokio::sync::mpsc::channel(1);
        let (answer_c, answered_c) = tokio::sync::mpsc::channel(1);
        let task = tokio::spawn(deadline_readers(
            cs,
            (asked_b, answer_b),
            (asked_c, answer_c),
        ));
        let readers = Readers {
            body: (ask_b, answered_b),
            child: (ask_c, answered_c),
        };
        (readers, task)
    }

    async fn read(&mut self) -> (Option<Instant>, Option<Instant>) {
        self.child.0.send(()).await.unwrap();
        let in_child = self.child.1.recv().await.unwrap();
        self.body.0.send(()).await.unwrap();
        let in_body = self.body.1.recv().await.unwrap();
        (in_body, in_child)
    }
}

/// The deadline of round `i`: moves earlier and later, and sometimes away.
fn moved_deadline(base: Instant, i: u64) -> Option<Instant> {
    match i % 4 {
        0 => Some(base + ms(i * 7 % 1000)),
        1 => Some(base - ms(i * 13 % 1000)),
        2 => None,
        _ => Some(base + secs(10) + ms(i)),
    }
}

/// Regression (core rebuild, item 6): `set_deadline` from another task and from another
/// thread shows in the scope's body and in a group child under it the next time they read
/// it (earlier, later, or removed), without the group's task being polled in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn effective_deadline_follows_set_deadline_from_another_task_and_thread() {
    let base = Instant::now() + secs(3600);
    let cs = CancelScope::with_deadline(base);
    let (mut readers, task) = Readers::spawn(cs.clone());
    assert_eq!(readers.read().await, (Some(base), Some(base)));
    for i in 0..200u64 {
        let deadline = moved_deadline(base, i);
        if i % 2 == 0 {
            let c = cs.clone();
            tokio::spawn(async move { c.set_deadline(deadline) })
                .await
                .unwrap();
        } else {
            let c = cs.clone();
            std::thread::spawn(move || c.set_deadline(deadline))
                .join()
                .unwrap();
        }
        let (in_body, in_child) = readers.read().await;
        assert_eq!(in_child, deadline, "in the child, round {i}");
        assert_eq!(in_body, deadline, "in the body, round {i}");
    }
    // Cancelled from another thread: the scope ends.
    let c = cs.clone();
    std::thread::spawn(move || c.cancel()).join().unwrap();
    let out = tokio::time::timeout(secs(5), task).await;
    assert_eq!(
        out.expect("cancel from another thread did not end the scope")
            .unwrap(),
        None
    );
}

/// Regression (core rebuild, item 6), deterministic form of the race above: while the
/// group's task is busy inside a poll (so it cannot publish anything new), the scope's
/// deadline is moved later and then removed from another task; the child, polled again, must
/// read the new value, not the one the group saw when it was last polled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn effective_deadline_in_a_child_follows_set_deadline_while_the_group_task_is_busy() {
    let base = Instant::now() + secs(3600);
    let cs = CancelScope::with_deadline(base);
    let (block_tx, mut block_rx) = tokio::sync::mpsc::channel::<std::sync::mpsc::Receiver<()>>(1);
    let (blocked_tx, mut blocked_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (ask, mut asked) = tokio::sync::mpsc::channel::<()>(1);
    let (answer, mut answered) = tokio::sync::mpsc::channel(1);
    let group = tokio::spawn(cs.move_on(quattro::TaskGroup::scope(|tg| async move {
        tg.spawn(async move {
            while asked.recv().await.is_some() {
                answer.send(current_effective_deadline()).await.unwrap();
            }
            Ok(())
        });
        while let Some(release) = block_rx.recv().await {
            // Busy in this poll until released (blocks this worker on purpose).
            blocked_tx.send(()).unwrap();
            let _ = release.recv_timeout(Duration::from_secs(5));
        }
        Ok::<(), ()>(())
    })));
    ask.send(()).await.unwrap();
    assert_eq!(answered.recv().await.unwrap(), Some(base));
    for (round, deadline) in [
        Some(base + secs(10)),
        None,
        Some(base - secs(5)),
        Some(base),
    ]
    .into_iter()
    .enumerate()
    {
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        block_tx.send(release_rx).await.unwrap();
        blocked_rx.recv().await.unwrap();
        let c = cs.clone();
        tokio::spawn(async move { c.set_deadline(deadline) })
            .await
            .unwrap();
        ask.send(()).await.unwrap();
        let in_child = answered.recv().await.unwrap();
        release_tx.send(()).unwrap();
        assert_eq!(in_child, deadline, "in the child, round {round}");
    }
    // Cancelled while the body still waits (with the channels open, it cannot finish first).
    cs.cancel();
    assert!(group.await.unwrap().is_none());
    drop(ask);
    drop(block_tx);
}

/// Regression (core rebuild, item 6), on the paused clock's current-thread runtime: the move
/// is made by another task, then the child alone is polled and reads.
#[tokio::test(start_paused = true)]
async fn effective_deadline_follows_set_deadline_from_another_task_paused() {
    let base = Instant::now() + secs(3600);
    let cs = CancelScope::with_deadline(base);
    let (mut readers, task) = Readers::spawn(cs.clone());
    assert_eq!(readers.read().await, (Some(base), Some(base)));
    for i in 0..40u64 {
        let deadline = moved_deadline(base, i);
        let c = cs.clone();
        tokio::spawn(async move { c.set_deadline(deadline) })
            .await
            .unwrap();
        let (in_body, in_child) = readers.read().await;
        assert_eq!(in_child, deadline, "in the child, round {i}");
        assert_eq!(in_body, deadline, "in the body, round {i}");
    }
    let c = cs.clone();
    tokio::spawn(async move { c.cancel() }).await.unwrap();
    assert_eq!(task.await.unwrap(), None);
}

/// Regression (core rebuild, item 6): 8 concurrent scopes on the multi-thread runtime move
/// their deadlines 1,000 times each while reading their own effective deadline: each must
/// always see its own scope's current deadline, never another's or a stale one, also after
/// a yield that may move the task to another worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_scopes_each_see_their_own_moving_deadline() {
    let base = Instant::now() + secs(3600);
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let cs = CancelScope::with_deadline(base);
                let c = cs.clone();
                cs.move_on(async move {
                    barrier.wait().await;
                    for i in 0..1000u64 {
                        let mine = base - ms(t * 1000 + i % 997);
                        if i % 3 == 0 {
                            let c = c.clone();
                            tokio::spawn(async move { c.set_deadline(Some(mine)) })
                                .await
                                .unwrap();
                        } else {
                            c.set_deadline(Some(mine));
                            assert_eq!(
                                current_effective_deadline(),
                                Some(mine),
                                "task {t}, round {i}"
                            );
                        }
                        tokio::task::yield_now().await;
                        assert_eq!(
                            current_effective_deadline(),
                            Some(mine),
                            "task {t}, round {i}, after a yield"
                        );
                    }
                })
                .await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), Some(()));
    }
}

/// Regression (core rebuild, item 6): group children on several workers read
/// `current_effective_deadline()` in a loop while another thread keeps moving the enclosing
/// `CancelScope`'s deadline earlier. Once a move is known to be done, no read may return an
/// older (later) deadline. On the old code, children sharing the group's cached effective
/// deadline could interleave their cache writes and leave an old value stamped as fresh.
#[test]
fn effective_deadline_in_group_children_is_never_stale_under_concurrent_moves() {
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
    const CHILDREN: usize = 4;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let stale = rt.block_on(async {
        let base = Instant::now() + secs(24 * 3600);
        let cs = CancelScope::with_deadline(base);
        let settled = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicUsize::new(0));
        let mover = {
            let (cs, settled, stop, started) =
                (cs.clone(), settled.clone(), stop.clone(), started.clone());
            std::thread::spawn(move || {
                let t0 = std::time::Instant::now();
                while started.load(Ordering::SeqCst) < CHILDREN && t0.elapsed() < secs(2) {
                    std::thread::yield_now();
                }
                let t0 = std::time::Instant::now();
                let mut r = 0u64;
                while !stop.load(Ordering::SeqCst) && t0.elapsed() < ms(1500) {
                    r += 1;
                    cs.set_deadline(Some(base - Duration::from_micros(r)));
                    settled.store(r, Ordering::SeqCst);
                }
                stop.store(true, Ordering::SeqCst);
                r
            })
        };
        let found = cs
            .move_on(quattro::TaskGroup::scope(|tg| async move {
                let readers: Vec<_> = (0..CHILDREN)
                    .map(|_| {
                        let (settled, stop, started) =
                            (settled.clone(), stop.clone(), started.clone());
                        tg.spawn(async move {
                            started.fetch_add(1, Ordering::SeqCst);
                            let mut i = 0u32;
                            while !stop.load(Ordering::SeqCst) {
                                let s = settled.load(Ordering::SeqCst);
                                let read = current_effective_deadline().expect("a deadline");
                                let moves = (base - read).as_micros() as u64;
                                if moves < s {
                                    stop.store(true, Ordering::SeqCst);
                                    return Ok(Some((s, moves)));
                                }
                                i += 1;
                                if i % 64 == 0 {
                                    tokio::task::yield_now().await;
                                }
                            }
                            Ok(None)
                        })
                    })
                    .collect();
                let mut found = None;
                for reader in readers {
                    found = found.or(reader.await.unwrap());
                }
                Ok::<_, ()>(found)
            }))
            .await;
        let rounds = mover.join().unwrap();
        assert!(rounds > 0, "the deadline was never moved");
        found.expect("the scope was not cancelled").unwrap()
    });
    if let Some((settled, seen)) = stale {
        panic!(
            "a child read the deadline of move {seen} after move {settled} was done \
             (stale effective deadline)"
        );
    }
}
