//! Memory of nested groups dropped inside a long-lived group or scope (core rebuild, item 2).
//!
//! A group dropped inside a scope, a group body or a group child (by `select!`, `timeout`, or
//! an abort of the child) hands its aborted tasks to that owner, which waits for them. The old
//! code kept each of these hand-overs (~1.3 KB) until the owner ended; the new one releases
//! them as soon as they are empty. Live heap is measured with a counting global allocator
//! (per binary, hence this file of its own); the tests take a lock so that they do not run
//! at the same time.

use std::future::{Future, pending};
use std::sync::Mutex;
use std::time::Duration;

use quattro::{TaskGroup, move_on_after};

mod counting_alloc;

use counting_alloc::live;

#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;

/// One test at a time: the counter is per process.
static SERIAL: Mutex<()> = Mutex::new(());

const FIRST: usize = 100;
/// 4,000 drops: the old code grew about 1 KB a drop (4 MB here, twenty times the bound).
const TOTAL: usize = 4_000;
/// Allowed growth of live heap between drop number `FIRST` and drop number `TOTAL`.
const BOUND: isize = 200 * 1024;

/// Lets aborted tasks finish and be freed (on the multi-thread runtime, elsewhere).
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// A nested group with one child that sleeps for ever; never ends on its own.
async fn nested_group() {
    let _ = TaskGroup::scope(|tg| async move {
        tg.spawn(async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        });
        pending::<()>().await;
        Ok::<(), ()>(())
    })
    .await;
}

/// Runs `once` `TOTAL` times; yields live heap after the first `FIRST` and after all.
///
/// Yields to the runtime after each drop, as a long-lived server would: otherwise thousands
/// of aborted tasks wait to run at once and tokio's own queues grow (and keep their capacity).
async fn measure<Fut: Future<Output = ()>>(mut once: impl FnMut() -> Fut) -> (isize, isize) {
    for _ in 0..FIRST {
        once().await;
        tokio::task::yield_now().await;
    }
    settle().await;
    let first = live();
    for _ in FIRST..TOTAL {
        once().await;
        tokio::task::yield_now().await;
    }
    settle().await;
    (first, live())
}

#[track_caller]
fn check((first, last): (isize, isize), what: &str) {
    let growth = last - first;
    assert!(
        growth < BOUND,
        "{what}: live heap grew by {growth} bytes ({} per drop) between drop {FIRST} and \
         drop {TOTAL}, while the enclosing owner still runs",
        growth / (TOTAL - FIRST) as isize
    );
}

fn runtime(multi_thread: bool) -> tokio::runtime::Runtime {
    if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
    }
}

/// Drops a started nested group with `select!` against a ready branch.
async fn drop_by_select() {
    tokio::select! {
        biased;
        _ = nested_group() => unreachable!(),
        _ = std::future::ready(()) => {}
    }
}

/// Drops a started nested group with `tokio::time::timeout` (zero: the group is polled once).
async fn drop_by_timeout() {
    assert!(
        tokio::time::timeout(Duration::ZERO, nested_group())
            .await
            .is_err()
    );
}

fn in_group_body(
    multi_thread: bool,
    drop_one: fn() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    what: &str,
) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let measured = runtime(multi_thread).block_on(async {
        TaskGroup::scope(|tg| async move {
            // The outer group also has a child that runs all along.
            let sleeper = tg.spawn(async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            });
            let measured = measure(drop_one).await;
            sleeper.abort();
            Ok::<_, ()>(measured)
        })
        .await
    });
    let measured = match measured {
        Ok(m) => m,
        Err(e) => panic!("{what}: the outer group failed: {e:?}"),
    };
    check(measured, what);
}

fn in_scope(
    multi_thread: bool,
    drop_one: fn() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    what: &str,
) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let measured = runtime(multi_thread)
        .block_on(move_on_after(Duration::from_secs(3600), measure(drop_one)))
        .expect("the scope ended early");
    check(measured, what);
}

fn in_group_children(
    multi_thread: bool,
    drop_one: fn() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    what: &str,
) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let measured = runtime(multi_thread).block_on(async {
        TaskGroup::scope(|tg| async move {
            // One long-lived child does all the drops.
            let worker = tg.spawn(async move { Ok(measure(drop_one).await) });
            Ok::<_, ()>(worker.await.unwrap())
        })
        .await
        .unwrap()
    });
    check(measured, what);
}

fn select() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(drop_by_select())
}

fn timeout() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(drop_by_timeout())
}

macro_rules! both_runtimes {
    ($(#[doc = $doc:literal])* fn $name:ident($multi:ident) $body:block) => {
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[test]
            fn current_thread_paused() {
                let $multi = false;
                $body
            }

            #[test]
            fn multi_thread() {
                let $multi = true;
                $body
            }
        }
    };
}

both_runtimes! {
    /// Regression (core rebuild, item 2): nested groups dropped by `select!` in the body of a
    /// long-lived group were kept (~1.3 KB each) until the outer group ended.
    fn group_body_dropping_nested_groups_by_select(multi) {
        in_group_body(multi, select, "group body, select!");
    }
}

both_runtimes! {
    /// Regression (core rebuild, item 2): nested groups dropped by `tokio::time::timeout` in
    /// the body of a long-lived group were kept until the outer group ended.
    fn group_body_dropping_nested_groups_by_timeout(multi) {
        in_group_body(multi, timeout, "group body, timeout");
    }
}

both_runtimes! {
    /// Regression (core rebuild, item 2): nested groups dropped by `select!` inside a
    /// long-lived `move_on_after` scope were kept until the scope ended.
    fn scope_dropping_nested_groups_by_select(multi) {
        in_scope(multi, select, "scope, select!");
    }
}

both_runtimes! {
    /// Regression (core rebuild, item 2): nested groups dropped by `timeout` inside a
    /// long-lived scope were kept until the scope ended.
    fn scope_dropping_nested_groups_by_timeout(multi) {
        in_scope(multi, timeout, "scope, timeout");
    }
}

both_runtimes! {
    /// Regression (core rebuild, item 2): nested groups dropped by `select!` in a long-lived
    /// group child were kept until the outer group ended.
    fn group_child_dropping_nested_groups_by_select(multi) {
        in_group_children(multi, select, "group child, select!");
    }
}

both_runtimes! {
    /// Regression (core rebuild, item 2): children of a long-lived group that each run a
    /// nested group and are aborted (`handle.abort()`) left their nested group's hand-over
    /// with the outer group until it ended.
    fn aborted_children_running_nested_groups(multi) {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let measured = runtime(multi).block_on(async {
            TaskGroup::scope(|tg| async move {
                let measured = measure(|| {
                    let tg = tg.clone();
                    async move {
                        let (started, is_started) = tokio::sync::oneshot::channel();
                        let child = tg.spawn(async move {
                            TaskGroup::scope(|tg2| async move {
                                tg2.spawn(async {
                                    tokio::time::sleep(Duration::from_secs(3600)).await;
                                    Ok(())
                                });
                                let _ = started.send(());
                                pending::<()>().await;
                                Ok::<(), ()>(())
                            })
                            .await
                            .map_err(|_| ())
                        });
                        is_started.await.unwrap();
                        child.abort();
                        assert!(child.await.is_err());
                    }
                })
                .await;
                Ok::<_, ()>(measured)
            })
            .await
        });
        check(measured.expect("the outer group failed"), "aborted children");
    }
}

both_runtimes! {
    /// A saturated limited group (its one slot never frees) whose callers queue a task and
    /// then abort it, again and again, holds memory for the tasks that still wait, not for
    /// every aborted one: aborted queue entries are dropped once they are the majority.
    fn saturated_queue_with_aborted_entries_stays_flat(multi) {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let measured = runtime(multi).block_on(async {
            TaskGroup::builder()
                .concurrency_limit(1)
                .scope(|tg| async move {
                    let running = tg.spawn(pending::<Result<(), ()>>());
                    let measured = measure(|| {
                        let queued = tg.spawn(async { Ok::<_, ()>([0u8; 256]) });
                        queued.abort();
                        async move {
                            assert!(queued.await.unwrap_err().is_cancelled());
                        }
                    })
                    .await;
                    running.abort();
                    Ok::<_, ()>(measured)
                })
                .await
                .unwrap()
        });
        check(measured, "saturated queue, queued then aborted");
    }
}

both_runtimes! {
    /// A saturated limited group whose producers wait in `spawn_when_free` and give up (a
    /// timeout around the wait), again and again, holds memory for the producers that still
    /// wait, not for every one that gave up.
    fn saturated_group_with_producers_giving_up_stays_flat(multi) {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let measured = runtime(multi).block_on(async {
            TaskGroup::builder()
                .concurrency_limit(1)
                .scope(|tg| async move {
                    let running = tg.spawn(pending::<Result<(), ()>>());
                    let measured = measure(|| {
                        let tg = tg.clone();
                        async move {
                            let waited = tokio::time::timeout(
                                Duration::from_millis(1),
                                tg.spawn_when_free(async { Ok::<_, ()>([0u8; 256]) }),
                            )
                            .await;
                            assert!(waited.is_err(), "the slot never frees");
                        }
                    })
                    .await;
                    running.abort();
                    Ok::<_, ()>(measured)
                })
                .await
                .unwrap()
        });
        check(measured, "saturated group, producers giving up");
    }
}
