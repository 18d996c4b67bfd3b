//! Slots before the work: `reserve`, `try_reserve`, `try_spawn`, and their fairness with
//! `spawn_when_free`. Helpers: tests/task_group_util/mod.rs.
#![allow(clippy::async_yields_async)]

#[path = "task_group_util/mod.rs"]
mod util;

use std::convert::Infallible;
use std::future::pending;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quattro::TaskGroup;
use tokio::sync::mpsc;
use tokio::time::sleep;
use util::*;

/// `try_spawn` spawns while a slot is free, hands the future back unpolled when full, and
/// says "closed" once the group finished.
#[tokio::test(start_paused = true)]
async fn try_spawn_full_then_free_then_closed() {
    let polled = Arc::new(AtomicBool::new(false));
    let flag = polled.clone();
    let tg = TaskGroup::builder()
        .concurrency_limit(1)
        .scope(|tg: TaskGroup<Infallible>| async move {
            let first = tg.try_spawn(async { Ok(1) }).unwrap();
            let refused = tg
                .try_spawn(async move {
                    flag.store(true, Ordering::SeqCst);
                    Ok(2)
                })
                .unwrap_err();
            assert!(refused.is_full() && !refused.is_closed());
            assert_eq!(refused.to_string(), "no free slot in the task group");
            assert_eq!(first.await.unwrap(), 1);
            let again = tg.try_spawn(refused.into_inner()).unwrap();
            assert_eq!(again.await.unwrap(), 2);
            Ok(tg.clone())
        })
        .await
        .unwrap();
    assert!(polled.load(Ordering::SeqCst));
    let closed = tg.try_spawn(async { Ok(3) }).unwrap_err();
    assert!(closed.is_closed());
    assert!(tg.try_reserve().unwrap_err().is_closed());
    assert!(tg.reserve().await.unwrap_err().is_closed());
}

/// A waiting `spawn_when_free` producer is served before a later `try_spawn` or
/// `try_reserve`: the slot that frees is granted to it, never taken by the newcomer.
#[tokio::test(start_paused = true)]
async fn try_forms_are_fair_to_waiting_producers() {
    let order = Arc::new(Mutex::new(Vec::new()));
    let log = order.clone();
    TaskGroup::builder()
        .concurrency_limit(1)
        .scope(|tg: TaskGroup<Infallible>| async move {
            tg.spawn(async {
                sleep(ms(10)).await;
                Ok(())
            });
            let producer = tg.clone();
            let waiting_log = log.clone();
            let waiter = tokio::spawn(async move {
                producer
                    .spawn_when_free(async move {
                        waiting_log.lock().unwrap().push("waiter");
                        sleep(ms(10)).await;
                        Ok(())
                    })
                    .await
            });
            tokio::task::yield_now().await; // the producer queues up
            sleep(ms(10)).await; // the first task ends; its slot goes to the producer
            assert!(tg.try_spawn(async { Ok(()) }).unwrap_err().is_full());
            assert!(tg.try_reserve().unwrap_err().is_full());
            waiter.await.unwrap().await.unwrap();
            log.lock().unwrap().push("after");
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(*order.lock().unwrap(), ["waiter", "after"]);
}

/// A reserved slot counts: it holds back queued tasks until the permit is used or dropped,
/// and dropping it starts the next queued task.
#[tokio::test(start_paused = true)]
async fn a_dropped_permit_frees_its_slot() {
    TaskGroup::builder()
        .concurrency_limit(1)
        .scope(|tg: TaskGroup<Infallible>| async move {
            let permit = tg.reserve().await.unwrap();
            assert_eq!(tg.len(), 1);
            let queued = tg.spawn(async { Ok("queued ran") });
            tokio::task::yield_now().await;
            assert!(!queued.is_finished());
            drop(permit);
            assert_eq!(queued.await.unwrap(), "queued ran");
            assert_eq!(tg.len(), 0);
            Ok(())
        })
        .await
        .unwrap();
}

/// Many reservers on both runtimes: never more than `limit` tasks run, every reserved job
/// runs, and the permits waiting when the group ends hold it open until used.
mod reservers_respect_the_limit {
    use super::*;

    both_runtimes! {
        async fn run() {
            let running = Arc::new(AtomicUsize::new(0));
            let peak = Arc::new(AtomicUsize::new(0));
            let done = Arc::new(AtomicUsize::new(0));
            let (r, p, d) = (running.clone(), peak.clone(), done.clone());
            TaskGroup::builder()
                .concurrency_limit(3)
                .scope(|tg: TaskGroup<Infallible>| async move {
                    let mut dispatchers = Vec::new();
                    for _ in 0..4 {
                        let (tg, r, p, d) = (tg.clone(), r.clone(), p.clone(), d.clone());
                        dispatchers.push(tokio::spawn(async move {
                            for _ in 0..25 {
                                let permit = tg.reserve().await.unwrap();
                                let (r, p, d) = (r.clone(), p.clone(), d.clone());
                                permit.spawn(async move {
                                    let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                                    p.fetch_max(now, Ordering::SeqCst);
                                    sleep(ms(1)).await;
                                    r.fetch_sub(1, Ordering::SeqCst);
                                    d.fetch_add(1, Ordering::SeqCst);
                                    Ok(())
                                });
                            }
                        }));
                    }
                    for dispatcher in dispatchers {
                        dispatcher.await.unwrap();
                    }
                    Ok(())
                })
                .await
                .unwrap();
            assert_eq!(done.load(Ordering::SeqCst), 100);
            assert!(peak.load(Ordering::SeqCst) <= 3, "peak {}", peak.load(Ordering::SeqCst));
        }
    }
}

/// The README's dispatcher, with the slot taken before the job: a shutdown that arrives
/// while the dispatcher waits refuses the reservation, and no job taken from the channel is
/// lost (each one taken is run to completion within the grace).
mod dispatcher_loses_no_job_on_shutdown {
    use super::*;

    both_runtimes! {
        async fn run() {
            let (jobs, mut queue) = mpsc::channel::<u32>(64);
            for job in 0..12 {
                jobs.send(job).await.unwrap();
            }
            drop(jobs);
            let taken = Arc::new(Mutex::new(Vec::new()));
            let finished = Arc::new(Mutex::new(Vec::new()));
            let (t, f) = (taken.clone(), finished.clone());
            let out = TaskGroup::builder()
                .concurrency_limit(2)
                .scope(|tg: TaskGroup<Infallible>| async move {
                    while let Ok(permit) = tg.reserve().await {
                        let Some(job) = queue.recv().await else { break };
                        t.lock().unwrap().push(job);
                        let (f, stopper) = (f.clone(), tg.clone());
                        permit.spawn(async move {
                            if job == 4 {
                                // Arrives while the dispatcher waits for a slot.
                                stopper.request_shutdown(Duration::from_secs(60));
                            }
                            sleep(ms(10)).await;
                            f.lock().unwrap().push(job);
                            Ok(())
                        });
                    }
                    Ok(())
                })
                .await;
            assert!(out.is_ok(), "{out:?}");
            let mut taken = taken.lock().unwrap().clone();
            let mut finished = finished.lock().unwrap().clone();
            taken.sort();
            finished.sort();
            assert!(taken.len() < 12, "the shutdown came before every job was taken");
            assert_eq!(taken, finished, "a job taken from the channel was lost");
        }
    }
}

/// A reservation waiting when the group is cancelled is refused, and the group completes.
#[tokio::test(start_paused = true)]
async fn a_waiting_reservation_is_refused_on_cancel() {
    let err = TaskGroup::builder()
        .concurrency_limit(1)
        .scope(|tg: TaskGroup<()>| async move {
            tg.spawn(pending::<Result<(), ()>>());
            let canceller = tg.clone();
            tokio::spawn(async move {
                sleep(ms(5)).await;
                canceller.cancel();
            });
            let refused = tg.reserve().await.unwrap_err();
            assert!(refused.is_closed());
            pending::<()>().await;
            Ok(())
        })
        .await
        .unwrap_err();
    assert!(err.is_cancelled());
}

/// A permit used after the group was cancelled refuses the task: its future is dropped
/// unpolled, and the handle resolves to cancelled.
#[tokio::test(start_paused = true)]
async fn a_permit_used_after_cancel_refuses() {
    let polled = Arc::new(AtomicBool::new(false));
    let dropped = Counter::default();
    let (flag, guard) = (polled.clone(), dropped.guard());
    let err = TaskGroup::scope(|tg: TaskGroup<()>| async move {
        let permit = tg.reserve().await.unwrap();
        tg.cancel();
        let handle = permit.spawn(async move {
            let _guard = guard;
            flag.store(true, Ordering::SeqCst);
            Ok(())
        });
        assert!(handle.await.unwrap_err().is_cancelled());
        Ok(())
    })
    .await
    .unwrap_err();
    assert!(err.is_cancelled());
    assert!(!polled.load(Ordering::SeqCst));
    assert_eq!(dropped.get(), 1);
}

/// A permit reserved before a shutdown request is still honoured: the job taken with it runs.
#[tokio::test(start_paused = true)]
async fn a_permit_reserved_before_shutdown_still_spawns() {
    let out = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
        let permit = tg.reserve().await.unwrap();
        tg.request_shutdown(Duration::from_secs(5));
        assert!(tg.try_reserve().unwrap_err().is_closed());
        Ok(permit.spawn(async { Ok(5) }).await.unwrap())
    })
    .await;
    assert_eq!(out.unwrap(), 5);
}

/// Dropping `reserve()` while it waits gives up the place in line; a slot granted at that
/// moment goes back to the group (the next reserver gets it).
#[tokio::test(start_paused = true)]
async fn a_dropped_reservation_gives_its_slot_back() {
    TaskGroup::builder()
        .concurrency_limit(1)
        .scope(|tg: TaskGroup<Infallible>| async move {
            let first = tg.spawn(async {
                sleep(ms(10)).await;
                Ok(())
            });
            {
                let gave_up = tokio::time::timeout(ms(5), tg.reserve()).await;
                assert!(gave_up.is_err());
            }
            // Granted and dropped in the same instant: the slot is not lost.
            let mut waiting = Box::pin(tg.reserve());
            assert!(futures::poll!(&mut waiting).is_pending());
            first.await.unwrap();
            drop(waiting);
            let permit = tg.try_reserve().expect("the slot came back");
            drop(permit);
            Ok(())
        })
        .await
        .unwrap();
}

/// `SpawnError` travels with `?` into `anyhow` and boxed errors.
#[tokio::test]
async fn spawn_error_travels() {
    async fn full() -> anyhow::Result<()> {
        TaskGroup::builder()
            .concurrency_limit(1)
            .scope(|tg: TaskGroup<Infallible>| async move {
                let _permit = tg.try_reserve().unwrap();
                let err: anyhow::Error = tg.try_reserve().unwrap_err().into();
                assert_eq!(err.to_string(), "no free slot in the task group");
                let boxed: Box<dyn std::error::Error + Send + Sync> =
                    tg.try_spawn(async { Ok(()) }).unwrap_err().into();
                assert_eq!(boxed.to_string(), "no free slot in the task group");
                Ok(())
            })
            .await?;
        Ok(())
    }
    full().await.unwrap();
}
