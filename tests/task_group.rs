//! Task group integration tests (more in task_group_limit.rs and task_group_cancel.rs).
// Spawning inside a cancel scope and returning the handle is the point of some tests.
#![allow(clippy::async_yields_async)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use quattro::{TaskGroup, current_effective_deadline, move_on_after};
use tokio::time::{Instant, sleep};

struct DropCount(Arc<AtomicUsize>);
impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn children_awaited() {
    let out = TaskGroup::scope(|tg| async move {
        let a = tg.spawn(async {
            sleep(Duration::from_secs(1)).await;
            Ok::<_, ()>(1)
        });
        let b = tg.spawn(async { Ok(2) });
        Ok((a, b))
    })
    .await
    .unwrap();
    let (a, b) = out;
    assert!(a.is_finished());
    assert_eq!(a.await.unwrap() + b.await.unwrap(), 3);
}

#[tokio::test(start_paused = true)]
async fn child_error_cancels_siblings_and_body() {
    let drops = Arc::new(AtomicUsize::new(0));
    let d = drops.clone();
    let err = TaskGroup::scope(|tg| async move {
        for _ in 0..3 {
            let g = DropCount(d.clone());
            tg.spawn(async move {
                let _g = g;
                sleep(Duration::from_secs(100)).await;
                Ok(())
            });
        }
        tg.spawn(async {
            sleep(Duration::from_secs(1)).await;
            Err::<(), _>("boom")
        });
        let _g = DropCount(d.clone());
        std::future::pending::<()>().await;
        Ok(())
    })
    .await
    .unwrap_err();
    assert_eq!(drops.load(Ordering::SeqCst), 4);
    assert_eq!(err.errors().collect::<Vec<_>>(), [&"boom"]);
}

#[tokio::test(start_paused = true)]
async fn scope_timeout_waits_for_children_drop() {
    let drops = Arc::new(AtomicUsize::new(0));
    let d = drops.clone();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(1);
    let out = move_on_after(
        Duration::from_secs(1),
        TaskGroup::scope(|tg| async move {
            for _ in 0..5 {
                let g = DropCount(d.clone());
                tg.spawn(async move {
                    assert_eq!(current_effective_deadline(), Some(deadline));
                    let _g = g;
                    sleep(Duration::from_secs(100)).await;
                    Ok::<_, ()>(())
                });
            }
            Ok(())
        }),
    )
    .await;
    assert!(out.is_none());
    assert_eq!(drops.load(Ordering::SeqCst), 5);
}

#[tokio::test(start_paused = true)]
async fn limit_never_exceeded() {
    let running = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let (r, m) = (running.clone(), max.clone());
    TaskGroup::builder()
        .concurrency_limit(7)
        .scope(|tg| async move {
            for i in 0..1025u64 {
                let (r, m) = (r.clone(), m.clone());
                tg.spawn(async move {
                    let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                    m.fetch_max(now, Ordering::SeqCst);
                    sleep(Duration::from_millis(i % 13)).await;
                    r.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, ()>(())
                });
            }
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(max.load(Ordering::SeqCst), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_thread_nested_groups_dropped() {
    let drops = Arc::new(AtomicUsize::new(0));
    let d = drops.clone();
    let out = move_on_after(
        Duration::from_millis(20),
        TaskGroup::scope(|tg| async move {
            for _ in 0..4 {
                let d = d.clone();
                tg.spawn(async move {
                    TaskGroup::scope(|inner| async move {
                        for _ in 0..4 {
                            let g = DropCount(d.clone());
                            inner.spawn(async move {
                                let _g = g;
                                std::future::pending::<()>().await;
                                Ok::<_, ()>(())
                            });
                        }
                        Ok(())
                    })
                    .await
                    .map_err(|_| ())
                });
            }
            Ok(())
        }),
    )
    .await;
    assert!(out.is_none());
    assert_eq!(drops.load(Ordering::SeqCst), 16);
}

// ---------------------------------------------------------------------------------------------
// Everything below extends the starter tests above. Helpers: tests/task_group_util/mod.rs.
// ---------------------------------------------------------------------------------------------

#[path = "task_group_util/mod.rs"]
mod util;

use std::future::pending;
use std::sync::Mutex;

use quattro::{GroupError, TaskHandle, move_on_at};
use util::*;

// ----- Promise 1: no leaked tasks; normal completion -----------------------------------------

both_runtimes! {
    /// `scope` returns once every child finished; handles stay readable afterwards.
    async fn children_awaited_and_readable_afterwards() {
        let start = Instant::now();
        let (a, b, c) = TaskGroup::scope(|tg| async move {
            let a = tg.spawn(async {
                sleep(ms(30)).await;
                Ok::<_, ()>("slow")
            });
            let b = tg.spawn(async { Ok("fast") });
            let c = tg.spawn(async {
                sleep(ms(10)).await;
                Ok("medium")
            });
            Ok((a, b, c))
        })
        .await
        .unwrap();
        assert_elapsed(start, ms(30));
        assert!(a.is_finished() && b.is_finished() && c.is_finished());
        assert_eq!(a.await.unwrap(), "slow");
        assert_eq!(b.await.unwrap(), "fast");
        assert_eq!(c.await.unwrap(), "medium");
    }
}

both_runtimes! {
    /// A child spawns a sibling (which spawns another) through a cloned handle after the
    /// body already returned: the group waits for all of them.
    async fn children_spawn_siblings_after_body_finished() {
        let done = Counter::new();
        let d = done.clone();
        let start = Instant::now();
        let first = TaskGroup::scope(|tg| async move {
            let tg2 = tg.clone();
            let first = tg.spawn(async move {
                sleep(ms(10)).await;
                let tg3 = tg2.clone();
                let d3 = d.clone();
                let second = tg2.spawn(async move {
                    sleep(ms(10)).await;
                    tg3.spawn(async move {
                        sleep(ms(10)).await;
                        d3.incr();
                        Ok(())
                    });
                    Ok(7)
                });
                d.incr();
                Ok::<_, ()>(second)
            });
            Ok(first)
        })
        .await
        .unwrap();
        assert_elapsed(start, ms(30));
        assert_eq!(done.get(), 2);
        let second: TaskHandle<i32> = first.await.unwrap();
        assert_eq!(second.await.unwrap(), 7);
    }
}

both_runtimes! {
    /// `len()` counts live normal tasks; a task leaves it as soon as it ends (before its handle
    /// resolves), and background ones never count.
    async fn finished_children_leave_the_live_count() {
        TaskGroup::scope(|tg| async move {
            assert_eq!(tg.len(), 0);
            assert!(tg.is_empty());
            // Held until counted: on a multi-thread runtime a task may end as soon as spawned.
            let gate = Arc::new(tokio::sync::Semaphore::new(0));
            let quick: Vec<_> = (0..3)
                .map(|_| {
                    let gate = gate.clone();
                    tg.spawn(async move {
                        let _pass = gate.acquire().await.unwrap();
                        Ok::<_, ()>(())
                    })
                })
                .collect();
            let (release, released) = tokio::sync::oneshot::channel::<()>();
            let slow = tg.spawn(async move {
                let _ = released.await;
                Ok(())
            });
            tg.spawn_background(pending::<Result<(), ()>>());
            assert_eq!(tg.len(), 4);
            gate.add_permits(3);
            for h in quick {
                h.await.unwrap();
            }
            assert_eq!(tg.len(), 1);
            release.send(()).unwrap();
            slow.await.unwrap();
            assert_eq!(tg.len(), 0);
            assert!(tg.is_empty());
            Ok(())
        })
        .await
        .unwrap();
    }
}

both_runtimes! {
    /// `abort()` cancels one task: its handle says cancelled, its future is dropped, and the
    /// group carries on and succeeds. Aborting a finished task changes nothing; dropping a
    /// handle does not cancel its task.
    async fn abort_one_child_is_not_a_group_failure() {
        let drops = Counter::new();
        let ran = Counter::new();
        let (d, r) = (drops.clone(), ran.clone());
        let out = TaskGroup::scope(|tg| async move {
            let g = d.guard();
            let mut forever = tg.spawn(async move {
                let _g = g;
                pending::<()>().await;
                Ok::<(), &str>(())
            });
            let finished = tg.spawn(async { Ok(5) });
            // Dropped handle: the task still runs to completion.
            drop(tg.spawn(async move {
                sleep(ms(10)).await;
                r.incr();
                Ok(())
            }));
            sleep(ms(1)).await;
            assert!(!forever.is_finished());
            forever.abort();
            forever.abort(); // idempotent
            let err = (&mut forever).await.unwrap_err();
            assert!(err.is_cancelled() && !err.is_failed() && !err.is_panic());
            assert_eq!(d.get(), 1);
            eventually(|| finished.is_finished()).await;
            finished.abort(); // already done: no effect
            assert_eq!(finished.await.unwrap(), 5);
            Ok("ok")
        })
        .await;
        assert_eq!(out.unwrap(), "ok");
        assert_eq!(drops.get(), 1);
        assert_eq!(ran.get(), 1);
    }
}

both_runtimes! {
    /// An empty group returns at once with the body's value (or its error).
    async fn empty_group() {
        let start = Instant::now();
        let out = TaskGroup::scope(|_tg| async { Ok::<_, ()>(5) }).await;
        assert_eq!(out.unwrap(), 5);
        let out = TaskGroup::builder()
            .concurrency_limit(1)
            .capture_panics()
            .scope(|tg| async move { Ok::<_, ()>(tg.len()) })
            .await;
        assert_eq!(out.unwrap(), 0);
        let err = TaskGroup::scope(|_tg| async { Err::<(), _>("nope") })
            .await
            .unwrap_err();
        assert_eq!(err.errors().collect::<Vec<_>>(), [&"nope"]);
        if is_paused() {
            assert_eq!(start.elapsed(), Duration::ZERO);
        }
    }
}

both_runtimes! {
    /// Spawning into a finished group, by any spawn method, gives a handle that is already
    /// cancelled; the future is dropped and never polled; nothing panics.
    async fn spawn_after_finish_is_refused() {
        let polled = Counter::new();
        let drops = Counter::new();
        let tg = TaskGroup::scope(|tg| async move { Ok::<_, &str>(tg.clone()) })
            .await
            .unwrap();
        assert!(tg.is_closed());
        let mk = || {
            let p = polled.clone();
            let g = drops.guard();
            async move {
                let _g = g;
                p.incr();
                Ok::<_, &'static str>(())
            }
        };
        let handles = vec![
            tg.spawn(mk()),
            tg.spawn_background(mk()),
            tg.task("late").spawn(mk()),
            tg.task("late-bg").spawn_background(mk()),
            tg.spawn_when_free(mk()).await,
            tg.task("late-wait").spawn_when_free(mk()).await,
        ];
        assert_eq!(drops.get(), 6, "refused futures are dropped at once");
        for h in handles {
            assert!(h.is_finished());
            assert_eq!(h.id(), None);
            assert!(h.await.unwrap_err().is_cancelled());
        }
        tg.cancel(); // a no-op on a finished group
        assert_eq!(tg.len(), 0);
        tokio::task::yield_now().await;
        assert_eq!(polled.get(), 0);
    }
}

// ----- Promise 2: no lost errors ----------------------------------------------------------------

both_runtimes! {
    /// A body that returns `Err` cancels the children; the error is labelled as the body's.
    async fn body_error() {
        let drops = Counter::new();
        let d = drops.clone();
        let start = Instant::now();
        let err = TaskGroup::scope(|tg| async move {
            for _ in 0..3 {
                let g = d.guard();
                tg.spawn(async move {
                    let _g = g;
                    sleep(NEVER).await;
                    Ok(())
                });
            }
            sleep(ms(10)).await;
            Err::<(), _>("body failed")
        })
        .await
        .unwrap_err();
        assert_elapsed(start, ms(10));
        assert_eq!(drops.get(), 3);
        assert!(!err.is_cancelled());
        assert!(!err.has_panic());
        let failures = err.failures();
        assert_eq!(failures.len(), 1);
        assert!(failures[0].is_body());
        assert_eq!(failures[0].task_name(), None);
        assert_eq!(failures[0].task_id(), None);
        assert!(!failures[0].is_panic());
        assert_eq!(err.to_string(), "task group failed: body: body failed");
        let failure = err.into_failures().pop().unwrap();
        assert_eq!(failure.into_error(), Some("body failed"));
    }
}

both_runtimes! {
    /// A failing child aborts its siblings and drops a body blocked forever; the aborted
    /// siblings add nothing to the error; the failure names the task by id.
    async fn child_error_cancels_siblings_and_blocked_body() {
        let drops = Counter::new();
        let d = drops.clone();
        let failing_id = Arc::new(Mutex::new(None));
        let fid = failing_id.clone();
        let start = Instant::now();
        let err = TaskGroup::scope(|tg| async move {
            for _ in 0..5 {
                let g = d.guard();
                tg.spawn(async move {
                    let _g = g;
                    sleep(NEVER).await;
                    Ok(())
                });
            }
            let h = tg.spawn(async {
                sleep(ms(10)).await;
                Err::<(), _>("boom")
            });
            *fid.lock().unwrap() = h.id();
            let _g = d.guard();
            pending::<()>().await;
            Ok(())
        })
        .await
        .unwrap_err();
        assert_elapsed(start, ms(10));
        assert_eq!(drops.get(), 6);
        assert_eq!(err.failures().len(), 1, "cancelled children add nothing");
        assert_eq!(err.errors().collect::<Vec<_>>(), [&"boom"]);
        assert!(!err.is_cancelled());
        let id = failing_id.lock().unwrap().expect("spawned, so it has an id");
        assert_eq!(err.failures()[0].task_id(), Some(id));
        // An unnamed task is named by where it was spawned, beside its id.
        let shown = err.to_string();
        assert!(
            shown.starts_with(&format!(
                "task group failed: task {id} spawned at tests/task_group.rs:"
            )) && shown.ends_with(": boom"),
            "{shown}"
        );
    }
}

both_runtimes! {
    /// A child failing after the body returned `Ok` still fails the group (the value is
    /// discarded), and cancels the remaining children.
    async fn child_error_after_body_returned() {
        let drops = Counter::new();
        let d = drops.clone();
        let err = TaskGroup::scope(|tg| async move {
            let g = d.guard();
            tg.spawn(async move {
                let _g = g;
                sleep(NEVER).await;
                Ok(())
            });
            tg.spawn(async {
                sleep(ms(10)).await;
                Err::<(), _>("late")
            });
            Ok("value")
        })
        .await
        .unwrap_err();
        assert_eq!(drops.get(), 1);
        assert_eq!(err.errors().collect::<Vec<_>>(), [&"late"]);
    }
}

/// Two children failing at the same instant (same scheduler tick): both errors are kept.
#[tokio::test(start_paused = true)]
async fn two_failures_in_the_same_tick_are_both_reported() {
    let drops = Counter::new();
    let d = drops.clone();
    let err = TaskGroup::scope(|tg| async move {
        let g = d.guard();
        tg.spawn(async move {
            let _g = g;
            sleep(NEVER).await;
            Ok(())
        });
        for e in ["a", "b"] {
            tg.task(e).spawn(async move {
                sleep(ms(10)).await;
                Err::<(), _>(e)
            });
        }
        Ok(())
    })
    .await
    .unwrap_err();
    assert_eq!(drops.get(), 1);
    let mut errors: Vec<_> = err.errors().copied().collect();
    errors.sort();
    assert_eq!(errors, ["a", "b"]);
    let text = err.to_string();
    assert!(
        text.starts_with("task group failed with 2 errors: "),
        "{text}"
    );
    assert!(
        text.contains("task `a`: a") && text.contains("task `b`: b"),
        "{text}"
    );
}

/// Multi-thread: a sibling that is mid-step when the group starts cancelling finishes that
/// step; its `Err` arrives while the group is cancelling and is kept, after the first one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_arriving_while_cancelling_is_kept() {
    let err = TaskGroup::scope(|tg| async move {
        let token = tg.cancellation_token();
        tg.task("slow").spawn(async move {
            // Block this worker (handing its queue to another thread) until the group has
            // started cancelling, then fail in the same step.
            tokio::task::block_in_place(|| {
                let give_up = std::time::Instant::now() + Duration::from_secs(5);
                while !token.is_cancelled() {
                    assert!(std::time::Instant::now() < give_up, "group never cancelled");
                    std::thread::yield_now();
                }
            });
            Err::<(), _>("second")
        });
        tg.task("fast").spawn(async {
            sleep(ms(5)).await;
            Err::<(), _>("first")
        });
        pending::<()>().await;
        Ok(())
    })
    .await
    .unwrap_err();
    assert_eq!(err.errors().collect::<Vec<_>>(), [&"first", &"second"]);
    let names: Vec<_> = err.failures().iter().map(|f| f.task_name()).collect();
    assert_eq!(names, [Some("fast"), Some("slow")]);
}

/// Same, when the cancellation comes from `cancel()`: the group reports both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_arriving_after_cancel_is_kept() {
    let err = TaskGroup::scope(|tg| async move {
        let token = tg.cancellation_token();
        tg.spawn(async move {
            tokio::task::block_in_place(|| {
                let give_up = std::time::Instant::now() + Duration::from_secs(5);
                while !token.is_cancelled() {
                    assert!(std::time::Instant::now() < give_up, "group never cancelled");
                    std::thread::yield_now();
                }
            });
            Err::<(), _>("during cancel")
        });
        sleep(ms(5)).await;
        tg.cancel();
        pending::<()>().await;
        Ok(())
    })
    .await
    .unwrap_err();
    assert!(err.is_cancelled());
    assert_eq!(err.errors().collect::<Vec<_>>(), [&"during cancel"]);
    assert!(err.to_string().starts_with("task group failed: task "));
    assert!(
        err.to_string()
            .ends_with(": during cancel (and was cancelled)")
    );
}

// ----- Background tasks (port of Python quattro's test_taskgroup_background_tasks.py) ------

both_runtimes! {
    /// test_tasks_are_stopped: background tasks are stopped when the group exits.
    async fn background_tasks_are_stopped() {
        let drops = Counter::new();
        let d = drops.clone();
        let start = Instant::now();
        let task = TaskGroup::scope(|tg| async move {
            let g = d.guard();
            Ok::<_, ()>(tg.spawn_background(async move {
                let _g = g;
                loop {
                    sleep(ms(1)).await;
                }
            }))
        })
        .await
        .unwrap();
        if is_paused() {
            assert_eq!(start.elapsed(), Duration::ZERO);
        }
        assert_eq!(drops.get(), 1, "dropped before the group returned");
        assert!(task.is_finished());
        assert!(task.await.unwrap_err().is_cancelled());
    }
}

both_runtimes! {
    /// test_errors_interrupt: an error in a background task cancels the group (body and the
    /// other background task); the handles tell cancelled from failed.
    async fn background_errors_interrupt() {
        let slot = Arc::new(Mutex::new(None));
        let s = slot.clone();
        let start = Instant::now();
        let err = TaskGroup::scope(|tg| async move {
            let task = tg.spawn_background(async {
                loop {
                    sleep(ms(1)).await;
                }
            });
            let task2 = tg.spawn_background(async {
                sleep(ms(10)).await;
                Err::<(), _>("Test")
            });
            *s.lock().unwrap() = Some((task, task2));
            sleep(NEVER).await;
            Ok(())
        })
        .await
        .unwrap_err();
        assert_elapsed(start, ms(10));
        assert_eq!(err.errors().collect::<Vec<_>>(), [&"Test"]);
        let (task, task2) = slot.lock().unwrap().take().unwrap();
        assert!(task.is_finished());
        assert!(task.await.unwrap_err().is_cancelled());
        assert!(task2.is_finished());
        assert!(task2.await.unwrap_err().is_failed());
    }
}

both_runtimes! {
    /// test_result: background tasks run to completion when awaited (here they return `()`:
    /// `spawn_background` takes `Result<(), E>` futures, so the value travels on the side);
    /// one still running when the group is done is cancelled.
    async fn background_task_results() {
        let value = Arc::new(AtomicUsize::new(0));
        let v = value.clone();
        TaskGroup::scope(|tg| async move {
            let task = tg.spawn_background(async move {
                v.store(1, Ordering::SeqCst);
                Ok::<_, ()>(())
            });
            task.await.unwrap();
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(value.swap(0, Ordering::SeqCst), 1);

        let v = value.clone();
        TaskGroup::scope(|tg| async move {
            let task = tg.spawn_background(async move {
                sleep(ms(10)).await;
                v.store(1, Ordering::SeqCst);
                Ok::<_, ()>(())
            });
            sleep(ms(20)).await;
            task.await.unwrap();
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(value.swap(0, Ordering::SeqCst), 1);

        let v = value.clone();
        let task = TaskGroup::scope(|tg| async move {
            let task = tg.spawn_background(async move {
                sleep(Duration::from_secs(5)).await;
                v.store(1, Ordering::SeqCst);
                Ok::<_, ()>(())
            });
            tokio::task::yield_now().await;
            Ok(task)
        })
        .await
        .unwrap();
        assert!(task.is_finished());
        assert!(task.await.unwrap_err().is_cancelled());
        assert_eq!(value.load(Ordering::SeqCst), 0);
    }
}

both_runtimes! {
    /// A background error after the body returned, while a normal task still runs, fails
    /// the group and cancels the normal task.
    async fn background_error_while_normal_task_runs() {
        let drops = Counter::new();
        let d = drops.clone();
        let start = Instant::now();
        let err = TaskGroup::scope(|tg| async move {
            let g = d.guard();
            tg.spawn(async move {
                let _g = g;
                sleep(NEVER).await;
                Ok(())
            });
            tg.task("heartbeat").spawn_background(async {
                sleep(ms(10)).await;
                Err("no pulse")
            });
            Ok(())
        })
        .await
        .unwrap_err();
        assert_elapsed(start, ms(10));
        assert_eq!(drops.get(), 1);
        assert_eq!(err.to_string(), "task group failed: task `heartbeat`: no pulse");
    }
}

// ----- Task names ---------------------------------------------------------------------------------

both_runtimes! {
    /// Names given with `task(name)` appear in `task_name()` and in the `Display` of the
    /// error, for normal, queued and background tasks; `task_id()` matches the handle.
    async fn task_names_in_group_error() {
        let ids = Arc::new(Mutex::new(None));
        let i = ids.clone();
        let err = TaskGroup::scope(|tg| async move {
            let h = tg.task("fetch-users").spawn(async {
                sleep(ms(5)).await;
                Err::<(), _>("timeout")
            });
            *i.lock().unwrap() = h.id();
            pending::<()>().await;
            Ok(())
        })
        .await
        .unwrap_err();
        let f = &err.failures()[0];
        assert_eq!(f.task_name(), Some("fetch-users"));
        assert_eq!(f.task_id(), *ids.lock().unwrap());
        assert!(f.task_id().is_some());
        assert!(!f.is_body());
        assert_eq!(f.to_string(), "task `fetch-users`: timeout");
        assert_eq!(err.to_string(), "task group failed: task `fetch-users`: timeout");
        assert!(format!("{err:?}").contains("fetch-users"));

        // A named task that waited in the queue keeps its name.
        let err = TaskGroup::builder()
            .concurrency_limit(1)
            .scope(|tg| async move {
                tg.spawn(async {
                    sleep(ms(5)).await;
                    Ok(())
                });
                let h = tg.task("queued").spawn(async { Err::<(), _>("late") });
                assert_eq!(h.id(), None, "queued, not spawned");
                Ok(())
            })
            .await
            .unwrap_err();
        assert_eq!(err.failures()[0].task_name(), Some("queued"));
        assert!(err.failures()[0].task_id().is_some());

        // Background and `spawn_when_free` tasks too.
        let err = TaskGroup::builder()
            .concurrency_limit(1)
            .scope(|tg| async move {
                tg.task("waited")
                    .spawn_when_free(async {
                        sleep(ms(5)).await;
                        Err::<(), _>("w")
                    })
                    .await;
                tg.task("bg").spawn_background(async {
                    sleep(ms(5)).await;
                    Err::<(), _>("b")
                });
                pending::<()>().await;
                Ok(())
            })
            .await
            .unwrap_err();
        let mut names: Vec<_> = err.failures().iter().map(|f| f.task_name().unwrap()).collect();
        names.sort();
        if is_paused() {
            assert_eq!(names, ["bg", "waited"]);
        } else {
            // In real time the two may or may not land in the same step.
            assert!(!names.is_empty());
        }
    }
}

// ----- Promise 4: deadlines flow (Trio's rule) --------------------------------------------------

/// Port of Python quattro's test_deadlines.py::test_taskgroup_deadlines.
#[tokio::test(start_paused = true)]
async fn port_test_taskgroup_deadlines() {
    assert_eq!(current_effective_deadline(), None);
    TaskGroup::scope(|tg| async move {
        tg.spawn(async {
            assert_eq!(current_effective_deadline(), None);
            Ok::<_, ()>(())
        })
        .await
        .unwrap();
        Ok(())
    })
    .await
    .unwrap();

    let deadline = Instant::now() + Duration::from_secs(1);
    move_on_at(deadline, async move {
        assert_eq!(current_effective_deadline(), Some(deadline));
        TaskGroup::scope(|tg| async move {
            tg.spawn(async move {
                assert_eq!(current_effective_deadline(), Some(deadline));
                let new_deadline = deadline - ms(100);
                move_on_at(new_deadline, async move {
                    assert_eq!(current_effective_deadline(), Some(new_deadline));
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
        .unwrap();
    })
    .await
    .unwrap();
}

both_runtimes! {
    /// Trio's rule: a child sees the deadline around the *group*, not the inner scopes of
    /// whoever spawned it (the body, a sibling, or a task outside the group). Its own inner
    /// scope nests below the group's deadline.
    async fn children_see_the_group_deadline_not_the_spawners() {
        let outer = Instant::now() + Duration::from_secs(60);
        move_on_at(
            outer,
            TaskGroup::scope(|tg| async move {
                assert_eq!(current_effective_deadline(), Some(outer));
                // From the body, inside an inner scope.
                let inner = Instant::now() + Duration::from_secs(5);
                let from_body = move_on_at(inner, async {
                    assert_eq!(current_effective_deadline(), Some(inner));
                    tg.spawn(async { Ok::<_, ()>(current_effective_deadline()) })
                })
                .await
                .unwrap();
                assert_eq!(from_body.await.unwrap(), Some(outer));

                // From a sibling, inside the sibling's own inner scope.
                let tg2 = tg.clone();
                let from_sibling = tg.spawn(async move {
                    let own = Instant::now() + Duration::from_secs(1);
                    let sib = move_on_at(own, async move {
                        assert_eq!(current_effective_deadline(), Some(own));
                        tg2.spawn(async { Ok(current_effective_deadline()) })
                    })
                    .await
                    .unwrap();
                    assert_eq!(current_effective_deadline(), Some(outer));
                    Ok(sib)
                });
                let sib = from_sibling.await.unwrap();
                assert_eq!(sib.await.unwrap(), Some(outer));

                // From a task outside the group, running under its own deadline.
                let tg3 = tg.clone();
                let from_outside = tokio::spawn(move_on_after(Duration::from_secs(2), async move {
                    assert!(current_effective_deadline().unwrap() < outer);
                    tg3.spawn(async { Ok(current_effective_deadline()) })
                }))
                .await
                .unwrap()
                .unwrap();
                assert_eq!(from_outside.await.unwrap(), Some(outer));

                // A child's own inner scope nests below the group's deadline.
                let nested = tg.spawn(async move {
                    let earlier = move_on_at(outer - ms(1), async { current_effective_deadline() })
                        .await
                        .unwrap();
                    let later = move_on_at(outer + Duration::from_secs(1), async {
                        current_effective_deadline()
                    })
                    .await
                    .unwrap();
                    Ok((earlier, later))
                });
                assert_eq!(nested.await.unwrap(), (Some(outer - ms(1)), Some(outer)));
                Ok(())
            }),
        )
        .await
        .unwrap()
        .unwrap();
    }
}

/// Records `current_effective_deadline()` when dropped.
struct DeadlineOnDrop(Arc<Mutex<Vec<Option<Instant>>>>);
impl Drop for DeadlineOnDrop {
    fn drop(&mut self) {
        self.0.lock().unwrap().push(current_effective_deadline());
    }
}

both_runtimes! {
    /// A child's destructors run with the group's deadline chain current: on normal
    /// completion and when the child alone is aborted they see exactly the deadline around the
    /// group; when the group itself is cancelled they see "now or earlier".
    async fn children_see_the_group_deadline_in_drop() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let outer = Instant::now() + Duration::from_secs(60);
        move_on_at(
            outer,
            TaskGroup::scope(|tg| async move {
                let d = DeadlineOnDrop(s.clone());
                tg.spawn(async move {
                    let _d = d;
                    sleep(ms(1)).await;
                    Ok::<_, ()>(())
                })
                .await
                .unwrap();
                let d = DeadlineOnDrop(s.clone());
                let h = tg.spawn(async move {
                    let _d = d;
                    pending::<()>().await;
                    Ok(())
                });
                sleep(ms(1)).await;
                h.abort();
                assert!(h.await.unwrap_err().is_cancelled());
                // Captured but never polled: dropped when aborted before it ran.
                let d = DeadlineOnDrop(s.clone());
                let h = tg.spawn(async move {
                    let _d = d;
                    Ok(())
                });
                h.abort();
                let _ = h.await;
                Ok(())
            }),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(*seen.lock().unwrap(), [Some(outer), Some(outer), Some(outer)]);

        // Group cancelled by a failure: a cancelled group counts as a deadline of "now".
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let err = move_on_at(
            outer,
            TaskGroup::scope(|tg| async move {
                let d = DeadlineOnDrop(s.clone());
                tg.spawn(async move {
                    let _d = d;
                    pending::<()>().await;
                    Ok(())
                });
                tg.spawn(async {
                    sleep(ms(2)).await;
                    Err::<(), _>("x")
                });
                Ok(())
            }),
        )
        .await
        .unwrap();
        assert!(err.is_err());
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        let d = seen[0].expect("a deadline is in force");
        assert!(d <= Instant::now() && d < outer, "{d:?}");
    }
}

both_runtimes! {
    /// Building the scope future touches nothing: built first and wrapped in a deadline
    /// afterwards, its children see that deadline; the body closure runs on the first poll.
    async fn built_first_then_wrapped_in_a_deadline() {
        let called = Counter::new();
        let c = called.clone();
        let fut = TaskGroup::scope(move |tg| {
            c.incr();
            async move {
                let h = tg.spawn(async { Ok::<_, ()>(current_effective_deadline()) });
                Ok(h.await.unwrap())
            }
        });
        assert_eq!(called.get(), 0);
        let deadline = Instant::now() + Duration::from_secs(30);
        let seen = move_on_at(deadline, fut).await.unwrap().unwrap();
        assert_eq!(called.get(), 1);
        assert_eq!(seen, Some(deadline));

        // Same with a relative timeout that fires: the children are dropped with it.
        let drops = Counter::new();
        let d = drops.clone();
        let fut = TaskGroup::scope(|tg| async move {
            let g = d.guard();
            tg.spawn(async move {
                let _g = g;
                sleep(NEVER).await;
                Ok::<_, ()>(())
            });
            Ok(())
        });
        let start = Instant::now();
        assert!(move_on_after(ms(10), fut).await.is_none());
        assert_elapsed(start, ms(10));
        assert_eq!(drops.get(), 1);
    }
}

// ----- Send, runtime, misuse ------------------------------------------------------------------

fn assert_send<T: Send>(_: &T) {}
fn assert_send_static<T: Send + 'static>(_: &T) {}
fn assert_sync<T: Sync>(_: &T) {}

/// Compile-time: the scope future is `Send` (and `'static`) when the body and the tasks are,
/// so it can run in `tokio::spawn`; handles, group handles and errors are `Send + Sync`.
#[test]
fn scope_future_is_send() {
    let fut = TaskGroup::builder()
        .concurrency_limit(2)
        .capture_panics()
        .scope(|tg| async move {
            let a = tg.spawn(async { Ok::<_, String>(1) });
            let b = tg.spawn_when_free(async { Ok(2) }).await;
            let c = tg.task("bg").spawn_background(async { Ok(()) });
            assert_send(&a);
            assert_sync(&a);
            assert_sync(&tg);
            let _ = (a.await, b.await, c.await);
            sleep(ms(1)).await;
            Ok(tg.len())
        });
    assert_send(&fut);
    assert_send_static(&fut);
    let plain = TaskGroup::scope(|tg| async move {
        tg.spawn(async { Ok::<_, std::io::Error>(()) });
        Ok(())
    });
    assert_send_static(&plain);
    // `GroupError` and `TaskError` are `Send + Sync` (issue 14), so they convert into
    // `Box<dyn Error + Send + Sync>` and `anyhow::Error`; more in tests/errors.rs.
    fn error_types<T: Send + Sync + std::error::Error + 'static>() {}
    error_types::<GroupError<std::io::Error>>();
    error_types::<quattro::TaskError>();
    fn send_sync<T: Send + Sync>() {}
    send_sync::<TaskGroup<String>>();
    send_sync::<TaskHandle<String>>();
}

/// The scope future can be built outside any runtime and run later, on either runtime.
#[test]
fn built_outside_a_runtime_and_polled_later() {
    let make = || {
        TaskGroup::scope(|tg| async move {
            let h = tg.spawn(async {
                sleep(ms(1)).await;
                Ok::<_, ()>(2)
            });
            Ok(h.await.unwrap() + 1)
        })
    };
    let fut = make();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(rt.block_on(fut).unwrap(), 3);

    let fut = make();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(rt.block_on(rt.spawn(fut)).unwrap().unwrap(), 3);
}

#[test]
#[should_panic(expected = "TaskGroup::scope must be polled inside a tokio runtime")]
fn polling_outside_a_runtime_panics_block_on() {
    let _ = futures::executor::block_on(TaskGroup::scope(|_tg| async { Ok::<_, ()>(()) }));
}

#[test]
#[should_panic(expected = "TaskGroup::scope must be polled inside a tokio runtime")]
fn polling_outside_a_runtime_panics_tokio_test() {
    let mut task = tokio_test::task::spawn(TaskGroup::scope(|tg| async move {
        tg.spawn(async { Ok::<_, ()>(()) });
        Ok(())
    }));
    let _ = task.poll();
}

#[test]
#[should_panic(expected = "TaskGroup concurrency_limit must be at least 1")]
fn concurrency_limit_zero_panics() {
    let _ = TaskGroup::builder().concurrency_limit(0);
}

#[tokio::test]
#[should_panic(expected = "a task group future was polled after it completed")]
async fn polled_after_completion_panics() {
    let mut fut = std::pin::pin!(TaskGroup::scope(|_tg| async { Ok::<_, ()>(()) }));
    (&mut fut).await.unwrap();
    let _ = futures::poll!(fut);
}

both_runtimes! {
    /// Awaiting a handle is cancel safe: a timed-out `.await` loses nothing.
    async fn awaiting_a_handle_is_cancel_safe() {
        TaskGroup::scope(|tg| async move {
            let mut h = tg.spawn(async {
                sleep(ms(20)).await;
                Ok::<_, ()>(9)
            });
            assert!(move_on_after(ms(5), &mut h).await.is_none());
            assert!(!h.is_finished());
            assert_eq!(h.await.unwrap(), 9);
            Ok(())
        })
        .await
        .unwrap();
    }
}

both_runtimes! {
    /// Moving the deadline of the scope around a running group reaches its children at once;
    /// moving it into the past cancels the group and drops every child before the scope
    /// returns.
    async fn moving_the_enclosing_deadline_reaches_running_children() {
        let scope = quattro::CancelScope::with_deadline(Instant::now() + Duration::from_secs(60));
        let s = scope.clone();
        let later = Instant::now() + Duration::from_secs(120);
        let seen = scope
            .move_on(TaskGroup::scope(|tg| async move {
                let h = tg.spawn(async move {
                    sleep(ms(5)).await;
                    Ok::<_, ()>(current_effective_deadline())
                });
                s.set_deadline(Some(later));
                Ok(h.await.unwrap())
            }))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seen, Some(later));

        let drops = Counter::new();
        let d = drops.clone();
        let scope = quattro::CancelScope::with_deadline(Instant::now() + Duration::from_secs(60));
        let s = scope.clone();
        let start = Instant::now();
        let out = scope
            .move_on(TaskGroup::scope(|tg| async move {
                for _ in 0..3 {
                    let g = d.guard();
                    tg.spawn(async move {
                        let _g = g;
                        sleep(NEVER).await;
                        Ok::<_, ()>(())
                    });
                }
                sleep(ms(5)).await;
                s.set_deadline(Some(Instant::now() - ms(1)));
                pending::<()>().await;
                Ok(())
            }))
            .await;
        assert!(out.is_none());
        assert!(scope.cancelled_caught());
        assert_elapsed(start, ms(5));
        assert_eq!(drops.get(), 3);
    }
}

/// Background tasks that return a value: the handle yields it when the task finishes before
/// the group, a cancellation when the group ended first; an endless background loop still
/// needs no annotation.
mod background_tasks_return_values {
    use super::*;

    both_runtimes! {
        async fn run() {
            let (late, loops) = TaskGroup::builder()
                .concurrency_limit(1)
                .scope(|tg: TaskGroup<std::convert::Infallible>| async move {
                    let loops = tg.spawn_background(async {
                        loop {
                            tokio::time::sleep(ms(1)).await;
                        }
                    });
                    let quick = tg.task("quick").background().spawn(async { Ok(7u8) });
                    let late = tg.background().spawn(async {
                        tokio::time::sleep(NEVER).await;
                        Ok("never")
                    });
                    assert_eq!(quick.await.unwrap(), 7);
                    Ok((late, loops))
                })
                .await
                .unwrap();
            let late = late.await.unwrap_err();
            assert!(late.is_cancelled(), "{late}");
            assert!(loops.await.unwrap_err().is_cancelled());
        }
    }
}

both_runtimes! {
    /// A body that keeps its group busy (it wakes itself on every poll) still sees a failure,
    /// a drain handed up and the last task's end at once. Most of those polls find nothing
    /// to do and skip the group's lock; whatever needs the group takes its waker to wake it.
    async fn a_body_that_keeps_the_group_busy_sees_a_failure() {
        let err = TaskGroup::scope(|tg| async move {
            for i in 0..3u32 {
                tg.spawn(async move {
                    for _ in 0..i * 10 {
                        tokio::task::yield_now().await;
                    }
                    // A nested group dropped unfinished: its tasks are handed up as a drain.
                    let nested = TaskGroup::scope(|inner: TaskGroup<&str>| async move {
                        inner.spawn(std::future::pending::<Result<(), &str>>());
                        std::future::pending::<()>().await;
                        Ok(())
                    });
                    let _ = tokio::time::timeout(Duration::ZERO, nested).await;
                    Ok(())
                });
            }
            tg.spawn(async {
                for _ in 0..50 {
                    tokio::task::yield_now().await;
                }
                Err::<(), _>("boom")
            });
            loop {
                tokio::task::yield_now().await;
            }
            #[allow(unreachable_code)]
            Ok::<(), &str>(())
        })
        .await
        .unwrap_err();
        assert_eq!(err.failures().len(), 1);
    }
}

both_runtimes! {
    /// A group future polled in one task, then moved to another and awaited there: a task's
    /// failure wakes the task that holds the group now. (A poll by a new task always does the
    /// full work and registers its waker; the quiet path is only for the same task.)
    async fn a_group_moved_to_another_task_is_woken_there() {
        let group = TaskGroup::scope(|tg| async move {
            tg.spawn(async {
                tokio::time::sleep(ms(10)).await;
                Err::<(), _>("boom")
            });
            std::future::pending::<()>().await;
            Ok::<(), &str>(())
        });
        let mut group = Box::pin(group);
        // First polls in this task: the group starts and registers this task's waker.
        for _ in 0..3 {
            let polled =
                std::future::poll_fn(|cx| std::task::Poll::Ready(group.as_mut().poll(cx))).await;
            assert!(polled.is_pending());
            tokio::task::yield_now().await;
        }
        // Then awaited by another task, while this one waits for it without polling the group.
        let moved = tokio::spawn(group);
        let out = tokio::time::timeout(ms(10_000), moved)
            .await
            .expect("the failure woke the task that holds the group now")
            .unwrap();
        assert_eq!(out.unwrap_err().failures().len(), 1);
    }
}
