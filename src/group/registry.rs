//! The registry of a group's live tasks, which counts them by role and keeps their abort
//! handles.
//!
//! This replaces a `JoinSet`. A group never needs its tasks' outputs through a join set (values
//! go to handles or collectors, failures are reported by the tasks themselves), only a count to
//! wait on and abort handles to cancel with; the set's per-task list entry and its own locking
//! were most of what a group cost over hand-written tokio code.

use tokio::task::AbortHandle;

use super::shared::Role;

/// Names one task's entry. The generation tells a reused entry from the one a task was given,
/// so that a late `attach` or `release` never touches another task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TaskKey {
    index: u32,
    generation: u32,
}

struct Entry {
    generation: u32,
    /// `None`: free.
    role: Option<Role>,
    /// Set once the task is spawned.
    abort: Option<AbortHandle>,
}

#[derive(Default)]
pub(crate) struct Registry {
    entries: Vec<Entry>,
    free: Vec<u32>,
    normal: usize,
    background: usize,
}

impl Registry {
    /// Counts a task about to be spawned.
    pub(crate) fn reserve(&mut self, role: Role) -> TaskKey {
        match role {
            Role::Normal => self.normal += 1,
            Role::Background => self.background += 1,
        }
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                let index = u32::try_from(self.entries.len()).expect("fewer than 2^32 live tasks");
                self.entries.push(Entry {
                    generation: 0,
                    role: None,
                    abort: None,
                });
                index
            }
        };
        let entry = &mut self.entries[index as usize];
        entry.role = Some(role);
        TaskKey {
            index,
            generation: entry.generation,
        }
    }

    /// Keeps the spawned task's abort handle; gives it back when the task already ended.
    pub(crate) fn attach(&mut self, key: TaskKey, abort: AbortHandle) -> Result<(), AbortHandle> {
        match self.live(key) {
            Some(entry) => {
                entry.abort = Some(abort);
                Ok(())
            }
            None => Err(abort),
        }
    }

    /// Forgets an ended task; its role and abort handle, unless it was already released.
    pub(crate) fn release(&mut self, key: TaskKey) -> Option<(Role, Option<AbortHandle>)> {
        let entry = self.live(key)?;
        let role = entry.role.take();
        let abort = entry.abort.take();
        entry.generation = entry.generation.wrapping_add(1);
        self.free.push(key.index);
        match role {
            Some(Role::Normal) => self.normal -= 1,
            Some(Role::Background) => self.background -= 1,
            None => {}
        }
        role.map(|role| (role, abort))
    }

    /// Aborts every spawned task of `role`, or of both roles. Tasks not yet attached are
    /// aborted by their spawner, which checks the group's flags when it attaches (see
    /// `Shared::attach`).
    pub(crate) fn abort(&self, role: Option<Role>) {
        for entry in &self.entries {
            if let (Some(abort), Some(r)) = (&entry.abort, entry.role) {
                if role.is_none_or(|role| role == r) {
                    abort.abort();
                }
            }
        }
    }

    pub(crate) fn normal(&self) -> usize {
        self.normal
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.normal == 0 && self.background == 0
    }

    fn live(&mut self, key: TaskKey) -> Option<&mut Entry> {
        let entry = self.entries.get_mut(key.index as usize)?;
        (entry.generation == key.generation && entry.role.is_some()).then_some(entry)
    }
}
