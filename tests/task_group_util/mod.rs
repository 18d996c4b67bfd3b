//! Helpers shared by the task group test binaries (`tests/task_group*.rs`).
#![allow(dead_code, unused_macros, unused_imports)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::time::Instant;

/// Stamps out one test body twice: on the current-thread runtime with the paused clock
/// (`<name>::paused`) and on a two-worker multi-thread runtime with real time
/// (`<name>::multi_thread`). Attributes (`#[ignore = ".."]`) apply to both.
macro_rules! both_runtimes {
    ($(#[$attr:meta])* async fn $name:ident() $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $(#[$attr])*
            #[tokio::test(start_paused = true)]
            async fn paused() $body

            $(#[$attr])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn multi_thread() $body
        }
    };
}
pub(crate) use both_runtimes;

/// Long enough to never end during a test; tasks sleeping this long are always cancelled.
pub const NEVER: Duration = Duration::from_secs(3600);

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Whether the test runs on the paused current-thread runtime (exact timing) rather than the
/// multi-thread one (real time: assert semantics, not timing).
pub fn is_paused() -> bool {
    Handle::current().runtime_flavor() == RuntimeFlavor::CurrentThread
}

/// Exactly `expected` on the paused clock; at least `expected` in real time.
#[track_caller]
pub fn assert_elapsed(start: Instant, expected: Duration) {
    let elapsed = start.elapsed();
    if is_paused() {
        assert_eq!(elapsed, expected, "elapsed on the paused clock");
    } else {
        assert!(
            elapsed + Duration::from_millis(1) >= expected,
            "elapsed {elapsed:?} < {expected:?}"
        );
    }
}

/// A shared counter; `guard()` makes a value that bumps it when dropped (and counts how many
/// guards were made, so real-time tests can check "every guard made was dropped").
#[derive(Clone, Default, Debug)]
pub struct Counter(Arc<AtomicUsize>, Arc<AtomicUsize>);

impl Counter {
    pub fn new() -> Counter {
        Counter::default()
    }
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
    pub fn incr(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    /// How many guards were made.
    pub fn made(&self) -> usize {
        self.1.load(Ordering::SeqCst)
    }
    pub fn guard(&self) -> DropGuard {
        self.1.fetch_add(1, Ordering::SeqCst);
        DropGuard(self.clone())
    }
}

/// Bumps its counter when dropped.
#[derive(Debug)]
pub struct DropGuard(Counter);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.incr();
    }
}

/// Polls `cond` after yields and 1 ms sleeps until it holds; panics after ~2 s (real or
/// paused) so a hang shows up as a failure.
#[track_caller]
pub fn eventually(cond: impl Fn() -> bool) -> impl std::future::Future<Output = ()> {
    let caller = std::panic::Location::caller();
    async move {
        for _ in 0..2000 {
            if cond() {
                return;
            }
            tokio::task::yield_now().await;
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("condition never became true (waited from {caller})");
    }
}

/// Alive tasks on the current runtime.
pub fn alive_tasks() -> usize {
    Handle::current().metrics().num_alive_tasks()
}
