//! The [`TaskError`] and [`Reported`] errors of a task whose value is not available.

use std::any::Any;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use super::label::TaskLabel;
use super::panic::Payload;
use super::reason::CancelReason;

/// Error returned for a task that did not produce its value.
///
/// The task was cancelled, returned an error, or panicked. A [`TaskHandle`] yields `TaskError` with
/// `E = Reported`: the error itself went to the group's [`GroupError`], and the handle gets its
/// text. [`gather_settled`] yields `TaskError<E>`, holding each item's own error or panic.
///
/// `Display` names the task and says what happened, as in
/// ``task `fetch` failed: <the error's text>``. An unnamed task shows as
/// `task <id> spawned at <file>:<line>`, a `gather_settled` slot as `item 7` (with the item's
/// name if the gather names its items), and a task that is not known as just `task`. What
/// happened reads `failed: <the error's text>`, `was cancelled: <why>`, `panicked: <message>`,
/// or, for a task that never ran, `was cancelled before it started: <why>` (see
/// [`CancelReason`]).
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
///     assert_eq!(err.to_string(), "task was cancelled: its handle aborted it");
///     Ok::<_, ()>(())
/// })
/// .await;
/// # }
/// ```
///
/// # With `?`
///
/// `TaskError<E>` is `Send + Sync` when `E` is, and implements [`std::error::Error`] for every
/// `E: Debug + Display`. Its [`source`](std::error::Error::source) is `None`, since `Display`
/// already holds the error's text. So in a group's body, `let v = handle.await?;` compiles when
/// the body's error type is `anyhow::Error`, `Box<dyn Error + Send + Sync>`, or `io::Error`
/// through the `From` impl below.
///
/// ```
/// use quattro::TaskGroup;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let out = TaskGroup::scope(|tg| async move {
///     let handle = tg.spawn(async { Ok::<_, std::io::Error>(20) });
///     let v = handle.await?; // TaskError into io::Error
///     Ok(v + 1)
/// })
/// .await;
/// assert_eq!(out.unwrap(), 21);
/// # }
/// ```
///
/// [`TaskHandle`]: crate::TaskHandle
/// [`GroupError`]: crate::GroupError
/// [`gather_settled`]: crate::gather_settled()
/// [`CancelReason`]: crate::CancelReason
pub struct TaskError<E = Reported> {
    /// Who failed, when the task's handle knows it; `None` in a `gather_settled` slot. Boxed:
    /// only a failure sets it, and a handle's output stays small.
    task: Option<Box<TaskLabel>>,
    repr: TaskErrorRepr<E>,
}

/// Stand-in for a task's error that was reported to its task group.
///
/// A group owns its tasks' errors: each error value goes to the [`GroupError`] once, in order of
/// occurrence with the others. The task's handle gets a `Reported` instead, with the error's text,
/// written once when the task fails. So `handle.await?` or `handle.await.unwrap()` in the body
/// still says what went wrong.
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
///     *slot = Some(tg.task("load").spawn(async { Err::<(), _>("boom") }));
///     Ok(())
/// })
/// .await
/// .unwrap_err();
/// assert_eq!(err.errors().collect::<Vec<_>>(), [&"boom"]); // the error went here
/// let task_err = handle.unwrap().await.unwrap_err();
/// assert_eq!(task_err.to_string(), "task `load` failed: boom"); // its text came here
/// let reported: Reported = task_err.into_error().unwrap();
/// assert_eq!(reported.message(), Some("boom"));
/// # }
/// ```
///
/// # Which errors have a text
///
/// A group's error type does not need to implement `Display` (`TaskGroup<()>` is fine), so the
/// text is known only for the error types quattro recognizes at run time: `String`,
/// `&'static str`, `Box<str>`, `Arc<str>`, `Cow<'static, str>`, `std::io::Error`,
/// `std::fmt::Error`, `Box<dyn Error + Send + Sync>`, `Box<dyn Error + Send>`,
/// `Arc<dyn Error + Send + Sync>`, quattro's [`Cancelled`], [`TaskError`] and [`Reported`], and
/// `anyhow::Error` with the `anyhow` cargo feature. For any other type, [`message`] returns
/// `None`, and `Display` says where the error went (the [`GroupError`] still holds the error
/// itself). To get the text at the handle too, give the group one of those error types. A
/// `Box<dyn Error + Send + Sync>` holds any error.
///
/// [`GroupError`]: crate::GroupError
/// [`Cancelled`]: crate::Cancelled
/// [`message`]: Reported::message
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reported {
    message: Option<Box<str>>,
}

impl Reported {
    /// A stand-in for `error`, with its text when its type is one quattro can write.
    pub(crate) fn describe<E: 'static>(error: &E) -> Reported {
        Reported {
            message: describe(error),
        }
    }

    /// Returns the text of the task's error, if quattro could write it.
    ///
    /// See the type's docs for the error types it recognizes.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let _ = TaskGroup::scope(|tg| async move {
    ///     let handle = tg.spawn(async { Err::<(), _>(String::from("boom")) });
    ///     let reported = handle.await.unwrap_err().into_error().unwrap();
    ///     assert_eq!(reported.message(), Some("boom"));
    ///     Ok(())
    /// })
    /// .await;
    ///
    /// struct Opaque; // no `Display`: its text cannot be known
    /// let _ = TaskGroup::scope(|tg| async move {
    ///     let handle = tg.spawn(async { Err::<(), _>(Opaque) });
    ///     let reported = handle.await.unwrap_err().into_error().unwrap();
    ///     assert_eq!(reported.message(), None);
    ///     assert_eq!(reported.to_string(), "the error was reported to the task group");
    ///     Ok(())
    /// })
    /// .await;
    /// # }
    /// ```
    #[must_use]
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }
}

impl fmt::Debug for Reported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            Some(message) => f.debug_tuple("Reported").field(message).finish(),
            None => f.write_str("Reported"),
        }
    }
}

impl fmt::Display for Reported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            Some(message) => message.fmt(f),
            None => "the error was reported to the task group".fmt(f),
        }
    }
}

impl std::error::Error for Reported {}

/// The text of `error`, when its type is one of the `Display` types this crate recognises.
///
/// A group's error type needs no `Display`, so the type is found at run time. A `Display`
/// that panics gives no text (the panic is not the task's failure).
fn describe<E: 'static>(error: &E) -> Option<Box<str>> {
    use std::borrow::Cow;
    use std::error::Error;

    let error: &dyn Any = error;
    macro_rules! known {
        ($($ty:ty),+ $(,)?) => {
            $(
                if let Some(error) = error.downcast_ref::<$ty>() {
                    return catch_unwind(AssertUnwindSafe(|| error.to_string().into())).ok();
                }
            )+
        };
    }
    known!(
        String,
        &'static str,
        Box<str>,
        Arc<str>,
        Cow<'static, str>,
        std::io::Error,
        fmt::Error,
        Box<dyn Error + Send + Sync>,
        Box<dyn Error + Send>,
        Arc<dyn Error + Send + Sync>,
        super::Cancelled,
        TaskError,
        Reported,
    );
    #[cfg(feature = "anyhow")]
    known!(anyhow::Error);
    None
}

enum TaskErrorRepr<E> {
    Cancelled {
        reason: CancelReason,
        /// Dropped without ever being handed to the runtime: queued, or refused.
        unstarted: bool,
    },
    Failed(E),
    Panicked(Option<Payload>),
}

impl TaskError {
    /// What the handle of a task that returned `error` yields: the task's label and the
    /// error's text (the error itself goes to the group).
    pub(crate) fn reported<E: 'static>(
        name: Option<&Arc<str>>,
        at: Option<&'static std::panic::Location<'static>>,
        error: &E,
    ) -> TaskError {
        TaskError {
            task: Some(Box::new(TaskLabel::current_child(name, at))),
            repr: TaskErrorRepr::Failed(Reported::describe(error)),
        }
    }
}

impl<E> TaskError<E> {
    /// A task that was cancelled, after it was spawned, because of `reason`.
    pub(crate) fn cancelled(reason: CancelReason) -> TaskError<E> {
        TaskError {
            task: None,
            repr: TaskErrorRepr::Cancelled {
                reason,
                unstarted: false,
            },
        }
    }

    /// A task that was dropped before it was spawned (it waited in the queue, or the group
    /// refused it), because of `reason`.
    pub(crate) fn unstarted(reason: CancelReason, task: Option<TaskLabel>) -> TaskError<E> {
        TaskError {
            task: task.map(Box::new),
            repr: TaskErrorRepr::Cancelled {
                reason,
                unstarted: true,
            },
        }
    }

    pub(crate) fn failed(error: E) -> TaskError<E> {
        TaskError {
            task: None,
            repr: TaskErrorRepr::Failed(error),
        }
    }

    pub(crate) fn panicked(payload: Option<Box<dyn Any + Send>>) -> TaskError<E> {
        TaskError {
            task: None,
            repr: TaskErrorRepr::Panicked(payload.map(Payload::new)),
        }
    }

    /// Names the task this error comes from (a `gather_settled` slot learns its position
    /// only once the gather ends).
    pub(crate) fn set_label(&mut self, label: TaskLabel) {
        self.task = Some(Box::new(label));
    }

    /// Returns the name of the task, if it has one.
    ///
    /// That is the name given with [`TaskGroup::task`], or a gather item's name (see
    /// [`Gather::name_items`]). Returns `None` when the task has no name, or when the error does
    /// not know which task it comes from.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let _ = TaskGroup::scope(|tg| async move {
    ///     let handle = tg.task("load").spawn(async { Err::<(), _>("boom") });
    ///     assert_eq!(handle.await.unwrap_err().task_name(), Some("load"));
    ///     Ok(())
    /// })
    /// .await;
    /// # }
    /// ```
    ///
    /// [`TaskGroup::task`]: crate::TaskGroup::task
    /// [`Gather::name_items`]: crate::gather::Gather::name_items
    pub fn task_name(&self) -> Option<&str> {
        self.task.as_deref().and_then(TaskLabel::name)
    }

    /// Returns the position in the input of the item this error comes from.
    ///
    /// Positions count from 0. Only a [`gather_settled`](crate::gather_settled()) slot knows it: a
    /// task's handle returns `None`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let slots = quattro::gather_settled([1, 2].map(|i| async move {
    ///     if i == 2 { Err("even") } else { Ok(i) }
    /// }))
    /// .await;
    /// assert_eq!(slots[1].as_ref().unwrap_err().item_index(), Some(1));
    /// # }
    /// ```
    pub fn item_index(&self) -> Option<usize> {
        self.task.as_deref().and_then(TaskLabel::item)
    }

    /// Returns `true` if the task was cancelled.
    ///
    /// It was aborted, dropped before it started, or cancelled with its group.
    /// [`cancel_reason`](Self::cancel_reason) says why.
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
        matches!(self.repr, TaskErrorRepr::Cancelled { .. })
    }

    /// Returns why the task was cancelled.
    ///
    /// Returns `None` unless [`is_cancelled`](Self::is_cancelled) is `true`. See [`CancelReason`]
    /// for the causes, and for which wins when there are several.
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::{CancelReason, TaskGroup};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut handles = Vec::new();
    /// let slot = &mut handles;
    /// let err = TaskGroup::scope(|tg| async move {
    ///     let aborted = tg.spawn(std::future::pending::<Result<(), &str>>());
    ///     aborted.abort();
    ///     slot.push(aborted);
    ///     slot.push(tg.task("sibling").spawn(std::future::pending()));
    ///     tokio::task::yield_now().await; // both are running now
    ///     tg.spawn(async { Err::<(), _>("boom") });
    ///     std::future::pending::<()>().await;
    ///     Ok(())
    /// })
    /// .await
    /// .unwrap_err();
    /// assert_eq!(err.errors().collect::<Vec<_>>(), [&"boom"]);
    ///
    /// let reasons = [CancelReason::Aborted, CancelReason::Failure];
    /// for (handle, reason) in handles.into_iter().zip(reasons) {
    ///     assert_eq!(handle.await.unwrap_err().cancel_reason(), Some(reason));
    /// }
    /// # }
    /// ```
    ///
    /// [`CancelReason`]: crate::CancelReason
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        match self.repr {
            TaskErrorRepr::Cancelled { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// Returns `true` if the task was cancelled before it started.
    ///
    /// Its future was never polled. It waited for a slot under the group's concurrency limit and
    /// was dropped from the queue, or the group refused it because it was closed or shutting down.
    /// `false` does not promise that the task ran: a task aborted right after it was spawned may
    /// not have been polled either.
    ///
    /// This is a separate question from [`cancel_reason`](Self::cancel_reason). A queued task is
    /// dropped when its handle aborts it, when a graceful shutdown is requested, when the group
    /// fails, and so on, and its reason says which.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use std::time::Duration;
    /// use quattro::{CancelReason, TaskGroup};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// TaskGroup::builder()
    ///     .concurrency_limit(1)
    ///     .scope(|tg: TaskGroup<Infallible>| async move {
    ///         tg.spawn(async { Ok(()) });
    ///         let queued = tg.task("later").spawn(async { Ok(()) }); // waits for the slot
    ///         tg.request_shutdown(Duration::from_secs(1)); // drops the queue
    ///         let err = queued.await.unwrap_err();
    ///         assert!(err.is_unstarted());
    ///         assert_eq!(err.cancel_reason(), Some(CancelReason::ShutdownRequested));
    ///         assert_eq!(
    ///             err.to_string(),
    ///             "task `later` was cancelled before it started: a shutdown was requested"
    ///         );
    ///         Ok(())
    ///     })
    ///     .await
    ///     .unwrap();
    /// # }
    /// ```
    pub fn is_unstarted(&self) -> bool {
        matches!(
            self.repr,
            TaskErrorRepr::Cancelled {
                unstarted: true,
                ..
            }
        )
    }

    /// Returns `true` if the task returned an error.
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

    /// Returns `true` if the task panicked.
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

    /// Consumes the error, returning the task's error if it failed.
    ///
    /// Returns `None` if the task did not fail. For a [`TaskHandle`](crate::TaskHandle), the error
    /// is a [`Reported`] with the error's text, since the value itself went to the group.
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

    /// Consumes the error, returning the panic payload if the task panicked.
    ///
    /// Returns `None` if the task did not panic. It also returns `None` for a
    /// [`TaskHandle`](crate::TaskHandle), since the payload went to the group.
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
    pub fn into_panic(self) -> Option<Box<dyn Any + Send + 'static>> {
        match self.repr {
            TaskErrorRepr::Panicked(p) => p.map(Payload::into_inner),
            _ => None,
        }
    }
}

impl<E: fmt::Debug> fmt::Debug for TaskError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.repr, &self.task) {
            (TaskErrorRepr::Cancelled { reason, unstarted }, _) => f
                .debug_struct("TaskError::Cancelled")
                .field("reason", reason)
                .field("unstarted", unstarted)
                .finish(),
            (TaskErrorRepr::Failed(e), Some(task)) => f
                .debug_struct("TaskError::Failed")
                .field("task", &task.to_string())
                .field("error", e)
                .finish(),
            (TaskErrorRepr::Failed(e), None) => {
                f.debug_tuple("TaskError::Failed").field(e).finish()
            }
            (TaskErrorRepr::Panicked(p), _) => {
                f.debug_tuple("TaskError::Panicked").field(p).finish()
            }
        }
    }
}

impl<E: fmt::Display> fmt::Display for TaskError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.task {
            Some(task) => write!(f, "{task} ")?,
            None => "task ".fmt(f)?,
        }
        match &self.repr {
            TaskErrorRepr::Cancelled {
                reason,
                unstarted: false,
            } => write!(f, "was cancelled: {reason}"),
            TaskErrorRepr::Cancelled {
                reason,
                unstarted: true,
            } => write!(f, "was cancelled before it started: {reason}"),
            TaskErrorRepr::Failed(e) => write!(f, "failed: {e}"),
            TaskErrorRepr::Panicked(Some(p)) => write!(f, "panicked: {p}"),
            TaskErrorRepr::Panicked(None) => "panicked".fmt(f),
        }
    }
}

/// The error has no `source()`, since `Display` already holds the error's text.
impl<E: fmt::Debug + fmt::Display> std::error::Error for TaskError<E> {}

/// Converts a task's error into an `io::Error` of kind [`Other`](std::io::ErrorKind::Other).
///
/// The message is the `TaskError`'s `Display`. This lets `handle.await?` work in a body that
/// returns `io::Result`. To get a `gather_settled` slot's own `io::Error` back with its kind, use
/// [`TaskError::into_error`] first.
///
/// # Examples
///
/// ```
/// use quattro::TaskGroup;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let err = TaskGroup::scope(|tg| async move {
///     let handle = tg.task("read").spawn(async {
///         Err::<u8, _>(std::io::Error::other("disk full"))
///     });
///     let byte = handle.await?;
///     Ok(byte)
/// })
/// .await
/// .unwrap_err();
/// // The task's own error, then what the body returned with `?`.
/// assert_eq!(err.failures()[0].to_string(), "task `read`: disk full");
/// # }
/// ```
impl<E> From<TaskError<E>> for std::io::Error
where
    E: fmt::Debug + fmt::Display + Send + Sync + 'static,
{
    fn from(err: TaskError<E>) -> std::io::Error {
        std::io::Error::other(err)
    }
}
