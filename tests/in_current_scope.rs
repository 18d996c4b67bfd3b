//! `in_current_scope` (issue 15): the context of the enclosing scopes and groups (deadline,
//! cancellation, shutdown requests) carried into a future run by a plain `tokio::spawn`.
//!
//! Timeline comments use the paused clock; on the multi-thread runtime (real time) the tests
//! check what is seen, never when.
// Wrapped futures are made inside scopes and handed out, to be awaited elsewhere.
#![allow(clippy::async_yields_async)]

use std::convert::Infallible;
use std::future::{Future, pending};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt;
use quattro::{
    CancelScope, InCurrentScope, TaskGroup, WithScope, current_effective_deadline,
    is_shutdown_requested, move_on_after, shutdown_requested, shutdown_token,
};
use tokio::sync::oneshot;
use tokio::time::{Instant, advance, sleep, timeout};
use tokio_test::{assert_pending, task};

#[path = "task_group_util/mod.rs"]
mod util;
use util::*;

/// Long enough never to pass during a test, on either clock.
const LONG: Duration = Duration::from_secs(600);

/// What the code that reads it sees of the context.
#[derive(Debug, PartialEq)]
struct Seen {
    deadline: Option<Instant>,
    shutdown: bool,
}

fn seen() -> Seen {
    Seen {
        deadline: current_effective_deadline(),
        shutdown: is_shutdown_requested(),
    }
}

/// Runs `body` in a cancel scope polled once by hand, so that the scope stays entered (neither
/// finished nor running) while the test goes on; returns the scope's future, to drop when the
/// scope should end, and what the body sent back.
async fn entered<T: Send + 'static>(
    scope: &CancelScope,
    body: impl FnOnce(oneshot::Sender<T>) -> Pin<Box<dyn Future<Output = ()> + Send>>,
) -> (task::Spawn<impl Future<Output = Option<()>>>, T) {
    let (tx, rx) = oneshot::channel();
    let mut run = task::spawn(scope.move_on(body(tx)));
    assert_pending!(run.poll());
    (run, rx.await.expect("the body sends before it suspends"))
}

// ----- The deadline crosses a plain spawn ------------------------------------------------------

both_runtimes! {
    /// A scope without a handle: the spawned task sees its deadline.
    async fn the_deadline_of_a_scope_reaches_a_plain_spawn() {
        let (here, there) = move_on_after(LONG, async {
            let there = tokio::spawn(async { seen() }.in_current_scope());
            (seen(), there.await.unwrap())
        })
        .await
        .unwrap();
        assert!(here.deadline.is_some());
        assert_eq!(there, here);
    }
}

both_runtimes! {
    /// Nested scopes, one with a handle, a group and one of its tasks: the task's spawn sees the
    /// earliest deadline among all of them, as the task does.
    async fn the_deadline_reaches_a_plain_spawn_from_a_group_task_in_nested_scopes() {
        let outer = CancelScope::with_timeout(LONG * 2);
        let out = outer
            .move_on(move_on_after(LONG * 3, async {
                TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
                    let task = tg.spawn(async {
                        Ok(move_on_after(LONG, async {
                            let there = tokio::spawn(async { seen() }.in_current_scope());
                            (seen(), there.await.unwrap())
                        })
                        .await)
                    });
                    Ok(task.await.unwrap())
                })
                .await
                .unwrap()
            }))
            .await;
        let (here, there) = out.unwrap().unwrap().unwrap();
        assert!(here.deadline.is_some());
        assert_eq!(there, here);
    }
}

both_runtimes! {
    /// Today's behaviour, unchanged: a plain spawn of an unwrapped future sees nothing.
    async fn without_the_wrapper_a_plain_spawn_sees_no_context() {
        let scope = CancelScope::with_timeout(LONG);
        scope.request_shutdown(LONG);
        let there = scope
            .move_on(async {
                assert!(seen().shutdown);
                tokio::spawn(async { (seen(), shutdown_requested().now_or_never()) })
                    .await
                    .unwrap()
            })
            .await
            .unwrap();
        assert_eq!(there, (Seen { deadline: None, shutdown: false }, None));
    }
}

/// Made outside any scope, the wrapper captures nothing (no allocation: `captured: false`) and
/// changes nothing: the future sees the context it is polled in.
#[tokio::test(start_paused = true)]
async fn captured_outside_any_scope_carries_nothing() {
    let fut = async { seen() }.in_current_scope();
    assert!(format!("{fut:?}").contains("captured: false"), "{fut:?}");
    assert_eq!(tokio::spawn(fut).await.unwrap().deadline, None);

    let start = Instant::now();
    let fut = async { seen() }.in_current_scope();
    let inside = move_on_after(ms(5), fut).await.unwrap();
    assert_eq!(inside.deadline, Some(start + ms(5)));
}

/// The context is captured where `in_current_scope` is called, not where the future is first
/// polled.
#[tokio::test(start_paused = true)]
async fn the_context_is_captured_at_the_call() {
    let start = Instant::now();
    let scope = CancelScope::with_timeout(ms(10));
    let (_run, fut) = entered(&scope, |tx| {
        Box::pin(async move {
            let _ = tx.send(async { seen() }.in_current_scope());
            pending::<()>().await
        })
    })
    .await;
    // First polled here, outside the scope.
    assert_eq!(
        tokio::spawn(fut).await.unwrap().deadline,
        Some(start + ms(10))
    );
}

// ----- Live: later changes to enclosing handles and groups are seen ----------------------------

both_runtimes! {
    /// `set_deadline` and `cancel` on the enclosing scope after the capture, while the task runs,
    /// are seen at once; the task is not cancelled (only the view is carried).
    async fn set_deadline_and_cancel_after_the_capture_are_seen() {
        let scope = CancelScope::new();
        let (run, (ask, answers)) = entered(&scope, |tx| {
            Box::pin(async move {
                let (ask, mut asked) = tokio::sync::mpsc::channel::<()>(1);
                let (answer, answers) = tokio::sync::mpsc::channel(1);
                tokio::spawn(
                    async move {
                        while asked.recv().await.is_some() {
                            answer.send(current_effective_deadline()).await.unwrap();
                        }
                    }
                    .in_current_scope(),
                );
                let _ = tx.send((ask, answers));
                pending::<()>().await
            })
        })
        .await;
        let (ask, mut answers) = (ask, answers);
        let mut read = async || {
            ask.send(()).await.unwrap();
            answers.recv().await.unwrap()
        };
        assert_eq!(read().await, None);

        let at = Instant::now() + LONG;
        scope.set_deadline(Some(at));
        assert_eq!(read().await, Some(at));
        scope.set_deadline(None);
        assert_eq!(read().await, None);

        // Cancelled (and not yet finished: its future is not polled again): a deadline of
        // "now or earlier". The task keeps running.
        scope.cancel();
        let cancelled = read().await.expect("a cancelled scope counts as a deadline");
        assert!(cancelled <= Instant::now());

        // Finished: it no longer counts.
        drop(run);
        assert_eq!(read().await, None);
    }
}

// ----- Shutdown requests cross the plain spawn -------------------------------------------------

both_runtimes! {
    /// `TaskGroup::request_shutdown`: a task spawned plainly from the body observes it with
    /// `shutdown_requested()`, `is_shutdown_requested()` and `shutdown_token()`.
    async fn the_shutdown_of_a_group_reaches_a_plain_spawn() {
        let out = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
            let (waiting, is_waiting) = oneshot::channel();
            let worker = tokio::spawn(
                async {
                    let token = shutdown_token();
                    let mut requested = pin!(shutdown_requested());
                    assert!(futures::poll!(requested.as_mut()).is_pending());
                    assert!(!is_shutdown_requested());
                    waiting.send(()).unwrap();
                    requested.await;
                    (is_shutdown_requested(), token.is_cancelled())
                }
                .in_current_scope(),
            );
            is_waiting.await.unwrap();
            tg.request_shutdown(LONG);
            Ok(worker.await.unwrap())
        })
        .await;
        assert_eq!(out.unwrap(), (true, true));
    }
}

both_runtimes! {
    /// `CancelScope::request_shutdown`, from another task: a task spawned plainly inside the scope, and
    /// a task of a group inside that task, observe it.
    async fn the_shutdown_of_a_cancel_scope_reaches_a_plain_spawn_and_its_groups() {
        let scope = CancelScope::new();
        let (run, (is_waiting, worker)) = entered(&scope, |tx| {
            Box::pin(async move {
                let (waiting, is_waiting) = oneshot::channel();
                let worker = tokio::spawn(
                    TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
                        let task = tg.spawn(async {
                            waiting.send(()).unwrap();
                            shutdown_requested().await;
                            Ok(is_shutdown_requested())
                        });
                        shutdown_requested().await;
                        Ok(task.await.unwrap())
                    })
                    .in_current_scope(),
                );
                let _ = tx.send((is_waiting, worker));
                pending::<()>().await
            })
        })
        .await;
        is_waiting.await.unwrap();
        scope.request_shutdown(LONG);
        assert!(worker.await.unwrap().unwrap());
        drop(run);
    }
}

// ----- Scopes and groups nested inside the wrapped future ---------------------------------------

/// A scope inside the wrapped future nests under the carried context: the earlier deadline is
/// in force; the inner scope's own deadline still fires, and the carried one cancels nothing.
#[tokio::test(start_paused = true)]
async fn a_scope_inside_combines_its_deadline_with_the_carried_one() {
    let start = Instant::now();
    let fut = move_on_after(ms(100), async {
        tokio::spawn(
            async move {
                let earlier = move_on_after(ms(50), async { seen().deadline }).await;
                let later = move_on_after(ms(500), async { seen().deadline }).await;
                // The inner scope fires at its own deadline.
                let fired = move_on_after(ms(30), pending::<()>()).await;
                let at = Instant::now();
                // The carried deadline (100 ms) passes: nothing is cancelled.
                sleep(ms(200)).await;
                (earlier, later, fired, at, seen().deadline)
            }
            .in_current_scope(),
        )
    })
    .await
    .unwrap();
    let (earlier, later, fired, at, after) = fut.await.unwrap();
    assert_eq!(earlier, Some(Some(start + ms(50))));
    assert_eq!(later, Some(Some(start + ms(100))));
    assert_eq!((fired, at), (None, start + ms(30)));
    // No enclosing handle or group: the copy of a handle-less scope's deadline stays.
    assert_eq!(after, Some(start + ms(100)));
}

both_runtimes! {
    /// A group inside the wrapped future carries the context into its tasks.
    async fn a_group_inside_carries_the_context_into_its_tasks() {
        let scope = CancelScope::with_timeout(LONG);
        let (here, there) = scope
            .move_on(move_on_after(LONG / 2, async {
                let there = tokio::spawn(
                    TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
                        let task = tg.spawn(async { Ok(seen()) });
                        Ok(task.await.unwrap())
                    })
                    .in_current_scope(),
                );
                (seen(), there.await.unwrap().unwrap())
            }))
            .await
            .unwrap()
            .unwrap();
        assert!(here.deadline.is_some());
        assert_eq!(there, here);
    }
}

/// The captured scope is cancelled but will never drop the wrapped future: a scope inside it
/// must still claim its own deadline instead of waiting for that cancellation (which would hang).
#[tokio::test(start_paused = true)]
async fn a_scope_inside_fires_while_the_captured_scope_is_cancelled() {
    let scope = CancelScope::new();
    let (run, fut) = entered(&scope, |tx| {
        Box::pin(async move {
            let fut = async {
                let in_task = move_on_after(ms(10), pending::<()>()).await;
                let in_group = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
                    let task = tg.spawn(async { Ok(move_on_after(ms(10), pending::<()>()).await) });
                    Ok(task.await.unwrap())
                })
                .await;
                (in_task, in_group.unwrap())
            };
            let _ = tx.send(fut.in_current_scope());
            pending::<()>().await
        })
    })
    .await;
    scope.cancel();
    let out = timeout(Duration::from_secs(3600), tokio::spawn(fut)).await;
    assert_eq!(out.expect("no hang").unwrap(), (None, None));
    drop(run);
}

// ----- Destructors ---------------------------------------------------------------------------

/// Records the deadline in force when it is dropped.
struct RecordOnDrop(Arc<Mutex<Option<Option<Instant>>>>);

impl Drop for RecordOnDrop {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = Some(current_effective_deadline());
    }
}

/// A future that is ready at once and records the deadline when it is dropped.
struct ReadyRecording {
    _record: RecordOnDrop,
}

impl Future for ReadyRecording {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }
}

/// The wrapped future's destructors see the carried deadline: when its task is aborted, and
/// when it completes.
#[tokio::test(start_paused = true)]
async fn destructors_see_the_carried_deadline() {
    let start = Instant::now();
    let (aborted, completed) = (Arc::default(), Arc::default());
    let (a, c) = (RecordOnDrop(Arc::clone(&aborted)), Arc::clone(&completed));
    let task = move_on_after(ms(100), async move {
        let task = tokio::spawn(
            async move {
                let _guard = a;
                pending::<()>().await
            }
            .in_current_scope(),
        );
        tokio::spawn(
            ReadyRecording {
                _record: RecordOnDrop(c),
            }
            .in_current_scope(),
        )
        .await
        .unwrap();
        task
    })
    .await
    .unwrap();
    assert_eq!(*completed.lock().unwrap(), Some(Some(start + ms(100))));
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_eq!(*aborted.lock().unwrap(), Some(Some(start + ms(100))));
}

// ----- After the enclosing scope finished ----------------------------------------------------

both_runtimes! {
    /// A task that outlives the scope it was spawned in: the scope's deadline counts while the
    /// scope runs, and drops out when it finishes (the core's rule for finished scopes), also
    /// after that deadline passed; a scope further out that still runs still counts.
    async fn a_finished_scope_drops_out_of_the_view() {
        let outer = CancelScope::with_timeout(LONG * 2);
        let out = outer
            .move_on(async {
                let inner = CancelScope::with_timeout(LONG);
                let (ask, mut asked) = tokio::sync::mpsc::channel::<()>(1);
                let (answer, mut answers) = tokio::sync::mpsc::channel(1);
                let worker = async move {
                    while asked.recv().await.is_some() {
                        answer.send(current_effective_deadline()).await.unwrap();
                    }
                };
                let mut read = async || {
                    ask.send(()).await.unwrap();
                    answers.recv().await.unwrap()
                };
                let (task, during) = inner
                    .move_on(async {
                        let task = tokio::spawn(worker.in_current_scope());
                        (task, read().await)
                    })
                    .await
                    .unwrap();
                let after_inner = read().await;
                if is_paused() {
                    advance(LONG * 3 / 2).await; // past the inner deadline, not the outer
                }
                let later = read().await;
                drop(ask);
                task.await.unwrap();
                (inner.deadline(), during, after_inner, later)
            })
            .await;
        let (inner, during, after_inner, later) = out.unwrap();
        assert!(inner.is_some());
        assert_eq!(during, inner);
        assert_eq!(after_inner, outer.deadline());
        assert_eq!(later, outer.deadline());
    }
}

/// A wrapped future made inside a scope, returned out of it and awaited after the scope ended
/// (its deadline long past): no stale deadline, for a scope with a handle and for a group.
#[tokio::test(start_paused = true)]
async fn awaited_after_the_scope_ended_it_reports_no_stale_deadline() {
    let scope = CancelScope::with_timeout(ms(10));
    let in_scope = scope
        .move_on(async { async { seen() }.in_current_scope() })
        .await
        .unwrap();
    let in_group = move_on_after(ms(10), async {
        TaskGroup::scope(|_: TaskGroup<Infallible>| async {
            Ok(async { seen() }.in_current_scope())
        })
        .await
        .unwrap()
    })
    .await
    .unwrap();
    advance(ms(50)).await;
    assert_eq!(in_scope.await.deadline, None);
    assert_eq!(tokio::spawn(in_group).await.unwrap().deadline, None);
}

/// A scope shut down, then finished: its deadline drops out of the view, its shutdown request
/// stays seen (as the tokens handed out for it stay cancelled).
#[tokio::test(start_paused = true)]
async fn a_shutdown_request_stays_seen_after_the_scope_finished() {
    let scope = CancelScope::new();
    let handle = scope.clone();
    let (token, fut) = scope
        .move_on(async move {
            let fut = async { (seen(), shutdown_token().is_cancelled()) }.in_current_scope();
            handle.request_shutdown(ms(10));
            // Finishes within the grace.
            (shutdown_token(), fut)
        })
        .await
        .unwrap();
    assert!(!scope.cancelled_caught());
    advance(ms(50)).await;
    assert!(token.is_cancelled());
    let (seen, cancelled) = tokio::spawn(fut).await.unwrap();
    assert_eq!(
        seen,
        Seen {
            deadline: None,
            shutdown: true
        }
    );
    assert!(cancelled);
}

/// Documents the copy: the deadline of a scope without a handle has no shared state to watch;
/// it ends with the innermost handle or group around the capture, or, with none, stays.
#[tokio::test(start_paused = true)]
async fn a_handleless_deadline_ends_with_the_innermost_handle_or_group() {
    let start = Instant::now();
    let bare = move_on_after(ms(10), async { async { seen() }.in_current_scope() })
        .await
        .unwrap();
    let bound = CancelScope::new()
        .move_on(move_on_after(ms(10), async {
            async { seen() }.in_current_scope()
        }))
        .await
        .unwrap()
        .unwrap();
    advance(ms(50)).await;
    assert_eq!(bare.await.deadline, Some(start + ms(10)));
    assert_eq!(bound.await.deadline, None);
}

// ----- Polled inside another scope ------------------------------------------------------------

/// Captured under one scope and awaited inside another (in a second task): both count, the
/// earlier deadline and either's shutdown request; only the scope around it can drop it.
#[tokio::test(start_paused = true)]
async fn polled_inside_another_scope_it_sees_both_contexts() {
    let start = Instant::now();
    let captured = CancelScope::with_timeout(ms(100));
    let (run, futs) = entered(&captured, |tx| {
        Box::pin(async move {
            let wait = async {
                shutdown_requested().await;
                seen()
            };
            let _ = tx.send((
                async { seen() }.in_current_scope(),
                async { seen() }.in_current_scope(),
                wait.in_current_scope(),
                async { shutdown_requested().await }.in_current_scope(),
            ));
            pending::<()>().await
        })
    })
    .await;
    let (earlier, later, wait_there, wait_here) = futs;
    let there = tokio::spawn(async move {
        let earlier = move_on_after(ms(50), earlier).await.unwrap();
        let later = move_on_after(ms(500), later).await.unwrap();
        (earlier, later)
    });
    assert_eq!(
        there.await.unwrap(),
        (
            Seen {
                deadline: Some(start + ms(50)),
                shutdown: false
            },
            Seen {
                deadline: Some(start + ms(100)),
                shutdown: false
            },
        )
    );

    // A shutdown of the scope it is polled in is seen, by a token-based wait too.
    let here = CancelScope::new();
    let handle = here.clone();
    let waited = tokio::spawn(here.move_on(wait_here));
    tokio::task::yield_now().await;
    handle.request_shutdown(LONG);
    assert_eq!(waited.await.unwrap(), Some(()));

    // And a shutdown of the captured scope.
    let waiting = tokio::spawn(CancelScope::new().move_on(wait_there));
    tokio::task::yield_now().await;
    captured.request_shutdown(LONG);
    let out = waiting.await.unwrap().unwrap();
    assert!(out.shutdown);
    drop(run);
}

// ----- Drains: a group dropped inside the wrapped future --------------------------------------

both_runtimes! {
    /// In a plain task there is no owner: a group dropped inside the wrapped future aborts its
    /// tasks and nothing waits for them (as in a plain task without the wrapper); the scope
    /// where the future was made is not involved.
    async fn a_group_dropped_in_a_plain_spawn_hands_nothing_up() {
        let counter = Counter::new();
        let guard = counter.guard();
        let out = move_on_after(LONG, async {
            tokio::spawn(
                async move {
                    tokio::select! {
                        biased;
                        _ = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
                            tg.spawn(async move {
                                let _guard = guard;
                                pending::<Result<(), Infallible>>().await
                            });
                            pending::<Result<(), Infallible>>().await
                        }) => unreachable!(),
                        _ = tokio::task::yield_now() => "dropped",
                    }
                }
                .in_current_scope(),
            )
            .await
            .unwrap()
        })
        .await;
        assert_eq!(out, Some("dropped"));
        // The aborted task ends on its own.
        while counter.get() == 0 {
            tokio::task::yield_now().await;
        }
    }
}

both_runtimes! {
    /// Awaited in place inside a scope, the wrapped future has a real owner around it: a group
    /// dropped inside is awaited by that scope, which returns only once the task was dropped.
    async fn a_group_dropped_inside_a_scope_polling_the_wrapper_is_awaited_by_it() {
        let counter = Counter::new();
        let guard = counter.guard();
        // Made in a scope of its own (it carries that scope), awaited inside another.
        let wrapped = CancelScope::new()
            .move_on(async move {
                async move {
                    tokio::select! {
                        biased;
                        _ = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
                            tg.spawn(async move {
                                let _guard = guard;
                                pending::<Result<(), Infallible>>().await
                            });
                            pending::<Result<(), Infallible>>().await
                        }) => unreachable!(),
                        _ = tokio::task::yield_now() => "dropped",
                    }
                }
                .in_current_scope()
            })
            .await
            .unwrap();
        let out = move_on_after(LONG, wrapped).await;
        assert_eq!(out, Some("dropped"));
        assert_eq!(counter.get(), 1, "the scope waited for the aborted task");
    }
}

// ----- Types ---------------------------------------------------------------------------------

fn assert_send_sync<T: Send + Sync>(_: &T) {}

/// `Send` and `Sync` when the inner future is; `Debug` shows what was captured.
#[tokio::test(start_paused = true)]
async fn send_sync_and_debug() {
    let start = Instant::now();
    move_on_after(ms(10), async move {
        let fut: InCurrentScope<_> = async {}.in_current_scope();
        assert_send_sync(&fut);
        let debug = format!("{fut:?}");
        assert!(debug.contains("captured: true"), "{debug}");
        assert!(
            debug.contains(&format!("{:?}", Some(start + ms(10)))),
            "{debug}"
        );
        fut.await;
    })
    .await
    .unwrap();
}

/// Captures a worker inside the wrapper polling it, then is ready (or never); its destructor
/// panics.
struct CaptureThenPanicOnDrop {
    tx: Option<oneshot::Sender<Pin<Box<dyn Future<Output = Seen> + Send>>>>,
    ready: bool,
}

impl Future for CaptureThenPanicOnDrop {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Box::pin(async { seen() }.in_current_scope()));
        }
        if self.ready {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for CaptureThenPanicOnDrop {
    fn drop(&mut self) {
        panic!("destructor of the wrapped future");
    }
}

/// A wrapped future whose destructor panics (once it finished, or dropped before) still ends
/// the wrapper's view: a worker captured inside it does not keep the copied deadline for good.
#[tokio::test(start_paused = true)]
async fn a_destructor_that_panics_still_ends_the_view() {
    for ready in [true, false] {
        let (tx, rx) = oneshot::channel();
        // Captured under a scope without a handle: its deadline is copied, and only the
        // wrapper's end can take it out of the worker's view.
        let wrapper = move_on_after(ms(10), async move {
            CaptureThenPanicOnDrop {
                tx: Some(tx),
                ready,
            }
            .in_current_scope()
        })
        .await
        .unwrap();
        let mut wrapper = Box::pin(wrapper);
        let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let _ = wrapper.as_mut().poll(&mut cx);
            drop(wrapper);
        }));
        assert!(ended.is_err(), "the destructor's panic reaches the caller");
        let worker = rx.await.unwrap();
        advance(ms(50)).await;
        assert_eq!(worker.await.deadline, None, "ready: {ready}");
    }
}

/// Wrapped futures nested in one another, each captured inside the one before: the lookup
/// walks each carried chain once (it grew exponentially with the depth: a depth of 40 would
/// not finish).
#[tokio::test(start_paused = true)]
async fn deeply_nested_wrappers_are_looked_up_once_each() {
    fn nest(depth: usize) -> Pin<Box<dyn Future<Output = Seen> + Send>> {
        if depth == 0 {
            Box::pin(async { seen() })
        } else {
            Box::pin(async move { nest(depth - 1).await }.in_current_scope())
        }
    }
    let start = Instant::now();
    let scope = CancelScope::with_timeout(LONG);
    scope.request_shutdown(LONG);
    let inside = scope.move_on(nest(40)).await.unwrap();
    assert_eq!(inside.deadline, Some(start + LONG));
    assert!(inside.shutdown);
}

/// A scope's future polled inside a future captured inside it closes a cycle (the scope's
/// parent is the wrapper, whose captured chain is the scope): lookups, the shutdown check and
/// the shutdown token still end.
#[tokio::test(start_paused = true)]
async fn a_scope_polled_inside_a_wrapper_captured_inside_it() {
    type Boxed = Pin<Box<dyn Future<Output = Option<Seen>> + Send>>;
    let start = Instant::now();
    let scope = CancelScope::with_timeout(LONG);
    let (give_scope, take_scope) = oneshot::channel::<Boxed>();
    let (give_wrapper, take_wrapper) = oneshot::channel();
    let mut polled_once = false;
    let mut outer: Boxed = Box::pin(scope.move_on(async move {
        let wrapper = async move { take_scope.await.unwrap().await }.in_current_scope();
        let _ = give_wrapper.send(wrapper);
        // Suspend once, then look around from inside the wrapper.
        std::future::poll_fn(|cx| {
            if polled_once {
                return Poll::Ready(());
            }
            polled_once = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        })
        .await;
        let _token = quattro::shutdown_token();
        seen()
    }));
    assert!(futures::poll!(outer.as_mut()).is_pending());
    let wrapper = take_wrapper.await.unwrap();
    give_scope.send(outer).ok().unwrap();
    let inside = wrapper.await.expect("the scope was not cancelled");
    assert_eq!(inside.deadline, Some(start + LONG));
    assert!(!inside.shutdown);
}

both_runtimes! {
    /// Captured under one scope and polled in a task of a group: a shutdown token asked for
    /// later, in a task of a group inside the wrapped future, fires on the polling group's
    /// request (the graceful path), not only at the end of the grace.
    async fn a_token_made_later_inside_sees_the_request_where_it_is_polled() {
        let out = CancelScope::new()
            .move_on(async {
                // Captured here, under this scope; polled below, in a task of group `b`.
                let wrapped = async {
                    TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
                        tg.spawn(async {
                            quattro::shutdown_token().cancelled().await;
                            Ok(())
                        });
                        Ok(())
                    })
                    .await
                }
                .in_current_scope();
                TaskGroup::scope(|b: TaskGroup<Infallible>| async move {
                    let inner = b.spawn(async move { Ok(wrapped.await) });
                    sleep(ms(10)).await;
                    b.request_shutdown(LONG);
                    Ok(inner.await.unwrap())
                })
                .await
            })
            .await;
        let inner = out.expect("not cancelled").expect("the grace did not run out");
        assert!(inner.is_ok(), "the inner group ended gracefully: {inner:?}");
    }
}
