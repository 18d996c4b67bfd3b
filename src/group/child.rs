//! The wrapper every child future runs in.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project::{pin_project, pinned_drop};
use tokio::task::AbortHandle;

use crate::chain::{Enter, Node};
use crate::error::{Reported, TaskError};

/// What a child task hands back to the group through its `JoinSet`. The value itself goes to
/// the task's handle; the group only needs the error.
pub(crate) type Exit<E> = Result<(), ChildFailure<E>>;

/// A child's `Err`, with the task's name for the group's error.
pub(crate) struct ChildFailure<E> {
    pub(crate) name: Option<Arc<str>>,
    pub(crate) error: E,
}

/// Where a child's value goes: the task's handle, or a collector such as `gather`'s.
pub(crate) trait Deliver: Send + 'static {
    /// The task's value.
    type Value;

    /// Hands over the value, or why there is none. Called exactly once.
    fn deliver(self, result: Result<Self::Value, TaskError>);

    /// What the sink keeps to learn the task's abort handle once it is spawned.
    type Control;

    /// Taken before the sink moves into the task.
    fn control(&self) -> Self::Control;

    /// The task was spawned (possibly after waiting in the queue); `abort` stops it.
    fn spawned(control: Self::Control, abort: AbortHandle);

    /// Whether the task was aborted while it waited in the queue: it is then never spawned.
    fn is_aborted(_control: &Self::Control) -> bool {
        false
    }

    /// Identifies the task in the group's queue (0: cannot be taken out).
    fn key(&self) -> usize {
        0
    }
}

/// Runs a child future with the group's node current (so the child sees the deadlines that
/// enclose the group, also in its destructors) inside the task's span, and delivers its value
/// to the task's handle.
#[pin_project(PinnedDrop)]
pub(crate) struct Child<F, S: Deliver> {
    #[pin]
    fut: Option<F>,
    /// The group's node. `None` only while it is the thread's current node, during a poll.
    node: Option<Arc<Node>>,
    result: Option<S>,
    name: Option<Arc<str>>,
    span: tracing::Span,
}

impl<F, S: Deliver> Child<F, S> {
    #[inline(always)]
    pub(crate) fn new(
        fut: F,
        node: Arc<Node>,
        result: S,
        name: Option<Arc<str>>,
        span: tracing::Span,
    ) -> Child<F, S> {
        Child {
            fut: Some(fut),
            node: Some(node),
            result: Some(result),
            name,
            span,
        }
    }
}

impl<F, S, T, E> Future for Child<F, S>
where
    F: Future<Output = Result<T, E>>,
    S: Deliver<Value = T>,
{
    type Output = Exit<E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Exit<E>> {
        let mut this = self.project();
        let _span = this.span.enter();
        let _enter = Enter::new(this.node);
        let fut = this.fut.as_mut().as_pin_mut();
        let out = std::task::ready!(fut.expect("child polled after completion").poll(cx));
        // Drop the finished future while the group's node is still current.
        this.fut.set(None);
        let sender = this.result.take().expect("result sent once");
        Poll::Ready(match out {
            Ok(value) => {
                sender.deliver(Ok(value));
                Ok(())
            }
            Err(error) => {
                sender.deliver(Err(TaskError::failed(Reported::new())));
                Err(ChildFailure {
                    name: this.name.take(),
                    error,
                })
            }
        })
    }
}

#[pinned_drop]
impl<F, S: Deliver> PinnedDrop for Child<F, S> {
    fn drop(self: Pin<&mut Self>) {
        let mut this = self.project();
        if this.fut.is_some() {
            let _span = this.span.enter();
            crate::chain::drop_in(this.node, this.fut.as_mut());
        }
        if let Some(sender) = this.result.take() {
            // Dropped before completing: aborted, never started, or unwinding from a panic in
            // its poll (tokio drops a panicking task's future during the unwind).
            let err = if std::thread::panicking() {
                TaskError::panicked(None)
            } else {
                TaskError::cancelled()
            };
            sender.deliver(Err(err));
        }
    }
}
