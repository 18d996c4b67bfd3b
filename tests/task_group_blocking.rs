//! Blocking work in a task group: `spawn_blocking` (a closure on tokio's blocking pool).
//! Helpers: tests/task_group_util/mod.rs.
//!
//! A blocking closure is held with std channels, never with sleeps: on the paused clock tokio
//! does not advance time while a blocking task exists, and "still running" is checked by
//! polling the group through a short loop of real yields, never by timing.

#[path = "task_group_util/mod.rs"]
mod util;

use std::cell::Cell;
use std::future::{Future, pending};
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures::{FutureExt, poll};
use quattro::{CancelScope, Failure, TaskGroup, current_effective_deadline, is_shutdown_requested};
use tokio::task::yield_now;
use tokio::time::Instant;
use util::*;

/// Yields (real yields, no timer) until `cond` holds; fails after 10 s of real time, so that
/// a hang shows as a failure.
#[track_caller]
fn until(cond: impl Fn() -> bool) -> impl Future<Output = ()> {
    let caller = std::panic::Location::caller();
    async move {
        let start = std::time::Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "condition never became true (waited from {caller})"
            );
            yield_now().await;
        }
    }
}

/// Polls `group` between real yields until `cond` holds, checking it stays pending.
#[track_caller]
fn pending_until<'a, F: Future + ?Sized>(
    mut group: Pin<&'a mut F>,
    cond: impl Fn() -> bool + 'a,
) -> impl Future<Output = ()> + 'a {
    let caller = std::panic::Location::caller();
    async move {
        let start = std::time::Instant::now();
        loop {
            assert!(
                poll!(group.as_mut()).is_pending(),
                "returned too early (from {caller})"
            );
            if cond() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "condition never became true (waited from {caller})"
            );
            yield_now().await;
        }
    }
}

/// Polls `group` through 100 real yields, checking it stays pending all along.
async fn stays_pending<F: Future + ?Sized>(mut group: Pin<&mut F>) {
    for _ in 0..100 {
        assert!(poll!(group.as_mut()).is_pending(), "returned too early");
        yield_now().await;
    }
}

/// A blocking closure's leash: it tells when it started, then waits to be let go.
struct Leash {
    started: mpsc::Receiver<()>,
    release: mpsc::Sender<()>,
}

struct Held {
    started: mpsc::Sender<()>,
    release: mpsc::Receiver<()>,
}

fn leash() -> (Leash, Held) {
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let leash = Leash {
        started: started_rx,
        release: release_tx,
    };
    let held = Held {
        started: started_tx,
        release: release_rx,
    };
    (leash, held)
}

impl Held {
    /// Called in the closure: reports the start, then blocks until released (or the leash is
    /// dropped).
    fn hold(&self) {
        let _ = self.started.send(());
        let _ = self.release.recv();
    }
}

impl Leash {
    fn has_started(&self) -> bool {
        self.started.try_recv().is_ok()
    }
    fn release(&self) {
        let _ = self.release.send(());
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("<other payload>")
}

// ----- spawn_blocking: values, failures, panics ---------------------------------------------

both_runtimes! {
    /// The closure's value comes back through the handle; it runs off the async workers.
    async fn blocking_value_returned() {
        let out = TaskGroup::scope(|tg: TaskGroup<()>| async move {
            let caller = std::thread::current().id();
            let a = tg.spawn_blocking(move || Ok((6 * 7, std::thread::current().id() != caller)));
            let b = tg.task("named").spawn_blocking(|| Ok("named"));
            Ok((a.await.unwrap(), b.await.unwrap()))
        })
        .await
        .unwrap();
        assert_eq!(out, ((42, true), "named"));
    }
}

both_runtimes! {
    /// An `Err` from the closure fails the group like an async task's: the body is dropped,
    /// the error is in the `GroupError`, named.
    async fn blocking_err_fails_the_group() {
        let body_went_on = Counter::new();
        let b = body_went_on.clone();
        let err = TaskGroup::scope(|tg| async move {
            tg.task("parse").spawn_blocking(|| Err::<(), _>("bad input"));
            pending::<()>().await;
            b.incr();
            Ok(())
        })
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "task group failed: task `parse`: bad input");
        assert!(!err.is_cancelled());
        assert_eq!(body_went_on.get(), 0);
    }
}

both_runtimes! {
    /// An unnamed blocking task is named in errors by where it was spawned.
    async fn unnamed_blocking_task_is_named_by_its_spawn_location() {
        let line = line!() + 2;
        let err = TaskGroup::scope(|tg| async move {
            tg.spawn_blocking(|| Err::<(), _>("no"));
            Ok(())
        })
        .await
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("task_group_blocking.rs:{line}")),
            "{text}"
        );
    }
}

both_runtimes! {
    /// A panic in the closure fails the group and is resumed in the task awaiting it, with its
    /// payload; with `capture_panics` it is returned instead.
    async fn blocking_panic_propagates_and_is_captured() {
        let resumed = TaskGroup::scope(|tg: TaskGroup<()>| async move {
            tg.spawn_blocking(|| -> Result<(), ()> { panic!("blocking bug") });
            pending::<()>().await;
            Ok(())
        });
        let payload = AssertUnwindSafe(resumed).catch_unwind().await.unwrap_err();
        assert_eq!(panic_text(&*payload), "blocking bug");

        let err = TaskGroup::builder()
            .capture_panics()
            .scope(|tg: TaskGroup<String>| async move {
                tg.task("bug").spawn_blocking(|| -> Result<(), String> { panic!("captured") });
                pending::<()>().await;
                Ok(())
            })
            .await
            .unwrap_err();
        assert!(err.has_panic());
        assert_eq!(err.to_string(), "task group failed: task `bug` panicked: captured");
    }
}

both_runtimes! {
    /// Under `isolate_failures`, the closure's `Err` and panic go to the handler; the handle
    /// yields a `TaskError` and the body goes on.
    async fn isolated_blocking_failures_go_to_the_handler() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let out = TaskGroup::builder()
            .isolate_failures(move |failure: Failure<String>| {
                s.lock().unwrap().push((failure.task_name().map(String::from), failure.is_panic()));
                Ok(())
            })
            .scope(|tg| async move {
                let failed = tg.task("err").spawn_blocking(|| Err::<(), _>("no".to_string()));
                let panicked =
                    tg.task("panic").spawn_blocking(|| -> Result<(), String> { panic!("bug") });
                let fine = tg.spawn_blocking(|| Ok(1));
                assert!(failed.await.unwrap_err().is_failed());
                assert!(panicked.await.unwrap_err().is_panic());
                Ok(fine.await.unwrap())
            })
            .await;
        assert_eq!(out.unwrap(), 1);
        let mut seen = seen.lock().unwrap().clone();
        seen.sort();
        assert_eq!(
            seen,
            [(Some("err".into()), false), (Some("panic".into()), true)]
        );
    }
}

// ----- spawn_blocking: the concurrency limit -------------------------------------------------

both_runtimes! {
    /// With limit 2, never more than 2 closures run at once (and 2 do); the others wait in the
    /// queue unstarted, and start one by one as closures return.
    async fn limit_counts_blocking_tasks() {
        let running = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let (release, released) = mpsc::channel::<()>();
        let released = Arc::new(Mutex::new(released));
        let (r, s, m) = (running.clone(), started.clone(), max.clone());
        let sum = TaskGroup::builder()
            .concurrency_limit(2)
            .scope(|tg: TaskGroup<()>| async move {
                let handles: Vec<_> = (0..6)
                    .map(|i| {
                        let (r, s, m, released) = (r.clone(), s.clone(), m.clone(), released.clone());
                        tg.spawn_blocking(move || {
                            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                            m.fetch_max(now, Ordering::SeqCst);
                            s.fetch_add(1, Ordering::SeqCst);
                            let _ = released.lock().unwrap().recv();
                            r.fetch_sub(1, Ordering::SeqCst);
                            Ok(i)
                        })
                    })
                    .collect();
                assert!(handles[2..].iter().all(|h| h.id().is_none()), "queued, not spawned");
                for k in 0..6 {
                    until(|| {
                        s.load(Ordering::SeqCst) == (k + 2).min(6)
                            && r.load(Ordering::SeqCst) == (6 - k).min(2)
                    })
                    .await;
                    assert!(tg.len() <= 2);
                    release.send(()).unwrap();
                }
                let mut sum = 0;
                for h in handles {
                    sum += h.await.unwrap();
                }
                Ok(sum)
            })
            .await
            .unwrap();
        assert_eq!(sum, 15);
        assert_eq!(max.load(Ordering::SeqCst), 2);
        assert_eq!(running.load(Ordering::SeqCst), 0);
    }
}

both_runtimes! {
    /// Blocking and async tasks share the limit and the FIFO queue.
    async fn blocking_and_async_tasks_share_the_fifo_queue() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let o = order.clone();
        TaskGroup::builder()
            .concurrency_limit(1)
            .scope(|tg: TaskGroup<()>| async move {
                for i in 0..6 {
                    let o = o.clone();
                    if i % 2 == 0 {
                        tg.spawn_blocking(move || {
                            o.lock().unwrap().push(i);
                            Ok(())
                        });
                    } else {
                        tg.spawn(async move {
                            o.lock().unwrap().push(i);
                            yield_now().await;
                            Ok(())
                        });
                    }
                }
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3, 4, 5]);
    }
}

both_runtimes! {
    /// An aborted blocking task's handle resolves cancelled at once, but the closure keeps its
    /// slot until it returns: the next queued task starts only then.
    async fn aborted_blocking_task_keeps_its_slot_until_the_closure_returns() {
        let (leash, held) = leash();
        let next_ran = Arc::new(AtomicBool::new(false));
        let n = next_ran.clone();
        let out = TaskGroup::builder()
            .concurrency_limit(1)
            .scope(|tg: TaskGroup<()>| async move {
                let mut stuck = tg.spawn_blocking(move || {
                    held.hold();
                    Ok("never seen")
                });
                let next = tg.spawn(async move {
                    n.store(true, Ordering::SeqCst);
                    Ok("next")
                });
                until(|| leash.has_started()).await;
                stuck.abort();
                let cancelled = loop {
                    if let Poll::Ready(out) = poll!(&mut stuck) {
                        break out;
                    }
                    yield_now().await;
                };
                assert!(cancelled.unwrap_err().is_cancelled());
                for _ in 0..100 {
                    yield_now().await;
                    assert!(!next_ran.load(Ordering::SeqCst), "the slot was given away");
                    assert_eq!(tg.len(), 1, "the thread holds its slot");
                    assert!(next.id().is_none(), "still queued");
                }
                leash.release();
                Ok(next.await.unwrap())
            })
            .await;
        assert_eq!(out.unwrap(), "next");
    }
}

// ----- spawn_blocking: cancellation waits for the thread -------------------------------------

both_runtimes! {
    /// `cancel()` while a closure runs: its handle resolves cancelled at once, but the group
    /// returns only once the closure has returned.
    async fn cancelled_group_waits_for_the_blocking_thread() {
        let (leash, held) = leash();
        let finished = Arc::new(AtomicBool::new(false));
        let (out_tx, out_rx) = mpsc::channel();
        let f = finished.clone();
        let group = TaskGroup::scope(|tg: TaskGroup<()>| async move {
            let handle = tg.spawn_blocking(move || {
                held.hold();
                f.store(true, Ordering::SeqCst);
                Ok(7)
            });
            out_tx.send((tg.clone(), handle)).unwrap();
            pending::<()>().await;
            Ok(())
        });
        let mut group = pin!(group);
        assert!(poll!(group.as_mut()).is_pending());
        let (tg, mut handle) = out_rx.try_recv().unwrap();
        pending_until(group.as_mut(), || leash.has_started()).await;

        tg.cancel();
        let cancelled = loop {
            assert!(poll!(group.as_mut()).is_pending());
            if let Poll::Ready(out) = poll!(&mut handle) {
                break out;
            }
            yield_now().await;
        };
        assert!(cancelled.unwrap_err().is_cancelled(), "resolved at once");
        stays_pending(group.as_mut()).await;
        assert!(!finished.load(Ordering::SeqCst));
        assert_eq!(tg.len(), 1, "the thread is still counted");

        leash.release();
        let err = group.await.unwrap_err();
        assert!(finished.load(Ordering::SeqCst), "returned only after the closure");
        assert!(err.is_cancelled());
        assert!(err.failures().is_empty(), "its value was dropped, not reported");
    }
}

both_runtimes! {
    /// A failure of a sibling cancels the group; the blocking closure's later `Err` and a
    /// later panic of another are dropped (they were cancelled): the group returns the
    /// sibling's error alone, once both closures returned.
    async fn late_err_and_panic_of_cancelled_closures_are_dropped() {
        let (leash_a, held_a) = leash();
        let (leash_b, held_b) = leash();
        let returned = Counter::new();
        let (ra, rb) = (returned.clone(), returned.clone());
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (tg_tx, tg_rx) = mpsc::channel();
        let group = TaskGroup::scope(|tg| async move {
            tg_tx.send(tg.clone()).unwrap();
            tg.spawn_blocking(move || {
                held_a.hold();
                ra.incr();
                Err::<(), _>("late error")
            });
            tg.spawn_blocking(move || -> Result<(), &'static str> {
                held_b.hold();
                rb.incr();
                panic!("late panic")
            });
            started_rx.await.unwrap();
            tg.task("sibling").spawn(async { Err::<(), _>("sibling failed") });
            pending::<()>().await;
            Ok(())
        });
        let mut group = pin!(group);
        let started = (Cell::new(false), Cell::new(false));
        pending_until(group.as_mut(), || {
            started.0.set(started.0.get() || leash_a.has_started());
            started.1.set(started.1.get() || leash_b.has_started());
            started.0.get() && started.1.get()
        })
        .await;
        let tg = tg_rx.try_recv().unwrap();
        started_tx.send(()).unwrap();
        // The sibling fails and the group cancels (it aborted its tasks once it is closed);
        // the closures still hold it.
        pending_until(group.as_mut(), || tg.is_closed()).await;
        stays_pending(group.as_mut()).await;
        assert_eq!(returned.get(), 0);
        leash_a.release();
        leash_b.release();
        let err = group.await.unwrap_err(); // the panic is not resumed
        assert_eq!(returned.get(), 2);
        assert_eq!(err.to_string(), "task group failed: task `sibling`: sibling failed");
    }
}

both_runtimes! {
    /// An enclosing cancel scope that cancels the group waits for the blocking thread too.
    async fn enclosing_scope_waits_for_the_blocking_thread() {
        let (leash, held) = leash();
        let finished = Arc::new(AtomicBool::new(false));
        let f = finished.clone();
        let scope = CancelScope::new();
        let guarded = scope.move_on(TaskGroup::scope(|tg: TaskGroup<()>| async move {
            tg.spawn_blocking(move || {
                held.hold();
                f.store(true, Ordering::SeqCst);
                Ok(())
            });
            pending::<()>().await;
            Ok(())
        }));
        let mut guarded = pin!(guarded);
        pending_until(guarded.as_mut(), || leash.has_started()).await;
        scope.cancel();
        stays_pending(guarded.as_mut()).await;
        assert!(!finished.load(Ordering::SeqCst));
        leash.release();
        assert!(guarded.await.is_none());
        assert!(finished.load(Ordering::SeqCst), "the scope waited for the closure");
        assert!(scope.cancelled_caught());
    }
}

both_runtimes! {
    /// A blocking task still in the queue when the group is cancelled never runs.
    async fn queued_blocking_task_never_runs_when_cancelled() {
        let (leash, held) = leash();
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        let (tg_tx, tg_rx) = mpsc::channel();
        let group = TaskGroup::builder()
            .concurrency_limit(1)
            .scope(|tg: TaskGroup<()>| async move {
                tg.spawn_blocking(move || {
                    held.hold();
                    Ok(())
                });
                let queued = tg.spawn_blocking(move || {
                    r.store(true, Ordering::SeqCst);
                    Ok(())
                });
                tg_tx.send((tg.clone(), queued)).unwrap();
                pending::<()>().await;
                Ok(())
            });
        let mut group = pin!(group);
        pending_until(group.as_mut(), || leash.has_started()).await;
        let (tg, queued) = tg_rx.try_recv().unwrap();
        tg.cancel();
        stays_pending(group.as_mut()).await;
        leash.release();
        assert!(group.await.unwrap_err().is_cancelled());
        assert!(queued.await.unwrap_err().is_cancelled());
        assert!(!ran.load(Ordering::SeqCst));
    }
}

// ----- spawn_blocking: deadlines and shutdown inside the closure ------------------------------

both_runtimes! {
    /// Inside the closure, `current_effective_deadline()` is the group's, read live: a
    /// deadline moved while the closure runs shows at once.
    async fn deadline_visible_and_live_inside_the_closure() {
        let (leash, held) = leash();
        let later = Instant::now() + Duration::from_secs(120);
        let earlier = Instant::now() + Duration::from_secs(30);
        let scope = CancelScope::with_deadline(later);
        let handle = scope.clone();
        let seen = scope
            .move_on(TaskGroup::scope(|tg: TaskGroup<()>| async move {
                let seen = tg.spawn_blocking(move || {
                    let before = current_effective_deadline();
                    held.hold();
                    Ok((before, current_effective_deadline()))
                });
                until(|| leash.has_started()).await;
                handle.set_deadline(Some(earlier));
                leash.release();
                Ok(seen.await.unwrap())
            }))
            .await;
        let (before, after) = seen.unwrap().unwrap();
        assert_eq!(before, Some(later));
        assert_eq!(after, Some(earlier));
    }
}

both_runtimes! {
    /// Once a blocking task is cancelled (its handle aborted), the closure reads a deadline of
    /// "now": a closure that checks it stops.
    async fn cancellation_reads_as_a_deadline_of_now_inside_the_closure() {
        let stopped = Arc::new(AtomicBool::new(false));
        let s = stopped.clone();
        let (started_tx, started_rx) = mpsc::channel();
        TaskGroup::scope(|tg: TaskGroup<()>| async move {
            let work = tg.spawn_blocking(move || {
                assert_eq!(current_effective_deadline(), None);
                started_tx.send(()).unwrap();
                while current_effective_deadline().is_none_or(|at| Instant::now() < at) {
                    std::thread::yield_now();
                }
                s.store(true, Ordering::SeqCst);
                Ok(())
            });
            until(|| started_rx.try_recv().is_ok()).await;
            work.abort();
            assert!(work.await.unwrap_err().is_cancelled());
            Ok(())
        })
        .await
        .unwrap();
        assert!(stopped.load(Ordering::SeqCst), "the group waited for it to stop");
    }
}

both_runtimes! {
    /// A closure sees a graceful shutdown request for its group, and may finish its job.
    async fn shutdown_visible_inside_the_closure() {
        let (started_tx, started_rx) = mpsc::channel();
        let out = TaskGroup::scope(|tg: TaskGroup<()>| async move {
            let job = tg.spawn_blocking(move || {
                assert!(!is_shutdown_requested());
                started_tx.send(()).unwrap();
                let mut units = 0u64;
                while !is_shutdown_requested() {
                    units += 1;
                    std::thread::yield_now();
                }
                Ok(units > 0)
            });
            until(|| started_rx.try_recv().is_ok()).await;
            tg.shutdown(Duration::from_secs(3600));
            Ok(job.await.unwrap())
        })
        .await;
        assert!(out.unwrap(), "finished within the grace");
    }
}
