//! Deadlines over futures that keep exhausting tokio's cooperative budget (core rebuild,
//! item 1).
//!
//! A read loop over `tokio::io::repeat(0)` is always ready until the task's coop budget runs
//! out, then returns `Pending` and wakes itself at once: the task never parks, so the paused
//! clock cannot auto-advance. These tests run on the real clock, each on its own runtime in its
//! own thread, with a 5 s bound on a channel: a deadline that never fires makes the test FAIL
//! (and stops the busy loop through a flag) instead of hanging it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use quattro::{TaskGroup, fail_after, move_on_after};
use tokio::io::AsyncReadExt;

const DEADLINE: Duration = Duration::from_millis(50);

/// Reads from an endless reader until `stop` is set (only set when the test already failed,
/// so that a lost deadline does not leave a thread spinning).
async fn busy_read(stop: Arc<AtomicBool>) -> u64 {
    let mut reader = tokio::io::repeat(0);
    let mut buf = [0u8; 64];
    let mut reads = 0u64;
    while !stop.load(Ordering::Relaxed) {
        reader.read_exact(&mut buf).await.unwrap();
        reads += 1;
    }
    reads
}

/// Runs `body` as a task on a fresh runtime (current-thread, or multi-thread with 2 workers)
/// in its own thread; returns its output and the real time it took, or panics after 5 s.
fn guarded<T, Fut>(multi_thread: bool, body: impl FnOnce(Arc<AtomicBool>) -> Fut) -> (T, Duration)
where
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let fut = body(stop.clone());
    let (tx, rx) = std::sync::mpsc::channel();
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
        let start = std::time::Instant::now();
        let out = rt.block_on(async move { tokio::spawn(fut).await.unwrap() });
        let _ = tx.send((out, start.elapsed()));
    });
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(done) => done,
        Err(_) => {
            stop.store(true, Ordering::Relaxed);
            panic!(
                "a {DEADLINE:?} deadline did not fire within 5 s while the inner future kept \
                 exhausting the coop budget"
            );
        }
    }
}

macro_rules! both_runtimes {
    ($(#[doc = $doc:literal])* fn $name:ident($multi:ident) $body:block) => {
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[test]
            fn current_thread() {
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
    /// Regression (core rebuild, item 1): `move_on_after` over a read loop that keeps
    /// exhausting the coop budget never fired (still running after 2 s); it must yield `None`
    /// shortly after its 50 ms deadline.
    fn move_on_after_fires_over_a_busy_read(multi) {
        let (out, took) = guarded(multi, |stop| async move {
            move_on_after(DEADLINE, busy_read(stop)).await
        });
        assert!(out.is_none(), "the busy read ended on its own: {out:?}");
        assert!(took >= DEADLINE, "fired early: {took:?}");
    }
}

both_runtimes! {
    /// Regression (core rebuild, item 1): `fail_after` over a read loop that keeps exhausting
    /// the coop budget never fired; it must yield `Err(Cancelled)` (deadline reached).
    fn fail_after_fires_over_a_busy_read(multi) {
        let (out, took) = guarded(multi, |stop| async move {
            fail_after(DEADLINE, busy_read(stop)).await
        });
        let err = out.expect_err("the busy read ended on its own");
        assert!(err.is_deadline_reached(), "{err:?}");
        assert!(took >= DEADLINE, "fired early: {took:?}");
    }
}

both_runtimes! {
    /// Regression (core rebuild, item 1): a `TaskGroup::scope` whose body does the busy read,
    /// inside `move_on_after`, was never cut; the scope must yield `None` and the group's
    /// sleeping child must be gone.
    fn group_body_busy_read_under_move_on_after(multi) {
        let child_dropped = Arc::new(AtomicBool::new(false));
        let flag = child_dropped.clone();
        let (out, took) = guarded(multi, |stop| async move {
            move_on_after(DEADLINE, async move {
                TaskGroup::scope(|tg| async move {
                    let guard = DropFlag(flag);
                    tg.spawn(async move {
                        let _guard = guard;
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        Ok::<(), ()>(())
                    });
                    Ok::<u64, ()>(busy_read(stop).await)
                })
                .await
                .is_ok()
            })
            .await
        });
        assert_eq!(out, None, "the group ended on its own");
        assert!(took >= DEADLINE, "fired early: {took:?}");
        assert!(child_dropped.load(Ordering::SeqCst), "the group's child outlived the scope");
    }
}

both_runtimes! {
    /// Regression (core rebuild, item 1): a deadline *inside* a group body (the group itself
    /// without one) over the busy read never fired; it must, and the group then ends.
    fn move_on_after_inside_a_group_body_over_a_busy_read(multi) {
        let (out, took) = guarded(multi, |stop| async move {
            TaskGroup::scope(|_tg| async move {
                Ok::<_, ()>(move_on_after(DEADLINE, busy_read(stop)).await)
            })
            .await
            .unwrap()
        });
        assert!(out.is_none(), "the busy read ended on its own: {out:?}");
        assert!(took >= DEADLINE, "fired early: {took:?}");
    }
}

struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// `TaskSet::join_next` and a streaming gather's `next` use the coop budget, like
/// `JoinSet::join_next`: a loop over results that are all ready still runs out of budget (and
/// would yield), so a timer around such a loop can fire.
#[tokio::test]
async fn join_next_and_unordered_next_use_the_coop_budget() {
    TaskGroup::scope(|tg: TaskGroup<std::convert::Infallible>| async move {
        let mut set = tg.task_set();
        for i in 0..1_000u32 {
            set.spawn(async move { Ok(i) });
        }
        while !set.is_empty() && tokio::task::coop::has_budget_remaining() {
            // Let every task finish first, so that all results are ready.
            if set.len() == 1_000 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            set.join_next().await;
        }
        assert!(
            !set.is_empty(),
            "a thousand ready results never used up the budget"
        );
        Ok(())
    })
    .await
    .unwrap();

    let mut items =
        quattro::gather((0..1_000u32).map(|i| async move { Ok::<_, ()>(i) })).unordered();
    items.next().await; // starts every item
    tokio::time::sleep(Duration::from_millis(1)).await; // lets them all finish
    let mut taken = 1;
    while taken < 1_000 && tokio::task::coop::has_budget_remaining() {
        items.next().await;
        taken += 1;
    }
    assert!(
        taken < 1_000,
        "a thousand ready values never used up the budget"
    );
}

/// A gather spawns its input under tokio's coop budget: a large input does not keep the
/// thread for the whole of it in one poll (a timer around it could not fire meanwhile, and a
/// streaming gather would hand out no value before every item was spawned).
#[tokio::test]
async fn a_large_gather_spawns_under_the_coop_budget() {
    let pulled = Arc::new(AtomicUsize::new(0));
    let counted = pulled.clone();
    let items = (0..10_000u32).map(move |i| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, ()>(i) }
    });
    let mut stream = quattro::gather(items).unordered();
    {
        let mut next = std::pin::pin!(stream.next());
        assert!(futures::poll!(next.as_mut()).is_pending());
    }
    let first_poll = pulled.load(Ordering::SeqCst);
    assert!(
        first_poll < 10_000,
        "the whole input was spawned in one poll"
    );
    let mut taken = 0;
    while let Some(item) = stream.next().await {
        item.unwrap();
        taken += 1;
    }
    assert_eq!(taken, 10_000);
}
