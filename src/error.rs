//! Error types.

use std::fmt;

/// The error of a [`Fail`] future whose cancel scope was cancelled: its deadline was reached,
/// or [`CancelScope::cancel`] was called.
///
/// Unlike Python's `TimeoutError`, which quattro raises for both, the error keeps which of the
/// two happened: see [`is_deadline_reached`](Elapsed::is_deadline_reached) and
/// [`is_cancelled`](Elapsed::is_cancelled).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use quattro::fail_after;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let err = fail_after(Duration::from_millis(10), std::future::pending::<()>())
///     .await
///     .unwrap_err();
/// assert!(err.is_deadline_reached());
/// assert_eq!(err.to_string(), "deadline has elapsed");
/// # }
/// ```
///
/// [`Fail`]: crate::Fail
/// [`CancelScope::cancel`]: crate::CancelScope::cancel
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Elapsed(Cause);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Cause {
    Deadline,
    Cancelled,
}

impl Elapsed {
    pub(crate) fn deadline() -> Elapsed {
        Elapsed(Cause::Deadline)
    }

    pub(crate) fn cancelled() -> Elapsed {
        Elapsed(Cause::Cancelled)
    }

    /// The scope's deadline was reached.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let err = quattro::fail_after(Duration::from_secs(1), std::future::pending::<()>())
    ///     .await
    ///     .unwrap_err();
    /// assert!(err.is_deadline_reached());
    /// assert!(!err.is_cancelled());
    /// # }
    /// ```
    pub fn is_deadline_reached(&self) -> bool {
        self.0 == Cause::Deadline
    }

    /// The scope was cancelled by [`CancelScope::cancel`] (or by a linked
    /// `CancellationToken`) before its deadline.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::CancelScope;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let scope = CancelScope::new();
    /// scope.cancel();
    /// let err = scope.fail(std::future::pending::<()>()).await.unwrap_err();
    /// assert!(err.is_cancelled());
    /// assert!(!err.is_deadline_reached());
    /// # }
    /// ```
    ///
    /// [`CancelScope::cancel`]: crate::CancelScope::cancel
    pub fn is_cancelled(&self) -> bool {
        self.0 == Cause::Cancelled
    }
}

impl fmt::Debug for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Elapsed").field(&self.0).finish()
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Cause::Deadline => "deadline has elapsed".fmt(f),
            Cause::Cancelled => "cancel scope was cancelled".fmt(f),
        }
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for std::io::Error {
    fn from(err: Elapsed) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::TimedOut, err)
    }
}

/// What a task group returns when it did not complete normally: every failure of its body and
/// children, in order of occurrence, and whether it was cancelled.
///
/// The type is the same whether one task or many failed (Trio's "strict" groups), so callers
/// handle one shape. Children that were aborted because of a failure or a cancellation add
/// nothing: only real errors (and, with [`Builder::capture_panics`], panics) are listed.
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
/// [`Builder::capture_panics`]: crate::group::Builder::capture_panics
pub struct GroupError<E> {
    failures: Vec<Failure<E>>,
    cancelled: bool,
}

impl<E> GroupError<E> {
    pub(crate) fn new(failures: Vec<Failure<E>>, cancelled: bool) -> GroupError<E> {
        GroupError {
            failures,
            cancelled,
        }
    }

    /// Every failure, in order of occurrence.
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
    pub fn failures(&self) -> &[Failure<E>] {
        &self.failures
    }

    /// Every failure, in order of occurrence, by value.
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
    pub fn into_failures(self) -> Vec<Failure<E>> {
        self.failures
    }

    /// The errors returned by the body and the children, in order, leaving out panics.
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

    /// Whether the group was cancelled with [`TaskGroup::cancel`](crate::TaskGroup::cancel).
    /// A cancelled group may still report failures that happened before or during the
    /// cancellation.
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
    pub fn is_cancelled(&self) -> bool {
        self.cancelled
    }

    /// Whether one of the failures is a captured panic.
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

    /// Resumes the first captured panic, if there is one; otherwise gives the error back.
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
    /// Resumes the first captured panic (that is its purpose).
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
            .field("cancelled", &self.cancelled)
            .finish()
    }
}

impl<E: fmt::Display> fmt::Display for GroupError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.failures.len(), self.cancelled) {
            (0, true) => return "task group was cancelled".fmt(f),
            (0, false) => return "task group failed".fmt(f),
            (1, _) => "task group failed: ".fmt(f)?,
            (n, _) => write!(f, "task group failed with {n} errors: ")?,
        }
        for (i, failure) in self.failures.iter().enumerate() {
            if i > 0 {
                "; ".fmt(f)?;
            }
            failure.fmt(f)?;
        }
        if self.cancelled {
            " (and was cancelled)".fmt(f)?;
        }
        Ok(())
    }
}

impl<E: std::error::Error + 'static> std::error::Error for GroupError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.errors().next().map(|e| e as _)
    }
}

/// One failure in a [`GroupError`]: which task failed, and its error or panic.
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
pub struct Failure<E> {
    task: TaskLabel,
    kind: FailureKind<E>,
}

/// Who failed: the body of the group, or a child task.
#[derive(Clone, Debug)]
pub(crate) enum TaskLabel {
    Body,
    Child {
        id: Option<tokio::task::Id>,
        name: Option<std::sync::Arc<str>>,
    },
}

enum FailureKind<E> {
    Error(E),
    Panic(Box<dyn std::any::Any + Send + 'static>),
}

impl<E> Failure<E> {
    pub(crate) fn from_error(task: TaskLabel, error: E) -> Failure<E> {
        Failure {
            task,
            kind: FailureKind::Error(error),
        }
    }

    pub(crate) fn from_panic(
        task: TaskLabel,
        payload: Box<dyn std::any::Any + Send>,
    ) -> Failure<E> {
        Failure {
            task,
            kind: FailureKind::Panic(payload),
        }
    }

    pub(crate) fn label(&self) -> &TaskLabel {
        &self.task
    }

    /// Whether the group's body (not a child task) failed.
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

    /// The name given to the failed task with [`TaskGroup::task`](crate::TaskGroup::task).
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
        match &self.task {
            TaskLabel::Child { name, .. } => name.as_deref(),
            TaskLabel::Body => None,
        }
    }

    /// The tokio id of the failed task; `None` for the body.
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
        match &self.task {
            TaskLabel::Child { id, .. } => *id,
            TaskLabel::Body => None,
        }
    }

    /// The error, unless this failure is a panic.
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

    /// The error by value, unless this failure is a panic.
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

    /// Whether the task panicked (only seen with [`Builder::capture_panics`]).
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
    pub fn is_panic(&self) -> bool {
        matches!(self.kind, FailureKind::Panic(_))
    }

    /// The panic payload, if the task panicked; pass it to `std::panic::resume_unwind` to
    /// re-raise it.
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
    pub fn into_panic(self) -> Option<Box<dyn std::any::Any + Send + 'static>> {
        match self.kind {
            FailureKind::Panic(p) => Some(p),
            FailureKind::Error(_) => None,
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("<non-string panic payload>")
}

impl fmt::Display for TaskLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskLabel::Body => "body".fmt(f),
            TaskLabel::Child {
                name: Some(name), ..
            } => write!(f, "task `{name}`"),
            TaskLabel::Child { id: Some(id), .. } => write!(f, "task {id}"),
            TaskLabel::Child { .. } => "task".fmt(f),
        }
    }
}

impl<E: fmt::Debug> fmt::Debug for Failure<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Failure");
        s.field("task", &self.task.to_string());
        match &self.kind {
            FailureKind::Error(e) => s.field("error", e),
            FailureKind::Panic(p) => s.field("panic", &panic_message(&**p)),
        };
        s.finish()
    }
}

impl<E: fmt::Display> fmt::Display for Failure<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            FailureKind::Error(e) => write!(f, "{}: {e}", self.task),
            FailureKind::Panic(p) => write!(f, "{} panicked: {}", self.task, panic_message(&**p)),
        }
    }
}

/// Why a task's result is not available: it was cancelled, it failed (its error went to the
/// group), or it panicked.
///
/// A [`TaskHandle`] yields `TaskError` (with `E = Reported`: the error itself went to the
/// group's [`GroupError`]); [`gather_settled`] yields `TaskError<E>` holding each item's own
/// error or panic.
///
/// # Examples
///
/// ```
/// use quattro::TaskGroup;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let _ = TaskGroup::scope(|tg| async move {
///     let handle = tg.spawn(std::future::pending::<Result<(), ()>>());
///     handle.abort();
///     let err = handle.await.unwrap_err();
///     assert!(err.is_cancelled());
///     assert_eq!(err.to_string(), "task was cancelled");
///     Ok::<_, ()>(())
/// })
/// .await;
/// # }
/// ```
///
/// [`TaskHandle`]: crate::TaskHandle
/// [`gather_settled`]: crate::gather_settled()
pub struct TaskError<E = Reported> {
    repr: TaskErrorRepr<E>,
}

/// Stands in a [`TaskError`] for an error that was reported to the task group (in its
/// [`GroupError`]) rather than kept for the task's handle.
///
/// # Examples
///
/// ```
/// use quattro::{Reported, TaskGroup};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut handle = None;
/// let slot = &mut handle;
/// let err = TaskGroup::scope(|tg| async move {
///     *slot = Some(tg.spawn(async { Err::<(), _>("boom") }));
///     Ok(())
/// })
/// .await
/// .unwrap_err();
/// assert_eq!(err.errors().collect::<Vec<_>>(), [&"boom"]); // the error went here
/// let reported: Reported = handle.unwrap().await.unwrap_err().into_error().unwrap();
/// assert_eq!(reported.to_string(), "the error was reported to the task group");
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Reported(());

impl Reported {
    pub(crate) fn new() -> Reported {
        Reported(())
    }
}

impl fmt::Display for Reported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        "the error was reported to the task group".fmt(f)
    }
}

enum TaskErrorRepr<E> {
    Cancelled,
    Failed(E),
    Panicked(Option<Box<dyn std::any::Any + Send + 'static>>),
}

impl<E> TaskError<E> {
    pub(crate) fn cancelled() -> TaskError<E> {
        TaskError {
            repr: TaskErrorRepr::Cancelled,
        }
    }

    pub(crate) fn failed(error: E) -> TaskError<E> {
        TaskError {
            repr: TaskErrorRepr::Failed(error),
        }
    }

    pub(crate) fn panicked(payload: Option<Box<dyn std::any::Any + Send>>) -> TaskError<E> {
        TaskError {
            repr: TaskErrorRepr::Panicked(payload),
        }
    }

    /// The task was cancelled: aborted, dropped unspawned, or cancelled with its group.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let out = TaskGroup::scope(|tg| async move {
    ///     let handle = tg.spawn(std::future::pending::<Result<(), ()>>());
    ///     handle.abort();
    ///     let err = handle.await.unwrap_err();
    ///     Ok((err.is_cancelled(), err.is_failed()))
    /// })
    /// .await;
    /// assert_eq!(out.unwrap(), (true, false));
    /// # }
    /// ```
    pub fn is_cancelled(&self) -> bool {
        matches!(self.repr, TaskErrorRepr::Cancelled)
    }

    /// The task returned an error.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::gather_settled;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let slots = gather_settled((1..=2).map(|i| async move {
    ///     if i == 1 { Ok(i) } else { Err("too big") }
    /// }))
    /// .await;
    /// assert!(slots[0].is_ok());
    /// assert!(slots[1].as_ref().unwrap_err().is_failed());
    /// # }
    /// ```
    pub fn is_failed(&self) -> bool {
        matches!(self.repr, TaskErrorRepr::Failed(_))
    }

    /// The task panicked.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::gather_settled;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let slots = gather_settled([async { if true { panic!("bug") } Ok::<(), ()>(()) }]).await;
    /// let err = slots[0].as_ref().unwrap_err();
    /// assert!(err.is_panic());
    /// assert!(!err.is_failed());
    /// # }
    /// ```
    pub fn is_panic(&self) -> bool {
        matches!(self.repr, TaskErrorRepr::Panicked(_))
    }

    /// The task's error, if it failed and the error is held here.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::gather_settled;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut slots = gather_settled([async { Err::<(), _>(String::from("bad")) }]).await;
    /// let err = slots.pop().unwrap().unwrap_err();
    /// assert_eq!(err.into_error(), Some(String::from("bad")));
    /// # }
    /// ```
    pub fn into_error(self) -> Option<E> {
        match self.repr {
            TaskErrorRepr::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// The panic payload, if the task panicked and the payload is held here (for a
    /// [`TaskHandle`](crate::TaskHandle) it went to the group instead).
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::gather_settled;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut slots = gather_settled([async { if true { panic!("bug") } Ok::<(), ()>(()) }])
    ///     .await;
    /// let payload = slots.pop().unwrap().unwrap_err().into_panic().unwrap();
    /// assert_eq!(payload.downcast_ref::<&str>(), Some(&"bug"));
    /// # }
    /// ```
    pub fn into_panic(self) -> Option<Box<dyn std::any::Any + Send + 'static>> {
        match self.repr {
            TaskErrorRepr::Panicked(p) => p,
            _ => None,
        }
    }
}

impl<E: fmt::Debug> fmt::Debug for TaskError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            TaskErrorRepr::Cancelled => f.write_str("TaskError::Cancelled"),
            TaskErrorRepr::Failed(e) => f.debug_tuple("TaskError::Failed").field(e).finish(),
            TaskErrorRepr::Panicked(p) => f
                .debug_tuple("TaskError::Panicked")
                .field(&p.as_deref().map(panic_message))
                .finish(),
        }
    }
}

impl<E: fmt::Display> fmt::Display for TaskError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            TaskErrorRepr::Cancelled => "task was cancelled".fmt(f),
            TaskErrorRepr::Failed(e) => write!(f, "task failed: {e}"),
            TaskErrorRepr::Panicked(Some(p)) => write!(f, "task panicked: {}", panic_message(&**p)),
            TaskErrorRepr::Panicked(None) => "task panicked".fmt(f),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for TaskError<E> {}
