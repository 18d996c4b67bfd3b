//! How a deferring body ended, as its exit callbacks see it.

use std::fmt;

/// How the body of a deferring future ended, as an exit callback sees it.
///
/// This is the `exc` of Python's `__aexit__`. Exit callbacks ([`Deferrer::push_exit`],
/// [`Deferrer::callback_exit`], the closures of [`Deferrer::enter_with`] and
/// [`Deferrer::enter_context`], and [`AsyncExit::exit`]) get one, so that a cleanup can
/// commit on success and roll back otherwise. Exactly one of the four predicates holds:
///
/// - [`is_ok`]: the body returned a value. With [`Deferrer::enable`], any value counts. With
///   [`Deferrer::try_enable`], whose body returns a `Result`, only an `Ok` does.
/// - [`is_err`]: the body of [`Deferrer::try_enable`] returned an `Err`.
/// - [`is_panic`]: the body panicked, or an earlier cleanup did. The panic is resumed once the
///   cleanups have run, so the caller does not get the body's value either.
/// - [`is_cancelled`]: the future was dropped before it completed, so the caller never gets
///   its output. A standalone deferrer dropped without being closed also gives this outcome.
///
/// [`Deferrer::aclose`] runs cleanups with an `is_ok` outcome, as Python's `aclose` passes no
/// exception.
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
/// let result: Result<(), &str> = Deferrer::try_enable(|defer| async move {
///     defer.callback_exit(move |outcome| {
///         let verb = if outcome.is_ok() { "commit" } else { "rollback" };
///         l.lock().unwrap().push(verb);
///     });
///     Err("insert failed")
/// })
/// .await;
/// assert!(result.is_err());
/// assert_eq!(*log.lock().unwrap(), ["rollback"]);
/// # }
/// ```
///
/// [`Deferrer::push_exit`]: super::Deferrer::push_exit
/// [`Deferrer::callback_exit`]: super::Deferrer::callback_exit
/// [`Deferrer::enter_with`]: super::Deferrer::enter_with
/// [`Deferrer::enter_context`]: super::Deferrer::enter_context
/// [`Deferrer::enable`]: super::Deferrer::enable
/// [`Deferrer::try_enable`]: super::Deferrer::try_enable
/// [`Deferrer::aclose`]: super::Deferrer::aclose
/// [`AsyncExit::exit`]: super::AsyncExit::exit
/// [`is_ok`]: Outcome::is_ok
/// [`is_err`]: Outcome::is_err
/// [`is_panic`]: Outcome::is_panic
/// [`is_cancelled`]: Outcome::is_cancelled
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Outcome {
    repr: Repr,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Repr {
    Ok,
    Err,
    Panicked,
    Cancelled,
}

impl Outcome {
    /// Creates the outcome of a body that returned a value.
    ///
    /// For [`Deferrer::try_enable`], that value is an `Ok`. The constructors are for calling
    /// an exit by hand, for instance in a test of an [`AsyncExit`] type.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::defer::Outcome;
    ///
    /// assert!(Outcome::ok().is_ok());
    /// ```
    ///
    /// [`Deferrer::try_enable`]: super::Deferrer::try_enable
    /// [`AsyncExit`]: super::AsyncExit
    #[must_use]
    pub const fn ok() -> Outcome {
        Outcome { repr: Repr::Ok }
    }

    /// Creates the outcome of a [`Deferrer::try_enable`] body that returned an `Err`.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::defer::Outcome;
    ///
    /// assert!(Outcome::err().is_err());
    /// ```
    ///
    /// [`Deferrer::try_enable`]: super::Deferrer::try_enable
    #[must_use]
    pub const fn err() -> Outcome {
        Outcome { repr: Repr::Err }
    }

    /// Creates the outcome of a body, or an earlier cleanup, that panicked.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::defer::Outcome;
    ///
    /// assert!(Outcome::panicked().is_panic());
    /// ```
    #[must_use]
    pub const fn panicked() -> Outcome {
        Outcome {
            repr: Repr::Panicked,
        }
    }

    /// Creates the outcome of a future dropped before it completed.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::defer::Outcome;
    ///
    /// assert!(Outcome::cancelled().is_cancelled());
    /// ```
    #[must_use]
    pub const fn cancelled() -> Outcome {
        Outcome {
            repr: Repr::Cancelled,
        }
    }

    /// Returns `true` if the body returned a value.
    ///
    /// Any value counts for [`Deferrer::enable`], and only an `Ok` for
    /// [`Deferrer::try_enable`]. This is the commit case.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::defer::Deferrer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// Deferrer::enable(|defer| async move {
    ///     defer.callback_exit(|outcome| assert!(outcome.is_ok()));
    ///     42
    /// })
    /// .await;
    /// # }
    /// ```
    ///
    /// [`Deferrer::enable`]: super::Deferrer::enable
    /// [`Deferrer::try_enable`]: super::Deferrer::try_enable
    #[must_use]
    pub const fn is_ok(&self) -> bool {
        matches!(self.repr, Repr::Ok)
    }

    /// Returns `true` if the body of [`Deferrer::try_enable`] returned an `Err`.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::defer::Deferrer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let out: Result<(), u8> = Deferrer::try_enable(|defer| async move {
    ///     defer.callback_exit(|outcome| assert!(outcome.is_err()));
    ///     Err(1)
    /// })
    /// .await;
    /// assert_eq!(out, Err(1));
    /// # }
    /// ```
    ///
    /// [`Deferrer::try_enable`]: super::Deferrer::try_enable
    #[must_use]
    pub const fn is_err(&self) -> bool {
        matches!(self.repr, Repr::Err)
    }

    /// Returns `true` if the body, or a cleanup that ran before this one, panicked.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::panic::AssertUnwindSafe;
    /// use futures::FutureExt;
    /// use quattro::defer::Deferrer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let fut = Deferrer::enable(|defer| async move {
    ///     defer.callback_exit(|outcome| assert!(outcome.is_panic()));
    ///     panic!("boom");
    /// });
    /// assert!(AssertUnwindSafe(fut).catch_unwind().await.is_err());
    /// # }
    /// ```
    #[must_use]
    pub const fn is_panic(&self) -> bool {
        matches!(self.repr, Repr::Panicked)
    }

    /// Returns `true` if the future was dropped before it completed.
    ///
    /// The caller then never gets the body's output. A standalone deferrer dropped without
    /// being closed also gives this outcome.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::defer::Deferrer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let fut = Deferrer::enable(|defer| {
    ///     defer.callback_exit(|outcome| assert!(outcome.is_cancelled()));
    ///     std::future::pending::<()>()
    /// });
    /// drop(fut); // the exit runs in the drop
    /// # }
    /// ```
    #[must_use]
    pub const fn is_cancelled(&self) -> bool {
        matches!(self.repr, Repr::Cancelled)
    }
}

impl fmt::Debug for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.repr {
            Repr::Ok => "Outcome::Ok",
            Repr::Err => "Outcome::Err",
            Repr::Panicked => "Outcome::Panicked",
            Repr::Cancelled => "Outcome::Cancelled",
        })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.repr {
            Repr::Ok => "returned",
            Repr::Err => "returned an error",
            Repr::Panicked => "panicked",
            Repr::Cancelled => "cancelled",
        })
    }
}
