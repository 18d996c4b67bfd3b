//! The future that runs a deferrer's cleanups before its body ends.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project::{pin_project, pinned_drop};

use super::Outcome;
use super::stack::{self, AsyncCleanup, Cleanup, Run, Shared};

/// Future returned by [`Deferrer::aclose`].
///
/// It runs the cleanups registered on a [`Deferrer`] so far, last registered first, and
/// leaves the deferrer empty and usable. A cleanup registered while it runs, by a cleanup or
/// by another task holding the deferrer, runs next. Exits see [`Outcome::is_ok`], as Python's
/// `aclose` passes no exception.
///
/// [`AsyncExit::exit`] of a [`Deferrer`] entered into another runs the same way, except that
/// its exits see the outer outcome.
///
/// # Examples
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use quattro::defer::Deferrer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let log = Arc::new(Mutex::new(Vec::new()));
/// let l = log.clone();
/// Deferrer::enable(|defer| async move {
///     let l2 = l.clone();
///     defer.push(async move { l2.lock().unwrap().push("closed early") });
///     defer.aclose().await;
///     l.lock().unwrap().push("after aclose");
/// })
/// .await;
/// assert_eq!(*log.lock().unwrap(), ["closed early", "after aclose"]);
/// # }
/// ```
///
/// # Panics
///
/// A panicking cleanup does not stop the others. Once all have run, the first panic is
/// resumed from the `Close` future, and later ones are logged with `tracing::error!`. Polling
/// after completion panics.
///
/// # Cancel safety
///
/// This future is cancel safe. Dropping it before it completes puts the cleanup it was
/// awaiting back on top of the stack, part-run. That cleanup and the ones not yet started then
/// run later, in the same order, with the deferrer's other cleanups: at the end of its body,
/// or when a standalone deferrer is closed or dropped. A panic already caught is resumed from
/// the drop, or logged if the thread is already unwinding.
///
/// [`Deferrer`]: super::Deferrer
/// [`Deferrer::aclose`]: super::Deferrer::aclose
/// [`AsyncExit::exit`]: super::AsyncExit::exit
#[pin_project(PinnedDrop)]
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Close {
    shared: Arc<Shared>,
    /// The async cleanup being awaited.
    current: Option<AsyncCleanup>,
    /// The outcome the exits see, and the panics so far.
    run: Run,
    done: bool,
}

impl Close {
    pub(crate) fn new(shared: Arc<Shared>, outcome: Outcome) -> Close {
        Close {
            shared,
            current: None,
            run: Run::new(outcome),
            done: false,
        }
    }
}

impl Future for Close {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        assert!(!*this.done, "`Close` polled after completion");
        std::task::ready!(this.run.poll_drain(this.shared, this.current, false, cx));
        *this.done = true;
        let mut panics = std::mem::take(&mut this.run.panics).into_iter();
        if let Some(first) = panics.next() {
            panics.for_each(|p| stack::log_panic(&*p));
            std::panic::resume_unwind(first);
        }
        Poll::Ready(())
    }
}

#[pinned_drop]
impl PinnedDrop for Close {
    fn drop(self: Pin<&mut Self>) {
        let this = self.project();
        if let Some(current) = this.current.take() {
            // Back on top, where it was: the stack's owner runs it in its turn.
            this.shared.push(Cleanup::Async(current));
        }
        let panics = std::mem::take(&mut this.run.panics);
        if !panics.is_empty() {
            stack::run_detached(
                None,
                Vec::new(),
                Run {
                    outcome: this.run.outcome,
                    panics,
                },
            );
        }
    }
}

impl fmt::Debug for Close {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Close")
            .field("done", &self.done)
            .field(
                "pending",
                &(self.shared.len() + usize::from(self.current.is_some())),
            )
            .field("outcome", &self.run.outcome)
            .finish()
    }
}
