//! The shared stack of cleanups behind a [`Deferrer`].
//!
//! It also runs the cleanups that nobody can await: those of a dropped enabled future, and
//! those registered too late.
//!
//! [`Deferrer`]: super::Deferrer

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use super::Outcome;
use crate::error::panic::{NON_STRING, message as panic_message};

/// A boxed async cleanup. `Send + 'static` so that it can be handed to the runtime.
pub(crate) type AsyncCleanup = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The payload of a caught panic.
pub(crate) type Payload = Box<dyn Any + Send>;

/// One deferred action.
pub(crate) enum Cleanup {
    /// A sync callback; `callback` ignores the outcome, `callback_exit` reads it.
    Sync(Box<dyn FnOnce(Outcome) + Send>),
    /// An async cleanup built when it was registered (`push`).
    Async(AsyncCleanup),
    /// An async exit, built from the outcome when its turn comes (`push_exit`).
    Exit(Box<dyn FnOnce(Outcome) -> AsyncCleanup + Send>),
    /// A value lent out through an [`Entered`](super::Entered) guard.
    Slot(Arc<dyn Reach>),
}

/// The stack's side of a value lent out through an [`Entered`](super::Entered) guard.
pub(crate) trait Reach: Send + Sync {
    /// The value's turn has come: the exit to run now if the guard gave the value back, or
    /// `None` if the guard still holds it (it then closes the value itself when dropped) or
    /// took it for good.
    fn reach(&self, outcome: Outcome) -> Option<Cleanup>;
}

/// The state one enabled future (or one standalone stack) shares with its [`Deferrer`]
/// handles.
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
    /// Set once the enabled future has run (or given away) every cleanup: nothing is collected
    /// any more, and a late cleanup runs at once and sees this outcome.
    closed: Option<Outcome>,
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
        if let Some(outcome) = state.closed {
            drop(state);
            tracing::debug!("cleanup deferred after its function ended: running it now");
            run_detached(None, vec![cleanup], Run::new(outcome));
        } else {
            state.cleanups.push(cleanup);
        }
    }

    /// The most recently registered cleanup. With `close_with`, closes the stack once it is
    /// empty, in the same critical section, so that a concurrent registration is either
    /// popped or run detached.
    pub(crate) fn pop(&self, close_with: Option<Outcome>) -> Option<Cleanup> {
        let mut state = self.lock();
        let cleanup = state.cleanups.pop();
        if cleanup.is_none() && state.closed.is_none() {
            state.closed = close_with;
        }
        cleanup
    }

    /// Closes the stack and takes what is left, in the order to run it (last registered first).
    pub(crate) fn close(&self, outcome: Outcome) -> Vec<Cleanup> {
        let mut state = self.lock();
        state.closed.get_or_insert(outcome);
        let mut cleanups = std::mem::take(&mut state.cleanups);
        cleanups.reverse();
        cleanups
    }

    /// A new open stack holding `cleanups` (in order of registration).
    pub(crate) fn with_cleanups(cleanups: Vec<Cleanup>) -> Shared {
        Shared {
            state: Mutex::new(State {
                cleanups,
                closed: None,
            }),
        }
    }

    /// Takes every cleanup, in order of registration, leaving the stack empty and open.
    pub(crate) fn take_all(&self) -> Vec<Cleanup> {
        std::mem::take(&mut self.lock().cleanups)
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().cleanups.len()
    }
}

/// A stack that nobody closed (one made by `Deferrer::new` or `pop_all`, whose last handle
/// is gone): its cleanups run as on cancellation rather than being lost.
impl Drop for Shared {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if state.closed.is_some() || state.cleanups.is_empty() {
            return;
        }
        let mut cleanups = std::mem::take(&mut state.cleanups);
        cleanups.reverse();
        tracing::debug!(
            count = cleanups.len(),
            "deferrer dropped without being closed: running its cleanups now"
        );
        run_detached(None, cleanups, Run::new(Outcome::cancelled()));
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("Shared")
            .field("pending", &state.cleanups.len())
            .field("closed", &state.closed.is_some())
            .finish()
    }
}

/// The state of a run of cleanups: the outcome the next exit sees, and the panics so far.
pub(crate) struct Run {
    pub(crate) outcome: Outcome,
    pub(crate) panics: Vec<Payload>,
}

impl Run {
    pub(crate) fn new(outcome: Outcome) -> Run {
        Run {
            outcome,
            panics: Vec::new(),
        }
    }

    /// Keeps a panic; the exits after it see a panic too (it will be resumed), unless the
    /// future was cancelled, which stays what they see.
    pub(crate) fn record(&mut self, payload: Payload) {
        self.panics.push(payload);
        if !self.outcome.is_cancelled() {
            self.outcome = Outcome::panicked();
        }
    }

    /// Starts a cleanup: runs it if it is sync, returns the future to await if it is async.
    pub(crate) fn start(&mut self, cleanup: Cleanup) -> Option<AsyncCleanup> {
        let outcome = self.outcome;
        match cleanup {
            Cleanup::Sync(f) => {
                if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| f(outcome))) {
                    self.record(payload);
                }
                None
            }
            Cleanup::Async(fut) => Some(fut),
            Cleanup::Exit(f) => match panic::catch_unwind(AssertUnwindSafe(|| f(outcome))) {
                Ok(fut) => Some(fut),
                Err(payload) => {
                    self.record(payload);
                    None
                }
            },
            Cleanup::Slot(slot) => slot.reach(outcome).and_then(|c| self.start(c)),
        }
    }

    /// Runs the cleanups of `shared` to the end, last registered first, from `current` (the
    /// one being awaited). With `close`, closes the stack once it is empty (see
    /// [`Shared::pop`]).
    pub(crate) fn poll_drain(
        &mut self,
        shared: &Shared,
        current: &mut Option<AsyncCleanup>,
        close: bool,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        loop {
            if let Some(fut) = current {
                if let Err(payload) = std::task::ready!(poll_caught(fut, cx)) {
                    self.record(payload);
                }
                *current = None;
            }
            match shared.pop(close.then_some(self.outcome)) {
                Some(cleanup) => *current = self.start(cleanup),
                None => return Poll::Ready(()),
            }
        }
    }
}

/// Runs cleanups that nobody will await: the sync ones here and now, the async ones (after
/// `current`, the one that was already running) in order in one task on the current runtime,
/// handed to the enclosing quattro owner if there is one (see [`super::drain`]).
/// Every exit sees `run.outcome`; an async exit is built in that task, when its turn comes.
///
/// `run.panics` holds panics caught before; the first of all of them is resumed at the end,
/// unless the thread is already unwinding, in which case they are logged.
pub(crate) fn run_detached(current: Option<AsyncCleanup>, cleanups: Vec<Cleanup>, run: Run) {
    let Run {
        outcome,
        mut panics,
    } = run;
    let mut later: Vec<AsyncCleanup> = current.into_iter().collect();
    for cleanup in cleanups {
        detach(cleanup, outcome, &mut later, &mut panics);
    }
    if !later.is_empty() {
        match tokio::runtime::Handle::try_current() {
            // Inside a quattro owner the task is handed to it; else it is detached. Either way
            // nobody joins it: its panics are reported by the runtime.
            Ok(handle) => super::drain::spawn(&handle, later),
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

/// One cleanup of [`run_detached`]: a sync one runs now, an async one joins `later`.
fn detach(
    cleanup: Cleanup,
    outcome: Outcome,
    later: &mut Vec<AsyncCleanup>,
    panics: &mut Vec<Payload>,
) {
    match cleanup {
        Cleanup::Sync(f) => {
            if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| f(outcome))) {
                panics.push(payload);
            }
        }
        Cleanup::Async(fut) => later.push(fut),
        Cleanup::Exit(f) => later.push(Box::pin(async move { f(outcome).await })),
        Cleanup::Slot(slot) => {
            if let Some(cleanup) = slot.reach(outcome) {
                detach(cleanup, outcome, later, panics);
            }
        }
    }
}

/// Awaits each cleanup in turn; a panic does not stop the ones after it, and the first is
/// resumed at the end.
pub(crate) async fn run_in_order(cleanups: Vec<AsyncCleanup>) {
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
fn poll_caught(fut: &mut AsyncCleanup, cx: &mut Context<'_>) -> Poll<Result<(), Payload>> {
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
    let message = panic_message(payload).unwrap_or(NON_STRING);
    tracing::error!(panic = message, "{what}");
}
