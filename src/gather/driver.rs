//! The body of a gather's task group: feeds items to the group and puts values in order.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::sync::mpsc;

use crate::error::TaskError;
use crate::group::{Deliver, GroupBody, TaskGroup};

type Arrival<T> = (usize, Result<T, TaskError>);

/// What starts a gather's group body: the first item (pulled to see the input is not empty),
/// the rest of the input, and the limit.
pub(crate) struct GatherBody<I: Iterator, T> {
    first: I::Item,
    rest: I,
    limit: Option<usize>,
    _values: PhantomData<fn() -> T>,
}

impl<I: Iterator, T> GatherBody<I, T> {
    pub(crate) fn new(first: I::Item, rest: I, limit: Option<usize>) -> Self {
        GatherBody {
            first,
            rest,
            limit,
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
    type Output = Vec<T>;
    type Future = Driver<I, T, E>;

    fn start(self, group: TaskGroup<E>) -> Driver<I, T, E> {
        let (arrivals_tx, arrivals) = mpsc::unbounded_channel();
        Driver {
            group,
            next: Some(self.first),
            rest: Some(self.rest),
            limit: self.limit.unwrap_or(usize::MAX),
            in_flight: 0,
            slots: Vec::new(),
            arrivals_tx,
            arrivals,
        }
    }
}

/// Hands an item's value to the driver with its position.
pub(crate) struct Slot<T> {
    index: usize,
    arrivals: mpsc::UnboundedSender<Arrival<T>>,
}

impl<T: Send + 'static> Deliver for Slot<T> {
    type Value = T;

    fn deliver(self, result: Result<T, TaskError>) {
        // The driver is gone only when the group dropped it, and then nobody wants the value.
        let _ = self.arrivals.send((self.index, result));
    }

    type Control = ();

    fn control(&self) {}

    fn spawned((): (), _abort: tokio::task::AbortHandle) {}
}

/// The gather body: keeps at most `limit` items in flight, pulling the input only when one
/// finishes, and stores each value at its input position.
pub(crate) struct Driver<I: Iterator, T, E> {
    group: TaskGroup<E>,
    /// The next item to start, already pulled.
    next: Option<I::Item>,
    /// The rest of the input; `None` once exhausted, so it is never pulled again.
    rest: Option<I>,
    limit: usize,
    in_flight: usize,
    slots: Vec<Option<T>>,
    arrivals_tx: mpsc::UnboundedSender<Arrival<T>>,
    arrivals: mpsc::UnboundedReceiver<Arrival<T>>,
}

// The driver never pins its fields: the items move into tasks and the values into a `Vec`.
impl<I: Iterator, T, E> Unpin for Driver<I, T, E> {}

impl<I, T, E> Driver<I, T, E>
where
    I: Iterator,
    I::Item: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
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

    /// Starts items until the limit is reached or the input is exhausted; `false` if the
    /// group refused one (it is cancelling).
    fn fill(&mut self) -> bool {
        while self.in_flight < self.limit {
            let Some(item) = self.pull() else { break };
            let slot = Slot {
                index: self.slots.len(),
                arrivals: self.arrivals_tx.clone(),
            };
            if !self.group.spawn_to(item, slot) {
                return false;
            }
            self.slots.push(None);
            self.in_flight += 1;
        }
        true
    }
}

impl<I, T, E> Future for Driver<I, T, E>
where
    I: Iterator,
    I::Item: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    type Output = Result<Vec<T>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            if !this.fill() {
                return Poll::Pending;
            }
            if this.in_flight == 0 {
                let slots = std::mem::take(&mut this.slots);
                let values = slots.into_iter().map(|v| v.expect("every slot was filled"));
                return Poll::Ready(Ok(values.collect()));
            }
            match ready!(this.arrivals.poll_recv(cx)) {
                Some((index, Ok(value))) => {
                    this.slots[index] = Some(value);
                    this.in_flight -= 1;
                }
                // The item failed, panicked or was cancelled: its group is cancelling and
                // drops this body; nothing more to do.
                Some((_, Err(_))) => return Poll::Pending,
                None => unreachable!("the driver holds a sender"),
            }
        }
    }
}
