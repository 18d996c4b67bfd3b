//! Spawn permits, which reserve a slot before the work is taken, and `try_spawn`.
//!
//! `spawn_when_free` waits for a slot with the future in hand. A dispatcher that must take a
//! job from a channel, or a server that must `accept()` a connection, wants the slot *first*,
//! so that nothing it holds is lost if the group shuts down while it waits. A [`SpawnPermit`]
//! (`reserve`, `try_reserve`) is that slot. `try_spawn` spawns only if a slot is free.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::sync::Arc;

use super::TaskGroup;
use super::handle::{TaskHandle, ToHandle};
use super::registry::TaskKey;
use super::shared::{Refusal, Shared};

impl<E: Send + 'static> TaskGroup<E> {
    /// Waits for a free slot under the concurrency limit and reserves it for a task to come.
    ///
    /// The permit counts as a running task until it is used with [`SpawnPermit::spawn`], or
    /// dropped, which frees the slot for the next in line. Reservations wait in the same FIFO
    /// line as [`spawn_when_free`](Self::spawn_when_free). Without a limit, a permit is
    /// granted at once.
    ///
    /// # Examples
    ///
    /// A dispatcher takes a slot before it takes a job, so a job is never held while waiting:
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (jobs, mut queue) = tokio::sync::mpsc::channel::<u32>(8);
    /// for job in 0..5 {
    ///     jobs.send(job).await.unwrap();
    /// }
    /// drop(jobs);
    /// let out = TaskGroup::builder()
    ///     .concurrency_limit(2)
    ///     .scope(|tg: TaskGroup<Infallible>| async move {
    ///         while let Ok(permit) = tg.reserve().await {
    ///             let Some(job) = queue.recv().await else { break };
    ///             permit.spawn(async move { Ok(job * 2) });
    ///         }
    ///         Ok(())
    ///     })
    ///     .await;
    /// assert!(out.is_ok());
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// Returns a [`SpawnError`] for which [`is_closed`](SpawnError::is_closed) is true if the
    /// group is closed (finished or cancelling), or a graceful shutdown of the group was
    /// requested, before or while the caller waits.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. Dropping the future gives up its place in line, and a slot
    /// granted at that moment goes back to the group.
    pub async fn reserve(&self) -> Result<SpawnPermit<'_, E>, SpawnError> {
        match self.shared.acquire().await {
            Some(key) => Ok(SpawnPermit::new(self, key)),
            None => Err(SpawnError::new((), Refusal::Closed)),
        }
    }

    /// Reserves a free slot without waiting; see [`reserve`](Self::reserve).
    ///
    /// It is FIFO-fair: while producers wait in [`reserve`](Self::reserve) or
    /// [`spawn_when_free`](Self::spawn_when_free), no slot is free for a newcomer.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let out = TaskGroup::builder()
    ///     .concurrency_limit(1)
    ///     .scope(|tg: TaskGroup<Infallible>| async move {
    ///         let permit = tg.try_reserve().unwrap();
    ///         assert!(tg.try_reserve().unwrap_err().is_full()); // the one slot is taken
    ///         drop(permit); // and free again
    ///         assert!(tg.try_reserve().is_ok());
    ///         Ok(())
    ///     })
    ///     .await;
    /// assert!(out.is_ok());
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// Returns a [`SpawnError`] for which [`is_full`](SpawnError::is_full) is true if no slot
    /// is free, or [`is_closed`](SpawnError::is_closed) if the group is closed or a shutdown
    /// of the group was requested.
    pub fn try_reserve(&self) -> Result<SpawnPermit<'_, E>, SpawnError> {
        match self.shared.try_acquire() {
            Ok(key) => Ok(SpawnPermit::new(self, key)),
            Err(refusal) => Err(SpawnError::new((), refusal)),
        }
    }

    /// Spawns a normal task if a slot is free, or returns the future without waiting.
    ///
    /// It never waits and never queues, like Go's `errgroup.TryGo`, and it is FIFO-fair like
    /// [`try_reserve`](Self::try_reserve). Without a limit it spawns unless the group is
    /// closed or a shutdown of the group was requested.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let out = TaskGroup::builder()
    ///     .concurrency_limit(1)
    ///     .scope(|tg: TaskGroup<Infallible>| async move {
    ///         let first = tg.try_spawn(async { Ok(1) }).unwrap();
    ///         let refused = tg.try_spawn(async { Ok(2) }).unwrap_err();
    ///         assert!(refused.is_full());
    ///         let second = refused.into_inner(); // the future, never polled
    ///         let one = first.await.unwrap();
    ///         let two = tg.try_spawn(second).unwrap().await.unwrap(); // a slot is free now
    ///         Ok(one + two)
    ///     })
    ///     .await;
    /// assert_eq!(out.unwrap(), 3);
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// Returns a [`SpawnError`] holding `fut`, unpolled. Its [`is_full`](SpawnError::is_full)
    /// is true if no slot is free, and [`is_closed`](SpawnError::is_closed) if the group is
    /// closed or a shutdown of the group was requested.
    #[track_caller]
    pub fn try_spawn<F, T>(&self, fut: F) -> Result<TaskHandle<T>, SpawnError<F>>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
    {
        match self.shared.try_acquire() {
            Ok(key) => Ok(spawn_under(&self.shared, key, fut, Location::caller())),
            Err(refusal) => Err(SpawnError::new(fut, refusal)),
        }
    }
}

/// Spawns `fut` under a slot reserved with `key`, named by where it was spawned (`at`).
#[track_caller]
pub(crate) fn spawn_under<F, T, E>(
    shared: &Arc<Shared<E>>,
    key: TaskKey,
    fut: F,
    at: &'static std::panic::Location<'static>,
) -> TaskHandle<T>
where
    F: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let join = shared.spawn_reserved(key, fut, ToHandle::new(), None, Some(at));
    TaskHandle::spawned(join, &shared.node)
}

/// A slot reserved under a group's concurrency limit, used to spawn one task without waiting.
///
/// It is returned by [`TaskGroup::reserve`] and [`TaskGroup::try_reserve`]. While it lives,
/// the permit counts as a running task, and the group does not complete before it is used or
/// dropped. Dropping an unused permit frees the slot for the next task in line.
///
/// # Examples
///
/// ```
/// use std::convert::Infallible;
/// use quattro::TaskGroup;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let out = TaskGroup::builder()
///     .concurrency_limit(1)
///     .scope(|tg: TaskGroup<Infallible>| async move {
///         let permit = tg.reserve().await.unwrap();
///         assert_eq!(tg.len(), 1); // the reserved slot counts
///         Ok(permit.spawn(async { Ok("served") }).await.unwrap())
///     })
///     .await;
/// assert_eq!(out.unwrap(), "served");
/// # }
/// ```
#[must_use = "a permit holds a slot until it is used or dropped"]
pub struct SpawnPermit<'a, E> {
    group: &'a TaskGroup<E>,
    /// `None` once used.
    key: Option<TaskKey>,
}

impl<'a, E: Send + 'static> SpawnPermit<'a, E> {
    fn new(group: &'a TaskGroup<E>, key: TaskKey) -> Self {
        SpawnPermit {
            group,
            key: Some(key),
        }
    }

    /// Spawns a normal task in the reserved slot.
    ///
    /// A shutdown requested after the slot was reserved does not refuse it, so the work taken
    /// with the permit in hand still runs, within the grace period. A group cancelled
    /// meanwhile refuses it like any spawn: `fut` is dropped unpolled, and the handle resolves
    /// to a cancelled [`TaskError`](crate::TaskError).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let out = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
    ///     let permit = tg.reserve().await.unwrap(); // no limit: at once
    ///     Ok(permit.spawn(async { Ok(7) }).await.unwrap())
    /// })
    /// .await;
    /// assert_eq!(out.unwrap(), 7);
    /// # }
    /// ```
    #[track_caller]
    pub fn spawn<F, T>(mut self, fut: F) -> TaskHandle<T>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
    {
        let key = self.key.take().expect("a permit is used once");
        let shared = &self.group.shared;
        if shared.is_closed() {
            shared.release_unused(key);
            shared.drop_unstarted(fut);
            return TaskHandle::refused(&shared.node);
        }
        spawn_under(shared, key, fut, Location::caller())
    }
}

impl<E> Drop for SpawnPermit<'_, E> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.group.shared.release_unused(key);
        }
    }
}

impl<E> fmt::Debug for SpawnPermit<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpawnPermit")
            .field("group", &self.group.shared.id)
            .field("used", &self.key.is_none())
            .finish()
    }
}

/// Error returned when a group gives no slot for a task, because it is full or closed.
///
/// It is returned by [`TaskGroup::try_spawn`], [`TaskGroup::reserve`],
/// [`TaskGroup::try_reserve`] and [`TaskSet::try_spawn`](super::TaskSet::try_spawn). It
/// holds the future that was not spawned, if there is one ([`into_inner`](Self::into_inner)).
/// Its `Display` reads `no free slot in the task group` or `the task group is closed`.
///
/// # Examples
///
/// ```
/// use std::convert::Infallible;
/// use quattro::TaskGroup;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let tg = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move { Ok(tg.clone()) })
///     .await
///     .unwrap();
/// let err = tg.try_spawn(async { Ok(()) }).unwrap_err(); // the group has finished
/// assert!(err.is_closed());
/// assert_eq!(err.to_string(), "the task group is closed");
/// # }
/// ```
pub struct SpawnError<F = ()> {
    fut: F,
    refusal: Refusal,
}

impl<F> SpawnError<F> {
    pub(crate) fn new(fut: F, refusal: Refusal) -> Self {
        SpawnError { fut, refusal }
    }

    /// Returns `true` if the group refused because no slot was free.
    ///
    /// A slot promised to a producer already waiting counts as taken.
    ///
    /// # Examples
    ///
    /// See [`TaskGroup::try_spawn`].
    pub fn is_full(&self) -> bool {
        self.refusal == Refusal::Full
    }

    /// Returns `true` if the group refused because it is closed or shutting down.
    ///
    /// A closed group has finished or is cancelling. Either way, no slot will come.
    ///
    /// # Examples
    ///
    /// See [`SpawnError`].
    pub fn is_closed(&self) -> bool {
        self.refusal == Refusal::Closed
    }

    /// Returns the future that was not spawned.
    ///
    /// The future was never polled.
    ///
    /// # Examples
    ///
    /// See [`TaskGroup::try_spawn`].
    pub fn into_inner(self) -> F {
        self.fut
    }
}

impl<F> fmt::Debug for SpawnError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpawnError")
            .field("refusal", &self.refusal)
            .finish_non_exhaustive()
    }
}

impl<F> fmt::Display for SpawnError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.refusal {
            Refusal::Full => "no free slot in the task group".fmt(f),
            Refusal::Closed => "the task group is closed".fmt(f),
        }
    }
}

/// `SpawnError<F>` is an error for any `F` (the future is not part of the message), so `?`
/// carries it into `anyhow::Error` or `Box<dyn Error + Send + Sync>` when `F: Send + Sync`.
impl<F> Error for SpawnError<F> {}
