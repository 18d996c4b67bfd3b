//! Task group cancellation: `cancel()`, nested groups, enclosing scopes, dropping the group
//! future, dropping the runtime. Helpers: tests/task_group_util/mod.rs.

#[path = "task_group_util/mod.rs"]
mod util;

use std::future::{Future, pending};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use quattro::{CancelScope, GroupError, TaskGroup, TaskHandle, fail_after, move_on_after};
use tokio::time::{Instant, sleep};
use util::*;

async fn panics_after(after: Duration, msg: &'static str) -> Result<(), &'static str> {
    sleep(after).await;
    std::panic::panic_any(msg)
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("<other payload>")
}

/// Spawns `n` children that hold a drop guard and never finish.
fn spawn_sleepers<E: Send + 'static>(tg: &TaskGroup<E>, n: usize, drops: &Counter) {
    for _ in 0..n {
        let g = drops.guard();
        tg.spawn(async move {
            let _g = g;
            sleep(NEVER).await;
            Ok(())
        });
    }
}

// ----- tg.cancel() ------------------------------------------------------------------------------

both_runtimes! {
    /// `cancel()` from the body: the body is dropped at its next suspension point (no code
    /// after it runs), the children are dropped, the result is cancelled with no failures.
    async fn cancel_from_the_body() {
        let drops = Counter::new();
        let after = Counter::new();
        let (d, a) = (drops.clone(), after.clone());
        let start = Instant::now();
        let err = TaskGroup::scope(|tg| async move {
            spawn_sleepers(&tg, 3, &d);
            let _g = d.guard();
            sleep(ms(5)).await;
            tg.cancel();
            tg.cancel(); // idempotent
            tokio::task::yield_now().await;
            a.incr();
            Ok::<_, &str>(())
        })
        .await
        .unwrap_err();
        assert_elapsed(start, ms(5));
        assert!(err.is_cancelled());
        assert!(err.failures().is_empty());
        assert!(!err.has_panic());
        assert_eq!(err.to_string(), "task group was cancelled");
        assert_eq!(drops.get(), 4);
        assert_eq!(after.get(), 0, "the body ran past its cancellation point");
    }
}

both_runtimes! {
    /// A body that cancels and then returns `Ok` without suspending: still cancelled.
    async fn cancel_from_the_body_then_return_ok() {
        let err = TaskGroup::scope(|tg| async move {
            tg.cancel();
            Ok::<_, ()>(5)
        })
        .await
        .unwrap_err();
        assert!(err.is_cancelled());
        assert!(err.failures().is_empty());
    }
}

both_runtimes! {
    /// `cancel()` from a child.
    async fn cancel_from_a_child() {
        let drops = Counter::new();
        let d = drops.clone();
        let start = Instant::now();
        let err = TaskGroup::scope(|tg| async move {
            spawn_sleepers(&tg, 3, &d);
            let tg2 = tg.clone();
            tg.spawn(async move {
                sleep(ms(5)).await;
                tg2.cancel();
                Ok::<_, ()>(())
            });
            pending::<()>().await;
            Ok(())
        })
        .await
        .unwrap_err();
        assert_elapsed(start, ms(5));
        assert!(err.is_cancelled());
        assert!(err.failures().is_empty());
        assert_eq!(drops.get(), 3);
    }
}

both_runtimes! {
    /// `cancel()` from a task outside the group, holding a cloned handle; also after the
    /// body has returned while children still run.
    async fn cancel_from_another_task() {
        for body_done in [false, true] {
            let drops = Counter::new();
            let d = drops.clone();
            let (tx, rx) = tokio::sync::oneshot::channel();
            let canceller = tokio::spawn(async move {
                let tg: TaskGroup<()> = rx.await.unwrap();
                sleep(ms(5)).await;
                tg.cancel();
            });
            let start = Instant::now();
            let err = TaskGroup::scope(|tg| async move {
                spawn_sleepers(&tg, 3, &d);
                tx.send(tg.clone()).unwrap();
                if !body_done {
                    pending::<()>().await;
                }
                Ok(())
            })
            .await
            .unwrap_err();
            assert_elapsed(start, ms(5));
            assert!(err.is_cancelled());
            assert!(err.failures().is_empty());
            assert_eq!(drops.get(), 3);
            canceller.await.unwrap();
        }
    }
}

both_runtimes! {
    /// After `cancel()` the group is closing: `is_closed()` says so at once.
    async fn is_closed_right_after_cancel() {
        let _ = TaskGroup::scope(|tg| async move {
            assert!(!tg.is_closed());
            tg.cancel();
            assert!(tg.is_closed(), "cancel() was called, yet the group still accepts tasks");
            Ok::<_, ()>(())
        })
        .await;
    }
}

/// A spawn into a group that was cancelled (but has not yet been polled since) must not
/// run the future: the handle resolves to cancelled.
async fn spawn_after_cancel_is_never_polled_body() {
    let polled = Counter::new();
    let drops = Counter::new();
    let handles = Arc::new(Mutex::new(Vec::new()));
    let (p, d, hs) = (polled.clone(), drops.clone(), handles.clone());
    let err = TaskGroup::scope(|tg| async move {
        tg.cancel();
        for _ in 0..4 {
            let (p, g) = (p.clone(), d.guard());
            hs.lock().unwrap().push(tg.spawn(async move {
                let _g = g;
                p.incr();
                Ok(())
            }));
        }
        // Give another worker (multi-thread) the chance to run what was spawned.
        if !is_paused() {
            std::thread::sleep(ms(20));
        }
        tokio::task::yield_now().await;
        Ok::<_, ()>(())
    })
    .await
    .unwrap_err();
    assert!(err.is_cancelled());
    assert_eq!(drops.get(), 4);
    assert_eq!(polled.get(), 0, "a task spawned after cancel() ran");
    let drained: Vec<_> = handles.lock().unwrap().drain(..).collect();
    for h in drained {
        assert!(h.await.unwrap_err().is_cancelled());
    }
}

#[tokio::test(start_paused = true)]
async fn spawn_after_cancel_is_never_polled_paused() {
    spawn_after_cancel_is_never_polled_body().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_after_cancel_is_never_polled_multi_thread() {
    spawn_after_cancel_is_never_polled_body().await;
}

/// A child whose destructor spawns into its (cancelling) group.
struct SpawnOnDrop {
    tg: TaskGroup<&'static str>,
    polled: Counter,
    drops: Counter,
    refused: Counter,
}
impl Drop for SpawnOnDrop {
    fn drop(&mut self) {
        let (p, g) = (self.polled.clone(), self.drops.guard());
        let h = self.tg.spawn(async move {
            let _g = g;
            p.incr();
            Ok(())
        });
        if h.is_finished() && h.id().is_none() {
            self.refused.incr();
        }
    }
}

both_runtimes! {
    /// Spawning into a group while it cancels (from a destructor of an aborted child or of a
    /// queued future) is refused cleanly: no panic, no deadlock, the future is dropped
    /// unpolled.
    async fn spawn_into_a_cancelling_group_is_refused() {
        let polled = Counter::new();
        let drops = Counter::new();
        let refused = Counter::new();
        let (p, d, r) = (polled.clone(), drops.clone(), refused.clone());
        let err = TaskGroup::builder()
            .concurrency_limit(1)
            .scope(|tg| async move {
                for _ in 0..2 {
                    // The first runs (and is aborted), the second waits in the queue.
                    let guard = SpawnOnDrop {
                        tg: tg.clone(),
                        polled: p.clone(),
                        drops: d.clone(),
                        refused: r.clone(),
                    };
                    tg.spawn(async move {
                        let _guard = guard;
                        pending::<()>().await;
                        Ok(())
                    });
                }
                let tg2 = tg.clone();
                tg.spawn_background(async move {
                    sleep(ms(5)).await;
                    drop(tg2);
                    Err("boom")
                });
                Ok(())
            })
            .await
            .unwrap_err();
        assert_eq!(err.errors().collect::<Vec<_>>(), [&"boom"]);
        assert_eq!(refused.get(), 2);
        assert_eq!(drops.get(), 2);
        assert_eq!(polled.get(), 0);
    }
}

both_runtimes! {
    /// `cancellation_token()` fires on a failure, on `cancel()`, and when the group future
    /// is dropped; not on normal completion.
    async fn cancellation_token_fires_when_the_group_cancels() {
        let token = Arc::new(Mutex::new(None));
        let t = token.clone();
        let _ = TaskGroup::scope(|tg| async move {
            *t.lock().unwrap() = Some(tg.cancellation_token());
            tg.spawn(async {
                sleep(ms(2)).await;
                Err::<(), _>("x")
            });
            Ok(())
        })
        .await;
        assert!(token.lock().unwrap().take().unwrap().is_cancelled());

        let t = token.clone();
        let _ = TaskGroup::scope(|tg| async move {
            let tok = tg.cancellation_token();
            *t.lock().unwrap() = Some(tok.clone());
            assert!(!tok.is_cancelled());
            tg.cancel();
            assert!(tok.is_cancelled());
            Ok::<_, ()>(())
        })
        .await;

        let t = token.clone();
        let _ = move_on_after(
            ms(5),
            TaskGroup::scope(|tg| async move {
                let tok = tg.cancellation_token();
                *t.lock().unwrap() = Some(tok.clone());
                tg.spawn(async move {
                    tok.cancelled().await;
                    Ok::<_, ()>(())
                });
                Ok(())
            }),
        )
        .await;
        assert!(token.lock().unwrap().take().unwrap().is_cancelled());

        let t = token.clone();
        TaskGroup::scope(|tg| async move {
            *t.lock().unwrap() = Some(tg.cancellation_token());
            Ok::<_, ()>(())
        })
        .await
        .unwrap();
        assert!(!token.lock().unwrap().take().unwrap().is_cancelled());
    }
}

// ----- Nested groups -----------------------------------------------------------------------------

both_runtimes! {
    /// An inner group's failure travels as the outer task's error: the outer `GroupError`
    /// holds the inner `GroupError` (with the inner task's name).
    async fn inner_failure_nested_in_outer_error() {
        let drops = Counter::new();
        let d = drops.clone();
        let err = TaskGroup::scope(|outer: TaskGroup<GroupError<&'static str>>| async move {
            let d2 = d.clone();
            outer.task("inner-group").spawn(TaskGroup::scope(|inner: TaskGroup<&'static str>| async move {
                spawn_sleepers(&inner, 2, &d2);
                inner.task("leaf").spawn(async {
                    sleep(ms(5)).await;
                    Err::<(), _>("leaf failed")
                });
                Ok(())
            }));
            spawn_sleepers(&outer, 2, &d);
            Ok(())
        })
        .await
        .unwrap_err();
        assert_eq!(drops.get(), 4);
        assert_eq!(err.failures().len(), 1);
        assert_eq!(err.failures()[0].task_name(), Some("inner-group"));
        let inner = err.into_failures().pop().unwrap().into_error().unwrap();
        assert_eq!(inner.errors().collect::<Vec<_>>(), [&"leaf failed"]);
        assert_eq!(inner.failures()[0].task_name(), Some("leaf"));
    }
}

both_runtimes! {
    /// An outer failure cancels an inner group's children: every grandchild (in a group run
    /// by an outer child, and in one run by the outer body) is dropped before the outer
    /// group returns.
    async fn outer_failure_drops_grandchildren() {
        let drops = Counter::new();
        let d = drops.clone();
        let start = Instant::now();
        let err = TaskGroup::scope(|outer| async move {
            for _ in 0..3 {
                let d = d.clone();
                outer.spawn(async move {
                    TaskGroup::scope(|inner: TaskGroup<()>| async move {
                        spawn_sleepers(&inner, 3, &d);
                        // One more level.
                        let d2 = d.clone();
                        inner.spawn(async move {
                            TaskGroup::scope(|leaf: TaskGroup<()>| async move {
                                spawn_sleepers(&leaf, 2, &d2);
                                Ok(())
                            })
                            .await
                            .map_err(|_| ())
                        });
                        Ok(())
                    })
                    .await
                    .map_err(|_| "inner")
                });
            }
            outer.spawn(async {
                sleep(ms(10)).await;
                Err::<(), _>("outer child failed")
            });
            // A group run by the outer body itself.
            TaskGroup::scope(|inner: TaskGroup<()>| async move {
                spawn_sleepers(&inner, 4, &d);
                Ok::<_, ()>(())
            })
            .await
            .unwrap();
            Ok(())
        })
        .await
        .unwrap_err();
        assert_elapsed(start, ms(10));
        // In real time some grandchildren may not have been created yet when the failure hit.
        if is_paused() {
            assert_eq!(drops.get(), 3 * (3 + 2) + 4);
        }
        assert_eq!(drops.get(), drops.made(), "a grandchild outlived the group");
        assert_eq!(err.errors().collect::<Vec<_>>(), [&"outer child failed"]);
    }
}

both_runtimes! {
    /// A scope around the group that times out returns only after every child's and
    /// grandchild's drop guard ran.
    async fn enclosing_timeout_waits_for_every_drop_guard() {
        let drops = Counter::new();
        let d = drops.clone();
        let start = Instant::now();
        let out = move_on_after(
            ms(10),
            TaskGroup::scope(|tg| async move {
                spawn_sleepers(&tg, 5, &d);
                let d2 = d.clone();
                tg.spawn(async move {
                    TaskGroup::scope(|inner: TaskGroup<()>| async move {
                        spawn_sleepers(&inner, 5, &d2);
                        Ok(())
                    })
                    .await
                    .map_err(|_| ())
                });
                tg.spawn_background(pending());
                let _g = d.guard();
                pending::<()>().await;
                Ok(())
            }),
        )
        .await;
        assert!(out.is_none());
        assert_elapsed(start, ms(10));
        if is_paused() {
            assert_eq!(drops.get(), 11);
        }
        assert_eq!(drops.get(), drops.made(), "a child outlived the scope");

        // fail_after and an explicit CancelScope::cancel() from another task, likewise.
        let drops = Counter::new();
        let d = drops.clone();
        let out = fail_after(
            ms(10),
            TaskGroup::scope(|tg| async move {
                spawn_sleepers(&tg, 5, &d);
                Ok::<_, ()>(())
            }),
        )
        .await;
        assert!(out.is_err());
        assert_eq!(drops.get(), 5);

        let drops = Counter::new();
        let d = drops.clone();
        let scope = CancelScope::new();
        let s = scope.clone();
        let canceller = tokio::spawn(async move {
            sleep(ms(5)).await;
            s.cancel();
        });
        let out = scope
            .move_on(TaskGroup::scope(|tg| async move {
                spawn_sleepers(&tg, 5, &d);
                Ok::<_, ()>(())
            }))
            .await;
        assert!(out.is_none());
        assert!(scope.cancelled_caught());
        assert_eq!(drops.get(), 5);
        canceller.await.unwrap();
    }
}

/// Slow to drop: its destructor sleeps (blocking) briefly, to widen races.
struct SlowDrop(#[allow(dead_code)] DropGuard);
impl Drop for SlowDrop {
    fn drop(&mut self) {
        std::thread::sleep(ms(2));
    }
}

/// Multi-thread: the enclosing scope waits even for destructors that take a while on other
/// workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enclosing_timeout_waits_for_slow_destructors() {
    for _ in 0..5 {
        let drops = Counter::new();
        let d = drops.clone();
        let out = move_on_after(
            ms(5),
            TaskGroup::scope(|tg| async move {
                for _ in 0..6 {
                    let g = SlowDrop(d.guard());
                    tg.spawn(async move {
                        let _g = g;
                        pending::<()>().await;
                        Ok::<_, ()>(())
                    });
                }
                Ok(())
            }),
        )
        .await;
        assert!(out.is_none());
        assert_eq!(drops.get(), 6);
    }
}

// ----- Dropping the group future ------------------------------------------------------------------

both_runtimes! {
    /// Dropping the scope future (here from `tokio::select!`, with no quattro scope around)
    /// aborts every child and grandchild: after a few yields every drop guard ran and no
    /// task is left alive.
    async fn dropping_the_scope_future_drops_every_child() {
        let drops = Counter::new();
        let d = drops.clone();
        let baseline = alive_tasks();
        let polled_after_drop = Counter::new();
        let pad = polled_after_drop.clone();
        let (dm, pm) = (drops.clone(), polled_after_drop.clone());
        tokio::select! {
            _ = TaskGroup::builder().concurrency_limit(8).scope(|tg| async move {
                spawn_sleepers(&tg, 5, &d);
                tg.spawn_background(pending::<Result<(), ()>>());
                let d2 = d.clone();
                tg.spawn(async move {
                    TaskGroup::scope(|inner: TaskGroup<()>| async move {
                        spawn_sleepers(&inner, 5, &d2);
                        Ok(())
                    })
                    .await
                    .map_err(|_| ())
                });
                // Limit 8 with 6 running: two of these start, two wait in the queue.
                for _ in 0..4 {
                    let (g, pad) = (d.guard(), pad.clone());
                    tg.spawn(async move {
                        let _g = g;
                        pad.incr();
                        pending::<()>().await;
                        Ok(())
                    });
                }
                let _g = d.guard();
                pending::<()>().await;
                Ok(())
            }) => unreachable!(),
            // Everything made (grandchildren too) and the two free slots taken.
            _ = eventually(move || dm.made() == 15 && pm.get() == 2) => {}
        }
        let started = polled_after_drop.get();
        assert_eq!(started, 2);
        eventually(|| drops.get() == 15).await;
        eventually(|| alive_tasks() == baseline).await;
        assert_eq!(polled_after_drop.get(), started, "a queued task started after the drop");
    }
}

both_runtimes! {
    /// Same, dropped by hand right after its first poll (children spawned, none polled yet).
    async fn dropping_after_the_first_poll() {
        let drops = Counter::new();
        let d = drops.clone();
        let baseline = alive_tasks();
        let mut fut = Box::pin(TaskGroup::scope(|tg| async move {
            spawn_sleepers(&tg, 10, &d);
            pending::<()>().await;
            Ok::<_, ()>(())
        }));
        assert!(futures::poll!(fut.as_mut()).is_pending());
        drop(fut);
        eventually(|| drops.get() == 10).await;
        eventually(|| alive_tasks() == baseline).await;
    }
}

both_runtimes! {
    /// A group dropped by `select!` inside an enclosing quattro scope hands its aborted tasks
    /// to that scope, which waits for them before it returns.
    async fn dropped_group_inside_a_scope_is_awaited_by_the_scope() {
        let drops = Counter::new();
        let d = drops.clone();
        let seen = move_on_after(Duration::from_secs(60), async move {
            tokio::select! {
                _ = TaskGroup::scope(|tg| async move {
                    for _ in 0..6 {
                        let g = SlowDrop(d.guard());
                        tg.spawn(async move {
                            let _g = g;
                            pending::<()>().await;
                            Ok::<_, ()>(())
                        });
                    }
                    pending::<()>().await;
                    Ok(())
                }) => unreachable!(),
                _ = sleep(ms(5)) => {}
            }
        })
        .await;
        assert_eq!(seen, Some(()));
        assert_eq!(drops.get(), 6);
    }
}

both_runtimes! {
    /// A group dropped by `select!` in another group's body: the outer group waits for the
    /// inner group's aborted tasks before it returns.
    async fn dropped_group_inside_a_group_is_awaited_by_the_group() {
        let drops = Counter::new();
        let d = drops.clone();
        TaskGroup::scope(|_outer| async move {
            tokio::select! {
                _ = TaskGroup::scope(|tg| async move {
                    for _ in 0..6 {
                        let g = SlowDrop(d.guard());
                        tg.spawn(async move {
                            let _g = g;
                            pending::<()>().await;
                            Ok::<_, ()>(())
                        });
                    }
                    pending::<()>().await;
                    Ok(())
                }) => unreachable!(),
                _ = sleep(ms(5)) => {}
            }
            Ok::<_, ()>(())
        })
        .await
        .unwrap();
        assert_eq!(drops.get(), 6);
    }
}

// ----- Dropping the runtime -------------------------------------------------------------------------

fn runtime_drop_does_not_hang(multi_thread: bool) {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = if multi_thread {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        }
        .unwrap();
        let drops = Counter::new();
        let handles: Arc<Mutex<Vec<TaskHandle<()>>>> = Arc::default();
        let (d, hs) = (drops.clone(), handles.clone());
        let group = rt.spawn(
            TaskGroup::builder()
                .concurrency_limit(6)
                .scope(|tg| async move {
                    for _ in 0..8 {
                        let g = d.guard();
                        hs.lock().unwrap().push(tg.spawn(async move {
                            let _g = g;
                            sleep(NEVER).await;
                            Ok(())
                        }));
                    }
                    let d2 = d.clone();
                    tg.spawn_background(async move {
                        TaskGroup::scope(|inner: TaskGroup<()>| async move {
                            spawn_sleepers(&inner, 3, &d2);
                            Ok(())
                        })
                        .await
                        .map_err(|_| ())
                    });
                    pending::<()>().await;
                    Ok::<_, ()>(())
                }),
        );
        // Wait until the inner group has spawned its three tasks (8 + 3 guards made).
        let d3 = drops.clone();
        rt.block_on(async move { eventually(|| d3.made() == 8 + 3).await });
        drop(rt);
        let _ = done_tx.send((drops, handles, group));
    });
    let (drops, handles, group) = done_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("dropping the runtime hung");
    assert_eq!(
        drops.get(),
        8 + 3,
        "every future was dropped with the runtime"
    );
    let drained: Vec<_> = handles.lock().unwrap().drain(..).collect();
    for h in drained {
        let res = futures::executor::block_on(h);
        assert!(res.unwrap_err().is_cancelled());
    }
    let join = futures::executor::block_on(group).unwrap_err();
    assert!(join.is_cancelled());
}

/// Dropping a current-thread runtime while a group runs: no hang; handles say cancelled.
#[test]
fn dropping_the_runtime_while_a_group_runs_current_thread() {
    runtime_drop_does_not_hang(false);
}

/// Same for the multi-thread runtime.
#[test]
fn dropping_the_runtime_while_a_group_runs_multi_thread() {
    runtime_drop_does_not_hang(true);
}

// ----- Panics -----------------------------------------------------------------------------------

both_runtimes! {
    /// A panicking child cancels the group; the panic is resumed in the awaiting task only
    /// after every sibling (and the body) was dropped.
    async fn child_panic_resumed_after_siblings_dropped() {
        let drops = Counter::new();
        let d = drops.clone();
        let start = Instant::now();
        let res = AssertUnwindSafe(TaskGroup::scope(|tg| async move {
            for _ in 0..3 {
                let g = d.guard();
                tg.spawn(async move {
                    let _g = g;
                    sleep(NEVER).await;
                    Ok(())
                });
            }
            tg.task("bad").spawn(panics_after(ms(10), "child bug"));
            let _g = d.guard();
            pending::<()>().await;
            Ok(())
        }))
        .catch_unwind()
        .await;
        // Checked right where the panic surfaced: nothing of the group is left.
        assert_eq!(drops.get(), 4);
        assert_elapsed(start, ms(10));
        let payload = res.unwrap_err();
        assert_eq!(panic_text(&*payload), "child bug");
    }
}

both_runtimes! {
    /// Same for a panic in the body, and through `tokio::spawn` (JoinError payload).
    async fn body_panic_resumed_after_children_dropped() {
        let drops = Counter::new();
        let d = drops.clone();
        let seen_at_panic = Arc::new(AtomicUsize::new(usize::MAX));
        let join = tokio::spawn(async move {
            let out = AssertUnwindSafe(TaskGroup::scope(|tg: TaskGroup<()>| async move {
                for _ in 0..3 {
                    let g = d.guard();
                    tg.spawn(async move {
                        let _g = g;
                        sleep(NEVER).await;
                        Ok::<_, ()>(())
                    });
                }
                sleep(ms(5)).await;
                std::panic::panic_any::<_>("body bug") as Result<(), ()>
            }))
            .catch_unwind()
            .await;
            seen_at_panic.store(drops.get(), Ordering::SeqCst);
            if let Err(p) = out {
                std::panic::resume_unwind(p)
            }
            assert_eq!(seen_at_panic.load(Ordering::SeqCst), 3);
        })
        .await;
        let err = join.unwrap_err();
        assert!(err.is_panic());
        assert_eq!(panic_text(&*err.into_panic()), "body bug");
    }
}

both_runtimes! {
    /// With `capture_panics` the payload lands in the `GroupError` (labelled with the task's
    /// name), siblings are cancelled, and `resume_panic` re-raises it.
    async fn capture_panics_puts_the_payload_in_the_error() {
        let drops = Counter::new();
        let d = drops.clone();
        let err = TaskGroup::builder()
            .capture_panics()
            .scope(|tg| async move {
                let g = d.guard();
                tg.spawn(async move {
                    let _g = g;
                    sleep(NEVER).await;
                    Ok(())
                });
                tg.task("bad").spawn(panics_after(ms(5), "child bug"));
                pending::<()>().await;
                Ok(())
            })
            .await
            .unwrap_err();
        assert_eq!(drops.get(), 1);
        assert!(err.has_panic());
        assert!(!err.is_cancelled());
        assert_eq!(err.errors().count(), 0, "errors() leaves panics out");
        let f = &err.failures()[0];
        assert!(f.is_panic());
        assert_eq!(f.error(), None);
        assert_eq!(f.task_name(), Some("bad"));
        assert!(f.task_id().is_some());
        assert_eq!(err.to_string(), "task group failed: task `bad` panicked: child bug");
        let payload = std::panic::catch_unwind(AssertUnwindSafe(|| err.resume_panic())).unwrap_err();
        assert_eq!(panic_text(&*payload), "child bug");

        // A body panic is captured too, labelled as the body.
        let err = TaskGroup::builder()
            .capture_panics()
            .scope(|_tg| async { std::panic::panic_any::<_>("body bug") as Result<(), ()> })
            .await
            .unwrap_err();
        assert!(err.failures()[0].is_body());
        let payload = err.into_failures().pop().unwrap().into_panic().unwrap();
        assert_eq!(panic_text(&*payload), "body bug");

        // Without a panic, resume_panic hands the error back.
        let err = TaskGroup::builder()
            .capture_panics()
            .scope(|_tg| async { Err::<(), _>("plain") })
            .await
            .unwrap_err();
        let err = err.resume_panic();
        assert_eq!(err.errors().collect::<Vec<_>>(), [&"plain"]);
    }
}

/// An error and a panic in the same tick: without `capture_panics` the panic wins (is
/// resumed); with it, both are in the error, in order of occurrence.
#[tokio::test(start_paused = true)]
async fn error_and_panic_in_the_same_tick() {
    let res = AssertUnwindSafe(TaskGroup::scope(|tg| async move {
        tg.spawn(async {
            sleep(ms(5)).await;
            Err::<(), _>("err")
        });
        tg.spawn(panics_after(ms(5), "bug"));
        Ok(())
    }))
    .catch_unwind()
    .await;
    assert_eq!(panic_text(&*res.unwrap_err()), "bug");

    let err = TaskGroup::builder()
        .capture_panics()
        .scope(|tg| async move {
            tg.spawn(async {
                sleep(ms(5)).await;
                Err::<(), _>("err")
            });
            tg.spawn(panics_after(ms(5), "bug"));
            Ok(())
        })
        .await
        .unwrap_err();
    assert_eq!(err.failures().len(), 2);
    assert_eq!(err.errors().collect::<Vec<_>>(), [&"err"]);
    assert!(err.has_panic());
}

/// Panics when dropped.
struct PanicOnDrop;
impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("drop bug");
        }
    }
}

both_runtimes! {
    /// What happens when a child's destructor panics while the group aborts it: the child's
    /// wrapper catches the panic, the group records it as a panic of that task after the error
    /// that caused the cancellation, and other siblings are still dropped. Without
    /// `capture_panics` that panic is resumed (the error is logged).
    async fn child_panicking_in_drop_during_abort() {
        let drops = Counter::new();
        let d = drops.clone();
        let err = TaskGroup::builder()
            .capture_panics()
            .scope(|tg| async move {
                tg.task("bad-drop").spawn(async {
                    let _p = PanicOnDrop;
                    pending::<()>().await;
                    Ok(())
                });
                let g = d.guard();
                tg.spawn(async move {
                    let _g = g;
                    pending::<()>().await;
                    Ok(())
                });
                tg.spawn(async {
                    sleep(ms(5)).await;
                    Err::<(), _>("boom")
                });
                Ok(())
            })
            .await
            .unwrap_err();
        assert_eq!(drops.get(), 1);
        assert_eq!(err.failures().len(), 2, "{err:?}");
        assert_eq!(err.failures()[0].error(), Some(&"boom"));
        assert!(err.failures()[1].is_panic());
        assert_eq!(err.failures()[1].task_name(), Some("bad-drop"));
        let text = err.to_string();
        assert!(text.starts_with("task group failed with 2 errors: task "), "{text}");
        assert!(text.ends_with(": boom; task `bad-drop` panicked: drop bug"), "{text}");

        let res = AssertUnwindSafe(TaskGroup::scope(|tg| async move {
            tg.spawn(async {
                let _p = PanicOnDrop;
                pending::<()>().await;
                Ok(())
            });
            tg.spawn(async {
                sleep(ms(5)).await;
                Err::<(), _>("boom")
            });
            Ok(())
        }))
        .catch_unwind()
        .await;
        assert_eq!(panic_text(&*res.unwrap_err()), "drop bug");
    }
}

both_runtimes! {
    /// A task that succeeded but whose future panics as it is dropped fails the group with a
    /// panic labelled with the task's name.
    async fn finished_child_panicking_in_drop_is_a_named_failure() {
        let err = TaskGroup::builder()
            .capture_panics()
            .scope(|tg| async move {
                tg.task("finish-drop").spawn(async {
                    let _p = PanicOnDrop;
                    Ok::<_, ()>(())
                });
                Ok(())
            })
            .await
            .unwrap_err();
        assert_eq!(err.failures().len(), 1, "{err:?}");
        assert!(err.failures()[0].is_panic());
        assert_eq!(err.failures()[0].task_name(), Some("finish-drop"));
    }
}

/// Spawns into its group from its destructor, then blocks briefly so another worker could
/// run what it spawned.
struct SpawnInDrop {
    tg: TaskGroup<()>,
    polled: Counter,
}
impl Drop for SpawnInDrop {
    fn drop(&mut self) {
        for _ in 0..3 {
            let p = self.polled.clone();
            self.tg.spawn(async move {
                p.incr();
                Ok(())
            });
        }
        if !is_paused() {
            std::thread::sleep(ms(20));
        }
    }
}

async fn body_spawning_in_drop(drop_from_outside: bool) {
    let polled = Counter::new();
    let p = polled.clone();
    let group = TaskGroup::scope(|tg| async move {
        let _s = SpawnInDrop {
            tg: tg.clone(),
            polled: p,
        };
        if !drop_from_outside {
            tg.spawn(async {
                sleep(ms(5)).await;
                Err::<(), _>(())
            });
        }
        pending::<()>().await;
        Ok(())
    });
    tokio::select! {
        _ = group => assert!(!drop_from_outside),
        _ = sleep(ms(5)), if drop_from_outside => {}
    }
    sleep(ms(20)).await;
    assert_eq!(polled.get(), 0, "a task spawned by the dropped body ran");
}

both_runtimes! {
    /// A body dropped because a child failed can't start new tasks from its destructors.
    async fn body_dropped_on_failure_cannot_spawn() {
        body_spawning_in_drop(false).await;
    }
}

#[tokio::test(start_paused = true)]
async fn body_dropped_with_the_group_future_cannot_spawn_paused() {
    body_spawning_in_drop(true).await;
}

/// A body dropped with the group future (from `select!`) can't start new tasks from its
/// destructors either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_dropped_with_the_group_future_cannot_spawn_multi_thread() {
    body_spawning_in_drop(true).await;
}

// ----- regressions of the core rebuild ---------------------------------------------------------

/// A child that sets `flag` after 300 ms unless it is aborted first.
fn spawn_late_flag<E: Send + 'static>(tg: &TaskGroup<E>, flag: &Counter) {
    let flag = flag.clone();
    tg.spawn(async move {
        sleep(ms(300)).await;
        flag.incr();
        Ok(())
    });
}

/// Runs `fut` as a task; waits for it (at most 5 s), then 500 ms more, and checks that no
/// child of the group it ran outlived it (`late` counts the children that got to 300 ms).
async fn run_then_check_no_child_outlived(
    fut: impl Future<Output = ()> + Send + 'static,
    late: &Counter,
) {
    let task = tokio::spawn(fut);
    let joined = tokio::time::timeout(Duration::from_secs(5), task).await;
    assert!(joined.is_ok(), "the task did not end");
    sleep(ms(500)).await;
    assert_eq!(
        late.get(),
        0,
        "a child reached its 300 ms mark: it was neither aborted with its group nor cut by the grace"
    );
}

both_runtimes! {
    /// Regression (core rebuild, item 3): a group future dropped by `select!` whose body's
    /// destructor panics must still abort its children (the panic used to skip the abort: a
    /// child set its flag 300 ms later).
    async fn body_destructor_panic_on_select_drop_still_aborts_children() {
        let late = Counter::new();
        let l = late.clone();
        run_then_check_no_child_outlived(async move {
            tokio::select! {
                biased;
                _ = TaskGroup::scope(|tg| async move {
                    let guard = PanicOnDrop;
                    spawn_late_flag(&tg, &l);
                    let _guard = &guard;
                    pending::<()>().await;
                    Ok::<(), ()>(())
                }) => unreachable!(),
                _ = sleep(ms(10)) => {}
            }
        }, &late).await;
    }
}

both_runtimes! {
    /// Regression (core rebuild, item 3): a group dropped by an enclosing `move_on_after`
    /// whose body's destructor panics must still abort its children.
    async fn body_destructor_panic_on_scope_cancel_still_aborts_children() {
        let late = Counter::new();
        let l = late.clone();
        run_then_check_no_child_outlived(async move {
            let _ = move_on_after(ms(10), TaskGroup::scope(|tg| async move {
                let guard = PanicOnDrop;
                spawn_late_flag(&tg, &l);
                let _guard = &guard;
                pending::<()>().await;
                Ok::<(), ()>(())
            }))
            .await;
        }, &late).await;
    }
}

both_runtimes! {
    /// Regression (core rebuild, item 3): a limited group (`concurrency_limit(1)`) dropped
    /// with one running child and one queued child whose future's destructor panics must
    /// still abort the running child.
    async fn queued_destructor_panic_on_drop_still_aborts_running_child() {
        let late = Counter::new();
        let l = late.clone();
        run_then_check_no_child_outlived(async move {
            tokio::select! {
                biased;
                _ = TaskGroup::builder().concurrency_limit(1).scope(|tg| async move {
                    spawn_late_flag(&tg, &l);
                    let guard = PanicOnDrop;
                    tg.spawn(async move {
                        let _guard = &guard;
                        Ok(())
                    });
                    pending::<()>().await;
                    Ok::<(), ()>(())
                }) => unreachable!(),
                _ = sleep(ms(10)) => {}
            }
        }, &late).await;
    }
}

both_runtimes! {
    /// Regression (core rebuild, item 3): `request_shutdown(grace)` on a limited group whose queued
    /// future's destructor panics: the shutdown must still take effect (the running child,
    /// which ignores the request, is cut by the grace at the latest, and the group returns).
    async fn queued_destructor_panic_on_shutdown_still_cuts_at_the_grace() {
        let late = Counter::new();
        let l = late.clone();
        let cut = Arc::new(Mutex::new(None));
        let c = cut.clone();
        let start = Instant::now();
        run_then_check_no_child_outlived(async move {
            let _ = TaskGroup::builder().concurrency_limit(1).scope(|tg| async move {
                let flag = l.clone();
                tg.spawn(async move {
                    let _cut = DropAt(c);
                    sleep(ms(300)).await;
                    flag.incr();
                    Ok(())
                });
                let guard = PanicOnDrop;
                tg.spawn(async move {
                    let _guard = &guard;
                    Ok(())
                });
                sleep(ms(10)).await;
                tg.request_shutdown(ms(50));
                Ok::<(), ()>(())
            })
            .await;
        }, &late).await;
        let cut = cut.lock().unwrap().expect("the running child was never dropped");
        assert!(cut - start <= ms(60), "the running child was cut at {:?}, after the 50 ms grace", cut - start);
        if is_paused() {
            assert!(cut - start >= ms(10));
        }
    }
}

both_runtimes! {
    /// Regression (core rebuild, item 3): `request_shutdown(grace)` called from another task on a
    /// limited group whose queued future's destructor panics: the panic surfaces in the
    /// caller, and the shutdown must still take effect: the running child, which ignores the
    /// request, is cut at the grace (it used to run on to 300 ms), and the group returns.
    async fn queued_destructor_panic_in_shutdown_from_another_task_still_cuts_at_the_grace() {
        let late = Counter::new();
        let l = late.clone();
        let cut = Arc::new(Mutex::new(None));
        let c = cut.clone();
        let start = Instant::now();
        run_then_check_no_child_outlived(async move {
            let _ = TaskGroup::builder().concurrency_limit(1).scope(|tg| async move {
                let flag = l.clone();
                tg.spawn(async move {
                    let _cut = DropAt(c);
                    sleep(ms(300)).await;
                    flag.incr();
                    Ok(())
                });
                let guard = PanicOnDrop;
                tg.spawn(async move {
                    let _guard = &guard;
                    Ok(())
                });
                sleep(ms(10)).await;
                let caller = tg.clone();
                let called = tokio::spawn(async move { caller.request_shutdown(ms(50)) }).await;
                assert!(called.is_err_and(|e| e.is_panic()), "the destructor's panic did not surface in the caller");
                Ok::<(), ()>(())
            })
            .await;
        }, &late).await;
        let cut = cut.lock().unwrap().expect("the running child was never dropped");
        assert!(cut - start <= ms(60) + if is_paused() { ms(0) } else { ms(200) },
            "the running child was cut at {:?}, after the 50 ms grace", cut - start);
        if is_paused() {
            assert_eq!(cut - start, ms(60), "cut at the grace");
        }
    }
}

/// Takes 50 ms to drop (a blocking destructor), then counts.
struct SlowCountedDrop(Counter);

impl Drop for SlowCountedDrop {
    fn drop(&mut self) {
        std::thread::sleep(ms(50));
        self.0.incr();
    }
}

both_runtimes! {
    /// Regression (core rebuild, item 3): a limited group dropped (by `select!`) inside a
    /// child of an outer group, whose queued future's destructor panics: the running child of
    /// the dropped group must still be waited for, so that when the outer group ends (with the
    /// panic), that child's destructor has run. The panic used to skip handing the aborted
    /// tasks to an owner, so the outer group could end while the child was still running.
    async fn queued_destructor_panic_on_drop_inside_a_child_still_drains() {
        let dropped = Counter::new();
        let d = dropped.clone();
        let outer = tokio::spawn(TaskGroup::scope(|tg| async move {
            tg.spawn(async move {
                tokio::select! {
                    biased;
                    _ = TaskGroup::builder().concurrency_limit(1).scope(|tg2| async move {
                        let slow = SlowCountedDrop(d);
                        tg2.spawn(async move {
                            let _slow = slow;
                            pending::<()>().await;
                            Ok(())
                        });
                        let guard = PanicOnDrop;
                        tg2.spawn(async move {
                            let _guard = &guard;
                            Ok(())
                        });
                        pending::<()>().await;
                        Ok::<(), ()>(())
                    }) => unreachable!(),
                    _ = sleep(ms(10)) => {}
                }
                Ok::<(), ()>(())
            });
            Ok::<(), ()>(())
        }));
        let joined = tokio::time::timeout(Duration::from_secs(5), outer).await.expect("the outer group hung");
        let seen = dropped.get();
        assert!(joined.is_err_and(|e| e.is_panic()), "the destructor's panic did not surface");
        assert_eq!(seen, 1, "the outer group ended before the dropped group's running child was dropped");
    }
}

/// Records when it is dropped.
struct DropAt(Arc<Mutex<Option<Instant>>>);

impl Drop for DropAt {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = Some(Instant::now());
    }
}

both_runtimes! {
    /// Regression (core rebuild, item 2): a nested group dropped (by `select!`) inside a
    /// scope, a group body and a group child: the enclosing owner returns only after the
    /// nested group's children were dropped (the hand-over is awaited, even though it is
    /// now released as soon as it is empty).
    async fn nested_group_dropped_inside_an_owner_is_drained_before_it_returns() {
        async fn drop_nested(drops: Counter) {
            tokio::select! {
                biased;
                _ = TaskGroup::scope(|tg| async move {
                    spawn_sleepers(&tg, 3, &drops);
                    pending::<()>().await;
                    Ok::<(), ()>(())
                }) => unreachable!(),
                _ = std::future::ready(()) => {}
            }
        }
        // Inside a scope.
        let drops = Counter::new();
        let out = move_on_after(NEVER, drop_nested(drops.clone())).await;
        assert_eq!(out, Some(()));
        assert_eq!(drops.get(), 3, "scope returned before the nested group's children were dropped");
        // Inside a group body.
        let drops = Counter::new();
        let d = drops.clone();
        TaskGroup::scope(|_tg| async move {
            drop_nested(d).await;
            Ok::<(), ()>(())
        })
        .await
        .unwrap();
        assert_eq!(drops.get(), 3, "group returned before the nested group's children were dropped");
        // Inside a group child: the group returns only once they are dropped.
        let drops = Counter::new();
        let d = drops.clone();
        TaskGroup::scope(|tg| async move {
            tg.spawn(async move {
                drop_nested(d).await;
                Ok(())
            });
            Ok::<_, ()>(())
        })
        .await
        .unwrap();
        assert_eq!(drops.get(), 3, "group returned before its child's nested group's children were dropped");
    }
}

#[tokio::test]
async fn cancelling_a_handed_out_token_touches_neither_the_group_nor_other_tokens() {
    let out = TaskGroup::scope(|tg| async move {
        let mine = tg.cancellation_token();
        tg.cancellation_token().cancel(); // a library cancels its own copy
        assert!(!mine.is_cancelled());
        assert!(!tg.cancellation_token().is_cancelled());
        let value = tg.spawn(async { Ok::<_, ()>(7) }).await.unwrap();
        Ok((value, mine))
    })
    .await;
    let (value, mine) = out.unwrap();
    assert_eq!(value, 7);
    assert!(
        !mine.is_cancelled(),
        "a group that finishes normally does not cancel it"
    );
}

both_runtimes! {
    /// Spawned tasks hand their abort handles to the group in batches. A cancel that comes
    /// while some are still in a batch (here 45 tasks: one full batch of 32 and 13 more) still
    /// aborts every task, and every handle says finished once the group returned.
    async fn a_cancel_aborts_tasks_whose_handles_are_still_batched() {
        for n in [1, 13, 31, 32, 33, 45] {
            let drops = Counter::new();
            let d = drops.clone();
            let (err, handles) = {
                let mut handles = Vec::new();
                let out = TaskGroup::scope(|tg| {
                    let handles = &mut handles;
                    async move {
                        for _ in 0..n {
                            let g = d.guard();
                            handles.push(tg.spawn(async move {
                                let _g = g;
                                sleep(NEVER).await;
                                Ok(())
                            }));
                        }
                        tg.cancel();
                        Ok::<_, ()>(())
                    }
                })
                .await;
                (out.unwrap_err(), handles)
            };
            assert!(err.is_cancelled(), "{n} tasks: {err:?}");
            assert_eq!(drops.get(), n, "{n} tasks: every future dropped before the group returned");
            for h in handles {
                assert!(h.is_finished(), "{n} tasks: a handle not finished after the group returned");
                assert!(h.await.unwrap_err().is_cancelled());
            }
        }
    }
}

both_runtimes! {
    /// The same for tasks that end on their own: whatever batch their abort handles are in,
    /// every handle says finished once the group returned.
    async fn every_handle_is_finished_when_the_group_returns() {
        for n in [1, 31, 32, 33, 1_000] {
            let mut handles = Vec::new();
            TaskGroup::scope(|tg| {
                let handles = &mut handles;
                async move {
                    for i in 0..n {
                        handles.push(tg.spawn(async move { Ok::<_, ()>(i) }));
                    }
                    Ok(())
                }
            })
            .await
            .unwrap();
            for (i, h) in handles.into_iter().enumerate() {
                assert!(h.is_finished(), "{n} tasks: task {i} not finished after the group returned");
                assert_eq!(h.await.unwrap(), i);
            }
        }
    }
}
