//! Graceful shutdown (issue 8): the soft request travels down the scope/group chain, the grace
//! period, the hard cut with the structured guarantee, triggers, tokens, the concurrency limit.

use std::future::pending;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quattro::{
    CancelScope, TaskGroup, current_effective_deadline, fail_after, is_shutdown_requested,
    move_on_after, shutdown_requested, shutdown_token,
};
use tokio::time::{Instant, sleep};

#[path = "task_group_util/mod.rs"]
mod util;
use util::*;

/// A connection: serves a request every 10 ms until it is asked to stop between two requests,
/// then takes `wrap_up` to finish; yields how many requests it served.
async fn connection(wrap_up: Duration) -> Result<u32, &'static str> {
    let mut served = 0;
    loop {
        tokio::select! {
            _ = shutdown_requested() => break,
            _ = sleep(ms(10)) => served += 1,
        }
    }
    sleep(wrap_up).await;
    Ok(served)
}

/// Records when it is dropped.
struct DropTime(Arc<Mutex<Option<Instant>>>);

impl Drop for DropTime {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = Some(Instant::now());
    }
}

// ----- Within the grace: a normal completion ---------------------------------------------------

both_runtimes! {
    /// Children that finish within the grace return their values and the group succeeds; the
    /// grace timer does not cut anything.
    async fn children_finishing_within_the_grace_return_their_values() {
        let start = Instant::now();
        let out = TaskGroup::scope(|tg| async move {
            let handles: Vec<_> = (0..3).map(|_| tg.spawn(connection(ms(20)))).collect();
            sleep(ms(35)).await;
            tg.request_shutdown(Duration::from_secs(1));
            assert!(tg.shutdown_token().is_cancelled());
            let mut served = Vec::new();
            for handle in handles {
                served.push(handle.await.unwrap());
            }
            Ok(served)
        })
        .await
        .unwrap();
        assert_eq!(out.len(), 3);
        if is_paused() {
            assert_eq!(out, [3, 3, 3]);
            assert_elapsed(start, ms(55));
        } else {
            assert!(start.elapsed() < Duration::from_secs(1), "not cut by the grace");
        }
    }
}

both_runtimes! {
    /// The same for a cancel scope: the future finishes within the grace, `cancelled_caught`
    /// stays false.
    async fn scope_finishing_within_the_grace_is_a_normal_completion() {
        let scope = CancelScope::new();
        let handle = scope.clone();
        let out = scope
            .move_on(async move {
                handle.request_shutdown(Duration::from_secs(1));
                connection(ms(20)).await
            })
            .await;
        assert_eq!(out, Some(Ok(0)));
        assert!(scope.shutdown_token().is_cancelled());
        assert!(!scope.cancelled_caught());
    }
}

// ----- The grace runs out: a hard cut with the structured guarantee --------------------------

both_runtimes! {
    /// A child that ignores the request is dropped exactly at the end of the grace, and its
    /// drop guard has run when the group's future returns; the group reports the cut as a
    /// cancellation.
    async fn child_ignoring_the_request_is_dropped_at_the_end_of_the_grace() {
        let dropped_at = Arc::new(Mutex::new(None));
        let drops = Counter::new();
        let (t, d) = (dropped_at.clone(), drops.clone());
        let start = Instant::now();
        let err = TaskGroup::scope(|tg| async move {
            let (t, g) = (DropTime(t), d.guard());
            tg.spawn(async move {
                let _guards = (t, g);
                sleep(NEVER).await;
                Ok::<_, &str>(())
            });
            let polite = tg.spawn(connection(ms(10)));
            tg.request_shutdown(ms(50));
            // The body may still use what finished within the grace.
            assert_eq!(polite.await.unwrap(), 0);
            Ok(())
        })
        .await
        .unwrap_err();
        assert_eq!(drops.get(), 1, "dropped before the group returned");
        assert!(err.is_cancelled());
        assert!(err.failures().is_empty());
        assert_elapsed(start, ms(50));
        let at = dropped_at.lock().unwrap().expect("dropped");
        if is_paused() {
            assert_eq!(at, start + ms(50));
        } else {
            assert!(at >= start + ms(50));
        }
    }
}

both_runtimes! {
    /// The same through a cancel scope around a group: the scope's grace cuts the group, and
    /// the scope returns only after every task was dropped.
    async fn scope_grace_cuts_the_group_inside_and_waits_for_its_tasks() {
        let drops = Counter::new();
        let d = drops.clone();
        let scope = CancelScope::new();
        let s = scope.clone();
        let start = Instant::now();
        let out = scope
            .move_on(TaskGroup::scope(|tg| async move {
                for _ in 0..3 {
                    let g = d.guard();
                    tg.spawn(async move {
                        let _g = g;
                        shutdown_requested().await;
                        sleep(NEVER).await; // too slow to finish
                        Ok::<_, ()>(())
                    });
                }
                sleep(ms(5)).await;
                s.request_shutdown(ms(20));
                pending::<()>().await;
                Ok(())
            }))
            .await;
        assert!(out.is_none());
        assert!(scope.cancelled_caught(), "the grace ran out");
        assert_eq!(drops.get(), 3);
        assert_elapsed(start, ms(25));
    }
}

both_runtimes! {
    /// A request with zero grace is a hard cancel, for groups and scopes.
    async fn zero_grace_is_a_hard_cancel() {
        let drops = Counter::new();
        let d = drops.clone();
        let start = Instant::now();
        let err = TaskGroup::scope(|tg| async move {
            let g = d.guard();
            tg.spawn(async move {
                let _g = g;
                connection(ms(10)).await // would finish, but gets no time
            });
            tg.request_shutdown(Duration::ZERO);
            pending::<()>().await;
            Ok(())
        })
        .await
        .unwrap_err();
        assert!(err.is_cancelled());
        assert_eq!(drops.get(), 1);
        assert_elapsed(start, Duration::ZERO);

        let scope = CancelScope::new();
        let s = scope.clone();
        let out = scope
            .fail(async move {
                s.request_shutdown(Duration::ZERO);
                connection(ms(10)).await
            })
            .await;
        assert!(out.unwrap_err().is_deadline_reached());
        assert!(scope.cancelled_caught());
    }
}

// ----- Errors during the grace ---------------------------------------------------------------

both_runtimes! {
    /// A child that fails during the grace still fails the group, and the error is reported;
    /// the other children are cancelled as for any failure.
    async fn child_failing_during_the_grace_fails_the_group() {
        let drops = Counter::new();
        let d = drops.clone();
        let err = TaskGroup::scope(|tg| async move {
            tg.task("flusher").spawn(async {
                shutdown_requested().await;
                sleep(ms(5)).await;
                Err::<(), _>("flush failed")
            });
            let g = d.guard();
            tg.spawn(async move {
                let _g = g;
                sleep(NEVER).await;
                Ok(())
            });
            tg.request_shutdown(Duration::from_secs(1));
            Ok(())
        })
        .await
        .unwrap_err();
        assert_eq!(err.errors().collect::<Vec<_>>(), [&"flush failed"]);
        assert_eq!(err.failures()[0].task_name(), Some("flusher"));
        assert!(!err.is_cancelled(), "a failure, not the grace");
        assert_eq!(drops.get(), 1);
    }
}

// ----- The request travels down the chain ----------------------------------------------------

/// Grandchildren (tasks of a group nested in a task) see the request, and the end of the grace
/// as their effective deadline.
#[tokio::test(start_paused = true)]
async fn grandchildren_see_the_request_and_the_grace_deadline() {
    let start = Instant::now();
    let out = TaskGroup::scope(|tg| async move {
        let child = tg.spawn(async {
            TaskGroup::scope(|inner: TaskGroup<()>| async move {
                let grandchild = inner.spawn(async {
                    assert!(!is_shutdown_requested());
                    shutdown_requested().await;
                    assert!(is_shutdown_requested());
                    Ok(current_effective_deadline())
                });
                Ok(grandchild.await.unwrap())
            })
            .await
            .map_err(|_| ())
        });
        sleep(ms(10)).await;
        tg.request_shutdown(Duration::from_secs(2));
        Ok(child.await.unwrap())
    })
    .await
    .unwrap();
    assert_eq!(out, Some(start + ms(10) + Duration::from_secs(2)));
    assert_elapsed(start, ms(10));
}

/// The request reaches code in nested scopes inside children (scopes with deadlines of their
/// own), and the tokens handed out there.
#[tokio::test(start_paused = true)]
async fn the_request_reaches_nested_scopes_inside_children() {
    let out = TaskGroup::scope(|tg| async move {
        let nested = tg.spawn(async {
            let seen = move_on_after(NEVER, async {
                fail_after(NEVER, async {
                    let token = shutdown_token();
                    shutdown_requested().await;
                    assert!(token.is_cancelled());
                    is_shutdown_requested()
                })
                .await
            })
            .await;
            Ok::<_, ()>(seen)
        });
        sleep(ms(1)).await;
        tg.request_shutdown(Duration::from_secs(1));
        Ok(nested.await.unwrap())
    })
    .await
    .unwrap();
    assert_eq!(out, Some(Ok(true)));
}

/// A request for an inner scope does not reach the code around it; a request for an outer
/// scope reaches the inner one (and its handle-level check says it was not asked itself).
#[tokio::test(start_paused = true)]
async fn requests_travel_down_not_up() {
    let outer = CancelScope::new();
    let o = outer.clone();
    outer
        .move_on(async move {
            let inner = CancelScope::new();
            let i = inner.clone();
            inner
                .move_on(async move {
                    i.request_shutdown(Duration::from_secs(1));
                    assert!(is_shutdown_requested());
                })
                .await;
            assert!(!is_shutdown_requested(), "the inner request stays inside");

            let inner = CancelScope::new();
            let i = inner.clone();
            inner
                .move_on(async move {
                    let token = i.shutdown_token();
                    o.request_shutdown(Duration::from_secs(1));
                    shutdown_requested().await;
                    assert!(!i.shutdown_token().is_cancelled());
                    assert!(!token.is_cancelled(), "the handle token is the scope's own");
                })
                .await
                .unwrap();
        })
        .await
        .unwrap();
}

both_runtimes! {
    /// Background tasks see the request too, and may stop on their own within the grace.
    async fn background_tasks_see_the_request() {
        let stopped = Arc::new(AtomicBool::new(false));
        let s = stopped.clone();
        TaskGroup::scope(|tg| async move {
            tg.spawn_background(async move {
                shutdown_requested().await;
                s.store(true, Ordering::SeqCst);
                Ok(())
            });
            tg.request_shutdown(Duration::from_secs(1));
            let s = tg.spawn(async { eventually(is_shutdown_requested).await; Ok(()) });
            s.await.unwrap();
            sleep(ms(5)).await;
            Ok::<_, ()>(())
        })
        .await
        .unwrap();
        assert!(stopped.load(Ordering::SeqCst));
    }
}

/// Chain tokens are created iteratively: a request reaches the innermost of 1000 nested scopes.
#[tokio::test(start_paused = true)]
async fn the_request_reaches_the_innermost_of_1000_nested_scopes() {
    fn nest(depth: usize) -> Pin<Box<dyn std::future::Future<Output = Option<bool>> + Send>> {
        if depth == 0 {
            Box::pin(async {
                shutdown_requested().await;
                Some(is_shutdown_requested())
            })
        } else {
            Box::pin(async move { CancelScope::new().move_on(nest(depth - 1)).await.flatten() })
        }
    }
    let out = CancelScope::new()
        .move_on(nest(1000))
        .shutdown_after(ms(10), Duration::from_secs(1))
        .await;
    assert_eq!(out, Some(Some(true)));
}

/// Outside any scope or group there is no request, and nothing to wait for.
#[tokio::test(start_paused = true)]
async fn outside_any_scope_nothing_is_requested() {
    assert!(!is_shutdown_requested());
    assert!(!shutdown_token().is_cancelled());
    assert!(
        tokio::time::timeout(ms(10), shutdown_requested())
            .await
            .is_err()
    );
    // Created outside, awaited inside a scope: looked up where it is polled.
    let scope = CancelScope::new();
    scope.request_shutdown(Duration::from_secs(1));
    let waiting = shutdown_requested();
    assert_eq!(scope.move_on(waiting).await, Some(()));
}

// ----- The concurrency limit -----------------------------------------------------------------

both_runtimes! {
    /// A request during the queue phase drops queued futures unpolled (their handles resolve to
    /// cancelled); from then on the group no longer queues, but a spawn that finds a free slot
    /// still runs.
    async fn queued_tasks_are_dropped_unpolled_at_the_request() {
        let polled = Arc::new(AtomicUsize::new(0));
        let drops = Counter::new();
        let (p, d) = (polled.clone(), drops.clone());
        let out = TaskGroup::builder()
            .concurrency_limit(1)
            .scope(|tg| async move {
                let running = tg.spawn(connection(ms(10)));
                let queued: Vec<_> = (0..2)
                    .map(|_| {
                        let (p, g) = (p.clone(), d.guard());
                        tg.spawn(async move {
                            let _g = g;
                            p.fetch_add(1, Ordering::SeqCst);
                            Ok(0)
                        })
                    })
                    .collect();
                sleep(ms(15)).await;
                tg.request_shutdown(Duration::from_secs(1));
                assert_eq!(d.get(), 2, "dropped at the request");
                for handle in queued {
                    assert!(handle.await.unwrap_err().is_cancelled());
                }
                // Full: a spawn that would queue is refused, and so is a waiting spawn.
                let late = d.guard();
                let refused = tg.spawn(async move {
                    let _late = late;
                    Ok(0)
                });
                assert!(refused.await.unwrap_err().is_cancelled());
                let refused = tg.spawn_when_free(async { Ok(0) }).await;
                assert!(refused.await.unwrap_err().is_cancelled());
                let served = running.await.unwrap();
                // A free slot (once the group reaped the task): in-flight work may still fan
                // out.
                let t = tg.clone();
                eventually(move || t.is_empty()).await;
                let extra = tg.spawn(async { Ok(7) }).await.unwrap();
                Ok((served, extra))
            })
            .await
            .unwrap();
        assert_eq!(polled.load(Ordering::SeqCst), 0, "never polled");
        assert_eq!(drops.get(), 3);
        assert_eq!(out.1, 7);
    }
}

both_runtimes! {
    /// A producer waiting in `spawn_when_free` when the request comes is released, refused.
    async fn a_waiting_producer_is_refused_at_the_request() {
        TaskGroup::builder()
            .concurrency_limit(1)
            .scope(|tg| async move {
                tg.spawn(connection(ms(10)));
                let producer = tg.clone();
                let waiting = tokio::spawn(async move {
                    producer.spawn_when_free(async { Ok(1) }).await.await
                });
                sleep(ms(5)).await;
                tg.request_shutdown(Duration::from_secs(1));
                assert!(waiting.await.unwrap().unwrap_err().is_cancelled());
                Ok::<_, &str>(())
            })
            .await
            .unwrap();
    }
}

/// A request for an enclosing scope reaches a nested group's tasks but leaves its queue alone:
/// a limited fan-out inside work that is finishing is part of that work.
#[tokio::test(start_paused = true)]
async fn an_enclosing_request_leaves_a_nested_queue_alone() {
    let scope = CancelScope::new();
    let s = scope.clone();
    let out = scope
        .move_on(
            TaskGroup::builder()
                .concurrency_limit(1)
                .scope(|tg| async move {
                    let handles: Vec<_> = (0..4u32)
                        .map(|i| {
                            tg.spawn(async move {
                                sleep(ms(10)).await;
                                Ok::<_, ()>(i)
                            })
                        })
                        .collect();
                    s.request_shutdown(Duration::from_secs(1));
                    let mut sum = 0;
                    for handle in handles {
                        sum += handle.await.unwrap();
                    }
                    Ok(sum)
                }),
        )
        .await;
    assert_eq!(out.unwrap().unwrap(), 6);
}

// ----- Triggers --------------------------------------------------------------------------------

both_runtimes! {
    /// ctrl-c style: a future triggers the request on a group; connections finish within the
    /// grace; a connection that ignores it is cut at trigger + grace.
    async fn a_future_triggers_the_shutdown() {
        let (ctrl_c, pressed) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            sleep(ms(25)).await;
            let _ = ctrl_c.send(());
        });
        let start = Instant::now();
        let served = TaskGroup::scope(|tg| async move {
            let handles: Vec<_> = (0..2).map(|_| tg.spawn(connection(ms(5)))).collect();
            let mut total = 0;
            for handle in handles {
                total += handle.await.unwrap();
            }
            Ok(total)
        })
        .shutdown_on(pressed, Duration::from_secs(5))
        .await
        .unwrap();
        if is_paused() {
            assert_eq!(served, 4);
            assert_elapsed(start, ms(30));
        }

        let drops = Counter::new();
        let d = drops.clone();
        let start = Instant::now();
        let err = TaskGroup::scope(|tg| async move {
            let g = d.guard();
            tg.spawn(async move {
                let _g = g;
                pending::<Result<(), ()>>().await
            });
            Ok(())
        })
        .shutdown_on(sleep(ms(10)), ms(20))
        .await
        .unwrap_err();
        assert!(err.is_cancelled());
        assert_eq!(drops.get(), 1);
        assert_elapsed(start, ms(30));
    }
}

/// A trigger that is ready before the group started: the request is made right after the
/// group's first poll. On a scope it precedes the run (the grace counts from then).
#[tokio::test(start_paused = true)]
async fn a_trigger_ready_at_once() {
    let out = TaskGroup::scope(|tg| async move {
        shutdown_requested().await;
        Ok::<_, ()>(tg.shutdown_token().is_cancelled())
    })
    .shutdown_on(std::future::ready(()), Duration::from_secs(1))
    .await;
    assert!(out.unwrap());

    let fut = CancelScope::new()
        .move_on(async {
            shutdown_requested().await;
            "stopped"
        })
        .shutdown_on(async {}, Duration::from_secs(1));
    assert!(!fut.is_triggered());
    assert_eq!(fut.await, Some("stopped"));
}

/// A soft deadline: at the deadline the request, after the grace the cut.
#[tokio::test(start_paused = true)]
async fn soft_deadlines() {
    let start = Instant::now();
    let scope = CancelScope::new();
    let out = scope
        .move_on(connection(ms(100)))
        .shutdown_at(start + ms(35), ms(500))
        .await;
    assert_eq!(out, Some(Ok(3)));
    assert_elapsed(start, ms(135));
    assert!(!scope.cancelled_caught());

    let start = Instant::now();
    let scope = CancelScope::new();
    let out = scope
        .fail(connection(Duration::from_secs(10)))
        .shutdown_after(ms(35), ms(500))
        .await;
    assert!(out.unwrap_err().is_deadline_reached());
    assert!(scope.cancelled_caught(), "the grace ran out");
    assert_elapsed(start, ms(535));

    // Built outside any runtime context is fine: the timer is armed on the first poll.
    let start = Instant::now();
    let soft = start + ms(15);
    let fut = std::thread::spawn(move || {
        TaskGroup::scope(
            |tg| async move { Ok::<_, &str>(tg.spawn(connection(ms(1))).await.unwrap()) },
        )
        .shutdown_at(soft, ms(100))
    })
    .join()
    .unwrap();
    assert_eq!(fut.await.unwrap(), 1);
    assert_elapsed(start, ms(16));
}

/// Tokens for code that already takes one: the group's, the scope's (taken before it runs),
/// and the task-local one.
#[tokio::test(start_paused = true)]
async fn tokens_for_code_that_takes_one() {
    let scope = CancelScope::new();
    let early = scope.shutdown_token();
    let s = scope.clone();
    scope
        .move_on(async move {
            let token = shutdown_token();
            let out = TaskGroup::scope(|tg| async move {
                let group_token = tg.shutdown_token();
                let inside = tg.spawn(async {
                    shutdown_token().cancelled().await;
                    Ok::<_, ()>(())
                });
                s.request_shutdown(Duration::from_secs(1));
                inside.await.unwrap();
                Ok(group_token.is_cancelled())
            })
            .await;
            assert!(
                !out.unwrap(),
                "the enclosing request is not the group's own"
            );
            assert!(token.is_cancelled());
        })
        .await
        .unwrap();
    assert!(early.is_cancelled());
    // Cancelling a handed-out token requests nothing.
    let scope = CancelScope::new();
    scope.shutdown_token().cancel();
    assert!(!scope.shutdown_token().is_cancelled());
    assert_eq!(
        scope.move_on(async { is_shutdown_requested() }).await,
        Some(false)
    );
}

/// Later requests can shorten the grace, never extend it; a request after the group finished
/// does nothing.
#[tokio::test(start_paused = true)]
async fn repeated_requests_only_shorten_the_grace() {
    let start = Instant::now();
    let mut escaped = None;
    let err = TaskGroup::scope(|tg| {
        escaped = Some(tg.clone());
        async move {
            tg.spawn(pending::<Result<(), ()>>());
            tg.request_shutdown(ms(100));
            tg.request_shutdown(ms(500));
            assert_eq!(current_effective_deadline(), Some(start + ms(100)));
            sleep(ms(10)).await;
            tg.request_shutdown(ms(20));
            Ok(())
        }
    })
    .await
    .unwrap_err();
    assert!(err.is_cancelled());
    assert_elapsed(start, ms(30));
    escaped.unwrap().request_shutdown(ms(1)); // finished: nothing happens

    let scope = CancelScope::with_timeout(ms(50));
    scope.request_shutdown(Duration::from_secs(1));
    assert_eq!(scope.deadline(), Some(start + ms(30) + ms(50)));
}

/// Regression (core rebuild, item 8): concurrent `request_shutdown(grace)` calls with different
/// graces (20 ms and 30 s) from several threads at once, 200 times on a 4-worker runtime:
/// the shortest grace must win every time. The group's effective deadline, read in a child
/// after all the calls returned, is the 20 ms cut (the old load-compare-store let a 30 s call
/// overwrite it), and the child, which ignores the request, is cut soon after.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_shutdowns_keep_the_shortest_grace() {
    const CALLERS: usize = 6;
    let short = ms(20);
    let long = Duration::from_secs(30);
    let runtime = tokio::runtime::Handle::current();
    for round in 0..200 {
        let (calls_done, wait_calls) = tokio::sync::oneshot::channel::<()>();
        let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<(Instant, Option<Instant>)>();
        let runtime = runtime.clone();
        let started = Instant::now();
        let out = tokio::time::timeout(
            Duration::from_secs(5),
            TaskGroup::scope(|tg| async move {
                tg.spawn(async move {
                    // Ignores the shutdown request; only the cut ends it.
                    let _ = wait_calls.await;
                    let _ = seen_tx.send((Instant::now(), current_effective_deadline()));
                    sleep(long * 2).await;
                    Ok(())
                });
                let barrier = Arc::new(std::sync::Barrier::new(CALLERS));
                let callers: Vec<_> = (0..CALLERS)
                    .map(|i| {
                        let (tg, barrier, runtime) = (tg.clone(), barrier.clone(), runtime.clone());
                        std::thread::spawn(move || {
                            let _rt = runtime.enter();
                            let grace = if (i + round) % CALLERS == 0 {
                                short
                            } else {
                                long
                            };
                            barrier.wait();
                            tg.request_shutdown(grace);
                        })
                    })
                    .collect();
                tokio::task::spawn_blocking(move || {
                    for caller in callers {
                        caller.join().unwrap();
                    }
                })
                .await
                .unwrap();
                let _ = calls_done.send(());
                Ok::<(), ()>(())
            }),
        )
        .await;
        let out = out.unwrap_or_else(|_| panic!("round {round}: the group was not cut within 5 s"));
        let _ = out;
        let (read_at, deadline) = seen_rx.await.expect("the child never read its deadline");
        let deadline = deadline.expect("no effective deadline after shutdown");
        assert!(
            deadline <= read_at + short,
            "round {round}: the effective deadline is {:?} after the calls, not the {short:?} grace",
            deadline - read_at
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

both_runtimes! {
    /// After a request, a plain `spawn` with a slot free still runs (work in flight may fan
    /// out), but the producer tools are refused even in a group without a limit, so that a
    /// producer loop ends.
    async fn producer_tools_are_refused_after_a_request_even_with_a_free_slot() {
        let out = TaskGroup::scope(|tg| async move {
            tg.request_shutdown(Duration::from_secs(1));
            let spawned = tg.spawn(async { Ok::<_, ()>(1) });
            let waited = tg.spawn_when_free(async { Ok::<_, ()>(2) }).await;
            let refused = waited.await.unwrap_err();
            assert!(refused.is_cancelled() && refused.is_unstarted());
            assert!(tg.try_reserve().unwrap_err().is_closed());
            assert!(tg.reserve().await.unwrap_err().is_closed());
            let back = tg.try_spawn(async { Ok::<_, ()>(3) }).unwrap_err();
            assert!(back.is_closed());
            Ok(spawned.await.unwrap())
        })
        .await;
        assert_eq!(out.unwrap(), 1);
    }
}
