//! The body of a gather's task group: feeds items to the group; each item puts its value at
//! its input position in a shared [`Collector`].

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::error::TaskError;
use crate::group::{Deliver, GroupBody, TaskGroup};
use crate::waker::Ready;

/// Names a gather's item by its input position, for its failures (`Gather::name_items`).
pub(crate) type ItemNamer = Box<dyn Fn(usize) -> String + Send + Sync>;

/// What starts a gather's group body: the first item (pulled to see the input is not empty),
/// the rest of the input, and the limit.
pub(crate) struct GatherBody<I: Iterator, T> {
    first: I::Item,
    rest: I,
    limit: Option<usize>,
    collector: Arc<Collector<T>>,
    _values: PhantomData<fn() -> T>,
}

impl<I: Iterator, T> GatherBody<I, T> {
    pub(crate) fn new(
        first: I::Item,
        rest: I,
        limit: Option<usize>,
        collector: Arc<Collector<T>>,
    ) -> Self {
        GatherBody {
            first,
            rest,
            limit,
            collector,
            _values: PhantomData,
        }
    }
}

impl<I, T, E> GroupBody<E> for GatherBody<I, T>
where
    I: Iterator,
    I::Item: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    type Output = Arc<Collector<T>>;
    type Future = Driver<I, T, E>;

    fn start(self, group: TaskGroup<E>) -> Driver<I, T, E> {
        if !self.collector.streaming {
            // Capped: an endless iterator hints `usize::MAX`; beyond the cap the vector grows.
            let capacity = self.rest.size_hint().0.saturating_add(1).min(1 << 16);
            self.collector.lock().values.reserve(capacity);
        }
        Driver {
            group,
            next: Some(self.first),
            rest: Some(self.rest),
            limit: self.limit,
            started: 0,
            collector: self.collector,
        }
    }
}

/// The values of a gather's items: at their input positions, or, for an unordered gather, in
/// the order they finish, until the consumer takes them.
///
/// Items write here directly from their tasks: no channel, and no wake-up of the gather's own
/// task per item unless it waits for a slot under a limit (or consumes the values as they
/// come).
pub(crate) struct Collector<T> {
    state: Mutex<Collected<T>>,
    /// Items whose slot is free again: ended, or, streaming, ended and taken by the consumer
    /// (so that a slow consumer holds back new items, and memory stays O(limit)).
    ///
    /// Outside the lock, so that the driver, in the consumer's task, reads it without
    /// contending with the items delivering their values on other threads. It is only
    /// increased under the lock, before the driver's waker is taken: a driver that registers
    /// its waker under the lock and then reads it again misses no freed slot.
    finished: AtomicUsize,
    /// Values are handed to a consumer as they come (`Gather::unordered`).
    streaming: bool,
    namer: Option<ItemNamer>,
}

struct Collected<T> {
    /// The values at their input positions (`None` while the item runs).
    values: Vec<Option<T>>,
    /// Streaming: the values not yet taken by the consumer, with their positions, and the
    /// consumer waiting for one.
    ready: Ready<(usize, T)>,
    /// The driver, waiting for a slot to free under the limit.
    driver: Option<Waker>,
}

impl<T> Collector<T> {
    pub(crate) fn new(streaming: bool, namer: Option<ItemNamer>) -> Collector<T> {
        Collector {
            state: Mutex::new(Collected {
                values: Vec::new(),
                ready: Ready::default(),
                driver: None,
            }),
            finished: AtomicUsize::new(0),
            streaming,
            namer,
        }
    }

    /// Streaming: takes the next value that came, freeing its item's slot; registers `cx` to
    /// be woken by the next one if there is none (and `cx` is given).
    ///
    /// The driver is not woken for the freed slot: it runs in the consumer's task, and the
    /// consumer polls the group right after taking a value (or on its next call), which runs
    /// the driver. A wake-up here would only schedule that task once more for nothing.
    pub(crate) fn take_ready(&self, cx: Option<&mut Context<'_>>) -> Option<(usize, T)> {
        let mut state = self.lock();
        let item = state.ready.pop(cx)?;
        self.finished.fetch_add(1, Ordering::Release);
        Some(item)
    }

    fn lock(&self) -> MutexGuard<'_, Collected<T>> {
        // Every update is a single store: a panic elsewhere cannot leave it torn.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The name of the item at `index`, if the gather names its items. A namer that panics
    /// gives no name (the panic is not the item's failure).
    pub(crate) fn item_name(&self, index: usize) -> Option<Arc<str>> {
        let namer = self.namer.as_ref()?;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| namer(index).into())).ok()
    }

    /// The values in input order, once every item succeeded.
    pub(crate) fn take_values(&self) -> Vec<T> {
        let values = std::mem::take(&mut self.lock().values);
        values
            .into_iter()
            .map(|v| v.expect("every item delivered a value"))
            .collect()
    }
}

/// Hands an item's value to the collector with its position.
pub(crate) struct Slot<T> {
    index: usize,
    collector: Arc<Collector<T>>,
}

impl<T: Send + 'static> Deliver for Slot<T> {
    type Value = T;
    type Output = ();

    fn item(&self) -> Option<usize> {
        Some(self.index)
    }

    fn item_name(&self) -> Option<Arc<str>> {
        self.collector.item_name(self.index)
    }

    fn deliver(self, result: Result<T, TaskError>) {
        let mut state = self.collector.lock();
        // An item without a value failed, panicked or was cancelled: the group is cancelling
        // then, and nobody reads the values.
        let (driver, consumer) = match result {
            Ok(value) if self.collector.streaming => (None, state.ready.push((self.index, value))),
            result => {
                self.collector.finished.fetch_add(1, Ordering::Release);
                if let Ok(value) = result {
                    if state.values.len() <= self.index {
                        state.values.resize_with(self.index + 1, || None);
                    }
                    state.values[self.index] = Some(value);
                }
                (state.driver.take(), None)
            }
        };
        drop(state);
        for waker in [driver, consumer].into_iter().flatten() {
            waker.wake();
        }
    }
}

/// The gather body: keeps at most `limit` items in flight, pulling the input only when one
/// finishes, and ends once every item is started (the group then waits for them).
pub(crate) struct Driver<I: Iterator, T, E> {
    group: TaskGroup<E>,
    /// The next item to start, already pulled.
    next: Option<I::Item>,
    /// The rest of the input; `None` once exhausted, so it is never pulled again.
    rest: Option<I>,
    limit: Option<usize>,
    /// Items started so far: the position of the next one.
    started: usize,
    collector: Arc<Collector<T>>,
}

// The driver never pins its fields: the items move into tasks.
impl<I: Iterator, T, E> Unpin for Driver<I, T, E> {}

impl<I: Iterator, T, E> Driver<I, T, E> {
    fn pull(&mut self) -> Option<I::Item> {
        if let Some(item) = self.next.take() {
            return Some(item);
        }
        let item = self.rest.as_mut()?.next();
        if item.is_none() {
            self.rest = None;
        }
        item
    }

    /// Whether a slot is free; if not, the driver is woken when one frees.
    fn slot_free(&self, cx: &mut Context<'_>) -> bool {
        let Some(limit) = self.limit else {
            return true;
        };
        let free = || self.started - self.collector.finished.load(Ordering::Acquire) < limit;
        if free() {
            return true;
        }
        if self.collector.streaming {
            // A slot frees only as the consumer takes a value, in this task, and the consumer
            // polls the group (so this driver) right after: no waker to register, and no lock
            // that the items delivering their values contend for.
            return false;
        }
        crate::waker::register(&mut self.collector.lock().driver, cx.waker());
        // A slot freed before the waker was registered is seen now (see `finished`); the
        // wake-up it may still bring is spurious.
        free()
    }
}

impl<I, T, E> Future for Driver<I, T, E>
where
    I: Iterator,
    I::Item: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    type Output = Result<Arc<Collector<T>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            if !this.slot_free(cx) {
                return Poll::Pending;
            }
            // Each spawn takes a unit of tokio's coop budget: a large input yields now and
            // then, so that a timer around the gather can fire, and `unordered` streams the
            // first values before the whole input is spawned.
            let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
            let Some(item) = this.pull() else {
                return Poll::Ready(Ok(this.collector.clone()));
            };
            let slot = Slot {
                index: this.started,
                collector: this.collector.clone(),
            };
            if !this.group.spawn_to(item, slot) {
                // The group is cancelling and drops this body.
                return Poll::Pending;
            }
            coop.made_progress();
            this.started += 1;
        }
    }
}
