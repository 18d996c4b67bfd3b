//! The streaming forms of `gather`: `Gather::unordered` and `GatherSettled::unordered`.
//! Memory: tests/gather_stream_memory.rs. Helpers: tests/task_group_util/mod.rs.

#[path = "task_group_util/mod.rs"]
mod util;

use std::future::pending;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::time::sleep;
use util::*;

/// Values come as items finish, each with its input position; every item once.
mod yields_every_item_once_as_it_finishes {
    use super::*;

    both_runtimes! {
        async fn run() {
            let mut items = quattro::gather((0..200u64).map(|i| async move {
                sleep(ms((i * 7) % 13)).await;
                Ok::<_, ()>(i * 3)
            }))
            .concurrency_limit(10)
            .unordered();
            let mut seen = [false; 200];
            while let Some(item) = items.next().await {
                let (index, value) = item.unwrap();
                assert_eq!(value, index as u64 * 3);
                assert!(!std::mem::replace(&mut seen[index], true), "item {index} twice");
            }
            assert!(seen.iter().all(|s| *s));
            assert!(items.next().await.is_none(), "ended for good");
        }
    }
}

/// Under a limit, an item's slot frees only once its value was taken: a consumer that does
/// not take holds back new items (so memory is O(limit)).
#[tokio::test(start_paused = true)]
async fn a_slow_consumer_holds_back_new_items() {
    let started = Arc::new(AtomicUsize::new(0));
    let count = started.clone();
    let mut items = quattro::gather((0..100u32).map(move |i| {
        count.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, ()>(i) }
    }))
    .concurrency_limit(4)
    .unordered();
    items.next().await.unwrap().unwrap();
    sleep(ms(100)).await; // the consumer dawdles; finished items wait for it
    // The 4 in flight, and the one pulled into the slot the first value freed.
    assert!(
        started.load(Ordering::SeqCst) <= 5,
        "{} started",
        started.load(Ordering::SeqCst)
    );
    let mut taken = 1;
    while let Some(item) = items.next().await {
        item.unwrap();
        taken += 1;
    }
    assert_eq!(taken, 100);
}

/// A failure: the values that came before it, then one `GroupError` once the rest were
/// cancelled, then `None`.
mod a_failure_ends_the_stream_with_the_error {
    use super::*;

    both_runtimes! {
        async fn run() {
            let cancelled = Counter::default();
            let guards = cancelled.clone();
            let mut items = quattro::gather((0..20u32).map(move |i| {
                let guard = guards.guard();
                async move {
                    let _guard = guard;
                    match i {
                        0..=2 => Ok(i),
                        3 => {
                            sleep(ms(5)).await;
                            Err(format!("item {i} broke"))
                        }
                        _ => pending().await,
                    }
                }
            }))
            .unordered();
            let mut values = Vec::new();
            let err = loop {
                match items.next().await.expect("the error comes before the end") {
                    Ok((_, v)) => values.push(v),
                    Err(err) => break err,
                }
            };
            values.sort();
            assert_eq!(values, [0, 1, 2]);
            assert_eq!(err.errors().collect::<Vec<_>>(), ["item 3 broke"]);
            assert_eq!(err.failures()[0].item_index(), Some(3));
            assert_eq!(cancelled.get(), 20, "every item was dropped before the error");
            assert!(items.next().await.is_none());
        }
    }
}

/// Dropping the stream aborts the running items and drops the unstarted ones.
mod dropping_the_stream_cancels_every_item {
    use super::*;

    both_runtimes! {
        async fn run() {
            let dropped = Counter::default();
            let guards = dropped.clone();
            let scope = quattro::move_on_after(ms(50), async move {
                let mut items = quattro::gather((0..50u32).map(move |i| {
                    let guard = guards.guard();
                    async move {
                        let _guard = guard;
                        if i == 0 {
                            return Ok::<_, ()>(i);
                        }
                        pending().await
                    }
                }))
                .concurrency_limit(8)
                .unordered();
                let first = items.next().await;
                assert_eq!(first.unwrap().unwrap(), (0, 0));
                items.next().await; // waits for ever; the scope drops the stream
            });
            assert!(scope.await.is_none());
            assert_eq!(dropped.get(), dropped.made());
        }
    }
}

/// `next` is cancel safe: a `select!` that drops it loses no value.
#[tokio::test(start_paused = true)]
async fn next_is_cancel_safe() {
    let mut items = quattro::gather((0..30u64).map(|i| async move {
        sleep(ms(i % 4)).await;
        Ok::<_, ()>(i)
    }))
    .concurrency_limit(3)
    .unordered();
    let mut got = Vec::new();
    loop {
        tokio::select! {
            item = items.next() => match item {
                Some(item) => got.push(item.unwrap().1),
                None => break,
            },
            // Often wins: the `next` future it drops must lose nothing.
            _ = sleep(ms(1)) => {}
        }
    }
    got.sort();
    assert_eq!(got, (0..30).collect::<Vec<_>>());
}

/// Empty input: the stream ends at once, without a runtime.
#[test]
fn empty_input_ends_at_once() {
    let mut items = quattro::gather(std::iter::empty::<std::future::Ready<Result<u8, ()>>>())
        .concurrency_limit(3)
        .unordered();
    let next = tokio_test::block_on(items.next());
    assert!(next.is_none());
}

/// Settled: every slot, with its position, errors and panics labelled and named.
mod settled_yields_every_slot {
    use super::*;

    both_runtimes! {
        async fn run() {
            let mut slots = quattro::gather_settled((0..40u32).map(|i| async move {
                sleep(ms(u64::from(i % 5))).await;
                match i % 10 {
                    3 => Err(format!("refused {i}")),
                    7 => panic!("bug {i}"),
                    _ => Ok(i),
                }
            }))
            .name_items(|i| format!("host-{i}"))
            .concurrency_limit(6)
            .unordered();
            let (mut ok, mut failed, mut panicked) = (0, 0, 0);
            while let Some((index, slot)) = slots.next().await {
                match slot {
                    Ok(v) => {
                        assert_eq!(v as usize, index);
                        ok += 1;
                    }
                    Err(err) if err.is_failed() => {
                        assert_eq!(err.item_index(), Some(index));
                        let name = format!("host-{index}");
                        assert_eq!(err.task_name(), Some(name.as_str()));
                        assert_eq!(
                            err.to_string(),
                            format!("item {index} (`host-{index}`) failed: refused {index}")
                        );
                        failed += 1;
                    }
                    Err(err) => {
                        assert!(err.is_panic());
                        panicked += 1;
                    }
                }
            }
            assert_eq!((ok, failed, panicked), (32, 4, 4));
        }
    }
}

/// Items see the caller's deadline in the streaming form too.
#[tokio::test(start_paused = true)]
async fn items_see_the_callers_deadline() {
    let deadline = tokio::time::Instant::now() + ms(500);
    quattro::move_on_at(deadline, async move {
        let mut items = quattro::gather(
            (0..5).map(|_| async move { Ok::<_, ()>(quattro::current_effective_deadline()) }),
        )
        .concurrency_limit(2)
        .unordered();
        while let Some(item) = items.next().await {
            assert_eq!(item.unwrap().1, Some(deadline));
        }
    })
    .await
    .unwrap();
}

/// A stream polled in one task, then moved to another and finished there: every item still
/// comes once, and items keep seeing the deadline around the gather where it is polled now.
mod moved_to_another_task {
    use super::*;

    both_runtimes! {
        async fn run() {
            let mut items = quattro::gather((0..100u64).map(|i| async move {
                tokio::task::yield_now().await;
                Ok::<_, ()>(i)
            }))
            .concurrency_limit(4)
            .unordered();
            let first = items.next().await.unwrap().unwrap();
            let rest = tokio::spawn(async move {
                let mut seen = vec![first.0];
                while let Some(item) = items.next().await {
                    seen.push(item.unwrap().0);
                }
                seen
            });
            let mut seen = rest.await.unwrap();
            seen.sort();
            assert_eq!(seen, (0..100).collect::<Vec<_>>());
        }
    }
}

/// Items whose destructors panic (after finishing, and when cancelled) never leave the stream
/// waiting: the panic cancels the other items and, once every item was dropped, is resumed in
/// the consumer (as for `gather`).
mod panicking_item_destructors_end_the_stream {
    use super::*;

    struct PanicOnDrop;
    impl Drop for PanicOnDrop {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                panic!("destructor bug");
            }
        }
    }

    both_runtimes! {
        async fn run() {
            let dropped = Counter::default();
            let guards = dropped.clone();
            let consumer = tokio::spawn(async move {
                let mut items = quattro::gather((0..20u32).map(move |i| {
                    let guard = guards.guard();
                    async move {
                        let _guard = guard;
                        let _bomb = PanicOnDrop;
                        if i == 0 {
                            return Ok::<_, ()>(i); // its destructor panics after it finished
                        }
                        pending().await
                    }
                }))
                .concurrency_limit(8)
                .unordered();
                while items.next().await.is_some() {}
            });
            let err = consumer.await.unwrap_err();
            let payload = err.into_panic();
            assert_eq!(payload.downcast_ref::<&str>(), Some(&"destructor bug"));
            assert_eq!(dropped.get(), dropped.made(), "every item was dropped first");
        }
    }
}
