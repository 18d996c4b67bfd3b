//! Background tasks that return a value, spawned with a [`BackgroundBuilder`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use super::shared::Role;
use super::{TaskBuilder, TaskGroup, TaskHandle};

/// A builder for a background task that returns a value.
///
/// It is returned by [`TaskGroup::background`] and [`TaskBuilder::background`], and is the
/// counterpart of Python quattro's `create_background_task`, which returns a `Task[T]`.
///
/// [`TaskGroup::spawn_background`] yields `()`, so that an endless `loop` needs no type
/// annotation. This builder spawns a background task whose handle yields its value, if it
/// finishes before the group does. The background rules apply: the group does not wait for
/// the task, aborts it once the body and every normal task are done, and does not count it
/// against the concurrency limit.
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
///     let config = tg.background().spawn(async { Ok("loaded") });
///     Ok(config.await.unwrap())
/// })
/// .await;
/// assert_eq!(out.unwrap(), "loaded");
/// # }
/// ```
#[must_use = "a task builder does nothing until its spawn method is called"]
pub struct BackgroundBuilder<'a, E> {
    group: &'a TaskGroup<E>,
    name: Option<Arc<str>>,
}

impl<E: Send + 'static> TaskGroup<E> {
    /// Returns a [`BackgroundBuilder`] for a background task that returns a value.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use std::time::Duration;
    /// use quattro::TaskGroup;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let out = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
    ///     let slow = tg.background().spawn(async {
    ///         tokio::time::sleep(Duration::from_secs(60)).await;
    ///         Ok(42)
    ///     });
    ///     Ok(slow) // the body is done, so the group aborts the background task
    /// })
    /// .await;
    /// assert!(out.unwrap().await.unwrap_err().is_cancelled());
    /// # }
    /// ```
    pub fn background(&self) -> BackgroundBuilder<'_, E> {
        BackgroundBuilder {
            group: self,
            name: None,
        }
    }
}

impl<'a, E: Send + 'static> TaskBuilder<'a, E> {
    /// Returns a [`BackgroundBuilder`] for a background task with this name.
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
    ///     let warm = tg.task("cache-warmer").background().spawn(async { Ok(128usize) });
    ///     Ok(warm.await.unwrap())
    /// })
    /// .await;
    /// assert_eq!(out.unwrap(), 128);
    /// # }
    /// ```
    pub fn background(self) -> BackgroundBuilder<'a, E> {
        let (group, name) = self.into_parts();
        BackgroundBuilder {
            group,
            name: Some(name),
        }
    }
}

impl<E: Send + 'static> BackgroundBuilder<'_, E> {
    /// Spawns the background task, returning a [`TaskHandle`] that yields its value.
    ///
    /// If the group finishes first, the task is aborted and the handle resolves to a
    /// cancelled [`TaskError`](crate::TaskError).
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
    ///         let busy = tg.spawn(async { Ok(1) });
    ///         // Not held back by the limit: background tasks do not count.
    ///         let side = tg.background().spawn(async { Ok(2) });
    ///         Ok(busy.await.unwrap() + side.await.unwrap())
    ///     })
    ///     .await;
    /// assert_eq!(out.unwrap(), 3);
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// This method does not panic; see [`TaskGroup::spawn`].
    #[track_caller]
    pub fn spawn<F, T>(self, fut: F) -> TaskHandle<T>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
    {
        self.group.spawn_role(fut, self.name, Role::Background)
    }
}

impl<E> fmt::Debug for BackgroundBuilder<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackgroundBuilder")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}
