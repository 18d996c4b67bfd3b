//! Stress tests (issue 7): many concurrent scopes with moving deadlines, deep nesting of scopes,
//! and children that spawn 100 levels deep. The slow ones are `#[ignore]`d; CI runs them with
//! `cargo test --release --test stress --test stress_memory -- --ignored`.
#![allow(clippy::async_yields_async)]

mod issue7_util;

use std::future::{Future, pending};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use issue7_util::Drops;
use quattro::{CancelScope, GroupError, TaskGroup, current_effective_deadline, move_on_after};
use tokio::time::{Instant, sleep};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A small deterministic generator (xorshift), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// 10,000 scopes run at once (as tasks of one group), each with a deadline that a mover task
/// changes at random while they run: every scope ends by its deadline or by finishing, none
/// is lost, every future is dropped.
async fn concurrent_scopes_with_deadline_changes(seed: u64) {
    const N: usize = 10_000;
    let drops = Drops::new();
    let d = drops.clone();
    let start = Instant::now();
    let (cancelled, finished) = TaskGroup::scope(|tg| async move {
        let scopes: Vec<CancelScope> = (0..N)
            .map(|i| CancelScope::with_timeout(ms(50 + (i as u64 % 50))))
            .collect();
        let mut handles = Vec::with_capacity(N);
        for (i, scope) in scopes.iter().enumerate() {
            let scope = scope.clone();
            let g = d.guard();
            handles.push(tg.spawn(async move {
                let _g = g;
                let work = ms(20 + (i as u64 * 7) % 100);
                let out = scope.move_on(sleep(work)).await;
                Ok::<_, ()>(out.is_none())
            }));
        }
        // The mover: 20 rounds of changes to random scopes, some into the past, some removed.
        let mut rng = Rng(seed);
        for _ in 0..20 {
            sleep(ms(2)).await;
            for _ in 0..1000 {
                let s = &scopes[rng.below(N as u64) as usize];
                match rng.below(4) {
                    0 => s.set_deadline(None),
                    1 => s.set_deadline(Some(Instant::now())),
                    2 => s.cancel(),
                    _ => s.set_deadline(Some(Instant::now() + ms(rng.below(200)))),
                }
            }
        }
        let mut cancelled = 0;
        let mut finished = 0;
        for h in handles {
            if h.await.unwrap() {
                cancelled += 1;
            } else {
                finished += 1;
            }
        }
        Ok::<_, ()>((cancelled, finished))
    })
    .await
    .unwrap();
    assert_eq!(cancelled + finished, N);
    assert!(
        cancelled > 0 && finished > 0,
        "{cancelled} cancelled, {finished} finished"
    );
    assert_eq!(drops.made(), N);
    drops.assert_all_dropped();
    eprintln!(
        "{N} scopes: {cancelled} cancelled, {finished} finished, in {:.2?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_scopes_with_deadline_changes_paused() {
    concurrent_scopes_with_deadline_changes(0x9e37_79b9_7f4a_7c15).await;
    assert_eq!(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stress: real time; run with --release --ignored"]
async fn ten_thousand_scopes_with_deadline_changes_multi_thread() {
    for seed in 1..=5 {
        concurrent_scopes_with_deadline_changes(seed * 0x2545_f491_4f6c_dd1d).await;
    }
}

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// `depth` nested scopes (boxed, so that the stack does not grow with the nesting); scope `k`
/// (0 = outermost) has the deadline `deadline(k)`; the innermost body reports the effective
/// deadline and then waits forever. Returns which scope caught the cancellation.
fn nest(
    k: usize,
    depth: usize,
    deadline: fn(usize) -> Option<Duration>,
    scopes: &mut Vec<CancelScope>,
    base: Instant,
) -> BoxFut<Option<Option<Instant>>> {
    let scope = match deadline(k) {
        Some(d) => CancelScope::with_deadline(base + d),
        None => CancelScope::new(),
    };
    scopes.push(scope.clone());
    if k + 1 == depth {
        return Box::pin(async move {
            scope
                .move_on(async {
                    let seen = current_effective_deadline();
                    pending::<()>().await;
                    seen
                })
                .await
        });
    }
    let inner = nest(k + 1, depth, deadline, scopes, base);
    Box::pin(async move { scope.move_on(inner).await.flatten() })
}

async fn nested_scopes(depth: usize, deadline: fn(usize) -> Option<Duration>) -> usize {
    let base = Instant::now();
    let mut scopes = Vec::new();
    let fut = nest(0, depth, deadline, &mut scopes, base);
    // Run in a task: a worker thread's stack, not the test thread's.
    let out = tokio::spawn(fut).await.unwrap();
    assert!(out.is_none(), "the innermost body never completes");
    let caught: Vec<usize> = (0..depth)
        .filter(|&k| scopes[k].cancelled_caught())
        .collect();
    assert_eq!(caught.len(), 1, "exactly one scope catches: {caught:?}");
    caught[0]
}

#[tokio::test(start_paused = true)]
async fn thousand_nested_scopes_outermost_wins() {
    // Every scope has the same deadline: the outermost claims the tie.
    let caught = nested_scopes(1000, |_| Some(ms(10))).await;
    assert_eq!(caught, 0);
}

#[tokio::test(start_paused = true)]
async fn thousand_nested_scopes_earliest_wins() {
    // Deadlines shrink inwards except the one at 500, which is the earliest.
    let caught = nested_scopes(1000, |k| {
        Some(if k == 500 { ms(1) } else { ms(5000 - k as u64) })
    })
    .await;
    assert_eq!(caught, 500);
    // The innermost sees the earliest deadline, and the outermost cancel still reaches it.
    let base = Instant::now();
    let mut scopes = Vec::new();
    let fut = nest(0, 1000, |k| (k == 700).then(|| ms(3)), &mut scopes, base);
    let outer = scopes[0].clone();
    let task = tokio::spawn(fut);
    tokio::task::yield_now().await;
    outer.cancel();
    assert_eq!(task.await.unwrap(), None);
    assert!(outer.cancelled_caught());
    assert!((1..1000).all(|k| !scopes[k].cancelled_caught()));
}

#[tokio::test(start_paused = true)]
async fn thousand_nested_scopes_innermost_sees_the_minimum() {
    let base = Instant::now();
    let mut scopes = Vec::new();
    let fut = nest(
        0,
        1000,
        |k| Some(ms(10_000 - k as u64 * 3)),
        &mut scopes,
        base,
    );
    let innermost = scopes[999].clone();
    let task = tokio::spawn(fut);
    tokio::task::yield_now().await;
    // Nothing finished: look at the effective deadline through the innermost scope's run.
    assert_eq!(innermost.deadline(), Some(base + ms(10_000 - 999 * 3)));
    let out = task.await.unwrap();
    // The innermost scope has the earliest deadline: it catches, and its body saw it.
    assert_eq!(out, None);
    assert!(innermost.cancelled_caught());
}

/// Each child spawns the next into the same group, `depth` levels; the deepest fails: the
/// failure surfaces once and every level is dropped.
#[tokio::test(start_paused = true)]
async fn children_spawn_100_levels_deep_in_one_group() {
    fn level(
        tg: TaskGroup<usize>,
        k: usize,
        depth: usize,
        drops: Drops,
    ) -> BoxFut<Result<(), usize>> {
        Box::pin(async move {
            let _g = drops.guard();
            if k == depth {
                sleep(ms(1)).await;
                return Err(k);
            }
            tg.spawn(level(tg.clone(), k + 1, depth, drops.clone()));
            sleep(Duration::from_secs(3600)).await;
            Ok(())
        })
    }
    let drops = Drops::new();
    let d = drops.clone();
    let err = TaskGroup::scope(|tg| async move {
        tg.spawn(level(tg.clone(), 1, 100, d));
        Ok(())
    })
    .await
    .unwrap_err();
    assert_eq!(err.errors().collect::<Vec<_>>(), [&100]);
    assert_eq!(drops.made(), 100);
    drops.assert_all_dropped();
    assert_eq!(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        0
    );
}

/// Each child opens its own group and spawns the next level into it, `depth` groups deep: the
/// deepest error surfaces once through every level, and a timeout around the whole tree drops
/// every level.
async fn nested_groups(
    depth: usize,
    fail: bool,
) -> (Drops, Option<Result<(), GroupError<String>>>) {
    fn level(k: usize, depth: usize, fail: bool, drops: Drops) -> BoxFut<Result<(), String>> {
        Box::pin(async move {
            let _g = drops.guard();
            if k == depth {
                sleep(ms(1)).await;
                return if fail {
                    Err(format!("level {k}"))
                } else {
                    pending().await
                };
            }
            TaskGroup::scope(|tg| async move {
                tg.spawn(level(k + 1, depth, fail, drops.clone()));
                Ok(())
            })
            .await
            .map_err(|e: GroupError<String>| {
                assert_eq!(e.failures().len(), 1);
                e.into_failures().pop().unwrap().into_error().unwrap()
            })
        })
    }
    let drops = Drops::new();
    let d = drops.clone();
    // Long enough for the failure even on a loaded machine; short for the cancelled tree.
    let timeout = if fail {
        Duration::from_secs(30)
    } else {
        ms(10)
    };
    let out = move_on_after(
        timeout,
        TaskGroup::scope(|tg| async move {
            tg.spawn(level(1, depth, fail, d));
            Ok(())
        }),
    )
    .await;
    (drops, out)
}

#[tokio::test(start_paused = true)]
async fn groups_nested_100_levels_deep() {
    let (drops, out) = nested_groups(100, true).await;
    let err = out
        .expect("the failure comes before the timeout")
        .unwrap_err();
    assert_eq!(err.errors().collect::<Vec<_>>(), [&"level 100".to_string()]);
    assert_eq!(drops.made(), 100);
    drops.assert_all_dropped();
    let (drops, out) = nested_groups(100, false).await;
    assert!(out.is_none(), "the timeout cancels the tree");
    assert_eq!(drops.made(), 100);
    drops.assert_all_dropped();
    assert_eq!(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_nested_100_levels_deep_multi_thread() {
    for _ in 0..20 {
        let (drops, out) = nested_groups(100, true).await;
        assert!(out.expect("before the timeout").is_err());
        drops.assert_all_dropped();
        let (drops, out) = nested_groups(100, false).await;
        assert!(out.is_none());
        assert_eq!(drops.made(), 100);
        drops.assert_all_dropped();
    }
}

/// A queued task aborted through its handle, which is then dropped, while the group is
/// spawning it for a freed slot: the abort must still be applied. (It was lost when the group
/// saw the handle gone and skipped its check: the aborted task then ran for ever and the
/// group never became idle. The soak hung on it about one run in three.) 2,000,000 queued and
/// aborted tasks while short tasks keep freeing slots on both workers; a lost abort fails the
/// 60 s bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stress: real time; run with --release --ignored"]
async fn aborts_racing_the_start_of_a_queued_task_are_never_lost() {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        TaskGroup::builder().concurrency_limit(4).scope(
            |tg: TaskGroup<std::convert::Infallible>| async move {
                for i in 0..2_000_000u32 {
                    // Short tasks keep the slots churning: they end on both workers, each
                    // end starting the next queued task, while tasks are queued and aborted
                    // here.
                    tg.spawn(async {
                        tokio::task::yield_now().await;
                        Ok(())
                    });
                    let queued = tg.spawn(pending::<Result<(), _>>());
                    queued.abort();
                    drop(queued);
                    if i % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                while !tg.is_empty() {
                    tokio::task::yield_now().await;
                }
                Ok(())
            },
        ),
    )
    .await;
    assert!(
        out.is_ok(),
        "an aborted task kept running: its abort was lost"
    );
    out.unwrap().unwrap();
}

/// `cancel()` from another thread racing a task's failure: the group's error says
/// "cancelled" exactly when its aborted tasks say `CancelReason::Cancelled` (the first cause
/// recorded, under the lock that closes the group, is the one both read).
#[test]
#[ignore = "stress: run with --ignored (release)"]
fn a_cancel_racing_a_failure_gives_one_reason() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(3)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for _ in 0..3_000 {
            let kept: Arc<std::sync::Mutex<Option<quattro::TaskHandle<()>>>> = Arc::default();
            let keep = kept.clone();
            let err = TaskGroup::scope(|tg: TaskGroup<&'static str>| async move {
                *keep.lock().unwrap() = Some(tg.spawn(std::future::pending()));
                let barrier = Arc::new(std::sync::Barrier::new(2));
                let there = barrier.clone();
                let canceller = tg.clone();
                let thread = std::thread::spawn(move || {
                    there.wait();
                    canceller.cancel();
                });
                tg.spawn(async move {
                    barrier.wait();
                    Err::<(), _>("fail")
                });
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
                Ok(())
            })
            .await
            .unwrap_err();
            let pending = kept.lock().unwrap().take().unwrap();
            let reason = pending.await.unwrap_err().cancel_reason();
            assert_eq!(
                reason == Some(quattro::CancelReason::Cancelled),
                err.is_cancelled(),
                "task: {reason:?}, group: {err}"
            );
        }
    });
}
