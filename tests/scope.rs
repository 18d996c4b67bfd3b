//! Cancel scopes: `move_on_*`, `fail_*` and `CancelScope`.
//!
//! Ports the behaviours of Python quattro's `test_move_on.py` and `test_fail_after.py`, plus
//! Trio's rules and the promises of DESIGN.md (outer wins ties, level-triggered cancellation,
//! polled first, thousands of nested scopes, `CancellationToken` interop).
//!
//! Exact timings use tokio's paused clock. Behaviours that depend on timers or other tasks
//! racing the scope also run on a two-worker multi-thread runtime with real time (see
//! [`on_both_runtimes!`]), where only order and semantics are asserted, never tight bounds.

use std::future::{Future, pending};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures::poll;
use quattro::{
    CancelScope, Cancelled, Fail, MoveOn, current_effective_deadline, fail_after, fail_at,
    move_on_after, move_on_at,
};
use tokio::sync::oneshot;
use tokio::time::{Instant, advance, sleep};
use tokio_test::{assert_pending, assert_ready_eq, task};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------------
// Helpers

#[macro_use]
mod scope_util;
use scope_util::*;

/// A flag for "this line ran"; shared with the body under test.
#[derive(Clone, Default)]
struct Flag(Arc<AtomicBool>);

impl Flag {
    fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Counts how often it is dropped (a value moved into the body under test).
struct DropCounter(Arc<AtomicUsize>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn drop_counter() -> (DropCounter, Arc<AtomicUsize>) {
    let drops = Arc::new(AtomicUsize::new(0));
    (DropCounter(drops.clone()), drops)
}

/// The message of a panic caught by `tokio::spawn`.
fn panic_message(err: tokio::task::JoinError) -> String {
    let payload = err.into_panic();
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// The basics (Python: test_move_on_after*, test_fail_after*)

#[tokio::test(start_paused = true)]
async fn move_on_after_cancels_at_deadline() {
    let start = Instant::now();
    let fut = move_on_after(Duration::from_millis(500), sleep(Duration::from_secs(1)));
    let scope = fut.cancel_scope();
    assert_eq!(fut.await, None);
    assert!(scope.cancelled_caught());
    assert_eq!(start.elapsed(), Duration::from_millis(500));
}

#[tokio::test(start_paused = true)]
async fn fail_after_errs_at_deadline() {
    let start = Instant::now();
    let fut = fail_after(ms(500), sleep(secs(1)));
    let scope = fut.cancel_scope();
    let err = fut.await.unwrap_err();
    assert!(err.is_deadline_reached());
    assert!(scope.cancelled_caught());
    assert!(scope.is_cancelled());
    assert_eq!(start.elapsed(), ms(500));
}

#[tokio::test(start_paused = true)]
async fn scope_not_triggered_returns_the_value_and_leaves_no_timer() {
    let start = Instant::now();
    let fut = move_on_after(ms(200), async {
        sleep(ms(100)).await;
        "moved"
    });
    let moved = fut.cancel_scope();
    assert_eq!(fut.await, Some("moved"));
    assert!(!moved.cancelled_caught());
    assert_eq!(start.elapsed(), ms(100));

    let fut = fail_after(ms(200), async {
        sleep(ms(100)).await;
        "failed"
    });
    let failed = fut.cancel_scope();
    assert_eq!(fut.await, Ok("failed"));
    assert!(!failed.cancelled_caught());
    assert_eq!(start.elapsed(), ms(200));

    // Sleep past both deadlines: nothing lingers to cancel this.
    sleep(ms(300)).await;
    assert_eq!(start.elapsed(), ms(500));
    assert!(!moved.cancelled_caught() && !failed.cancelled_caught());
}

#[tokio::test(start_paused = true)]
async fn scope_not_triggered_without_await() {
    let scope = CancelScope::with_timeout(ms(200));
    assert_eq!(scope.move_on(async {}).await, Some(()));
    assert!(!scope.cancelled_caught());
    let scope = CancelScope::with_timeout(ms(200));
    assert_eq!(scope.fail(async {}).await, Ok(()));
    assert!(!scope.cancelled_caught());
    sleep(ms(300)).await;
}

on_both_runtimes! {
    /// Python: test_move_on_externally_cancelled / test_fail_after_externally_cancelled.
    async fn externally_cancelled_scope_does_not_catch(clock) {
        for use_fail in [false, true] {
            let scope = CancelScope::with_timeout(clock.t(5));
            let (started_tx, started_rx) = oneshot::channel();
            let (guard, drops) = drop_counter();
            let after = Flag::default();
            let body = {
                let after = after.clone();
                async move {
                    let _guard = guard;
                    started_tx.send(()).unwrap();
                    clock.forever().await;
                    after.set();
                }
            };
            let task = if use_fail {
                let fut = scope.fail(body);
                tokio::spawn(async move { fut.await.is_ok() })
            } else {
                let fut = scope.move_on(body);
                tokio::spawn(async move { fut.await.is_some() })
            };
            started_rx.await.unwrap();
            assert!(!task.is_finished());
            task.abort();
            assert!(task.await.unwrap_err().is_cancelled());
            assert!(!scope.cancelled_caught());
            assert!(!scope.is_cancelled());
            assert_eq!(drops.load(Ordering::SeqCst), 1);
            assert!(!after.get());
        }
    }
}

#[tokio::test(start_paused = true)]
async fn inner_error_passes_through() {
    let start = Instant::now();
    let fut = move_on_after(ms(300), async {
        sleep(ms(200)).await;
        Err::<(), _>("division by zero")
    });
    let moved = fut.cancel_scope();
    assert_eq!(fut.await, Some(Err("division by zero")));
    assert!(!moved.cancelled_caught());

    let fut = fail_after(ms(300), async {
        sleep(ms(200)).await;
        Err::<(), _>(std::io::Error::other("boom"))
    });
    let failed = fut.cancel_scope();
    let inner = fut.await.expect("not the scope's error");
    assert_eq!(inner.unwrap_err().to_string(), "boom");
    assert!(!failed.cancelled_caught());
    assert_eq!(start.elapsed(), ms(400));

    // Catch lingering timers.
    sleep(ms(300)).await;
    assert!(!moved.cancelled_caught() && !failed.cancelled_caught());
}

#[tokio::test(start_paused = true)]
async fn inner_panic_passes_through() {
    let scope = CancelScope::with_timeout(ms(300));
    let fut = scope.fail(async {
        sleep(ms(100)).await;
        panic!("boom in the scope");
    });
    let err = tokio::spawn(fut).await.unwrap_err();
    assert!(err.is_panic());
    assert_eq!(panic_message(err), "boom in the scope");
    assert!(!scope.cancelled_caught());
    sleep(ms(300)).await;
    assert!(!scope.cancelled_caught());
}

// ---------------------------------------------------------------------------------------------
// Nesting (Python: test_*_nested_*)

on_both_runtimes! {
    async fn nested_move_on_outer_shorter(clock) {
        let start = Instant::now();
        let (checkpt_1, checkpt_2, after_inner, after_sleep) =
            (Flag::default(), Flag::default(), Flag::default(), Flag::default());
        let outer = CancelScope::with_timeout(clock.t(1));
        let inner = CancelScope::with_timeout(clock.t(2));
        let out = outer
            .move_on({
                let (inner, c1, c2, a1, a2) = (
                    inner.clone(),
                    checkpt_1.clone(),
                    checkpt_2.clone(),
                    after_inner.clone(),
                    after_sleep.clone(),
                );
                async move {
                    c1.set();
                    inner
                        .move_on(async move {
                            c2.set();
                            sleep(clock.t(3)).await;
                            a2.set();
                        })
                        .await;
                    a1.set();
                }
            })
            .await;
        assert_eq!(out, None);
        assert!(checkpt_1.get() && checkpt_2.get());
        assert!(!after_inner.get() && !after_sleep.get());
        assert!(outer.cancelled_caught());
        assert!(!inner.cancelled_caught());
        clock.assert_elapsed(start, 1);
    }

    async fn nested_fail_outer_shorter(clock) {
        let start = Instant::now();
        let outer = CancelScope::with_timeout(clock.t(1));
        let inner = CancelScope::with_timeout(clock.t(2));
        let after_inner = Flag::default();
        let res = outer
            .fail({
                let (inner, after_inner) = (inner.clone(), after_inner.clone());
                async move {
                    let _ = inner.fail(sleep(clock.t(3))).await;
                    after_inner.set();
                }
            })
            .await;
        assert!(res.unwrap_err().is_deadline_reached());
        assert!(!after_inner.get());
        assert!(outer.cancelled_caught());
        assert!(!inner.cancelled_caught());
        clock.assert_elapsed(start, 1);
    }

    async fn nested_move_on_inner_shorter(clock) {
        let start = Instant::now();
        let outer = CancelScope::with_timeout(clock.t(5));
        let inner = CancelScope::with_timeout(clock.t(1));
        let (checkpt_3, after_sleep) = (Flag::default(), Flag::default());
        let out = outer
            .move_on({
                let (inner, c3, a) = (inner.clone(), checkpt_3.clone(), after_sleep.clone());
                async move {
                    let res = inner.move_on(clock.forever()).await;
                    assert_eq!(res, None);
                    clock.assert_elapsed(start, 1);
                    c3.set();
                    clock.forever().await;
                    a.set();
                }
            })
            .await;
        assert_eq!(out, None);
        assert!(checkpt_3.get());
        assert!(!after_sleep.get());
        assert!(outer.cancelled_caught());
        assert!(inner.cancelled_caught());
        clock.assert_elapsed(start, 5);
    }

    async fn nested_fail_inner_shorter(clock) {
        let start = Instant::now();
        let outer = CancelScope::with_timeout(clock.t(5));
        let inner = CancelScope::with_timeout(clock.t(1));
        let checkpt_3 = Flag::default();
        let res = outer
            .fail({
                let (inner, c3) = (inner.clone(), checkpt_3.clone());
                async move {
                    let err = inner.fail(clock.forever()).await.unwrap_err();
                    assert!(err.is_deadline_reached());
                    c3.set();
                    clock.forever().await;
                }
            })
            .await;
        assert!(res.unwrap_err().is_deadline_reached());
        assert!(checkpt_3.get());
        assert!(outer.cancelled_caught());
        assert!(inner.cancelled_caught());
        clock.assert_elapsed(start, 5);
    }

    async fn nested_scopes_happy_path(clock) {
        let start = Instant::now();
        let outer = CancelScope::with_timeout(clock.t(2));
        let inner = CancelScope::with_timeout(clock.t(1));
        let inner2 = inner.clone();
        let out = outer
            .fail(async move { inner2.move_on(async { 1 }).await.map(|v| v + 1) })
            .await;
        assert_eq!(out, Ok(Some(2)));
        assert!(!outer.cancelled_caught());
        assert!(!inner.cancelled_caught());
        if clock.paused {
            assert_eq!(start.elapsed(), Duration::ZERO);
        }
    }
}

/// Python: test_fail_after_inner_unrelated_exc. A cancelled inner scope lets an error pass
/// through; when two enclosing scopes are cancelled, the outermost one catches.
#[tokio::test(start_paused = true)]
async fn error_passes_through_cancelled_scopes_and_the_outermost_catches() {
    let first = CancelScope::new();
    let second = CancelScope::with_timeout(ms(700));
    let third = CancelScope::with_timeout(secs(1));
    let res = first
        .fail({
            let (first, second, third) = (first.clone(), second.clone(), third.clone());
            async move {
                second
                    .clone()
                    .fail(async move {
                        let res = third
                            .fail(async {
                                second.cancel();
                                first.cancel();
                                Err::<(), _>("value error")
                            })
                            .await;
                        assert_eq!(res, Ok(Err("value error")));
                        assert!(!third.cancelled_caught());
                        sleep(ms(300)).await;
                        unreachable!("cancelled at the sleep");
                    })
                    .await
            }
        })
        .await;
    assert!(res.unwrap_err().is_cancel_called());
    assert!(!third.cancelled_caught());
    assert!(!second.cancelled_caught());
    assert!(first.cancelled_caught());
}

// ---------------------------------------------------------------------------------------------
// Cancelling (Python: test_*_cancel_myself, test_*_precancel, test_double_cancel_protection)

on_both_runtimes! {
    async fn cancel_myself(clock) {
        let start = Instant::now();
        for use_fail in [false, true] {
            let start = Instant::now();
            let scope = CancelScope::with_timeout(clock.t(5));
            let handle = scope.clone();
            let after = Flag::default();
            let body = {
                let after = after.clone();
                async move {
                    sleep(clock.t(1)).await;
                    handle.cancel();
                    clock.forever().await;
                    after.set();
                }
            };
            if use_fail {
                assert!(scope.fail(body).await.unwrap_err().is_cancel_called());
            } else {
                assert_eq!(scope.move_on(body).await, None);
            }
            assert!(scope.cancelled_caught());
            assert!(!after.get());
            clock.assert_elapsed(start, 1);
        }
        // Lingering timers of the 5-unit deadlines do nothing.
        sleep(clock.t(5)).await;
        clock.assert_elapsed(start, 7);
    }

    async fn cancel_from_another_task(clock) {
        let start = Instant::now();
        let scope = CancelScope::new();
        let handle = scope.clone();
        let canceller = tokio::spawn(async move {
            sleep(clock.t(1)).await;
            handle.cancel();
        });
        let after = Flag::default();
        let res = scope
            .fail({
                let after = after.clone();
                async move {
                    clock.forever().await;
                    after.set();
                }
            })
            .await;
        assert!(res.unwrap_err().is_cancel_called());
        assert!(scope.cancelled_caught());
        assert!(!after.get());
        clock.assert_elapsed(start, 1);
        canceller.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_from_another_os_thread() {
    let scope = CancelScope::new();
    let handle = scope.clone();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let canceller = std::thread::spawn(move || {
        started_rx.recv().unwrap();
        handle.cancel();
        handle.cancel();
    });
    let out = scope
        .move_on(async move {
            started_tx.send(()).unwrap();
            pending::<()>().await;
        })
        .await;
    assert_eq!(out, None);
    assert!(scope.cancelled_caught());
    canceller.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_scopes_cancelled_from_another_thread_all_catch() {
    let scopes: Vec<CancelScope> = (0..200).map(|_| CancelScope::new()).collect();
    let tasks: Vec<_> = scopes
        .iter()
        .map(|scope| tokio::spawn(scope.move_on(pending::<()>())))
        .collect();
    let handles = scopes.clone();
    std::thread::spawn(move || handles.iter().rev().for_each(CancelScope::cancel))
        .join()
        .unwrap();
    for task in tasks {
        assert_eq!(task.await.unwrap(), None);
    }
    assert!(scopes.iter().all(CancelScope::cancelled_caught));
}

#[tokio::test(start_paused = true)]
async fn precancelled_scope_cancels_at_the_first_suspension() {
    let start = Instant::now();
    let scope = CancelScope::with_timeout(ms(500));
    scope.cancel();
    assert!(scope.is_cancelled());
    assert!(!scope.cancelled_caught());
    assert_eq!(scope.move_on(sleep(ms(100))).await, None);
    assert!(scope.cancelled_caught());

    let scope = CancelScope::with_timeout(ms(500));
    scope.cancel();
    let err = scope.fail(sleep(ms(100))).await.unwrap_err();
    assert!(err.is_cancel_called());
    assert!(scope.cancelled_caught());
    assert_eq!(start.elapsed(), Duration::ZERO);
    sleep(ms(500)).await;
}

#[tokio::test(start_paused = true)]
async fn precancel_and_past_deadline() {
    let scope = CancelScope::new();
    scope.cancel();
    assert_eq!(scope.move_on(async { 3 }).await, Some(3));
    assert!(!scope.cancelled_caught());
    let past = Instant::now() - Duration::from_secs(10);
    let r = quattro::fail_at(past, sleep(Duration::from_secs(1))).await;
    assert!(r.unwrap_err().is_deadline_reached());
    assert!(fail_after(Duration::MAX, async { 1 }).await.is_ok());
    assert_eq!(current_effective_deadline(), None);
}

#[tokio::test(start_paused = true)]
async fn double_cancel_is_idempotent() {
    let scope = CancelScope::with_timeout(secs(1000));
    let token = scope.cancellation_token();
    let handle = scope.clone();
    let (body, polls) = count_polls(async move {
        handle.cancel();
        handle.cancel();
        sleep(ms(100)).await;
    });
    let err = scope.fail(body).await.unwrap_err();
    assert!(err.is_cancel_called());
    assert!(scope.cancelled_caught());
    assert!(token.is_cancelled());
    assert_eq!(polls.load(Ordering::SeqCst), 1);
    // Again after the scope finished: no panic, nothing changes.
    scope.cancel();
    assert!(scope.cancelled_caught());
    assert!(scope.is_cancelled());
}

/// Python: test_deadline_expired_on_enter.
#[tokio::test(start_paused = true)]
async fn deadline_expired_on_enter() {
    let start = Instant::now();
    let err = fail_after(Duration::ZERO, sleep(secs(1)))
        .await
        .unwrap_err();
    assert!(err.is_deadline_reached());
    let err = fail_at(start - secs(1), sleep(secs(1))).await.unwrap_err();
    assert!(err.is_deadline_reached());
    assert_eq!(start.elapsed(), Duration::ZERO);
}

// ---------------------------------------------------------------------------------------------
// Fail's error says why

#[tokio::test(start_paused = true)]
async fn fail_error_distinguishes_deadline_from_cancel() {
    let by_deadline = fail_after(ms(10), pending::<()>()).await.unwrap_err();
    assert!(by_deadline.is_deadline_reached());
    assert!(!by_deadline.is_cancel_called());

    let scope = CancelScope::with_timeout(secs(10));
    let handle = scope.clone();
    let by_cancel = scope
        .fail(async move {
            sleep(ms(10)).await;
            handle.cancel();
            pending::<()>().await;
        })
        .await
        .unwrap_err();
    assert!(by_cancel.is_cancel_called());
    assert!(!by_cancel.is_deadline_reached());
    assert_ne!(by_deadline, by_cancel);

    // A deadline moved into the past is a deadline, not a cancel().
    let scope = CancelScope::new();
    let handle = scope.clone();
    let moved = scope
        .fail(async move {
            handle.set_deadline(Some(Instant::now()));
            pending::<()>().await;
        })
        .await
        .unwrap_err();
    assert!(moved.is_deadline_reached());

    // A linked token counts as cancel().
    let token = CancellationToken::new();
    let scope = CancelScope::with_timeout(secs(10));
    scope.cancel_on(token.clone());
    token.cancel();
    let linked = scope.fail(pending::<()>()).await.unwrap_err();
    assert!(linked.is_cancel_called());
}

// ---------------------------------------------------------------------------------------------
// A scope runs once

#[tokio::test(start_paused = true)]
#[should_panic(expected = "a cancel scope can only be run once")]
async fn running_a_scope_twice_panics() {
    let scope = CancelScope::with_timeout(secs(1));
    assert_eq!(scope.move_on(async { 1 }).await, Some(1));
    let _ = scope.fail(async { 2 }).await;
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "a cancel scope can only be run once")]
async fn running_a_scope_twice_at_once_through_a_clone_panics() {
    let scope = CancelScope::new();
    let clone = scope.clone();
    let _ = tokio::join!(scope.move_on(sleep(secs(1))), clone.move_on(sleep(secs(1))));
}

#[tokio::test(start_paused = true)]
async fn second_run_panics_without_disturbing_the_first() {
    let scope = CancelScope::with_timeout(secs(1));
    let clone = scope.clone();
    let first = tokio::spawn(scope.move_on(sleep(secs(5))));
    tokio::task::yield_now().await;
    let second = tokio::spawn(clone.move_on(async { 2 }));
    let err = second.await.unwrap_err();
    assert!(panic_message(err).contains("a cancel scope can only be run once"));
    assert_eq!(first.await.unwrap(), None);
    assert!(scope.cancelled_caught());
}

// ---------------------------------------------------------------------------------------------
// Outer wins ties (Trio's rule; DESIGN.md "Nested scopes")

#[tokio::test(start_paused = true)]
async fn nested_same_deadline_outer_wins() {
    let deadline = Instant::now() + Duration::from_secs(1);
    let outer = CancelScope::with_deadline(deadline);
    let inner = CancelScope::with_deadline(deadline);
    let inner2 = inner.clone();
    let out = outer
        .move_on(async move {
            inner2.move_on(sleep(Duration::from_secs(5))).await;
            panic!("inner must not claim the cancellation");
        })
        .await;
    assert_eq!(out, None::<()>);
    assert!(outer.cancelled_caught());
    assert!(!inner.cancelled_caught());
}

on_both_runtimes! {
    async fn same_deadline_outer_fail_wins_over_inner_fail(clock) {
        let start = Instant::now();
        let deadline = start + clock.t(1);
        let outer = CancelScope::with_deadline(deadline);
        let inner = CancelScope::with_deadline(deadline);
        let after = Flag::default();
        let res = outer
            .fail({
                let (inner, after) = (inner.clone(), after.clone());
                async move {
                    let _ = inner.fail(clock.forever()).await;
                    after.set();
                }
            })
            .await;
        assert!(res.unwrap_err().is_deadline_reached());
        assert!(!after.get(), "the inner scope claimed the outer deadline");
        assert!(outer.cancelled_caught());
        assert!(!inner.cancelled_caught());
        clock.assert_elapsed(start, 1);
    }

    async fn same_deadline_outermost_of_three_wins(clock) {
        let start = Instant::now();
        let deadline = start + clock.t(1);
        let scopes: Vec<CancelScope> =
            (0..3).map(|_| CancelScope::with_deadline(deadline)).collect();
        let [a, b, c] = [scopes[0].clone(), scopes[1].clone(), scopes[2].clone()];
        let after = Flag::default();
        let (flag_b, flag_c) = (after.clone(), after.clone());
        let out = a
            .move_on(async move {
                let _ = b
                    .fail(async move {
                        c.move_on(clock.forever()).await;
                        flag_c.set();
                    })
                    .await;
                flag_b.set();
            })
            .await;
        assert_eq!(out, None);
        assert!(!after.get());
        let caught: Vec<bool> = scopes.iter().map(CancelScope::cancelled_caught).collect();
        assert_eq!(caught, [true, false, false]);
        clock.assert_elapsed(start, 1);
    }

    /// A combinator that gives each future its own waker (`FuturesUnordered`, as
    /// `buffer_unordered` and `join_all` use) hides which task armed the outer timer; the
    /// outer scope still wins the tie.
    async fn same_deadline_under_futures_unordered_outer_wins(clock) {
        use futures::StreamExt;
        let start = Instant::now();
        let deadline = start + clock.t(1);
        let out = move_on_at(deadline, async move {
            let mut set = futures::stream::FuturesUnordered::new();
            set.push(move_on_at(deadline, clock.forever()));
            set.push(move_on_at(deadline, clock.forever()));
            set.next().await;
            unreachable!("an inner scope claimed the outer deadline");
        })
        .await;
        assert_eq!(out, None::<()>);
        clock.assert_elapsed(start, 1);
    }

    /// The outermost and the innermost deadlines tie, and the middle one is later.
    async fn same_deadline_skipping_a_later_middle_scope_outer_wins(clock) {
        let start = Instant::now();
        let deadline = start + clock.t(1);
        let outer = CancelScope::with_deadline(deadline);
        let middle = CancelScope::with_deadline(deadline + clock.t(2));
        let inner = CancelScope::with_deadline(deadline);
        let (m, i) = (middle.clone(), inner.clone());
        let res = outer
            .fail(async move {
                let _ = m.fail(async move { i.fail(clock.forever()).await }).await;
                unreachable!("the outer scope was cancelled");
            })
            .await;
        assert!(res.unwrap_err().is_deadline_reached());
        assert!(outer.cancelled_caught());
        assert!(!middle.cancelled_caught());
        assert!(!inner.cancelled_caught());
        clock.assert_elapsed(start, 1);
    }

    /// Both scopes arm their own timer (the inner one was earlier when it started); the outer
    /// deadline then moves onto the inner one. Both fire at the same instant: the outer wins.
    async fn same_deadline_reached_by_moving_the_outer_deadline_outer_wins(clock) {
        let start = Instant::now();
        let deadline = start + clock.t(2);
        let outer = CancelScope::with_deadline(deadline + clock.t(3));
        let inner = CancelScope::with_deadline(deadline);
        let (o, i) = (outer.clone(), inner.clone());
        let out = outer
            .move_on(async move {
                i.move_on(async move {
                    sleep(clock.t(1)).await;
                    o.set_deadline(Some(deadline));
                    clock.forever().await;
                })
                .await;
                unreachable!("the outer scope was cancelled");
            })
            .await;
        assert_eq!(out, None::<()>);
        assert!(outer.cancelled_caught());
        assert!(!inner.cancelled_caught());
        clock.assert_elapsed(start, 2);
    }

    /// Both scopes are cancelled by `cancel()` before the next suspension: the outer wins.
    async fn both_cancelled_outer_wins(clock) {
        let outer = CancelScope::new();
        let inner = CancelScope::with_timeout(clock.t(5));
        let (o, i) = (outer.clone(), inner.clone());
        let res = outer
            .fail(async move {
                let _ = i
                    .clone()
                    .fail(async move {
                        i.cancel();
                        o.cancel();
                        clock.forever().await;
                    })
                    .await;
                unreachable!("the outer scope was cancelled");
            })
            .await;
        assert!(res.unwrap_err().is_cancel_called());
        assert!(outer.cancelled_caught());
        assert!(!inner.cancelled_caught());
    }
}

/// The inner deadline has passed and the outer scope is cancelled before the next suspension.
#[tokio::test(start_paused = true)]
async fn inner_past_deadline_and_outer_cancel_outer_wins() {
    let outer = CancelScope::new();
    let inner = CancelScope::with_timeout(secs(5));
    let (o, i) = (outer.clone(), inner.clone());
    let out = outer
        .move_on(async move {
            i.clone()
                .move_on(async move {
                    i.set_deadline(Some(Instant::now() - secs(1)));
                    o.cancel();
                    pending::<()>().await;
                })
                .await;
            unreachable!("the outer scope was cancelled");
        })
        .await;
    assert_eq!(out, None::<()>);
    assert!(outer.cancelled_caught());
    assert!(!inner.cancelled_caught());
}

// ---------------------------------------------------------------------------------------------
// Polled first: cancellation is delivered at a suspension point

#[tokio::test(start_paused = true)]
async fn cancel_then_finish_without_suspending_returns_the_value() {
    let scope = CancelScope::with_timeout(secs(1));
    let handle = scope.clone();
    assert_eq!(
        scope
            .move_on(async move {
                handle.cancel();
                42
            })
            .await,
        Some(42)
    );
    assert!(!scope.cancelled_caught());
    assert!(scope.is_cancelled());

    // Also after an earlier suspension.
    let scope = CancelScope::with_timeout(secs(1));
    let handle = scope.clone();
    let out = scope
        .fail(async move {
            sleep(ms(10)).await;
            handle.cancel();
            43
        })
        .await;
    assert_eq!(out, Ok(43));
    assert!(!scope.cancelled_caught());
}

#[tokio::test(start_paused = true)]
async fn ready_future_returns_its_value_despite_a_past_deadline() {
    let past = Instant::now() - secs(1);
    let fut = move_on_at(past, async { 7 });
    let scope = fut.cancel_scope();
    assert!(scope.is_cancelled());
    assert_eq!(fut.await, Some(7));
    assert!(!scope.cancelled_caught());
    assert_eq!(
        fail_at(past, std::future::ready("ready")).await,
        Ok("ready")
    );
    assert_eq!(fail_after(Duration::ZERO, async { 8 }).await, Ok(8));
    // One suspension is enough to be cancelled.
    let res = fail_at(past, async {
        tokio::task::yield_now().await;
        9
    })
    .await;
    assert!(res.unwrap_err().is_deadline_reached());
}

// ---------------------------------------------------------------------------------------------
// Level-triggered: no code in the scope runs after the cancellation point

on_both_runtimes! {
    async fn no_code_runs_after_the_cancellation_point(clock) {
        // By the deadline.
        let after = Flag::default();
        let (guard, drops) = drop_counter();
        let flag = after.clone();
        let out = move_on_after(clock.t(1), async move {
            let _guard = guard;
            clock.forever().await;
            flag.set();
        })
        .await;
        assert_eq!(out, None);
        assert!(!after.get());
        // The body was dropped, exactly once, before the scope returned.
        assert_eq!(drops.load(Ordering::SeqCst), 1);

        // By another task's cancel().
        let scope = CancelScope::new();
        let handle = scope.clone();
        let (started_tx, started_rx) = oneshot::channel();
        let canceller = tokio::spawn(async move {
            started_rx.await.unwrap();
            handle.cancel();
        });
        let flag = after.clone();
        let out = scope
            .move_on(async move {
                started_tx.send(()).unwrap();
                clock.forever().await;
                flag.set();
            })
            .await;
        assert_eq!(out, None);
        assert!(!after.get());
        canceller.await.unwrap();

        // Sleeping past every deadline above: the dropped bodies never resume.
        sleep(clock.t(5)).await;
        assert!(!after.get());
    }
}

#[tokio::test(start_paused = true)]
async fn cancelled_body_is_not_polled_again() {
    let scope = CancelScope::new();
    let handle = scope.clone();
    let after = Flag::default();
    let flag = after.clone();
    let (body, polls) = count_polls(async move {
        handle.cancel();
        // Ready again at once (it wakes itself), but the scope drops the body first.
        tokio::task::yield_now().await;
        flag.set();
    });
    assert_eq!(scope.move_on(body).await, None);
    assert_eq!(polls.load(Ordering::SeqCst), 1);
    assert!(!after.get());
}

#[tokio::test(start_paused = true)]
async fn outer_cancellation_stops_code_after_the_inner_scope() {
    let outer = CancelScope::new();
    let handle = outer.clone();
    let (after_inner, after_await) = (Flag::default(), Flag::default());
    let (a, b) = (after_inner.clone(), after_await.clone());
    let out = outer
        .move_on(async move {
            move_on_after(secs(10), async move {
                sleep(secs(1)).await;
                handle.cancel();
                sleep(secs(1)).await;
                b.set();
            })
            .await;
            a.set();
        })
        .await;
    assert_eq!(out, None);
    assert!(!after_inner.get() && !after_await.get());
}

// ---------------------------------------------------------------------------------------------
// Thousands of nested scopes

/// `depth` nested boxed scopes around a long sleep; each scope's handle goes into `scopes`
/// (outermost first). `deadline` is given to every scope (`None`: no deadline). Code after
/// each inner scope sets `after`.
fn nested_scopes(
    depth: usize,
    deadline: Option<Instant>,
    scopes: &mut Vec<CancelScope>,
    after: &Flag,
    innermost_deadline: &Arc<Mutex<Option<Option<Instant>>>>,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    if depth == 0 {
        let seen = innermost_deadline.clone();
        let after = after.clone();
        return Box::pin(async move {
            *seen.lock().unwrap() = Some(current_effective_deadline());
            sleep(secs(3600)).await;
            after.set();
        });
    }
    let scope = match deadline {
        Some(deadline) => CancelScope::with_deadline(deadline),
        None => CancelScope::new(),
    };
    scopes.push(scope.clone());
    let inner = nested_scopes(depth - 1, deadline, scopes, after, innermost_deadline);
    let after = after.clone();
    Box::pin(async move {
        scope.move_on(inner).await;
        after.set();
    })
}

/// Runs `f` on a thread with a stack of the size a main thread usually gets (8 MiB), with a
/// current-thread runtime and the paused clock.
fn on_big_stack_paused_runtime(f: impl Future<Output = ()> + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap()
                .block_on(f)
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn a_thousand_nested_scopes_keep_the_outermost_deadline() {
    on_big_stack_paused_runtime(async {
        let start = Instant::now();
        let outer_deadline = start + secs(1);
        for inner_deadline in [None, Some(outer_deadline), Some(start + secs(2))] {
            let mut scopes = Vec::new();
            let after = Flag::default();
            let seen = Arc::new(Mutex::new(None));
            let body = nested_scopes(1000, inner_deadline, &mut scopes, &after, &seen);
            let outer = CancelScope::with_deadline(outer_deadline);
            assert_eq!(outer.move_on(body).await, None);
            assert!(outer.cancelled_caught(), "lost the outermost cancellation");
            assert!(!after.get());
            assert_eq!(scopes.len(), 1000);
            assert!(scopes.iter().all(|s| !s.cancelled_caught()));
            assert_eq!(*seen.lock().unwrap(), Some(Some(outer_deadline)));
            assert_eq!(Instant::now(), outer_deadline);
        }
    });
}

#[test]
fn a_thousand_nested_scopes_keep_the_outermost_cancel() {
    on_big_stack_paused_runtime(async {
        let start = Instant::now();
        let mut scopes = Vec::new();
        let after = Flag::default();
        let seen = Arc::new(Mutex::new(None));
        let body = nested_scopes(1000, None, &mut scopes, &after, &seen);
        let outer = CancelScope::new();
        let handle = outer.clone();
        tokio::spawn(async move {
            sleep(secs(1)).await;
            handle.cancel();
        });
        assert_eq!(outer.move_on(body).await, None);
        assert!(outer.cancelled_caught());
        assert!(!after.get());
        assert!(scopes.iter().all(|s| !s.cancelled_caught()));
        assert_eq!(*seen.lock().unwrap(), Some(None));
        assert_eq!(start.elapsed(), secs(1));

        // The innermost scope's own cancellation is caught there, a thousand levels down.
        let mut scopes = Vec::new();
        let after = Flag::default();
        let body = nested_scopes(1000, None, &mut scopes, &after, &seen);
        let innermost = scopes.last().unwrap().clone();
        tokio::spawn(async move {
            sleep(secs(1)).await;
            innermost.cancel();
        });
        assert_eq!(CancelScope::new().move_on(body).await, Some(()));
        assert!(after.get());
        let caught: Vec<bool> = scopes.iter().map(CancelScope::cancelled_caught).collect();
        assert!(caught[..999].iter().all(|c| !c) && caught[999]);
    });
}

// ---------------------------------------------------------------------------------------------
// CancellationToken interop

#[tokio::test(start_paused = true)]
async fn cancel_on_a_token_linked_before_the_run() {
    let start = Instant::now();
    // Already cancelled: the scope cancels at the first suspension.
    let token = CancellationToken::new();
    token.cancel();
    let scope = CancelScope::new();
    scope.cancel_on(token);
    assert_eq!(scope.move_on(sleep(secs(1))).await, None);
    assert!(scope.cancelled_caught());
    assert_eq!(start.elapsed(), Duration::ZERO);

    // Cancelled later by another task.
    let token = CancellationToken::new();
    let scope = CancelScope::new();
    scope.cancel_on(CancellationToken::new()); // several tokens may be linked
    scope.cancel_on(token.clone());
    tokio::spawn(async move {
        sleep(secs(1)).await;
        token.cancel();
    });
    let err = scope.fail(sleep(secs(5))).await.unwrap_err();
    assert!(err.is_cancel_called());
    assert!(scope.cancelled_caught());
    assert_eq!(start.elapsed(), secs(1));
}

on_both_runtimes! {
    async fn cancel_on_a_token_linked_while_running(clock) {
        let start = Instant::now();
        let token = CancellationToken::new();
        let scope = CancelScope::with_timeout(clock.t(5));
        let handle = scope.clone();
        let linked = token.clone();
        let canceller = tokio::spawn(async move {
            sleep(clock.t(1)).await;
            token.cancel();
        });
        let after = Flag::default();
        let flag = after.clone();
        let res = scope
            .fail(async move {
                sleep(clock.t(1) / 2).await;
                handle.cancel_on(linked);
                clock.forever().await;
                flag.set();
            })
            .await;
        assert!(res.unwrap_err().is_cancel_called());
        assert!(!after.get());
        clock.assert_elapsed(start, 1);
        canceller.await.unwrap();
    }

    async fn cancellation_token_fires_when_the_deadline_passes(clock) {
        let start = Instant::now();
        let scope = CancelScope::with_timeout(clock.t(1));
        let token = scope.cancellation_token();
        let watcher = tokio::spawn(async move {
            token.cancelled().await;
            Instant::now()
        });
        assert_eq!(scope.move_on(clock.forever()).await, None);
        let fired_at = watcher.await.unwrap();
        assert!(fired_at >= start + clock.t(1));
        clock.assert_elapsed(start, 1);
    }

    /// A token handed out by one scope cancels another: both directions at once.
    async fn cancellation_token_of_one_scope_cancels_another(clock) {
        let start = Instant::now();
        let first = CancelScope::with_timeout(clock.t(1));
        let second = CancelScope::new();
        second.cancel_on(first.cancellation_token());
        let second_task = tokio::spawn(second.clone().move_on(clock.forever()));
        assert_eq!(first.move_on(clock.forever()).await, None);
        assert_eq!(second_task.await.unwrap(), None);
        assert!(first.cancelled_caught() && second.cancelled_caught());
        clock.assert_elapsed(start, 1);
    }
}

#[tokio::test(start_paused = true)]
async fn cancellation_token_fires_on_cancel() {
    // Created before cancel(), while nothing runs.
    let scope = CancelScope::new();
    let token = scope.cancellation_token();
    assert!(!token.is_cancelled());
    scope.cancel();
    assert!(token.is_cancelled());
    // Created after cancel().
    assert!(scope.cancellation_token().is_cancelled());

    // cancel() while running wakes a task waiting on the token.
    let scope = CancelScope::new();
    let token = scope.cancellation_token();
    let watcher = tokio::spawn(async move { token.cancelled().await });
    let handle = scope.clone();
    let out = scope
        .move_on(async move {
            sleep(secs(1)).await;
            handle.cancel();
            pending::<()>().await;
        })
        .await;
    assert_eq!(out, None);
    watcher.await.unwrap();

    // A scope whose deadline already passed hands out a cancelled token.
    let scope = CancelScope::with_deadline(Instant::now() - secs(1));
    assert!(scope.cancellation_token().is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn cancelling_the_handed_out_token_does_not_cancel_the_scope() {
    let scope = CancelScope::new();
    scope.cancellation_token().cancel();
    assert_eq!(scope.move_on(sleep(secs(1))).await, Some(()));
    assert!(!scope.cancelled_caught());
    assert!(!scope.is_cancelled());
    // Nor the tokens handed to other callers: a library that cancels its own copy must not
    // make another caller believe the scope was cancelled.
    let scope = CancelScope::new();
    let mine = scope.cancellation_token();
    scope.cancellation_token().cancel();
    assert!(!mine.is_cancelled());
    assert!(!scope.cancellation_token().is_cancelled());
    scope.cancel();
    assert!(mine.is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn token_cancelled_after_the_scope_finished_changes_nothing() {
    let token = CancellationToken::new();
    let scope = CancelScope::new();
    scope.cancel_on(token.clone());
    assert_eq!(scope.move_on(sleep(secs(1))).await, Some(()));
    token.cancel();
    tokio::task::yield_now().await;
    assert!(!scope.cancelled_caught());
    // Linking after the run does not panic either.
    scope.cancel_on(CancellationToken::new());
}

#[tokio::test(start_paused = true)]
async fn cancellation_token_of_an_inner_scope_fires_when_its_tied_deadline_passes() {
    // The outer scope claims the tie, but the inner deadline passed too: its token must say so,
    // as `is_cancelled()` does.
    let deadline = Instant::now() + secs(1);
    let outer = CancelScope::with_deadline(deadline);
    let inner = CancelScope::with_deadline(deadline);
    let token = inner.cancellation_token();
    let i = inner.clone();
    let out = outer
        .move_on(async move { i.move_on(sleep(secs(5))).await })
        .await;
    assert_eq!(out, None);
    assert!(!inner.cancelled_caught());
    assert!(inner.is_cancelled());
    assert!(token.is_cancelled());
}

// ---------------------------------------------------------------------------------------------
// Handles, accessors, Debug, errors and auto traits

#[tokio::test(start_paused = true)]
async fn move_on_cancel_scope_is_a_handle_on_the_running_scope() {
    let start = Instant::now();
    let fut = move_on_after(secs(10), sleep(secs(5)));
    let scope = fut.cancel_scope();
    assert_eq!(scope.deadline(), Some(start + secs(10)));
    scope.set_deadline(Some(start + secs(1)));
    assert_eq!(fut.await, None);
    assert!(scope.cancelled_caught());
    assert_eq!(start.elapsed(), secs(1));

    let fut = fail_after(secs(10), pending::<()>());
    fut.cancel_scope().cancel();
    assert!(fut.await.unwrap_err().is_cancel_called());

    // The handle of a scope's own future is the scope.
    let scope = CancelScope::new();
    let fut = scope.move_on(pending::<()>());
    fut.cancel_scope().cancel();
    assert!(scope.is_cancelled());
    assert_eq!(fut.await, None);
    assert!(scope.cancelled_caught());
}

#[tokio::test(start_paused = true)]
async fn get_ref_and_get_mut_reach_the_inner_future_until_it_is_dropped() {
    let scope = CancelScope::new();
    let mut fut = pin!(scope.move_on(std::future::ready(5)));
    assert!(MoveOn::get_ref(&fut).is_some());
    assert!(MoveOn::get_mut(fut.as_mut()).is_some());
    assert_eq!(poll!(fut.as_mut()), Poll::Ready(Some(5)));
    assert!(MoveOn::get_ref(&fut).is_none());

    let mut fut = pin!(CancelScope::new().fail(pending::<()>()));
    assert_eq!(poll!(fut.as_mut()), Poll::Pending);
    assert!(Fail::get_ref(&fut).is_some());
    fut.cancel_scope().cancel();
    assert!(matches!(poll!(fut.as_mut()), Poll::Ready(Err(_))));
    assert!(Fail::get_ref(&fut).is_none());
    assert!(Fail::get_mut(fut.as_mut()).is_none());
}

#[tokio::test(start_paused = true)]
async fn debug_output_shows_the_state() {
    let deadline = Instant::now() + secs(1);
    let scope = CancelScope::with_deadline(deadline);
    let text = format!("{scope:?}");
    assert!(text.starts_with("CancelScope"), "{text}");
    assert!(text.contains(&format!("{deadline:?}")), "{text}");
    assert!(text.contains("is_cancelled: false"), "{text}");
    assert!(text.contains("cancelled_caught: false"), "{text}");

    let mut fut = pin!(scope.move_on(pending::<()>()));
    let idle = format!("{fut:?}");
    assert!(idle.starts_with("MoveOn"), "{idle}");
    assert!(idle.contains("Idle"), "{idle}");
    assert_eq!(poll!(fut.as_mut()), Poll::Pending);
    let running = format!("{fut:?}");
    assert!(running.contains("Running"), "{running}");
    assert!(running.contains("is_cancelled: false"), "{running}");
    scope.cancel();
    assert!(format!("{scope:?}").contains("is_cancelled: true"));
    assert_eq!(poll!(fut.as_mut()), Poll::Ready(None));
    let done = format!("{fut:?}");
    assert!(done.contains("Done"), "{done}");
    assert!(done.contains("cancelled_caught: true"), "{done}");
    assert!(format!("{scope:?}").contains("cancelled_caught: true"));

    let fail = fail_after(secs(1), pending::<()>());
    assert!(format!("{fail:?}").starts_with("Fail"));
    assert!(format!("{:?}", CancelScope::new()).contains("deadline: None"));
}

#[tokio::test(start_paused = true)]
async fn elapsed_displays_in_lowercase_and_converts_to_io_timed_out() {
    let by_deadline = fail_after(ms(1), pending::<()>()).await.unwrap_err();
    let scope = CancelScope::new();
    scope.cancel();
    let by_cancel = scope.fail(pending::<()>()).await.unwrap_err();

    for err in [by_deadline, by_cancel] {
        let text = err.to_string();
        assert!(!text.is_empty());
        assert_eq!(text, text.to_lowercase(), "Display is lowercase");
        assert!(!text.ends_with('.'));
        assert!(format!("{err:?}").starts_with("Cancelled"));
        let dyn_err: &dyn std::error::Error = &err;
        assert!(dyn_err.source().is_none());
        let copy = err;
        assert_eq!(copy, err);

        let io: std::io::Error = err.into();
        assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(io.to_string(), text);
        assert_eq!(
            io.get_ref().unwrap().downcast_ref::<Cancelled>(),
            Some(&err)
        );
    }
    assert_eq!(by_deadline.to_string(), "deadline has elapsed");
    assert_ne!(by_deadline.to_string(), by_cancel.to_string());
}

/// Compile-time checks: these fail to build, not to run.
#[allow(dead_code)]
fn auto_traits() {
    fn send_sync_clone<T: Send + Sync + Clone + std::fmt::Debug + 'static>() {}
    fn send<T: Send>() {}
    fn send_future<F: Future + Send>(_: &F) {}

    send_sync_clone::<CancelScope>();
    let _: CancelScope = Default::default();
    send_sync_clone::<Cancelled>();
    send::<MoveOn<std::future::Ready<u32>>>();
    send::<Fail<std::future::Ready<u32>>>();
    send::<MoveOn<Pin<Box<dyn Future<Output = ()> + Send>>>>();
    send::<Fail<Pin<Box<dyn Future<Output = ()> + Send>>>>();
    let fut = move_on_after(secs(1), async { sleep(secs(1)).await });
    send_future(&fut);
    let fut = fail_after(secs(1), async { sleep(secs(1)).await });
    send_future(&fut);
}

#[tokio::test(start_paused = true)]
async fn scope_futures_can_be_spawned() {
    let scope = CancelScope::with_timeout(secs(1));
    let task = tokio::spawn(scope.move_on(async { sleep(secs(2)).await }));
    let task2 = tokio::spawn(fail_after(secs(3), async { sleep(secs(2)).await }));
    assert_eq!(task.await.unwrap(), None);
    assert_eq!(task2.await.unwrap(), Ok(()));
    assert!(scope.cancelled_caught());
}

// ---------------------------------------------------------------------------------------------
// Poll-level: a finished scope does not touch its task again

#[tokio::test(start_paused = true)]
async fn cancel_after_the_scope_finished_does_not_wake_its_task() {
    let scope = CancelScope::with_timeout(secs(5));
    let handle = scope.clone();
    let mut task = task::spawn(async move {
        let out = handle.move_on(sleep(secs(1))).await;
        assert_eq!(out, Some(()));
        pending::<()>().await;
    });
    assert_pending!(task.poll());
    advance(secs(1)).await;
    assert!(task.is_woken());
    assert_pending!(task.poll());
    scope.cancel();
    assert!(!scope.cancelled_caught());
    assert!(
        !task.is_woken(),
        "a finished scope woke the task that ran it"
    );
}

#[tokio::test(start_paused = true)]
async fn poll_level_cancel_wakes_the_running_scope_once() {
    let scope = CancelScope::with_timeout(secs(5));
    let mut task = task::spawn(scope.move_on(pending::<()>()));
    assert_pending!(task.poll());
    assert!(!task.is_woken());
    scope.cancel();
    assert!(task.is_woken());
    scope.cancel();
    assert_ready_eq!(task.poll(), None);
    assert!(scope.cancelled_caught());
}

#[tokio::test(start_paused = true)]
async fn scope_dropped_by_select_leaves_nothing_behind() {
    let scope = CancelScope::with_timeout(secs(5));
    let handle = scope.clone();
    let after = Flag::default();
    let flag = after.clone();
    let mut task = task::spawn(async move {
        tokio::select! {
            _ = handle.move_on(async move { sleep(secs(3)).await; flag.set() }) => unreachable!(),
            _ = sleep(secs(1)) => {}
        }
        pending::<()>().await;
    });
    assert_pending!(task.poll());
    advance(secs(1)).await;
    assert!(task.is_woken());
    assert_pending!(task.poll());
    // Neither the scope's deadline, nor its body's sleep, nor cancel() reaches the task.
    scope.cancel();
    advance(secs(10)).await;
    assert!(!task.is_woken());
    assert!(!after.get());
    assert!(!scope.cancelled_caught());
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "polled after it completed")]
async fn polling_a_finished_scope_future_panics() {
    let mut fut = pin!(move_on_after(secs(1), async { 1 }));
    assert_eq!(poll!(fut.as_mut()), Poll::Ready(Some(1)));
    let _ = poll!(fut.as_mut());
}
