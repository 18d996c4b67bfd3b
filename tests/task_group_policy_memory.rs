//! Memory of an isolating group that handles many failures: handled failures are moved to the
//! handler, not kept, so a long-lived server group does not grow with them (DESIGN.md,
//! promises 6 and 7). Live heap is measured with a counting global allocator (per binary,
//! hence this file of its own, with one test).
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use quattro::{Failure, TaskGroup};

mod counting_alloc;

use counting_alloc::live;

#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;

/// Runs `failures` failing tasks (every third one panics) through an isolating group with a
/// concurrency limit, and returns the live heap measured inside the group after the first
/// `warm_up` and after all of them.
async fn handle_failures(warm_up: usize, failures: usize) -> (isize, isize) {
    let handled = Arc::new(AtomicUsize::new(0));
    let counter = handled.clone();
    let out = TaskGroup::builder()
        .concurrency_limit(16)
        .isolate_failures(move |failure: Failure<String>| {
            std::hint::black_box(&failure);
            counter.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .scope(|tg| async move {
            let mut at_warm_up = 0;
            for i in 0..failures {
                if i == warm_up {
                    while !tg.is_empty() {
                        tokio::task::yield_now().await;
                    }
                    at_warm_up = live();
                }
                tg.task("worker")
                    .spawn_when_free(async move {
                        tokio::task::yield_now().await;
                        if i % 3 == 0 {
                            panic!("worker {i} panicked");
                        }
                        Err::<(), _>(format!("worker {i} failed"))
                    })
                    .await;
            }
            while !tg.is_empty() {
                tokio::task::yield_now().await;
            }
            Ok((at_warm_up, live()))
        })
        .await;
    assert_eq!(handled.load(Ordering::Relaxed), failures);
    out.unwrap()
}

#[test]
fn handled_failures_do_not_grow_memory() {
    // Thousands of caught panics: keep the output readable.
    std::panic::set_hook(Box::new(|_| {}));
    for multi_thread in [false, true] {
        let runtime = if multi_thread {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_current_thread()
                .start_paused(true)
                .enable_all()
                .build()
        }
        .unwrap();
        let (at_warm_up, at_end) = runtime.block_on(handle_failures(2_000, 50_000));
        let grown = at_end - at_warm_up;
        println!(
            "{}: live heap grew by {grown} bytes over 48,000 handled failures",
            if multi_thread {
                "multi_thread"
            } else {
                "current_thread"
            }
        );
        // Keeping them would take megabytes (a `Failure` and its text each).
        assert!(grown < 128 * 1024, "grew by {grown} bytes");
    }
    let _ = std::panic::take_hook();
}
