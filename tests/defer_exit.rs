//! Tests for the `AsyncExitStack` half of `quattro::defer`: exits that see the body's
//! `Outcome`, `Entered` guards, `enter_with` / `enter_context`, `pop_all` and `aclose`.

use std::cell::RefCell;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use futures::FutureExt;
use quattro::defer::{self, AsyncExit, Deferrer, Entered, Outcome};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_test::{assert_pending, assert_ready, task};

/// An append-only record of what happened, shared with cleanups.
#[derive(Clone, Default)]
struct Log(Arc<LogInner>);

#[derive(Default)]
struct LogInner {
    entries: Mutex<Vec<String>>,
    pushed: Notify,
}

impl Log {
    fn push(&self, entry: impl Into<String>) {
        self.0.entries.lock().unwrap().push(entry.into());
        self.0.pushed.notify_waiters();
    }

    fn get(&self) -> Vec<String> {
        self.0.entries.lock().unwrap().clone()
    }

    /// Waits until `n` entries are in, for what runs in a detached task.
    async fn until_len(&self, n: usize) {
        let wait = async {
            loop {
                let pushed = self.0.pushed.notified();
                if self.get().len() >= n {
                    return;
                }
                pushed.await;
            }
        };
        // Only a safety net: it fires only when the test is broken.
        if tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .is_err()
        {
            panic!("log never reached {n} entries: {:?}", self.get());
        }
    }

    /// A sync exit that records `name` and the outcome it saw.
    fn exit(&self, name: &'static str) -> impl FnOnce(Outcome) + Send + 'static + use<> {
        let log = self.clone();
        move |outcome| log.push(format!("{name}: {outcome:?}"))
    }

    /// An async exit that yields once, then records `name` and the outcome it saw.
    fn async_exit(
        &self,
        name: &'static str,
    ) -> impl FnOnce(Outcome) -> BoxFuture + Send + 'static + use<> {
        let log = self.clone();
        move |outcome| {
            Box::pin(async move {
                tokio::task::yield_now().await;
                log.push(format!("{name}: {outcome:?}"));
            })
        }
    }

    /// A sync cleanup that records `entry`.
    fn callback_entry(&self, entry: &'static str) -> impl FnOnce() + Send + 'static + use<> {
        let log = self.clone();
        move || log.push(entry)
    }
}

type BoxFuture = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// A fake connection: used through `&mut`, closed by value, async.
struct Conn {
    name: &'static str,
    queries: usize,
    log: Log,
}

impl Conn {
    async fn open(name: &'static str, log: &Log) -> Conn {
        tokio::task::yield_now().await;
        log.push(format!("open {name}"));
        Conn {
            name,
            queries: 0,
            log: log.clone(),
        }
    }

    async fn query(&mut self, sql: &str) -> usize {
        tokio::task::yield_now().await;
        self.queries += 1;
        self.log.push(format!("{}: {sql}", self.name));
        sql.len()
    }

    async fn close(self, outcome: Outcome) {
        tokio::task::yield_now().await;
        self.log.push(format!(
            "close {} after {} queries: {outcome:?}",
            self.name, self.queries
        ));
    }
}

impl AsyncExit for Conn {
    async fn exit(self, outcome: Outcome) {
        self.close(outcome).await;
    }
}

/// A transaction that commits on success and rolls back otherwise.
struct Transaction {
    log: Log,
    rows: Vec<u32>,
}

impl AsyncExit for Transaction {
    async fn exit(self, outcome: Outcome) {
        tokio::task::yield_now().await;
        if outcome.is_ok() {
            self.log.push(format!("commit {:?}", self.rows));
        } else {
            self.log
                .push(format!("rollback {:?} ({outcome})", self.rows));
        }
    }
}

async fn insert(tx: &mut Transaction, row: u32) -> Result<(), String> {
    tokio::task::yield_now().await;
    if row == 13 {
        return Err(format!("row {row} refused"));
    }
    tx.rows.push(row);
    Ok(())
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

/// Sets the one global subscriber; every test calls it first. A callsite first hit while no
/// subscriber is set (in a test running in parallel) can keep a cached "never" interest if
/// it races with `set_global_default`, and then `logged` would miss its events.
fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(|| Capture)
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
}

/// Collects what `tracing` logs on this thread while `f` runs (one global subscriber, set
/// once, as in `tests/defer.rs`).
fn logged<R>(f: impl FnOnce() -> R) -> (R, String) {
    init_tracing();
    CAPTURE.set(Some(Vec::new()));
    let out = f();
    let captured = CAPTURE.take().unwrap();
    (out, String::from_utf8(captured).unwrap())
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("")
}

// ---- Outcome ----

#[test]
fn outcome_predicates_are_exclusive_and_print() {
    init_tracing();
    let all = [
        (Outcome::ok(), "Outcome::Ok", "returned"),
        (Outcome::err(), "Outcome::Err", "returned an error"),
        (Outcome::panicked(), "Outcome::Panicked", "panicked"),
        (Outcome::cancelled(), "Outcome::Cancelled", "cancelled"),
    ];
    for (outcome, debug, display) in all {
        let held = [
            outcome.is_ok(),
            outcome.is_err(),
            outcome.is_panic(),
            outcome.is_cancelled(),
        ];
        assert_eq!(held.iter().filter(|h| **h).count(), 1, "{outcome:?}");
        assert_eq!(format!("{outcome:?}"), debug);
        assert_eq!(outcome.to_string(), display);
    }
    assert_ne!(Outcome::ok(), Outcome::err());
    fn assert_send_sync_copy<T: Send + Sync + Copy + 'static>() {}
    assert_send_sync_copy::<Outcome>();
}

#[tokio::test]
async fn exits_see_ok_and_the_plain_form_counts_any_value_as_ok() {
    init_tracing();
    let log = Log::default();
    let l = log.clone();
    let out: Result<(), &str> = Deferrer::enable(|defer| async move {
        defer.callback_exit(l.exit("sync"));
        defer.push_exit(l.async_exit("async"));
        Err("an Err is just a value to `enable`")
    })
    .await;
    assert!(out.is_err());
    assert_eq!(log.get(), ["async: Outcome::Ok", "sync: Outcome::Ok"]);
}

#[tokio::test]
async fn try_enable_tells_err_from_ok() {
    init_tracing();
    for fail in [false, true] {
        let log = Log::default();
        let l = log.clone();
        let out: Result<u32, String> = Deferrer::try_enable(|defer| async move {
            let mut tx = defer.enter(Transaction {
                log: l.clone(),
                rows: Vec::new(),
            });
            defer.callback_exit(l.exit("audit"));
            insert(&mut tx, 1).await?;
            insert(&mut tx, if fail { 13 } else { 2 }).await?;
            Ok(2)
        })
        .await;
        if fail {
            assert_eq!(out, Err("row 13 refused".to_string()));
            assert_eq!(
                log.get(),
                ["audit: Outcome::Err", "rollback [1] (returned an error)"]
            );
        } else {
            assert_eq!(out, Ok(2));
            assert_eq!(log.get(), ["audit: Outcome::Ok", "commit [1, 2]"]);
        }
    }
}

#[tokio::test]
async fn exits_see_a_panicking_body() {
    init_tracing();
    let log = Log::default();
    let l = log.clone();
    let fut = Deferrer::try_enable(|defer| async move {
        defer.push_exit(l.async_exit("async"));
        let _tx = defer.enter(Transaction {
            log: l.clone(),
            rows: vec![7],
        });
        defer.callback_exit(l.exit("sync"));
        tokio::task::yield_now().await;
        if l.get().is_empty() {
            panic!("body boom");
        }
        Ok::<(), ()>(())
    });
    let payload = AssertUnwindSafe(fut).catch_unwind().await.unwrap_err();
    assert_eq!(panic_message(&*payload), "body boom");
    assert_eq!(
        log.get(),
        [
            "sync: Outcome::Panicked",
            "rollback [7] (panicked)",
            "async: Outcome::Panicked"
        ]
    );
}

#[tokio::test]
async fn exits_after_a_panicking_cleanup_see_a_panic() {
    init_tracing();
    let log = Log::default();
    let l = log.clone();
    let fut = Deferrer::try_enable(|defer| async move {
        defer.callback_exit(l.exit("registered first"));
        defer.push(async { panic!("cleanup boom") });
        defer.callback_exit(l.exit("registered last"));
        Ok::<u32, ()>(1)
    });
    let payload = AssertUnwindSafe(fut).catch_unwind().await.unwrap_err();
    // The caller gets the cleanup's panic, not `Ok(1)`: the exits after it are told so.
    assert_eq!(panic_message(&*payload), "cleanup boom");
    assert_eq!(
        log.get(),
        [
            "registered last: Outcome::Ok",
            "registered first: Outcome::Panicked"
        ]
    );
}

async fn exits_see_a_cancellation() {
    let log = Log::default();
    let (tx, rx) = oneshot::channel();
    let l = log.clone();
    let mut fut = task::spawn(Deferrer::try_enable(|defer| async move {
        defer.push_exit({
            let l = l.clone();
            move |outcome| async move {
                tokio::task::yield_now().await;
                l.push(format!("async: {outcome:?}"));
                let _ = tx.send(());
            }
        });
        let mut conn = defer.enter_with(Conn::open("db", &l).await, Conn::close);
        conn.query("select 1").await;
        defer.callback_exit(l.exit("sync"));
        std::future::pending::<Result<(), ()>>().await
    }));
    while log.get().len() < 2 {
        assert_pending!(fut.poll());
        tokio::task::yield_now().await;
    }
    drop(fut);
    // The sync exit ran in the drop; the connection (given back as the body was dropped) and
    // the async exit run on the runtime, in order (a worker may have started them already).
    assert_eq!(
        log.get()[..3],
        ["open db", "db: select 1", "sync: Outcome::Cancelled"]
    );
    rx.await.unwrap();
    assert_eq!(
        log.get(),
        [
            "open db",
            "db: select 1",
            "sync: Outcome::Cancelled",
            "close db after 1 queries: Outcome::Cancelled",
            "async: Outcome::Cancelled"
        ]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn exits_see_a_cancellation_current_thread() {
    init_tracing();
    exits_see_a_cancellation().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_see_a_cancellation_multi_thread() {
    init_tracing();
    exits_see_a_cancellation().await;
}

#[tokio::test(start_paused = true)]
async fn dropped_during_cleanup_the_remaining_exits_see_a_cancellation() {
    init_tracing();
    let log = Log::default();
    let l = log.clone();
    let fut = Deferrer::try_enable(|defer| async move {
        defer.push_exit(l.async_exit("after"));
        let l2 = l.clone();
        defer.push_exit(move |outcome| async move {
            l2.push(format!("slow: {outcome:?}"));
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        Ok::<(), ()>(())
    });
    // The body succeeded, but the caller gives up during cleanup and never gets `Ok`.
    let timed_out = tokio::time::timeout(Duration::from_secs(1), fut).await;
    assert!(timed_out.is_err());
    log.until_len(2).await;
    assert_eq!(
        log.get(),
        ["slow: Outcome::Ok", "after: Outcome::Cancelled"]
    );
}

#[tokio::test]
async fn push_exit_builds_its_cleanup_when_its_turn_comes() {
    init_tracing();
    let log = Log::default();
    let l = log.clone();
    Deferrer::enable(|defer| async move {
        let l2 = l.clone();
        defer.push_exit(move |_| {
            l2.push("built");
            async {}
        });
        l.push("body");
    })
    .await;
    assert_eq!(log.get(), ["body", "built"]);
}

#[tokio::test]
async fn late_exits_see_the_final_outcome() {
    init_tracing();
    let log = Log::default();
    let leaked: Result<Deferrer, Deferrer> =
        Deferrer::try_enable(|defer| async move { Err(defer) }).await;
    let leaked = leaked.unwrap_err();
    leaked.callback_exit(log.exit("late sync"));
    leaked.push_exit(log.async_exit("late async"));
    log.until_len(2).await;
    assert_eq!(
        log.get(),
        ["late sync: Outcome::Err", "late async: Outcome::Err"]
    );
}

#[tokio::test]
async fn task_local_form_try_enable_and_current() {
    init_tracing();
    async fn save(log: Log, fail: bool) -> Result<u32, &'static str> {
        let defer = defer::current().map_err(|_| "not enabled")?;
        defer.callback_exit(log.exit("exit"));
        let conn = defer::enter(Conn::open("db", &log).await).unwrap();
        assert_eq!(conn.name, "db");
        if fail { Err("failed") } else { Ok(1) }
    }

    let log = Log::default();
    assert_eq!(defer::try_enable(save(log.clone(), false)).await, Ok(1));
    assert_eq!(
        defer::try_enable(save(log.clone(), true)).await,
        Err("failed")
    );
    assert_eq!(defer::enable(save(log.clone(), true)).await, Err("failed"));
    assert_eq!(save(log.clone(), true).await, Err("not enabled"));
    assert_eq!(
        log.get(),
        [
            "open db",
            "close db after 0 queries: Outcome::Ok",
            "exit: Outcome::Ok",
            "open db",
            "close db after 0 queries: Outcome::Err",
            "exit: Outcome::Err",
            // The plain form counts any value as a return.
            "open db",
            "close db after 0 queries: Outcome::Ok",
            "exit: Outcome::Ok",
        ]
    );
}

// ---- Entered guards: use it, then close it ----

#[tokio::test]
async fn two_connections_used_then_closed_without_arc() {
    init_tracing();
    let log = Log::default();
    let l = log.clone();
    let n = Deferrer::enable(|defer| async move {
        // No `Arc`, no `try_unwrap`: the body borrows through the guards, the exits get the
        // connections back by value.
        let mut users = defer.enter(Conn::open("users", &l).await);
        let mut orders = defer.enter_with(Conn::open("orders", &l).await, Conn::close);
        defer.callback(move || l.push("metrics"));
        users.query("select users").await
            + orders.query("select orders").await
            + users.query("select more").await
    })
    .await;
    assert_eq!(n, 36);
    assert_eq!(
        log.get(),
        [
            "open users",
            "open orders",
            "users: select users",
            "orders: select orders",
            "users: select more",
            "metrics",
            "close orders after 1 queries: Outcome::Ok",
            "close users after 2 queries: Outcome::Ok",
        ]
    );
}

#[tokio::test]
async fn guard_dropped_early_is_still_closed_in_lifo_order() {
    init_tracing();
    let log = Log::default();
    let l = log.clone();
    Deferrer::enable(|defer| async move {
        defer.callback(l.callback_entry("registered before"));
        {
            let mut conn = defer.enter(Conn::open("db", &l).await);
            conn.query("q").await;
        } // given back here, not closed yet
        l.push("guard dropped");
        defer.callback(l.callback_entry("registered after"));
    })
    .await;
    assert_eq!(
        log.get(),
        [
            "open db",
            "db: q",
            "guard dropped",
            "registered after",
            "close db after 1 queries: Outcome::Ok",
            "registered before",
        ]
    );
}

#[tokio::test]
async fn enter_context_runs_a_sync_exit_in_order() {
    init_tracing();
    let log = Log::default();
    let l = log.clone();
    let out: Result<(), &str> = Deferrer::try_enable(|defer| async move {
        let l2 = l.clone();
        let mut buf = defer.enter_context(Vec::<u8>::new(), move |buf, outcome| {
            l2.push(format!("flush {} bytes: {outcome:?}", buf.len()));
        });
        defer.push_exit(l.async_exit("async"));
        buf.extend_from_slice(b"abc");
        assert_eq!(buf.len(), 3); // Deref
        Err("failed")
    })
    .await;
    assert_eq!(out, Err("failed"));
    assert_eq!(
        log.get(),
        ["async: Outcome::Err", "flush 3 bytes: Outcome::Err"]
    );
}

#[tokio::test]
async fn into_inner_keeps_the_value_and_drops_its_exit() {
    init_tracing();
    let log = Log::default();
    let l = log.clone();
    let conn = Deferrer::enable(|defer| async move {
        let mut conn = defer.enter(Conn::open("kept", &l).await);
        conn.query("q").await;
        assert_eq!(defer.len(), 1);
        Entered::into_inner(conn)
    })
    .await;
    tokio::task::yield_now().await;
    assert_eq!(conn.queries, 1);
    assert_eq!(log.get(), ["open kept", "kept: q"]);
}

/// Returns the guard out of the body: the body's other cleanups do not wait for it, a
/// warning names the value, and it is closed when the caller drops the guard.
#[test]
fn guard_returned_from_the_body_is_closed_when_dropped() {
    init_tracing();
    let rt = current_thread_runtime();
    let log = Log::default();
    let l = log.clone();
    let (guard, logs) = logged(|| {
        rt.block_on(Deferrer::try_enable(|defer| async move {
            let mut conn = defer.enter(Conn::open("escaped", &l).await);
            defer.callback(l.callback_entry("other cleanup"));
            conn.query("q").await;
            Ok::<_, ()>(conn)
        }))
    });
    let mut guard = guard.unwrap();
    assert!(logs.contains("still held by its `Entered` guard"), "{logs}");
    assert!(logs.contains("Conn"), "{logs}");
    assert!(format!("{:?}", DebugConn(&guard)).contains("escaped"));
    assert_eq!(log.get(), ["open escaped", "escaped: q", "other cleanup"]);
    rt.block_on(async {
        guard.query("after the body").await;
        drop(guard);
        log.until_len(5).await;
    });
    assert_eq!(
        log.get(),
        [
            "open escaped",
            "escaped: q",
            "other cleanup",
            "escaped: after the body",
            "close escaped after 2 queries: Outcome::Ok"
        ]
    );
}

/// `Conn` has no `Debug`; shows its name.
struct DebugConn<'a>(&'a Conn);

impl std::fmt::Debug for DebugConn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.name)
    }
}

#[tokio::test]
async fn guard_debug_shows_the_value_and_whether_it_closes_on_drop() {
    init_tracing();
    let guard = Deferrer::enable(|defer| async move {
        let guard = defer.enter_context(5_u32, |_, _| ());
        assert_eq!(
            format!("{guard:?}"),
            "Entered { value: 5, closes_on_drop: false }"
        );
        guard
    })
    .await;
    assert_eq!(
        format!("{guard:?}"),
        "Entered { value: 5, closes_on_drop: true }"
    );
}

async fn guard_sent_to_a_task_is_closed_when_the_task_drops_it() {
    let log = Log::default();
    let (release, released) = oneshot::channel::<()>();
    let l = log.clone();
    let task = Deferrer::try_enable(|defer| async move {
        let conn = defer.enter(Conn::open("shared", &l).await);
        defer.callback(l.callback_entry("body cleanup"));
        // The guard outlives the body: the task still uses the connection.
        let task = tokio::spawn(async move {
            let mut conn = conn;
            released.await.unwrap();
            conn.query("from the task").await;
        });
        Ok::<_, ()>(task)
    })
    .await
    .unwrap();
    // The body's cleanups ran without waiting for the task.
    assert_eq!(log.get(), ["open shared", "body cleanup"]);
    release.send(()).unwrap();
    task.await.unwrap();
    log.until_len(4).await;
    assert_eq!(
        log.get(),
        [
            "open shared",
            "body cleanup",
            "shared: from the task",
            "close shared after 1 queries: Outcome::Ok"
        ]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn guard_sent_to_a_task_current_thread() {
    init_tracing();
    guard_sent_to_a_task_is_closed_when_the_task_drops_it().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_sent_to_a_task_multi_thread() {
    init_tracing();
    guard_sent_to_a_task_is_closed_when_the_task_drops_it().await;
}

/// The guard is dropped in another task at about the time the stack reaches it: whoever
/// comes second closes the value, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The body hands its task out on purpose, to await it after the body's cleanups ran.
#[allow(clippy::async_yields_async)]
async fn guard_dropped_while_the_stack_reaches_it_closes_once() {
    init_tracing();
    let (closed, mut closes) = mpsc::unbounded_channel::<usize>();
    for i in 0..200 {
        let closed = closed.clone();
        let (go, started) = oneshot::channel::<()>();
        let task = Deferrer::enable(|defer| async move {
            let guard = defer.enter_with(i, move |i, _| async move {
                closed.send(i).unwrap();
            });
            let task = tokio::spawn(async move {
                let _ = started.await;
                drop(guard);
            });
            let _ = go.send(());
            task
        })
        .await;
        task.await.unwrap();
        assert_eq!(closes.recv().await, Some(i));
    }
    drop(closed);
    // Every value was closed once: nothing more comes.
    assert_eq!(closes.recv().await, None);
}

/// A forgotten guard keeps its value forever (that is what `forget` does): the stack does not
/// hang on it, runs the other cleanups, and says so in a warning.
#[test]
fn forgotten_guard_does_not_hang_the_stack() {
    init_tracing();
    let rt = current_thread_runtime();
    let log = Log::default();
    let l = log.clone();
    let ((), logs) = logged(|| {
        rt.block_on(Deferrer::enable(|defer| async move {
            defer.callback(l.callback_entry("first registered"));
            let conn = defer.enter(Conn::open("forgotten", &l).await);
            std::mem::forget(conn);
            defer.callback(l.callback_entry("last registered"));
        }))
    });
    assert!(logs.contains("still held by its `Entered` guard"), "{logs}");
    rt.block_on(tokio::task::yield_now());
    assert_eq!(
        log.get(),
        ["open forgotten", "last registered", "first registered"]
    );
}

#[test]
fn guard_dropped_after_its_turn_without_a_runtime_logs_the_lost_exit() {
    init_tracing();
    let rt = current_thread_runtime();
    let log = Log::default();
    let l = log.clone();
    let guard = rt.block_on(Deferrer::enable(|defer| async move {
        defer.enter(Conn::open("orphan", &l).await)
    }));
    drop(rt);
    // No runtime any more to run the async close: dropped unrun, and logged.
    let ((), logs) = logged(|| drop(guard));
    assert!(logs.contains("no tokio runtime"), "{logs}");
    assert_eq!(log.get(), ["open orphan"]);
}

#[test]
fn guard_sync_exit_after_its_turn_runs_in_the_drop() {
    init_tracing();
    let rt = current_thread_runtime();
    let log = Log::default();
    let l = log.clone();
    let guard = rt.block_on(Deferrer::enable(|defer| async move {
        defer.enter_context(3_u32, move |n, outcome| {
            l.push(format!("close {n}: {outcome:?}"));
        })
    }));
    drop(rt);
    assert_eq!(*guard, 3);
    assert!(log.get().is_empty());
    drop(guard); // no runtime needed for a sync exit
    assert_eq!(log.get(), ["close 3: Outcome::Ok"]);
}

#[tokio::test]
async fn guard_is_send_and_sync_when_the_value_is() {
    init_tracing();
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    fn assert_send<T: Send>(_: &T) {}
    let log = Log::default();
    let l = log.clone();
    Deferrer::enable(|defer| async move {
        let conn = defer.enter(Conn::open("db", &l).await);
        assert_send_sync(&conn);
        assert_send(&defer.aclose());
    })
    .await;
    assert_eq!(log.get().len(), 2);
}

// ---- pop_all ----

/// Opens two connections, or none: if the second fails, the first is closed; on success
/// the connections and their closing are handed on.
async fn open_pair(
    log: &Log,
    fail: bool,
) -> Result<(Entered<Conn>, Entered<Conn>, Deferrer), String> {
    let l = log.clone();
    Deferrer::try_enable(|defer| async move {
        let a = defer.enter(Conn::open("a", &l).await);
        if fail {
            return Err("b refused".to_string());
        }
        let b = defer.enter(Conn::open("b", &l).await);
        Ok((a, b, defer.pop_all()))
    })
    .await
}

#[tokio::test]
async fn pop_all_hands_the_cleanups_on() {
    init_tracing();
    let log = Log::default();
    assert!(open_pair(&log, true).await.is_err());
    assert_eq!(
        log.get(),
        ["open a", "close a after 0 queries: Outcome::Err"]
    );

    let log = Log::default();
    let (mut a, mut b, closing) = open_pair(&log, false).await.unwrap();
    // Handed on, not closed.
    assert_eq!(log.get(), ["open a", "open b"]);
    assert_eq!(closing.len(), 2);
    a.query("qa").await;
    b.query("qb").await;
    drop((a, b));
    closing.aclose().await;
    assert!(closing.is_empty());
    assert_eq!(
        log.get(),
        [
            "open a",
            "open b",
            "a: qa",
            "b: qb",
            "close b after 1 queries: Outcome::Ok",
            "close a after 1 queries: Outcome::Ok"
        ]
    );
}

#[tokio::test]
async fn popped_cleanups_entered_into_another_body_see_its_outcome() {
    init_tracing();
    let log = Log::default();
    let (a, b, closing) = open_pair(&log, false).await.unwrap();
    let l = log.clone();
    let out: Result<(), &str> = Deferrer::try_enable(|defer| async move {
        let _closing = defer.enter(closing);
        defer.callback_exit(l.exit("outer"));
        drop((a, b));
        Err("outer failed")
    })
    .await;
    assert_eq!(out, Err("outer failed"));
    assert_eq!(
        log.get(),
        [
            "open a",
            "open b",
            "outer: Outcome::Err",
            "close b after 0 queries: Outcome::Err",
            "close a after 0 queries: Outcome::Err"
        ]
    );
}

async fn popped_deferrer_dropped_unclosed_runs_its_cleanups() {
    let log = Log::default();
    let l = log.clone();
    let popped = Deferrer::enable(|defer| async move {
        defer.push_exit(l.async_exit("async"));
        defer.callback_exit(l.exit("sync"));
        defer.pop_all()
    })
    .await;
    // The body's own stack was emptied: nothing ran at its end.
    assert!(log.get().is_empty());
    let clone = popped.clone();
    drop(popped);
    assert!(log.get().is_empty(), "a handle is left");
    drop(clone);
    // The last handle is gone: the sync exit ran in the drop, the async one is spawned (a
    // worker may have run it already).
    assert_eq!(log.get()[..1], ["sync: Outcome::Cancelled"]);
    log.until_len(2).await;
    assert_eq!(
        log.get(),
        ["sync: Outcome::Cancelled", "async: Outcome::Cancelled"]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn popped_deferrer_dropped_unclosed_current_thread() {
    init_tracing();
    popped_deferrer_dropped_unclosed_runs_its_cleanups().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn popped_deferrer_dropped_unclosed_multi_thread() {
    init_tracing();
    popped_deferrer_dropped_unclosed_runs_its_cleanups().await;
}

#[tokio::test]
async fn new_deferrer_is_standalone() {
    init_tracing();
    let log = Log::default();
    let cleanups = Deferrer::default();
    cleanups.callback_exit(log.exit("one"));
    assert_eq!(format!("{cleanups:?}"), "Deferrer { pending: 1 }");
    cleanups.aclose().await;
    cleanups.callback_exit(log.exit("two"));
    cleanups.aclose().await;
    assert_eq!(log.get(), ["one: Outcome::Ok", "two: Outcome::Ok"]);
    assert!(Deferrer::new().pop_all().is_empty());
}

// ---- aclose ----

#[tokio::test]
async fn aclose_runs_the_stack_now_and_leaves_it_usable() {
    init_tracing();
    let log = Log::default();
    let l = log.clone();
    let out: Result<(), &str> = Deferrer::try_enable(|defer| async move {
        defer.callback_exit(l.exit("first"));
        let mut conn = defer.enter(Conn::open("db", &l).await);
        conn.query("q").await;
        drop(conn);
        defer.aclose().await;
        assert!(defer.is_empty());
        l.push("body goes on");
        defer.callback_exit(l.exit("after aclose"));
        Err("later failure")
    })
    .await;
    assert_eq!(out, Err("later failure"));
    assert_eq!(
        log.get(),
        [
            "open db",
            "db: q",
            "close db after 1 queries: Outcome::Ok",
            "first: Outcome::Ok",
            "body goes on",
            "after aclose: Outcome::Err"
        ]
    );
}

#[tokio::test]
async fn aclose_runs_cleanups_registered_while_it_runs_next() {
    init_tracing();
    let log = Log::default();
    let l = log.clone();
    Deferrer::enable(|defer| async move {
        defer.callback(l.callback_entry("first registered"));
        let (d, l2) = (defer.clone(), l.clone());
        defer.push(async move {
            l2.push("outer cleanup");
            d.callback(l2.callback_entry("registered during aclose"));
        });
        defer.aclose().await;
        l.push("after aclose");
    })
    .await;
    assert_eq!(
        log.get(),
        [
            "outer cleanup",
            "registered during aclose",
            "first registered",
            "after aclose"
        ]
    );
}

#[tokio::test]
async fn aclose_resumes_the_first_panic_after_the_others() {
    init_tracing();
    let log = Log::default();
    let l = log.clone();
    Deferrer::enable(|defer| async move {
        defer.callback_exit(l.exit("first registered"));
        defer.push(async { panic!("aclose boom") });
        defer.callback(|| panic!("second boom"));
        let payload = AssertUnwindSafe(defer.aclose())
            .catch_unwind()
            .await
            .unwrap_err();
        assert_eq!(panic_message(&*payload), "second boom");
        l.push("caught");
    })
    .await;
    assert_eq!(log.get(), ["first registered: Outcome::Panicked", "caught"]);
}

async fn aclose_cancelled_midway_leaves_the_rest_in_order() {
    let log = Log::default();
    let l = log.clone();
    Deferrer::enable(|defer| async move {
        let (finish, finished) = oneshot::channel::<()>();
        defer.push_exit(l.async_exit("first registered"));
        let l2 = l.clone();
        defer.push(async move {
            l2.push("slow started");
            finished.await.unwrap();
            l2.push("slow finished");
        });
        defer.callback(l.callback_entry("last registered"));
        let mut close = task::spawn(defer.aclose());
        assert_pending!(close.poll());
        assert!(format!("{close:?}").contains("pending: 2"), "{close:?}");
        drop(close);
        // The part-run cleanup is back on top, and the one not started under it.
        assert_eq!(defer.len(), 2);
        l.push("aclose dropped");
        finish.send(()).unwrap();
    })
    .await;
    assert_eq!(
        log.get(),
        [
            "last registered",
            "slow started",
            "aclose dropped",
            "slow finished",
            "first registered: Outcome::Ok"
        ]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn aclose_cancelled_midway_current_thread() {
    init_tracing();
    aclose_cancelled_midway_leaves_the_rest_in_order().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aclose_cancelled_midway_multi_thread() {
    init_tracing();
    aclose_cancelled_midway_leaves_the_rest_in_order().await;
}

/// Two tasks close the same stack at once: every cleanup runs exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_acloses_run_each_cleanup_once() {
    init_tracing();
    let runs = Arc::new(AtomicUsize::new(0));
    let defer = Deferrer::new();
    for _ in 0..200 {
        let runs = runs.clone();
        defer.push(async move {
            tokio::task::yield_now().await;
            runs.fetch_add(1, Ordering::SeqCst);
        });
    }
    let (a, b) = (defer.clone(), defer.clone());
    let (ra, rb) = tokio::join!(
        tokio::spawn(async move { a.aclose().await }),
        tokio::spawn(async move { b.aclose().await })
    );
    ra.unwrap();
    rb.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 200);
    assert!(defer.is_empty());
}

#[tokio::test]
#[should_panic = "polled after completion"]
async fn aclose_polled_after_completion_panics() {
    init_tracing();
    let defer = Deferrer::new();
    let mut close = task::spawn(defer.aclose());
    assert_ready!(close.poll());
    let _ = close.poll();
}
