//! The future that runs a body, then its deferred cleanups.

use std::fmt;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project::{pin_project, pinned_drop};

use super::Outcome;
use super::local::Current;
use super::stack::{self, AsyncCleanup, Run, Shared};

/// Future returned by [`Deferrer::enable`] and [`defer::enable`], and by their `try_` forms.
///
/// It runs the body, then the cleanups deferred while the body ran, last registered first,
/// and returns the body's output. Exit callbacks see the body's [`Outcome`]. The `try_` forms
/// tell an `Err` from an `Ok`.
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
/// cleanup panics, the cleanups after it still run, and their exits see
/// [`Outcome::is_panic`]. Then the first such panic is resumed. The panics that are not
/// resumed (of later cleanups, or of all of them if the body panicked) are logged with
/// `tracing::error!`. Polling after completion panics.
///
/// # Cancel safety
///
/// Dropping the future before it completes drops the body, then runs the cleanups left
/// without awaiting them. In the task-local form, the deferrer is still current while the body
/// is dropped. Values held by [`Entered`](super::Entered) guards in the body are given back
/// when the body is dropped, before the cleanups run.
///
/// - The sync callbacks run at once, in the drop, last registered first.
/// - The async cleanups are spawned as **one** task on the current tokio runtime. It awaits
///   the cleanup that was already running, if any, then the rest, last registered first.
///
/// So on this path, a sync callback may run before an async cleanup registered after it.
/// Every exit sees [`Outcome::is_cancelled`], even if the body had already ended, since the
/// caller never gets its output.
///
/// **Inside quattro, the task stays in the structure.** When the future is dropped while a
/// cancel scope ([`move_on_after`], [`fail_after`], ...), a [`TaskGroup`] body or a group task
/// is being polled or dropped, the innermost of them completes only after the task ended (a
/// group task passes it on to its group). This holds whatever dropped the future: the
/// scope's deadline or `cancel()`, a `select!` inside it, or an aborted or failing group task.
/// A cancelled `fail_after(d, transfer())` thus returns only once `transfer`'s connections
/// are closed. So that a hanging cleanup cannot hang that owner forever, the deadlines in
/// force bound the task. See [Deadlines of the cleanups](#deadlines-of-the-cleanups).
///
/// **Outside quattro**, nobody waits for the task. Dropped by `tokio::time::timeout` or a
/// `select!` with no quattro scope or group around it, or by a plain `drop`, the future leaves
/// a detached task, with no deadline.
///
/// # Deadlines of the cleanups
///
/// The task that runs the async cleanups of a future dropped inside quattro runs them in a
/// cancel scope of its own. Its deadline is the earlier of:
///
/// - the deadline in force where the future was dropped ([`current_effective_deadline`] read
///   in the drop), if it is still ahead. Dropped by a `select!` inside `fail_after(2s, ..)`,
///   the cleanups have until that deadline.
/// - the deadline in force where the owner waits for the task, read each time the owner polls
///   it.
///
/// A deadline that had already passed where the future was dropped, or a `cancel()`, is the
/// cancellation that dropped it. The cleanups are shielded from it, since otherwise they could
/// not run at all. They get what the owner's caller has, as if the owner awaited them right
/// after it ended: `fail_after(1s, ..)` inside `fail_after(2s, ..)` gives them until 2 s, and
/// a `fail_after` with no deadline around it waits for them as long as they take.
///
/// The cleanups see that deadline through [`current_effective_deadline`]. When it passes, the
/// running cleanup is dropped at its suspension point, with the ones not yet started (their
/// destructors run), and a `tracing::warn!` says so.
///
/// # Panics and lost cleanups after a drop
///
/// A sync callback that panics in the drop does not stop the others. The first panic is
/// resumed from `drop`, or logged if the thread is already unwinding. An async cleanup that
/// panics does not stop the others either. The first panic is resumed at the end of the task,
/// and the runtime reports it.
///
/// If no tokio runtime is current when the future is dropped (its runtime shut down, or a
/// plain thread drops it), the async cleanups cannot run. They are dropped without running,
/// so their destructors still run, and the loss is logged with `tracing::error!`. A runtime
/// that is shutting down drops the spawned task unrun, as it does any new task, and an owner
/// waiting for it stops waiting.
///
/// [`Deferrer::enable`]: super::Deferrer::enable
/// [`Deferrer::try_enable`]: super::Deferrer::try_enable
/// [`defer::enable`]: super::enable
/// [`defer::try_enable`]: super::try_enable
/// [`move_on_after`]: crate::move_on_after
/// [`fail_after`]: crate::fail_after
/// [`TaskGroup`]: crate::TaskGroup
/// [`current_effective_deadline`]: crate::current_effective_deadline
#[pin_project(PinnedDrop)]
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Enabled<F: Future> {
    /// The body; `None` once it ended.
    #[pin]
    body: Option<F>,
    shared: Arc<Shared>,
    /// Task-local form: the deferrer is made current for each poll.
    local: bool,
    /// Tells how a returned value counts: always `Ok` (`enable`), or `Err` for an `Err`
    /// (`try_enable`).
    classify: fn(&F::Output) -> Outcome,
    /// The async cleanup being awaited.
    current: Option<AsyncCleanup>,
    /// What the body ended with, kept while the cleanups run.
    output: Option<std::thread::Result<F::Output>>,
    /// The outcome the exits see, and the panics of cleanups, in order.
    run: Run,
}

impl<F: Future> Enabled<F> {
    pub(crate) fn new(
        body: F,
        shared: Arc<Shared>,
        local: bool,
        classify: fn(&F::Output) -> Outcome,
    ) -> Enabled<F> {
        Enabled {
            body: Some(body),
            shared,
            local,
            classify,
            current: None,
            output: None,
            // Replaced when the body ends; until then only the drop path reads it.
            run: Run::new(Outcome::cancelled()),
        }
    }
}

/// The classification of [`Deferrer::enable`](super::Deferrer::enable): any value is `Ok`.
pub(crate) fn any_value_is_ok<T>(_: &T) -> Outcome {
    Outcome::ok()
}

/// The classification of [`Deferrer::try_enable`](super::Deferrer::try_enable).
pub(crate) fn ok_or_err<T, E>(result: &Result<T, E>) -> Outcome {
    match result {
        Ok(_) => Outcome::ok(),
        Err(_) => Outcome::err(),
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
            this.run.outcome = match &ended {
                Ok(value) => (this.classify)(value),
                Err(_) => Outcome::panicked(),
            };
            *this.output = Some(ended);
            if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| this.body.set(None))) {
                this.run.record(payload);
            }
        } else if this.output.is_none() {
            panic!("`Enabled` polled after completion");
        }

        std::task::ready!(this.run.poll_drain(this.shared, this.current, true, cx));

        let output = this
            .output
            .take()
            .expect("the body's output is kept until here");
        let mut panics = std::mem::take(&mut this.run.panics).into_iter();
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
        // The caller never gets the output: every exit from here on sees a cancellation.
        let mut run = std::mem::replace(this.run, Run::new(Outcome::cancelled()));
        run.outcome = Outcome::cancelled();
        if this.body.is_some() {
            // Drop the body while its deferrer is current: its destructors belong to it.
            let _current = this.local.then(|| Current::set(this.shared.clone()));
            if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| this.body.set(None))) {
                run.record(payload);
            }
        }
        if let Some(Err(body_panic)) = this.output.take() {
            stack::log_panic_of(
                &*body_panic,
                "body of a deferring future panicked, then the future was dropped during cleanup",
            );
        }
        let cleanups = this.shared.close(Outcome::cancelled());
        stack::run_detached(this.current.take(), cleanups, run);
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
