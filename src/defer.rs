//! Cleanups, sync or async, that run when a future ends, last registered first.
//!
//! This is Go's `defer` for async code: register a cleanup right after acquiring a resource,
//! and it runs when the function's future ends, so resource handling stays flat. There are two
//! forms, as in Python quattro:
//!
//! - **Closure form**: [`Deferrer::enable`] passes a [`Deferrer`] to the body, which registers
//!   cleanups on it. It is explicit and type-checked, and the body may borrow from the caller
//!   (`&self`).
//! - **Task-local form**: [`enable`] wraps any future, and the free functions [`push`],
//!   [`callback`] and [`enter`] register cleanups from any function it calls. Use it for
//!   functions whose signature must stay as it is. Called where nothing is enabled, these
//!   functions return [`NotEnabled`].
//!
//! Values with an async exit, the analog of async context managers, implement [`AsyncExit`].
//! They are entered with [`Deferrer::enter`] or [`enter`], several at once as a tuple. Any
//! other value is entered with a closure that closes it ([`Deferrer::enter_with`],
//! [`Deferrer::enter_context`]). The body uses an entered value through an [`Entered`] guard,
//! and once the guard is dropped the deferrer closes the value in its turn, with no `Arc`.
//!
//! The cleanups run after the body returns a value or an `Err`, or panics. A panic is resumed
//! after them. Exit callbacks ([`Deferrer::push_exit`], [`Deferrer::callback_exit`],
//! [`AsyncExit::exit`]) see how the body ended, as an [`Outcome`], to commit or roll back.
//!
//! If the future is dropped before it ends, the sync cleanups run at once and the async ones
//! are spawned on the runtime. When the drop happens inside a quattro cancel scope or task
//! group, that scope or group waits for them before it returns, within the deadlines in force.
//! See [`Enabled`]'s `# Cancel safety`.
//!
//! [`Deferrer`] has the API of Python's `AsyncExitStack`:
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
//! Unlike Python's `__aexit__`, an exit cannot suppress the body's error or panic: the future
//! returns the body's output.
//!
//! Do not mix the two forms in one function. Each [`Enabled`] future has its own stack, and
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

/// A stack of cleanups that run when the body of [`Deferrer::enable`] ends.
///
/// This is the analog of Python's `AsyncExitStack`. Cleanups run last registered first, sync
/// and async mixed, once the body ends. A cleanup may register more, which then run next.
///
/// The handle is `Send + Sync` and can be cloned into tasks. A cleanup registered after the
/// body's cleanups have all run is no longer collected: it runs at once if it is sync, or is
/// spawned if it is async, and an exit sees the outcome the last cleanups saw.
///
/// Cleanups return `()`, so an error cannot be dropped by accident: a cleanup handles its
/// error (logs it, or sends it where the caller looks) or panics. A panicking cleanup does not
/// stop the others, and the first panic is resumed once all have run (see [`Enabled`]'s
/// `# Panics`).
///
/// A deferrer made by [`Deferrer::new`] or [`Deferrer::pop_all`] belongs to no body. Its
/// cleanups run when it is closed with [`aclose`] or entered into another deferrer. If its
/// last handle is dropped first, they run then, as on cancellation, and see
/// [`Outcome::is_cancelled`].
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
/// # Cancellation
///
/// If the body's future is dropped before it ends, nobody can await the async cleanups. The
/// sync ones run at once, in the drop, and the async ones are spawned as one task. When the
/// drop happens inside a quattro cancel scope or task group (by its deadline, `cancel()`, a
/// `select!` or an aborted task), that scope or group returns only after the task ended. A
/// `fail_after` that cut a body thus returns once its connections are closed. The task is
/// bounded by the deadlines in force, as [`Enabled`]'s `# Cancel safety` explains. Dropped
/// outside any quattro scope or group, the task is detached.
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
/// [`aclose`]: Deferrer::aclose
#[derive(Clone)]
pub struct Deferrer {
    shared: Arc<Shared>,
}

impl Deferrer {
    /// Creates a standalone deferrer, tied to no body.
    ///
    /// Its cleanups run when [`aclose`](Deferrer::aclose) is awaited, or when it is entered
    /// into another deferrer and that one's turn comes. If its last handle is dropped first,
    /// they run then, as on cancellation. For a body, prefer [`Deferrer::enable`], which
    /// cannot forget to close.
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

    /// Runs `body` with a new [`Deferrer`], then the cleanups registered on it, last first.
    ///
    /// `body` is called at once to build its future. The returned [`Enabled`] future returns
    /// the body's output once every cleanup has run. The body may borrow from the caller: only
    /// the cleanups must be `'static`.
    ///
    /// Exit callbacks see any value the body returns, an `Err` included, as
    /// [`Outcome::is_ok`]. Use [`Deferrer::try_enable`] when an `Err` must roll back.
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
    /// A panic of the body or of a cleanup is resumed once every cleanup has run. See
    /// [`Enabled`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future runs the sync cleanups at once and spawns the async ones. An
    /// enclosing quattro cancel scope or task group waits for them, within the deadlines in
    /// force. See [`Enabled`].
    pub fn enable<B, F>(body: B) -> Enabled<F>
    where
        B: FnOnce(Deferrer) -> F,
        F: Future,
    {
        let deferrer = Deferrer::new();
        let shared = deferrer.shared.clone();
        Enabled::new(body(deferrer), shared, false, any_value_is_ok)
    }

    /// Runs `body`, which returns a `Result`, with a new [`Deferrer`], then its cleanups.
    ///
    /// This is [`Deferrer::enable`], except that exit callbacks see an `Err` as
    /// [`Outcome::is_err`] and an `Ok` as [`Outcome::is_ok`]. It is the form for
    /// commit-or-rollback cleanups.
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
    /// The cleanup must be `Send + 'static` because, if the [`Enabled`] future is dropped
    /// before it ends, the cleanup is spawned on the runtime rather than awaited in place (see
    /// [`Enabled`]).
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

    /// Defers an async cleanup that a closure builds when its turn comes.
    ///
    /// This is the same as `push(async move { f().await })`. It is handy for
    /// `defer.push_fn(|| conn.close())` when `close` takes `conn` by value.
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

    /// Defers an async cleanup that gets the body's [`Outcome`].
    ///
    /// When its turn comes, `exit` is called with the outcome, and the future it returns is
    /// awaited. This is Python's `push_async_exit`. The outcome is the body's, a panic if a
    /// cleanup that ran before this one panicked, or a cancellation if the [`Enabled`] future
    /// was dropped before it completed.
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
    /// If the [`Enabled`] future is dropped before it completes, the callback runs at once, in
    /// the drop.
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

    /// Defers a sync callback that gets the body's [`Outcome`].
    ///
    /// This is Python's `push`. If the [`Enabled`] future is dropped before it completes, the
    /// callback runs at once, in the drop, and sees [`Outcome::is_cancelled`].
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

    /// Enters a value with an async exit and returns an [`Entered`] guard to use it through.
    ///
    /// A tuple of up to six values returns a tuple of guards. Once a guard is dropped, the
    /// deferrer runs the value's [`exit`](AsyncExit::exit) in its turn. This is Python's
    /// `enter_async_context`. See [`Entered`] for what happens when a guard outlives the body.
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

    /// Enters a value with an async closure that closes it, and returns an [`Entered`] guard.
    ///
    /// Once the guard is dropped, the deferrer awaits `exit(value, outcome)` in its turn. Use
    /// it for a value that has an `async fn close(self)` and no [`AsyncExit`] implementation.
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

    /// Enters a value with a sync closure that closes it, and returns an [`Entered`] guard.
    ///
    /// Once the guard is dropped, the deferrer calls `exit(value, outcome)` in its turn. This
    /// is Python's `enter_context`. Use it for a value whose closing is sync, such as a lock
    /// guard to drop or a file to flush: `|value, _| drop(value)` closes it in the deferrer's
    /// order instead of at the end of the scope.
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

    /// Moves every cleanup registered so far into a new standalone [`Deferrer`].
    ///
    /// This deferrer is left empty. This is Python's `pop_all`, for handing resources on
    /// instead of closing them: register their cleanups as if the body might fail, and once it
    /// has succeeded, return the result of `pop_all` with the resources. The new deferrer runs
    /// the cleanups when it is closed or entered into another deferrer, or, as on
    /// cancellation, when its last handle is dropped. Values behind [`Entered`] guards move
    /// with their cleanups.
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

    /// Runs every cleanup registered so far, last first.
    ///
    /// This is Python's `aclose`. The deferrer stays usable, and cleanups registered while it
    /// runs run too. Exits see [`Outcome::is_ok`]. On an enabled body's deferrer, this closes
    /// resources before the body goes on. A standalone deferrer ([`Deferrer::new`],
    /// [`Deferrer::pop_all`]) is closed this way.
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
    /// The first panic of a cleanup is resumed once they have all run. See [`Close`].
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: dropping the future leaves the cleanups not yet run, and
    /// the one running, on the stack in order. See [`Close`].
    pub fn aclose(&self) -> Close {
        Close::new(self.shared.clone(), Outcome::ok())
    }

    /// Returns the number of cleanups registered and not yet started.
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

    /// Returns `true` if no cleanup is waiting to run.
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
    /// Creates a standalone deferrer, as [`Deferrer::new`] does.
    fn default() -> Deferrer {
        Deferrer::new()
    }
}

/// A deferrer entered into another is closed in that one's turn.
///
/// Its exits then see the outer [`Outcome`]. This adopts the cleanups of a
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
