//! `gather`, `gather_settled`, `gather!` and `gather_settled!`: a port of the Python suite's
//! `test_gather.py`, plus the Rust-only promises (input order, lazy limited pulling, drop
//! paths on both runtimes, deadlines, panics, `Send`).
//!
//! Drop-path and timing tests run twice: on the current-thread runtime with the paused clock,
//! and on a two-worker multi-thread runtime with real time and tiny durations, where they
//! assert what happened, never how long it took.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use futures::FutureExt;
use quattro::gather::{Gather, GatherSettled};
use quattro::{
    CancelScope, current_effective_deadline, fail_after, gather, gather_settled, move_on_after,
};
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep};

struct DropCount(Arc<AtomicUsize>);
impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

type BoxFut<T, E = &'static str> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// A shared counter that hands out drop guards.
#[derive(Clone, Default)]
struct Counter(Arc<AtomicUsize>);

impl Counter {
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    /// Increments; returns the new value.
    fn inc(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn dec(&self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }

    fn guard(&self) -> DropCount {
        DropCount(self.0.clone())
    }

    /// A guard whose destructor takes a little while before it counts, so that a caller that
    /// returned without waiting for the drop would see a short count.
    fn slow_guard(&self) -> SlowDrop {
        SlowDrop(self.0.clone())
    }
}

struct SlowDrop(Arc<AtomicUsize>);
impl Drop for SlowDrop {
    fn drop(&mut self) {
        std::thread::sleep(Duration::from_millis(2));
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

async fn yields(n: usize) {
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
}

/// Waits until `cond` holds: on the current-thread runtime a couple of yields must be enough
/// (the runtime then has run every task that was ready); on the multi-thread runtime the
/// workers get up to about a second. Returns the final value of `cond`.
async fn settle_until(multi: bool, cond: impl Fn() -> bool) -> bool {
    if !multi {
        yields(3).await;
        return cond();
    }
    for _ in 0..1_000 {
        if cond() {
            return true;
        }
        tokio::task::yield_now().await;
        sleep(Duration::from_millis(1)).await;
    }
    cond()
}

/// An item that never finishes (until it is dropped).
fn forever<T: Send + 'static>(guard: impl Send + 'static) -> BoxFut<T> {
    Box::pin(async move {
        let _g = guard;
        std::future::pending::<()>().await;
        unreachable!()
    })
}

/// Panics with a `&'static str` payload; typed so that it can end any item.
fn explode<T>(msg: &'static str) -> T {
    std::panic::panic_any(msg)
}

fn sorted<T: Ord + Clone>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut v: Vec<T> = items.into_iter().collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------------
// starter tests (kept as they were)
// ---------------------------------------------------------------------------------------------

#[test]
fn empty_needs_no_runtime() {
    let empty: Vec<std::future::Ready<Result<(), ()>>> = Vec::new();
    let out = futures::executor::block_on(gather(empty));
    assert_eq!(out.unwrap(), Vec::<()>::new());
}

#[tokio::test(start_paused = true)]
async fn input_order_under_reversed_completion() {
    let v = gather((0..10u64).map(|i| async move {
        sleep(Duration::from_millis(100 - i * 10)).await;
        Ok::<_, ()>(i)
    }))
    .await
    .unwrap();
    assert_eq!(v, (0..10).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn error_cancels_the_rest() {
    let drops = Arc::new(AtomicUsize::new(0));
    let futs: Vec<BoxFut<u32>> = (0..5u32)
        .map(|i| {
            let g = DropCount(drops.clone());
            Box::pin(async move {
                let _g = g;
                if i == 2 {
                    sleep(Duration::from_millis(10)).await;
                    return Err("boom");
                }
                sleep(Duration::from_secs(10)).await;
                Ok(i)
            }) as _
        })
        .collect();
    let err = gather(futs).await.unwrap_err();
    assert_eq!(err.errors().collect::<Vec<_>>(), [&"boom"]);
    assert_eq!(drops.load(Ordering::SeqCst), 5);
}

#[tokio::test(start_paused = true)]
async fn limited_is_lazy_and_bounded() {
    let pulled = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let (p, r, m) = (pulled.clone(), running.clone(), max.clone());
    let iter = (0..100_000u64).map(move |i| {
        p.fetch_add(1, Ordering::SeqCst);
        let (r, m) = (r.clone(), m.clone());
        async move {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            tokio::task::yield_now().await;
            r.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, ()>(i)
        }
    });
    let v = gather(iter).concurrency_limit(16).await.unwrap();
    assert_eq!(v.len(), 100_000);
    assert_eq!(max.load(Ordering::SeqCst), 16);
    assert_eq!(pulled.load(Ordering::SeqCst), 100_000);
}

#[tokio::test(start_paused = true)]
async fn settled_keeps_positions() {
    let slots =
        gather_settled((0..3).map(|i| async move { if i == 1 { Err("bad") } else { Ok(i) } }))
            .await;
    assert_eq!(slots[0].as_ref().ok(), Some(&0));
    assert!(slots[1].as_ref().unwrap_err().is_failed());
    assert_eq!(slots[2].as_ref().ok(), Some(&2));
}

#[tokio::test]
async fn tuple_macro() {
    let (a, b, c) = quattro::gather!(async { Ok::<_, ()>(1u8) }, async { Ok("s") }, async {
        Ok(2.5f64)
    })
    .await
    .unwrap();
    assert_eq!((a, b, c), (1, "s", 2.5));
}

// ---------------------------------------------------------------------------------------------
// port of test_gather.py
// ---------------------------------------------------------------------------------------------

/// test_empty: an empty gather works (inside a runtime too), strict and settled.
#[tokio::test]
async fn py_empty() {
    let none: Vec<BoxFut<u8>> = Vec::new();
    assert_eq!(gather(none).await.unwrap(), Vec::<u8>::new());
    let none: Vec<BoxFut<u8>> = Vec::new();
    assert!(gather_settled(none).await.is_empty());
    let none: Vec<BoxFut<u8>> = Vec::new();
    assert!(gather(none).concurrency_limit(3).await.unwrap().is_empty());
}

/// test_simple_gather.
#[tokio::test(start_paused = true)]
async fn py_simple_gather() {
    let test = || async {
        sleep(Duration::from_millis(10)).await;
        Ok::<_, ()>(1)
    };
    assert_eq!(gather([test(), test()]).await.unwrap(), [1, 1]);
}

/// test_simple_gather_exceptions: settled with no error.
#[tokio::test(start_paused = true)]
async fn py_simple_gather_settled() {
    let test = || async {
        sleep(Duration::from_millis(10)).await;
        Ok::<_, ()>(1)
    };
    let slots = gather_settled([test(), test()]).await;
    assert_eq!(slots.len(), 2);
    assert!(slots.iter().all(|s| *s.as_ref().unwrap() == 1));
}

/// test_gather_with_error: the error cancels the two others (counted with drop guards) and is
/// the one failure in the group error.
async fn py_gather_with_error(multi: bool) {
    let cancelled = Counter::default();
    let test = |c: &Counter| -> BoxFut<u32> {
        let g = c.slow_guard();
        Box::pin(async move {
            let _g = g;
            sleep(Duration::from_secs(100)).await;
            Ok(1)
        })
    };
    let error: BoxFut<u32> = Box::pin(async {
        sleep(Duration::from_millis(5)).await;
        Err("ValueError")
    });
    let err = gather([test(&cancelled), test(&cancelled), error])
        .await
        .unwrap_err();
    // Counted right away: a failure returns only after every sibling was dropped.
    assert_eq!(cancelled.get(), 2);
    assert_eq!(err.failures().len(), 1);
    assert_eq!(err.errors().collect::<Vec<_>>(), [&"ValueError"]);
    assert!(!err.is_cancelled());
    assert!(!err.has_panic());
    assert!(settle_until(multi, || alive_tasks() == 0).await);
}

#[tokio::test(start_paused = true)]
async fn py_gather_with_error_current_thread() {
    py_gather_with_error(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_gather_with_error_multi_thread() {
    py_gather_with_error(true).await;
}

/// test_with_error_return_excs: the error takes its item's slot; the others keep theirs.
#[tokio::test(start_paused = true)]
async fn py_with_error_settled() {
    let test = || -> BoxFut<u32> {
        Box::pin(async {
            sleep(Duration::from_millis(10)).await;
            Ok(1)
        })
    };
    let error: BoxFut<u32> = Box::pin(async {
        sleep(Duration::from_millis(5)).await;
        Err("ValueError")
    });
    let mut slots = gather_settled([test(), test(), error]).await.into_iter();
    assert_eq!(slots.next().unwrap().unwrap(), 1);
    assert_eq!(slots.next().unwrap().unwrap(), 1);
    let err = slots.next().unwrap().unwrap_err();
    assert!(err.is_failed() && !err.is_cancelled() && !err.is_panic());
    assert_eq!(err.into_error(), Some("ValueError"));
    assert!(slots.next().is_none());
}

/// An error in the middle of a settled gather cancels nothing: every other item finishes.
#[tokio::test(start_paused = true)]
async fn settled_error_in_the_middle_cancels_nothing() {
    let finished = Counter::default();
    let slots = gather_settled((0..7u32).map(|i| {
        let finished = finished.clone();
        async move {
            if i == 3 {
                return Err(format!("bad {i}"));
            }
            sleep(Duration::from_millis(10 * u64::from(7 - i))).await;
            finished.inc();
            Ok(i * 10)
        }
    }))
    .await;
    assert_eq!(finished.get(), 6);
    for (i, slot) in slots.into_iter().enumerate() {
        if i == 3 {
            assert_eq!(slot.unwrap_err().into_error().as_deref(), Some("bad 3"));
        } else {
            assert_eq!(slot.unwrap(), i as u32 * 10);
        }
    }
}

/// test_parent_cancelled (strict and settled): the caller is cancelled while the items run;
/// both items are dropped, and no result is produced.
async fn py_parent_cancelled(multi: bool, settled: bool) {
    let cancelled = Counter::default();
    let test = |c: &Counter| {
        let g = c.slow_guard();
        async move {
            let _g = g;
            sleep(Duration::from_secs(100)).await;
            Ok::<_, ()>(1)
        }
    };
    let items = [test(&cancelled), test(&cancelled)];
    let res = if settled {
        move_on_after(Duration::from_millis(1), gather_settled(items))
            .await
            .map(|_| ())
    } else {
        move_on_after(Duration::from_millis(1), gather(items))
            .await
            .map(|_| ())
    };
    assert!(res.is_none());
    assert_eq!(cancelled.get(), 2);
    assert!(settle_until(multi, || alive_tasks() == 0).await);
}

#[tokio::test(start_paused = true)]
async fn py_parent_cancelled_current_thread() {
    py_parent_cancelled(false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_parent_cancelled_multi_thread() {
    py_parent_cancelled(true, false).await;
}

#[tokio::test(start_paused = true)]
async fn py_parent_cancelled_settled_current_thread() {
    py_parent_cancelled(false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_parent_cancelled_settled_multi_thread() {
    py_parent_cancelled(true, true).await;
}

/// The closest analog of Python's `current.cancel()`: the task awaiting the gather is aborted.
#[tokio::test(start_paused = true)]
async fn py_parent_task_aborted() {
    let cancelled = Counter::default();
    let started = Counter::default();
    let items: Vec<_> = (0..2)
        .map(|_| {
            let g = cancelled.guard();
            let started = started.clone();
            async move {
                let _g = g;
                started.inc();
                sleep(Duration::from_secs(100)).await;
                Ok::<_, ()>(1)
            }
        })
        .collect();
    let parent = tokio::spawn(gather(items));
    sleep(Duration::from_millis(1)).await;
    assert_eq!(started.get(), 2);
    parent.abort();
    assert!(parent.await.unwrap_err().is_cancelled());
    assert!(settle_until(false, || cancelled.get() == 2).await);
    assert!(settle_until(false, || alive_tasks() == 0).await);
}

/// test_gather_concurrency_limit: a running / max-running counter.
#[tokio::test(start_paused = true)]
async fn py_gather_concurrency_limit() {
    let running = Counter::default();
    let max = Arc::new(AtomicUsize::new(0));
    let items = (0..5u32).map(|i| {
        let (running, max) = (running.clone(), max.clone());
        async move {
            max.fetch_max(running.inc(), Ordering::SeqCst);
            sleep(Duration::from_millis(10)).await;
            running.dec();
            Ok::<_, ()>(i)
        }
    });
    assert_eq!(
        gather(items).concurrency_limit(2).await.unwrap(),
        [0, 1, 2, 3, 4]
    );
    assert_eq!(max.load(Ordering::SeqCst), 2);
    assert_eq!(running.get(), 0);
}

// ---------------------------------------------------------------------------------------------
// order and the concurrency limit
// ---------------------------------------------------------------------------------------------

/// Results keep input order on real threads too, with completions in reverse order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_order_under_reversed_completion_multi_thread() {
    let v = gather((0..10u64).map(|i| async move {
        sleep(Duration::from_millis(2 * (10 - i))).await;
        Ok::<_, ()>(i)
    }))
    .await
    .unwrap();
    assert_eq!(v, (0..10).collect::<Vec<_>>());
}

/// Input order holds with a limit, when later items finish before earlier ones.
#[tokio::test(start_paused = true)]
async fn input_order_with_limit() {
    let v = gather((0..50u64).map(|i| async move {
        sleep(Duration::from_millis((i * 37) % 11)).await;
        Ok::<_, ()>(i)
    }))
    .concurrency_limit(7)
    .await
    .unwrap();
    assert_eq!(v, (0..50).collect::<Vec<_>>());
}

/// A limit of 1 runs the items strictly one after the other, in input order.
async fn limit_one_is_sequential(multi: bool) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let items = (0..8u64).map(|i| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push(('s', i));
            // Later items are quicker: only the limit keeps them in order.
            if multi {
                tokio::task::yield_now().await;
            }
            sleep(Duration::from_millis(8 - i)).await;
            log.lock().unwrap().push(('e', i));
            Ok::<_, ()>(i)
        }
    });
    let v = gather(items).concurrency_limit(1).await.unwrap();
    assert_eq!(v, (0..8).collect::<Vec<_>>());
    let expected: Vec<_> = (0..8).flat_map(|i| [('s', i), ('e', i)]).collect();
    assert_eq!(*log.lock().unwrap(), expected);
}

#[tokio::test(start_paused = true)]
async fn limit_one_is_sequential_current_thread() {
    limit_one_is_sequential(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_one_is_sequential_multi_thread() {
    limit_one_is_sequential(true).await;
}

/// 100,000 items with limit 16 on real threads: all complete, at most 16 at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_with_limit_16_multi_thread() {
    let running = Counter::default();
    let max = Arc::new(AtomicUsize::new(0));
    let (r, m) = (running.clone(), max.clone());
    let iter = (0..100_000u64).map(move |i| {
        let (r, m) = (r.clone(), m.clone());
        async move {
            m.fetch_max(r.inc(), Ordering::SeqCst);
            tokio::task::yield_now().await;
            r.dec();
            Ok::<_, ()>(i)
        }
    });
    let v = gather(iter).concurrency_limit(16).await.unwrap();
    assert_eq!(v.len(), 100_000);
    assert!(v.iter().enumerate().all(|(i, &x)| i as u64 == x));
    let max = max.load(Ordering::SeqCst);
    assert!((1..=16).contains(&max), "max running {max}");
    assert_eq!(running.get(), 0);
}

/// The iterator is never pulled more than `limit` items ahead of the completions: checked at
/// every `next()` call, and stepped one completion at a time (completing the most recently
/// started item first, so it is the freed slot that counts, not the position).
async fn pulls_follow_completions(multi: bool) {
    const N: usize = 12;
    const LIMIT: usize = 3;
    let pulled = Counter::default();
    let completed = Counter::default();
    let violations = Counter::default();
    let senders: Arc<Mutex<Vec<Option<oneshot::Sender<()>>>>> = Arc::default();
    let iter = {
        let (pulled, completed, violations, senders) = (
            pulled.clone(),
            completed.clone(),
            violations.clone(),
            senders.clone(),
        );
        (0..N).map(move |i| {
            let n = pulled.inc();
            if n > completed.get() + LIMIT {
                violations.inc();
            }
            let (tx, rx) = oneshot::channel();
            senders.lock().unwrap().push(Some(tx));
            let completed = completed.clone();
            async move {
                rx.await.expect("the test completes every item");
                completed.inc();
                Ok::<_, ()>(i)
            }
        })
    };
    let task = tokio::spawn(gather(iter).concurrency_limit(LIMIT));
    assert!(settle_until(multi, || pulled.get() == LIMIT).await);
    for step in 1..=N {
        let tx = {
            let mut senders = senders.lock().unwrap();
            let last = senders.iter().rposition(Option::is_some).unwrap();
            senders[last].take().unwrap()
        };
        tx.send(()).unwrap();
        let expected = (step + LIMIT).min(N);
        assert!(
            settle_until(multi, || completed.get() == step
                && pulled.get() == expected)
            .await,
            "step {step}: completed {}, pulled {} (expected {expected})",
            completed.get(),
            pulled.get(),
        );
        assert_eq!(
            violations.get(),
            0,
            "pulled ahead of the limit at step {step}"
        );
    }
    assert_eq!(task.await.unwrap().unwrap(), (0..N).collect::<Vec<_>>());
    assert_eq!(pulled.get(), N);
    assert_eq!(violations.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn pulls_follow_completions_current_thread() {
    pulls_follow_completions(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_follow_completions_multi_thread() {
    pulls_follow_completions(true).await;
}

/// With an endless iterator, a failure stops the pulling: the gather returns, and at most
/// `limit` items beyond the completions were ever pulled, each of them dropped.
#[tokio::test(start_paused = true)]
async fn failure_stops_pulling_an_endless_iterator() {
    const LIMIT: usize = 4;
    let pulled = Counter::default();
    let drops = Counter::default();
    let iter = {
        let (pulled, drops) = (pulled.clone(), drops.clone());
        (0u64..).map(move |i| -> BoxFut<u64> {
            pulled.inc();
            let g = drops.guard();
            Box::pin(async move {
                let _g = g;
                match i {
                    0..10 => {
                        sleep(Duration::from_millis(1)).await;
                        Ok(i)
                    }
                    10 => Err("ten"),
                    _ => {
                        std::future::pending::<()>().await;
                        unreachable!()
                    }
                }
            })
        })
    };
    let err = gather(iter).concurrency_limit(LIMIT).await.unwrap_err();
    assert_eq!(err.errors().collect::<Vec<_>>(), [&"ten"]);
    // 10 successes + 1 failure completed; nothing more than LIMIT ahead of that.
    assert!(pulled.get() <= 11 + LIMIT, "pulled {}", pulled.get());
    assert_eq!(drops.get(), pulled.get());
}

/// `gather_settled` with a limit keeps every slot at its input position.
#[tokio::test(start_paused = true)]
async fn settled_with_limit_keeps_positions() {
    let running = Counter::default();
    let max = Arc::new(AtomicUsize::new(0));
    let slots = gather_settled((0..30u32).map(|i| {
        let (running, max) = (running.clone(), max.clone());
        async move {
            max.fetch_max(running.inc(), Ordering::SeqCst);
            sleep(Duration::from_millis(u64::from((i * 7) % 5))).await;
            running.dec();
            if i % 4 == 1 { Err(i) } else { Ok(i * 2) }
        }
    }))
    .concurrency_limit(3)
    .await;
    assert_eq!(slots.len(), 30);
    assert_eq!(max.load(Ordering::SeqCst), 3);
    for (i, slot) in slots.into_iter().enumerate() {
        let i = i as u32;
        match slot {
            Ok(v) => assert_eq!(v, i * 2),
            Err(e) => {
                assert_eq!(i % 4, 1);
                assert_eq!(e.into_error(), Some(i));
            }
        }
    }
}

#[test]
#[should_panic(expected = "concurrency_limit must be at least 1")]
fn limit_zero_panics() {
    let items: Vec<BoxFut<u8>> = Vec::new();
    drop(gather(items).concurrency_limit(0));
}

#[test]
#[should_panic(expected = "concurrency_limit must be at least 1")]
fn settled_limit_zero_panics() {
    let items: Vec<BoxFut<u8>> = Vec::new();
    drop(gather_settled(items).concurrency_limit(0));
}

// ---------------------------------------------------------------------------------------------
// failures
// ---------------------------------------------------------------------------------------------

/// Two items failing in the same scheduler tick: both errors are reported, and the others
/// are dropped before the gather returns.
#[tokio::test(start_paused = true)]
async fn two_errors_in_one_tick_current_thread() {
    let drops = Counter::default();
    let fail = |name: &'static str| -> BoxFut<u8> {
        Box::pin(async move {
            sleep(Duration::from_millis(10)).await;
            Err(name)
        })
    };
    let items = vec![
        forever(drops.guard()),
        fail("a"),
        forever(drops.guard()),
        fail("b"),
        forever(drops.guard()),
    ];
    let err = gather(items).await.unwrap_err();
    assert_eq!(sorted(err.errors().copied()), ["a", "b"]);
    assert_eq!(err.failures().len(), 2);
    assert_eq!(drops.get(), 3);
}

/// The same on real threads: the two failing items meet at a barrier (in `block_in_place`),
/// so neither can return before the other is past its last await point, and no abort can
/// stop the second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_errors_in_one_tick_multi_thread() {
    let drops = Counter::default();
    let barrier = Arc::new(Barrier::new(2));
    let fail = |name: &'static str| -> BoxFut<u8> {
        let barrier = barrier.clone();
        Box::pin(async move {
            tokio::task::yield_now().await;
            tokio::task::block_in_place(|| barrier.wait());
            Err(name)
        })
    };
    let items = vec![
        forever(drops.slow_guard()),
        fail("a"),
        forever(drops.slow_guard()),
        fail("b"),
    ];
    let err = gather(items).await.unwrap_err();
    assert_eq!(sorted(err.errors().copied()), ["a", "b"]);
    assert_eq!(drops.get(), 2);
    assert!(settle_until(true, || alive_tasks() == 0).await);
}

/// A failure returns only after every sibling was dropped, on real threads, with slow
/// destructors, and with a limit holding unstarted items (dropped unstarted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_cancels_the_rest_multi_thread() {
    let drops = Counter::default();
    let mut items: Vec<BoxFut<u32>> = (0..6).map(|_| forever(drops.slow_guard())).collect();
    let g = drops.slow_guard();
    items.insert(
        2,
        Box::pin(async move {
            let _g = g;
            sleep(Duration::from_millis(5)).await;
            Err("boom")
        }),
    );
    let err = gather(items).concurrency_limit(4).await.unwrap_err();
    assert_eq!(err.errors().collect::<Vec<_>>(), [&"boom"]);
    assert_eq!(drops.get(), 7);
    assert!(settle_until(true, || alive_tasks() == 0).await);
}

/// A panicking item (strict form): the others are cancelled, and the panic is resumed in the
/// caller only after every other item's guard ran.
async fn panic_is_resumed_after_the_others_dropped(multi: bool) {
    let drops = Counter::default();
    let mut items: Vec<BoxFut<u32>> = (0..4).map(|_| forever(drops.slow_guard())).collect();
    let g = drops.guard();
    items.push(Box::pin(async move {
        let _g = g;
        sleep(Duration::from_millis(2)).await;
        explode("kaboom")
    }));
    let payload = AssertUnwindSafe(gather(items))
        .catch_unwind()
        .await
        .expect_err("the panic is resumed");
    assert_eq!(drops.get(), 5);
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"kaboom"));
    assert!(settle_until(multi, || alive_tasks() == 0).await);
}

#[tokio::test(start_paused = true)]
async fn panic_is_resumed_after_the_others_dropped_current_thread() {
    panic_is_resumed_after_the_others_dropped(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_is_resumed_after_the_others_dropped_multi_thread() {
    panic_is_resumed_after_the_others_dropped(true).await;
}

/// The input iterator panics in `next()` mid-way: the running items are cancelled, and the
/// panic is resumed in the caller once they were dropped.
async fn iterator_panic_is_resumed_after_the_items_dropped(multi: bool) {
    let drops = Counter::default();
    let iter = {
        let drops = drops.clone();
        (0..10u32).map(move |i| -> BoxFut<u32> {
            if i == 3 {
                return explode("iterator broke");
            }
            let g = drops.slow_guard();
            Box::pin(async move {
                let _g = g;
                if i == 2 {
                    std::future::pending::<()>().await;
                }
                sleep(Duration::from_millis(1)).await;
                Ok(i)
            })
        })
    };
    let payload = AssertUnwindSafe(gather(iter).concurrency_limit(2))
        .catch_unwind()
        .await
        .expect_err("the panic is resumed");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"iterator broke"));
    assert_eq!(drops.get(), 3);
    assert!(settle_until(multi, || alive_tasks() == 0).await);
}

#[tokio::test(start_paused = true)]
async fn iterator_panic_is_resumed_after_the_items_dropped_current_thread() {
    iterator_panic_is_resumed_after_the_items_dropped(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iterator_panic_is_resumed_after_the_items_dropped_multi_thread() {
    iterator_panic_is_resumed_after_the_items_dropped(true).await;
}

/// On the current-thread runtime, no item starts running once a failure has happened, even
/// when successes finished in the same tick and freed slots.
#[tokio::test(start_paused = true)]
async fn no_item_starts_after_a_failure() {
    let drops = Counter::default();
    let late_starts = Counter::default();
    let pulled = Counter::default();
    let iter = {
        let (drops, late_starts, pulled) = (drops.clone(), late_starts.clone(), pulled.clone());
        (0..20u32).map(move |i| -> BoxFut<u32> {
            pulled.inc();
            let g = drops.guard();
            let late_starts = late_starts.clone();
            Box::pin(async move {
                let _g = g;
                match i {
                    0 | 2 => {
                        sleep(Duration::from_millis(10)).await;
                        Ok(i)
                    }
                    1 => {
                        sleep(Duration::from_millis(10)).await;
                        Err("one")
                    }
                    3 => {
                        std::future::pending::<()>().await;
                        unreachable!()
                    }
                    _ => {
                        late_starts.inc();
                        Ok(i)
                    }
                }
            })
        })
    };
    let err = gather(iter).concurrency_limit(4).await.unwrap_err();
    assert_eq!(err.errors().collect::<Vec<_>>(), [&"one"]);
    assert_eq!(late_starts.get(), 0);
    assert_eq!(drops.get(), pulled.get());
}

/// A panicking item (settled form): captured in its slot with a readable payload; nothing else
/// is cancelled.
#[tokio::test(start_paused = true)]
async fn settled_captures_a_panic_in_its_slot() {
    let slots = gather_settled((0..5u32).map(|i| async move {
        sleep(Duration::from_millis(u64::from(5 - i))).await;
        if i == 2 {
            panic!("item {i} broke");
        }
        Ok::<_, ()>(i)
    }))
    .await;
    for (i, slot) in slots.into_iter().enumerate() {
        if i == 2 {
            let err = slot.unwrap_err();
            assert!(err.is_panic() && !err.is_failed() && !err.is_cancelled());
            let payload = err.into_panic().expect("the payload is kept");
            assert_eq!(
                payload.downcast_ref::<String>().map(String::as_str),
                Some("item 2 broke")
            );
        } else {
            assert_eq!(slot.unwrap(), i as u32);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_captures_a_panic_in_its_slot_multi_thread() {
    let slots = gather_settled((0..4u32).map(|i| async move {
        tokio::task::yield_now().await;
        if i == 1 {
            std::panic::panic_any(42u64);
        }
        Ok::<_, ()>(i)
    }))
    .concurrency_limit(2)
    .await;
    assert_eq!(slots[0].as_ref().ok(), Some(&0));
    assert_eq!(slots[2].as_ref().ok(), Some(&2));
    assert_eq!(slots[3].as_ref().ok(), Some(&3));
    let mut slots = slots;
    let payload = slots.remove(1).unwrap_err().into_panic().unwrap();
    assert_eq!(payload.downcast_ref::<u64>(), Some(&42));
}

/// An item whose destructor panics once it has finished (settled forms): the panic is that
/// item's outcome, in its slot; the others are not cancelled and nothing is resumed.
async fn settled_captures_a_destructor_panic_in_its_slot() {
    /// Ready at once; item 1's destructor, run by the gather once it finished, panics.
    struct Item(u32);
    impl Future for Item {
        type Output = Result<u32, ()>;
        fn poll(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Self::Output> {
            std::task::Poll::Ready(Ok(self.0))
        }
    }
    impl Drop for Item {
        fn drop(&mut self) {
            if self.0 == 1 {
                panic!("destructor of item 1");
            }
        }
    }
    let item = Item;
    let check = |slots: Vec<Result<u32, quattro::TaskError<()>>>| {
        for (i, slot) in slots.into_iter().enumerate() {
            if i == 1 {
                let payload = slot.unwrap_err().into_panic().expect("a panic");
                assert_eq!(
                    payload.downcast_ref::<&str>(),
                    Some(&"destructor of item 1")
                );
            } else {
                assert_eq!(slot.unwrap(), i as u32);
            }
        }
    };
    check(gather_settled((0..3).map(item)).await);
    check(gather_settled((0..3).map(item)).concurrency_limit(1).await);
    let (a, b, c) = quattro::gather_settled!(item(0), item(1), item(2)).await;
    check(vec![a, b, c]);
    let mut stream = gather_settled((0..3).map(item)).unordered();
    let mut slots: Vec<_> = (0..3).map(|_| None).collect();
    while let Some((i, slot)) = stream.next().await {
        slots[i] = Some(slot);
    }
    check(slots.into_iter().map(Option::unwrap).collect());
}

#[tokio::test]
async fn settled_captures_a_destructor_panic_in_its_slot_current_thread() {
    settled_captures_a_destructor_panic_in_its_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_captures_a_destructor_panic_in_its_slot_multi_thread() {
    settled_captures_a_destructor_panic_in_its_slot().await;
}

// ---------------------------------------------------------------------------------------------
// cancellation from outside: cancel scopes and plain drops
// ---------------------------------------------------------------------------------------------

/// Items: 3 nested gathers (3 grandchildren each) and 6 plain items, every one guarded, run
/// with limit 4 so that some are still in the iterator when the cancellation comes. 18 guards.
fn nested_items(drops: &Counter, started: &Counter) -> Vec<BoxFut<u32>> {
    let mut items: Vec<BoxFut<u32>> = Vec::new();
    for k in 0..9 {
        let g = drops.slow_guard();
        let started = started.clone();
        if k % 3 == 0 {
            // Concrete async blocks and an error type without a lifetime: see
            // `send_inside_async_blocks` for why not boxed items or `&'static str` errors.
            let inner: Vec<_> = (0..3)
                .map(|_| {
                    let g = drops.slow_guard();
                    async move {
                        let _g = g;
                        std::future::pending::<()>().await;
                        Ok::<u32, ()>(0)
                    }
                })
                .collect();
            items.push(Box::pin(async move {
                let _g = g;
                started.inc();
                match gather(inner).await {
                    Ok(v) => Ok(v.len() as u32),
                    Err(_) => Err("inner"),
                }
            }));
        } else {
            items.push(Box::pin(async move {
                let _g = g;
                started.inc();
                sleep(Duration::from_secs(100)).await;
                Ok(k)
            }));
        }
    }
    items
}

const NESTED_GUARDS: usize = 18;

/// A cancel scope that fires around a gather returns only after every item (and every
/// grandchild) was dropped: the guards are counted right after the scope returns.
async fn scope_fires_around_gather(multi: bool) {
    let drops = Counter::default();
    let started = Counter::default();
    let items = nested_items(&drops, &started);
    let out = move_on_after(
        Duration::from_millis(20),
        gather(items).concurrency_limit(4),
    )
    .await;
    assert!(out.is_none());
    assert_eq!(drops.get(), NESTED_GUARDS);
    if !multi {
        assert_eq!(started.get(), 4);
    }
    assert!(settle_until(multi, || alive_tasks() == 0).await);
}

#[tokio::test(start_paused = true)]
async fn scope_fires_around_gather_current_thread() {
    scope_fires_around_gather(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_fires_around_gather_multi_thread() {
    scope_fires_around_gather(true).await;
}

/// The same with `fail_after` and the settled form: `Cancelled` says the deadline was reached.
async fn fail_after_around_settled(multi: bool) {
    let drops = Counter::default();
    let started = Counter::default();
    let items = nested_items(&drops, &started);
    let err = fail_after(
        Duration::from_millis(20),
        gather_settled(items).concurrency_limit(4),
    )
    .await
    .unwrap_err();
    assert!(err.is_deadline_reached());
    assert_eq!(drops.get(), NESTED_GUARDS);
    assert!(settle_until(multi, || alive_tasks() == 0).await);
}

#[tokio::test(start_paused = true)]
async fn fail_after_around_settled_current_thread() {
    fail_after_around_settled(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_after_around_settled_multi_thread() {
    fail_after_around_settled(true).await;
}

/// An item cancels the scope around its own gather: the scope returns once all were dropped.
async fn item_cancels_the_enclosing_scope(multi: bool) {
    let drops = Counter::default();
    let scope = CancelScope::new();
    let mut items: Vec<BoxFut<u32>> = (0..5).map(|_| forever(drops.slow_guard())).collect();
    let (s, g) = (scope.clone(), drops.slow_guard());
    items.push(Box::pin(async move {
        let _g = g;
        tokio::task::yield_now().await;
        s.cancel();
        std::future::pending::<()>().await;
        unreachable!()
    }));
    let out = scope.move_on(gather(items)).await;
    assert!(out.is_none());
    assert!(scope.cancelled_caught());
    assert_eq!(drops.get(), 6);
    assert!(settle_until(multi, || alive_tasks() == 0).await);
}

#[tokio::test(start_paused = true)]
async fn item_cancels_the_enclosing_scope_current_thread() {
    item_cancels_the_enclosing_scope(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_cancels_the_enclosing_scope_multi_thread() {
    item_cancels_the_enclosing_scope(true).await;
}

/// Dropping the gather future mid-flight: every item's guard fires (running ones, unstarted
/// ones still in the iterator, and grandchildren), and no task is alive afterwards.
async fn drop_mid_flight(multi: bool, limit: Option<usize>) {
    let drops = Counter::default();
    let started = Counter::default();
    let items = nested_items(&drops, &started);
    let mut fut = Box::pin(match limit {
        Some(n) => gather(items).concurrency_limit(n),
        None => gather(items),
    });
    assert!(futures::poll!(fut.as_mut()).is_pending());
    let expected = limit.unwrap_or(9);
    assert!(settle_until(multi, || started.get() == expected).await);
    assert!(futures::poll!(fut.as_mut()).is_pending());
    assert!(alive_tasks() > 0);
    drop(fut);
    assert!(
        settle_until(multi, || drops.get() == NESTED_GUARDS).await,
        "{} of {NESTED_GUARDS} guards dropped",
        drops.get()
    );
    assert!(
        settle_until(multi, || alive_tasks() == 0).await,
        "{} tasks alive",
        alive_tasks()
    );
}

#[tokio::test(start_paused = true)]
async fn drop_mid_flight_current_thread() {
    drop_mid_flight(false, None).await;
}

#[tokio::test(start_paused = true)]
async fn drop_mid_flight_limited_current_thread() {
    drop_mid_flight(false, Some(4)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_mid_flight_multi_thread() {
    drop_mid_flight(true, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_mid_flight_limited_multi_thread() {
    drop_mid_flight(true, Some(4)).await;
}

/// A gather dropped by `tokio::time::timeout` (not a quattro scope) also leaves nothing
/// behind, settled form included.
async fn dropped_by_tokio_timeout(multi: bool) {
    let drops = Counter::default();
    let started = Counter::default();
    let items = nested_items(&drops, &started);
    let out = tokio::time::timeout(
        Duration::from_millis(20),
        gather_settled(items).concurrency_limit(5),
    )
    .await;
    assert!(out.is_err());
    assert!(settle_until(multi, || drops.get() == NESTED_GUARDS).await);
    assert!(settle_until(multi, || alive_tasks() == 0).await);
}

#[tokio::test(start_paused = true)]
async fn dropped_by_tokio_timeout_current_thread() {
    dropped_by_tokio_timeout(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_by_tokio_timeout_multi_thread() {
    dropped_by_tokio_timeout(true).await;
}

/// Dropping a gather that was never polled drops its items without a runtime.
#[test]
fn drop_unpolled_needs_no_runtime() {
    let drops = Counter::default();
    let started = Counter::default();
    let items = nested_items(&drops, &started);
    drop(gather(items).concurrency_limit(2));
    assert_eq!(drops.get(), NESTED_GUARDS);
    assert_eq!(started.get(), 0);
}

// ---------------------------------------------------------------------------------------------
// deadlines
// ---------------------------------------------------------------------------------------------

/// Items see the caller's effective deadline: strict, settled, limited (later items too),
/// nested scopes (the earliest wins), and `gather!`.
async fn items_see_the_callers_deadline() {
    let far = Instant::now() + Duration::from_secs(3600);
    let near = Instant::now() + Duration::from_secs(1800);
    let probe = || async { Ok::<_, ()>(current_effective_deadline()) };

    // No scope anywhere: no deadline.
    let v = gather((0..3).map(|_| probe())).await.unwrap();
    assert_eq!(v, [None, None, None]);

    let outer = CancelScope::with_deadline(far);
    let v = outer
        .move_on(gather((0..6).map(|_| probe())).concurrency_limit(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, [Some(far); 6]);

    let outer = CancelScope::with_deadline(far);
    let inner = CancelScope::with_deadline(near);
    let slots = outer
        .move_on(inner.move_on(gather_settled((0..4).map(|_| probe())).concurrency_limit(3)))
        .await
        .unwrap()
        .unwrap();
    assert!(slots.into_iter().all(|s| s.unwrap() == Some(near)));

    let outer = CancelScope::with_deadline(near);
    let (a, b) = outer
        .move_on(quattro::gather!(probe(), async move {
            Ok(current_effective_deadline().map(|d| d.duration_since(near)))
        }))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a, Some(near));
    assert_eq!(b, Some(Duration::ZERO));

    // A nested gather inside an item sees it too.
    let outer = CancelScope::with_deadline(near);
    let v = outer
        .move_on(gather((0..2).map(|_| async {
            gather((0..2).map(|_| async { Ok::<_, ()>(current_effective_deadline()) })).await
        })))
        .await
        .unwrap();
    let v: Vec<Vec<_>> = match v {
        Ok(v) => v,
        Err(e) => panic!("{e:?}"),
    };
    assert_eq!(v, [[Some(near); 2], [Some(near); 2]]);
}

#[tokio::test(start_paused = true)]
async fn items_see_the_callers_deadline_current_thread() {
    items_see_the_callers_deadline().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_see_the_callers_deadline_multi_thread() {
    items_see_the_callers_deadline().await;
}

// ---------------------------------------------------------------------------------------------
// the macros
// ---------------------------------------------------------------------------------------------

/// `gather!` with three different output types, run concurrently.
#[tokio::test(start_paused = true)]
async fn gather_macro_three_types_concurrently() {
    let start = Instant::now();
    let (n, s, v) = quattro::gather!(
        async {
            sleep(Duration::from_millis(30)).await;
            Ok::<_, String>(7u16)
        },
        async {
            sleep(Duration::from_millis(20)).await;
            Ok(String::from("two"))
        },
        async {
            sleep(Duration::from_millis(10)).await;
            Ok(vec![1u8, 2])
        },
    )
    .await
    .unwrap();
    assert_eq!((n, s.as_str(), v), (7, "two", vec![1, 2]));
    // Concurrently: the longest, not the sum.
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(30) && took < Duration::from_millis(60),
        "{took:?}"
    );
}

/// `gather!` failure cancels the others (their guards ran before it returned).
async fn gather_macro_failure_cancels_the_others(multi: bool) {
    let drops = Counter::default();
    let (g1, g2) = (drops.slow_guard(), drops.slow_guard());
    let err = quattro::gather!(
        async move {
            let _g = g1;
            sleep(Duration::from_secs(100)).await;
            Ok::<_, &str>(1u8)
        },
        async {
            sleep(Duration::from_millis(5)).await;
            Err::<String, _>("boom")
        },
        async move {
            let _g = g2;
            std::future::pending::<()>().await;
            Ok(true)
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.errors().collect::<Vec<_>>(), [&"boom"]);
    assert_eq!(drops.get(), 2);
    assert!(settle_until(multi, || alive_tasks() == 0).await);
}

#[tokio::test(start_paused = true)]
async fn gather_macro_failure_cancels_the_others_current_thread() {
    gather_macro_failure_cancels_the_others(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gather_macro_failure_cancels_the_others_multi_thread() {
    gather_macro_failure_cancels_the_others(true).await;
}

/// `gather!` with twelve futures of twelve types compiles and works.
#[tokio::test]
async fn gather_macro_twelve() {
    let t = quattro::gather!(
        async { Ok::<_, ()>(1u8) },
        async { Ok(2u16) },
        async { Ok(3u32) },
        async { Ok(4u64) },
        async { Ok(5i8) },
        async { Ok(6i16) },
        async { Ok(7i32) },
        async { Ok(8i64) },
        async { Ok('9') },
        async { Ok("10") },
        async { Ok(String::from("11")) },
        async { Ok(12.0f32) },
    )
    .await
    .unwrap();
    assert_eq!(
        (t.0, t.1, t.2, t.3, t.4, t.5, t.6, t.7, t.8, t.9),
        (1, 2, 3, 4, 5, 6, 7, 8, '9', "10")
    );
    assert_eq!(t.10, "11");
    assert_eq!(t.11, 12.0);
}

/// `gather_settled!` with mixed outcomes: a value, an error, a panic, and a slow value that
/// the others did not cancel.
#[tokio::test(start_paused = true)]
async fn gather_settled_macro_mixed() {
    let (a, b, c, d) = quattro::gather_settled!(
        async { Ok::<u8, &str>(1) },
        async { Err::<bool, &str>("no") },
        async {
            sleep(Duration::from_millis(1)).await;
            explode::<Result<(), &str>>("settled panic")
        },
        async {
            sleep(Duration::from_millis(50)).await;
            Ok::<_, &str>(String::from("late"))
        },
    )
    .await;
    assert_eq!(a.unwrap(), 1);
    let b = b.unwrap_err();
    assert!(b.is_failed());
    assert_eq!(b.into_error(), Some("no"));
    let c = c.unwrap_err();
    assert!(c.is_panic());
    assert_eq!(
        c.into_panic().unwrap().downcast_ref::<&str>(),
        Some(&"settled panic")
    );
    assert_eq!(d.unwrap(), "late");
}

/// A cancel scope around `gather!` drops every future before it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_fires_around_gather_macro_multi_thread() {
    let drops = Counter::default();
    let (g1, g2) = (drops.slow_guard(), drops.slow_guard());
    let out = move_on_after(
        Duration::from_millis(10),
        quattro::gather!(
            async move {
                let _g = g1;
                sleep(Duration::from_secs(100)).await;
                Ok::<_, ()>(1u8)
            },
            async move {
                let _g = g2;
                std::future::pending::<()>().await;
                Ok("never")
            },
        ),
    )
    .await;
    assert!(out.is_none());
    assert_eq!(drops.get(), 2);
}

// ---------------------------------------------------------------------------------------------
// runtimes and Send
// ---------------------------------------------------------------------------------------------

#[test]
fn empty_settled_needs_no_runtime() {
    let empty: Vec<BoxFut<u8>> = Vec::new();
    assert!(futures::executor::block_on(gather_settled(empty).concurrency_limit(2)).is_empty());
}

#[test]
#[should_panic(expected = "inside a tokio runtime")]
fn non_empty_outside_a_runtime_panics() {
    let _ = futures::executor::block_on(gather([async { Ok::<_, ()>(1) }]));
}

#[test]
#[should_panic(expected = "inside a tokio runtime")]
fn non_empty_settled_outside_a_runtime_panics() {
    let _ = futures::executor::block_on(gather_settled([async { Ok::<_, ()>(1) }]));
}

#[test]
#[should_panic(expected = "inside a tokio runtime")]
fn gather_macro_outside_a_runtime_panics() {
    let _ = futures::executor::block_on(quattro::gather!(async { Ok::<_, ()>(1) }));
}

fn assert_send<T: Send>(_: &T) {}

// Compile-time: the named future types are `Send`.
const _: fn() = || {
    fn is_send<T: Send>() {}
    is_send::<Gather<std::vec::IntoIter<BoxFut<u8>>, u8, &'static str>>();
    is_send::<GatherSettled<std::vec::IntoIter<BoxFut<u8>>, u8, &'static str>>();
};

/// The futures are `Send` and can be spawned.
#[tokio::test]
async fn futures_are_send_and_spawnable() {
    let g = gather((0..3).map(|i| async move { Ok::<_, ()>(i) }));
    assert_send(&g);
    let s = gather_settled((0..3).map(|i| async move { Ok::<_, ()>(i) })).concurrency_limit(2);
    assert_send(&s);
    let m = quattro::gather!(async { Ok::<_, ()>(1) }, async { Ok("x") });
    assert_send(&m);
    let ms = quattro::gather_settled!(async { Ok::<_, ()>(1) }, async { Ok::<_, ()>("x") });
    assert_send(&ms);
    assert_eq!(tokio::spawn(g).await.unwrap().unwrap(), [0, 1, 2]);
    assert_eq!(tokio::spawn(s).await.unwrap().len(), 3);
    assert_eq!(tokio::spawn(m).await.unwrap().unwrap(), (1, "x"));
    let (a, b) = tokio::spawn(ms).await.unwrap();
    assert_eq!((a.unwrap(), b.unwrap()), (1, "x"));
}

/// `tokio::spawn(async move { gather(..).await })` with owned item and error types: the
/// gather held across an await keeps the enclosing future `Send`.
#[tokio::test]
async fn send_inside_an_async_block_with_owned_types() {
    let task = tokio::spawn(async move {
        let strict = gather((0..3u32).map(|i| async move { Ok::<_, String>(i) }))
            .concurrency_limit(2)
            .await;
        let settled = gather_settled((0..3u32).map(|i| async move { Ok::<_, String>(i) })).await;
        let tuple = quattro::gather!(async { Ok::<_, String>(1u8) }, async { Ok(true) }).await;
        (strict, settled.len(), tuple)
    });
    let (strict, settled, tuple) = task.await.unwrap();
    assert_eq!(strict.unwrap(), [0, 1, 2]);
    assert_eq!(settled, 3);
    assert_eq!(tuple.unwrap(), (1, true));
}

/// Compiles `src` as a library against the `quattro` this test binary was built with; the
/// compiler's messages on failure.
fn try_compile(name: &str, src: &str) -> Result<(), String> {
    let exe = std::env::current_exe().expect("the test binary's path");
    let deps = exe.parent().expect("target/<profile>/deps");
    let rlib = std::fs::read_dir(deps)
        .expect("the deps directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let file = p.file_name().unwrap().to_string_lossy().into_owned();
            file.starts_with("libquattro-") && file.ends_with(".rlib")
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .expect("libquattro-*.rlib next to the test binary");
    let dir = std::env::temp_dir().join(format!("quattro-gather-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("probe.rs");
    std::fs::write(&file, src).unwrap();
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = std::process::Command::new(rustc)
        .args([
            "--edition",
            "2024",
            "--crate-type",
            "lib",
            "--emit",
            "metadata",
        ])
        .args(["--crate-name", "probe", "--out-dir"])
        .arg(&dir)
        .arg("-L")
        .arg(format!("dependency={}", deps.display()))
        .arg("--extern")
        .arg(format!("quattro={}", rlib.display()))
        .arg(&file)
        .output()
        .expect("rustc runs");
    let _ = std::fs::remove_dir_all(&dir);
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A gather awaited inside an async block that must be `Send` (the body of a `tokio::spawn`,
/// an `async fn` behind `#[async_trait]`, an axum handler) whose items or error type carry a
/// lifetime — even `'static`: boxed `dyn Future + Send` items, `&'static str` errors. With
/// `'static` bounds on the futures' definitions the compiler could not prove `Send`
/// ("higher-ranked lifetime error"). Checked by compiling snippets with rustc, so that a
/// regression fails this test instead of the build of every other test.
#[test]
fn send_inside_async_blocks() {
    const PRELUDE: &str = "
        use std::future::Future;
        use std::pin::Pin;
        type BoxFut<E> = Pin<Box<dyn Future<Output = Result<u32, E>> + Send>>;
        fn require_send<T: Send>(_: T) {}
    ";
    // The harness works: owned types compile (as in the test above).
    try_compile(
        "control",
        &format!(
            "{PRELUDE}
            pub fn control() {{
                let items = (0..3u32).map(|i| async move {{ Ok::<_, String>(i) }});
                require_send(async move {{ quattro::gather(items).await }});
            }}"
        ),
    )
    .unwrap_or_else(|e| panic!("the compile harness is broken:\n{e}"));

    let cases = [
        (
            "boxed_items",
            "let items: Vec<BoxFut<()>> = Vec::new();
             require_send(async move { quattro::gather(items).await });",
        ),
        (
            "boxed_items_settled",
            "let items: Vec<BoxFut<()>> = Vec::new();
             require_send(async move { quattro::gather_settled(items).await });",
        ),
        (
            "static_str_errors",
            "let items = (0..3u32).map(|i| async move { Ok::<_, &'static str>(i) });
             require_send(async move { quattro::gather(items).concurrency_limit(2).await });",
        ),
        (
            "macro_static_str_errors",
            "require_send(async move {
                 quattro::gather!(async { Ok::<_, &'static str>(1u8) }, async { Ok(2u16) }).await
             });",
        ),
        (
            "settled_macro_static_str_errors",
            "require_send(async move {
                 quattro::gather_settled!(async { Ok::<_, &'static str>(1u8) }, async { Ok::<_, &'static str>(2u16) })
                     .await
             });",
        ),
        (
            "group_static_str_errors",
            "require_send(async move {
                 quattro::TaskGroup::scope(|tg| async move {
                     tg.spawn(async { Err::<(), &'static str>(\"no\") });
                     Ok(())
                 })
                 .await
             });",
        ),
        (
            "limited_group_with_shutdown_static_str_errors",
            "require_send(async move {
                 quattro::TaskGroup::builder()
                     .concurrency_limit(2)
                     .scope(|tg| async move {
                         tg.spawn(async { Ok::<(), &'static str>(()) });
                         Ok(())
                     })
                     .shutdown_after(std::time::Duration::from_secs(1), std::time::Duration::ZERO)
                     .await
             });",
        ),
    ];
    let mut failed = Vec::new();
    for (name, body) in cases {
        let src = format!("{PRELUDE}\npub fn case() {{\n{body}\n}}");
        if let Err(e) = try_compile(name, &src) {
            let first = e
                .lines()
                .filter(|l| l.starts_with("error") || l.contains("= note"))
                .take(4)
                .collect::<Vec<_>>()
                .join("\n    ");
            failed.push(format!("{name}:\n    {first}"));
        }
    }
    assert!(failed.is_empty(), "not Send:\n{}", failed.join("\n"));
}

#[test]
#[should_panic(expected = "polled after")]
fn empty_polled_after_completion_panics() {
    let empty: Vec<BoxFut<u8>> = Vec::new();
    let mut g = Box::pin(gather(empty));
    assert_eq!(
        g.as_mut().now_or_never().unwrap().unwrap(),
        Vec::<u8>::new()
    );
    let _ = g.as_mut().now_or_never();
}

#[tokio::test]
#[should_panic(expected = "polled after")]
async fn polled_after_completion_panics() {
    let mut g = Box::pin(gather([async { Ok::<_, ()>(1) }]));
    assert_eq!(g.as_mut().await.unwrap(), [1]);
    let _ = futures::poll!(g.as_mut());
}

/// `gather!` and `gather_settled!` evaluate their arguments where they are written, as
/// `tokio::join!` does: a variable an argument names (here `name`, cloned) is not moved into
/// the group, and stays usable after.
#[tokio::test]
async fn gather_macros_evaluate_arguments_where_written() {
    async fn echo(s: String) -> Result<String, ()> {
        Ok(s)
    }
    let name = String::from("a");
    let (x, y) = quattro::gather!(echo(name.clone()), echo(name.clone() + "b"))
        .await
        .unwrap();
    assert_eq!((x.as_str(), y.as_str()), ("a", "ab"));
    let (x, y) = quattro::gather_settled!(echo(name.clone()), echo(name.clone())).await;
    assert_eq!((x.unwrap(), y.unwrap()), (name.clone(), name.clone()));
    assert_eq!(name, "a"); // still ours

    // The futures are made at the macro, before the gather is awaited.
    let made = std::sync::atomic::AtomicUsize::new(0);
    let make = |v: u8| {
        made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move { Ok::<_, ()>(v) }
    };
    let pending = quattro::gather!(make(1), make(2));
    assert_eq!(made.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(pending.await.unwrap(), (1, 2));
}
