//! Runs many futures as tasks and collects their results in input order.
//!
//! In [`gather`] and [`gather!`](crate::gather!), the first failure cancels the other items.
//! In [`gather_settled`] and [`gather_settled!`](crate::gather_settled!), no item cancels
//! another and each result comes back on its own.
//!
//! | Python quattro                                  | quattro for tokio                          |
//! |-------------------------------------------------|--------------------------------------------|
//! | `await gather(*coros)`                          | [`gather(iter)`](gather)`.await`           |
//! | `await gather(*coros, return_exceptions=True)`  | [`gather_settled(iter)`](gather_settled)`.await` |
//! | `await gather(*coros, concurrency_limit=16)`    | `gather(iter).concurrency_limit(16).await` |
//! | `a, b = await gather(coro_a, coro_b)`           | [`gather!(fut_a, fut_b)`](crate::gather!)`.await?` |
//!
//! Every gather is a [`TaskGroup`] underneath: the items run as tasks, see the caller's
//! deadlines, and never outlive the gather.
//!
//! [`TaskGroup`]: crate::TaskGroup

mod driver;
mod settled;
mod unordered;

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::iter::Map;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project::pin_project;

use crate::error::{GroupError, TaskError, TaskLabel};
use crate::group::{GroupScope, TaskGroup};

pub(crate) use driver::{Collector, Driver, GatherBody, ItemNamer};
pub(crate) use settled::Settled;
pub use unordered::{GatherSettledUnordered, GatherUnordered};

/// Runs every future of `iter` as a task and returns their values in input order.
///
/// At the first failure, the other items are cancelled and the gather returns every error
/// that happened. This is the Rust form of Python's `await gather(*coros)`.
///
/// With [`concurrency_limit`](Gather::concurrency_limit), the iterator is pulled lazily: the
/// next future is taken only when a running one finishes. A limited gather over a lazy
/// iterator of a million items holds only `limit` futures at a time, like `buffer_unordered`.
///
/// An empty input returns `Ok(vec![])` at once, without spawning anything, even outside a
/// runtime.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use quattro::gather;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let doubled = gather((1..=3u64).map(|i| async move {
///     // The last one finishes first; the results keep input order anyway.
///     tokio::time::sleep(Duration::from_millis(10 * (4 - i))).await;
///     Ok::<_, std::io::Error>(i * 2)
/// }))
/// .await
/// .unwrap();
/// assert_eq!(doubled, [2, 4, 6]);
/// # }
/// ```
///
/// # Errors
///
/// Returns a [`GroupError`] with every error that happened, in order: the first one, and any
/// that came while the other items were being cancelled.
///
/// # Panics
///
/// If an item panics, the other items are cancelled as for a failure, and the panic is
/// resumed in the caller once they are dropped (see [`TaskGroup`]). Polling the future
/// outside a tokio runtime panics, unless the input is empty.
///
/// # Cancel safety
///
/// Dropping the future aborts every running item and drops the ones not yet started. When a
/// quattro cancel scope or task group drops it, that scope or group returns only once every
/// item was dropped.
///
/// [`TaskGroup`]: crate::TaskGroup
pub fn gather<I, F, T, E>(iter: I) -> Gather<I::IntoIter, T, E>
where
    I: IntoIterator<Item = F>,
    F: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    Gather::new(iter)
}

/// Runs every future of `iter` as a task and returns each one's result, in input order.
///
/// No item cancels another. Each slot holds the item's value, or a [`TaskError`] with its
/// error or its panic. This is the Rust form of Python's
/// `await gather(*coros, return_exceptions=True)`.
///
/// # Examples
///
/// ```
/// use quattro::gather_settled;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let slots = gather_settled([
///     Box::pin(async { Ok(1) }) as std::pin::Pin<Box<dyn Future<Output = _> + Send>>,
///     Box::pin(async { Err("bad") }),
///     Box::pin(async { Ok(3) }),
/// ])
/// .await;
/// assert_eq!(slots[0].as_ref().ok(), Some(&1));
/// assert!(slots[1].as_ref().unwrap_err().is_failed());
/// assert_eq!(slots[2].as_ref().ok(), Some(&3));
/// # }
/// ```
///
/// # Panics
///
/// Polling the future outside a tokio runtime panics, unless the input is empty.
///
/// An item that panics, while it is polled or in its destructor, gets the panic in its slot;
/// the other items go on.
///
/// # Cancel safety
///
/// Dropping the future aborts every running item and drops the ones not yet started.
pub fn gather_settled<I, F, T, E>(iter: I) -> GatherSettled<I::IntoIter, T, E>
where
    I: IntoIterator<Item = F>,
    F: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    GatherSettled {
        inner: Gather::new(iter.into_iter().map(Settled::new as fn(F) -> Settled<F>)),
    }
}

/// The task group that runs a gather's items.
type GatherGroup<I, T, E> =
    GroupScope<GatherBody<I, T>, Driver<I, T, E>, std::sync::Arc<Collector<T>>, E>;

/// Future returned by [`gather`].
///
/// Set its options with [`concurrency_limit`](Self::concurrency_limit),
/// [`name_items`](Self::name_items) or [`unordered`](Self::unordered) before awaiting it. See
/// [`gather`] for what it returns.
///
/// # Examples
///
/// ```
/// use quattro::gather::Gather;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let fetch = |i: u32| async move { if i == 2 { Err("down") } else { Ok(i * 10) } };
/// let all: Gather<_, u32, &str> = quattro::gather([0, 1].map(fetch));
/// assert_eq!(all.await.unwrap(), [0, 10]);
/// let err = quattro::gather([1, 2, 3].map(fetch)).await.unwrap_err();
/// assert_eq!(err.errors().collect::<Vec<_>>(), [&"down"]); // a failure cancels the rest
/// # }
/// ```
///
/// # Cancel safety
///
/// Dropping the future aborts every running item and drops the ones not yet started.
#[pin_project]
#[must_use = "futures do nothing unless you `.await` or poll them"]
//
// No bounds beyond `I: Iterator` on the definition (they sit on the impls): see `GroupScope`.
pub struct Gather<I: Iterator, T, E> {
    /// The input, the limit and the namer, until the first poll starts the group.
    start: Option<Start<I>>,
    /// Where the items put their values, once started.
    collector: Option<std::sync::Arc<Collector<T>>>,
    #[pin]
    group: Option<GatherGroup<I, T, E>>,
}

/// What a gather starts from.
struct Start<I> {
    iter: I,
    limit: Option<usize>,
    namer: Option<ItemNamer>,
    /// Hand values over as they come (`unordered`).
    streaming: bool,
}

impl<I, T, E> Gather<I, T, E>
where
    I: Iterator,
    I::Item: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    /// Creates a gather over `iter`, with no concurrency limit.
    ///
    /// This is the same as [`gather`].
    ///
    /// # Examples
    ///
    /// ```
    /// use quattro::gather::Gather;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let v = Gather::new((0..4).map(|i| async move { Ok::<_, ()>(i) }))
    ///     .concurrency_limit(2)
    ///     .await;
    /// assert_eq!(v.unwrap(), [0, 1, 2, 3]);
    /// # }
    /// ```
    pub fn new<Iter: IntoIterator<IntoIter = I>>(iter: Iter) -> Self {
        Gather {
            start: Some(Start {
                iter: iter.into_iter(),
                limit: None,
                namer: None,
                streaming: false,
            }),
            collector: None,
            group: None,
        }
    }

    /// Runs at most `limit` items at once.
    ///
    /// The iterator is then pulled only when a running item finishes, so the gather holds at
    /// most `limit` futures at a time.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let lazy = (0..1_000).map(|i| async move { Ok::<_, ()>(i) });
    /// let v = quattro::gather(lazy).concurrency_limit(16).await.unwrap();
    /// assert_eq!(v.len(), 1_000);
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// Panics if `limit` is 0, since no item would ever run, or if the gather was already
    /// polled.
    #[track_caller]
    pub fn concurrency_limit(mut self, limit: usize) -> Self {
        assert!(
            limit > 0,
            "gather concurrency_limit must be at least 1: a limit of 0 would never run an item"
        );
        let start = self
            .start
            .as_mut()
            .expect("concurrency_limit must be set before the gather is polled");
        start.limit = Some(limit);
        self
    }

    /// Names the items in their failures.
    ///
    /// `namer(index)` returns the name of the item at position `index` (from 0) in the input.
    /// A failed item is always labelled by its position, as in `item 7`. With a namer, the
    /// label reads ``item 7 (`https://example.com/`)`` and [`Failure::task_name`] returns the
    /// name.
    ///
    /// The namer is called only for items that failed, panicked or were cancelled, so naming
    /// costs nothing while items succeed. A namer that panics gives no name.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let urls = ["a.example", "b.example", "c.example"];
    /// let fetch = |url: &'static str| async move {
    ///     if url.starts_with('b') { Err("refused") } else { Ok(url.len()) }
    /// };
    /// let err = quattro::gather(urls.map(fetch))
    ///     .name_items(move |i| urls[i].to_string())
    ///     .await
    ///     .unwrap_err();
    /// let failure = &err.failures()[0];
    /// assert_eq!(failure.item_index(), Some(1));
    /// assert_eq!(failure.task_name(), Some("b.example"));
    /// assert_eq!(failure.to_string(), "item 1 (`b.example`): refused");
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// Panics if the gather was already polled.
    ///
    /// [`Failure::task_name`]: crate::Failure::task_name
    #[track_caller]
    pub fn name_items<N, D>(mut self, namer: N) -> Self
    where
        N: Fn(usize) -> D + Send + Sync + 'static,
        D: fmt::Display,
    {
        let start = self
            .start
            .as_mut()
            .expect("name_items must be called before the gather is polled");
        start.namer = Some(Box::new(move |index| namer(index).to_string()));
        self
    }

    /// Returns a stream of the values as the items finish, each with its input position.
    ///
    /// The values come in the order the items finish, not all at the end. Under a
    /// [`concurrency_limit`](Self::concurrency_limit), memory stays O(limit), like
    /// `buffer_unordered`. See [`GatherUnordered`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let mut done = quattro::gather((1..=3u64).map(|i| async move {
    ///     tokio::time::sleep(Duration::from_millis(10 * (4 - i))).await;
    ///     Ok::<_, ()>(i)
    /// }))
    /// .unordered();
    /// let mut order = Vec::new();
    /// while let Some(item) = done.next().await {
    ///     order.push(item.unwrap()); // (index, value), the fastest first
    /// }
    /// assert_eq!(order, [(2, 3), (1, 2), (0, 1)]);
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// Panics if the gather was already polled.
    #[track_caller]
    pub fn unordered(mut self) -> GatherUnordered<I, T, E> {
        self.start
            .as_mut()
            .expect("unordered must be called before the gather is polled")
            .streaming = true;
        GatherUnordered::new(self)
    }

    /// Polls the group; once every item succeeded, yields where their values are.
    pub(crate) fn poll_collector(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<std::sync::Arc<Collector<T>>, GroupError<E>>> {
        let mut this = self.project();
        if let Some(start) = this.start.take() {
            let Start {
                mut iter,
                limit,
                namer,
                streaming,
            } = start;
            let collector = std::sync::Arc::new(Collector::new(streaming, namer));
            *this.collector = Some(collector.clone());
            // Pull the first item before touching the runtime: an empty gather needs none.
            let Some(first) = iter.next() else {
                return Poll::Ready(Ok(collector));
            };
            let body = GatherBody::new(first, iter, limit, collector);
            this.group.set(Some(TaskGroup::builder().scope_body(body)));
        }
        let group = this.group.as_pin_mut();
        group.expect("gather polled after completion").poll(cx)
    }
}

impl<I, T, E> Future for Gather<I, T, E>
where
    I: Iterator,
    I::Item: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    type Output = Result<Vec<T>, GroupError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.poll_collector(cx)
            .map_ok(|collector| collector.take_values())
    }
}

// Printing needs none of the bounds that running does.
impl<I: Iterator, T, E> fmt::Debug for Gather<I, T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gather")
            .field("started", &self.start.is_none())
            .field("group", &self.group)
            .finish()
    }
}

type SettledIter<I> = Map<I, fn(<I as Iterator>::Item) -> Settled<<I as Iterator>::Item>>;

/// Future returned by [`gather_settled`].
///
/// Set its options with [`concurrency_limit`](Self::concurrency_limit),
/// [`name_items`](Self::name_items) or [`unordered`](Self::unordered) before awaiting it. See
/// [`gather_settled`] for what it returns.
///
/// # Examples
///
/// ```
/// use quattro::gather::GatherSettled;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let fetch = |i: u32| async move { if i == 2 { Err("down") } else { Ok(i * 10) } };
/// let all: GatherSettled<_, u32, &str> = quattro::gather_settled([1, 2, 3].map(fetch));
/// let slots: Vec<_> = all.await.into_iter().map(|s| s.map_err(|e| e.into_error())).collect();
/// assert_eq!(slots, [Ok(10), Err(Some("down")), Ok(30)]); // no item cancelled another
/// # }
/// ```
///
/// # Cancel safety
///
/// Dropping the future aborts every running item and drops the ones not yet started.
#[pin_project]
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct GatherSettled<I: Iterator, T, E> {
    #[pin]
    inner: Gather<SettledIter<I>, Result<T, TaskError<E>>, Infallible>,
}

impl<I, T, E> GatherSettled<I, T, E>
where
    I: Iterator,
    I::Item: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    /// Runs at most `limit` items at once.
    ///
    /// The iterator is then pulled only when a running item finishes. See
    /// [`Gather::concurrency_limit`].
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let slots = quattro::gather_settled((0..10).map(|i| async move { Ok::<_, ()>(i) }))
    ///     .concurrency_limit(3)
    ///     .await;
    /// assert_eq!(slots.len(), 10);
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// Panics if `limit` is 0, or if the gather was already polled.
    #[track_caller]
    pub fn concurrency_limit(self, limit: usize) -> Self {
        GatherSettled {
            inner: self.inner.concurrency_limit(limit),
        }
    }

    /// Names the items in their slots' errors.
    ///
    /// `namer(index)` returns the name of the item at position `index` (from 0) in the input.
    /// A slot's [`TaskError`] is always labelled by the item's position, as in
    /// `item 7 failed: ..`. With a namer, it reads ``item 7 (`name`) failed: ..``. The namer
    /// is called only for the slots that hold an error. See [`Gather::name_items`].
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hosts = ["a.example", "b.example"];
    /// let slots = quattro::gather_settled(hosts.map(|host| async move {
    ///     if host.starts_with('b') { Err("refused") } else { Ok(()) }
    /// }))
    /// .name_items(move |i| hosts[i])
    /// .await;
    /// let err = slots[1].as_ref().unwrap_err();
    /// assert_eq!(err.item_index(), Some(1));
    /// assert_eq!(err.to_string(), "item 1 (`b.example`) failed: refused");
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// Panics if the gather was already polled.
    #[track_caller]
    pub fn name_items<N, D>(self, namer: N) -> Self
    where
        N: Fn(usize) -> D + Send + Sync + 'static,
        D: fmt::Display,
    {
        GatherSettled {
            inner: self.inner.name_items(namer),
        }
    }

    /// Returns a stream of the items' slots as they finish, each with its input position.
    ///
    /// Under a [`concurrency_limit`](Self::concurrency_limit), memory stays O(limit). See
    /// [`GatherSettledUnordered`].
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut slots = quattro::gather_settled((0..10).map(|i| async move {
    ///     if i == 4 { Err("bad") } else { Ok(i) }
    /// }))
    /// .concurrency_limit(2)
    /// .unordered();
    /// let mut ok = 0;
    /// while let Some((_index, slot)) = slots.next().await {
    ///     ok += usize::from(slot.is_ok());
    /// }
    /// assert_eq!(ok, 9); // the failure cancelled nothing
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// Panics if the gather was already polled.
    #[track_caller]
    pub fn unordered(self) -> GatherSettledUnordered<I, T, E> {
        GatherSettledUnordered::new(self.inner.unordered())
    }
}

impl<I, T, E> Future for GatherSettled<I, T, E>
where
    I: Iterator,
    I::Item: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    type Output = Vec<Result<T, TaskError<E>>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Items never fail (errors and panics are settled into their slots), so the group
        // can only fail if the crate has a bug.
        let collector = match std::task::ready!(self.project().inner.poll_collector(cx)) {
            Ok(collector) => collector,
            Err(err) => unreachable!("settled items cannot fail their group: {err:?}"),
        };
        let mut slots = collector.take_values();
        for (index, slot) in slots.iter_mut().enumerate() {
            if let Err(err) = slot {
                err.set_label(TaskLabel::Item {
                    index,
                    id: None,
                    name: collector.item_name(index),
                });
            }
        }
        Poll::Ready(slots)
    }
}

// Printing needs none of the bounds that running does.
impl<I: Iterator, T, E> fmt::Debug for GatherSettled<I, T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatherSettled")
            .field("inner", &self.inner)
            .finish()
    }
}

/// Runs futures of different types as tasks and returns their values as a tuple.
///
/// At the first failure, the other futures are cancelled and every error that happened is
/// returned. The futures must be `Send + 'static` and return `Result<_, E>` with the same
/// error type `E`. The macro takes up to 12 futures.
///
/// As with `tokio::join!`, the arguments are evaluated where the macro is written:
/// `gather!(fetch(client.clone()), ..)` clones `client` there and leaves it usable after.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), quattro::GroupError<String>> {
/// let (n, s, b) = quattro::gather!(
///     async { Ok::<_, String>(1u8) },
///     async { Ok("two".to_string()) },
///     async { Ok(true) },
/// )
/// .await?;
/// assert_eq!((n, s.as_str(), b), (1, "two", true));
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// Returns a [`GroupError`] with every error that happened, in order, as [`gather`] does.
///
/// # Panics
///
/// If a future panics, the others are cancelled, and the panic is resumed in the caller once
/// they are dropped. Polling outside a tokio runtime panics.
///
/// # Cancel safety
///
/// Dropping the future aborts every task. When a quattro cancel scope or task group drops it,
/// that scope or group returns only once every task was dropped.
///
/// [`GroupError`]: crate::GroupError
#[macro_export]
macro_rules! gather {
    ($($fut:expr),+ $(,)?) => {{
        // Evaluated here, where they are written (as `tokio::join!` does): a variable an
        // argument names is not moved into the group's closure.
        let __quattro_futs = ($($fut,)+);
        $crate::TaskGroup::scope(move |__quattro_tg| async move {
            let __quattro_handles =
                $crate::__private::SpawnTuple::spawn_all(__quattro_futs, &__quattro_tg);
            ::std::result::Result::Ok(
                $crate::__private::JoinTuple::join(__quattro_handles).await
            )
        })
    }};
}

/// Runs futures of different types as tasks and returns each one's result in a tuple.
///
/// Unlike [`gather!`](crate::gather!), no future cancels another. The tuple holds one
/// `Result<T, TaskError<E>>` per future: its value, or a [`TaskError`] with its error or its
/// panic. The arguments are evaluated where the macro is written, as for `gather!`.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (a, b) = quattro::gather_settled!(
///     async { Ok::<u8, &str>(1) },
///     async { Err::<bool, &str>("no") },
/// )
/// .await;
/// assert_eq!(a.ok(), Some(1));
/// assert_eq!(b.unwrap_err().into_error(), Some("no"));
/// # }
/// ```
///
/// # Panics
///
/// Polling outside a tokio runtime panics.
///
/// A future that panics, while it is polled or in its destructor, gets the panic in its slot;
/// the others go on.
///
/// # Cancel safety
///
/// Dropping the future aborts every task. When a quattro cancel scope or task group drops it,
/// that scope or group returns only once every task was dropped.
///
/// [`TaskError`]: crate::TaskError
#[macro_export]
macro_rules! gather_settled {
    ($($fut:expr),+ $(,)?) => {{
        // Evaluated here, where they are written, as for `gather!`.
        let __quattro_futs = ($($crate::__private::Settled::new($fut),)+);
        async move {
            let __quattro_out = $crate::TaskGroup::scope(move |__quattro_tg| async move {
                let __quattro_handles =
                    $crate::__private::SpawnTuple::spawn_all(__quattro_futs, &__quattro_tg);
                ::std::result::Result::<_, ::std::convert::Infallible>::Ok(
                    $crate::__private::JoinTuple::join(__quattro_handles).await
                )
            })
            .await;
            match __quattro_out {
                ::std::result::Result::Ok(slots) => slots,
                ::std::result::Result::Err(err) => {
                    ::std::unreachable!("settled futures cannot fail their group: {err:?}")
                }
            }
        }
    }};
}

#[doc(hidden)]
pub mod __private {
    use std::future::Future;

    use crate::{TaskGroup, TaskHandle};

    pub use super::settled::Settled;

    /// Spawns a tuple of futures into a group, for [`gather!`](crate::gather!): a tuple of
    /// handles.
    pub trait SpawnTuple<E> {
        /// The handles.
        type Handles;
        /// Spawns every future, in order.
        fn spawn_all(self, group: &TaskGroup<E>) -> Self::Handles;
    }

    /// Awaits a tuple of handles into a tuple of values, for [`gather!`](crate::gather!).
    pub trait JoinTuple {
        /// The values.
        type Output;
        /// Awaits every handle in turn (the tasks already run concurrently).
        fn join(self) -> impl Future<Output = Self::Output> + Send;
    }

    /// A handle's value; when the task failed, the group is cancelling and drops the caller,
    /// so wait for that.
    async fn value_or_park<T>(handle: TaskHandle<T>) -> T {
        match handle.await {
            Ok(value) => value,
            Err(_) => std::future::pending().await,
        }
    }

    macro_rules! join_tuple {
        ($($h:ident: $t:ident),+) => {
            // The futures' types are named by the handles' lowercase letters.
            #[allow(non_camel_case_types)]
            impl<QErr: Send + 'static, $($h, $t),+> SpawnTuple<QErr> for ($($h,)+)
            where
                $($h: Future<Output = Result<$t, QErr>> + Send + 'static, $t: Send + 'static,)+
            {
                type Handles = ($(TaskHandle<$t>,)+);

                #[track_caller]
                fn spawn_all(self, group: &TaskGroup<QErr>) -> Self::Handles {
                    let ($($h,)+) = self;
                    ($(group.spawn($h),)+)
                }
            }

            impl<$($t: Send + 'static),+> JoinTuple for ($(TaskHandle<$t>,)+) {
                type Output = ($($t,)+);

                fn join(self) -> impl Future<Output = Self::Output> + Send {
                    let ($($h,)+) = self;
                    async move { ($(value_or_park($h).await,)+) }
                }
            }
        };
    }

    join_tuple!(a: A);
    join_tuple!(a: A, b: B);
    join_tuple!(a: A, b: B, c: C);
    join_tuple!(a: A, b: B, c: C, d: D);
    join_tuple!(a: A, b: B, c: C, d: D, e: E);
    join_tuple!(a: A, b: B, c: C, d: D, e: E, f: F);
    join_tuple!(a: A, b: B, c: C, d: D, e: E, f: F, g: G);
    join_tuple!(a: A, b: B, c: C, d: D, e: E, f: F, g: G, h: H);
    join_tuple!(a: A, b: B, c: C, d: D, e: E, f: F, g: G, h: H, i: I);
    join_tuple!(a: A, b: B, c: C, d: D, e: E, f: F, g: G, h: H, i: I, j: J);
    join_tuple!(a: A, b: B, c: C, d: D, e: E, f: F, g: G, h: H, i: I, j: J, k: K);
    join_tuple!(a: A, b: B, c: C, d: D, e: E, f: F, g: G, h: H, i: I, j: J, k: K, l: L);
}
