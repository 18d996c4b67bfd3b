//! Bad input and misuse (issue 7): every case has a test and a documented outcome.
//!
//! | input | outcome |
//! |---|---|
//! | `concurrency_limit(0)` (group, gather) | panics at the call, naming the function |
//! | `Duration::ZERO` timeout | a ready future still returns its value; anything that suspends is cancelled at its first suspension |
//! | `Duration::MAX` timeout | "never": no panic, a deadline ~30 years away that flows to children |
//! | deadline far in the past | as `ZERO`: cancelled at the first suspension; the effective deadline reads as that past instant |
//! | a scope run twice (in turn or at once) | the second run panics: "a cancel scope can only be run once" |
//! | `set_deadline` / `cancel` after the scope finished | no effect on the result; `deadline()` / `is_cancelled()` report the new values |
//! | spawn into a finished, failed or cancelled group | the future is dropped unpolled; the handle resolves to a cancelled `TaskError`; no panic |
//! | a group handle used from another runtime or a plain thread | works: the task runs on the group's runtime, the group waits for it |
//! | outside any runtime | `current_effective_deadline()` is `None`; scopes can be built, cancelled and moved; a scope without a deadline runs on any executor; a scope that must arm its timer panics naming the scope (also in a runtime built without the time driver); a group (or non-empty gather) panics on its first poll naming `TaskGroup::scope`; an empty gather returns `Ok(vec![])`; `defer::push` returns `Err(NotEnabled)` |
//! | a child that panics while being dropped (aborted, queued, or the body) | a recorded failure (a panic in the `GroupError` with `capture_panics`), not an unwind out of the group; the error that started the cancellation is kept; every other future is dropped before the group returns |
//! | a deferred cleanup that panics | the other cleanups still run; the first panic is resumed after the last cleanup |
//! | runtime dropped while a group runs | no hang; every future is dropped; handles resolve to cancelled |
//! | `concurrency_limit(usize::MAX)` (group, gather, gather_settled) | unlimited: everything starts at once, nothing is sized by the limit; `gather_settled(..).concurrency_limit(0)` panics like `gather`'s |
//! | shutdown grace `ZERO` (`TaskGroup::request_shutdown`, `CancelScope::request_shutdown`, `shutdown_on`) | a hard cancel at once (the request is still visible to code that runs before the first suspension) |
//! | shutdown grace `Duration::MAX` | never cut off: the grace's end saturates to ~30 years and reads back as the deadline; a later request shortens it, a later one never extends it |
//! | soft trigger at `ZERO`, in the past, or already complete (`shutdown_after`, `shutdown_at`, `shutdown_on` on `MoveOn`, `Fail`, `GroupScope`) | the request is made at the first poll |
//! | soft trigger at `Duration::MAX`, far in the future, or never complete | never fires; the scope or group ends on its own |
//! | deadline far in the future (~100 years) | never fires; `deadline()` and `current_effective_deadline()` read it back exactly, in tasks too |
//! | `CancelScope::with_deadline` in the past | `is_cancelled()` at once (the deadline has passed), `cancelled_caught()` only once a run is cut; a ready future still returns its value |
//! | deadline exactly now | as in the past: a ready future returns its value; cancelled at the first suspension |
//! | task name empty, 1 MB, or with control characters / bidi / NUL / backtick | kept as given (`task_name()`), shown between backticks, no panic; also on background, `spawn_when_free` and refused spawns |
//! | `grpc-timeout` header: `0` of any unit | "now": expired at the first suspension |
//! | `grpc-timeout` header: `99999999H` | ~30 years away (saturated), no panic |
//! | `tower` `ServerLayer`: `default_timeout(ZERO)` / `max_timeout(ZERO)` | `DEADLINE_EXCEEDED` (HTTP 504) without calling the handler (a header still beats a zero default; a zero maximum caps everything) |
//! | `tower` `ServerLayer`: `default_timeout(MAX)` / `max_timeout(MAX)`, header `99999999H` | a deadline ~30 years away, no overflow; a finite maximum caps `99999999H` |
//! | `tower` `ServerLayer`: malformed header (empty, space, decimal, sign, 9 digits, non-UTF-8 bytes, 64 KB) | `INVALID_ARGUMENT` (HTTP 400) without calling the handler |
//! | `grpc-timeout` header malformed (empty, spaces, sign, decimal, >8 digits, lower-case `s`, no unit, non-ASCII digit, NUL, 1 MB of digits) | `ParseTimeoutError` from `decode_timeout`, `deadline_from_header` and `parse::<GrpcTimeout>`, with a short message that does not echo the value |
#![allow(clippy::async_yields_async)]

mod issue7_util;

use std::future::pending;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use issue7_util::{Drops, PanicOnDrop, panic_message};
use quattro::defer::{self, Deferrer};
use quattro::gather::Gather;
use quattro::{
    CancelScope, TaskGroup, TaskHandle, current_effective_deadline, fail_after, fail_at, gather,
    gather_settled, move_on_after, move_on_at,
};
use tokio::time::{Instant, sleep};

const HOUR: Duration = Duration::from_secs(3600);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------------------------
// limit 0

#[test]
#[should_panic(expected = "TaskGroup concurrency_limit must be at least 1")]
fn group_limit_zero_panics_at_the_call() {
    let _ = TaskGroup::builder().concurrency_limit(0);
}

#[test]
#[should_panic(expected = "gather concurrency_limit must be at least 1")]
fn gather_limit_zero_panics_at_the_call() {
    drop(Gather::new((0..3).map(|i| async move { Ok::<_, ()>(i) })).concurrency_limit(0));
}

// ---------------------------------------------------------------------------------------------
// Duration::ZERO and Duration::MAX

#[tokio::test(start_paused = true)]
async fn zero_timeout_ready_future_returns_its_value() {
    assert_eq!(move_on_after(Duration::ZERO, async { 7 }).await, Some(7));
    assert_eq!(fail_after(Duration::ZERO, async { 7 }).await, Ok(7));
}

#[tokio::test(start_paused = true)]
async fn zero_timeout_cancels_at_the_first_suspension() {
    let drops = Drops::new();
    let g = drops.guard();
    let scope = CancelScope::with_timeout(Duration::ZERO);
    let start = Instant::now();
    let out = scope
        .move_on(async move {
            let _g = g;
            tokio::task::yield_now().await;
            unreachable!("cancelled at the first suspension")
        })
        .await;
    assert_eq!(out, None::<()>);
    assert!(scope.cancelled_caught());
    assert_eq!(start.elapsed(), Duration::ZERO);
    drops.assert_all_dropped();
    let err = fail_after(Duration::ZERO, sleep(HOUR)).await.unwrap_err();
    assert!(err.is_deadline_reached());
}

#[tokio::test(start_paused = true)]
async fn zero_timeout_around_a_group_drops_every_child() {
    let drops = Drops::new();
    let d = drops.clone();
    let out = move_on_after(
        Duration::ZERO,
        TaskGroup::scope(|tg| async move {
            for _ in 0..10 {
                let g = d.guard();
                tg.spawn(async move {
                    let _g = g;
                    sleep(HOUR).await;
                    Ok::<_, ()>(())
                });
            }
            Ok(())
        }),
    )
    .await;
    assert!(out.is_none());
    assert_eq!(drops.made(), 10);
    drops.assert_all_dropped();
    assert_eq!(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        0
    );
}

#[tokio::test(start_paused = true)]
async fn max_timeout_means_never_and_flows_to_children() {
    let scope = CancelScope::with_timeout(Duration::MAX);
    let far = scope.deadline().expect("a far deadline, not none");
    assert!(far > Instant::now() + Duration::from_secs(20 * 365 * 86400));
    let out = scope
        .move_on(TaskGroup::scope(|tg| async move {
            let h = tg.spawn(async {
                sleep(HOUR).await;
                Ok::<_, ()>(current_effective_deadline())
            });
            Ok(h.await.unwrap())
        }))
        .await;
    assert_eq!(out.unwrap().unwrap(), Some(far));
    assert!(!scope.cancelled_caught());
    assert_eq!(fail_after(Duration::MAX, sleep(HOUR)).await, Ok(()));
    assert_eq!(move_on_after(Duration::MAX, async { 1 }).await, Some(1));
}

#[tokio::test(start_paused = true)]
async fn max_timeout_nested_in_a_short_one_keeps_the_short_one() {
    let out = move_on_after(ms(5), async {
        let inner = move_on_after(Duration::MAX, async {
            assert_eq!(
                current_effective_deadline(),
                Some(Instant::now() + ms(5)),
                "the earliest deadline wins"
            );
            sleep(HOUR).await;
        })
        .await;
        unreachable!("the outer scope cancels first: {inner:?}")
    })
    .await;
    assert!(out.is_none());
}

// ---------------------------------------------------------------------------------------------
// Deadlines far in the past

/// The earliest instant this process can represent going back (up to ten years).
fn far_past() -> Instant {
    let now = Instant::now();
    [10 * 365 * 86400, 365 * 86400, 86400, 3600, 60, 1]
        .into_iter()
        .find_map(|s| now.checked_sub(Duration::from_secs(s)))
        .unwrap_or(now)
}

#[tokio::test(start_paused = true)]
async fn past_deadline_cancels_at_the_first_suspension() {
    let past = far_past();
    assert!(past < Instant::now());
    assert_eq!(move_on_at(past, async { 1 }).await, Some(1));
    assert_eq!(move_on_at(past, sleep(HOUR)).await, None);
    let err = fail_at(past, pending::<()>()).await.unwrap_err();
    assert!(err.is_deadline_reached());
    // The effective deadline reads as the past instant, so that code passing it on sees the
    // time is up.
    let seen = move_on_at(past, async { current_effective_deadline() }).await;
    assert_eq!(seen, Some(Some(past)));
}

#[tokio::test(start_paused = true)]
async fn past_deadline_set_while_running_cancels_promptly() {
    let scope = CancelScope::new();
    let handle = scope.clone();
    let start = Instant::now();
    let out = scope
        .move_on(async move {
            sleep(ms(10)).await;
            handle.set_deadline(Some(far_past()));
            sleep(HOUR).await;
        })
        .await;
    assert!(out.is_none());
    assert!(scope.cancelled_caught());
    assert_eq!(start.elapsed(), ms(10));
}

#[tokio::test(start_paused = true)]
async fn past_deadline_around_a_group_with_children_in_the_queue() {
    let drops = Drops::new();
    let d = drops.clone();
    let out = move_on_at(
        far_past(),
        TaskGroup::builder()
            .concurrency_limit(2)
            .scope(|tg| async move {
                for _ in 0..10 {
                    let g = d.guard();
                    let d2 = d.clone();
                    tg.spawn(async move {
                        d2.polled();
                        let _g = g;
                        sleep(ms(1)).await;
                        Ok::<_, ()>(())
                    });
                }
                Ok(())
            }),
    )
    .await;
    assert!(out.is_none());
    assert_eq!(drops.made(), 10);
    drops.assert_all_dropped();
    assert!(
        drops.polls() <= 2,
        "queued tasks never run: {}",
        drops.polls()
    );
}

// ---------------------------------------------------------------------------------------------
// A scope run twice

#[tokio::test]
#[should_panic(expected = "a cancel scope can only be run once")]
async fn scope_run_twice_in_turn_panics() {
    let scope = CancelScope::new();
    assert_eq!(scope.move_on(async { 1 }).await, Some(1));
    let _ = scope.move_on(async { 2 }).await;
}

#[tokio::test]
#[should_panic(expected = "a cancel scope can only be run once")]
async fn scope_run_twice_at_once_panics() {
    let scope = CancelScope::new();
    let a = scope.move_on(pending::<()>());
    let b = scope.fail(pending::<()>());
    let _ = tokio::join!(a, b);
}

#[tokio::test(start_paused = true)]
async fn scope_built_twice_but_run_once_is_fine() {
    let scope = CancelScope::with_timeout(ms(5));
    let unused = scope.move_on(async { 1 });
    drop(unused);
    assert_eq!(scope.move_on(sleep(HOUR)).await, None);
    assert!(scope.cancelled_caught());
}

// ---------------------------------------------------------------------------------------------
// set_deadline after the scope finished

#[tokio::test(start_paused = true)]
async fn set_deadline_and_cancel_after_the_scope_finished() {
    let scope = CancelScope::with_timeout(ms(100));
    assert_eq!(scope.move_on(async { 1 }).await, Some(1));
    let past = far_past();
    scope.set_deadline(Some(past));
    assert_eq!(scope.deadline(), Some(past));
    assert!(
        !scope.cancelled_caught(),
        "the run completed; nothing changes that"
    );
    scope.set_deadline(None);
    assert_eq!(scope.deadline(), None);
    scope.cancel();
    assert!(scope.is_cancelled());
    assert!(!scope.cancelled_caught());
}

#[tokio::test(start_paused = true)]
async fn set_deadline_after_a_cancelled_scope_finished() {
    let scope = CancelScope::with_timeout(ms(1));
    assert_eq!(scope.move_on(sleep(HOUR)).await, None);
    scope.set_deadline(None);
    assert!(
        scope.cancelled_caught(),
        "the run was cancelled; that stays so"
    );
}

// ---------------------------------------------------------------------------------------------
// Spawning into a finished, failed or cancelled group

/// Spawns three ways into `tg`, which must refuse: the futures are dropped unpolled and the
/// handles resolve to cancelled.
async fn assert_refuses(tg: &TaskGroup<&'static str>) {
    let drops = Drops::new();
    let probe = |d: &Drops| {
        let g = d.guard();
        let d = d.clone();
        async move {
            d.polled();
            let _g = g;
            Ok::<_, &'static str>(())
        }
    };
    assert!(tg.is_closed());
    let a = tg.spawn(probe(&drops));
    let b = tg.spawn_background(probe(&drops));
    let c = tg.task("named").spawn(probe(&drops));
    let d = tg.spawn_when_free(probe(&drops)).await;
    assert_eq!(drops.made(), 4);
    drops.assert_all_dropped();
    for h in [a, b, c, d] {
        assert!(h.await.unwrap_err().is_cancelled());
    }
    assert_eq!(drops.polls(), 0, "a refused future is never polled");
    tg.cancel(); // does nothing, does not panic
    assert_eq!(tg.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn spawn_into_a_finished_group() {
    let tg = TaskGroup::scope(|tg| async move { Ok::<_, &'static str>(tg) })
        .await
        .unwrap();
    assert_refuses(&tg).await;
}

#[tokio::test(start_paused = true)]
async fn spawn_into_a_failed_group() {
    let (tx, rx) = std::sync::mpsc::channel();
    let err = TaskGroup::scope(|tg| async move {
        tx.send(tg.clone()).unwrap();
        tg.spawn(async { Err::<(), _>("boom") });
        pending::<()>().await;
        Ok(())
    })
    .await
    .unwrap_err();
    assert_eq!(err.errors().collect::<Vec<_>>(), [&"boom"]);
    assert_refuses(&rx.recv().unwrap()).await;
}

#[tokio::test(start_paused = true)]
async fn spawn_into_a_cancelled_group_while_it_is_cancelling() {
    let drops = Drops::new();
    let d = drops.clone();
    let err = TaskGroup::scope(|tg: TaskGroup<&'static str>| async move {
        tg.cancel();
        // The group is closed at once: these never run.
        assert_refuses(&tg).await;
        // A destructor that spawns while the body is dropped is refused too.
        struct SpawnOnDrop(TaskGroup<&'static str>, Drops);
        impl Drop for SpawnOnDrop {
            fn drop(&mut self) {
                let g = self.1.guard();
                let h = self.0.spawn(async move {
                    let _g = g;
                    Ok(())
                });
                drop(h);
            }
        }
        let _s = SpawnOnDrop(tg.clone(), d);
        pending::<()>().await;
        Ok(())
    })
    .await
    .unwrap_err();
    assert!(err.is_cancelled());
    assert!(err.failures().is_empty());
    assert_eq!(drops.made(), 1);
    drops.assert_all_dropped();
}

#[tokio::test(start_paused = true)]
async fn spawn_from_a_child_destructor_while_the_group_fails() {
    let drops = Drops::new();
    let d = drops.clone();
    struct SpawnOnDrop(TaskGroup<&'static str>, Drops);
    impl Drop for SpawnOnDrop {
        fn drop(&mut self) {
            let g = self.1.guard();
            let d = self.1.clone();
            drop(self.0.spawn(async move {
                d.polled();
                let _g = g;
                Ok(())
            }));
        }
    }
    let err = TaskGroup::scope(|tg| async move {
        for _ in 0..5 {
            let s = SpawnOnDrop(tg.clone(), d.clone());
            tg.spawn(async move {
                let _s = s;
                sleep(HOUR).await;
                Ok(())
            });
        }
        tg.spawn(async {
            sleep(ms(1)).await;
            Err::<(), _>("boom")
        });
        Ok(())
    })
    .await
    .unwrap_err();
    assert_eq!(err.errors().collect::<Vec<_>>(), [&"boom"]);
    assert_eq!(drops.made(), 5);
    drops.assert_all_dropped();
    assert_eq!(drops.polls(), 0);
}

// ---------------------------------------------------------------------------------------------
// A handle from another runtime

#[test]
fn group_handle_used_from_another_runtime_and_a_plain_thread() {
    let home = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let other = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let home_id = home.handle().id();
    let (tx, rx) = std::sync::mpsc::channel::<TaskGroup<()>>();
    let release = tokio_util::sync::CancellationToken::new();
    let r = release.clone();
    let group = home.spawn(TaskGroup::scope(|tg| async move {
        tx.send(tg.clone()).unwrap();
        r.cancelled().await; // keeps the group open while others spawn into it
        Ok::<_, ()>(())
    }));
    let tg = rx.recv().unwrap();
    let scope = CancelScope::new();
    let drops = Drops::new();
    // From the other runtime: the task runs on the group's runtime; its handle is awaited here.
    let ran_on = other.block_on(async {
        let g = drops.guard();
        tg.spawn(async move {
            let _g = g;
            Ok(tokio::runtime::Handle::current().id())
        })
        .await
        .unwrap()
    });
    assert_eq!(ran_on, home_id);
    // From a plain thread (no runtime at all).
    let tg2 = tg.clone();
    let d = drops.clone();
    let h: TaskHandle<u32> = std::thread::spawn(move || {
        let g = d.guard();
        tg2.spawn(async move {
            let _g = g;
            Ok(5)
        })
    })
    .join()
    .unwrap();
    assert_eq!(futures::executor::block_on(h).unwrap(), 5);
    // A scope running on one runtime, cancelled from the other.
    let s = scope.clone();
    let running = home.spawn(async move { s.move_on(pending::<()>()).await });
    other.block_on(async { scope.cancel() });
    assert_eq!(home.block_on(running).unwrap(), None);
    release.cancel();
    assert!(home.block_on(group).unwrap().is_ok());
    drops.assert_all_dropped();
    assert_eq!(drops.made(), 2);
}

// ---------------------------------------------------------------------------------------------
// Outside any runtime

#[test]
fn outside_a_runtime_deadline_is_none_and_scopes_can_be_built() {
    assert_eq!(current_effective_deadline(), None);
    let scope = CancelScope::with_timeout(ms(5));
    assert!(scope.deadline().is_some());
    scope.set_deadline(None);
    scope.cancel();
    assert!(scope.is_cancelled());
    let _ = CancelScope::with_deadline(Instant::now());
    drop(move_on_after(ms(1), async {}));
    drop(TaskGroup::scope(|_tg| async { Ok::<_, ()>(()) })); // built, not polled
    assert!(!quattro::is_shutdown_requested());
}

#[test]
fn outside_a_runtime_a_scope_without_deadline_runs_on_any_executor() {
    let scope = CancelScope::new();
    assert_eq!(
        futures::executor::block_on(scope.move_on(async { 3 })),
        Some(3)
    );
    let scope = CancelScope::new();
    let s = scope.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(ms(20));
        s.cancel();
    });
    assert_eq!(
        futures::executor::block_on(scope.move_on(pending::<()>())),
        None
    );
    t.join().unwrap();
    // A ready future inside a deadline scope needs no timer either.
    assert_eq!(
        futures::executor::block_on(move_on_after(ms(5), async { 4 })),
        Some(4)
    );
}

#[test]
fn outside_a_runtime_a_scope_with_a_deadline_that_suspends_panics() {
    let p = std::panic::catch_unwind(|| {
        futures::executor::block_on(move_on_after(ms(5), pending::<()>()))
    })
    .unwrap_err();
    let msg = panic_message(&*p);
    assert!(msg.contains("runtime") || msg.contains("reactor"), "{msg}");
}

#[test]
fn outside_a_runtime_a_scope_with_a_deadline_panics_naming_the_function() {
    let p = std::panic::catch_unwind(|| {
        futures::executor::block_on(move_on_after(ms(5), pending::<()>()))
    })
    .unwrap_err();
    let msg = panic_message(&*p);
    assert!(
        msg.contains("CancelScope") || msg.contains("move_on"),
        "{msg}"
    );
}

#[test]
fn a_runtime_without_timers_panics_naming_the_scope() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let p = std::panic::catch_unwind(AssertUnwindSafe(|| {
        rt.block_on(fail_after(ms(5), pending::<()>()))
    }))
    .unwrap_err();
    let msg = panic_message(&*p);
    assert!(msg.contains("time driver enabled"), "{msg}");
}

#[test]
fn outside_a_runtime_a_group_panics_naming_the_function() {
    let p = std::panic::catch_unwind(|| {
        futures::executor::block_on(TaskGroup::scope(|_tg| async { Ok::<_, ()>(()) }))
    })
    .unwrap_err();
    let msg = panic_message(&*p);
    assert!(
        msg.contains("TaskGroup::scope must be polled inside a tokio runtime"),
        "{msg}"
    );
}

#[test]
fn outside_a_runtime_gather() {
    let empty =
        futures::executor::block_on(gather(Vec::<std::future::Ready<Result<(), ()>>>::new()));
    assert!(empty.unwrap().is_empty());
    let empty = futures::executor::block_on(gather_settled(Vec::<
        std::future::Ready<Result<(), ()>>,
    >::new()));
    assert!(empty.is_empty());
    let p = std::panic::catch_unwind(|| {
        futures::executor::block_on(gather([async { Ok::<_, ()>(1) }]))
    })
    .unwrap_err();
    let msg = panic_message(&*p);
    assert!(
        msg.contains("must be polled inside a tokio runtime"),
        "{msg}"
    );
}

#[test]
fn outside_a_runtime_defer() {
    assert!(defer::push(async {}).is_err());
    assert!(defer::callback(|| {}).is_err());
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let out = futures::executor::block_on(Deferrer::enable(|d| async move {
        let l1 = l.clone();
        d.callback(move || l1.lock().unwrap().push("sync"));
        let l2 = l.clone();
        d.push(async move { l2.lock().unwrap().push("async") });
        5
    }));
    assert_eq!(out, 5);
    assert_eq!(*log.lock().unwrap(), ["async", "sync"]);
}

// ---------------------------------------------------------------------------------------------
// A child that panics while being dropped

#[tokio::test(start_paused = true)]
async fn running_child_panics_while_aborted() {
    let drops = Drops::new();
    let d = drops.clone();
    let out = AssertUnwindSafe(
        TaskGroup::builder()
            .capture_panics()
            .scope(|tg| async move {
                let bomb = PanicOnDrop("child drop panic", d.guard());
                tg.spawn(async move {
                    let _b = bomb;
                    sleep(HOUR).await;
                    Ok(())
                });
                for _ in 0..3 {
                    let g = d.guard();
                    tg.spawn(async move {
                        let _g = g;
                        sleep(HOUR).await;
                        Ok(())
                    });
                }
                tg.spawn(async {
                    sleep(ms(1)).await;
                    Err::<(), _>("boom")
                });
                Ok(())
            }),
    )
    .catch_unwind()
    .await;
    let err = out.expect("captured, not resumed").unwrap_err();
    assert_eq!(err.errors().collect::<Vec<_>>(), [&"boom"]);
    assert_eq!(drops.made(), 4);
    drops.assert_all_dropped();
    assert_eq!(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        0
    );
}

/// A group whose cancellation runs a destructor that panics: the running sibling (sleeping
/// for an hour) and the error that started the cancellation must not be lost.
async fn group_with_destructor_panic(
    queued: bool,
) -> (
    Drops,
    std::thread::Result<Result<(), quattro::GroupError<&'static str>>>,
) {
    let drops = Drops::new();
    let d = drops.clone();
    let out = AssertUnwindSafe(
        TaskGroup::builder()
            .concurrency_limit(2)
            .capture_panics()
            .scope(|tg| async move {
                let g = d.guard();
                tg.spawn(async move {
                    let _g = g;
                    sleep(HOUR).await;
                    Ok(())
                });
                tg.spawn(async {
                    sleep(ms(1)).await;
                    Err::<(), _>("boom")
                });
                let bomb = PanicOnDrop("destructor panic", d.guard());
                if queued {
                    // Waits in the queue (both slots are taken) and is dropped unstarted.
                    tg.spawn(async move {
                        let _b = bomb;
                        Ok(())
                    });
                    pending::<()>().await;
                } else {
                    // Held by the body, which is dropped when the group cancels.
                    let _b = bomb;
                    pending::<()>().await;
                }
                Ok(())
            }),
    )
    .catch_unwind()
    .await;
    (drops, out)
}

#[tokio::test(start_paused = true)]
async fn queued_child_panics_while_dropped_unstarted() {
    let (drops, out) = group_with_destructor_panic(true).await;
    assert_eq!(drops.made(), 2);
    drops.assert_all_dropped();
    let err = match out {
        Ok(r) => r.unwrap_err(),
        Err(p) => panic!("the drop panic escaped the group: {}", panic_message(&*p)),
    };
    assert!(err.errors().any(|e| *e == "boom"), "{err:?}");
    assert!(err.has_panic(), "the destructor panic is captured: {err:?}");
}

#[tokio::test(start_paused = true)]
async fn body_panics_while_dropped() {
    let (drops, out) = group_with_destructor_panic(false).await;
    assert_eq!(drops.made(), 2);
    drops.assert_all_dropped();
    let err = match out {
        Ok(r) => r.unwrap_err(),
        Err(p) => panic!("the drop panic escaped the group: {}", panic_message(&*p)),
    };
    assert!(err.errors().any(|e| *e == "boom"), "{err:?}");
    assert!(err.has_panic(), "the destructor panic is captured: {err:?}");
}

#[tokio::test(start_paused = true)]
async fn scope_body_panics_while_cancelled() {
    let drops = Drops::new();
    let bomb = PanicOnDrop("scope body drop panic", drops.guard());
    let out = AssertUnwindSafe(move_on_after(ms(1), async move {
        let _b = bomb;
        sleep(HOUR).await;
    }))
    .catch_unwind()
    .await;
    drops.assert_all_dropped();
    // Nothing can catch a panic of a destructor run by the scope: it propagates to the caller.
    let p = out.unwrap_err();
    assert_eq!(panic_message(&*p), "scope body drop panic");
}

// ---------------------------------------------------------------------------------------------
// A deferred cleanup that panics

#[tokio::test(start_paused = true)]
async fn deferred_cleanups_that_panic_do_not_stop_the_others() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let out = AssertUnwindSafe(Deferrer::enable(|d| async move {
        let l1 = l.clone();
        d.callback(move || l1.lock().unwrap().push("first registered"));
        d.callback(|| panic!("sync cleanup panic"));
        d.push(async { panic!("async cleanup panic") });
        let l2 = l.clone();
        d.push(async move { l2.lock().unwrap().push("last registered") });
        "value"
    }))
    .catch_unwind()
    .await;
    let p = out.unwrap_err();
    // Last registered first: the async panic comes first and is the one resumed.
    assert_eq!(panic_message(&*p), "async cleanup panic");
    assert_eq!(
        *log.lock().unwrap(),
        ["last registered", "first registered"]
    );
}

#[tokio::test(start_paused = true)]
async fn deferred_cleanup_that_panics_when_the_future_is_dropped() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let out = AssertUnwindSafe(move_on_after(
        ms(1),
        Deferrer::enable(|d| async move {
            let l1 = l.clone();
            d.callback(move || l1.lock().unwrap().push("sync ran"));
            d.callback(|| panic!("sync cleanup panic on drop"));
            let l2 = l.clone();
            d.callback(move || l2.lock().unwrap().push("later sync ran"));
            sleep(HOUR).await;
        }),
    ))
    .catch_unwind()
    .await;
    // The cleanups run in the drop; the panic of one does not stop the others.
    assert_eq!(*log.lock().unwrap(), ["later sync ran", "sync ran"]);
    if let Err(p) = out {
        assert_eq!(panic_message(&*p), "sync cleanup panic on drop");
    }
}

// ---------------------------------------------------------------------------------------------
// Runtime shutdown

fn shutdown_while_running(
    rt: tokio::runtime::Runtime,
    settle: impl FnOnce(&tokio::runtime::Runtime),
) {
    let drops = Drops::new();
    let d = drops.clone();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<TaskHandle<()>>>();
    let outer = rt.spawn(async move {
        TaskGroup::builder()
            .concurrency_limit(4)
            .scope(|tg| async move {
                let g = d.guard();
                tg.spawn_background(async move {
                    let _g = g;
                    pending::<()>().await;
                    Ok::<_, ()>(())
                });
                let mut handles = Vec::new();
                for _ in 0..10 {
                    let g = d.guard();
                    handles.push(tg.spawn(async move {
                        let _g = g;
                        sleep(HOUR).await;
                        Ok(())
                    }));
                }
                tx.send(handles).unwrap();
                pending::<()>().await;
                Ok(())
            })
            .await
    });
    settle(&rt);
    let handles = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the group started");
    let start = std::time::Instant::now();
    drop(rt);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "runtime drop hung"
    );
    assert_eq!(drops.made(), 11);
    drops.assert_all_dropped();
    // Every handle resolves at once (no runtime needed to poll them).
    for h in handles {
        let r = h.now_or_never().expect("a handle did not resolve");
        assert!(r.unwrap_err().is_cancelled());
    }
    assert!(outer.now_or_never().unwrap().unwrap_err().is_cancelled());
}

#[test]
fn runtime_dropped_while_a_group_runs_multi_thread() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    shutdown_while_running(rt, |rt| rt.block_on(async { sleep(ms(20)).await }));
}

#[test]
fn runtime_dropped_while_a_group_runs_current_thread() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    shutdown_while_running(rt, |rt| rt.block_on(async { sleep(ms(20)).await }));
}

#[test]
fn runtime_dropped_before_the_group_ever_ran() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let drops = Drops::new();
    let d = drops.clone();
    let outer = rt.spawn(TaskGroup::scope(|tg| async move {
        let g = d.guard();
        tg.spawn(async move {
            let _g = g;
            Ok::<_, ()>(())
        });
        Ok(())
    }));
    drop(rt);
    assert_eq!(drops.made(), 0, "the body never ran");
    assert!(
        futures::executor::block_on(outer)
            .unwrap_err()
            .is_cancelled()
    );
}

// ---------------------------------------------------------------------------------------------
// Issue 17, item 2: the edges of every other public function that takes a limit, a grace, an
// instant, a name or a header.

/// About a hundred years from now: beyond tokio's own "far future" (thirty years), still
/// representable.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 86400)
}

// Limits: `usize::MAX` is "unlimited", with no allocation sized by the limit.

#[tokio::test(start_paused = true)]
async fn group_limit_usize_max_is_unlimited() {
    let start = Instant::now();
    let out = TaskGroup::builder()
        .concurrency_limit(usize::MAX)
        .scope(|tg| async move {
            let handles: Vec<_> = (0..100u64)
                .map(|i| {
                    tg.spawn(async move {
                        sleep(ms(1)).await;
                        Ok::<_, ()>(i)
                    })
                })
                .collect();
            assert_eq!(tg.len(), 100, "nothing waits in a queue");
            let h = tg.spawn_when_free(async { Ok(100) }).await;
            assert!(h.id().is_some(), "started at once");
            let mut sum = h.await.unwrap();
            for h in handles {
                sum += h.await.unwrap();
            }
            Ok(sum)
        })
        .await;
    assert_eq!(out.unwrap(), (0..=100).sum::<u64>());
    assert_eq!(start.elapsed(), ms(1), "all ran at once");
}

#[tokio::test(start_paused = true)]
async fn gather_limit_usize_max_and_one() {
    let start = Instant::now();
    let items = || {
        (0..50u64).map(|i| async move {
            sleep(ms(1)).await;
            Ok::<_, ()>(i)
        })
    };
    let all = Gather::new(items()).concurrency_limit(usize::MAX).await;
    assert_eq!(all.unwrap(), (0..50).collect::<Vec<_>>());
    assert_eq!(start.elapsed(), ms(1));
    let settled = gather_settled(items()).concurrency_limit(usize::MAX).await;
    assert_eq!(settled.len(), 50);
    assert_eq!(start.elapsed(), ms(2));
    let one = gather_settled(items()).concurrency_limit(1).await;
    assert!(one.iter().all(|r| r.is_ok()));
    assert_eq!(start.elapsed(), ms(52), "one at a time");
}

#[test]
#[should_panic(expected = "gather concurrency_limit must be at least 1")]
fn gather_settled_limit_zero_panics_at_the_call() {
    drop(gather_settled((0..3).map(|i| async move { Ok::<_, ()>(i) })).concurrency_limit(0));
}

// Grace: `ZERO` is a hard cancel at once; `MAX` is "never cut off", and a later request can
// shorten the grace but never extend it.

/// A group whose body requests its shutdown with each grace of `graces` in turn (10 ms of
/// paused time apart), holding one task that finishes when asked (after 5 ms) and one that
/// ignores the request. Returns the group's outcome and how long it took.
async fn group_shutdown_with(
    graces: Vec<Duration>,
    stubborn: bool,
) -> (Result<(), quattro::GroupError<()>>, Duration, Drops) {
    let drops = Drops::new();
    let d = drops.clone();
    let start = Instant::now();
    let out = TaskGroup::scope(|tg| async move {
        let g = d.guard();
        tg.spawn(async move {
            let _g = g;
            quattro::shutdown_requested().await;
            sleep(ms(5)).await;
            Ok(())
        });
        if stubborn {
            let g = d.guard();
            tg.spawn(async move {
                let _g = g;
                pending::<()>().await;
                Ok(())
            });
        }
        for (i, grace) in graces.into_iter().enumerate() {
            if i > 0 {
                sleep(ms(10)).await;
            }
            tg.request_shutdown(grace);
            assert!(tg.shutdown_token().is_cancelled());
        }
        Ok(())
    })
    .await;
    (out, start.elapsed(), drops)
}

#[tokio::test(start_paused = true)]
async fn group_shutdown_grace_zero_is_a_hard_cancel_at_once() {
    let (out, took, drops) = group_shutdown_with(vec![Duration::ZERO], false).await;
    assert!(out.unwrap_err().is_cancelled());
    assert_eq!(took, Duration::ZERO);
    drops.assert_all_dropped();
}

#[tokio::test(start_paused = true)]
async fn group_shutdown_grace_max_never_cuts_off() {
    // Cooperative tasks finish: the group completes normally, no panic on the deadline sum.
    let (out, took, drops) = group_shutdown_with(vec![Duration::MAX], false).await;
    out.unwrap();
    assert_eq!(took, ms(5));
    drops.assert_all_dropped();
    // The grace's end is the group's deadline meanwhile: thirty years away, saturated.
    let seen = TaskGroup::scope(|tg| async move {
        tg.request_shutdown(Duration::MAX);
        let h = tg.spawn(async { Ok::<_, ()>(current_effective_deadline()) });
        Ok(h.await.unwrap())
    })
    .await
    .unwrap()
    .expect("a deadline");
    assert!(seen > Instant::now() + Duration::from_secs(20 * 365 * 86400));
}

#[tokio::test(start_paused = true)]
async fn group_shutdown_later_request_shortens_never_extends() {
    // MAX then 10 ms (given 10 ms later): cut off 20 ms in.
    let (out, took, drops) = group_shutdown_with(vec![Duration::MAX, ms(10)], true).await;
    assert!(out.unwrap_err().is_cancelled());
    assert_eq!(took, ms(20));
    drops.assert_all_dropped();
    // 10 ms then MAX: still cut off at 10 ms (the body's second request comes too late to
    // matter: the cut happens while it sleeps).
    let (out, took, drops) = group_shutdown_with(vec![ms(10), Duration::MAX], true).await;
    assert!(out.unwrap_err().is_cancelled());
    assert_eq!(took, ms(10));
    drops.assert_all_dropped();
    // 50 ms then ZERO: the second is a hard cancel at 10 ms.
    let (out, took, drops) = group_shutdown_with(vec![ms(50), Duration::ZERO], true).await;
    assert!(out.unwrap_err().is_cancelled());
    assert_eq!(took, ms(10));
    drops.assert_all_dropped();
}

#[tokio::test(start_paused = true)]
async fn scope_shutdown_grace_zero_and_max() {
    // ZERO: the request is seen, and the scope is cut off at its first suspension.
    let scope = CancelScope::new();
    let handle = scope.clone();
    let start = Instant::now();
    let out = scope
        .move_on(async move {
            handle.request_shutdown(Duration::ZERO);
            assert!(quattro::is_shutdown_requested());
            sleep(ms(1)).await;
            unreachable!("no grace")
        })
        .await;
    assert_eq!(out, None::<()>);
    assert!(scope.cancelled_caught());
    assert_eq!(start.elapsed(), Duration::ZERO);

    // MAX: the body finishes on its own; nothing overflows.
    let scope = CancelScope::new();
    let handle = scope.clone();
    let out = scope
        .move_on(async move {
            handle.request_shutdown(Duration::MAX);
            quattro::shutdown_requested().await;
            sleep(HOUR).await; // a long wrap-up is still within the grace
            current_effective_deadline()
        })
        .await;
    let deadline = out.expect("not cut off").expect("the grace is a deadline");
    assert!(deadline > Instant::now() + Duration::from_secs(20 * 365 * 86400));
    assert!(!scope.cancelled_caught());
    // Before the scope runs, and on a finished scope: no panic, no effect on a later result.
    CancelScope::new().request_shutdown(Duration::MAX);
    scope.request_shutdown(Duration::ZERO);
    assert!(scope.shutdown_token().is_cancelled());
}

/// Which future a soft trigger is tested on.
#[derive(Clone, Copy, Debug)]
enum Target {
    MoveOn,
    Fail,
    Group,
}

/// Runs a body that finishes 5 ms after the shutdown request (or after 10 ms if asked for
/// nothing) under the soft trigger built by `soft`, on each kind of target. Returns, per
/// target, whether the body saw a request, whether it was cut off, and how long it took.
async fn soft_trigger(
    soft: impl Fn(Target) -> std::pin::Pin<Box<dyn std::future::Future<Output = (bool, bool)>>>,
) -> Vec<(Target, bool, bool, Duration)> {
    let mut out = Vec::new();
    for target in [Target::MoveOn, Target::Fail, Target::Group] {
        let start = Instant::now();
        let (asked, cut) = soft(target).await;
        out.push((target, asked, cut, start.elapsed()));
    }
    out
}

/// The body used by [`soft_trigger`]: reports whether a shutdown was requested.
async fn wrap_up_body() -> bool {
    tokio::select! {
        _ = quattro::shutdown_requested() => {
            sleep(ms(5)).await;
            true
        }
        _ = sleep(ms(10)) => false,
    }
}

/// Builds the future for `target` with the trigger applied by `apply`.
macro_rules! soft_case {
    ($target:expr, |$f:ident| $apply:expr) => {{
        match $target {
            Target::MoveOn => Box::pin(async move {
                let $f = move_on_after(HOUR, wrap_up_body());
                match $apply.await {
                    Some(asked) => (asked, false),
                    None => (false, true),
                }
            })
                as std::pin::Pin<Box<dyn std::future::Future<Output = (bool, bool)>>>,
            Target::Fail => Box::pin(async move {
                let $f = fail_after(HOUR, wrap_up_body());
                match $apply.await {
                    Ok(asked) => (asked, false),
                    Err(_) => (false, true),
                }
            }),
            Target::Group => Box::pin(async move {
                let $f = TaskGroup::scope(|_tg| async { Ok::<_, ()>(wrap_up_body().await) });
                match $apply.await {
                    Ok(asked) => (asked, false),
                    Err(e) => {
                        assert!(e.is_cancelled());
                        (false, true)
                    }
                }
            }),
        }
    }};
}

#[tokio::test(start_paused = true)]
async fn soft_triggers_at_zero_and_in_the_past_fire_at_once() {
    // shutdown_after(ZERO, grace): asked at the first poll; the body wraps up in 5 ms.
    for (target, asked, cut, took) in
        soft_trigger(|t| soft_case!(t, |f| f.shutdown_after(Duration::ZERO, ms(100)))).await
    {
        assert!(asked && !cut, "{target:?}");
        assert_eq!(took, ms(5), "{target:?}");
    }
    // shutdown_at(past, grace): the same.
    for (target, asked, cut, took) in
        soft_trigger(|t| soft_case!(t, |f| f.shutdown_at(far_past(), ms(100)))).await
    {
        assert!(asked && !cut, "{target:?}");
        assert_eq!(took, ms(5), "{target:?}");
    }
    // A ready trigger with grace ZERO: a hard cancel at once.
    for (target, asked, cut, took) in
        soft_trigger(|t| soft_case!(t, |f| f.shutdown_on(async {}, Duration::ZERO))).await
    {
        assert!(!asked && cut, "{target:?}");
        assert_eq!(took, Duration::ZERO, "{target:?}");
    }
    // A ready trigger, grace MAX: the body wraps up.
    for (target, asked, cut, took) in
        soft_trigger(|t| soft_case!(t, |f| f.shutdown_on(async {}, Duration::MAX))).await
    {
        assert!(asked && !cut, "{target:?}");
        assert_eq!(took, ms(5), "{target:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn soft_triggers_at_max_and_in_the_far_future_never_fire() {
    for (target, asked, cut, took) in
        soft_trigger(|t| soft_case!(t, |f| f.shutdown_after(Duration::MAX, Duration::MAX))).await
    {
        assert!(!asked && !cut, "{target:?}");
        assert_eq!(took, ms(10), "{target:?}");
    }
    for (target, asked, cut, took) in
        soft_trigger(|t| soft_case!(t, |f| f.shutdown_at(far_future(), Duration::ZERO))).await
    {
        assert!(!asked && !cut, "{target:?}");
        assert_eq!(took, ms(10), "{target:?}");
    }
    // A trigger that never completes.
    for (target, asked, cut, took) in
        soft_trigger(|t| soft_case!(t, |f| f.shutdown_on(pending::<()>(), Duration::ZERO))).await
    {
        assert!(!asked && !cut, "{target:?}");
        assert_eq!(took, ms(10), "{target:?}");
    }
}

// Instants: far in the future is "never" and reads back exactly.

#[tokio::test(start_paused = true)]
async fn far_future_deadline_never_fires_and_reads_back_exactly() {
    let far = far_future();
    let scope = CancelScope::with_deadline(far);
    assert_eq!(scope.deadline(), Some(far));
    let out = scope
        .move_on(async {
            sleep(HOUR).await;
            current_effective_deadline()
        })
        .await;
    assert_eq!(out, Some(Some(far)));
    assert_eq!(
        move_on_at(far, async { current_effective_deadline() }).await,
        Some(Some(far))
    );
    assert_eq!(fail_at(far, sleep(HOUR)).await, Ok(()));
    // Nested in a group's task.
    let seen = move_on_at(
        far,
        TaskGroup::scope(|tg| async move {
            let h = tg.spawn(async { Ok::<_, ()>(current_effective_deadline()) });
            Ok(h.await.unwrap())
        }),
    )
    .await;
    assert_eq!(seen.unwrap().unwrap(), Some(far));
}

#[tokio::test(start_paused = true)]
async fn set_deadline_to_far_future_then_none_while_running() {
    let scope = CancelScope::with_timeout(ms(5));
    let handle = scope.clone();
    let far = far_future();
    let out = scope
        .move_on(async move {
            handle.set_deadline(Some(far));
            assert_eq!(current_effective_deadline(), Some(far));
            sleep(ms(10)).await; // past the first deadline: it was moved
            handle.set_deadline(None);
            assert_eq!(current_effective_deadline(), None);
            sleep(HOUR).await;
            "done"
        })
        .await;
    assert_eq!(out, Some("done"));
    assert!(!scope.cancelled_caught());
    assert_eq!(scope.deadline(), None);
}

#[tokio::test(start_paused = true)]
async fn cancel_scope_built_with_a_past_deadline() {
    let past = far_past();
    let scope = CancelScope::with_deadline(past);
    assert_eq!(scope.deadline(), Some(past));
    // "Whether `cancel` was called or the deadline has passed": already, before it runs.
    assert!(scope.is_cancelled());
    assert!(!scope.cancelled_caught());
    assert_eq!(scope.move_on(async { 1 }).await, Some(1));
    let scope = CancelScope::with_deadline(past);
    assert_eq!(scope.move_on(sleep(ms(1))).await, None);
    assert!(scope.cancelled_caught());
    let scope = CancelScope::with_deadline(past);
    assert!(
        scope
            .fail(pending::<()>())
            .await
            .unwrap_err()
            .is_deadline_reached()
    );
}

#[tokio::test(start_paused = true)]
async fn deadline_exactly_now_cancels_at_the_first_suspension() {
    let now = Instant::now();
    assert_eq!(move_on_at(now, async { 3 }).await, Some(3));
    assert_eq!(move_on_at(now, sleep(ms(1))).await, None);
    assert!(
        fail_at(now, tokio::task::yield_now())
            .await
            .unwrap_err()
            .is_deadline_reached()
    );
    assert_eq!(Instant::now(), now);
}

// Names: any string, including the empty one, a huge one and control characters, is kept as
// given and shown between backticks.

#[tokio::test]
async fn task_names_empty_huge_and_odd() {
    let huge: String = "n".repeat(1 << 20);
    let odd = "名前\n\0`\u{202e}";
    for name in ["", huge.as_str(), odd] {
        let owned = name.to_string();
        let err = TaskGroup::scope(|tg| async move {
            tg.task(owned.as_str())
                .spawn(async { Err::<(), _>("boom") });
            Ok(())
        })
        .await
        .unwrap_err();
        assert_eq!(err.failures()[0].task_name(), Some(name));
        let shown = err.to_string();
        assert!(
            shown.starts_with(&format!("task group failed: task `{name}`")),
            "{}",
            &shown[..shown.len().min(80)]
        );
        let _ = format!("{err:?}");
    }
    // Names on background tasks, on spawn_when_free and on a refused spawn.
    let tg = TaskGroup::builder()
        .concurrency_limit(1)
        .scope(|tg| async move {
            let a = tg.task("").spawn_background(async { Ok(()) });
            let b = tg.task("").spawn_when_free(async { Ok(1) }).await;
            a.await.unwrap();
            assert_eq!(b.await.unwrap(), 1);
            Ok::<_, ()>(tg)
        })
        .await
        .unwrap();
    assert!(
        tg.task("")
            .spawn(async { Ok(()) })
            .await
            .unwrap_err()
            .is_cancelled()
    );
}

// Headers: the server's entry point on input from the network.

#[tokio::test(start_paused = true)]
async fn header_edges_have_documented_outcomes() {
    use quattro::propagate::{GrpcTimeout, deadline_from_header, decode_timeout};
    let now = Instant::now();
    // Zero of any unit is "now": expired at the first suspension.
    for zero in ["0n", "0u", "0m", "0S", "0M", "0H", "00000000H"] {
        assert_eq!(deadline_from_header(zero), Ok(now), "{zero}");
    }
    // The largest value of every unit gives a deadline, never a panic: hours saturate to
    // the thirty-year "far future", under which nothing fires.
    let largest = deadline_from_header("99999999H").unwrap();
    assert!(largest > now + Duration::from_secs(20 * 365 * 86400));
    assert_eq!(fail_at(largest, sleep(HOUR)).await, Ok(()));
    // Malformed: empty, whitespace, signs, decimals, too many digits, unknown unit,
    // non-ASCII digits, a huge value.
    let huge = "9".repeat(1 << 20) + "S";
    let bad = [
        "",
        " ",
        " 1S",
        "1S ",
        "+1S",
        "-1S",
        "1.5S",
        "123456789n",
        "1s",
        "1",
        "S",
        "١S",
        "1S\0",
        "1SS",
        "0x1S",
    ];
    for s in bad.iter().copied().chain([huge.as_str()]) {
        assert!(deadline_from_header(s).is_err(), "{s:?}");
        assert!(decode_timeout(s).is_err(), "{s:?}");
        assert!(s.parse::<GrpcTimeout>().is_err(), "{s:?}");
        // The message does not repeat the value, which came from the network.
        let msg = decode_timeout(s).unwrap_err().to_string();
        assert!(msg.len() < 100, "{msg}");
    }
}

// The `tower` layers' budgets and headers (run by `cargo test --features tower`).
#[cfg(feature = "tower")]
mod tower_edges {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use http::{HeaderValue, Request, Response, StatusCode};
    use quattro::propagate;
    use quattro::tower::ServerLayer;
    use tower::{Layer, ServiceExt, service_fn};

    fn request(timeout: Option<&[u8]>) -> Request<String> {
        let mut request = Request::new(String::new());
        if let Some(t) = timeout {
            request
                .headers_mut()
                .insert("grpc-timeout", HeaderValue::from_bytes(t).unwrap());
        }
        request
    }

    /// Serves `request` through `layer` around a handler that reports the time it has left;
    /// returns the status, the body, and whether the handler ran.
    async fn serve(layer: ServerLayer, request: Request<String>) -> (StatusCode, String, bool) {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let service = layer.layer(service_fn(move |_req: Request<String>| {
            c.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(format!("{:?}", propagate::remaining()))) }
        }));
        let response = service.oneshot(request).await.unwrap();
        (
            response.status(),
            response.into_body(),
            calls.load(Ordering::SeqCst) == 1,
        )
    }

    const FAR: Duration = Duration::from_secs(20 * 365 * 86400);

    #[tokio::test(start_paused = true)]
    async fn zero_budgets_answer_deadline_exceeded_without_the_handler() {
        let zero_default = ServerLayer::new().default_timeout(Duration::ZERO);
        let (status, _, ran) = serve(zero_default.clone(), request(None)).await;
        assert_eq!((status, ran), (StatusCode::GATEWAY_TIMEOUT, false));
        // A header still wins over the default.
        let (status, body, ran) = serve(zero_default, request(Some(b"5m"))).await;
        assert_eq!(
            (status, body.as_str(), ran),
            (StatusCode::OK, "Some(5ms)", true)
        );
        // A zero maximum caps every request, with or without a header.
        let zero_max = ServerLayer::new().max_timeout(Duration::ZERO);
        for timeout in [None, Some(&b"99999999H"[..]), Some(&b"1n"[..])] {
            let (status, _, ran) = serve(zero_max.clone(), request(timeout)).await;
            assert_eq!((status, ran), (StatusCode::GATEWAY_TIMEOUT, false));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn max_budgets_do_not_overflow() {
        // Duration::MAX as the default or the maximum: a deadline ~30 years away.
        for layer in [
            ServerLayer::new().default_timeout(Duration::MAX),
            ServerLayer::new().max_timeout(Duration::MAX),
            ServerLayer::new()
                .default_timeout(Duration::MAX)
                .max_timeout(Duration::MAX),
        ] {
            let (status, body, ran) = serve(layer.clone(), request(None)).await;
            assert_eq!((status, ran), (StatusCode::OK, true));
            let left: Duration = parse_some(&body);
            assert!(left > FAR, "{body}");
            // The largest header under a `MAX` maximum: the header's own 11,400 years,
            // saturated to the far future.
            let (_, body, _) = serve(layer, request(Some(b"99999999H"))).await;
            assert!(parse_some(&body) > FAR, "{body}");
        }
        // The largest header capped by a finite maximum.
        let capped = ServerLayer::new().max_timeout(Duration::from_secs(1));
        let (_, body, _) = serve(capped, request(Some(b"99999999H"))).await;
        assert_eq!(body, "Some(1s)");
    }

    #[tokio::test(start_paused = true)]
    async fn malformed_headers_are_rejected_without_the_handler() {
        let huge = vec![b'9'; 64 * 1024];
        for bad in [
            &b""[..],
            b" ",
            b"1.5S",
            b"-1S",
            b"123456789S",
            b"5\xffS",
            b"\xff\xfe",
            &huge,
        ] {
            let (status, _, ran) = serve(ServerLayer::new(), request(Some(bad))).await;
            assert_eq!(
                (status, ran),
                (StatusCode::BAD_REQUEST, false),
                "{:?}",
                String::from_utf8_lossy(&bad[..bad.len().min(16)])
            );
        }
    }

    /// The `Duration` in `Some(..)`'s `Debug` form, as the handler reports it.
    fn parse_some(body: &str) -> Duration {
        let inner = body
            .strip_prefix("Some(")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or_else(|| panic!("no deadline: {body}"));
        // Debug of a long Duration is in seconds, e.g. `946080000s` or `946080000.5s`.
        let secs: f64 = inner.trim_end_matches('s').parse().unwrap_or(0.0);
        Duration::from_secs_f64(secs)
    }
}
