//! Logging of task group failures: an error returned to the caller is not also logged at
//! ERROR (DEBUG only); a failure that would otherwise be lost is logged at ERROR.
//!
//! One test, running every scenario in turn on both runtimes under one global subscriber:
//! `tracing` caches per-callsite interest, and scoped subscribers on concurrently running
//! tests race with that cache.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use quattro::{Failure, TaskGroup};
use tokio::time::sleep;

/// Everything the subscriber wrote since the last `take`.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn take(&self) -> String {
        String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

/// Runs `scenario` on a fresh runtime (current-thread with the paused clock, or two workers)
/// and returns what was logged meanwhile.
fn logged<F: std::future::Future<Output = ()>>(
    logs: &Logs,
    multi_thread: bool,
    scenario: impl FnOnce() -> F,
) -> String {
    let runtime = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .start_paused(true)
            .enable_all()
            .build()
    }
    .unwrap();
    logs.take();
    runtime.block_on(scenario());
    drop(runtime);
    logs.take()
}

/// The lines logged at ERROR.
fn errors(logs: &str) -> Vec<&str> {
    logs.lines()
        .filter(|line| line.contains(" ERROR "))
        .collect()
}

/// A future that panics when polled.
async fn panics<E>(message: &'static str) -> Result<(), E> {
    if !message.is_empty() {
        panic!("{message}");
    }
    Ok(())
}

/// Failures that come back to the caller, under both policies.
async fn returned_failures() {
    let err = TaskGroup::scope(|tg| async move {
        tg.task("fails").spawn(async { Err::<(), _>("boom") });
        std::future::pending::<()>().await;
        Ok(())
    })
    .await
    .unwrap_err();
    assert_eq!(err.failures().len(), 1);
    let err = TaskGroup::scope(|_: TaskGroup<&str>| async { Err::<(), _>("bad input") })
        .await
        .unwrap_err();
    assert!(err.failures()[0].is_body());
    let err = TaskGroup::builder()
        .capture_panics()
        .scope(|tg| async move {
            tg.task("bug").spawn(panics::<()>("captured"));
            std::future::pending::<()>().await;
            Ok(())
        })
        .await
        .unwrap_err();
    assert!(err.has_panic());
    let out = TaskGroup::builder()
        .isolate_failures(|_: Failure<&str>| Ok(()))
        .scope(|tg| async move {
            let a = tg.task("handled").spawn(async { Err::<(), _>("handled") });
            let b = tg.task("handled-bug").spawn(panics("handled"));
            let _ = (a.await, b.await);
            sleep(Duration::from_millis(10)).await;
            Ok(())
        })
        .await;
    out.unwrap();
}

/// A task whose future fails and whose destructor then panics: the panic is resumed, so the
/// error is not returned.
struct FailThenPanicOnDrop;

impl std::future::Future for FailThenPanicOnDrop {
    type Output = Result<(), &'static str>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::task::Poll::Ready(Err("overshadowed"))
    }
}

impl Drop for FailThenPanicOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("destructor bug");
        }
    }
}

/// Failures that reach nobody: one beside a resumed panic, one in an abandoned group.
async fn lost_failures() {
    // The task's error is dropped because its destructor's panic is resumed.
    let group = TaskGroup::scope(|tg| async move {
        tg.task("overshadowed").spawn(FailThenPanicOnDrop);
        std::future::pending::<()>().await;
        Ok(())
    });
    assert!(tokio::spawn(group).await.unwrap_err().is_panic());

    // The group's future is dropped after a task failed, before the group saw it.
    let slot = Arc::new(Mutex::new(None));
    let put = slot.clone();
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let mut group = Box::pin(TaskGroup::scope(move |tg| async move {
        let handle = tg.task("abandoned").spawn(async move {
            let _ = wait.await;
            Err::<(), _>("lost")
        });
        *put.lock().unwrap() = Some(handle);
        std::future::pending::<()>().await;
        Ok(())
    }));
    assert!(futures::poll!(group.as_mut()).is_pending());
    let handle = slot.lock().unwrap().take().unwrap();
    go.send(()).unwrap();
    assert!(handle.await.unwrap_err().is_failed()); // the failure is recorded now
    drop(group);
}

#[test]
fn failures_are_logged_at_error_only_when_lost() {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    for multi_thread in [false, true] {
        let runtime = if multi_thread {
            "multi_thread"
        } else {
            "paused"
        };

        let out = logged(&logs, multi_thread, returned_failures);
        assert_eq!(errors(&out), Vec::<&str>::new(), "{runtime}:\n{out}");
        for expected in ["task `fails`", "task=body", "task `bug`", "task `handled`"] {
            assert!(
                out.contains(expected),
                "{runtime}: no {expected} at DEBUG:\n{out}"
            );
        }

        let out = logged(&logs, multi_thread, lost_failures);
        let errors = errors(&out);
        assert_eq!(errors.len(), 2, "{runtime}:\n{out}");
        assert!(
            errors[0].contains("a panic is being resumed") && errors[0].contains("overshadowed"),
            "{runtime}: {errors:?}"
        );
        assert!(
            errors[1].contains("the group was dropped") && errors[1].contains("abandoned"),
            "{runtime}: {errors:?}"
        );
    }
}
