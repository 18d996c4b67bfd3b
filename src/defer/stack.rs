//! The shared stack of cleanups behind a [`Deferrer`], and how cleanups run when nobody can
//! await them (the enabled future was dropped, or a cleanup was registered too late).
//!
//! [`Deferrer`]: super::Deferrer

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

/// A boxed async cleanup. `Send + 'static` so that it can be handed to the runtime.
pub(crate) type AsyncCleanup = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The payload of a caught panic.
pub(crate) type Payload = Box<dyn Any + Send>;

/// One deferred action.
pub(crate) enum Cleanup {
    Sync(Box<dyn FnOnce() + Send>),
    Async(AsyncCleanup),
}

/// The state one enabled future shares with its [`Deferrer`] handles.
///
/// [`Deferrer`]: super::Deferrer
#[derive(Default)]
pub(crate) struct Shared {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// In order of registration; run from the back.
    cleanups: Vec<Cleanup>,
    /// The enabled future has run (or given away) every cleanup; nothing is collected any more.
    closed: bool,
}

impl Shared {
    // A cleanup never runs while the lock is held, so a poisoned lock only means that some
    // unrelated code panicked between two lines of ours: the stack itself is intact.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a cleanup, or runs it detached if the owner already finished.
    pub(crate) fn push(&self, cleanup: Cleanup) {
        let mut state = self.lock();
        if state.closed {
            drop(state);
            tracing::debug!("cleanup deferred after its function ended: running it now");
            run_detached(None, vec![cleanup], Vec::new());
        } else {
            state.cleanups.push(cleanup);
        }
    }

    /// The most recently registered cleanup; closes the stack once it is empty, in the same
    /// critical section, so that a concurrent registration is either popped or run detached.
    pub(crate) fn pop(&self) -> Option<Cleanup> {
        let mut state = self.lock();
        let cleanup = state.cleanups.pop();
        if cleanup.is_none() {
            state.closed = true;
        }
        cleanup
    }

    /// Closes the stack and takes what is left, in the order to run it (last registered first).
    pub(crate) fn close(&self) -> Vec<Cleanup> {
        let mut state = self.lock();
        state.closed = true;
        let mut cleanups = std::mem::take(&mut state.cleanups);
        cleanups.reverse();
        cleanups
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().cleanups.len()
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("Shared")
            .field("pending", &state.cleanups.len())
            .field("closed", &state.closed)
            .finish()
    }
}

/// Runs cleanups that nobody will await: the sync ones here and now, the async ones (after
/// `current`, the one that was already running) in order in one task on the current runtime.
///
/// `panics` holds panics caught before; the first of all of them is resumed at the end, unless
/// the thread is already unwinding, in which case they are logged.
pub(crate) fn run_detached(
    current: Option<AsyncCleanup>,
    cleanups: Vec<Cleanup>,
    mut panics: Vec<Payload>,
) {
    let mut later: Vec<AsyncCleanup> = current.into_iter().collect();
    for cleanup in cleanups {
        match cleanup {
            Cleanup::Sync(f) => {
                if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(f)) {
                    panics.push(payload);
                }
            }
            Cleanup::Async(fut) => later.push(fut),
        }
    }
    if !later.is_empty() {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                // The task is detached on purpose: its panics are reported by the runtime.
                drop(handle.spawn(run_in_order(later)));
            }
            Err(_) => {
                tracing::error!(
                    count = later.len(),
                    "no tokio runtime to run deferred async cleanups: dropped without running"
                );
                if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| drop(later))) {
                    panics.push(payload);
                }
            }
        }
    }
    let mut panics = panics.into_iter();
    if let Some(first) = panics.next() {
        for other in panics {
            log_panic(&*other);
        }
        if std::thread::panicking() {
            log_panic(&*first);
        } else {
            panic::resume_unwind(first);
        }
    }
}

/// Awaits each cleanup in turn; a panic does not stop the ones after it, and the first is
/// resumed at the end.
async fn run_in_order(cleanups: Vec<AsyncCleanup>) {
    let mut first = None;
    for fut in cleanups {
        if let Err(payload) = (CatchUnwind(fut)).await {
            match first {
                None => first = Some(payload),
                Some(_) => log_panic(&*payload),
            }
        }
    }
    if let Some(payload) = first {
        panic::resume_unwind(payload);
    }
}

/// Polls an async cleanup, turning a panic into a value.
pub(crate) fn poll_caught(
    fut: &mut AsyncCleanup,
    cx: &mut Context<'_>,
) -> Poll<Result<(), Payload>> {
    match panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
        Ok(Poll::Pending) => Poll::Pending,
        Ok(Poll::Ready(())) => Poll::Ready(Ok(())),
        Err(payload) => Poll::Ready(Err(payload)),
    }
}

struct CatchUnwind(AsyncCleanup);

impl Future for CatchUnwind {
    type Output = Result<(), Payload>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        poll_caught(&mut self.0, cx)
    }
}

/// Reports a panic that cannot be resumed because another one already is.
pub(crate) fn log_panic(payload: &(dyn Any + Send)) {
    log_panic_of(payload, "a deferred cleanup panicked");
}

/// Reports a panic that cannot be resumed, with what it came from.
pub(crate) fn log_panic_of(payload: &(dyn Any + Send), what: &'static str) {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("Box<dyn Any>");
    tracing::error!(panic = message, "{what}");
}
