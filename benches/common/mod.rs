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
