//! The wrapper every child future runs in.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project::{pin_project, pinned_drop};

use super::registry::TaskKey;
use super::shared::{Shared, Who};
use crate::error::{CancelReason, Failure, TaskError, TaskLabel};
use crate::frame::{Drains, Enter};
use crate::node::Node;

/// Where a child's value goes: the task's handle (as the task's output), or a collector such
/// as `gather`'s.
pub(crate) trait Deliver: Send + 'static {
    /// The task's value.
    type Value;

    /// What the task returns, to whoever holds its `JoinHandle`.
    type Output: Send + 'static;

    /// Hands over the value, or why there is none. Called at most once, by the task.
    fn deliver(self, result: Result<Self::Value, TaskError>) -> Self::Output;

    /// The input position of a `gather` item, which names it in failures ("item 7").
    fn item(&self) -> Option<usize> {
        None
    }

    /// The name of a `gather` item, asked for only when it failed (naming costs nothing on
    /// success).
    fn item_name(&self) -> Option<Arc<str>> {
        None
    }
}

/// Runs a child future in the group's frame (so the child sees the deadlines that enclose the
/// group, also in its destructors) inside the task's span, delivers its value to
/// the task's sink, and reports the task's end, with its error or panic, to the group.
#[pin_project(PinnedDrop)]
pub(crate) struct Child<F, S: Deliver, E> {
    #[pin]
    fut: Option<F>,
    /// The group's node, lent to the frame during a poll. Cloned at the first poll (or drop),
    /// in the task: the spawning thread does not touch the node's reference count, which
    /// the tasks update on other threads.
    node: Option<Arc<Node>>,
    result: Option<S>,
    name: Option<Arc<str>>,
    /// Where the task was spawned, to name it in failures when it has no name.
    at: Option<&'static Location<'static>>,
    /// The task's span, when a subscriber wants it. Boxed: a `Span` is five words, and with
    /// it inline the child is too big for tokio to move without a call to `memcpy` (five
    /// moves a task).
    span: Option<Box<tracing::Span>>,
    /// The group and the task's entry there; taken when the end is reported.
    group: Option<(Arc<Shared<E>>, TaskKey)>,
    /// Aborted tasks of groups dropped inside this task; handed to the group when it ends.
    drains: Drains,
}

impl<F, S: Deliver, E> Child<F, S, E> {
    #[inline(always)]
    pub(crate) fn new(
        fut: F,
        group: (Arc<Shared<E>>, TaskKey),
        result: S,
        name: Option<Arc<str>>,
        at: Option<&'static Location<'static>>,
        span: tracing::Span,
    ) -> Child<F, S, E> {
        let span = (!span.is_disabled()).then(|| Box::new(span));
        Child {
            fut: Some(fut),
            node: None,
            result: Some(result),
            name,
            at,
            span,
            group: Some(group),
            drains: Drains::default(),
        }
    }
}

impl<F, S, T, E> Future for Child<F, S, E>
where
    F: Future<Output = Result<T, E>>,
    S: Deliver<Value = T>,
    E: 'static,
{
    type Output = S::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<S::Output> {
        let mut this = self.project();
        let _span = this.span.as_ref().map(|span| span.enter());
        let (group, _) = this.group.as_ref().expect("the end is reported once");
        if this.node.is_none() {
            *this.node = Some(group.node.clone());
        }
        let (polled, dropped) = {
            let _enter = Enter::with_link(group.child_frame(), this.node, Some(this.drains));
            let fut = this.fut.as_mut().as_pin_mut();
            let fut = fut.expect("child polled after completion");
            let polled = match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
                Ok(Poll::Pending) => None,
                Ok(Poll::Ready(out)) => Some(Ok(out)),
                Err(payload) => Some(Err(payload)),
            };
            // A finished (or unwound) future is dropped while the group's frame is still in
            // force. A destructor that panics is a failure of the task, reported with its end.
            let mut fut = this.fut.as_mut();
            let dropped = match polled {
                Some(_) => catch_unwind(AssertUnwindSafe(|| fut.set(None))).err(),
                None => None,
            };
            (polled, dropped)
        };
        let Some(polled) = polled else {
            if !this.drains.is_empty() {
                // Release the drains that emptied; the rest wake this task when they do.
                let _ = this.drains.poll(cx);
            }
            return Poll::Pending;
        };
        let sender = this.result.take().expect("result sent once");
        let mut who = Who {
            task: None,
            name: this.name.take(),
            at: *this.at,
            item: sender.item(),
        };
        if who.item.is_some() && !matches!(polled, Ok(Ok(_))) {
            who.name = sender.item_name();
        }
        let (output, failure) = match polled {
            Ok(Ok(value)) => (sender.deliver(Ok(value)), None),
            Ok(Err(error)) => (
                sender.deliver(Err(TaskError::reported(who.name.as_ref(), who.at, &error))),
                Some(Ended::Error(error)),
            ),
            Err(payload) => (
                sender.deliver(Err(TaskError::panicked(None))),
                Some(Ended::Panic(payload)),
            ),
        };
        let (group, key) = this.group.take().expect("the end is reported once");
        let drains = std::mem::take(this.drains);
        group.task_ended(key, who, failure, dropped, drains);
        Poll::Ready(output)
    }
}

/// How a task failed.
pub(crate) enum Ended<E> {
    Error(E),
    Panic(Box<dyn Any + Send>),
}

impl<E> Ended<E> {
    /// The failure of the task labelled `label`.
    pub(crate) fn into_failure(self, label: TaskLabel) -> Failure<E> {
        match self {
            Ended::Error(error) => Failure::from_error(label, error),
            Ended::Panic(payload) => Failure::from_panic(label, payload),
        }
    }
}

#[pinned_drop]
impl<F, S: Deliver, E> PinnedDrop for Child<F, S, E> {
    fn drop(self: Pin<&mut Self>) {
        let mut this = self.project();
        let mut panic = None;
        if this.fut.is_some() {
            let _span = this.span.as_ref().map(|span| span.enter());
            if let Some((group, _)) = this.group.as_ref() {
                let data = group.child_frame();
                let node = &mut *this.node;
                if node.is_none() {
                    *node = Some(group.node.clone());
                }
                let drains = &mut *this.drains;
                let mut fut = this.fut.as_mut();
                // A destructor that panics is a failure of the task, reported with its end.
                if let Err(payload) = catch_unwind(AssertUnwindSafe(|| {
                    let _enter = Enter::with_link(data, node, Some(drains));
                    fut.set(None);
                })) {
                    panic = Some(Ended::Panic(payload));
                }
            }
        }
        let item = this.result.as_ref().and_then(Deliver::item);
        let who = Who {
            task: None,
            name: match item {
                Some(_) => this.result.as_ref().and_then(Deliver::item_name),
                None => this.name.take(),
            },
            at: *this.at,
            item,
        };
        if let Some(sender) = this.result.take() {
            // Dropped before completing: aborted, or never polled (a runtime shutting down).
            let err = if panic.is_some() || std::thread::panicking() {
                TaskError::panicked(None)
            } else {
                // The group records its reason before it aborts its tasks. Without one, the
                // runtime dropped the task, or its handle aborted it; but a task with a handle
                // delivers nothing here (the handle sees the abort, and tells the two apart).
                let reason = this
                    .group
                    .as_ref()
                    .and_then(|(g, _)| g.node.cancel_reason());
                TaskError::cancelled(reason.unwrap_or(CancelReason::RuntimeShutdown))
            };
            drop(sender.deliver(Err(err)));
        }
        if let Some((group, key)) = this.group.take() {
            // The drains go with the end: the group waits for them before it completes.
            let drains = std::mem::take(this.drains);
            group.task_ended(key, who, panic, None, drains);
        }
    }
}
