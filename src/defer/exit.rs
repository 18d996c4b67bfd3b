//! Values with an async exit, the Rust analog of Python's async context managers.

use std::future::Future;

use super::{Deferrer, Entered, Outcome};

/// A value with an async exit that sees how the body ended.
///
/// This is the Rust analog of an async context manager's `__aexit__`. [`Deferrer::enter`] (or
/// [`defer::enter`]) takes the value and returns an [`Entered`] guard to use it through. Once
/// the guard is dropped, the deferrer calls `exit` in its turn with the body's [`Outcome`], to
/// commit on `is_ok()` and roll back otherwise. Entering is synchronous, so do the async part
/// of acquiring (connecting, beginning a transaction) before, in the constructor.
///
/// `exit` can be written as an `async fn`. It takes the value by value and returns a
/// `Send + 'static` future, so that the future can be spawned on the runtime when the
/// [`Enabled`] future running it is dropped (see its `# Cancel safety`). It cannot return an
/// error, so it handles or logs one, or panics (see [`Deferrer`] for how panics in cleanups
/// travel).
///
/// A value with no exit of its own is entered with [`Deferrer::enter_with`] (an async closure)
/// or [`Deferrer::enter_context`] (a sync one) instead.
///
/// # Examples
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use quattro::defer::{AsyncExit, Deferrer, Outcome};
///
/// struct Transaction {
///     log: Arc<Mutex<Vec<&'static str>>>,
/// }
///
/// impl Transaction {
///     async fn begin(log: Arc<Mutex<Vec<&'static str>>>) -> Transaction {
///         Transaction { log }
///     }
///
///     fn insert(&mut self) {
///         self.log.lock().unwrap().push("insert");
///     }
/// }
///
/// impl AsyncExit for Transaction {
///     async fn exit(self, outcome: Outcome) {
///         let verb = if outcome.is_ok() { "commit" } else { "rollback" };
///         self.log.lock().unwrap().push(verb);
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let log = Arc::new(Mutex::new(Vec::new()));
/// for fail in [false, true] {
///     let l = log.clone();
///     let _: Result<(), &str> = Deferrer::try_enable(|defer| async move {
///         let mut tx = defer.enter(Transaction::begin(l).await);
///         tx.insert();
///         if fail { Err("constraint violated") } else { Ok(()) }
///     })
///     .await;
/// }
/// assert_eq!(*log.lock().unwrap(), ["insert", "commit", "insert", "rollback"]);
/// # }
/// ```
///
/// [`Enabled`]: super::Enabled
/// [`defer::enter`]: super::enter
pub trait AsyncExit: Send + Sized + 'static {
    /// Closes the value, knowing how the body ended.
    fn exit(self, outcome: Outcome) -> impl Future<Output = ()> + Send + 'static;
}

mod sealed {
    pub trait Sealed {}
}

/// A value, or a tuple of values, that [`Deferrer::enter`] accepts.
///
/// Any [`AsyncExit`] value implements it, and so does a tuple of two to six of them. A tuple
/// is entered left to right and returns a tuple of [`Entered`] guards. Its exits are
/// registered one by one, so they run right to left, each as a cleanup of its own: a panic in
/// one does not skip the others. This is like Python's `await defer(cm1, cm2)`.
///
/// This trait is sealed: implement [`AsyncExit`] instead.
///
/// # Examples
///
/// ```
/// use quattro::defer::{AsyncExit, Deferrer, Outcome};
///
/// struct Lease(u32);
///
/// impl AsyncExit for Lease {
///     async fn exit(self, _: Outcome) {}
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let sum = Deferrer::enable(|defer| async move {
///     let (a, b) = defer.enter((Lease(1), Lease(2)));
///     a.0 + b.0
/// })
/// .await;
/// assert_eq!(sum, 3);
/// # }
/// ```
pub trait Enter: sealed::Sealed {
    /// The guard that entering returns: an [`Entered`], or a tuple of them.
    type Output;

    #[doc(hidden)]
    fn enter_into(self, deferrer: &Deferrer) -> Self::Output;
}

impl<T: AsyncExit> sealed::Sealed for T {}

impl<T: AsyncExit> Enter for T {
    type Output = Entered<T>;

    fn enter_into(self, deferrer: &Deferrer) -> Entered<T> {
        deferrer.enter_with(self, T::exit)
    }
}

macro_rules! enter_tuple {
    ($($name:ident)+) => {
        impl<$($name: AsyncExit),+> sealed::Sealed for ($($name,)+) {}

        impl<$($name: AsyncExit),+> Enter for ($($name,)+) {
            type Output = ($(Entered<$name>,)+);

            #[allow(non_snake_case)]
            fn enter_into(self, deferrer: &Deferrer) -> Self::Output {
                let ($($name,)+) = self;
                ($(Enter::enter_into($name, deferrer),)+)
            }
        }
    };
}

enter_tuple!(A B);
enter_tuple!(A B C);
enter_tuple!(A B C D);
enter_tuple!(A B C D E);
enter_tuple!(A B C D E F);
