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
//! and are entered with [`Deferrer::enter`] or [`enter`], several at once as a tuple.
//!
//! The cleanups run after the body ends with a value, an `Err` or a panic (resumed after
//! them). If the future is dropped before it ends, the sync cleanups run at once and the async
//! ones are spawned on the runtime: see [`Enabled`]'s `# Cancel safety`.
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

mod exit;
mod future;
mod local;
mod stack;

pub use exit::{AsyncExit, Enter};
pub use future::Enabled;
pub use local::{NotEnabled, callback, enable, enter, push};

use stack::{Cleanup, Shared};

/// A handle for deferring cleanups to the end of the body run by [`Deferrer::enable`].
///
/// Cleanups run last registered first, sync and async mixed, once the body ends; a cleanup
/// may register more, which then run next. The handle is `Send + Sync`; it can be cloned
/// into tasks, but a cleanup registered after the body's cleanups have all run is no longer
/// collected: it runs at once (sync) or is spawned (async), as on cancellation.
///
/// Cleanups cannot fail by their type (`()` output), so an error cannot be dropped by
/// accident: a cleanup handles its error (logs it, sends it somewhere the caller looks) or
/// panics. A panicking cleanup does not stop the others; the first panic is resumed once all
/// have run (see [`Enabled`]'s `# Panics`).
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
#[derive(Clone)]
pub struct Deferrer {
    shared: Arc<Shared>,
}

impl Deferrer {
    /// Runs `body` with a [`Deferrer`], then the cleanups registered on it, last first.
    ///
    /// `body` is called at once to build the future; the returned [`Enabled`] future yields
    /// the body's output once every cleanup has run. The body may borrow from the caller; only
    /// the cleanups must be `'static`.
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
    /// Dropping the future runs the sync cleanups at once and spawns the async ones; see
    /// [`Enabled`].
    pub fn enable<B, F>(body: B) -> Enabled<F>
    where
        B: FnOnce(Deferrer) -> F,
        F: Future,
    {
        let shared = Arc::<Shared>::default();
        let fut = body(Deferrer {
            shared: shared.clone(),
        });
        Enabled::new(fut, shared, false)
    }

    /// Defers an async cleanup.
    ///
    /// It must be `Send + 'static` because, if the [`Enabled`] future is dropped before it
    /// ends, the cleanup is spawned on the runtime instead of being awaited.
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
        self.shared.push(Cleanup::Sync(Box::new(f)));
    }

    /// Enters a value with an async exit, or a tuple of up to six, deferring the exits; returns
    /// what entering yields (a tuple for a tuple).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::future::{Ready, ready};
    /// use quattro::defer::{AsyncExit, Deferrer};
    ///
    /// struct Permit(&'static str);
    ///
    /// impl AsyncExit for Permit {
    ///     type Entered = &'static str;
    ///     type Exit = Ready<()>;
    ///
    ///     fn enter(self) -> (&'static str, Ready<()>) {
    ///         (self.0, ready(()))
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// Deferrer::enable(|defer| async move {
    ///     let a = defer.enter(Permit("a"));
    ///     let (b, c) = defer.enter((Permit("b"), Permit("c")));
    ///     assert_eq!((a, b, c), ("a", "b", "c"));
    /// })
    /// .await; // exits c, b, a
    /// # }
    /// ```
    pub fn enter<T: Enter>(&self, value: T) -> T::Entered {
        value.enter_into(self)
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
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Deferrer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deferrer")
            .field("pending", &self.shared.len())
            .finish()
    }
}
