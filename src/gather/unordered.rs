//! The streaming forms of a gather, which return the values as the items finish.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::{Gather, SettledIter};
use crate::error::{GroupError, TaskError, TaskLabel};

/// Stream of a gather's values as the items finish, returned by [`Gather::unordered`].
///
/// Each item yields `Ok((index, value))`, where `index` is its input position. At the first
/// failure, the other items are cancelled, and once they are dropped the stream yields one
/// `Err(GroupError)`, after any values still waiting to be taken. Then it yields `None`.
///
/// As with `buffer_unordered`, under a concurrency limit an item's slot frees only once the
/// consumer has taken its value. A slow consumer holds back new items, and memory stays
/// O(limit) however long the input. The input is pulled lazily, as slots free.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut sizes = quattro::gather((0..1_000u64).map(|i| async move { Ok::<_, ()>(i * 2) }))
///     .concurrency_limit(16)
///     .unordered();
/// let mut total = 0;
/// while let Some(item) = sizes.next().await {
///     let (index, value) = item.unwrap();
///     assert_eq!(value, index as u64 * 2);
///     total += value;
/// }
/// assert_eq!(total, 999_000);
/// # }
/// ```
///
/// # Panics
///
/// If an item (or its destructor) panics, the other items are cancelled, and the panic is
/// resumed in [`next`](Self::next) once they are dropped, as in [`gather`](crate::gather()).
/// Polling outside a tokio runtime panics, unless the input is empty.
///
/// # Cancel safety
///
/// [`next`](Self::next) is cancel safe. Dropping the stream aborts every running item and
/// drops the ones not yet started.
#[must_use = "streams do nothing unless polled"]
pub struct GatherUnordered<I: Iterator, T, E> {
    /// Boxed so that the stream is `Unpin` and `next(&mut self)` needs no pinning.
    gather: Pin<Box<Gather<I, T, E>>>,
    state: Finish<E>,
}

/// How far the group is.
enum Finish<E> {
    Running,
    /// The group failed; its error comes once the values before it were taken.
    Failed(GroupError<E>),
    Done,
}

impl<I, T, E> GatherUnordered<I, T, E>
where
    I: Iterator,
    I::Item: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    pub(super) fn new(gather: Gather<I, T, E>) -> Self {
        GatherUnordered {
            gather: Box::pin(gather),
            state: Finish::Running,
        }
    }

    /// Waits for the next item to finish and returns its input position and value.
    ///
    /// Returns `Some(Ok((index, value)))` for an item, `Some(Err(_))` once if the gather
    /// failed, and `None` when the stream is done.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut items = quattro::gather([async { Err::<u8, _>("down") }]).unordered();
    /// assert!(items.next().await.unwrap().is_err());
    /// assert!(items.next().await.is_none());
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// Resumes the panic of an item, as described on [`GatherUnordered`].
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: a value is taken only when it is returned.
    pub async fn next(&mut self) -> Option<Result<(usize, T), GroupError<E>>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Polls for the next item to finish.
    ///
    /// This is the `Stream`-shaped form of [`next`](Self::next), with the same results.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::future::poll_fn;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut items = quattro::gather([async { Ok::<_, ()>(7) }]).unordered();
    /// let first = poll_fn(|cx| items.poll_next(cx)).await;
    /// assert_eq!(first.unwrap().unwrap(), (0, 7));
    /// # }
    /// ```
    #[allow(clippy::type_complexity)] // spelled out, as users read it
    pub fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<(usize, T), GroupError<E>>>> {
        // A value taken uses tokio's coop budget (as a `JoinSet` does): a consumer of values
        // that keep coming still yields, so a timer around it can fire.
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        // Take a value first: it frees a slot, which the driver fills in the poll below.
        let taken = self.take(None);
        if let Finish::Running = self.state {
            match self.gather.as_mut().poll_collector(cx) {
                Poll::Ready(Ok(_)) => self.state = Finish::Done,
                Poll::Ready(Err(err)) => self.state = Finish::Failed(err),
                Poll::Pending => {}
            }
        }
        if let Some(item) = taken.or_else(|| self.take(Some(cx))) {
            coop.made_progress();
            return Poll::Ready(Some(Ok(item)));
        }
        match std::mem::replace(&mut self.state, Finish::Done) {
            Finish::Running => {
                self.state = Finish::Running;
                Poll::Pending
            }
            Finish::Failed(err) => Poll::Ready(Some(Err(err))),
            Finish::Done => Poll::Ready(None),
        }
    }

    fn take(&self, cx: Option<&mut Context<'_>>) -> Option<(usize, T)> {
        self.gather.collector.as_ref()?.take_ready(cx)
    }
}

impl<I: Iterator, T, E> fmt::Debug for GatherUnordered<I, T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            Finish::Running => "running",
            Finish::Failed(_) => "failed",
            Finish::Done => "done",
        };
        f.debug_struct("GatherUnordered")
            .field("state", &state)
            .field("gather", &self.gather)
            .finish()
    }
}

/// Stream of a settled gather's results as the items finish, returned by
/// [`GatherSettled::unordered`](super::GatherSettled::unordered).
///
/// No item cancels another. Each item yields `(index, Ok(value))` or
/// `(index, Err(TaskError))`, where `index` is its input position. The error is labelled
/// `item 7`, with the item's name if the gather names its items. Under a concurrency limit,
/// memory stays O(limit), as for [`GatherUnordered`].
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut slots = quattro::gather_settled((0..100u32).map(|i| async move {
///     if i % 10 == 3 { Err("refused") } else { Ok(i) }
/// }))
/// .concurrency_limit(8)
/// .unordered();
/// let mut failed = Vec::new();
/// while let Some((index, slot)) = slots.next().await {
///     if let Err(err) = slot {
///         assert_eq!(err.item_index(), Some(index));
///         failed.push(index);
///     }
/// }
/// failed.sort();
/// assert_eq!(failed, [3, 13, 23, 33, 43, 53, 63, 73, 83, 93]);
/// # }
/// ```
///
/// # Panics
///
/// Polling outside a tokio runtime panics, unless the input is empty. An item that panics,
/// while it is polled or in its destructor, yields the panic as its result.
///
/// # Cancel safety
///
/// [`next`](Self::next) is cancel safe. Dropping the stream aborts every running item and
/// drops the ones not yet started.
#[must_use = "streams do nothing unless polled"]
pub struct GatherSettledUnordered<I: Iterator, T, E> {
    inner: GatherUnordered<SettledIter<I>, Result<T, TaskError<E>>, Infallible>,
}

impl<I, T, E> GatherSettledUnordered<I, T, E>
where
    I: Iterator,
    I::Item: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    pub(super) fn new(
        inner: GatherUnordered<SettledIter<I>, Result<T, TaskError<E>>, Infallible>,
    ) -> Self {
        GatherSettledUnordered { inner }
    }

    /// Waits for the next item to finish and returns its input position and result.
    ///
    /// Returns `None` when every item was yielded.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut slots = quattro::gather_settled([async { Err::<(), _>("down") }]).unordered();
    /// let (index, slot) = slots.next().await.unwrap();
    /// assert_eq!(slot.unwrap_err().to_string(), "item 0 failed: down");
    /// assert_eq!(index, 0);
    /// assert!(slots.next().await.is_none());
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: a result is taken only when it is returned.
    pub async fn next(&mut self) -> Option<(usize, Result<T, TaskError<E>>)> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Polls for the next item to finish.
    ///
    /// This is the `Stream`-shaped form of [`next`](Self::next), with the same results.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::future::poll_fn;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut slots = quattro::gather_settled([async { Ok::<_, ()>(7) }]).unordered();
    /// let (index, slot) = poll_fn(|cx| slots.poll_next(cx)).await.unwrap();
    /// assert_eq!((index, slot.unwrap()), (0, 7));
    /// # }
    /// ```
    #[allow(clippy::type_complexity)] // spelled out, as users read it
    pub fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<(usize, Result<T, TaskError<E>>)>> {
        let item = match std::task::ready!(self.inner.poll_next(cx)) {
            None => return Poll::Ready(None),
            Some(Ok(item)) => item,
            // Items never fail (errors and panics are settled into their slots).
            Some(Err(err)) => unreachable!("settled items cannot fail their group: {err:?}"),
        };
        let (index, mut slot) = item;
        if let Err(err) = &mut slot {
            let collector = self.inner.gather.collector.as_ref();
            err.set_label(TaskLabel::Item {
                index,
                id: None,
                name: collector.and_then(|c| c.item_name(index)),
            });
        }
        Poll::Ready(Some((index, slot)))
    }
}

impl<I: Iterator, T, E> fmt::Debug for GatherSettledUnordered<I, T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatherSettledUnordered")
            .field("inner", &self.inner)
            .finish()
    }
}
