//! The abort handles of a group's tasks, kept until tokio marks each task finished.
//!
//! This replaces a `JoinSet`. A group never needs its tasks' outputs through a join set (values
//! go to handles or collectors, failures are reported by the tasks themselves), only a count to
//! wait on ([`Slots`](super::slots::Slots)) and abort handles to cancel with; the set's per-task
//! list entry and its own locking were most of what a group cost over hand-written tokio code.
//!
//! A task does not take its handle out when it ends: that would take a lock its spawner also
//! takes, on every task. The list is pruned of finished tasks instead: by a spawner when it
//! doubled ([`Registry::attach`]), by an ending task when the tasks still running fell to a
//! quarter of those kept at the last pruning ([`Registry::running_fell_to`], read without the
//! lock), and when the group goes idle. Each is amortised O(1) a task; the list stays within a
//! few times the tasks alive at once, also after a burst. A group returns only once every
//! handle here says `is_finished`, so no task outlives it, not even the rest of its last
//! poll.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::task::AbortHandle;

use super::shared::Role;

/// A task's place in the group's counts, held from its reservation to its end: normal tasks
/// take a slot under the limit, background tasks do not.
///
/// Neither `Clone` nor `Copy`: a key is given back once, by whoever holds it (a slot given
/// back twice would corrupt the count of [`Slots`](super::slots::Slots)).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TaskKey {
    role: Role,
}

impl TaskKey {
    pub(crate) fn new(role: Role) -> TaskKey {
        TaskKey { role }
    }

    pub(crate) fn role(&self) -> Role {
        self.role
    }
}

/// The abort handles, under a lock of their own (which the ending tasks take only to prune),
/// and how many the last pruning kept.
#[derive(Default)]
pub(crate) struct Registry {
    list: Mutex<List>,
    /// The list's length after its last pruning; read without the lock by ending tasks.
    kept: AtomicUsize,
}

#[derive(Default)]
struct List {
    handles: Vec<(Role, AbortHandle)>,
    /// Every task was aborted: a task handed over from then on is aborted at once.
    aborted_all: bool,
    /// Background tasks were aborted (the group finished): the same for them.
    aborted_background: bool,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, List> {
        // Every update is a push, a pruning or a flag: a panic elsewhere cannot leave it torn.
        self.list.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps a spawned task's abort handle; returns whether to abort the task at once (its
    /// role's tasks were aborted while it was being spawned, when there was no handle yet).
    /// Prunes the list first if it doubled since the last pruning (and holds a few dozen
    /// handles at least).
    pub(crate) fn attach(&self, role: Role, abort: AbortHandle) -> bool {
        let mut list = self.lock();
        if list.aborted_all || (role == Role::Background && list.aborted_background) {
            return true;
        }
        if list.handles.len() >= (2 * self.kept.load(Ordering::Relaxed)).max(64) {
            self.prune_locked(&mut list);
        }
        list.handles.push((role, abort));
        false
    }

    /// Aborts every task, and every one handed over later.
    pub(crate) fn abort_all(&self) {
        let mut list = self.lock();
        list.aborted_all = true;
        for (_, abort) in &list.handles {
            abort.abort();
        }
    }

    /// Aborts the background tasks, and every one handed over later (the group finished).
    pub(crate) fn abort_background(&self) {
        let mut list = self.lock();
        list.aborted_background = true;
        for (role, abort) in &list.handles {
            if *role == Role::Background {
                abort.abort();
            }
        }
    }

    /// Told by an ending task how many normal tasks still run: after a burst the list keeps
    /// the burst's ended tasks (each its whole tokio task) until it doubles again, which a
    /// group that stays busy with a few tasks may never do. So it is pruned as the running
    /// tasks fall to a quarter of those kept at the last pruning (a few times over a burst).
    pub(crate) fn running_fell_to(&self, running: usize) {
        if running * 4 < self.kept.load(Ordering::Relaxed) {
            // Waits for the lock: a spawner holds it only to push a handle, and the last
            // tasks of a burst end while the spawner is still pushing (skipped then, their
            // handles would stay until the next pruning, maybe never).
            self.prune();
        }
    }

    /// Lets go of the tasks that tokio marked finished.
    pub(crate) fn prune(&self) {
        self.prune_locked(&mut self.lock());
    }

    fn prune_locked(&self, list: &mut List) {
        list.handles.retain(|(_, abort)| !abort.is_finished());
        let kept = list.handles.len();
        self.kept.store(kept, Ordering::Relaxed);
        // A burst's list is not kept for the rest of a long-lived group's life.
        let room = 2 * kept.max(32);
        if list.handles.capacity() > 2 * room {
            list.handles.shrink_to(room);
        }
    }

    /// Whether every task is finished for tokio (its handle's `is_finished`), after a
    /// pruning.
    pub(crate) fn all_finished(&self) -> bool {
        let mut list = self.lock();
        self.prune_locked(&mut list);
        list.handles.is_empty()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Registry");
        match self.list.try_lock() {
            Ok(list) => d
                .field("handles", &list.handles.len())
                .field("aborted_all", &list.aborted_all)
                .field("aborted_background", &list.aborted_background),
            Err(_) => d.field("handles", &"<locked>"),
        };
        d.field("kept", &self.kept.load(Ordering::Relaxed)).finish()
    }
}
