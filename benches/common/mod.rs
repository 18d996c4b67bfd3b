//! Workloads shared by the criterion benches and by `compare`, so that the side-by-side table
//! and the criterion reports measure exactly the same code.

// Every bench includes this module but uses only part of it.
#![allow(dead_code)]

use std::cell::Cell;
use std::future::Future;
use std::hint::black_box;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

/// Far enough away that no deadline ever fires during a run: the benches measure the cost of
/// carrying a deadline, not of hitting it.
pub const TIMEOUT: Duration = Duration::from_secs(3600);

/// The runtime flavours every workload is measured on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    CurrentThread,
    MultiThread,
}

impl Flavor {
    pub const ALL: [Flavor; 2] = [Flavor::CurrentThread, Flavor::MultiThread];

    pub fn label(self) -> &'static str {
        match self {
            Flavor::CurrentThread => "ct",
            Flavor::MultiThread => "mt",
        }
    }

    /// Only the timer is enabled: with the IO driver on, registering a timer on an idle
    /// current-thread runtime unparks the driver through an eventfd write, a syscall that
    /// would swamp the nanoseconds being compared.
    pub fn runtime(self) -> Runtime {
        match self {
            Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build(),
            Flavor::MultiThread => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_time()
                .build(),
        }
        .expect("build runtime")
    }
}

/// Returns `Pending` `left` times, waking itself each time, then `Ready`: a stand-in for a
/// future that suspends without depending on anything else.
pub struct YieldN {
    left: u32,
}

impl YieldN {
    pub fn new(pendings: u32) -> YieldN {
        YieldN { left: pendings }
    }
}

impl Future for YieldN {
    type Output = u32;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
        if self.left == 0 {
            return Poll::Ready(7);
        }
        self.left -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Polls `fut` to completion right here with a no-op waker, returning the number of polls.
///
/// The futures under test wake themselves, so a real executor would only add a scheduler
/// round trip per `Pending` — the same on both sides of a comparison, and large enough to
/// hide the difference being measured.
pub fn poll_in_place<F: Future>(fut: F) -> u32 {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    let mut polls = 1;
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(out) => {
                black_box(out);
                return polls;
            }
            Poll::Pending => polls += 1,
        }
    }
}

/// Runs `body` inside `rt`'s context (timers need a runtime handle) and returns what it
/// measured.
///
/// `unconstrained` keeps tokio's cooperative budget out of the picture: the whole measurement
/// loop is one poll of the `block_on` future, and a budget that ran out midway would make
/// `Sleep` skip its work on one side only.
pub fn in_runtime<R>(rt: &Runtime, body: impl FnOnce() -> R) -> R {
    rt.block_on(tokio::task::unconstrained(async move { body() }))
}

/// Times `iters` runs of `one` (built and polled to completion in place) inside `rt`.
pub fn time_in_place<F: Future>(rt: &Runtime, iters: u64, one: impl Fn() -> F) -> Duration {
    in_runtime(rt, || {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(poll_in_place(one()));
        }
        start.elapsed()
    })
}

// --- single scopes ------------------------------------------------------------------------

pub fn move_on_after_yield(pendings: u32) -> impl Future {
    quattro::move_on_after(TIMEOUT, YieldN::new(pendings))
}

pub fn fail_after_yield(pendings: u32) -> impl Future {
    quattro::fail_after(TIMEOUT, YieldN::new(pendings))
}

pub fn timeout_yield(pendings: u32) -> impl Future {
    tokio::time::timeout(TIMEOUT, YieldN::new(pendings))
}

// --- nested scopes -------------------------------------------------------------------------
//
// Nesting is generic (no boxing per layer), as in real code where the scopes are written
// around each other in nested `async` functions. Each layer's timeout grows by a second going
// inwards, so that although the inner layers are built first, the outermost deadline is the
// earliest — the common shape (a request deadline outside, library default timeouts inside),
// and the case where a scope can lean on an enclosing timer instead of arming its own.

fn layer_timeout(layer: u32) -> Duration {
    TIMEOUT + Duration::from_secs(u64::from(layer))
}

fn q1<F: Future>(fut: F, layer: u32) -> impl Future {
    quattro::move_on_after(layer_timeout(layer), fut)
}

fn q8<F: Future>(fut: F, layer: u32) -> impl Future {
    let fut = q1(fut, layer + 7);
    let fut = q1(fut, layer + 6);
    let fut = q1(fut, layer + 5);
    let fut = q1(fut, layer + 4);
    let fut = q1(fut, layer + 3);
    let fut = q1(fut, layer + 2);
    let fut = q1(fut, layer + 1);
    q1(fut, layer)
}

fn q64<F: Future>(fut: F) -> impl Future {
    let fut = q8(fut, 56);
    let fut = q8(fut, 48);
    let fut = q8(fut, 40);
    let fut = q8(fut, 32);
    let fut = q8(fut, 24);
    let fut = q8(fut, 16);
    let fut = q8(fut, 8);
    q8(fut, 0)
}

fn t1<F: Future>(fut: F, layer: u32) -> impl Future {
    tokio::time::timeout(layer_timeout(layer), fut)
}

fn t8<F: Future>(fut: F, layer: u32) -> impl Future {
    let fut = t1(fut, layer + 7);
    let fut = t1(fut, layer + 6);
    let fut = t1(fut, layer + 5);
    let fut = t1(fut, layer + 4);
    let fut = t1(fut, layer + 3);
    let fut = t1(fut, layer + 2);
    let fut = t1(fut, layer + 1);
    t1(fut, layer)
}

fn t64<F: Future>(fut: F) -> impl Future {
    let fut = t8(fut, 56);
    let fut = t8(fut, 48);
    let fut = t8(fut, 40);
    let fut = t8(fut, 32);
    let fut = t8(fut, 24);
    let fut = t8(fut, 16);
    let fut = t8(fut, 8);
    t8(fut, 0)
}

/// The depths the nesting benches run at.
pub const DEPTHS: [u32; 3] = [1, 8, 64];

/// Polls `fut` in place inside `depth` nested quattro scopes (`move_on_after`).
pub fn poll_nested_scopes<F: Future>(depth: u32, fut: F) -> u32 {
    match depth {
        1 => poll_in_place(q1(fut, 0)),
        8 => poll_in_place(q8(fut, 0)),
        64 => poll_in_place(q64(fut)),
        _ => panic!("unsupported depth {depth}"),
    }
}

/// Polls `fut` in place inside `depth` nested `tokio::time::timeout`s.
pub fn poll_nested_timeouts<F: Future>(depth: u32, fut: F) -> u32 {
    match depth {
        1 => poll_in_place(t1(fut, 0)),
        8 => poll_in_place(t8(fut, 0)),
        64 => poll_in_place(t64(fut)),
        _ => panic!("unsupported depth {depth}"),
    }
}

/// Number of `Pending`s of the future inside the nested scopes.
pub const NESTED_PENDINGS: u32 = 10;

pub fn time_nested_scopes(rt: &Runtime, depth: u32, iters: u64) -> Duration {
    in_runtime(rt, || {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(poll_nested_scopes(depth, YieldN::new(NESTED_PENDINGS)));
        }
        start.elapsed()
    })
}

pub fn time_nested_timeouts(rt: &Runtime, depth: u32, iters: u64) -> Duration {
    in_runtime(rt, || {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(poll_nested_timeouts(depth, YieldN::new(NESTED_PENDINGS)));
        }
        start.elapsed()
    })
}

// --- deadline lookup -----------------------------------------------------------------------

tokio::task_local! {
    static DEADLINE: Option<tokio::time::Instant>;
}

/// Runs its closure on the first poll: lets a measurement loop sit inside nested scopes
/// without an `async` block whose output would have to be threaded back out.
struct RunOnce<F>(Option<F>);

impl<F: FnOnce() + Unpin> Future for RunOnce<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        (self.0.take().expect("polled after completion"))();
        Poll::Ready(())
    }
}

/// Times `iters` calls of `current_effective_deadline()` made inside `depth` nested scopes.
/// Only the calls are timed, not building or entering the scopes.
pub fn time_effective_deadline(rt: &Runtime, depth: u32, iters: u64) -> Duration {
    let elapsed = Cell::new(Duration::ZERO);
    let body = RunOnce(Some(|| {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(quattro::current_effective_deadline());
        }
        elapsed.set(start.elapsed());
    }));
    in_runtime(rt, || poll_nested_scopes(depth, body));
    elapsed.get()
}

/// Times `iters` reads of a bare `tokio::task_local!` holding a deadline: what a service
/// that threads its deadline through a task-local of its own pays per lookup.
pub fn time_task_local_read(rt: &Runtime, iters: u64) -> Duration {
    let elapsed = Cell::new(Duration::ZERO);
    let value = Some(tokio::time::Instant::now() + TIMEOUT);
    let body = RunOnce(Some(|| {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(DEADLINE.with(|v| *v));
        }
        elapsed.set(start.elapsed());
    }));
    in_runtime(rt, || poll_in_place(DEADLINE.scope(value, body)));
    elapsed.get()
}

// --- task workloads ------------------------------------------------------------------------
//
// Unlike the scope workloads above, these measure real tasks on the runtime's scheduler: one
// iteration is one whole job (spawn N tasks and wait for all of them, gather N futures, ...),
// and the iterations are awaited one after another. They run inside a task spawned on the
// runtime, not in `block_on` itself: on the multi-thread runtime that puts the spawner on a
// worker thread, whose local run queue takes the spawns (as in a request handler that fans
// out), instead of on the thread calling `block_on`, which would push every spawn through the
// shared inject queue and wake the workers for each. On the current-thread runtime it makes no
// difference except for `yield_now` (see `wait_started`). Tokio's cooperative budget stays on:
// it is part of what joining many tasks costs, on every side alike.

/// The task counts of the spawn + join and gather workloads.
pub const TASK_COUNTS: [u64; 2] = [1_000, 100_000];

/// Tasks per job in the limited fan-out workloads.
pub const FAN_OUT_TASKS: u64 = 100_000;

/// The concurrency limit of the limited fan-out workloads.
pub const FAN_OUT_LIMIT: usize = 16;

/// Sleeping tasks per job in the cancellation workloads.
pub const CANCEL_TASKS: u64 = 10_000;

/// `1k`, `100k`: task counts in row and benchmark names.
pub fn count_label(n: u64) -> String {
    if n >= 1_000 && n % 1_000 == 0 {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

/// Times `iters` runs of `one()`, awaited one after another inside a task spawned on `rt`.
/// Only the runs are timed, not spawning and joining the task that runs them.
pub fn time_tasks<F, Fut>(rt: &Runtime, iters: u64, one: F) -> Duration
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    rt.block_on(async move {
        tokio::spawn(async move {
            let start = Instant::now();
            for _ in 0..iters {
                one().await;
            }
            start.elapsed()
        })
        .await
        .expect("the measuring task panicked")
    })
}

/// The work of one task in the spawn, gather and fan-out workloads: nothing but a value. What
/// is measured is the machinery around it.
async fn trivial(i: u64) -> Result<u64, ()> {
    Ok(i)
}

/// `n` trivial items, for the gather workloads.
fn trivial_items(n: u64) -> impl Iterator<Item = impl Future<Output = Result<u64, ()>> + Send> {
    (0..n).map(trivial)
}

/// Checks a gathered vector: every value, in input order.
fn check_gathered(values: Vec<u64>, n: u64) {
    assert_eq!(values.len() as u64, n, "one value per item");
    debug_assert!(values.iter().copied().eq(0..n), "values in input order");
    black_box(values);
}

// --- spawn + join --------------------------------------------------------------------------

/// Ways to spawn `n` trivial tasks and wait until every one has finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpawnJoin {
    /// `TaskGroup::scope` spawning the tasks (handles dropped); the scope joins them.
    TaskGroup,
    /// `JoinSet::spawn`, then a `join_next` loop checking each result.
    JoinSet,
    /// `tokio::spawn` into a `Vec<JoinHandle>`, then each handle awaited in order.
    SpawnVec,
    /// tokio-util's `TaskTracker`: spawn, `close`, `wait` (results are not collected).
    TaskTracker,
}

impl SpawnJoin {
    pub const ALL: [SpawnJoin; 4] = [
        SpawnJoin::TaskGroup,
        SpawnJoin::JoinSet,
        SpawnJoin::SpawnVec,
        SpawnJoin::TaskTracker,
    ];

    /// The name in the `compare` table.
    pub fn label(self) -> &'static str {
        match self {
            SpawnJoin::TaskGroup => "TaskGroup",
            SpawnJoin::JoinSet => "JoinSet",
            SpawnJoin::SpawnVec => "spawn + Vec<JoinHandle>",
            SpawnJoin::TaskTracker => "TaskTracker",
        }
    }

    /// The name in criterion's reports.
    pub fn id(self) -> &'static str {
        match self {
            SpawnJoin::TaskGroup => "task_group",
            SpawnJoin::JoinSet => "join_set",
            SpawnJoin::SpawnVec => "spawn_vec",
            SpawnJoin::TaskTracker => "task_tracker",
        }
    }

    /// Spawns `n` trivial tasks and waits for all of them.
    pub async fn run(self, n: u64) {
        match self {
            SpawnJoin::TaskGroup => {
                let out = quattro::TaskGroup::scope(|tg| async move {
                    for i in 0..n {
                        tg.spawn(trivial(i));
                    }
                    Ok(())
                })
                .await;
                out.expect("no task fails");
            }
            SpawnJoin::JoinSet => {
                let mut set = tokio::task::JoinSet::new();
                for i in 0..n {
                    set.spawn(trivial(i));
                }
                while let Some(joined) = set.join_next().await {
                    black_box(joined.expect("no task panics").expect("no task fails"));
                }
            }
            SpawnJoin::SpawnVec => {
                let handles: Vec<_> = (0..n).map(|i| tokio::spawn(trivial(i))).collect();
                for handle in handles {
                    black_box(
                        handle
                            .await
                            .expect("no task panics")
                            .expect("no task fails"),
                    );
                }
            }
            SpawnJoin::TaskTracker => {
                let tracker = tokio_util::task::TaskTracker::new();
                for i in 0..n {
                    tracker.spawn(trivial(i));
                }
                tracker.close();
                tracker.wait().await;
            }
        }
    }

    pub fn time(self, rt: &Runtime, n: u64, iters: u64) -> Duration {
        time_tasks(rt, iters, move || self.run(n))
    }
}

// --- gather --------------------------------------------------------------------------------

/// Ways to run `n` trivial futures and collect their values in input order, stopping at the
/// first error. `quattro::gather` spawns each item as a task, so `JoinSetIndex` is its peer;
/// the in-place ones run every future inside the caller's task and are there for context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gather {
    /// `quattro::gather`.
    Quattro,
    /// `JoinSet` of `(index, future)` tasks; each value written into a `Vec<Option<T>>` at its
    /// index, then collected.
    JoinSetIndex,
    /// `futures::future::try_join_all`, polled in place (no tasks).
    TryJoinAll,
    /// futures-concurrency's `Vec::try_join`, polled in place (no tasks).
    TryJoinVec,
}

impl Gather {
    pub const ALL: [Gather; 4] = [
        Gather::Quattro,
        Gather::JoinSetIndex,
        Gather::TryJoinAll,
        Gather::TryJoinVec,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Gather::Quattro => "gather",
            Gather::JoinSetIndex => "JoinSet + index",
            Gather::TryJoinAll => "try_join_all (in place)",
            Gather::TryJoinVec => "Vec::try_join (in place)",
        }
    }

    pub fn id(self) -> &'static str {
        match self {
            Gather::Quattro => "quattro_gather",
            Gather::JoinSetIndex => "join_set_index",
            Gather::TryJoinAll => "try_join_all",
            Gather::TryJoinVec => "futures_concurrency_try_join",
        }
    }

    /// Gathers `n` trivial futures.
    pub async fn run(self, n: u64) {
        let values = match self {
            Gather::Quattro => quattro::gather(trivial_items(n)).await.ok(),
            Gather::JoinSetIndex => join_set_gather(trivial_items(n)).await.ok(),
            Gather::TryJoinAll => futures::future::try_join_all(trivial_items(n)).await.ok(),
            Gather::TryJoinVec => {
                use futures_concurrency::future::TryJoin as _;
                let items: Vec<_> = trivial_items(n).collect();
                items.try_join().await.ok()
            }
        };
        check_gathered(values.expect("no item fails"), n);
    }

    pub fn time(self, rt: &Runtime, n: u64, iters: u64) -> Duration {
        time_tasks(rt, iters, move || self.run(n))
    }
}

/// What `gather` replaces: every item spawned with its index, each value put in its place.
async fn join_set_gather<I, F, T, E>(items: I) -> Result<Vec<T>, E>
where
    I: IntoIterator<Item = F>,
    F: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    let mut slots: Vec<Option<T>> = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        set.spawn(async move { (index, item.await) });
        slots.push(None);
    }
    while let Some(joined) = set.join_next().await {
        let (index, out) = joined.expect("no item panics");
        // An error returns at once; dropping the set aborts the other items.
        slots[index] = Some(out?);
    }
    Ok(slots
        .into_iter()
        .map(|slot| slot.expect("every slot was filled"))
        .collect())
}

// --- limited fan-out -----------------------------------------------------------------------

/// Ways to run `n` trivial tasks with at most `limit` of them at once, waiting for all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FanOut {
    /// `TaskGroup::builder().concurrency_limit(limit).scope(..)` spawning every task at once;
    /// those over the limit wait in the group's queue, unspawned.
    TaskGroup,
    /// The same group, the body spawning with `spawn_when_free(..).await`: it waits for a slot
    /// instead of queueing (backpressure), like the hand-written peers.
    TaskGroupWhenFree,
    /// `Semaphore::acquire_owned` before each `JoinSet::spawn`, the permit moved into the task;
    /// finished tasks reaped with `try_join_next` as it goes, the rest drained at the end.
    JoinSetSemaphore,
    /// `stream::iter(..).map(|i| tokio::spawn(..)).buffer_unordered(limit)`.
    BufferUnordered,
    /// Every task spawned at once into a `JoinSet`, each acquiring a permit of a shared
    /// `Semaphore` before its work: Python quattro's way (the limit bounds the work, not the
    /// tasks).
    PermitInTask,
    /// A limited group's `TaskSet`: `spawn_when_free`, results taken with `try_join_next` as
    /// it goes and `join_next` at the end (the `JoinSet` + `Semaphore` program, on quattro).
    TaskSet,
    /// `gather(..).concurrency_limit(limit).unordered()`, each value taken with `next()` (the
    /// `buffer_unordered` program, on quattro).
    GatherUnordered,
}

impl FanOut {
    pub const ALL: [FanOut; 7] = [
        FanOut::TaskGroup,
        FanOut::TaskGroupWhenFree,
        FanOut::JoinSetSemaphore,
        FanOut::BufferUnordered,
        FanOut::PermitInTask,
        FanOut::TaskSet,
        FanOut::GatherUnordered,
    ];

    pub fn label(self) -> &'static str {
        match self {
            FanOut::TaskGroup => "TaskGroup",
            FanOut::TaskGroupWhenFree => "TaskGroup spawn_when_free",
            FanOut::JoinSetSemaphore => "JoinSet + Semaphore",
            FanOut::BufferUnordered => "buffer_unordered",
            FanOut::PermitInTask => "spawn all + permit in task",
            FanOut::TaskSet => "TaskSet join_next",
            FanOut::GatherUnordered => "gather unordered",
        }
    }

    pub fn id(self) -> &'static str {
        match self {
            FanOut::TaskGroup => "task_group_limit",
            FanOut::TaskGroupWhenFree => "task_group_spawn_when_free",
            FanOut::JoinSetSemaphore => "join_set_semaphore",
            FanOut::BufferUnordered => "buffer_unordered",
            FanOut::PermitInTask => "permit_in_task",
            FanOut::TaskSet => "task_set",
            FanOut::GatherUnordered => "gather_unordered",
        }
    }

    /// Runs `n` trivial tasks, at most `limit` at once.
    pub async fn run(self, n: u64, limit: usize) {
        use futures::StreamExt as _;
        use std::sync::Arc;
        use tokio::sync::Semaphore;
        use tokio::task::JoinSet;

        match self {
            FanOut::TaskGroup => {
                let out = quattro::TaskGroup::builder()
                    .concurrency_limit(limit)
                    .scope(|tg| async move {
                        for i in 0..n {
                            tg.spawn(trivial(i));
                        }
                        Ok(())
                    })
                    .await;
                out.expect("no task fails");
            }
            FanOut::TaskGroupWhenFree => {
                let out = quattro::TaskGroup::builder()
                    .concurrency_limit(limit)
                    .scope(|tg| async move {
                        for i in 0..n {
                            tg.spawn_when_free(trivial(i)).await;
                        }
                        Ok(())
                    })
                    .await;
                out.expect("no task fails");
            }
            FanOut::JoinSetSemaphore => {
                let permits = Arc::new(Semaphore::new(limit));
                let mut set = JoinSet::new();
                for i in 0..n {
                    let permit = permits.clone().acquire_owned().await.expect("never closed");
                    set.spawn(async move {
                        let _permit = permit;
                        trivial(i).await
                    });
                    while let Some(joined) = set.try_join_next() {
                        black_box(joined.expect("no task panics").expect("no task fails"));
                    }
                }
                while let Some(joined) = set.join_next().await {
                    black_box(joined.expect("no task panics").expect("no task fails"));
                }
            }
            FanOut::BufferUnordered => {
                let mut joined = futures::stream::iter(0..n)
                    .map(|i| tokio::spawn(trivial(i)))
                    .buffer_unordered(limit);
                while let Some(out) = joined.next().await {
                    black_box(out.expect("no task panics").expect("no task fails"));
                }
            }
            FanOut::TaskSet => {
                let out = quattro::TaskGroup::builder()
                    .concurrency_limit(limit)
                    .scope(|tg| async move {
                        let mut set = tg.task_set();
                        for i in 0..n {
                            set.spawn_when_free(trivial(i)).await;
                            while let Some(joined) = set.try_join_next() {
                                black_box(joined.expect("no task fails"));
                            }
                        }
                        while let Some(joined) = set.join_next().await {
                            black_box(joined.expect("no task fails"));
                        }
                        Ok(())
                    })
                    .await;
                out.expect("no task fails");
            }
            FanOut::GatherUnordered => {
                let mut values = quattro::gather((0..n).map(trivial))
                    .concurrency_limit(limit)
                    .unordered();
                while let Some(value) = values.next().await {
                    black_box(value.expect("no task fails"));
                }
            }
            FanOut::PermitInTask => {
                let permits = Arc::new(Semaphore::new(limit));
                let mut set = JoinSet::new();
                for i in 0..n {
                    let permits = permits.clone();
                    set.spawn(async move {
                        let _permit = permits.acquire().await.expect("never closed");
                        trivial(i).await
                    });
                }
                while let Some(joined) = set.join_next().await {
                    black_box(joined.expect("no task panics").expect("no task fails"));
                }
            }
        }
    }

    pub fn time(self, rt: &Runtime, n: u64, limit: usize, iters: u64) -> Duration {
        time_tasks(rt, iters, move || self.run(n, limit))
    }
}

/// Ways to gather `n` trivial futures, in input order, with at most `limit` running at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitedGather {
    /// `quattro::gather::Gather::new(..).concurrency_limit(limit)`.
    Quattro,
    /// `JoinSet` + `Semaphore` as in [`FanOut::JoinSetSemaphore`], plus the index bookkeeping
    /// of [`Gather::JoinSetIndex`].
    JoinSetSemaphoreIndex,
    /// `stream::iter(..).map(|i| tokio::spawn(..)).buffered(limit).try_collect()`: spawned,
    /// in input order.
    Buffered,
}

impl LimitedGather {
    pub const ALL: [LimitedGather; 3] = [
        LimitedGather::Quattro,
        LimitedGather::JoinSetSemaphoreIndex,
        LimitedGather::Buffered,
    ];

    pub fn label(self) -> &'static str {
        match self {
            LimitedGather::Quattro => "gather limit",
            LimitedGather::JoinSetSemaphoreIndex => "JoinSet + Semaphore + index",
            LimitedGather::Buffered => "buffered",
        }
    }

    pub fn id(self) -> &'static str {
        match self {
            LimitedGather::Quattro => "quattro_gather_limit",
            LimitedGather::JoinSetSemaphoreIndex => "join_set_semaphore_index",
            LimitedGather::Buffered => "buffered",
        }
    }

    /// Gathers `n` trivial futures, at most `limit` at once.
    pub async fn run(self, n: u64, limit: usize) {
        use futures::{StreamExt as _, TryStreamExt as _};
        use std::sync::Arc;
        use tokio::sync::Semaphore;

        let values = match self {
            LimitedGather::Quattro => quattro::gather::Gather::new(trivial_items(n))
                .concurrency_limit(limit)
                .await
                .ok(),
            LimitedGather::JoinSetSemaphoreIndex => {
                let permits = Arc::new(Semaphore::new(limit));
                let mut set = tokio::task::JoinSet::new();
                let mut slots: Vec<Option<u64>> = Vec::new();
                let place = |slots: &mut Vec<Option<u64>>,
                             (index, out): (usize, Result<u64, ()>)| {
                    slots[index] = Some(out.expect("no item fails"));
                };
                for (index, item) in trivial_items(n).enumerate() {
                    let permit = permits.clone().acquire_owned().await.expect("never closed");
                    set.spawn(async move {
                        let _permit = permit;
                        (index, item.await)
                    });
                    slots.push(None);
                    while let Some(joined) = set.try_join_next() {
                        place(&mut slots, joined.expect("no item panics"));
                    }
                }
                while let Some(joined) = set.join_next().await {
                    place(&mut slots, joined.expect("no item panics"));
                }
                Some(
                    slots
                        .into_iter()
                        .map(|slot| slot.expect("filled"))
                        .collect(),
                )
            }
            LimitedGather::Buffered => futures::stream::iter(trivial_items(n))
                .map(tokio::spawn)
                .buffered(limit)
                .map(|joined| joined.expect("no item panics"))
                .try_collect::<Vec<u64>>()
                .await
                .ok(),
        };
        check_gathered(values.expect("no item fails"), n);
    }

    pub fn time(self, rt: &Runtime, n: u64, limit: usize, iters: u64) -> Duration {
        time_tasks(rt, iters, move || self.run(n, limit))
    }
}

// --- cancellation --------------------------------------------------------------------------

/// How many tasks of the current cancellation job have started; see [`wait_started`]. A
/// static, not a shared `Arc`, so that counting costs each task one atomic add and nothing
/// else; the jobs never run concurrently.
static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn mark_started() {
    STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Yields until `n` tasks have called [`mark_started`], so that every task is asleep (its
/// timer registered) when it is cancelled. One `yield_now` is not enough: on the multi-thread
/// runtime the spawner can be resumed, or stolen, before the other tasks ran, and from
/// `block_on` on the current-thread runtime it lets only 61 tasks run.
async fn wait_started(n: u64) {
    while STARTED.load(std::sync::atomic::Ordering::Relaxed) < n {
        tokio::task::yield_now().await;
    }
}

/// Ways to cancel `n` tasks that sleep for an hour, and wait until all of them are dropped.
/// Every side counts its tasks in, waits until all have started (see [`wait_started`]), then
/// cancels; the counting and the wait are timed too, the same on every side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cancel {
    /// `TaskGroup::scope` spawning the tasks, then `tg.cancel()`; the scope returns once every
    /// task is dropped.
    TaskGroup,
    /// `JoinSet::spawn`, then `abort_all` and a `join_next` loop until the set is empty.
    JoinSetAbort,
    /// Each task `select!`s on a `CancellationToken` and its sleep; `cancel`, then a
    /// `JoinSet::join_next` loop.
    Token,
}

impl Cancel {
    pub const ALL: [Cancel; 3] = [Cancel::TaskGroup, Cancel::JoinSetAbort, Cancel::Token];

    pub fn label(self) -> &'static str {
        match self {
            Cancel::TaskGroup => "TaskGroup::cancel",
            Cancel::JoinSetAbort => "JoinSet::abort_all",
            Cancel::Token => "CancellationToken",
        }
    }

    pub fn id(self) -> &'static str {
        match self {
            Cancel::TaskGroup => "task_group_cancel",
            Cancel::JoinSetAbort => "join_set_abort_all",
            Cancel::Token => "cancellation_token",
        }
    }

    /// Spawns `n` sleeping tasks, cancels them and waits until all are dropped.
    pub async fn run(self, n: u64) {
        STARTED.store(0, std::sync::atomic::Ordering::Relaxed);
        match self {
            Cancel::TaskGroup => {
                let out = quattro::TaskGroup::scope(|tg| async move {
                    for _ in 0..n {
                        tg.spawn(async {
                            mark_started();
                            tokio::time::sleep(TIMEOUT).await;
                            Ok::<(), ()>(())
                        });
                    }
                    wait_started(n).await;
                    tg.cancel();
                    Ok(())
                })
                .await;
                assert!(out.expect_err("cancelled").is_cancelled());
            }
            Cancel::JoinSetAbort => {
                let mut set = tokio::task::JoinSet::new();
                for _ in 0..n {
                    set.spawn(async {
                        mark_started();
                        tokio::time::sleep(TIMEOUT).await;
                    });
                }
                wait_started(n).await;
                set.abort_all();
                while let Some(joined) = set.join_next().await {
                    debug_assert!(joined.expect_err("aborted").is_cancelled());
                }
            }
            Cancel::Token => {
                let token = tokio_util::sync::CancellationToken::new();
                let mut set = tokio::task::JoinSet::new();
                for _ in 0..n {
                    let token = token.clone();
                    set.spawn(async move {
                        mark_started();
                        tokio::select! {
                            biased;
                            () = token.cancelled() => {}
                            () = tokio::time::sleep(TIMEOUT) => {}
                        }
                    });
                }
                wait_started(n).await;
                token.cancel();
                while let Some(joined) = set.join_next().await {
                    joined.expect("no task panics");
                }
            }
        }
    }

    pub fn time(self, rt: &Runtime, n: u64, iters: u64) -> Duration {
        time_tasks(rt, iters, move || self.run(n))
    }
}

// --- criterion settings --------------------------------------------------------------------

/// Sized so that a criterion bench of task jobs takes a minute or two: a 1k-task iteration
/// takes about a millisecond, a 100k-task one some 100 ms, so the big jobs take the fewest
/// samples criterion allows, of one iteration each.
pub fn configure(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    tasks: u64,
) {
    group.throughput(criterion::Throughput::Elements(tasks));
    group.warm_up_time(Duration::from_millis(500));
    if tasks > 10_000 {
        group.sample_size(10);
        group.sampling_mode(criterion::SamplingMode::Flat);
        group.measurement_time(Duration::from_millis(1500));
    } else {
        group.sample_size(20);
        group.measurement_time(Duration::from_secs(1));
    }
}
