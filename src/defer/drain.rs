//! Keeps the async cleanups of a dropped enabled future inside the structure.
//!
//! They run as one task. Its end is handed, as a [`Drain`](crate::frame::Drain), to the
//! quattro owner (a cancel scope, a group body or a group child) in whose poll or drop the
//! future was dropped, and the owner returns only after the task ended.
//!
//! So that a hanging cleanup cannot hang its owner forever, the task is bounded by the earlier
//! of:
//! - the deadline in force where the future was dropped, if it is still ahead (dropped by a
//!   `select!`, an aborted group task, a failing sibling);
//! - the deadline in force where the owner waits for the task, which the drain reads each
//!   time the owner polls it.
//!
//! A deadline that already passed where the future was dropped, or a `cancel()`, is the
//! cancellation that dropped it. The cleanups are shielded from it, else they could never run,
//! and only the deadlines around the owner bound them, as if the owner awaited them right
//! after it ended.
//!
//! With no owner (dropped outside any quattro future), the task is spawned unbounded and
//! detached.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use tokio::runtime::Handle;
use tokio::time::Instant;

use super::stack::{AsyncCleanup, run_in_order};
use crate::CancelScope;
use crate::frame::{self, Drainable};

/// Spawns `cleanups` (in the order to run them) as one task on `handle`; inside a quattro
/// owner, hands the task's end to it, bounded as the module docs say.
pub(crate) fn spawn(handle: &Handle, cleanups: Vec<AsyncCleanup>) {
    if frame::current().flags & frame::OWNER == 0 {
        // Nobody to hand the task to: detached, as it always was. Its panics are reported
        // by the runtime.
        drop(handle.spawn(run_in_order(cleanups)));
        return;
    }
    let (deadline, cancelled) = frame::lookup();
    let bound = deadline.filter(|at| !cancelled && *at > Instant::now());
    let scope = bound.map_or_else(CancelScope::new, CancelScope::with_deadline);
    let drain = Arc::new(CleanupDrain {
        state: Mutex::new(State::default()),
        scope: scope.clone(),
    });
    let done = Done(drain.clone());
    // Dropping the task's future (it ended, or the runtime dropped it unrun) marks the drain
    // empty, also on unwind.
    drop(handle.spawn(async move {
        let _done = done;
        if scope.move_on(run_in_order(cleanups)).await.is_none() {
            tracing::warn!(
                deadline = ?scope.deadline(),
                "async cleanups of a dropped deferring future cut by the deadline that bounds them"
            );
        }
    }));
    frame::hand_up(drain);
}

/// The end of a task running the async cleanups of a dropped enabled future.
struct CleanupDrain {
    state: Mutex<State>,
    /// The scope the task runs the cleanups in: its deadline is the bound.
    scope: CancelScope,
}

#[derive(Default)]
struct State {
    /// The task's future was dropped (completed, cut, or never run).
    done: bool,
    /// The owner waiting for it.
    waker: Option<Waker>,
}

impl CleanupDrain {
    // Nothing runs while the lock is held, so a poisoned lock is intact.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drainable for CleanupDrain {
    fn poll_drained(&self, cx: &mut Context<'_>) -> Poll<()> {
        {
            let mut state = self.lock();
            if state.done {
                return Poll::Ready(());
            }
            crate::waker::register(&mut state.waker, cx.waker());
        }
        // The owner waits here in its own context: the cleanups get no more time than it has.
        if let Some(at) = crate::current_effective_deadline() {
            if self.scope.deadline().is_none_or(|bound| at < bound) {
                self.scope.set_deadline(Some(at));
            }
        }
        Poll::Pending
    }
}

/// Marks the drain empty and wakes its owner when the task's future is dropped.
struct Done(Arc<CleanupDrain>);

impl Drop for Done {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.0.lock();
            state.done = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}
