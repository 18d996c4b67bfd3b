//! Values with an async exit: the Rust analog of Python's async context managers.

use std::future::Future;

use super::Deferrer;
use super::stack::Cleanup;

/// A value with an async exit: entering it yields something to use, and an exit future to run
/// when done with it — the Rust analog of an async context manager (`__aenter__` and
/// `__aexit__`).
///
/// Entering is synchronous; do the async part of acquiring (connecting, say) before, in the
/// constructor, and put in `enter` only what must pair with the exit. The exit is a `Send +
/// 'static` future so that it can be handed to the runtime when the [`Enabled`] future running
/// it is dropped (see its `# Cancel safety`); it cannot report an error by its type, so it
/// must handle or log one, or panic (see [`Deferrer`] for how panics in cleanups travel).
///
/// [`Deferrer::enter`] and [`defer::enter`] register the exit and return what entering yields.
/// A type that guards a region of work — a task group closing and awaiting its children at
/// the end of the function — implements it by handing out its handle as `Entered` and its
/// closing as `Exit`.
///
/// # Examples
///
/// ```
/// use std::future::Future;
/// use std::pin::Pin;
/// use quattro::defer::{AsyncExit, Deferrer};
///
/// struct Conn(u32);
///
/// impl Conn {
///     async fn connect(id: u32) -> Conn {
///         Conn(id)
///     }
/// }
///
/// impl AsyncExit for Conn {
///     type Entered = u32;
///     type Exit = Pin<Box<dyn Future<Output = ()> + Send>>;
///
///     fn enter(self) -> (u32, Self::Exit) {
///         let id = self.0;
///         (id, Box::pin(async move { println!("closing {id}") }))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let id = Deferrer::enable(|defer| async move {
///     let id = defer.enter(Conn::connect(3).await);
///     println!("using {id}");
///     id
/// })
/// .await; // prints "using 3", then "closing 3"
/// assert_eq!(id, 3);
/// # }
/// ```
///
/// [`Enabled`]: super::Enabled
/// [`defer::enter`]: super::enter
pub trait AsyncExit {
    /// What entering yields to the code that uses the value.
    type Entered;
    /// The exit, run as a deferred cleanup.
    type Exit: Future<Output = ()> + Send + 'static;

    /// Splits the value into what the user gets and the exit to run later.
    fn enter(self) -> (Self::Entered, Self::Exit);
}

mod sealed {
    pub trait Sealed {}
}

/// What [`Deferrer::enter`] accepts: any [`AsyncExit`] value, or a tuple of up to six of them.
///
/// A tuple is entered left to right and its exits are registered one by one, so they run
/// right to left, each as a cleanup of its own (a panic in one does not skip the others) —
/// like Python's `await defer(cm1, cm2)`.
///
/// This trait is sealed: implement [`AsyncExit`] instead.
///
/// # Examples
///
/// ```
/// use std::future::{Ready, ready};
/// use quattro::defer::{AsyncExit, Deferrer};
///
/// struct Lease(u32);
///
/// impl AsyncExit for Lease {
///     type Entered = u32;
///     type Exit = Ready<()>;
///
///     fn enter(self) -> (u32, Ready<()>) {
///         (self.0, ready(()))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let pair = Deferrer::enable(|defer| async move { defer.enter((Lease(1), Lease(2))) }).await;
/// assert_eq!(pair, (1, 2));
/// # }
/// ```
pub trait Enter: sealed::Sealed {
    /// What entering yields: `T::Entered`, or a tuple of them.
    type Entered;

    #[doc(hidden)]
    fn enter_into(self, deferrer: &Deferrer) -> Self::Entered;
}

impl<T: AsyncExit> sealed::Sealed for T {}

impl<T: AsyncExit> Enter for T {
    type Entered = T::Entered;

    fn enter_into(self, deferrer: &Deferrer) -> T::Entered {
        let (entered, exit) = self.enter();
        deferrer.shared.push(Cleanup::Async(Box::pin(exit)));
        entered
    }
}

macro_rules! enter_tuple {
    ($($name:ident)+) => {
        impl<$($name: AsyncExit),+> sealed::Sealed for ($($name,)+) {}

        impl<$($name: AsyncExit),+> Enter for ($($name,)+) {
            type Entered = ($($name::Entered,)+);

            #[allow(non_snake_case)]
            fn enter_into(self, deferrer: &Deferrer) -> Self::Entered {
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
