//! The guard through which a body uses a value that its deferrer closes later.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::Outcome;
use super::stack::{AsyncCleanup, Cleanup, Reach, Run, Shared, run_detached};

/// A guard through which the body uses a value entered into a [`Deferrer`].
///
/// It derefs to the value. When the guard is dropped, the value goes back to the deferrer,
/// which closes it in its turn, last registered first among the other cleanups. This is "use
/// it, then close it" without `Arc`: the cleanup, which must be `'static`, gets the value back
/// by value at the end.
///
/// Returned by [`Deferrer::enter`], [`Deferrer::enter_with`], [`Deferrer::enter_context`] and
/// [`defer::enter`]. See [When the value is closed](#when-the-value-is-closed) for a guard
/// that outlives the body.
///
/// # Examples
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use quattro::defer::Deferrer;
///
/// struct Conn {
///     name: &'static str,
///     log: Arc<Mutex<Vec<String>>>,
/// }
///
/// impl Conn {
///     async fn query(&mut self, sql: &str) -> usize {
///         self.log.lock().unwrap().push(format!("{}: {sql}", self.name));
///         sql.len()
///     }
///
///     async fn close(self) {
///         self.log.lock().unwrap().push(format!("close {}", self.name));
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let log = Arc::new(Mutex::new(Vec::new()));
/// let (l1, l2) = (log.clone(), log.clone());
/// Deferrer::enable(|defer| async move {
///     let mut users = defer.enter_with(Conn { name: "users", log: l1 }, |c, _| c.close());
///     let mut orders = defer.enter_with(Conn { name: "orders", log: l2 }, |c, _| c.close());
///     users.query("select 1").await + orders.query("select 2").await
/// })
/// .await;
/// assert_eq!(
///     *log.lock().unwrap(),
///     ["users: select 1", "orders: select 2", "close orders", "close users"]
/// );
/// # }
/// ```
///
/// # Panics
///
/// Dropping the guard after its turn runs the exit. A sync exit that panics then panics out of
/// the drop, or is logged if the thread is already unwinding.
///
/// # When the value is closed
///
/// Where the guard ends up decides when the value is closed. The value is never closed twice,
/// the deferrer never waits for a guard, and a value is never dropped unclosed without a
/// trace.
///
/// - **Dropped in the body**, the usual case: the value is back before the body ends. It is
///   closed with the deferrer's other cleanups, in order, and its exit sees the body's
///   [`Outcome`].
/// - **Still alive at its turn** (returned from the body, stored elsewhere, moved into a
///   spawned task): the deferrer logs a `tracing::warn!` and goes on with the other cleanups.
///   The value is closed when the guard is dropped, wherever that is, and its exit sees the
///   outcome of that turn. A sync exit runs in the drop. An async exit is spawned on the
///   current tokio runtime and, as on cancellation, a quattro cancel scope or task group in
///   which the guard is dropped waits for it.
/// - **Passed to [`std::mem::forget`]**: the value is never closed. Only the warning tells.
/// - **Taken out with [`Entered::into_inner`]**: the value is the caller's, and its exit is
///   dropped without running.
///
/// [`Deferrer`]: super::Deferrer
/// [`Deferrer::enter`]: super::Deferrer::enter
/// [`Deferrer::enter_with`]: super::Deferrer::enter_with
/// [`Deferrer::enter_context`]: super::Deferrer::enter_context
/// [`defer::enter`]: super::enter
#[must_use = "dropping the guard at once hands the value back to be closed at the end"]
pub struct Entered<T: Send + 'static> {
    /// `None` only once given back or taken.
    value: Option<T>,
    slot: Arc<Slot<T>>,
}

/// How a value is closed, given the outcome.
pub(crate) enum ExitFn<T> {
    Sync(Box<dyn FnOnce(T, Outcome) + Send>),
    Async(Box<dyn FnOnce(T, Outcome) -> AsyncCleanup + Send>),
}

impl<T: Send + 'static> ExitFn<T> {
    /// The cleanup that closes `value`.
    fn bind(self, value: T) -> Cleanup {
        match self {
            ExitFn::Sync(f) => Cleanup::Sync(Box::new(move |outcome| f(value, outcome))),
            ExitFn::Async(f) => Cleanup::Exit(Box::new(move |outcome| f(value, outcome))),
        }
    }
}

/// Where the guard and the stack meet; whoever comes second closes the value.
struct Slot<T: Send + 'static> {
    state: Mutex<SlotState<T>>,
}

struct SlotState<T> {
    phase: Phase<T>,
    /// Taken by whoever closes the value, or dropped by `into_inner`.
    exit: Option<ExitFn<T>>,
}

enum Phase<T> {
    /// The guard holds the value.
    Lent,
    /// The guard gave the value back; the stack closes it in its turn.
    Returned(T),
    /// The stack's turn came first; the guard closes the value, with this outcome.
    Detached(Outcome),
    /// Closed, or taken with `into_inner`.
    Done,
}

impl<T: Send + 'static> Slot<T> {
    // Nothing runs under the lock but moves of the value, so a poisoned lock is intact.
    fn lock(&self) -> MutexGuard<'_, SlotState<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: Send + 'static> Reach for Slot<T> {
    fn reach(&self, outcome: Outcome) -> Option<Cleanup> {
        let mut state = self.lock();
        match std::mem::replace(&mut state.phase, Phase::Done) {
            Phase::Returned(value) => state.exit.take().map(|exit| exit.bind(value)),
            Phase::Lent => {
                state.phase = Phase::Detached(outcome);
                drop(state);
                tracing::warn!(
                    value = std::any::type_name::<T>(),
                    "a deferred value is still held by its `Entered` guard at its turn: \
                     it will be closed when the guard is dropped"
                );
                None
            }
            other => {
                state.phase = other;
                None
            }
        }
    }
}

/// The stack's entry was dropped without reaching the slot (its stack was torn down by a
/// panic): close a value given back rather than lose it.
impl<T: Send + 'static> Drop for Slot<T> {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Phase::Returned(_) = state.phase {
            let Phase::Returned(value) = std::mem::replace(&mut state.phase, Phase::Done) else {
                unreachable!("matched above")
            };
            if let Some(exit) = state.exit.take() {
                run_detached(None, vec![exit.bind(value)], Run::new(Outcome::cancelled()));
            }
        }
    }
}

impl<T: Send + 'static> Entered<T> {
    /// Lends `value` out of `shared`, which closes it with `exit` in its turn.
    pub(crate) fn new(shared: &Shared, value: T, exit: ExitFn<T>) -> Entered<T> {
        let slot = Arc::new(Slot {
            state: Mutex::new(SlotState {
                phase: Phase::Lent,
                exit: Some(exit),
            }),
        });
        shared.push(Cleanup::Slot(slot.clone()));
        Entered {
            value: Some(value),
            slot,
        }
    }

    /// Takes the value out of the guard for good, without running its exit.
    ///
    /// Use it to hand a value on instead of closing it. It is an associated function, not a
    /// method, so that it does not hide a method of `T`.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::defer::Deferrer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let kept = Deferrer::enable(|defer| async move {
    ///     let conn = defer.enter_context(String::from("conn"), |_, _| unreachable!());
    ///     quattro::defer::Entered::into_inner(conn)
    /// })
    /// .await;
    /// assert_eq!(kept, "conn");
    /// # }
    /// ```
    pub fn into_inner(mut this: Entered<T>) -> T {
        let value = this.value.take().expect("the guard holds its value");
        let exit = {
            let mut state = this.slot.lock();
            state.phase = Phase::Done;
            state.exit.take()
        };
        drop(exit);
        value
    }
}

impl<T: Send + 'static> Drop for Entered<T> {
    fn drop(&mut self) {
        let Some(value) = self.value.take() else {
            return;
        };
        let mut state = self.slot.lock();
        match state.phase {
            Phase::Lent => state.phase = Phase::Returned(value),
            Phase::Detached(outcome) => {
                state.phase = Phase::Done;
                let exit = state.exit.take();
                drop(state);
                if let Some(exit) = exit {
                    run_detached(None, vec![exit.bind(value)], Run::new(outcome));
                }
            }
            // The guard holds the value, so it was neither given back nor closed.
            Phase::Returned(_) | Phase::Done => unreachable!("a lent value was closed"),
        }
    }
}

impl<T: Send + 'static> Deref for Entered<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.value.as_ref().expect("the guard holds its value")
    }
}

impl<T: Send + 'static> DerefMut for Entered<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value.as_mut().expect("the guard holds its value")
    }
}

impl<T: Send + 'static + fmt::Debug> fmt::Debug for Entered<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let closes_on_drop = matches!(self.slot.lock().phase, Phase::Detached(_));
        let mut out = f.debug_struct("Entered");
        if let Some(value) = &self.value {
            out.field("value", value);
        }
        out.field("closes_on_drop", &closes_on_drop).finish()
    }
}
