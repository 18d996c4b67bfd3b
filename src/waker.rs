//! Keeping the waker of a task that waits.

use std::task::Waker;

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
