//! Memory of local tasks (`spawn_local`) that wait for a slot under a concurrency limit.
//!
//! A queued local task is a tokio task on the `LocalSet` that holds the user's future, and an
//! entry in the group's queue. The old code kept, for an aborted queued local task, its entry
//! counted as waiting and its abort handle (so the whole tokio task, ~2.5 KB with a 1 KiB
//! future) until the queue reached it: a saturated group whose callers give up grew without
//! bound (252 MB over 100,000 aborts). And it stored the future twice while it waited (2.5 KB
//! a queued task with 1 KiB futures, against 1.1 KB for a queued `spawn`). Live heap is
//! measured with a counting global allocator (per binary, hence this file of its own); the
//! tests take a lock so that they do not run at the same time.

use std::convert::Infallible;
use std::sync::Mutex;

use quattro::TaskGroup;

mod counting_alloc;

use counting_alloc::live;

#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;

/// One test at a time: the counter is per process.
static SERIAL: Mutex<()> = Mutex::new(());

/// The bytes each future holds.
const BIG: usize = 1024;

fn runtimes() -> [(&'static str, tokio::runtime::Runtime); 2] {
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    [("current_thread", current), ("multi_thread", multi)]
}

/// A local task's future holding `BIG` bytes (not `Send`, as `spawn_local` allows).
fn big_local() -> impl std::future::Future<Output = Result<(), Infallible>> + 'static {
    let big = [1u8; BIG];
    let not_send = std::rc::Rc::new(());
    async move {
        std::hint::black_box((&big, &not_send));
        Ok(())
    }
}

/// Fills a group limited to one slot with a task that waits until the sender returned is used
/// (or dropped).
async fn take_the_slot(tg: &TaskGroup<Infallible>) -> tokio::sync::oneshot::Sender<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tg.spawn(async move {
        let _ = rx.await;
        Ok(())
    });
    tokio::task::yield_now().await;
    tx
}

/// In a group limited to one slot, taken by a task that waits until the end: `total` times,
/// spawns a local task (which must wait), aborts it and yields. Returns the live heap after
/// `first` iterations and after all of them.
async fn abort_queued(first: usize, total: usize) -> (isize, isize) {
    TaskGroup::builder()
        .concurrency_limit(1)
        .scope(|tg: TaskGroup<Infallible>| async move {
            let tx = take_the_slot(&tg).await;
            let mut at_first = 0;
            for i in 0..total {
                if i == first {
                    at_first = live();
                }
                let handle = tg.spawn_local(big_local());
                handle.abort();
                tokio::task::yield_now().await;
            }
            let at_end = live();
            let _ = tx.send(());
            Ok((at_first, at_end))
        })
        .await
        .unwrap()
}

/// An aborted queued local task is freed at once (its future, its tokio task and its place in
/// the queue), not kept until the queue reaches it.
#[test]
fn aborted_queued_local_tasks_do_not_grow_memory() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for (flavor, runtime) in runtimes() {
        let local = tokio::task::LocalSet::new();
        let (at_first, at_end) = local.block_on(&runtime, abort_queued(1_000, 10_000));
        let grown = at_end - at_first;
        println!("{flavor}: live heap grew by {grown} bytes over 9,000 aborted queued local tasks");
        // Keeping them would take ~2.5 KB each: 22 MB here.
        assert!(grown < 256 * 1024, "{flavor}: grew by {grown} bytes");
    }
}

/// In a group limited to one slot, taken by a task that waits: queues `count` local tasks and
/// returns the live heap they take, per task. The group then runs them all.
async fn queue_local(count: usize) -> isize {
    TaskGroup::builder()
        .concurrency_limit(1)
        .scope(|tg: TaskGroup<Infallible>| async move {
            let tx = take_the_slot(&tg).await;
            let mut handles = Vec::with_capacity(count);
            let with_handles = live();
            for _ in 0..count {
                handles.push(tg.spawn_local(big_local()));
            }
            // Each waiting task runs once, to register its waker, as it would in a server.
            tokio::task::yield_now().await;
            let per_task = (live() - with_handles) / count as isize;
            let _ = tx.send(());
            for handle in handles {
                handle.await.unwrap();
            }
            Ok(per_task)
        })
        .await
        .unwrap()
}

/// A queued local task stores its future once: it costs about one future (and a tokio task),
/// not two.
#[test]
fn a_queued_local_task_stores_its_future_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for (flavor, runtime) in runtimes() {
        let local = tokio::task::LocalSet::new();
        let per_task = local.block_on(&runtime, queue_local(2_000));
        println!("{flavor}: a queued local task with a {BIG}-byte future takes {per_task} bytes");
        // The old code took ~2.6 KB (the future twice); now ~1.5 KB, against ~1.1 KB for a
        // queued `spawn` (a local task waits as a tokio task of its own).
        assert!(per_task < 1_800, "{flavor}: {per_task} bytes a queued task");
    }
}
