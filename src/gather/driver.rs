//! The body of a gather's task group: feeds items to the group; each item puts its value at
//! its input position in a shared [`Collector`].

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::error::TaskError;
use crate::group::{Deliver, GroupBody, TaskGroup};

/// Names a gather's item by its input position, for its failures (`Gather::name_items`).
pub(crate) type ItemNamer = Box<dyn Fn(usize) -> String + Send + Sync>;

/// What starts a gather's group body: the first item (pulled to see the input is not empty),
/// the rest of the input, and the limit.
pub(crate) struct GatherBody<I: Iterator, T> {
    first: I::Item,
    rest: I,
    limit: Option<usize>,
    namer: Option<ItemNamer>,
    _values: PhantomData<fn() -> T>,
}

impl<I: Iterator, T> GatherBody<I, T> {
    pub(crate) fn new(
        first: I::Item,
        rest: I,
        limit: Option<usize>,
        namer: Option<ItemNamer>,
    ) -> Self {
        GatherBody {
            first,
            rest,
            limit,
            namer,
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
        // Capped: an endless iterator hints `usize::MAX`; beyond the cap the vector grows.
        let capacity = self.rest.size_hint().0.saturating_add(1).min(1 << 16);
        Driver {
            group,
            next: Some(self.first),
            rest: Some(self.rest),
            limit: self.limit,
            started: 0,
            collector: Arc::new(Collector {
                state: Mutex::new(Collected {
                    values: Vec::with_capacity(capacity),
                    finished: 0,
                    driver: None,
                }),
                namer: self.namer,
            }),
        }
    }
}

/// The values of a gather's items, at their input positions.
///
/// Items write here directly from their tasks: no channel, and no wake-up of the gather's own
/// task per item unless it waits for a slot under a limit.
pub(crate) struct Collector<T> {
    state: Mutex<Collected<T>>,
    namer: Option<ItemNamer>,
}

struct Collected<T> {
    values: Vec<Option<T>>,
    /// Items that ended, with a value or without.
    finished: usize,
    /// The driver, waiting for a slot to free under the limit.
    driver: Option<Waker>,
}

impl<T> Collector<T> {
    /// The collector of an empty gather.
    pub(crate) fn empty() -> Collector<T> {
        Collector {
            state: Mutex::new(Collected {
                values: Vec::new(),
                finished: 0,
                driver: None,
            }),
            namer: None,
        }
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
        state.finished += 1;
        // An item without a value failed, panicked or was cancelled: the group is cancelling
        // then, and nobody reads the values.
        if let Ok(value) = result {
            if state.values.len() <= self.index {
                state.values.resize_with(self.index + 1, || None);
            }
            state.values[self.index] = Some(value);
        }
        let driver = state.driver.take();
        drop(state);
        if let Some(driver) = driver {
            driver.wake();
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
        let mut state = self.collector.lock();
        if self.started - state.finished < limit {
            return true;
        }
        match &mut state.driver {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            driver => *driver = Some(cx.waker().clone()),
        }
        false
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
            this.started += 1;
        }
    }
}
