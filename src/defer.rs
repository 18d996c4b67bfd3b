//! Go-style `defer`: cleanups — sync or async — that run when an async function's future
//! ends, last registered first, so that resource handling stays flat.
//!
//! Two forms, as in Python quattro:
//! - **Closure form**: [`Deferrer::enable`] hands the body a [`Deferrer`]; the body registers
//!   cleanups on it. Explicit and type-checked; the body may borrow from the caller (`&self`).
//! - **Task-local form**: [`enable`] wraps any future; the free functions [`push`],
//!   [`callback`] and [`enter`] register cleanups from anywhere it calls, for functions whose
//!   signature must stay as it is. Called where nothing is enabled, they return
//!   [`NotEnabled`].
//!
//! Values with an async exit (the analog of async context managers) implement [`AsyncExit`]
//! and are entered with [`Deferrer::enter`] or [`enter`], several at once as a tuple; any
//! other value is entered with a closure to close it ([`Deferrer::enter_with`],
//! [`Deferrer::enter_context`]). Entering lends the value to the body through an [`Entered`]
//! guard and closes it once the guard is back: use it, then close it, with no `Arc`.
//!
//! The cleanups run after the body ends with a value, an `Err` or a panic (resumed after
//! them). Exit callbacks ([`Deferrer::push_exit`], [`Deferrer::callback_exit`],
//! [`AsyncExit::exit`]) see how it ended, as an [`Outcome`], to commit or roll back. If the
//! future is dropped before it ends, the sync cleanups run at once and the async ones are
//! spawned on the runtime; dropped inside a cancel scope or a task group, that one waits for
//! them before it returns (bounded by the deadlines in force): see [`Enabled`]'s
//! `# Cancel safety`.
//!
//! The [`Deferrer`] has the API of Python's `AsyncExitStack`:
//!
//! | `AsyncExitStack` | [`Deferrer`] |
//! |---|---|
//! | `enter_async_context(cm)` | [`enter(value)`](Deferrer::enter), [`enter_with(value, exit)`](Deferrer::enter_with) |
//! | `enter_context(cm)` | [`enter_context(value, exit)`](Deferrer::enter_context) |
//! | `push_async_callback(f)` | [`push(future)`](Deferrer::push), [`push_fn(f)`](Deferrer::push_fn) |
//! | `push_async_exit(exit)` | [`push_exit(\|outcome\| future)`](Deferrer::push_exit) |
//! | `callback(f)` | [`callback(f)`](Deferrer::callback) |
//! | `push(exit)` | [`callback_exit(\|outcome\| ..)`](Deferrer::callback_exit) |
//! | `pop_all()` | [`pop_all()`](Deferrer::pop_all) |
//! | `aclose()` | [`aclose().await`](Deferrer::aclose) |
//! | `async with AsyncExitStack() as stack` | [`Deferrer::enable`], or [`Deferrer::new`] then `aclose` |
//!
//! An exit cannot suppress the body's error or panic (Python's `__aexit__` returning true):
//! the body's output is what the future yields.
//!
//! Do not mix the two forms in one function: each [`Enabled`] future has its own stack, and
//! the free functions reach only the innermost one of the task-local form.
//!
//! # Examples
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use quattro::defer::Deferrer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let log = Arc::new(Mutex::new(Vec::new()));
//! let l = log.clone();
//! let n = Deferrer::enable(|defer| async move {
//!     let l2 = l.clone();
//!     defer.push(async move { l2.lock().unwrap().push("closed connection") });
//!     let l3 = l.clone();
//!     defer.callback(move || l3.lock().unwrap().push("released lock"));
//!     l.lock().unwrap().push("worked");
//!     7
//! })
//! .await;
//! assert_eq!(n, 7);
//! assert_eq!(*log.lock().unwrap(), ["worked", "released lock", "closed connection"]);
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;

mod close;
mod drain;
mod entered;
mod exit;
mod future;
mod local;
mod outcome;
mod stack;

pub use close::Close;
pub use entered::Entered;
pub use exit::{AsyncExit, Enter};
pub use future::Enabled;
pub use local::{NotEnabled, callback, current, enable, enter, push, try_enable};
pub use outcome::Outcome;

use entered::ExitFn;
use future::{any_value_is_ok, ok_or_err};
use stack::{Cleanup, Shared};

/// A stack of cleanups deferred to the end of the body run by [`Deferrer::enable`]: Python's
/// `AsyncExitStack`.
///
/// Cleanups run last registered first, sync and async mixed, once the body ends; a cleanup
/// may register more, which then run next. The handle is `Send + Sync`; it can be cloned
/// into tasks, but a cleanup registered after the body's cleanups have all run is no longer
/// collected: it runs at once (sync) or is spawned (async), as on cancellation.
///
/// # Cancellation
///
/// If the body's future is dropped before it ends, nobody can await the async cleanups: the
/// sync ones run at once, in the drop, and the async ones are spawned as one task. Dropped
/// inside a quattro cancel scope or task group (by its deadline, `cancel()`, a `select!`, an
/// aborted task), that scope or group returns only after the task ended, so cleanups stay
/// inside the structure: a `fail_after` that cut a body returns once its connections are
/// closed. The task is bounded by the deadline in force where the future was dropped if that
/// is still ahead, and by the deadline in force where the scope or group waits for it (a
/// deadline that already passed is the cancellation that dropped the body: the cleanups are
/// shielded from it). Dropped outside any quattro scope or group, the task is detached. See
/// [`Enabled`]'s `# Cancel safety` for the details.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::time::Duration;
/// use quattro::{defer::Deferrer, fail_after};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let closed = Arc::new(AtomicBool::new(false));
/// let c = closed.clone();
/// let transfer = Deferrer::enable(|defer| async move {
///     defer.push(async move {
///         tokio::time::sleep(Duration::from_millis(100)).await; // closing the connection
///         c.store(true, Ordering::SeqCst);
///     });
///     std::future::pending::<()>().await // stuck
/// });
/// let err = fail_after(Duration::from_secs(1), transfer).await.unwrap_err();
/// assert!(err.is_deadline_reached());
/// assert!(closed.load(Ordering::SeqCst)); // closed before `fail_after` returned
/// # }
/// ```
///
/// Cleanups cannot fail by their type (`()` output), so an error cannot be dropped by
/// accident: a cleanup handles its error (logs it, sends it somewhere the caller looks) or
/// panics. A panicking cleanup does not stop the others; the first panic is resumed once all
/// have run (see [`Enabled`]'s `# Panics`).
///
/// A deferrer made by [`Deferrer::new`] or [`Deferrer::pop_all`] belongs to no body: its
/// cleanups run when it is closed ([`aclose`], or entered into another deferrer), or, if its
/// last handle is dropped first, then — as on cancellation, seeing [`Outcome::is_cancelled`].
///
/// # Examples
///
/// ```
/// use quattro::defer::Deferrer;
///
/// struct Service {
///     name: String,
/// }
///
/// impl Service {
///     async fn handle(&self) -> usize {
///         Deferrer::enable(|defer| async move {
///             defer.callback(|| println!("request done"));
///             self.name.len() // borrows `self`: the body need not be 'static
///         })
///         .await
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let service = Service { name: "quattro".into() };
/// assert_eq!(service.handle().await, 7);
/// # }
/// ```
///
/// [`aclose`]: Deferrer::aclose
#[derive(Clone)]
pub struct Deferrer {
    shared: Arc<Shared>,
}

impl Deferrer {
    /// Creates a standalone deferrer, tied to no body.
    ///
    /// Its cleanups run when [`aclose`](Deferrer::aclose) is awaited, when it is entered into
    /// another deferrer (whose turn then closes it), or, as on cancellation, when its last
    /// handle is dropped. For a body, prefer [`Deferrer::enable`], which cannot forget to close.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::defer::Deferrer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let cleanups = Deferrer::new();
    /// cleanups.callback(|| println!("closed"));
    /// assert_eq!(cleanups.len(), 1);
    /// cleanups.aclose().await;
    /// assert!(cleanups.is_empty());
    /// # }
    /// ```
    #[must_use]
    pub fn new() -> Deferrer {
        Deferrer {
            shared: Arc::default(),
        }
    }

    /// Runs `body` with a [`Deferrer`], then the cleanups registered on it, last first.
    ///
    /// `body` is called at once to build the future; the returned [`Enabled`] future yields
    /// the body's output once every cleanup has run. The body may borrow from the caller; only
    /// the cleanups must be `'static`.
    ///
    /// Exit callbacks see any value the body returns as [`Outcome::is_ok`], an `Err` included:
    /// use [`Deferrer::try_enable`] for a body whose `Err` must roll back.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::defer::Deferrer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let result: Result<u32, &str> = Deferrer::enable(|defer| async move {
    ///     defer.push(async { println!("cleanup runs after an Err too") });
    ///     Err("failed")
    /// })
    /// .await;
    /// assert!(result.is_err());
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// A panic of the body or of a cleanup is resumed once every cleanup has run; see
    /// [`Enabled`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future runs the sync cleanups at once and spawns the async ones, which an
    /// enclosing cancel scope or task group then waits for (bounded by the deadlines in
    /// force); see [`Enabled`].
    pub fn enable<B, F>(body: B) -> Enabled<F>
    where
        B: FnOnce(Deferrer) -> F,
        F: Future,
    {
        let deferrer = Deferrer::new();
        let shared = deferrer.shared.clone();
        Enabled::new(body(deferrer), shared, false, any_value_is_ok)
    }

    /// Like [`Deferrer::enable`], for a body that returns a `Result`: exit callbacks see an
    /// `Err` as [`Outcome::is_err`] and an `Ok` as [`Outcome::is_ok`].
    ///
    /// This is the form for commit-or-rollback cleanups.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::defer::Deferrer;
    ///
    /// async fn transfer(amount: u32) -> Result<u32, String> {
    ///     Deferrer::try_enable(|defer| async move {
    ///         defer.push_exit(|outcome| async move {
    ///             if outcome.is_ok() {
    ///                 println!("commit");
    ///             } else {
    ///                 println!("rollback ({outcome})");
    ///             }
    ///         });
    ///         if amount > 100 {
    ///             return Err(format!("{amount} is over the limit"));
    ///         }
    ///         Ok(amount)
    ///     })
    ///     .await
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// assert_eq!(transfer(5).await, Ok(5)); // prints "commit"
    /// assert!(transfer(500).await.is_err()); // prints "rollback (returned an error)"
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// See [`Deferrer::enable`].
    ///
    /// # Cancel safety
    ///
    /// See [`Deferrer::enable`].
    pub fn try_enable<B, F, T, E>(body: B) -> Enabled<F>
    where
        B: FnOnce(Deferrer) -> F,
        F: Future<Output = Result<T, E>>,
    {
        let deferrer = Deferrer::new();
        let shared = deferrer.shared.clone();
        Enabled::new(body(deferrer), shared, false, ok_or_err::<T, E>)
    }

    /// Defers an async cleanup.
    ///
    /// It must be `Send + 'static` because, if the [`Enabled`] future is dropped before it
    /// ends, the cleanup is spawned on the runtime instead of being awaited (and awaited by the
    /// enclosing cancel scope or task group, if any; see [`Enabled`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use quattro::defer::Deferrer;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// Deferrer::enable(|defer| async move {
    ///     defer.push(async {
    ///         tokio::time::sleep(Duration::from_millis(10)).await;
    ///         println!("flushed");
    ///     });
    /// })
    /// .await;
    /// # }
    /// ```
    pub fn push<F>(&self, cleanup: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.shared.push(Cleanup::Async(Box::pin(cleanup)));
    }

    /// Defers an async cleanup built by a closure when its turn comes.
    ///
    /// The same as `push(async move { f().await })`: handy for `defer.push_fn(|| conn.close())`
    /// when `close` takes `conn` by value.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::defer::Deferrer;
    ///
    /// struct Conn;
    ///
    /// impl Conn {
    ///     async fn close(self) {
    ///         println!("closed");
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// Deferrer::enable(|defer| async move {
    ///     let conn = Conn;
    ///     defer.push_fn(move || conn.close());
    /// })
    /// .await;
    /// # }
    /// ```
    pub fn push_fn<C, F>(&self, f: C)
    where
        C: FnOnce() -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        self.push(async move { f().await });
    }

    /// Defers an async exit: a closure that gets the body's [`Outcome`] when its turn comes
    /// and returns the cleanup to await. Python's `push_async_exit`.
    ///
    /// The outcome is the body's, or a panic if a cleanup that ran before this one panicked,
    /// or a cancellation if the [`Enabled`] future was dropped first.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::defer::Deferrer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let out: Result<(), &str> = Deferrer::try_enable(|defer| async move {
    ///     defer.push_exit(|outcome| async move {
    ///         assert!(outcome.is_err());
    ///         println!("rolling back");
    ///     });
    ///     Err("failed")
    /// })
    /// .await;
    /// assert_eq!(out, Err("failed"));
    /// # }
    /// ```
    pub fn push_exit<C, F>(&self, exit: C)
    where
        C: FnOnce(Outcome) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        self.shared.push(Cleanup::Exit(Box::new(move |outcome| {
            Box::pin(exit(outcome))
        })));
    }

    /// Defers a sync callback.
    ///
    /// On cancellation it runs at once, in the drop of the [`Enabled`] future.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::defer::Deferrer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// Deferrer::enable(|defer| async move {
    ///     defer.callback(|| println!("done"));
    /// })
    /// .await;
    /// # }
    /// ```
    pub fn callback<F>(&self, f: F)
    where
        F: FnOnce() + Send + 'static,
    {
        self.shared.push(Cleanup::Sync(Box::new(move |_| f())));
    }

    /// Defers a sync exit: a callback that gets the body's [`Outcome`]. Python's `push`.
    ///
    /// On cancellation it runs at once, in the drop of the [`Enabled`] future, and sees
    /// [`Outcome::is_cancelled`].
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::defer::Deferrer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// Deferrer::enable(|defer| async move {
    ///     defer.callback_exit(|outcome| println!("body {outcome}")); // "body returned"
    /// })
    /// .await;
    /// # }
    /// ```
    pub fn callback_exit<F>(&self, f: F)
    where
        F: FnOnce(Outcome) + Send + 'static,
    {
        self.shared.push(Cleanup::Sync(Box::new(f)));
    }

    /// Enters a value with an async exit, or a tuple of up to six: lends it to the body through
    /// an [`Entered`] guard (a tuple of guards for a tuple), and runs its
    /// [`exit`](AsyncExit::exit) once the guard is back. Python's `enter_async_context`.
    ///
    /// See [`Entered`] for what happens when the guard outlives the body.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::defer::{AsyncExit, Deferrer, Outcome};
    ///
    /// struct Permit(&'static str);
    ///
    /// impl AsyncExit for Permit {
    ///     async fn exit(self, outcome: Outcome) {
    ///         println!("release {} ({outcome})", self.0);
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// Deferrer::enable(|defer| async move {
    ///     let a = defer.enter(Permit("a"));
    ///     let (b, c) = defer.enter((Permit("b"), Permit("c")));
    ///     assert_eq!((a.0, b.0, c.0), ("a", "b", "c"));
    /// })
    /// .await; // releases c, b, a
    /// # }
    /// ```
    pub fn enter<T: Enter>(&self, value: T) -> T::Output {
        value.enter_into(self)
    }

    /// Enters any value with an async closure to close it: lends it to the body through an
    /// [`Entered`] guard, and once the guard is back awaits `exit(value, outcome)` in its turn.
    ///
    /// The shape for "use it, then close it" when the value has an `async fn close(self)` and
    /// no [`AsyncExit`] implementation.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::defer::Deferrer;
    ///
    /// struct Conn(u32);
    ///
    /// impl Conn {
    ///     async fn open(id: u32) -> Conn {
    ///         Conn(id)
    ///     }
    ///
    ///     async fn query(&mut self) -> u32 {
    ///         self.0 * 10
    ///     }
    ///
    ///     async fn close(self) {
    ///         println!("closed {}", self.0);
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let n = Deferrer::enable(|defer| async move {
    ///     let mut a = defer.enter_with(Conn::open(1).await, |conn, _| conn.close());
    ///     let mut b = defer.enter_with(Conn::open(2).await, |conn, _| conn.close());
    ///     a.query().await + b.query().await
    /// })
    /// .await; // closes 2, then 1
    /// assert_eq!(n, 30);
    /// # }
    /// ```
    pub fn enter_with<T, C, F>(&self, value: T, exit: C) -> Entered<T>
    where
        T: Send + 'static,
        C: FnOnce(T, Outcome) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let exit = ExitFn::Async(Box::new(move |value, outcome| {
            Box::pin(exit(value, outcome))
        }));
        Entered::new(&self.shared, value, exit)
    }

    /// Enters any value with a sync closure to close it: lends it to the body through an
    /// [`Entered`] guard, and once the guard is back calls `exit(value, outcome)` in its turn.
    /// Python's `enter_context`.
    ///
    /// For a value whose closing is sync (a guard to drop, a file to flush): `|value, _|
    /// drop(value)` closes it in the deferrer's order instead of at the end of the scope.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Write;
    /// use quattro::defer::Deferrer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// Deferrer::enable(|defer| async move {
    ///     let mut out = defer.enter_context(Vec::<u8>::new(), |buf, outcome| {
    ///         println!("flushing {} bytes, body {outcome}", buf.len());
    ///     });
    ///     out.write_all(b"hello").unwrap();
    /// })
    /// .await; // prints "flushing 5 bytes, body returned"
    /// # }
    /// ```
    pub fn enter_context<T, F>(&self, value: T, exit: F) -> Entered<T>
    where
        T: Send + 'static,
        F: FnOnce(T, Outcome) + Send + 'static,
    {
        Entered::new(&self.shared, value, ExitFn::Sync(Box::new(exit)))
    }

    /// Moves every cleanup registered so far into a new standalone [`Deferrer`], leaving this
    /// one empty. Python's `pop_all`.
    ///
    /// For handing resources on instead of closing them: register their cleanups as if the
    /// body might fail, and once it has succeeded, `pop_all` and return the new deferrer with
    /// the resources. The new one runs them when it is closed, or is entered into another
    /// deferrer, or (as on cancellation) when its last handle is dropped. Values lent through
    /// [`Entered`] guards move with their cleanups.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use quattro::defer::Deferrer;
    ///
    /// /// Opens both connections or none.
    /// type Log = Arc<Mutex<Vec<&'static str>>>;
    ///
    /// async fn open_pair(log: Log, fail: bool) -> Result<Deferrer, &'static str> {
    ///     Deferrer::enable(|defer| async move {
    ///         let l = log.clone();
    ///         defer.callback(move || l.lock().unwrap().push("close a"));
    ///         if fail {
    ///             return Err("b refused"); // a is closed as the body ends
    ///         }
    ///         defer.callback(move || log.lock().unwrap().push("close b"));
    ///         Ok(defer.pop_all()) // success: the caller closes them
    ///     })
    ///     .await
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let log = Arc::new(Mutex::new(Vec::new()));
    /// assert!(open_pair(log.clone(), true).await.is_err());
    /// assert_eq!(*log.lock().unwrap(), ["close a"]);
    ///
    /// let pair = open_pair(log.clone(), false).await.unwrap();
    /// assert_eq!(pair.len(), 2);
    /// pair.aclose().await;
    /// assert_eq!(*log.lock().unwrap(), ["close a", "close b", "close a"]);
    /// # }
    /// ```
    #[must_use]
    pub fn pop_all(&self) -> Deferrer {
        Deferrer {
            shared: Arc::new(Shared::with_cleanups(self.shared.take_all())),
        }
    }

    /// Runs every cleanup registered so far, last first, now; the deferrer stays usable.
    /// Python's `aclose`.
    ///
    /// The exits see [`Outcome::is_ok`]. Cleanups registered while it runs run too. On an
    /// enabled body's deferrer this closes its resources before the body goes on; on a
    /// standalone one ([`Deferrer::new`], [`Deferrer::pop_all`]) it is how they get closed.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::defer::Deferrer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// Deferrer::enable(|defer| async move {
    ///     defer.push(async { println!("1: released the lock") });
    ///     defer.aclose().await;
    ///     println!("2: slow work without the lock");
    /// })
    /// .await;
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// The first panic of a cleanup is resumed once they have all run; see [`Close`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future leaves the cleanups not yet run (and the one running)
    /// on the stack, in order; see [`Close`].
    pub fn aclose(&self) -> Close {
        Close::new(self.shared.clone(), Outcome::ok())
    }

    /// The number of cleanups registered and not yet started.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::defer::Deferrer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// Deferrer::enable(|defer| async move {
    ///     defer.callback(|| ());
    ///     assert_eq!(defer.len(), 1);
    /// })
    /// .await;
    /// # }
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.shared.len()
    }

    /// Whether no cleanup is waiting to run.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::defer::Deferrer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// Deferrer::enable(|defer| async move { assert!(defer.is_empty()) }).await;
    /// # }
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for Deferrer {
    /// A standalone deferrer: [`Deferrer::new`].
    fn default() -> Deferrer {
        Deferrer::new()
    }
}

/// A deferrer is itself a value with an async exit: entered into another, it is closed in that
/// one's turn, its exits seeing the outer [`Outcome`]. This adopts the cleanups of a
/// [`pop_all`](Deferrer::pop_all) into an enclosing body.
///
/// # Examples
///
/// ```
/// use quattro::defer::Deferrer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let handed_on = Deferrer::new();
/// handed_on.callback_exit(|outcome| println!("closed by the caller's body: {outcome}"));
/// Deferrer::enable(|defer| async move {
///     let _adopted = defer.enter(handed_on);
///     println!("working");
/// })
/// .await;
/// # }
/// ```
impl AsyncExit for Deferrer {
    fn exit(self, outcome: Outcome) -> impl Future<Output = ()> + Send + 'static {
        Close::new(self.shared, outcome)
    }
}

impl fmt::Debug for Deferrer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deferrer")
            .field("pending", &self.shared.len())
            .finish()
    }
}
