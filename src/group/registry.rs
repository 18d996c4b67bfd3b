//! The abort handles of a group's tasks, kept until tokio marks each task finished.
//!
//! This replaces a `JoinSet`. A group never needs its tasks' outputs through a join set (values
//! go to handles or collectors, failures are reported by the tasks themselves), only a count to
//! wait on ([`Slots`](super::slots::Slots)) and abort handles to cancel with; the set's per-task
//! list entry and its own locking were most of what a group cost over hand-written tokio code.
//!
//! A task does not take its handle out when it ends: that would take a lock its spawner also
//! takes, on every task. The list is pruned of finished tasks instead: by a spawner when it
//! doubled, and by an ending task when the tasks still running fell to a quarter of those
//! kept at the last pruning (see `Shared::task_ended`). Both are amortised O(1) a task; the
//! list stays within a few times the tasks alive at once, also after a burst. A group returns
//! only once every handle here says `is_finished`, so no task outlives it, not even the rest
//! of its last poll.

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

#[derive(Default)]
pub(crate) struct Registry {
    handles: Vec<(Role, AbortHandle)>,
    /// The length of `handles` after the last pruning.
    kept: usize,
    /// Every task was aborted: a task handed over from then on is aborted at once.
    aborted_all: bool,
    /// Background tasks were aborted (the group finished): the same for them.
    aborted_background: bool,
}

impl Registry {
    /// Keeps a spawned task's abort handle; returns whether to abort the task at once (its
    /// role's tasks were aborted while it was being spawned, when there was no handle yet).
    pub(crate) fn attach(&mut self, role: Role, abort: AbortHandle) -> bool {
        if self.aborted_all || (role == Role::Background && self.aborted_background) {
            return true;
        }
        self.handles.push((role, abort));
        false
    }

    /// Whether the list doubled since the last pruning (and holds a few dozen handles at
    /// least): pruning it then is amortised O(1) a task.
    pub(crate) fn has_doubled(&self) -> bool {
        self.handles.len() >= (2 * self.kept).max(64)
    }

    /// The length of the list after the last pruning.
    pub(crate) fn kept(&self) -> usize {
        self.kept
    }

    /// Aborts every task of `role`, or of both roles, and every one handed over later.
    pub(crate) fn abort(&mut self, role: Option<Role>) {
        match role {
            None => self.aborted_all = true,
            Some(Role::Background) => self.aborted_background = true,
            Some(Role::Normal) => unreachable!("normal tasks are aborted with all the others"),
        }
        for (r, abort) in &self.handles {
            if role.is_none_or(|role| role == *r) {
                abort.abort();
            }
        }
    }

    /// Lets go of the tasks that tokio marked finished.
    pub(crate) fn prune(&mut self) {
        self.handles.retain(|(_, abort)| !abort.is_finished());
        self.kept = self.handles.len();
        // A burst's list is not kept for the rest of a long-lived group's life.
        let room = 2 * self.kept.max(32);
        if self.handles.capacity() > 2 * room {
            self.handles.shrink_to(room);
        }
    }

    /// The handles kept: tasks running, and ended ones not yet pruned.
    pub(crate) fn len(&self) -> usize {
        self.handles.len()
    }

    /// Whether no handle is kept: after a pruning, every task is finished for tokio.
    pub(crate) fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("handles", &self.handles.len())
            .field("aborted_all", &self.aborted_all)
            .field("aborted_background", &self.aborted_background)
            .finish()
    }
}
