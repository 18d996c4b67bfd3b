//! Helpers shared by tests/scope.rs and tests/deadline.rs: durations, a test clock, and the
//! `on_both_runtimes!` macro that runs one body on the paused clock and on a multi-thread
//! runtime with real time.
#![allow(dead_code, unused_macros)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, sleep};

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// How a test body sees time: tokio's paused clock on a current-thread runtime (timings are
/// exact), or real time on a multi-thread runtime (timings are only lower bounds).
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub unit: Duration,
    pub paused: bool,
}

impl Clock {
    pub const PAUSED: Clock = Clock {
        unit: Duration::from_millis(100),
        paused: true,
    };
    /// Small units: the longest wait a test expects to happen is 5 units (50 ms).
    pub const REAL: Clock = Clock {
        unit: Duration::from_millis(10),
        paused: false,
    };

    pub fn t(self, units: u32) -> Duration {
        self.unit * units
    }

    /// A wait that only a cancellation ends: long, yet short enough (1 s of real time) that a
    /// lost cancellation fails the test instead of hanging it.
    pub fn forever(self) -> tokio::time::Sleep {
        sleep(self.t(100))
    }

    /// `start.elapsed()` is exactly `units` on the paused clock, and at least that on real time
    /// (timers never fire early; how late they fire depends on the machine).
    #[track_caller]
    pub fn assert_elapsed(self, start: Instant, units: u32) {
        let elapsed = start.elapsed();
        let expected = self.t(units);
        if self.paused {
            assert_eq!(elapsed, expected, "elapsed on the paused clock");
        } else {
            assert!(elapsed >= expected, "elapsed {elapsed:?} < {expected:?}");
        }
    }
}

/// Runs each async test body twice: on a current-thread runtime with the paused clock, and on
/// a two-worker multi-thread runtime with real time. The body gets a [`Clock`].
macro_rules! on_both_runtimes {
    ($( $(#[doc = $doc:literal])* async fn $name:ident($clock:ident) $body:block )*) => {$(
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(start_paused = true)]
            async fn current_thread_paused_clock() {
                let $clock = Clock::PAUSED;
                $body
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn multi_thread_real_clock() {
                let $clock = Clock::REAL;
                $body
            }
        }
    )*};
}

/// Counts the polls of the future it wraps.
pub struct CountPolls<F> {
    inner: Pin<Box<F>>,
    polls: Arc<AtomicUsize>,
}

impl<F: Future> Future for CountPolls<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        self.inner.as_mut().poll(cx)
    }
}

pub fn count_polls<F: Future>(inner: F) -> (CountPolls<F>, Arc<AtomicUsize>) {
    let polls = Arc::new(AtomicUsize::new(0));
    let fut = CountPolls {
        inner: Box::pin(inner),
        polls: polls.clone(),
    };
    (fut, polls)
}
