//! Task groups under a concurrency limit: the FIFO queue, `spawn_when_free` backpressure,
//! background tasks exempt from the limit. Helpers: tests/task_group_util/mod.rs.
// Spawning (or waiting to spawn) and returning the handle is the point of some tests.
#![allow(clippy::async_yields_async)]

#[path = "task_group_util/mod.rs"]
mod util;

use std::future::pending;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quattro::{TaskGroup, TaskHandle, move_on_after};
use tokio::time::{Instant, sleep};
use util::*;

/// Counts values alive at once (made when the future is built, gone when it is dropped).
#[derive(Clone, Default)]
struct Live {
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
}
struct LiveToken(Live);
impl Live {
    fn token(&self) -> LiveToken {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        LiveToken(self.clone())
    }
    fn now(&self) -> usize {
        self.now.load(Ordering::SeqCst)
    }
    fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}
impl Drop for LiveToken {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

both_runtimes! {
    /// 1,025 spawns with limit 7: never more than 7 running, and 7 reached.
    async fn limit_never_exceeded_across_1025_spawns() {
        let running = Live::default();
        let done = Counter::new();
        let (r, d) = (running.clone(), done.clone());
        TaskGroup::builder()
            .concurrency_limit(7)
            .scope(|tg| async move {
                for i in 0..1025u64 {
                    let (r, d) = (r.clone(), d.clone());
                    tg.spawn(async move {
                        let _running = r.token();
                        if i % 3 == 0 {
                            sleep(Duration::from_micros(i % 700)).await;
                        } else {
                            tokio::task::yield_now().await;
                        }
                        d.incr();
                        Ok::<_, ()>(())
                    });
                    assert!(tg.len() <= 7);
                }
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(done.get(), 1025);
        assert_eq!(running.max(), 7);
        assert_eq!(running.now(), 0);
    }
}

both_runtimes! {
    /// With limit 1, queued tasks start in FIFO order, one at a time; a queued task has no
    /// id until it starts.
    async fn fifo_start_order_with_limit_1() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let running = Live::default();
        let (o, r) = (order.clone(), running.clone());
        TaskGroup::builder()
            .concurrency_limit(1)
            .scope(|tg| async move {
                let mut handles = Vec::new();
                for i in 0..20 {
                    let (o, r) = (o.clone(), r.clone());
                    let h = tg.spawn(async move {
                        let _r = r.token();
                        o.lock().unwrap().push(i);
                        sleep(ms(1)).await;
                        Ok::<_, ()>(i)
                    });
                    if i > 0 {
                        assert_eq!(h.id(), None, "queued task {i} must not be spawned");
                    }
                    handles.push(h);
                }
                assert_eq!(tg.len(), 1);
                for (i, h) in handles.into_iter().enumerate() {
                    assert_eq!(h.await.unwrap(), i);
                }
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(*order.lock().unwrap(), (0..20).collect::<Vec<_>>());
        assert_eq!(running.max(), 1);
    }
}

both_runtimes! {
    /// Aborting a running task frees its slot: the next queued task starts.
    async fn slot_returned_on_abort() {
        let drops = Counter::new();
        let d = drops.clone();
        let start = Instant::now();
        let out = TaskGroup::builder()
            .concurrency_limit(1)
            .scope(|tg| async move {
                let g = d.guard();
                let forever = tg.spawn(async move {
                    let _g = g;
                    pending::<()>().await;
                    Ok::<_, ()>(0)
                });
                let next = tg.spawn(async { Ok(1) });
                sleep(ms(5)).await;
                assert_eq!(next.id(), None);
                forever.abort();
                Ok(next.await.unwrap())
            })
            .await;
        assert_eq!(out.unwrap(), 1);
        assert_eq!(drops.get(), 1);
        assert_elapsed(start, ms(5));
    }
}

both_runtimes! {
    /// Aborting a queued task drops it unpolled, and its handle resolves to cancelled without
    /// waiting for a slot to free; the task behind it keeps its place.
    async fn abort_queued_task_resolves_promptly() {
        let polled = Counter::new();
        let drops = Counter::new();
        let (p, d) = (polled.clone(), drops.clone());
        let start = Instant::now();
        TaskGroup::builder()
            .concurrency_limit(1)
            .scope(|tg| async move {
                tg.spawn(async {
                    sleep(ms(40)).await;
                    Ok::<_, ()>(())
                });
                let g = d.guard();
                let p2 = p.clone();
                let mut queued = tg.spawn(async move {
                    let _g = g;
                    p2.incr();
                    Ok(())
                });
                let after = tg.spawn(async { Ok(()) });
                queued.abort();
                let res = move_on_after(ms(10), &mut queued).await;
                let res = res.expect("an aborted queued task resolves without waiting for a slot");
                assert!(res.unwrap_err().is_cancelled());
                assert_eq!(d.get(), 1, "dropped at once");
                after.await.unwrap();
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(polled.get(), 0);
        assert_eq!(drops.get(), 1);
        assert_elapsed(start, ms(40));
    }
}

/// Aborting a queued task (resolved late or early) never lets it run, and the group still
/// completes; the queue moves past it when the slot frees.
async fn aborted_queued_task_never_runs_body() {
    let polled = Counter::new();
    let drops = Counter::new();
    let (p, d) = (polled.clone(), drops.clone());
    let start = Instant::now();
    TaskGroup::builder()
        .concurrency_limit(1)
        .scope(|tg| async move {
            tg.spawn(async {
                sleep(ms(10)).await;
                Ok::<_, ()>(())
            });
            let g = d.guard();
            let p2 = p.clone();
            let queued = tg.spawn(async move {
                let _g = g;
                p2.incr();
                Ok(())
            });
            let after = tg.spawn(async {
                sleep(ms(10)).await;
                Ok(())
            });
            queued.abort();
            assert!(queued.await.unwrap_err().is_cancelled());
            after.await.unwrap();
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(polled.get(), 0);
    assert_eq!(drops.get(), 1);
    assert_elapsed(start, ms(20));
}

#[tokio::test(start_paused = true)]
async fn aborted_queued_task_never_runs_paused() {
    aborted_queued_task_never_runs_body().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_queued_task_never_runs_multi_thread() {
    aborted_queued_task_never_runs_body().await;
}

both_runtimes! {
    /// A group checks for a failure before it starts the next queued task: with limit 1 a
    /// failing task's queued successors are never polled, only dropped; their handles say
    /// cancelled; the group returns as soon as the failure is seen.
    async fn failure_checked_before_the_next_queued_task_starts() {
        for fail_at_once in [true, false] {
            let polled = Counter::new();
            let drops = Counter::new();
            let handles = Arc::new(Mutex::new(Vec::new()));
            let (p, d, hs) = (polled.clone(), drops.clone(), handles.clone());
            let start = Instant::now();
            let err = TaskGroup::builder()
                .concurrency_limit(1)
                .scope(|tg| async move {
                    tg.task("first").spawn(async move {
                        if !fail_at_once {
                            sleep(ms(5)).await;
                        }
                        Err::<(), _>("first failed")
                    });
                    for _ in 0..5 {
                        let (p, g) = (p.clone(), d.guard());
                        hs.lock().unwrap().push(tg.spawn(async move {
                            let _g = g;
                            p.incr();
                            Ok(())
                        }));
                    }
                    pending::<()>().await;
                    Ok(())
                })
                .await
                .unwrap_err();
            assert_elapsed(start, if fail_at_once { ms(0) } else { ms(5) });
            assert_eq!(err.errors().collect::<Vec<_>>(), [&"first failed"]);
            assert_eq!(polled.get(), 0, "a queued task ran after the failure");
            assert_eq!(drops.get(), 5);
            let drained: Vec<_> = handles.lock().unwrap().drain(..).collect();
    for h in drained {
                assert!(h.is_finished());
                assert_eq!(h.id(), None);
                assert!(futures::FutureExt::now_or_never(h).unwrap().unwrap_err().is_cancelled());
            }
        }
    }
}

both_runtimes! {
    /// Same for a panic (captured): the slot is not handed to the queue.
    async fn panic_checked_before_the_next_queued_task_starts() {
        let polled = Counter::new();
        let p = polled.clone();
        let err = TaskGroup::builder()
            .concurrency_limit(1)
            .capture_panics()
            .scope(|tg| async move {
                tg.spawn(async {
                    sleep(ms(5)).await;
                    std::panic::panic_any::<_>("bug") as Result<(), ()>
                });
                for _ in 0..3 {
                    let p = p.clone();
                    tg.spawn(async move {
                        p.incr();
                        Ok(())
                    });
                }
                Ok(())
            })
            .await
            .unwrap_err();
        assert!(err.has_panic());
        assert_eq!(polled.get(), 0);
    }
}

both_runtimes! {
    /// Cancelling the group drops every queued future without polling it.
    async fn queued_futures_dropped_unpolled_on_cancel() {
        let polled = Counter::new();
        let drops = Counter::new();
        let handles = Arc::new(Mutex::new(Vec::new()));
        let (p, d, hs) = (polled.clone(), drops.clone(), handles.clone());
        let err = TaskGroup::builder()
            .concurrency_limit(2)
            .scope(|tg| async move {
                for _ in 0..12 {
                    let (p, g) = (p.clone(), d.guard());
                    hs.lock().unwrap().push(tg.spawn(async move {
                        let _g = g;
                        p.incr();
                        pending::<()>().await;
                        Ok::<_, ()>(())
                    }));
                }
                sleep(ms(5)).await;
                eventually(|| p.get() == 2).await;
                tg.cancel();
                pending::<()>().await;
                Ok(())
            })
            .await
            .unwrap_err();
        assert!(err.is_cancelled());
        assert!(err.failures().is_empty());
        assert_eq!(polled.get(), 2);
        assert_eq!(drops.get(), 12);
        let drained: Vec<_> = handles.lock().unwrap().drain(..).collect();
    for h in drained {
            assert!(futures::FutureExt::now_or_never(h).unwrap().unwrap_err().is_cancelled());
        }
    }
}

both_runtimes! {
    /// An enclosing timeout drops the queued futures unpolled too, before it returns.
    async fn queued_futures_dropped_unpolled_on_outer_timeout() {
        let polled = Counter::new();
        let drops = Counter::new();
        let (p, d) = (polled.clone(), drops.clone());
        let start = Instant::now();
        let out = move_on_after(
            ms(10),
            TaskGroup::builder().concurrency_limit(3).scope(|tg| async move {
                for _ in 0..10 {
                    let (p, g) = (p.clone(), d.guard());
                    tg.spawn(async move {
                        let _g = g;
                        p.incr();
                        sleep(NEVER).await;
                        Ok::<_, ()>(())
                    });
                }
                Ok(())
            }),
        )
        .await;
        assert!(out.is_none());
        assert_elapsed(start, ms(10));
        assert_eq!(drops.get(), 10);
        if is_paused() {
            assert_eq!(polled.get(), 3);
        } else {
            assert!(polled.get() <= 3);
        }
    }
}

both_runtimes! {
    /// Background tasks do not count against the limit (and not in `len()`): they start at
    /// once while every slot is taken and tasks are queued.
    async fn background_tasks_exempt_from_the_limit() {
        let started = Counter::new();
        let s = started.clone();
        TaskGroup::builder()
            .concurrency_limit(1)
            .scope(|tg| async move {
                let (release, released) = tokio::sync::oneshot::channel::<()>();
                tg.spawn(async move {
                    let _ = released.await;
                    Ok::<_, ()>(())
                });
                let queued = tg.spawn(async { Ok(()) });
                assert_eq!(queued.id(), None);
                let mut bg = Vec::new();
                for _ in 0..3 {
                    let s = s.clone();
                    bg.push(tg.spawn_background(async move {
                        s.incr();
                        pending::<()>().await;
                        Ok(())
                    }));
                }
                for h in &bg {
                    assert!(h.id().is_some(), "background tasks are spawned at once");
                }
                sleep(ms(5)).await;
                if is_paused() {
                    assert_eq!(s.get(), 3);
                } else {
                    eventually(|| s.get() == 3).await;
                }
                assert_eq!(tg.len(), 1);
                assert_eq!(queued.id(), None, "still queued behind the running task");
                release.send(()).unwrap();
                queued.await.unwrap();
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(started.get(), 3);
    }
}

both_runtimes! {
    /// Children spawning into their own limited group (a tree of 63 tasks, limit 2) neither
    /// deadlock nor exceed the limit.
    async fn children_spawning_into_a_limited_group() {
        type BoxFut = std::pin::Pin<Box<dyn Future<Output = Result<(), ()>> + Send>>;
        fn node(tg: TaskGroup<()>, depth: u32, live: Live, done: Counter) -> BoxFut {
            Box::pin(async move {
                let _l = live.token();
                sleep(ms(1)).await;
                if depth < 5 {
                    for _ in 0..2 {
                        tg.spawn(node(tg.clone(), depth + 1, live.clone(), done.clone()));
                    }
                }
                done.incr();
                Ok(())
            })
        }
        let live = Live::default();
        let done = Counter::new();
        let (l, d) = (live.clone(), done.clone());
        TaskGroup::builder()
            .concurrency_limit(2)
            .scope(|tg| async move {
                tg.spawn(node(tg.clone(), 0, l, d));
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(done.get(), 63);
        assert_eq!(live.max(), 2);
    }
}

// ----- spawn_when_free ----------------------------------------------------------------------------

both_runtimes! {
    /// Backpressure: never more than `limit` task futures exist (running + queued), every
    /// task is spawned at once when the call returns (nothing is queued).
    async fn spawn_when_free_backpressure() {
        let live = Live::default();
        let l = live.clone();
        let sum = TaskGroup::builder()
            .concurrency_limit(3)
            .scope(|tg| async move {
                let mut handles = Vec::new();
                for i in 0..60u64 {
                    let token = l.token();
                    let h = tg
                        .spawn_when_free(async move {
                            let _t = token;
                            sleep(ms(i % 4)).await;
                            Ok::<_, ()>(i)
                        })
                        .await;
                    assert!(h.id().is_some(), "spawned, not queued");
                    assert!(l.now() <= 3, "{} task futures exist", l.now());
                    assert!(tg.len() <= 3);
                    handles.push(h);
                }
                let mut sum = 0;
                for h in handles {
                    sum += h.await.unwrap();
                }
                Ok(sum)
            })
            .await
            .unwrap();
        assert_eq!(sum, (0..60).sum::<u64>());
        assert_eq!(live.max(), 4, "3 in the group + the one being handed over");
    }
}

both_runtimes! {
    /// Without a limit `spawn_when_free` spawns at once.
    async fn spawn_when_free_without_a_limit() {
        let start = Instant::now();
        TaskGroup::scope(|tg| async move {
            for _ in 0..100 {
                let h = tg
                    .spawn_when_free(async {
                        sleep(ms(10)).await;
                        Ok::<_, ()>(())
                    })
                    .await;
                assert!(h.id().is_some());
            }
            assert_eq!(tg.len(), 100);
            Ok(())
        })
        .await
        .unwrap();
        assert_elapsed(start, ms(10));
    }
}

/// How the group ends while a producer outside it waits in `spawn_when_free`.
#[derive(Clone, Copy, Debug)]
enum End {
    Cancel,
    Failure,
    Completion,
}

async fn producer_refused_when_group_ends(end: End) {
    let polled = Counter::new();
    let drops = Counter::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let group = tokio::spawn(TaskGroup::builder().concurrency_limit(1).scope(
        move |tg| async move {
            tg.spawn(async move {
                sleep(ms(20)).await;
                match end {
                    End::Failure => Err("boom"),
                    _ => Ok(()),
                }
            });
            tx.send(tg.clone()).unwrap();
            if let End::Cancel = end {
                sleep(ms(10)).await;
                tg.cancel();
                pending::<()>().await;
            }
            Ok(())
        },
    ));
    let tg = rx.await.unwrap();
    let (p, g) = (polled.clone(), drops.guard());
    let start = Instant::now();
    let h: TaskHandle<()> = tg
        .spawn_when_free(async move {
            let _g = g;
            p.incr();
            Ok(())
        })
        .await;
    if is_paused() {
        let expected = if let End::Cancel = end {
            ms(10)
        } else {
            ms(20)
        };
        assert_eq!(start.elapsed(), expected, "{end:?}");
    }
    assert!(tg.is_closed());
    assert_eq!(h.id(), None);
    assert!(h.await.unwrap_err().is_cancelled());
    assert_eq!(drops.get(), 1, "{end:?}: the future is dropped");
    assert_eq!(polled.get(), 0, "{end:?}: the future is never polled");
    let out = group.await.unwrap();
    match end {
        End::Cancel => assert!(out.unwrap_err().is_cancelled()),
        End::Failure => assert_eq!(out.unwrap_err().errors().collect::<Vec<_>>(), [&"boom"]),
        End::Completion => out.unwrap(),
    }
}

both_runtimes! {
    /// A producer waiting in `spawn_when_free` while the group closes (cancel, failure, or
    /// normal completion) gets a cancelled handle; its future is dropped unpolled.
    async fn spawn_when_free_refused_when_the_group_closes_while_waiting() {
        for end in [End::Cancel, End::Failure, End::Completion] {
            producer_refused_when_group_ends(end).await;
        }
    }
}

both_runtimes! {
    /// Dropping the wait (a cancel scope or `select!`) drops the future unpolled; later
    /// waits still work.
    async fn dropping_the_wait_drops_the_future_unpolled() {
        let polled = Counter::new();
        let drops = Counter::new();
        let (p, d) = (polled.clone(), drops.clone());
        let start = Instant::now();
        TaskGroup::builder()
            .concurrency_limit(1)
            .scope(|tg| async move {
                // Holds the only slot until released (after a 30 ms timer, or on demand).
                let (release, released) = tokio::sync::oneshot::channel::<()>();
                tg.spawn(async move {
                    let _ = released.await;
                    Ok::<_, ()>(())
                });
                let (p2, g) = (p.clone(), d.guard());
                let out = move_on_after(
                    ms(5),
                    tg.spawn_when_free(async move {
                        let _g = g;
                        p2.incr();
                        Ok(())
                    }),
                )
                .await;
                assert!(out.is_none());
                assert_eq!(d.get(), 1);

                let (p2, g) = (p.clone(), d.guard());
                tokio::select! {
                    _ = tg.spawn_when_free(async move {
                        let _g = g;
                        p2.incr();
                        Ok(())
                    }) => panic!("no slot is free"),
                    _ = sleep(ms(5)) => {}
                }
                assert_eq!(d.get(), 2);

                let tg2 = tg.clone();
                let waiter = tokio::spawn(async move { tg2.spawn_when_free(async { Ok(7) }).await });
                sleep(ms(20)).await;
                release.send(()).unwrap();
                let h = waiter.await.unwrap();
                assert_eq!(h.await.unwrap(), 7);
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(polled.get(), 0);
        assert_eq!(drops.get(), 2);
        assert_elapsed(start, ms(30));
    }
}

both_runtimes! {
    /// Several producers (tasks of the group) share the slots; nothing is lost or stuck.
    async fn spawn_when_free_many_producers() {
        let live = Live::default();
        let done = Counter::new();
        let (l, d) = (live.clone(), done.clone());
        tokio::time::timeout(
            Duration::from_secs(5),
            TaskGroup::builder().concurrency_limit(2).scope(|tg| async move {
                for _ in 0..4 {
                    let (tg2, l, d) = (tg.clone(), l.clone(), d.clone());
                    // Background, so the producers do not take the slots they wait for.
                    tg.spawn_background(async move {
                        for _ in 0..50 {
                            let (l, d) = (l.clone(), d.clone());
                            tg2.spawn_when_free(async move {
                                let _l = l.token();
                                tokio::task::yield_now().await;
                                d.incr();
                                Ok(())
                            })
                            .await;
                        }
                        pending::<()>().await;
                        Ok::<_, ()>(())
                    });
                }
                let give_up = Instant::now() + Duration::from_secs(4);
                while d.get() < 200 {
                    assert!(Instant::now() < give_up, "stuck at {}", d.get());
                    sleep(ms(1)).await;
                }
                Ok(())
            }),
        )
        .await
        .expect("producers got stuck")
        .unwrap();
        assert_eq!(done.get(), 200);
        assert!(live.max() <= 2);
    }
}

/// Stress for a lost wakeup between "no slot free" and "start waiting": thousands of
/// `spawn_when_free` calls racing the group's reaping on another worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_when_free_no_lost_wakeup_stress() {
    let done = Counter::new();
    let d = done.clone();
    tokio::time::timeout(
        Duration::from_secs(5),
        TaskGroup::builder()
            .concurrency_limit(1)
            .scope(|tg| async move {
                for _ in 0..20_000 {
                    let d = d.clone();
                    tg.spawn_when_free(async move {
                        d.incr();
                        Ok::<_, ()>(())
                    })
                    .await;
                }
                Ok(())
            }),
    )
    .await
    .unwrap_or_else(|_| panic!("a producer was never woken (done: {})", done.get()))
    .unwrap();
    assert_eq!(done.get(), 20_000);
}

/// Queued tasks keep starting when the running ones end while the group is starting others:
/// with many short tasks, a small limit and two workers, a wake-up lost between starting queued
/// tasks and registering the group's waker once left the group waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_tasks_all_start_when_slots_free_during_a_start() {
    for round in 0..20 {
        let group = TaskGroup::builder()
            .concurrency_limit(2)
            .scope(|tg| async move {
                for i in 0..2_000u32 {
                    tg.spawn(async move { Ok::<_, ()>(i) });
                }
                Ok(())
            });
        // A guard against a hang, not a speed check: the group needs milliseconds.
        tokio::time::timeout(Duration::from_secs(120), group)
            .await
            .unwrap_or_else(|_| panic!("round {round}: the group hung"))
            .unwrap();
    }
}

// ----- regressions of the core rebuild (item 7: the queue rework) -------------------------------

/// Regression (core rebuild, item 7a): aborting a queued handle searched the queue from its
/// front (O(queue length)), so aborting all of 16,384 queued tasks (behind one pending running
/// task, limit 1), newest first, took seconds; it must be O(1) each (a generous 2 s real-time
/// bound for the whole batch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_many_queued_handles_is_fast() {
    const QUEUED: usize = 16_384;
    let took = TaskGroup::builder()
        .concurrency_limit(1)
        .scope(|tg| async move {
            let running = tg.spawn(pending::<Result<(), ()>>());
            let queued: Vec<TaskHandle<()>> =
                (0..QUEUED).map(|_| tg.spawn(async { Ok(()) })).collect();
            let t0 = std::time::Instant::now();
            for handle in queued.iter().rev() {
                handle.abort();
            }
            let took = t0.elapsed();
            running.abort();
            for handle in queued {
                assert!(
                    handle.await.is_err(),
                    "a queued task ran after its handle aborted it"
                );
            }
            Ok::<_, ()>(took)
        })
        .await
        .unwrap();
    assert!(
        took < Duration::from_secs(2),
        "aborting {QUEUED} queued handles took {took:?}"
    );
}

both_runtimes! {
    /// Regression (core rebuild, item 7b): with `concurrency_limit(1)` and 50 producers
    /// blocked in `spawn_when_free`, each freed slot lets exactly one producer in, in the
    /// order in which they started waiting (on the multi-thread runtime, the old wake-all
    /// let them race for the slot).
    async fn spawn_when_free_admits_blocked_producers_in_fifo_order() {
        const PRODUCERS: usize = 50;
        let started: Arc<Mutex<Vec<usize>>> = Arc::default();
        let admitted = Arc::new(AtomicUsize::new(0));
        let s = started.clone();
        let a = admitted.clone();
        TaskGroup::builder()
            .concurrency_limit(1)
            .scope(|tg| async move {
                // The task that holds the slot first, then one release signal per producer.
                let (first, rx) = tokio::sync::oneshot::channel::<()>();
                tg.spawn(async move {
                    let _ = rx.await;
                    Ok(())
                });
                let mut release = Vec::new();
                for i in 0..PRODUCERS {
                    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                    release.push(Some(tx));
                    let (tg2, s, a2) = (tg.clone(), s.clone(), a.clone());
                    tokio::spawn(async move {
                        let _handle = tg2
                            .spawn_when_free(async move {
                                s.lock().unwrap().push(i);
                                let _ = rx.await;
                                Ok(())
                            })
                            .await;
                        a2.fetch_add(1, Ordering::SeqCst);
                    });
                    // Let producer `i` block before the next one arrives.
                    sleep(ms(5)).await;
                    assert_eq!(a.load(Ordering::SeqCst), 0, "producer {i} got in while the slot is taken");
                }
                first.send(()).unwrap();
                for step in 0..PRODUCERS {
                    // One slot was freed: exactly one more producer gets in.
                    eventually(|| a.load(Ordering::SeqCst) > step).await;
                    sleep(ms(5)).await;
                    assert_eq!(
                        a.load(Ordering::SeqCst),
                        step + 1,
                        "freeing one slot let more than one producer in"
                    );
                    eventually(|| s.lock().unwrap().len() > step).await;
                    // Free the slot again: end the task that runs now.
                    let running = *s.lock().unwrap().last().unwrap();
                    release[running].take().expect("a task started twice").send(()).unwrap();
                }
                Ok::<(), ()>(())
            })
            .await
            .unwrap();
        let order = started.lock().unwrap().clone();
        assert_eq!(order, (0..PRODUCERS).collect::<Vec<_>>(), "producers admitted out of arrival order");
    }
}
