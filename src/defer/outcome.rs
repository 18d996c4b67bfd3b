//! [`Outcome`]: how a deferring body ended, as its exit callbacks see it.

use std::fmt;

/// How the body of a deferring future ended, as seen by an exit callback: the `exc` of
/// Python's `__aexit__`.
///
/// Exit callbacks ([`Deferrer::push_exit`], [`Deferrer::callback_exit`], the closures of
/// [`Deferrer::enter_with`] and [`Deferrer::enter_context`], and [`AsyncExit::exit`]) get one,
/// so that a cleanup can commit on success and roll back otherwise. Exactly one of the four
/// predicates holds:
///
/// - [`is_ok`]: the body returned a value. With [`Deferrer::enable`] any value counts; with
///   [`Deferrer::try_enable`], whose body returns a `Result`, only an `Ok`.
/// - [`is_err`]: the body of [`Deferrer::try_enable`] returned an `Err`.
/// - [`is_panic`]: the body panicked, or an earlier cleanup did (the panic is resumed once the
///   cleanups have run, so the caller will not see the body's value either).
/// - [`is_cancelled`]: the future was dropped before it completed, so the caller never gets
///   its output; also the outcome of a stack dropped without being closed.
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
    /// The outcome of a body that returned a value (an `Ok` for [`Deferrer::try_enable`]).
    ///
    /// The constructors are for calling an exit by hand, in a test of an [`AsyncExit`] type
    /// for instance.
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

    /// The outcome of a [`Deferrer::try_enable`] body that returned an `Err`.
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

    /// The outcome of a body (or an earlier cleanup) that panicked.
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

    /// The outcome of a future dropped before it completed.
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

    /// Whether the body returned a value: any value for [`Deferrer::enable`], an `Ok` for
    /// [`Deferrer::try_enable`]. The commit case.
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

    /// Whether the body of [`Deferrer::try_enable`] returned an `Err`.
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

    /// Whether the body, or a cleanup that ran before this one, panicked.
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

    /// Whether the future was dropped before it completed (or the stack was dropped without
    /// being closed): the caller never gets the body's output.
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
