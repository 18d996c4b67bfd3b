//! The task-local form of `defer`, reached through free functions.
//!
//! [`enable`] makes a deferrer current while its future is polled, and [`push`], [`callback`]
//! and [`enter`] reach it from any function that future calls.

use std::cell::Cell;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::sync::Arc;

use super::future::{any_value_is_ok, ok_or_err};
use super::stack::{Cleanup, Shared};
use super::{Deferrer, Enabled, Enter};

thread_local! {
    /// The deferrer of the innermost [`Enabled`] future (task-local form) being polled on this
    /// thread. Swapped in for the duration of one poll, like the deadline frame.
    static CURRENT: Cell<Option<Arc<Shared>>> = const { Cell::new(None) };
}

/// Makes a deferrer current until dropped, then restores the one before (also on unwind).
pub(crate) struct Current {
    prev: Option<Arc<Shared>>,
}

impl Current {
    pub(crate) fn set(shared: Arc<Shared>) -> Current {
        Current {
            prev: CURRENT.replace(Some(shared)),
        }
    }
}

impl Drop for Current {
    fn drop(&mut self) {
        CURRENT.set(self.prev.take());
    }
}

fn current_shared() -> Result<Arc<Shared>, NotEnabled> {
    CURRENT.with(|cell| {
        let shared = cell.take();
        let found = shared.clone();
        cell.set(shared);
        found.ok_or(NotEnabled(()))
    })
}

/// Runs a future with a task-local deferrer, then the cleanups registered on it, last first.
///
/// Code inside the future registers cleanups with [`push`], [`callback`] or [`enter`]. This is
/// the form for functions whose signature must stay as it is: nothing is passed in, and any
/// function the future calls and awaits can register cleanups. Each `enable`d future runs its
/// own cleanups when it ends, so nested ones unwind like nested function calls.
///
/// The deferrer is current only while the returned future itself is polled, so a task spawned
/// from inside does not see it. To share it on purpose, pass the [`Deferrer`] handle from
/// [`current`], which is `Send`.
///
/// Ending, panics and cancellation behave as for [`Deferrer::enable`].
///
/// # Examples
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use quattro::defer;
///
/// async fn work(log: Arc<Mutex<Vec<&'static str>>>) -> u32 {
///     let l = log.clone();
///     defer::callback(move || l.lock().unwrap().push("closed")).unwrap();
///     log.lock().unwrap().push("working");
///     42
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let log = Arc::new(Mutex::new(Vec::new()));
/// assert_eq!(defer::enable(work(log.clone())).await, 42);
/// assert_eq!(*log.lock().unwrap(), ["working", "closed"]);
/// # }
/// ```
///
/// # Panics
///
/// A panic of the future or of a cleanup is resumed once every cleanup has run. See
/// [`Enabled`].
///
/// # Cancel safety
///
/// Dropping the returned future runs the sync cleanups at once and spawns the async ones. See
/// [`Enabled`].
pub fn enable<F: IntoFuture>(fut: F) -> Enabled<F::IntoFuture> {
    Enabled::new(fut.into_future(), Arc::default(), true, any_value_is_ok)
}

/// Runs a future that returns a `Result` with a task-local deferrer, then its cleanups.
///
/// This is [`enable`], except that exit callbacks see an `Err` as
/// [`Outcome::is_err`](super::Outcome::is_err). See [`Deferrer::try_enable`].
///
/// # Examples
///
/// ```
/// use quattro::defer;
///
/// async fn save(fail: bool) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
///     defer::current()?.callback_exit(|outcome| {
///         println!("{}", if outcome.is_ok() { "commit" } else { "rollback" });
///     });
///     if fail { Err("disk full".into()) } else { Ok(()) }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// assert!(defer::try_enable(save(false)).await.is_ok()); // prints "commit"
/// assert!(defer::try_enable(save(true)).await.is_err()); // prints "rollback"
/// # }
/// ```
///
/// # Panics
///
/// See [`enable`].
///
/// # Cancel safety
///
/// See [`enable`].
pub fn try_enable<F, T, E>(fut: F) -> Enabled<F::IntoFuture>
where
    F: IntoFuture<Output = Result<T, E>>,
{
    Enabled::new(fut.into_future(), Arc::default(), true, ok_or_err::<T, E>)
}

/// Returns the deferrer of the current [`enable`]d future.
///
/// Use it for the methods that the free functions do not cover ([`Deferrer::push_exit`],
/// [`Deferrer::enter_with`], [`Deferrer::aclose`], ...). The handle stays tied to that
/// future's stack wherever it goes. See [`Deferrer`].
///
/// # Examples
///
/// ```
/// use quattro::defer;
///
/// async fn work() -> Result<(), defer::NotEnabled> {
///     let defer = defer::current()?;
///     defer.push_exit(|outcome| async move { println!("body {outcome}") });
///     Ok(())
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// defer::enable(work()).await.unwrap(); // prints "body returned"
/// assert!(work().await.is_err());
/// # }
/// ```
///
/// # Errors
///
/// Returns [`NotEnabled`] if no [`enable`]d future is being polled on this thread.
pub fn current() -> Result<Deferrer, NotEnabled> {
    Ok(Deferrer {
        shared: current_shared()?,
    })
}

/// Defers an async cleanup to the end of the current [`enable`]d future.
///
/// See [`Deferrer::push`] for the bounds and what happens on cancellation.
///
/// # Examples
///
/// ```
/// use quattro::defer;
///
/// async fn open() -> Result<(), defer::NotEnabled> {
///     defer::push(async { println!("closing") })?;
///     println!("working");
///     Ok(())
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// defer::enable(open()).await.unwrap(); // prints "working", then "closing"
/// assert!(open().await.is_err()); // not enabled
/// # }
/// ```
///
/// # Errors
///
/// Returns [`NotEnabled`] if no [`enable`]d future is being polled on this thread. The
/// cleanup is then dropped without running.
pub fn push<F>(cleanup: F) -> Result<(), NotEnabled>
where
    F: Future<Output = ()> + Send + 'static,
{
    current_shared()?.push(Cleanup::Async(Box::pin(cleanup)));
    Ok(())
}

/// Defers a sync callback to the end of the current [`enable`]d future.
///
/// See [`Deferrer::callback`].
///
/// # Examples
///
/// ```
/// use quattro::defer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// defer::enable(async {
///     defer::callback(|| println!("done")).unwrap();
/// })
/// .await;
/// # }
/// ```
///
/// # Errors
///
/// Returns [`NotEnabled`] if no [`enable`]d future is being polled on this thread. The
/// callback is then dropped without running.
pub fn callback<F>(f: F) -> Result<(), NotEnabled>
where
    F: FnOnce() + Send + 'static,
{
    current_shared()?.push(Cleanup::Sync(Box::new(move |_| f())));
    Ok(())
}

/// Enters a value with an async exit into the current [`enable`]d future's deferrer.
///
/// Returns an [`Entered`](super::Entered) guard that derefs to the value, or a tuple of guards
/// for a tuple of values. The exit runs in its turn at the end of the future. See
/// [`Deferrer::enter`].
///
/// # Examples
///
/// ```
/// use quattro::defer::{self, AsyncExit, Outcome};
///
/// struct Lease(u32);
///
/// impl AsyncExit for Lease {
///     async fn exit(self, outcome: Outcome) {
///         println!("lease {} released, body {outcome}", self.0);
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let n = defer::enable(async { defer::enter(Lease(7)).unwrap().0 }).await;
/// assert_eq!(n, 7);
/// # }
/// ```
///
/// # Errors
///
/// Returns [`NotEnabled`] if no [`enable`]d future is being polled on this thread. The value
/// is then dropped without being entered.
pub fn enter<T: Enter>(value: T) -> Result<T::Output, NotEnabled> {
    let deferrer = current()?;
    Ok(deferrer.enter(value))
}

/// Error returned by the task-local functions when no [`enable`]d future is being polled.
///
/// [`push`], [`callback`], [`enter`] and [`current`] return it when no [`enable`]d future is
/// being polled on this thread. The closure form, [`Deferrer::enable`], sets no task-local
/// deferrer.
///
/// # Examples
///
/// ```
/// use quattro::defer;
///
/// let err = defer::callback(|| ()).unwrap_err();
/// assert!(err.to_string().starts_with("defer not enabled"));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NotEnabled(());

impl fmt::Debug for NotEnabled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NotEnabled")
    }
}

impl fmt::Display for NotEnabled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("defer not enabled: did you forget to wrap the future in `defer::enable`?")
    }
}

impl std::error::Error for NotEnabled {}
