//! Tests for `quattro::defer`: a port of Python quattro's `test_defer.py`, then ordering,
//! failure and cancellation checks.

use std::cell::RefCell;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::task::Context;
use std::time::Duration;

use futures::FutureExt;
use quattro::defer::{self, AsyncExit, Deferrer, NotEnabled, Outcome};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready, task};

/// An append-only record of what happened, shared with cleanups.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, entry: impl Into<String>) {
        self.0.lock().unwrap().push(entry.into());
    }

    fn get(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    fn contains(&self, entry: &str) -> bool {
        self.get().iter().any(|e| e == entry)
    }

    /// A sync cleanup that records `entry`.
    fn callback(&self, entry: &'static str) -> impl FnOnce() + Send + 'static + use<> {
        let log = self.clone();
        move || log.push(entry)
    }

    /// An async cleanup that yields once, then records `entry`.
    fn cleanup(&self, entry: &'static str) -> impl Future<Output = ()> + Send + 'static + use<> {
        let log = self.clone();
        async move {
            tokio::task::yield_now().await;
            log.push(entry);
        }
    }
}

/// The analog of an `@asynccontextmanager` yielding `value`: making it records "enter name"
/// (acquiring happens in the constructor), the exit yields to the runtime, then records
/// "exit name".
struct Cm {
    name: &'static str,
    value: u32,
    log: Log,
}

impl Cm {
    fn new(name: &'static str, value: u32, log: &Log) -> Cm {
        log.push(format!("enter {name}"));
        Cm {
            name,
            value,
            log: log.clone(),
        }
    }
}

impl AsyncExit for Cm {
    async fn exit(self, _outcome: Outcome) {
        tokio::task::yield_now().await;
        self.log.push(format!("exit {}", self.name));
    }
}

/// Counts its drops.
struct DropGuard(Arc<AtomicUsize>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

thread_local! {
    /// Where `tracing` output of this thread goes while `logged` runs.
    static CAPTURE: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// Writes into this thread's `CAPTURE`, or nowhere.
struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with_borrow_mut(|capture| {
            if let Some(captured) = capture {
                captured.extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Collects what `tracing` logs on this thread while `f` runs.
///
/// One global subscriber, set once: a scoped one (`with_default`) loses events when tests on
/// other threads register the same callsites concurrently.
fn logged<R>(f: impl FnOnce() -> R) -> (R, String) {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(|| Capture)
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
    CAPTURE.set(Some(Vec::new()));
    let out = f();
    let captured = CAPTURE.take().unwrap();
    (out, String::from_utf8(captured).unwrap())
}

/// [`logged`] for a future, on a current-thread runtime (whose tasks all run on this thread).
async fn logged_async<F: Future>(fut: F) -> (F::Output, String) {
    let ((), _) = logged(|| ());
    CAPTURE.set(Some(Vec::new()));
    let out = fut.await;
    let captured = CAPTURE.take().unwrap();
    (out, String::from_utf8(captured).unwrap())
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("")
}

// ---- ported from test_defer.py ----

#[tokio::test]
async fn defer_async() {
    let log = Log::default();
    let l = log.clone();
    let out = Deferrer::enable(|defer| async move {
        assert!(!l.contains("enter a"));
        assert_eq!(defer.enter(Cm::new("a", 1, &l)).value, 1);
        assert!(l.contains("enter a"));
        assert!(!l.contains("exit a"));
        5
    })
    .await;
    assert_eq!(out, 5);
    assert_eq!(log.get(), ["enter a", "exit a"]);
}

#[tokio::test]
async fn defer_async_several() {
    let log = Log::default();
    let l = log.clone();
    Deferrer::enable(|defer| async move {
        let (a, b) = defer.enter((Cm::new("a", 1, &l), Cm::new("b", 2, &l)));
        assert_eq!((a.value, b.value), (1, 2));
        assert_eq!(l.get(), ["enter a", "enter b"]);
    })
    .await;
    assert_eq!(log.get(), ["enter a", "enter b", "exit b", "exit a"]);
}

#[tokio::test]
async fn defer_sync_in_async() {
    // A sync context manager in Rust is a guard; its exit becomes a deferred callback.
    let log = Log::default();
    let l = log.clone();
    Deferrer::enable(|defer| async move {
        l.push("enter");
        defer.callback(l.callback("exit"));
        assert_eq!(l.get(), ["enter"]);
    })
    .await;
    assert_eq!(log.get(), ["enter", "exit"]);
}

#[tokio::test]
async fn defer_task_local() {
    async fn coro(a: u32, log: Log) -> u32 {
        assert!(!log.contains("enter a"));
        assert_eq!(defer::enter(Cm::new("a", 1, &log)).unwrap().value, 1);
        assert!(log.contains("enter a"));
        a
    }

    let log = Log::default();
    assert_eq!(defer::enable(coro(1, log.clone())).await, 1);
    assert_eq!(log.get(), ["enter a", "exit a"]);
}

#[tokio::test]
async fn defer_task_local_sync() {
    async fn coro(a: u32, log: Log) -> u32 {
        log.push("enter");
        defer::callback(log.callback("exit")).unwrap();
        a
    }

    let log = Log::default();
    assert_eq!(defer::enable(coro(1, log.clone())).await, 1);
    assert_eq!(log.get(), ["enter", "exit"]);
}

#[tokio::test]
async fn defer_nested() {
    async fn inner(a: u32, log: Log) -> u32 {
        assert_eq!(defer::enter(Cm::new("inner", 1, &log)).unwrap().value, 1);
        a
    }

    async fn outer(b: u32, log: Log) -> u32 {
        assert_eq!(defer::enter(Cm::new("outer", 2, &log)).unwrap().value, 2);
        assert_eq!(log.get(), ["enter outer"]);
        defer::enable(inner(b, log.clone())).await;
        // The inner function ran its own cleanups at its own end, not the outer ones.
        assert_eq!(log.get(), ["enter outer", "enter inner", "exit inner"]);
        // The outer deferrer is current again after the inner one finished.
        defer::callback(log.callback("outer callback")).unwrap();
        b
    }

    let log = Log::default();
    assert_eq!(defer::enable(outer(1, log.clone())).await, 1);
    assert_eq!(
        log.get(),
        [
            "enter outer",
            "enter inner",
            "exit inner",
            "outer callback",
            "exit outer"
        ]
    );
}

#[tokio::test]
async fn defer_not_enabled() {
    let log = Log::default();

    // `Cm::new` acquires (logs "enter a"); entering without a deferrer drops the value
    // without ever running its exit.
    let cm_log = Log::default();
    let Err(err): Result<_, NotEnabled> = defer::enter(Cm::new("a", 1, &cm_log)) else {
        panic!("entered without a deferrer");
    };
    assert!(err.to_string().contains("defer not enabled"), "{err}");
    assert!(err.to_string().contains("defer::enable"), "{err}");
    assert_eq!(cm_log.get(), ["enter a"], "the value must not be exited");
    assert!(defer::current().is_err());

    assert_eq!(defer::callback(log.callback("x")), Err(err));
    assert_eq!(defer::push(log.cleanup("y")), Err(err));

    // The closure form does not make the task-local one current: pick one form per function.
    let inside = Deferrer::enable(|_defer| async { defer::callback(|| ()) }).await;
    assert!(inside.is_err());
    // Nor does a task spawned from inside an enabled future inherit it.
    let spawned = defer::enable(async { tokio::spawn(async { defer::callback(|| ()) }).await })
        .await
        .unwrap();
    assert!(spawned.is_err());
    // The error is a std error, usable with `?` into a boxed error.
    let boxed: Box<dyn std::error::Error + Send + Sync> = err.into();
    assert!(boxed.to_string().starts_with("defer not enabled"));

    tokio::task::yield_now().await;
    assert!(log.get().is_empty());
    assert_eq!(cm_log.get(), ["enter a"], "the value must not be exited");
}

struct Greeter {
    greeting: String,
    log: Log,
}

impl Greeter {
    async fn run(&self, value: usize, name: &str) -> String {
        Deferrer::enable(|defer| async move {
            // Borrows `self` and `name`: the body need not be 'static.
            defer.push(self.log.cleanup("closure form done"));
            format!("{} {}", self.greeting, name.repeat(value))
        })
        .await
    }

    async fn run_task_local(&self, value: usize) -> String {
        defer::enable(async move {
            defer::callback(self.log.callback("task-local form done")).unwrap();
            self.greeting.repeat(value)
        })
        .await
    }
}

#[tokio::test]
async fn deferrer_enable_method_self() {
    let log = Log::default();
    let greeter = Greeter {
        greeting: "hi".into(),
        log: log.clone(),
    };
    assert_eq!(greeter.run(2, "a").await, "hi aa");
    assert_eq!(greeter.run_task_local(2).await, "hihi");
    assert_eq!(log.get(), ["closure form done", "task-local form done"]);
}

// ---- order, errors and panics ----

#[tokio::test]
async fn lifo_across_mixed_sync_and_async_cleanups() {
    let log = Log::default();
    let l = log.clone();
    Deferrer::enable(|defer| async move {
        defer.push(l.cleanup("async 1"));
        defer.callback(l.callback("sync 1"));
        let _cm = defer.enter(Cm::new("cm", 0, &l));
        defer.push_fn({
            let l = l.clone();
            move || l.cleanup("async 2")
        });
        defer.callback(l.callback("sync 2"));
        assert_eq!(defer.len(), 5);
    })
    .await;
    assert_eq!(
        log.get(),
        [
            "enter cm", "sync 2", "async 2", "exit cm", "sync 1", "async 1"
        ]
    );
}

#[tokio::test]
async fn push_fn_builds_the_cleanup_when_its_turn_comes() {
    let log = Log::default();
    let l = log.clone();
    Deferrer::enable(|defer| async move {
        let l2 = l.clone();
        defer.push_fn(move || {
            l2.push("built");
            async {}
        });
        l.push("body");
    })
    .await;
    assert_eq!(log.get(), ["body", "built"]);
}

#[tokio::test]
async fn cleanup_registered_by_a_cleanup_runs_next() {
    let log = Log::default();
    let l = log.clone();
    Deferrer::enable(|defer| async move {
        defer.callback(l.callback("first registered"));
        let (d, l2) = (defer.clone(), l.clone());
        defer.push(async move {
            l2.push("outer cleanup");
            d.callback(l2.callback("registered during cleanup"));
        });
    })
    .await;
    assert_eq!(
        log.get(),
        [
            "outer cleanup",
            "registered during cleanup",
            "first registered"
        ]
    );
}

#[tokio::test]
async fn cleanups_run_after_err() {
    let log = Log::default();
    let l = log.clone();
    let out: Result<u32, &str> = Deferrer::enable(|defer| async move {
        defer.push(l.cleanup("async"));
        defer.callback(l.callback("sync"));
        Err("failed")?;
        Ok(1)
    })
    .await;
    assert_eq!(out, Err("failed"));
    assert_eq!(log.get(), ["sync", "async"]);
}

#[tokio::test]
async fn cleanups_run_after_panic_then_it_is_resumed() {
    let log = Log::default();
    let l = log.clone();
    let fut = defer::enable(async move {
        defer::push(l.cleanup("async")).unwrap();
        defer::callback(l.callback("sync")).unwrap();
        tokio::task::yield_now().await;
        panic!("body boom");
    });
    let payload = AssertUnwindSafe(fut).catch_unwind().await.unwrap_err();
    assert_eq!(panic_message(&*payload), "body boom");
    assert_eq!(log.get(), ["sync", "async"]);
}

#[test]
fn panicking_cleanup_does_not_stop_the_others_and_is_resumed() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let log = Log::default();
    let l = log.clone();
    let fut = Deferrer::enable(|defer| async move {
        defer.callback(l.callback("sync 1"));
        defer.push(async { panic!("cleanup boom") });
        defer.push(l.cleanup("async 2"));
        defer.callback(|| panic!("second boom"));
        defer.callback(l.callback("sync 3"));
        42
    });
    let (result, logs) = logged(|| rt.block_on(AssertUnwindSafe(fut).catch_unwind()));
    // The first panic to happen is resumed; the later one is logged, not lost.
    assert_eq!(panic_message(&*result.unwrap_err()), "second boom");
    assert_eq!(log.get(), ["sync 3", "async 2", "sync 1"]);
    assert!(logs.contains("a deferred cleanup panicked"), "{logs}");
    assert!(logs.contains("cleanup boom"), "{logs}");
}

#[tokio::test]
async fn body_panic_wins_over_cleanup_panic() {
    let log = Log::default();
    let l = log.clone();
    let fut = Deferrer::enable(|defer| async move {
        defer.callback(l.callback("after"));
        defer.push(async { panic!("cleanup boom") });
        panic!("body boom");
    });
    let payload = AssertUnwindSafe(fut).catch_unwind().await.unwrap_err();
    assert_eq!(panic_message(&*payload), "body boom");
    assert_eq!(log.get(), ["after"]);
}

#[test]
fn body_panic_is_logged_when_dropped_during_cleanup() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let (timed_out, logs) = logged(|| {
        rt.block_on(async {
            let fut = Deferrer::enable(|defer| async move {
                defer.push(std::future::pending());
                panic!("body boom");
            });
            tokio::time::timeout(Duration::from_millis(1), fut).await
        })
    });
    // The cleanup never ends, so the timeout drops the future: the body's panic cannot be
    // resumed any more, and is logged instead of vanishing.
    assert!(timed_out.is_err());
    assert!(logs.contains("body boom"), "{logs}");
    assert!(logs.contains("dropped during cleanup"), "{logs}");
}

#[tokio::test]
async fn panicking_cleanup_in_a_task_reaches_the_join_handle() {
    let log = Log::default();
    let l = log.clone();
    let err = tokio::spawn(Deferrer::enable(|defer| async move {
        defer.callback(l.callback("still ran"));
        defer.push(async { panic!("cleanup boom") });
    }))
    .await
    .unwrap_err();
    assert_eq!(panic_message(&*err.into_panic()), "cleanup boom");
    assert_eq!(log.get(), ["still ran"]);
}

#[tokio::test(start_paused = true)]
async fn async_cleanups_are_awaited_one_after_another() {
    let start = Instant::now();
    let log = Log::default();
    let l = log.clone();
    Deferrer::enable(|defer| async move {
        for (ms, name) in [(10, "10ms"), (20, "20ms")] {
            let l = l.clone();
            defer.push(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                l.push(name);
            });
        }
    })
    .await;
    assert_eq!(start.elapsed(), Duration::from_millis(30));
    assert_eq!(log.get(), ["20ms", "10ms"]);
}

// ---- cancellation ----

/// Registers sync 1, async 1, sync 2, async 2 (which reports on `done`), then never ends.
async fn register_then_hang(defer: Deferrer, log: Log, done: oneshot::Sender<()>) {
    defer.callback(log.callback("sync 1"));
    defer.push(log.cleanup("async 1"));
    defer.callback(log.callback("sync 2"));
    let l = log.clone();
    defer.push(async move {
        tokio::task::yield_now().await;
        l.push("async 2");
        let _ = done.send(());
    });
    std::future::pending::<()>().await;
}

async fn dropped_midway() {
    let log = Log::default();
    let (tx, rx) = oneshot::channel();
    let l = log.clone();
    let mut fut = task::spawn(Deferrer::enable(move |defer| {
        register_then_hang(defer, l, tx)
    }));
    assert_pending!(fut.poll());
    drop(fut);
    // The sync cleanups ran in the drop, last first.
    let at_drop = log.get();
    assert_eq!(&at_drop[..2], ["sync 2", "sync 1"]);
    // The async ones run on the runtime, in order, in one task.
    rx.await.unwrap();
    let l = log.clone();
    let last = tokio::spawn(async move {
        while !l.contains("async 1") {
            tokio::task::yield_now().await;
        }
    });
    last.await.unwrap();
    assert_eq!(log.get(), ["sync 2", "sync 1", "async 2", "async 1"]);
}

#[tokio::test(flavor = "current_thread")]
async fn dropped_midway_current_thread() {
    dropped_midway().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_midway_multi_thread() {
    dropped_midway().await;
}

#[tokio::test(flavor = "current_thread")]
async fn dropped_midway_async_cleanups_wait_for_the_runtime() {
    let log = Log::default();
    let (tx, rx) = oneshot::channel();
    let l = log.clone();
    let mut fut = task::spawn(defer::enable(async move {
        defer::callback(l.callback("sync")).unwrap();
        let l2 = l.clone();
        defer::push(async move {
            l2.push("async");
            let _ = tx.send(());
        })
        .unwrap();
        std::future::pending::<()>().await;
    }));
    assert_pending!(fut.poll());
    drop(fut);
    // Nothing async ran inside the drop: only the runtime can run it.
    assert_eq!(log.get(), ["sync"]);
    rx.await.unwrap();
    assert_eq!(log.get(), ["sync", "async"]);
}

#[tokio::test(start_paused = true)]
async fn dropped_during_an_async_cleanup_the_rest_run_on_the_runtime() {
    let log = Log::default();
    let l = log.clone();
    let mut fut = task::spawn(Deferrer::enable(|defer| async move {
        defer.push(l.cleanup("second"));
        let l2 = l.clone();
        defer.push(async move {
            l2.push("first started");
            tokio::time::sleep(Duration::from_millis(10)).await;
            l2.push("first finished");
        });
        7
    }));
    assert_pending!(fut.poll());
    assert_eq!(log.get(), ["first started"]);
    assert!(format!("{fut:?}").contains("cleaning up"), "{fut:?}");
    drop(fut);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(log.get(), ["first started", "first finished", "second"]);
}

#[tokio::test(flavor = "current_thread")]
async fn dropped_by_select_like_a_timeout() {
    let log = Log::default();
    let (tx, rx) = oneshot::channel();
    let l = log.clone();
    let fut = Deferrer::enable(move |defer| register_then_hang(defer, l, tx));
    let timed_out = tokio::time::timeout(Duration::from_millis(1), fut).await;
    assert!(timed_out.is_err());
    rx.await.unwrap();
    assert!(log.contains("async 2"));
}

#[tokio::test]
async fn dropped_before_first_poll_runs_what_the_closure_registered() {
    let log = Log::default();
    let l = log.clone();
    let fut = Deferrer::enable(|defer| {
        defer.callback(l.callback("registered in the closure"));
        async {}
    });
    drop(fut);
    assert_eq!(log.get(), ["registered in the closure"]);
}

#[tokio::test]
async fn body_is_dropped_with_its_deferrer_current() {
    struct RegistersOnDrop(Log);

    impl Drop for RegistersOnDrop {
        fn drop(&mut self) {
            let registered = defer::callback(self.0.callback("registered while dropped"));
            assert!(registered.is_ok());
        }
    }

    let log = Log::default();
    let l = log.clone();
    let mut fut = task::spawn(defer::enable(async move {
        let _guard = RegistersOnDrop(l);
        std::future::pending::<()>().await;
    }));
    assert_pending!(fut.poll());
    drop(fut);
    assert_eq!(log.get(), ["registered while dropped"]);
}

#[test]
fn dropped_without_a_runtime_async_cleanups_are_dropped_unrun() {
    let log = Log::default();
    let dropped = Arc::new(AtomicUsize::new(0));
    let (l, d) = (log.clone(), dropped.clone());
    let mut fut = Box::pin(Deferrer::enable(move |defer| async move {
        defer.callback(l.callback("sync"));
        let guard = DropGuard(d);
        let l2 = l.clone();
        defer.push(async move {
            let _guard = guard;
            l2.push("async ran");
        });
        std::future::pending::<()>().await;
    }));
    // Polled by hand: no tokio runtime anywhere on this thread.
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    let ((), logs) = logged(|| drop(fut));
    assert_eq!(log.get(), ["sync"]);
    assert!(logs.contains("no tokio runtime"), "{logs}");
    assert!(logs.contains("count=1"), "{logs}");
    // The async cleanup could not run; it was dropped (and the loss logged), not leaked.
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn panicking_sync_cleanup_in_drop_is_resumed_after_the_others() {
    let log = Log::default();
    let l = log.clone();
    let mut fut = task::spawn(Deferrer::enable(|defer| async move {
        defer.callback(l.callback("sync 1"));
        defer.callback(|| panic!("drop boom"));
        defer.callback(l.callback("sync 2"));
        std::future::pending::<()>().await;
    }));
    assert_pending!(fut.poll());
    let payload = std::panic::catch_unwind(AssertUnwindSafe(|| drop(fut))).unwrap_err();
    assert_eq!(panic_message(&*payload), "drop boom");
    assert_eq!(log.get(), ["sync 2", "sync 1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_async_cleanup_after_drop_does_not_stop_the_others() {
    let log = Log::default();
    let (tx, rx) = oneshot::channel();
    let l = log.clone();
    let mut fut = task::spawn(Deferrer::enable(|defer| async move {
        let l2 = l.clone();
        defer.push(async move {
            l2.push("ran after the panic");
            let _ = tx.send(());
        });
        defer.push(async { panic!("detached boom") });
        std::future::pending::<()>().await;
    }));
    assert_pending!(fut.poll());
    drop(fut);
    rx.await.unwrap();
    assert_eq!(log.get(), ["ran after the panic"]);
}

#[tokio::test]
async fn registering_after_the_end_runs_at_once_or_on_the_runtime() {
    let log = Log::default();
    let leaked = Deferrer::enable(|defer| async move { defer }).await;
    leaked.callback(log.callback("late sync"));
    assert_eq!(log.get(), ["late sync"]);
    let (tx, rx) = oneshot::channel();
    let l = log.clone();
    leaked.push(async move {
        l.push("late async");
        let _ = tx.send(());
    });
    rx.await.unwrap();
    assert_eq!(log.get(), ["late sync", "late async"]);
    assert!(leaked.is_empty());
}

// ---- the future itself ----

#[tokio::test]
async fn enabled_future_is_send_when_the_body_is() {
    fn assert_send<T: Send>(t: T) -> T {
        t
    }
    let fut = assert_send(Deferrer::enable(|defer| async move {
        defer.push(async {});
        tokio::task::yield_now().await;
        defer.len()
    }));
    assert_eq!(tokio::spawn(fut).await.unwrap(), 1);
    let fut = assert_send(defer::enable(async { tokio::task::yield_now().await }));
    tokio::spawn(fut).await.unwrap();
}

#[tokio::test]
async fn debug_shows_state_and_pending_cleanups() {
    let (tx, rx) = oneshot::channel::<()>();
    let mut fut = task::spawn(defer::enable(async move {
        defer::callback(|| ()).unwrap();
        defer::callback(|| ()).unwrap();
        let _ = rx.await;
    }));
    assert_pending!(fut.poll());
    assert_eq!(
        format!("{fut:?}").split_once("Enabled").unwrap().1,
        " { state: \"running\", pending: 2, task_local: true } }"
    );
    tx.send(()).unwrap();
    assert_ready!(fut.poll());

    let debug = Deferrer::enable(|defer| async move {
        defer.callback(|| ());
        format!("{defer:?}")
    })
    .await;
    assert_eq!(debug, "Deferrer { pending: 1 }");
}

#[tokio::test]
#[should_panic = "polled after completion"]
async fn polling_after_completion_panics() {
    let mut fut = task::spawn(Deferrer::enable(|_| async {}));
    assert_ready!(fut.poll());
    let _ = fut.poll();
}

// ---- cancellation inside a quattro owner: the owner awaits the spawned cleanups ----

/// A flag a cleanup sets when it is done.
#[derive(Clone, Default)]
struct Flag(Arc<std::sync::atomic::AtomicBool>);

impl Flag {
    fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Runs the test on the paused current-thread clock (exact times) and on two worker threads.
macro_rules! both_runtimes {
    ($(#[$attr:meta])* async fn $name:ident() $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $(#[$attr])*
            #[tokio::test(start_paused = true)]
            async fn paused() $body

            $(#[$attr])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn multi_thread() $body
        }
    };
}

/// Whether the clock is paused (then times are exact).
fn clock_paused() -> bool {
    tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::CurrentThread
}

const CLEANUP: Duration = Duration::from_millis(100);

/// A body that registers a cleanup taking [`CLEANUP`] to close, then never ends.
fn hanging_body(closed: Flag) -> impl Future<Output = ()> + Send + 'static {
    Deferrer::enable(move |defer| async move {
        defer.push(async move {
            tokio::time::sleep(CLEANUP).await;
            closed.set();
        });
        std::future::pending::<()>().await;
    })
}

#[tokio::test(start_paused = true)]
async fn fail_after_returns_only_after_the_cleanups_of_what_it_cut() {
    let closed = Flag::default();
    let start = Instant::now();
    let d = Duration::from_secs(1);
    let err = quattro::fail_after(d, hanging_body(closed.clone()))
        .await
        .unwrap_err();
    assert!(err.is_deadline_reached());
    assert!(
        closed.is_set(),
        "fail_after returned before the connection was closed"
    );
    // Shielded from the deadline that dropped the body: the cleanup ran to its end.
    assert_eq!(start.elapsed(), d + CLEANUP);
}

#[tokio::test(start_paused = true)]
async fn cancelled_scope_returns_only_after_the_cleanups() {
    let closed = Flag::default();
    let start = Instant::now();
    let scope = quattro::CancelScope::new();
    let canceller = scope.clone();
    let c = closed.clone();
    let out = scope
        .move_on(async move {
            let body = hanging_body(c);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                canceller.cancel();
            });
            body.await
        })
        .await;
    assert_eq!(out, None);
    assert!(closed.is_set());
    assert_eq!(start.elapsed(), Duration::from_millis(5) + CLEANUP);
}

both_runtimes! {
    /// A group child aborted through its handle: the group returns only after the cleanups
    /// of the deferrer the child was running.
    async fn aborted_group_child_the_group_awaits_its_cleanups() {
        let closed = Flag::default();
        let c = closed.clone();
        let start = Instant::now();
        let (started_tx, started_rx) = oneshot::channel();
        let closed_at_return = quattro::TaskGroup::scope(|tg: quattro::TaskGroup<()>| async move {
            let handle = tg.spawn(Deferrer::enable(move |defer| async move {
                defer.push(async move {
                    tokio::time::sleep(CLEANUP).await;
                    c.set();
                });
                let _ = started_tx.send(());
                std::future::pending::<Result<(), ()>>().await
            }));
            started_rx.await.unwrap();
            handle.abort();
            assert!(handle.await.unwrap_err().is_cancelled());
            Ok(())
        })
        .await
        .map(|()| closed.is_set())
        .unwrap();
        assert!(closed_at_return, "the group returned before the cleanup ran");
        if clock_paused() {
            assert_eq!(start.elapsed(), CLEANUP);
        }
    }
}

both_runtimes! {
    /// A group body cancelled by the group (`tg.cancel()` from a child): the group returns
    /// only after the cleanups of the deferrer in the body.
    async fn cancelled_group_body_the_group_awaits_its_cleanups() {
        let closed = Flag::default();
        let c = closed.clone();
        let start = Instant::now();
        let err = quattro::TaskGroup::scope(|tg: quattro::TaskGroup<()>| async move {
            let canceller = tg.clone();
            tg.spawn(async move {
                tokio::task::yield_now().await;
                canceller.cancel();
                Ok(())
            });
            hanging_body(c).await;
            Ok(())
        })
        .await
        .unwrap_err();
        assert!(err.is_cancelled());
        assert!(closed.is_set(), "the group returned before the cleanup ran");
        if clock_paused() {
            assert_eq!(start.elapsed(), CLEANUP);
        }
    }
}

both_runtimes! {
    /// A task group dropped by a deadline hands the cleanups of its children on to the scope:
    /// `fail_after` returns only after them.
    async fn group_inside_fail_after_the_scope_awaits_the_childrens_cleanups() {
        let closed = Flag::default();
        let c = closed.clone();
        let start = Instant::now();
        let d = Duration::from_millis(50);
        let out = quattro::fail_after(
            d,
            quattro::TaskGroup::scope(|tg: quattro::TaskGroup<()>| async move {
                tg.spawn(async move {
                    hanging_body(c).await;
                    Ok(())
                });
                Ok(())
            }),
        )
        .await;
        assert!(out.unwrap_err().is_deadline_reached());
        assert!(closed.is_set(), "fail_after returned before the cleanup ran");
        if clock_paused() {
            assert_eq!(start.elapsed(), d + CLEANUP);
        }
    }
}

/// A deferrer whose async cleanup never ends (and checks the deadline it runs under).
fn never_closing(seen: Arc<Mutex<Option<Instant>>>) -> impl Future<Output = ()> + Send {
    Deferrer::enable(move |defer| async move {
        defer.push(async move {
            *seen.lock().unwrap() = quattro::current_effective_deadline();
            std::future::pending::<()>().await;
        });
        std::future::pending::<()>().await;
    })
}

#[tokio::test(start_paused = true)]
async fn hanging_cleanup_dropped_by_a_select_is_cut_at_the_owners_deadline() {
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    let start = Instant::now();
    let owner = Duration::from_secs(2);
    let (out, logs) = logged_async(quattro::move_on_after(owner, async move {
        // Dropped at once, with the scope's deadline still ahead.
        tokio::select! {
            biased;
            () = never_closing(s) => unreachable!(),
            () = std::future::ready(()) => "dropped",
        }
    }))
    .await;
    // The body ended at once; the scope then waited for the cleanup, cut at its deadline.
    assert_eq!(out, Some("dropped"));
    assert_eq!(start.elapsed(), owner);
    assert_eq!(*seen.lock().unwrap(), Some(start + owner));
    assert!(logs.contains("cut by the deadline"), "{logs}");
}

#[tokio::test(start_paused = true)]
async fn hanging_cleanup_after_a_deadline_is_cut_by_the_enclosing_deadline() {
    let seen = Arc::new(Mutex::new(None));
    let start = Instant::now();
    let outer = Duration::from_secs(2);
    let out = quattro::fail_after(
        outer,
        quattro::fail_after(Duration::from_secs(1), never_closing(seen.clone())),
    )
    .await;
    // The inner scope's deadline dropped the deferrer; its cleanup ran past it, until the
    // outer deadline. Which scope reports it depends on which timer is seen first.
    assert!(matches!(out, Err(_) | Ok(Err(_))), "{out:?}");
    assert_eq!(start.elapsed(), outer);
    assert_eq!(*seen.lock().unwrap(), Some(start + outer));
}

#[tokio::test(start_paused = true)]
async fn dropped_outside_any_owner_the_cleanups_run_detached() {
    let closed = Flag::default();
    let mut fut = task::spawn(hanging_body(closed.clone()));
    assert_pending!(fut.poll());
    drop(fut); // at top level: nobody to wait for the cleanup
    assert!(!closed.is_set());
    tokio::time::sleep(CLEANUP * 2).await;
    assert!(closed.is_set());

    // In a plain task, dropped by `tokio::time::timeout`: detached too, unbounded.
    let closed = Flag::default();
    let c = closed.clone();
    let start = Instant::now();
    tokio::spawn(async move {
        let timed_out = tokio::time::timeout(Duration::from_millis(10), hanging_body(c)).await;
        assert!(timed_out.is_err());
    })
    .await
    .unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(10));
    assert!(!closed.is_set());
    tokio::time::sleep(CLEANUP * 2).await;
    assert!(closed.is_set());
}

#[tokio::test(start_paused = true)]
async fn panicking_cleanup_inside_an_owner_does_not_hang_it_and_the_others_run() {
    let log = Log::default();
    let l = log.clone();
    let start = Instant::now();
    let out = quattro::move_on_after(
        Duration::from_secs(1),
        Deferrer::enable(|defer| async move {
            let l2 = l.clone();
            defer.push(async move {
                tokio::time::sleep(CLEANUP).await;
                l2.push("ran after the panic");
            });
            defer.push(async { panic!("detached boom") });
            std::future::pending::<()>().await;
        }),
    )
    .await;
    // The panic ends the cleanup task (the runtime reports it); the scope is not stuck.
    assert_eq!(out, None);
    assert_eq!(log.get(), ["ran after the panic"]);
    assert_eq!(start.elapsed(), Duration::from_secs(1) + CLEANUP);
}

#[tokio::test(start_paused = true)]
async fn task_local_form_cut_by_a_deadline_is_awaited_too() {
    let closed = Flag::default();
    let c = closed.clone();
    let start = Instant::now();
    let out = quattro::move_on_after(
        Duration::from_secs(1),
        defer::enable(async move {
            defer::push(async move {
                tokio::time::sleep(CLEANUP).await;
                c.set();
            })
            .unwrap();
            std::future::pending::<()>().await;
        }),
    )
    .await;
    assert_eq!(out, None);
    assert!(closed.is_set());
    assert_eq!(start.elapsed(), Duration::from_secs(1) + CLEANUP);
}
