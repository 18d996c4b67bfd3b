//! Blocking and `!Send` work in a task group: `spawn_blocking` (a closure on tokio's blocking
//! pool) and `spawn_local` (a future on the current `LocalSet`). Helpers:
//! tests/task_group_util/mod.rs.
//!
//! A blocking closure is held with std channels, never with sleeps: on the paused clock tokio
//! does not advance time while a blocking task exists, and "still running" is checked by
//! polling the group through a short loop of real yields, never by timing.

#[path = "task_group_util/mod.rs"]
mod util;

use std::cell::{Cell, RefCell};
use std::future::{Future, pending};
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures::{FutureExt, poll};
use quattro::{
    CancelScope, Failure, TaskGroup, TaskHandle, current_effective_deadline, is_shutdown_requested,
};
use tokio::task::{LocalSet, yield_now};
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
            tg.request_shutdown(Duration::from_secs(3600));
            Ok(job.await.unwrap())
        })
        .await;
        assert!(out.unwrap(), "finished within the grace");
    }
}

both_runtimes! {
    /// A group run inside the closure (through `Handle::block_on`) is nested in the blocking
    /// task: its own tasks see the deadline around the outer group, and a shutdown request
    /// for the outer group reaches them.
    async fn group_nested_in_a_blocking_closure_sees_the_outer_context() {
        let at = Instant::now() + Duration::from_secs(60);
        let outer = CancelScope::with_deadline(at);
        let seen = outer
            .move_on(TaskGroup::scope(|tg: TaskGroup<()>| async move {
                let requested = tg.clone();
                let inner = tg.spawn_blocking(move || {
                    let runtime = tokio::runtime::Handle::current();
                    runtime.block_on(TaskGroup::scope(|inner: TaskGroup<()>| async move {
                        let deadline = inner.spawn(async { Ok(current_effective_deadline()) });
                        let deadline = deadline.await.unwrap();
                        requested.request_shutdown(Duration::from_secs(3600));
                        let shutdown = inner.spawn(async { Ok(is_shutdown_requested()) });
                        Ok((deadline, shutdown.await.unwrap()))
                    }))
                    .map_err(|_| ())
                });
                Ok(inner.await.unwrap())
            }))
            .await;
        assert_eq!(seen.unwrap().unwrap(), (Some(at), true));
    }
}

// ----- spawn_local ----------------------------------------------------------------------------

both_runtimes! {
    /// A `!Send` future (it holds an `Rc` across an await) runs as a task of a group inside a
    /// `LocalSet`, in the group's frame, and its value comes back.
    async fn local_task_with_rc_state() {
        let at = Instant::now() + Duration::from_secs(60);
        let out = LocalSet::new()
            .run_until(CancelScope::with_deadline(at).move_on(TaskGroup::scope(
                |tg: TaskGroup<()>| async move {
                    let state = Rc::new(RefCell::new(Vec::new()));
                    let handles: Vec<_> = (0..3)
                        .map(|i| {
                            let state = state.clone();
                            tg.spawn_local(async move {
                                yield_now().await;
                                state.borrow_mut().push(i);
                                Ok(current_effective_deadline())
                            })
                        })
                        .collect();
                    for h in handles {
                        assert_eq!(h.await.unwrap(), Some(at));
                    }
                    let mut seen = state.borrow().clone();
                    seen.sort();
                    Ok(seen)
                },
            )))
            .await;
        assert_eq!(out.unwrap().unwrap(), [0, 1, 2]);
    }
}

both_runtimes! {
    /// A local task's `Err` fails the group; its panic is captured like any other.
    async fn local_failures_fail_the_group() {
        let local = LocalSet::new();
        let err = local
            .run_until(TaskGroup::scope(|tg| async move {
                let state = Rc::new("rc");
                tg.task("local").spawn_local(async move { Err::<(), _>(*state) });
                pending::<()>().await;
                Ok(())
            }))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "task group failed: task `local`: rc");

        let err = local
            .run_until(TaskGroup::builder().capture_panics().scope(|tg: TaskGroup<String>| {
                async move {
                    let state = Rc::new(());
                    tg.task("bug").spawn_local(async move {
                        let _state = state;
                        yield_now().await;
                        if true {
                            panic!("local bug")
                        }
                        Ok(())
                    });
                    pending::<()>().await;
                    Ok(())
                }
            }))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "task group failed: task `bug` panicked: local bug");
    }
}

both_runtimes! {
    /// Aborting a running local task cancels it alone; the group goes on and waits for it to
    /// be dropped.
    async fn local_task_abort() {
        let drops = Counter::new();
        let d = drops.clone();
        let out = LocalSet::new()
            .run_until(TaskGroup::scope(|tg: TaskGroup<()>| async move {
                let guard = (Rc::new(()), d.guard());
                let forever = tg.spawn_local(async move {
                    let _guard = guard;
                    pending::<()>().await;
                    Ok(())
                });
                yield_now().await;
                forever.abort();
                assert!(forever.await.unwrap_err().is_cancelled());
                Ok("went on")
            }))
            .await;
        assert_eq!(out.unwrap(), "went on");
        assert_eq!(drops.get(), 1);
    }
}

both_runtimes! {
    /// Under a limit, local tasks wait their turn in the same FIFO queue as `spawn`'s and
    /// `spawn_blocking`'s, unpolled; never more than the limit run.
    async fn local_tasks_share_the_fifo_queue_and_the_limit() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let running = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let (o, r, m) = (order.clone(), running.clone(), max.clone());
        LocalSet::new()
            .run_until(TaskGroup::builder().concurrency_limit(2).scope(
                |tg: TaskGroup<()>| async move {
                    let enter = move |i: usize| {
                        o.lock().unwrap().push(i);
                        let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                        m.fetch_max(now, Ordering::SeqCst);
                        r.clone()
                    };
                    for i in 0..9 {
                        let enter = enter.clone();
                        match i % 3 {
                            0 => {
                                let local = Rc::new(i);
                                tg.spawn_local(async move {
                                    let r = enter(*local);
                                    yield_now().await;
                                    r.fetch_sub(1, Ordering::SeqCst);
                                    Ok(())
                                });
                            }
                            1 => {
                                tg.spawn(async move {
                                    let r = enter(i);
                                    yield_now().await;
                                    r.fetch_sub(1, Ordering::SeqCst);
                                    Ok(())
                                });
                            }
                            _ => {
                                tg.spawn_blocking(move || {
                                    let r = enter(i);
                                    r.fetch_sub(1, Ordering::SeqCst);
                                    Ok(())
                                });
                            }
                        }
                    }
                    Ok(())
                },
            ))
            .await
            .unwrap();
        let mut order = order.lock().unwrap().clone();
        order.sort();
        assert_eq!(order, (0..9).collect::<Vec<_>>());
        assert!(max.load(Ordering::SeqCst) <= 2);
        assert_eq!(running.load(Ordering::SeqCst), 0);
    }
}

both_runtimes! {
    /// With limit 1, the start order is exactly the call order across the three kinds.
    async fn local_fifo_order_with_limit_1() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let o = order.clone();
        LocalSet::new()
            .run_until(TaskGroup::builder().concurrency_limit(1).scope(
                |tg: TaskGroup<()>| async move {
                    let push = move |i| o.lock().unwrap().push(i);
                    for i in 0..9 {
                        let push = push.clone();
                        let local = Rc::new(());
                        let h = match i % 3 {
                            0 => tg.spawn_local(async move {
                                let _local = local;
                                push(i);
                                yield_now().await;
                                Ok(())
                            }),
                            1 => tg.spawn(async move {
                                push(i);
                                yield_now().await;
                                Ok(())
                            }),
                            _ => tg.spawn_blocking(move || {
                                push(i);
                                Ok(())
                            }),
                        };
                        if i > 0 && i % 3 != 0 {
                            assert!(h.id().is_none(), "task {i} queued");
                        }
                    }
                    Ok(())
                },
            ))
            .await
            .unwrap();
        assert_eq!(*order.lock().unwrap(), (0..9).collect::<Vec<_>>());
    }
}

both_runtimes! {
    /// Aborting a queued local task drops its future at once, unpolled; the group goes on, and
    /// completes when its place comes up after the body is done.
    async fn aborted_queued_local_task_never_runs() {
        let drops = Counter::new();
        let polled = Rc::new(Cell::new(false));
        let (d, p) = (drops.clone(), polled.clone());
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let local = LocalSet::new();
        let out = local
            .run_until(TaskGroup::builder().concurrency_limit(1).scope(
                |tg: TaskGroup<()>| async move {
                    let first = tg.spawn_local(async move {
                        let _ = go_rx.await;
                        Ok(1)
                    });
                    let guard = d.guard();
                    let queued = tg.spawn_local(async move {
                        let _guard = guard;
                        p.set(true);
                        Ok(2)
                    });
                    yield_now().await;
                    queued.abort();
                    assert!(queued.await.unwrap_err().is_cancelled());
                    assert_eq!(d.get(), 1, "dropped at the abort");
                    go_tx.send(()).unwrap();
                    Ok(first.await.unwrap())
                },
            ))
            .await;
        assert_eq!(out.unwrap(), 1);
        assert!(!polled.get());
        assert_eq!(drops.get(), 1);
    }
}

both_runtimes! {
    /// The last task in line aborted while queued, with the body already done: the group still
    /// completes when the running task ends (the skipped place wakes it).
    async fn aborted_last_queued_local_task_lets_the_group_complete() {
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let (handle_tx, handle_rx) = mpsc::channel::<TaskHandle<()>>();
        let local = LocalSet::new();
        let group = TaskGroup::builder()
            .concurrency_limit(1)
            .scope(|tg: TaskGroup<()>| async move {
                tg.spawn(async move {
                    let _ = go_rx.await;
                    Ok(())
                });
                handle_tx.send(tg.spawn_local(async { Ok(()) })).unwrap();
                Ok("done")
            });
        let out = local
            .run_until(async move {
                let mut group = pin!(group);
                assert!(poll!(group.as_mut()).is_pending());
                let queued = handle_rx.try_recv().unwrap();
                queued.abort();
                stays_pending(group.as_mut()).await;
                go_tx.send(()).unwrap();
                let out = group.await;
                assert!(queued.await.unwrap_err().is_cancelled());
                out
            })
            .await;
        assert_eq!(out.unwrap(), "done");
    }
}

both_runtimes! {
    /// A group cancelled while a local task waits in the queue drops its future, unpolled,
    /// before it returns.
    async fn queued_local_task_dropped_before_a_cancelled_group_returns() {
        let drops = Counter::new();
        let d = drops.clone();
        let polled = Rc::new(Cell::new(false));
        let p = polled.clone();
        let err = LocalSet::new()
            .run_until(TaskGroup::builder().concurrency_limit(1).scope(
                |tg: TaskGroup<()>| async move {
                    tg.spawn(pending::<Result<(), ()>>());
                    let guard = d.guard();
                    let queued = tg.spawn_local(async move {
                        let _guard = guard;
                        p.set(true);
                        Ok(())
                    });
                    yield_now().await;
                    tg.cancel();
                    let _ = queued.await;
                    Ok(())
                },
            ))
            .await
            .unwrap_err();
        assert!(err.is_cancelled());
        assert_eq!(drops.get(), 1, "dropped before the group returned");
        assert!(!polled.get());
    }
}

both_runtimes! {
    /// A shutdown request drops queued local tasks unpolled (their handles resolve
    /// cancelled), and refuses local tasks that would have to wait.
    async fn shutdown_drops_queued_local_tasks() {
        let drops = Counter::new();
        let d = drops.clone();
        let out = LocalSet::new()
            .run_until(TaskGroup::builder().concurrency_limit(1).scope(
                |tg: TaskGroup<()>| async move {
                    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
                    let running = tg.spawn_local(async {
                        let _ = go_rx.await;
                        assert!(quattro::is_shutdown_requested());
                        Ok("finished")
                    });
                    let guard = d.guard();
                    let queued = tg.spawn_local(async move {
                        let _guard = guard;
                        Ok("never")
                    });
                    yield_now().await;
                    tg.request_shutdown(Duration::from_secs(3600));
                    assert!(queued.await.unwrap_err().is_cancelled());
                    assert_eq!(d.get(), 1);
                    let refused = tg.spawn_local(async { Ok("refused") });
                    assert!(refused.await.unwrap_err().is_cancelled());
                    go_tx.send(()).unwrap();
                    Ok(running.await.unwrap())
                },
            ))
            .await;
        assert_eq!(out.unwrap(), "finished");
        assert_eq!(drops.get(), 1);
    }
}

both_runtimes! {
    /// `spawn_local` outside a `LocalSet` panics as tokio's does, and leaves the group as it
    /// was: the free slot it took is freed, a queue place it took is skipped.
    async fn spawn_local_outside_a_local_set_panics_and_leaves_the_group_working() {
        let drops = Counter::new();
        let d = drops.clone();
        let out = TaskGroup::builder()
            .concurrency_limit(1)
            .scope(|tg: TaskGroup<()>| async move {
                let guard = d.guard();
                let free = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    tg.spawn_local(async move {
                        let _guard = guard;
                        Ok(())
                    })
                }));
                assert!(free.is_err());
                assert_eq!(tg.len(), 0, "the slot was freed");
                let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
                let running = tg.spawn(async move {
                    let _ = go_rx.await;
                    Ok(1)
                });
                let guard = d.guard();
                let queued = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    tg.spawn_local(async move {
                        let _guard = guard;
                        Ok(())
                    })
                }));
                assert!(queued.is_err());
                let after = tg.spawn(async { Ok(2) });
                go_tx.send(()).unwrap();
                Ok(running.await.unwrap() + after.await.unwrap())
            })
            .await;
        assert_eq!(out.unwrap(), 3);
        assert_eq!(drops.get(), 2);
    }
}

both_runtimes! {
    /// Spawning a local task into a finished group does not panic: the handle resolves
    /// cancelled.
    async fn spawn_local_into_a_finished_group_is_refused() {
        let tg = TaskGroup::scope(|tg: TaskGroup<()>| async move { Ok(tg.clone()) })
            .await
            .unwrap();
        let refused = LocalSet::new()
            .run_until(async move {
                let rc = Rc::new(1);
                tg.spawn_local(async move {
                    let _rc = rc;
                    Ok(())
                })
                .await
            })
            .await;
        assert!(refused.unwrap_err().is_cancelled());
    }
}

/// A closure whose task is cancelled while it still waits for a thread of tokio's blocking
/// pool never runs (as a task cancelled in the group's queue never starts); the group still
/// waits until the pool has let go of it.
#[test]
fn a_closure_cancelled_while_it_waits_for_a_pool_thread_never_runs() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ran = Arc::new(AtomicBool::new(false));
        let (release, released) = std::sync::mpsc::channel::<()>();
        let second_ran = ran.clone();
        TaskGroup::scope(|tg: TaskGroup<()>| async move {
            let first = tg.spawn_blocking(move || {
                released.recv().ok(); // holds the only pool thread
                Ok(())
            });
            let second = tg.spawn_blocking(move || {
                second_ran.store(true, Ordering::SeqCst);
                Ok(())
            });
            tokio::task::yield_now().await; // both sent to the pool; the second waits
            second.abort();
            assert!(second.await.unwrap_err().is_cancelled());
            release.send(()).unwrap();
            first.await.unwrap();
            Ok(())
        })
        .await
        .unwrap();
        assert!(!ran.load(Ordering::SeqCst), "the cancelled closure ran");
    });
}

/// A failure reported from the thread of a cancelled blocking task (what its closure returned
/// panics when dropped there) names the task by its own id, not the blocking pool's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_failure_names_the_blocking_task_by_its_id() {
    #[derive(Debug)]
    struct PanicOnDrop;
    impl Drop for PanicOnDrop {
        fn drop(&mut self) {
            panic!("dropped on the thread");
        }
    }
    let (release, released) = mpsc::channel::<()>();
    let (started, is_started) = tokio::sync::oneshot::channel();
    let mut id = None;
    let id_slot = &mut id;
    let err = TaskGroup::builder()
        .capture_panics()
        .scope(|tg: TaskGroup<&'static str>| async move {
            let handle = tg.spawn_blocking(move || {
                let _ = started.send(());
                released.recv().ok();
                Ok(PanicOnDrop)
            });
            is_started.await.unwrap();
            *id_slot = handle.id();
            handle.abort();
            assert!(handle.await.unwrap_err().is_cancelled());
            release.send(()).unwrap();
            Ok(())
        })
        .await
        .unwrap_err();
    let failure = &err.failures()[0];
    assert!(failure.is_panic(), "{err}");
    assert_eq!(failure.task_id(), id, "{err}");
}
