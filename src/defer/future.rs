//! [`Enabled`]: runs a future, then its deferred cleanups.

use std::fmt;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project::{pin_project, pinned_drop};

use super::local::Current;
use super::stack::{self, AsyncCleanup, Cleanup, Payload, Shared};

/// A future that runs a body, then the cleanups deferred while it ran, last registered first;
/// it yields the body's output.
///
/// Returned by [`Deferrer::enable`] (closure form) and [`defer::enable`] (task-local form).
///
/// # Examples
///
/// ```
/// use quattro::defer::Deferrer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let fut = Deferrer::enable(|defer| async move {
///     defer.callback(|| println!("second"));
///     defer.callback(|| println!("first"));
/// });
/// println!("{fut:?}"); // Enabled { state: "running", pending: 0, task_local: false }
/// fut.await;
/// # }
/// ```
///
/// # Panics
///
/// If the body panics, every cleanup still runs, then the body's panic is resumed. If a
/// cleanup panics, the cleanups after it still run, then the first such panic is resumed
/// (panics of later cleanups, or all of them if the body panicked, are logged with
/// `tracing::error!`). Polling after completion panics.
///
/// # Cancel safety
///
/// Dropping the future before it completes drops the body (in the task-local form, with its
/// deferrer still current), then runs what is left of the cleanups without being awaited:
/// - the sync callbacks run at once, in the drop, last registered first;
/// - the async cleanups — first the one that was already running, if any, then the rest, last
///   registered first — are spawned as **one** task on the current tokio runtime that awaits
///   them in that order. Nobody awaits that task; a panic in one of them does not stop the
///   others, and the first is resumed at the end of the task (the runtime reports it).
///
/// So on this path a sync callback may run before an async cleanup registered after it. If no
/// tokio runtime is current when the future is dropped (dropped after its runtime shut down,
/// or from a plain thread), the async cleanups cannot run: they are dropped without running —
/// their destructors run, so any RAII inside them still happens — and the loss is logged with
/// `tracing::error!`. A runtime that is shutting down drops the spawned task unrun as it does
/// any new task. A sync callback that panics during the drop does not stop the others; the
/// first panic is then resumed from `drop`, or logged if the thread is already unwinding.
///
/// [`Deferrer::enable`]: super::Deferrer::enable
/// [`defer::enable`]: super::enable
#[pin_project(PinnedDrop)]
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Enabled<F: Future> {
    /// The body; `None` once it ended.
    #[pin]
    body: Option<F>,
    shared: Arc<Shared>,
    /// Task-local form: the deferrer is made current for each poll.
    local: bool,
    /// The async cleanup being awaited.
    current: Option<AsyncCleanup>,
    /// What the body ended with, kept while the cleanups run.
    output: Option<std::thread::Result<F::Output>>,
    /// Panics of cleanups, in order.
    panics: Vec<Payload>,
}

impl<F: Future> Enabled<F> {
    pub(crate) fn new(body: F, shared: Arc<Shared>, local: bool) -> Enabled<F> {
        Enabled {
            body: Some(body),
            shared,
            local,
            current: None,
            output: None,
            panics: Vec::new(),
        }
    }
}

impl<F: Future> Future for Enabled<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        let _current = this.local.then(|| Current::set(this.shared.clone()));

        if let Some(body) = this.body.as_mut().as_pin_mut() {
            let ended = match panic::catch_unwind(AssertUnwindSafe(|| body.poll(cx))) {
                Ok(Poll::Pending) => return Poll::Pending,
                Ok(Poll::Ready(value)) => Ok(value),
                Err(payload) => Err(payload),
            };
            *this.output = Some(ended);
            if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| this.body.set(None))) {
                this.panics.push(payload);
            }
        } else if this.output.is_none() {
            panic!("`Enabled` polled after completion");
        }

        loop {
            if let Some(cleanup) = this.current {
                if let Err(payload) = std::task::ready!(stack::poll_caught(cleanup, cx)) {
                    this.panics.push(payload);
                }
                *this.current = None;
            }
            match this.shared.pop() {
                Some(Cleanup::Sync(f)) => {
                    if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(f)) {
                        this.panics.push(payload);
                    }
                }
                Some(Cleanup::Async(fut)) => *this.current = Some(fut),
                None => break,
            }
        }

        let output = this
            .output
            .take()
            .expect("the body's output is kept until here");
        let mut panics = std::mem::take(this.panics).into_iter();
        match output {
            Err(body_panic) => {
                panics.for_each(|p| stack::log_panic(&*p));
                panic::resume_unwind(body_panic)
            }
            Ok(value) => match panics.next() {
                None => Poll::Ready(value),
                Some(first) => {
                    panics.for_each(|p| stack::log_panic(&*p));
                    panic::resume_unwind(first)
                }
            },
        }
    }
}

#[pinned_drop]
impl<F: Future> PinnedDrop for Enabled<F> {
    fn drop(self: Pin<&mut Self>) {
        let mut this = self.project();
        if this.body.is_none() && this.output.is_none() {
            return; // completed: every cleanup ran
        }
        let mut panics = std::mem::take(this.panics);
        if this.body.is_some() {
            // Drop the body while its deferrer is current: its destructors belong to it.
            let _current = this.local.then(|| Current::set(this.shared.clone()));
            if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| this.body.set(None))) {
                panics.push(payload);
            }
        }
        if let Some(Err(body_panic)) = this.output.take() {
            stack::log_panic_of(
                &*body_panic,
                "body of a deferring future panicked, then the future was dropped during cleanup",
            );
        }
        let cleanups = this.shared.close();
        stack::run_detached(this.current.take(), cleanups, panics);
    }
}

impl<F: Future> fmt::Debug for Enabled<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match (&self.body, &self.output) {
            (Some(_), _) => "running",
            (None, Some(_)) => "cleaning up",
            (None, None) => "done",
        };
        f.debug_struct("Enabled")
            .field("state", &state)
            .field(
                "pending",
                &(self.shared.len() + usize::from(self.current.is_some())),
            )
            .field("task_local", &self.local)
            .finish()
    }
}
