//! The [`GroupError`] and [`Failure`] errors of a task group that failed.

use std::any::Any;
use std::fmt;

use super::label::TaskLabel;
use super::panic::Payload;
use super::reason::CancelReason;

/// Error returned by a task group that failed or was cancelled.
///
/// It holds every failure of the body and the tasks, in order of occurrence, and whether the group
/// was cancelled. The type is the same whether one task or many failed (Trio's "strict" groups), so
/// callers handle one shape. Tasks that were aborted because of a failure or a cancellation add
/// nothing: only real errors, and panics with [`Builder::capture_panics`], are listed.
///
/// `Display` lists every failure with who failed (`body`, the task's name, or a `gather` item's
/// position) and its error's text, so the message alone tells what went wrong.
///
/// # Examples
///
/// ```
/// use quattro::TaskGroup;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let err = TaskGroup::scope(|tg| async move {
///     tg.task("a").spawn(async { Err::<(), _>("boom") });
///     tg.spawn(async { Ok(()) });
///     Ok(())
/// })
/// .await
/// .unwrap_err();
/// assert_eq!(err.failures().len(), 1);
/// assert_eq!(err.failures()[0].task_name(), Some("a"));
/// assert_eq!(err.failures()[0].error(), Some(&"boom"));
/// assert!(!err.is_cancelled());
/// # }
/// ```
///
/// # With `?`
///
/// `GroupError<E>` is `Send + Sync` when `E` is, since a captured panic's payload is kept in a
/// form that is `Sync`. It implements [`std::error::Error`] for every `E: Debug + Display`, such
/// as `io::Error`, `String`, `&str`, `anyhow::Error` and `Box<dyn Error + Send + Sync>`. So `?`
/// carries it into `anyhow::Error`, into `Box<dyn Error + Send + Sync>`, and, through `From`,
/// into `io::Error`.
///
/// Its [`source`](std::error::Error::source) is `None` for every `E`. A group may hold many
/// failures, some of them panics, and an impl for every `Debug + Display` type cannot return one
/// as a `dyn Error`. Nothing is lost: `Display` already holds every failure's text (an
/// error-chain printer such as anyhow's `{:#}` would otherwise repeat the first one), and
/// [`errors`](Self::errors) and [`failures`](Self::failures) give the values.
///
/// ```
/// use quattro::TaskGroup;
///
/// async fn run() -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
///     let n = TaskGroup::scope(|tg| async move {
///         tg.task("parse").spawn(async { "x".parse::<u32>().map_err(|e| e.to_string()) });
///         Ok(1)
///     })
///     .await?; // GroupError<String> into Box<dyn Error + Send + Sync>
///     Ok(n)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let err = run().await.unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "task group failed: task `parse`: invalid digit found in string"
/// );
/// # }
/// ```
///
/// [`Builder::capture_panics`]: crate::group::Builder::capture_panics
pub struct GroupError<E> {
    failures: Vec<Failure<E>>,
    /// Why the group was cancelled, if it was (not by a failure: that is in `failures`).
    cancelled: Option<CancelReason>,
}

impl<E> GroupError<E> {
    pub(crate) fn new(failures: Vec<Failure<E>>, cancelled: Option<CancelReason>) -> GroupError<E> {
        GroupError {
            failures,
            cancelled,
        }
    }

    /// Returns every failure, in order of occurrence.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let err = TaskGroup::scope(|tg| async move {
    ///     tg.task("a").spawn(async { Err::<(), _>("boom") });
    ///     Ok(())
    /// })
    /// .await
    /// .unwrap_err();
    /// assert_eq!(err.failures().len(), 1);
    /// assert_eq!(err.failures()[0].to_string(), "task `a`: boom");
    /// # }
    /// ```
    #[must_use]
    pub fn failures(&self) -> &[Failure<E>] {
        &self.failures
    }

    /// Consumes the error, returning every failure in order of occurrence.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let err = TaskGroup::scope(|tg| async move {
    ///     tg.spawn(async { Err::<(), _>(String::from("boom")) });
    ///     Ok(())
    /// })
    /// .await
    /// .unwrap_err();
    /// let owned: Vec<String> = err
    ///     .into_failures()
    ///     .into_iter()
    ///     .filter_map(|f| f.into_error())
    ///     .collect();
    /// assert_eq!(owned, ["boom"]);
    /// # }
    /// ```
    #[must_use]
    pub fn into_failures(self) -> Vec<Failure<E>> {
        self.failures
    }

    /// Returns an iterator over the errors of the body and the tasks, in order of occurrence.
    ///
    /// Panics are left out.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let err = TaskGroup::scope(|tg| async move {
    ///     tg.spawn(async { Err::<(), _>(std::io::Error::other("disk full")) });
    ///     Ok(())
    /// })
    /// .await
    /// .unwrap_err();
    /// let messages: Vec<String> = err.errors().map(|e| e.to_string()).collect();
    /// assert_eq!(messages, ["disk full"]);
    /// # }
    /// ```
    pub fn errors(&self) -> impl Iterator<Item = &E> {
        self.failures.iter().filter_map(Failure::error)
    }

    /// Returns `true` if the group was cancelled.
    ///
    /// It was cancelled with [`TaskGroup::cancel`](crate::TaskGroup::cancel), or by the end of a
    /// graceful shutdown's grace period, and [`cancel_reason`](Self::cancel_reason) says which. A
    /// cancelled group may still report failures that happened before or during the cancellation.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let err = TaskGroup::scope(|tg| async move {
    ///     tg.cancel();
    ///     std::future::pending::<()>().await;
    ///     Ok::<_, String>(())
    /// })
    /// .await
    /// .unwrap_err();
    /// assert!(err.is_cancelled());
    /// assert_eq!(err.to_string(), "task group was cancelled");
    /// # }
    /// ```
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.is_some()
    }

    /// Returns why the group was cancelled.
    ///
    /// The reason is [`CancelReason::Cancelled`] for [`TaskGroup::cancel`], and
    /// [`CancelReason::GraceRanOut`] when a graceful shutdown's grace period ran out. Returns
    /// `None` unless [`is_cancelled`](Self::is_cancelled) is `true`.
    ///
    /// A group cancelled by a failure is not "cancelled" here: its failures say what happened. A
    /// group cancelled from outside, by the deadline or `cancel()` of a scope around it or by a
    /// `select!`, is dropped and returns nothing. Its tasks' [`TaskError`]s carry those reasons.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use std::time::Duration;
    /// use quattro::{CancelReason, TaskGroup};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let cancelled = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
    ///     tg.cancel();
    ///     Ok(())
    /// })
    /// .await
    /// .unwrap_err();
    /// assert_eq!(cancelled.cancel_reason(), Some(CancelReason::Cancelled));
    ///
    /// let cut = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
    ///     tg.spawn(std::future::pending::<Result<(), _>>()); // never finishes
    ///     Ok(())
    /// })
    /// .shutdown_after(Duration::from_secs(1), Duration::from_secs(5))
    /// .await
    /// .unwrap_err();
    /// assert_eq!(cut.cancel_reason(), Some(CancelReason::GraceRanOut));
    /// assert_eq!(cut.to_string(), "task group was cancelled: the grace period ran out");
    /// # }
    /// ```
    ///
    /// [`TaskGroup::cancel`]: crate::TaskGroup::cancel
    /// [`TaskError`]: crate::TaskError
    #[must_use]
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        self.cancelled
    }

    /// Returns `true` if one of the failures is a captured panic.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let err = TaskGroup::builder()
    ///     .capture_panics()
    ///     .scope(|tg| async move {
    ///         tg.spawn(async { if true { panic!("bug") } Ok::<(), ()>(()) });
    ///         Ok(())
    ///     })
    ///     .await
    ///     .unwrap_err();
    /// assert!(err.has_panic());
    /// assert_eq!(err.errors().count(), 0);
    /// # }
    /// ```
    pub fn has_panic(&self) -> bool {
        self.failures.iter().any(Failure::is_panic)
    }

    /// Resumes the first captured panic, if there is one, and otherwise returns the error.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::panic::{AssertUnwindSafe, catch_unwind};
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let err = TaskGroup::builder()
    ///     .capture_panics()
    ///     .scope(|tg| async move {
    ///         tg.spawn(async { if true { panic!("bug") } Ok::<(), ()>(()) });
    ///         Ok(())
    ///     })
    ///     .await
    ///     .unwrap_err();
    /// let payload = catch_unwind(AssertUnwindSafe(|| err.resume_panic())).unwrap_err();
    /// assert_eq!(payload.downcast_ref::<&str>(), Some(&"bug"));
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// Resumes the first captured panic, if the error holds one. That is its purpose. The other
    /// failures are dropped with the error.
    pub fn resume_panic(self) -> GroupError<E> {
        let mut this = self;
        if let Some(i) = this.failures.iter().position(Failure::is_panic) {
            let failure = this.failures.swap_remove(i);
            if let Some(payload) = failure.into_panic() {
                std::panic::resume_unwind(payload);
            }
        }
        this
    }
}

impl<E: fmt::Debug> fmt::Debug for GroupError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupError")
            .field("failures", &self.failures)
            .field("cancel_reason", &self.cancelled)
            .finish()
    }
}

impl<E: fmt::Display> fmt::Display for GroupError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // "Cancelled" needs no explanation when `cancel()` did it: it would only repeat itself.
        let why = self
            .cancelled
            .filter(|reason| *reason != CancelReason::Cancelled);
        match (self.failures.len(), self.cancelled, why) {
            (0, Some(_), Some(why)) => return write!(f, "task group was cancelled: {why}"),
            (0, Some(_), None) => return "task group was cancelled".fmt(f),
            (0, None, _) => return "task group failed".fmt(f),
            (1, ..) => "task group failed: ".fmt(f)?,
            (n, ..) => write!(f, "task group failed with {n} errors: ")?,
        }
        for (i, failure) in self.failures.iter().enumerate() {
            if i > 0 {
                "; ".fmt(f)?;
            }
            failure.fmt(f)?;
        }
        match (self.cancelled, why) {
            (Some(_), Some(why)) => write!(f, " (and was cancelled: {why})"),
            (Some(_), None) => " (and was cancelled)".fmt(f),
            (None, _) => Ok(()),
        }
    }
}

/// The error has no `source()`, since `Display` already holds every failure's text.
impl<E: fmt::Debug + fmt::Display> std::error::Error for GroupError<E> {}

/// Converts a group's error into an `io::Error` of kind [`Other`](std::io::ErrorKind::Other).
///
/// The message is the group's `Display`. This lets `?` work in functions that return
/// `io::Result`.
///
/// # Examples
///
/// ```
/// use quattro::TaskGroup;
///
/// async fn copy_all() -> std::io::Result<()> {
///     TaskGroup::scope(|tg| async move {
///         tg.task("copy").spawn(async { Err::<(), _>(std::io::Error::other("disk full")) });
///         Ok(())
///     })
///     .await?;
///     Ok(())
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let err = copy_all().await.unwrap_err();
/// assert_eq!(err.kind(), std::io::ErrorKind::Other);
/// assert_eq!(err.to_string(), "task group failed: task `copy`: disk full");
/// # }
/// ```
impl<E> From<GroupError<E>> for std::io::Error
where
    E: fmt::Debug + fmt::Display + Send + Sync + 'static,
{
    fn from(err: GroupError<E>) -> std::io::Error {
        std::io::Error::other(err)
    }
}

/// A single failure in a [`GroupError`].
///
/// It says which task failed, and holds its error or panic. `Display` reads `<who>: <error>` or
/// `<who> panicked: <message>`. `<who>` is `body`, ``task `name` `` for a task named with
/// [`TaskGroup::task`], `item 7` for the eighth item of a `gather`, or
/// `task <id> spawned at <file>:<line>` for an unnamed task.
///
/// `Failure<E>` is `Send + Sync` when `E` is, and implements [`std::error::Error`] for every
/// `E: Debug + Display`, with no [`source`](std::error::Error::source), like [`GroupError`].
///
/// # Examples
///
/// ```
/// use quattro::TaskGroup;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let err = TaskGroup::scope(|tg| async move {
///     tg.task("fetch").spawn(async { Err::<(), _>("timeout") });
///     Ok(())
/// })
/// .await
/// .unwrap_err();
/// let failure = &err.failures()[0];
/// assert!(!failure.is_body() && !failure.is_panic());
/// assert_eq!(failure.to_string(), "task `fetch`: timeout");
/// # }
/// ```
///
/// [`TaskGroup::task`]: crate::TaskGroup::task
pub struct Failure<E> {
    task: TaskLabel,
    kind: FailureKind<E>,
}

enum FailureKind<E> {
    Error(E),
    Panic(Payload),
}

impl<E> Failure<E> {
    pub(crate) fn from_error(task: TaskLabel, error: E) -> Failure<E> {
        Failure {
            task,
            kind: FailureKind::Error(error),
        }
    }

    pub(crate) fn from_panic(task: TaskLabel, payload: Box<dyn Any + Send>) -> Failure<E> {
        Failure {
            task,
            kind: FailureKind::Panic(Payload::new(payload)),
        }
    }

    pub(crate) fn label(&self) -> &TaskLabel {
        &self.task
    }

    /// Returns `true` if the group's body failed, rather than a task.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let err = TaskGroup::scope(|_tg| async { Err::<(), _>("bad input") })
    ///     .await
    ///     .unwrap_err();
    /// assert!(err.failures()[0].is_body());
    /// assert_eq!(err.failures()[0].to_string(), "body: bad input");
    /// # }
    /// ```
    pub fn is_body(&self) -> bool {
        matches!(self.task, TaskLabel::Body)
    }

    /// Returns the name of the failed task, if it has one.
    ///
    /// That is the name given with [`TaskGroup::task`](crate::TaskGroup::task), or a gather item's
    /// name. Returns `None` for the body and for an unnamed task.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let err = TaskGroup::scope(|tg| async move {
    ///     tg.task("fetch").spawn(async { Err::<(), _>("timeout") });
    ///     Ok(())
    /// })
    /// .await
    /// .unwrap_err();
    /// assert_eq!(err.failures()[0].task_name(), Some("fetch"));
    /// # }
    /// ```
    pub fn task_name(&self) -> Option<&str> {
        self.task.name()
    }

    /// Returns the tokio id of the failed task.
    ///
    /// Returns `None` for the body.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut id = None;
    /// let spawned = &mut id;
    /// let err = TaskGroup::scope(|tg| async move {
    ///     *spawned = tg.spawn(async { Err::<(), _>("boom") }).id();
    ///     Ok(())
    /// })
    /// .await
    /// .unwrap_err();
    /// assert!(id.is_some());
    /// assert_eq!(err.failures()[0].task_id(), id);
    /// # }
    /// ```
    pub fn task_id(&self) -> Option<tokio::task::Id> {
        self.task.id()
    }

    /// Returns the position in the input of the failed item, when the failure comes from a gather.
    ///
    /// Positions count from 0. Returns `None` for a group's body and tasks, which are not items of
    /// a [`gather`](crate::gather()).
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let err = TaskGroup::scope(|tg| async move {
    ///     tg.spawn(async { Err::<(), _>("boom") });
    ///     Ok(())
    /// })
    /// .await
    /// .unwrap_err();
    /// assert_eq!(err.failures()[0].item_index(), None); // a task, not a gather item
    /// # }
    /// ```
    pub fn item_index(&self) -> Option<usize> {
        self.task.item()
    }

    /// Returns the error, unless this failure is a panic.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let err = TaskGroup::scope(|tg| async move {
    ///     tg.spawn(async { Err::<(), _>("boom") });
    ///     Ok(())
    /// })
    /// .await
    /// .unwrap_err();
    /// assert_eq!(err.failures()[0].error(), Some(&"boom"));
    /// # }
    /// ```
    pub fn error(&self) -> Option<&E> {
        match &self.kind {
            FailureKind::Error(e) => Some(e),
            FailureKind::Panic(_) => None,
        }
    }

    /// Consumes the failure, returning the error unless it is a panic.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let err = TaskGroup::scope(|tg| async move {
    ///     tg.spawn(async { Err::<(), _>(String::from("boom")) });
    ///     Ok(())
    /// })
    /// .await
    /// .unwrap_err();
    /// let failure = err.into_failures().pop().unwrap();
    /// assert_eq!(failure.into_error(), Some(String::from("boom")));
    /// # }
    /// ```
    pub fn into_error(self) -> Option<E> {
        match self.kind {
            FailureKind::Error(e) => Some(e),
            FailureKind::Panic(_) => None,
        }
    }

    /// Returns `true` if the task panicked.
    ///
    /// A `GroupError` holds panics only with [`Builder::capture_panics`]. A failure handler of
    /// [`Builder::isolate_failures`] sees them too.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let err = TaskGroup::builder()
    ///     .capture_panics()
    ///     .scope(|tg| async move {
    ///         tg.spawn(async { if true { panic!("bug") } Ok::<(), ()>(()) });
    ///         Ok(())
    ///     })
    ///     .await
    ///     .unwrap_err();
    /// assert!(err.failures()[0].is_panic());
    /// assert_eq!(err.failures()[0].error(), None);
    /// # }
    /// ```
    ///
    /// [`Builder::capture_panics`]: crate::group::Builder::capture_panics
    /// [`Builder::isolate_failures`]: crate::group::Builder::isolate_failures
    pub fn is_panic(&self) -> bool {
        matches!(self.kind, FailureKind::Panic(_))
    }

    /// Consumes the failure, returning the panic payload if the task panicked.
    ///
    /// Pass the payload to `std::panic::resume_unwind` to re-raise the panic.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let err = TaskGroup::builder()
    ///     .capture_panics()
    ///     .scope(|tg| async move {
    ///         tg.task("worker").spawn(async { if true { panic!("bug") } Ok::<(), ()>(()) });
    ///         Ok(())
    ///     })
    ///     .await
    ///     .unwrap_err();
    /// let payload = err.into_failures().pop().unwrap().into_panic().unwrap();
    /// assert_eq!(payload.downcast_ref::<&str>(), Some(&"bug"));
    /// # }
    /// ```
    pub fn into_panic(self) -> Option<Box<dyn Any + Send + 'static>> {
        match self.kind {
            FailureKind::Panic(p) => Some(p.into_inner()),
            FailureKind::Error(_) => None,
        }
    }
}

impl<E: fmt::Debug> fmt::Debug for Failure<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Failure");
        s.field("task", &self.task.to_string());
        match &self.kind {
            FailureKind::Error(e) => s.field("error", e),
            FailureKind::Panic(p) => s.field("panic", p),
        };
        s.finish()
    }
}

impl<E: fmt::Display> fmt::Display for Failure<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            FailureKind::Error(e) => write!(f, "{}: {e}", self.task),
            FailureKind::Panic(p) => write!(f, "{} panicked: {p}", self.task),
        }
    }
}

/// The failure has no `source()`, like [`GroupError`].
impl<E: fmt::Debug + fmt::Display> std::error::Error for Failure<E> {}
