//! The [`TaskLabel`] that names who failed in an error.

use std::fmt;
use std::panic::Location;
use std::sync::Arc;

use tokio::task::Id;

/// Who failed: the body of the group, a child task, or an item of a `gather`.
///
/// `Display` names what a person can find in their code: the body, the name given with
/// `TaskGroup::task`, the gather item's position in the input, or where an unnamed task was
/// spawned (with its tokio task id).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum TaskLabel {
    /// The group's body.
    Body,
    /// A task spawned into the group, named or not.
    Child {
        id: Option<Id>,
        name: Option<Arc<str>>,
        /// Where an unnamed task was spawned.
        at: Option<&'static Location<'static>>,
    },
    /// An item of a `gather`, by its position in the input (from 0), and the name that
    /// `Gather::name_items` gave it.
    Item {
        index: usize,
        id: Option<Id>,
        name: Option<Arc<str>>,
    },
}

impl TaskLabel {
    /// The label of a child task that is running now: its name, and the current task's id.
    pub(crate) fn current_child(
        name: Option<&Arc<str>>,
        at: Option<&'static Location<'static>>,
    ) -> TaskLabel {
        TaskLabel::Child {
            id: tokio::task::try_id(),
            name: name.cloned(),
            at,
        }
    }

    pub(crate) fn name(&self) -> Option<&str> {
        match self {
            TaskLabel::Child { name, .. } | TaskLabel::Item { name, .. } => name.as_deref(),
            TaskLabel::Body => None,
        }
    }

    pub(crate) fn id(&self) -> Option<Id> {
        match self {
            TaskLabel::Child { id, .. } | TaskLabel::Item { id, .. } => *id,
            TaskLabel::Body => None,
        }
    }

    pub(crate) fn item(&self) -> Option<usize> {
        match self {
            TaskLabel::Item { index, .. } => Some(*index),
            TaskLabel::Body | TaskLabel::Child { .. } => None,
        }
    }
}

impl fmt::Display for TaskLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskLabel::Body => "body".fmt(f),
            TaskLabel::Child {
                name: Some(name), ..
            } => write!(f, "task `{name}`"),
            TaskLabel::Child {
                id, at: Some(at), ..
            } => {
                "task ".fmt(f)?;
                if let Some(id) = id {
                    write!(f, "{id} ")?;
                }
                write!(f, "spawned at {}:{}", at.file(), at.line())
            }
            TaskLabel::Child { id: Some(id), .. } => write!(f, "task {id}"),
            TaskLabel::Child { .. } => "task".fmt(f),
            TaskLabel::Item {
                index,
                name: Some(name),
                ..
            } => write!(f, "item {index} (`{name}`)"),
            TaskLabel::Item { index, .. } => write!(f, "item {index}"),
        }
    }
}
