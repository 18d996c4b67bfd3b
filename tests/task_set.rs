//! `TaskSet`: a group's tasks whose results are taken as they complete (`join_next` and its
//! forms). Helpers: tests/task_group_util/mod.rs.

#[path = "task_group_util/mod.rs"]
mod util;

use std::convert::Infallible;
use std::future::pending;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use quattro::{Failure, TaskGroup};
use tokio::time::sleep;
use util::*;

/// Results come in the order the tasks finish; `None` once the set is empty.
mod results_come_as_tasks_finish {
    use super::*;

    both_runtimes! {
        async fn run() {
            let order = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
                let mut set = tg.task_set();
                for i in [30u64, 10, 20] {
                    set.spawn(async move {
                        sleep(ms(i)).await;
                        Ok(i)
                    });
                }
                let mut order = Vec::new();
                while let Some(v) = set.join_next().await {
                    order.push(v.unwrap());
                }
                assert!(set.is_empty());
                Ok(order)
            })
            .await
            .unwrap();
            if is_paused() {
                assert_eq!(order, [10, 20, 30]);
            } else {
                let mut sorted = order.clone();
                sorted.sort();
                assert_eq!(sorted, [10, 20, 30]);
            }
        }
    }
}

/// Consuming as results come keeps memory at O(limit): the set never holds more than the
/// tasks in flight and the results not yet taken.
#[tokio::test(start_paused = true)]
async fn a_consumer_keeps_the_set_small() {
    let peak = TaskGroup::builder()
        .concurrency_limit(8)
        .scope(|tg: TaskGroup<Infallible>| async move {
            let mut set = tg.task_set();
            let mut peak = 0;
            for i in 0..10_000u32 {
                set.spawn_when_free(async move { Ok(i) }).await;
                peak = peak.max(set.len());
                while let Some(v) = set.try_join_next() {
                    v.unwrap();
                }
            }
            while set.join_next().await.is_some() {}
            Ok(peak)
        })
        .await
        .unwrap();
    assert!(peak <= 9, "set held {peak}");
}

/// Ids: `join_next_with_id` gives the id tokio gave the task.
#[tokio::test]
async fn ids_are_the_tasks_ids() {
    TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
        let mut set = tg.task_set();
        for _ in 0..5 {
            set.spawn(async { Ok(tokio::task::id()) });
        }
        while let Some(r) = set.join_next_with_id().await {
            let (id, inner) = r.unwrap();
            assert_eq!(id, inner);
        }
        Ok(())
    })
    .await
    .unwrap();
}

/// Under `isolate_failures`, a failed task yields a failed `TaskError` with its text and a
/// panicked one a panic; the others go on; the handler sees both.
mod isolated_failures_are_yielded {
    use super::*;

    both_runtimes! {
        async fn run() {
            let handled = Arc::new(AtomicUsize::new(0));
            let count = handled.clone();
            TaskGroup::builder()
                .isolate_failures(move |_: Failure<String>| {
                    count.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
                .scope(|tg| async move {
                    let mut set = tg.task_set();
                    for i in 0..10u32 {
                        set.spawn(async move {
                            match i {
                                3 => Err(format!("bad {i}")),
                                5 => panic!("bug {i}"),
                                _ => Ok(i),
                            }
                        });
                    }
                    let (mut ok, mut failed, mut panicked) = (0, 0, 0);
                    while let Some(r) = set.join_next().await {
                        match r {
                            Ok(_) => ok += 1,
                            Err(e) if e.is_failed() => {
                                assert!(e.to_string().contains("failed: bad 3"), "{e}");
                                failed += 1;
                            }
                            Err(e) => {
                                assert!(e.is_panic(), "{e}");
                                panicked += 1;
                            }
                        }
                    }
                    assert_eq!((ok, failed, panicked), (8, 1, 1));
                    Ok(())
                })
                .await
                .unwrap();
            assert_eq!(handled.load(Ordering::SeqCst), 2);
        }
    }
}

/// Under the default policy a failure still cancels the group (and the body holding the set),
/// and the error reaches the caller.
#[tokio::test(start_paused = true)]
async fn a_failure_cancels_the_group_by_default() {
    let err = TaskGroup::scope(|tg| async move {
        let mut set = tg.task_set::<()>();
        set.spawn(pending());
        set.spawn(async {
            sleep(ms(5)).await;
            Err("broke")
        });
        while set.join_next().await.is_some() {}
        Ok(())
    })
    .await
    .unwrap_err();
    assert_eq!(err.errors().collect::<Vec<_>>(), [&"broke"]);
}

/// `abort_all` cancels the running and queued tasks; each still yields a cancelled result.
/// Dropping the set aborts what it did not yield, and the group waits for their drops.
mod abort_all_and_drop_abort {
    use super::*;

    both_runtimes! {
        async fn run() {
            let dropped = Counter::default();
            let guards = dropped.clone();
            TaskGroup::builder()
                .concurrency_limit(2)
                .scope(|tg: TaskGroup<Infallible>| async move {
                    let mut set = tg.task_set::<()>();
                    for _ in 0..5 {
                        let guard = guards.guard();
                        set.spawn(async move {
                            let _guard = guard;
                            pending().await
                        });
                    }
                    set.abort_all();
                    let mut cancelled = 0;
                    while let Some(r) = set.join_next().await {
                        assert!(r.unwrap_err().is_cancelled());
                        cancelled += 1;
                    }
                    assert_eq!(cancelled, 5);

                    let mut set = tg.task_set::<()>();
                    for _ in 0..3 {
                        let guard = guards.guard();
                        set.spawn(async move {
                            let _guard = guard;
                            pending().await
                        });
                    }
                    drop(set);
                    Ok(())
                })
                .await
                .unwrap();
            assert_eq!(dropped.get(), 8);
        }
    }
}

/// `try_join_next` never waits; `join_next` is cancel safe in a `select!`.
#[tokio::test(start_paused = true)]
async fn join_next_is_cancel_safe() {
    TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
        let mut set = tg.task_set();
        for i in 0..20u64 {
            set.spawn(async move {
                sleep(ms(i % 3)).await;
                Ok(i)
            });
        }
        assert!(set.try_join_next().is_none());
        let mut got = Vec::new();
        loop {
            tokio::select! {
                r = set.join_next() => match r {
                    Some(r) => got.push(r.unwrap()),
                    None => break,
                },
                _ = sleep(ms(1)) => {}
            }
        }
        got.sort();
        assert_eq!(got, (0..20).collect::<Vec<_>>());
        Ok(())
    })
    .await
    .unwrap();
}

/// Spawning into a closed group: the set yields a cancelled result, never hangs.
#[tokio::test]
async fn a_closed_group_yields_cancelled() {
    let tg = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move { Ok(tg.clone()) })
        .await
        .unwrap();
    let mut set = tg.task_set();
    set.spawn(async { Ok(1) });
    assert!(set.join_next().await.unwrap().unwrap_err().is_cancelled());
    assert!(set.join_next().await.is_none());
    assert!(set.try_spawn(async { Ok(2) }).unwrap_err().is_closed());
}

/// A future whose destructor panics; ready at once with `1`, or never.
struct PanicOnDrop {
    ready: bool,
}

impl std::future::Future for PanicOnDrop {
    type Output = Result<u32, String>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        if self.ready {
            std::task::Poll::Ready(Ok(1))
        } else {
            std::task::Poll::Pending
        }
    }
}

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("destructor bug");
        }
    }
}

/// Destructors that panic (of a finished task's future, and of an aborted one) never leave
/// the set waiting: the finished one yields its value and the aborted one a cancellation, as
/// their handles would; the group's handler gets both panics; the set ends.
mod panicking_destructors_never_hang_the_set {
    use super::*;

    both_runtimes! {
        async fn run() {
            let handled = Arc::new(AtomicUsize::new(0));
            let count = handled.clone();
            TaskGroup::builder()
                .isolate_failures(move |failure: Failure<String>| {
                    assert!(failure.is_panic(), "{failure}");
                    count.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
                .scope(|tg| async move {
                    let mut set = tg.task_set();
                    set.spawn(PanicOnDrop { ready: true });
                    set.spawn(PanicOnDrop { ready: false });
                    // Finished, then its destructor panicked: the value comes, as through a
                    // handle, and the panic goes to the group (its handler).
                    assert_eq!(set.join_next().await.unwrap().unwrap(), 1);
                    set.abort_all();
                    let second = set.join_next().await.unwrap().unwrap_err();
                    assert!(second.is_cancelled(), "{second}");
                    assert!(set.join_next().await.is_none());
                    Ok(())
                })
                .await
                .unwrap();
            assert_eq!(handled.load(Ordering::SeqCst), 2);
        }
    }
}

/// A set moved to another task between polls, and a group that churns through many sets:
/// results still arrive, and nothing is kept per finished task.
mod moved_and_churned {
    use super::*;

    both_runtimes! {
        async fn run() {
            TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
                for round in 0..200u64 {
                    let mut set = tg.task_set();
                    for i in 0..10 {
                        set.spawn(async move {
                            tokio::task::yield_now().await;
                            Ok(round * 10 + i)
                        });
                    }
                    let first = set.join_next().await.unwrap().unwrap();
                    assert!(first / 10 == round);
                    // Finish it in another task.
                    let rest = tokio::spawn(async move {
                        let mut n = 1;
                        while let Some(v) = set.join_next().await {
                            v.unwrap();
                            n += 1;
                        }
                        n
                    });
                    assert_eq!(rest.await.unwrap(), 10);
                }
                assert!(tg.is_empty());
                Ok(())
            })
            .await
            .unwrap();
        }
    }
}

/// A result is yielded once the group counted its task out, as a `JoinSet` + `Semaphore`
/// permit would be released: right after `join_next`, the slot is free for `try_spawn`.
mod a_joined_task_has_freed_its_slot {
    use super::*;

    both_runtimes! {
        async fn run() {
            TaskGroup::builder()
                .concurrency_limit(1)
                .scope(|tg: TaskGroup<Infallible>| async move {
                    let mut set = tg.task_set();
                    for i in 0..2_000u32 {
                        set.try_spawn(async move {
                            tokio::task::yield_now().await;
                            Ok(i)
                        })
                        .expect("the slot of the task joined last is free");
                        assert_eq!(set.join_next().await.unwrap().unwrap(), i);
                        assert!(tg.is_empty());
                    }
                    Ok(())
                })
                .await
                .unwrap();
        }
    }
}

/// `try_join_next` takes a result that is ready even when the caller's coop budget is spent
/// (as `JoinSet::try_join_next` does), and leaves the waker `poll_join_next` registered in
/// place: a task that polled, then tried, is still woken when a result comes.
mod try_join_next_neither_starves_nor_steals_the_waker {
    use super::*;

    both_runtimes! {
        async fn run() {
            TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
                // Ready result, budget spent.
                let mut set = tg.task_set();
                set.spawn(async { Ok(1u32) });
                eventually(|| tg.is_empty()).await;
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                while tokio::task::coop::has_budget_remaining() {
                    tx.send(()).unwrap();
                    rx.recv().await;
                }
                assert_eq!(set.try_join_next().unwrap().unwrap(), 1);

                // A waker registered by `poll_join_next`, then a `try_join_next`: the result
                // still wakes the task (a sibling keeps the group busy, so the group's own
                // wake-ups don't hide a lost one).
                tg.spawn(async {
                    sleep(NEVER).await;
                    Ok(0)
                });
                set.spawn(async {
                    sleep(ms(10)).await;
                    Ok(2)
                });
                let start = tokio::time::Instant::now();
                let mut tried = false;
                let got = std::future::poll_fn(|cx| match set.poll_join_next(cx) {
                    std::task::Poll::Ready(v) => std::task::Poll::Ready(v),
                    std::task::Poll::Pending => {
                        if !tried {
                            tried = true;
                            assert!(set.try_join_next().is_none());
                        }
                        std::task::Poll::Pending
                    }
                });
                let got = tokio::time::timeout(ms(5_000), got)
                    .await
                    .expect("the result woke the task");
                assert_eq!(got.unwrap().unwrap(), 2);
                assert!(start.elapsed() < ms(4_000));
                tg.cancel();
                Ok(())
            })
            .await
            .unwrap_err();
        }
    }
}

/// Queued tasks whose destructors panic as `abort_all` drops them: every task is still
/// aborted, each panic is that task's failure (the handler gets it), and the set ends.
mod abort_all_survives_queued_destructors_that_panic {
    use super::*;

    both_runtimes! {
        async fn run() {
            let handled = Arc::new(AtomicUsize::new(0));
            let count = handled.clone();
            TaskGroup::builder()
                .concurrency_limit(1)
                .isolate_failures(move |failure: Failure<String>| {
                    assert!(failure.is_panic(), "{failure}");
                    count.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
                .scope(|tg| async move {
                    let mut set = tg.task_set();
                    set.spawn(async {
                        pending::<()>().await;
                        Ok(0)
                    });
                    set.spawn(PanicOnDrop { ready: false }); // queued
                    set.spawn(PanicOnDrop { ready: false }); // queued
                    set.spawn(async {
                        pending::<()>().await;
                        Ok(0)
                    }); // queued
                    set.abort_all();
                    let mut cancelled = 0;
                    while let Some(out) = set.join_next().await {
                        assert!(out.unwrap_err().is_cancelled());
                        cancelled += 1;
                    }
                    assert_eq!(cancelled, 4);
                    Ok(())
                })
                .await
                .unwrap();
            assert_eq!(handled.load(Ordering::SeqCst), 2);
        }
    }
}

/// A spawn the group refuses, whose future's destructor panics: the panic reaches the caller,
/// and the set does not count a task that never came (`join_next` does not wait for it).
#[tokio::test]
async fn a_refused_spawn_whose_destructor_panics_is_not_counted() {
    let tg = TaskGroup::scope(|tg: TaskGroup<String>| async move { Ok(tg.clone()) })
        .await
        .unwrap();
    let mut set = tg.task_set();
    let spawned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        set.spawn(PanicOnDrop { ready: false });
    }));
    assert!(
        spawned.is_err(),
        "the destructor's panic reaches the caller"
    );
    assert_eq!(set.len(), 0);
    let next = tokio::time::timeout(ms(1_000), set.join_next()).await;
    assert!(next.expect("join_next does not hang").is_none());
}

/// A set that only spawns and detaches keeps nothing per task: the detached tasks' notices
/// go to a list that goes with them.
#[tokio::test]
async fn detaching_keeps_the_set_small() {
    TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
        let mut set = tg.task_set();
        for _ in 0..100 {
            for i in 0..100u32 {
                set.spawn(async move { Ok(i) });
            }
            set.detach_all();
            eventually(|| tg.is_empty()).await;
        }
        let debug = format!("{set:?}");
        assert!(debug.contains("len: 0, ended: 0"), "{debug}");
        Ok(())
    })
    .await
    .unwrap();
}
