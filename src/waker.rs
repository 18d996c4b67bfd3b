//! Keeping the waker of a task that waits.

use std::collections::VecDeque;
use std::task::{Context, Waker};

/// Stores `waker` in `slot`, unless the slot already holds a waker of the same task.
///
/// A task polled again usually brings the same waker: comparing is cheaper than the clone
/// (an atomic increment) and the drop of the old one.
#[inline]
pub(crate) fn register(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(old) if old.will_wake(waker) => {}
        slot => *slot = Some(waker.clone()),
    }
}

/// Items handed by tasks to one consumer, in the order they came, and the consumer waiting
/// for the next one. Kept under its owner's lock; the waker that `push` returns is woken
/// after the lock is released.
pub(crate) struct Ready<T> {
    items: VecDeque<T>,
    consumer: Option<Waker>,
}

impl<T> Default for Ready<T> {
    fn default() -> Self {
        Ready {
            items: VecDeque::new(),
            consumer: None,
        }
    }
}

impl<T> Ready<T> {
    /// Queues `item`; returns the consumer to wake, if it waits.
    pub(crate) fn push(&mut self, item: T) -> Option<Waker> {
        self.items.push_back(item);
        self.consumer.take()
    }

    /// The next item; registers `cx` to be woken by the next push if there is none (and `cx`
    /// is given).
    pub(crate) fn pop(&mut self, cx: Option<&mut Context<'_>>) -> Option<T> {
        let item = self.items.pop_front();
        if let (None, Some(cx)) = (&item, cx) {
            register(&mut self.consumer, cx.waker());
        }
        item
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }
}
