//! The failure policy of task groups: `Builder::isolate_failures` (Erlang's `one_for_one`)
//! beside the default (a failure cancels the group). Helpers: tests/task_group_util/mod.rs.

#[path = "task_group_util/mod.rs"]
mod util;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quattro::{Failure, GroupError, TaskGroup, move_on_after};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio::time::sleep;
use util::{Counter, NEVER, both_runtimes, ms};

/// What a failure handler saw: `(task name, is_panic, text)`, in order.
type Seen = Arc<Mutex<Vec<(String, bool, String)>>>;

/// A handler that records every failure and handles it.
fn recorder<E: std::fmt::Display>(
    seen: &Seen,
) -> impl Fn(Failure<E>) -> Result<(), Failure<E>> + Send + Sync + 'static {
    let seen = seen.clone();
    move |failure: Failure<E>| {
        let name = failure.task_name().unwrap_or("").to_string();
        seen.lock()
            .unwrap()
            .push((name, failure.is_panic(), failure.to_string()));
        Ok(())
    }
}

fn seen(seen: &Seen) -> Vec<(String, bool, String)> {
    seen.lock().unwrap().clone()
}

/// A future that panics when polled, typed as a task of error type `E`.
async fn panics<E>(message: &'static str) -> Result<(), E> {
    if !message.is_empty() {
        panic!("{message}");
    }
    Ok(())
}

both_runtimes! {
    /// An `Err` and a panic go to the handler; siblings and the body run on and complete.
    async fn isolated_failures_leave_siblings_and_body_running() {
        let seen_failures = Seen::default();
        let out = TaskGroup::builder()
            .isolate_failures(recorder::<String>(&seen_failures))
            .scope(|tg| async move {
                let workers: Vec<_> = (0..5)
                    .map(|i| {
                        tg.spawn(async move {
                            sleep(ms(50)).await;
                            Ok(i)
                        })
                    })
                    .collect();
                let bad = tg.task("bad").spawn(async { Err::<u32, _>(String::from("no")) });
                let bug = tg.task("bug").spawn(panics("oops"));
                // The body sees what a handle of a failed task gives, and goes on.
                let bad = bad.await.unwrap_err();
                assert!(bad.is_failed());
                assert_eq!(bad.to_string(), "task `bad` failed: no");
                assert!(bug.await.unwrap_err().is_panic());
                sleep(ms(10)).await; // still running after both failures
                let mut sum = 0;
                for worker in workers {
                    sum += worker.await.unwrap();
                }
                Ok(sum)
            })
            .await;
        assert_eq!(out.unwrap(), 10);
        let mut seen = seen(&seen_failures);
        seen.sort();
        assert_eq!(
            seen,
            [
                ("bad".into(), false, "task `bad`: no".into()),
                ("bug".into(), true, "task `bug` panicked: oops".into()),
            ]
        );
    }
}

both_runtimes! {
    /// The handler runs in the task that failed, before the task's handle resolves.
    async fn handler_runs_in_the_failing_task() {
        let ran_in = Arc::new(Mutex::new(None));
        let record = ran_in.clone();
        let out = TaskGroup::builder()
            .isolate_failures(move |failure: Failure<&'static str>| {
                *record.lock().unwrap() = Some((tokio::task::try_id(), failure.task_id()));
                Ok(())
            })
            .scope(|tg| {
                let ran_in = ran_in.clone();
                async move {
                    let handle = tg.spawn(async { Err::<(), _>("no") });
                    let id = handle.id();
                    assert!(handle.await.unwrap_err().is_failed());
                    // Already handled when the handle resolved.
                    let (ran, failed) = ran_in.lock().unwrap().expect("handled");
                    assert_eq!(ran, id);
                    assert_eq!(failed, id);
                    Ok(())
                }
            })
            .await;
        out.unwrap();
    }
}

both_runtimes! {
    /// Handled failures are not kept: after 1000 of them, an escalated one is the only
    /// failure in the group's error.
    async fn handled_failures_are_not_kept() {
        let handled = Counter::new();
        let counter = handled.clone();
        let err = TaskGroup::builder()
            .concurrency_limit(8)
            .isolate_failures(move |failure: Failure<u32>| {
                if failure.error() == Some(&1000) {
                    return Err(failure);
                }
                counter.incr();
                Ok(())
            })
            .scope(|tg| async move {
                for i in 0..1000 {
                    tg.spawn(async move { Err::<(), _>(i) });
                }
                while !tg.is_empty() {
                    tokio::task::yield_now().await;
                }
                tg.task("last").spawn(async { Err::<(), _>(1000) });
                std::future::pending::<()>().await;
                Ok(())
            })
            .await
            .unwrap_err();
        assert_eq!(handled.get(), 1000);
        assert_eq!(err.failures().len(), 1);
        assert_eq!(err.failures()[0].task_name(), Some("last"));
        assert!(!err.is_cancelled());
    }
}

both_runtimes! {
    /// Under a limit, a failed task frees its slot and the queue goes on: every queued task
    /// runs, and never more than the limit at once.
    async fn failed_tasks_free_their_slots_and_the_queue_goes_on() {
        let ran = Counter::new();
        let seen_failures = Seen::default();
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (r, m) = (running.clone(), most.clone());
        let out = TaskGroup::builder()
            .concurrency_limit(3)
            .isolate_failures(recorder::<String>(&seen_failures))
            .scope(|tg| async move {
                let handles: Vec<_> = (0..30)
                    .map(|i| {
                        let (ran, running, most) = (ran.clone(), r.clone(), m.clone());
                        tg.task(format!("t{i}")).spawn(async move {
                            let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                            most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                            sleep(ms(10)).await;
                            running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                            ran.incr();
                            match i % 3 {
                                0 => Err(format!("e{i}")),
                                1 => panic!("p{i}"),
                                _ => Ok(i),
                            }
                        })
                    })
                    .collect();
                assert_eq!(tg.len(), 3); // the rest wait in the queue
                let mut ok = 0;
                for handle in handles {
                    ok += usize::from(handle.await.is_ok());
                }
                Ok((ok, ran.get()))
            })
            .await;
        assert_eq!(out.unwrap(), (10, 30));
        assert!(most.load(std::sync::atomic::Ordering::SeqCst) <= 3);
        assert_eq!(seen(&seen_failures).len(), 20);
    }
}

both_runtimes! {
    /// Escalating (`Err(failure)`) fails the group as under the default policy: siblings
    /// and the body are dropped, the queue is dropped unspawned, and the error holds it.
    async fn escalated_failure_cancels_the_group() {
        let dropped = Counter::new();
        let started = Counter::new();
        let d = dropped.clone();
        let s = started.clone();
        let err = TaskGroup::builder()
            .concurrency_limit(4)
            .isolate_failures(|failure: Failure<&'static str>| {
                if failure.error() == Some(&"fatal") {
                    Err(failure)
                } else {
                    Ok(())
                }
            })
            .scope(|tg| async move {
                for _ in 0..3 {
                    let guard = d.guard();
                    tg.spawn(async move {
                        let _guard = guard;
                        sleep(NEVER).await;
                        Ok(())
                    });
                }
                tg.task("minor").spawn(async { Err::<(), _>("minor") }).await.ok();
                // The handled failure freed its slot; this one takes it.
                tg.task("fatal").spawn(async {
                    sleep(ms(10)).await;
                    Err::<(), _>("fatal")
                });
                for _ in 0..5 {
                    let s = s.clone();
                    tg.spawn(async move {
                        s.incr(); // queued behind the full limit: never starts
                        Ok(())
                    });
                }
                let _body = d.guard();
                std::future::pending::<()>().await;
                Ok(())
            })
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "task group failed: task `fatal`: fatal");
        assert_eq!(dropped.get(), 4); // three siblings and the body
        assert_eq!(started.get(), 0);
    }
}

both_runtimes! {
    /// A panic inside the handler fails the group as a panic of the task it was handling;
    /// with `capture_panics` it is returned in the `GroupError`.
    async fn handler_panic_fails_the_group_captured() {
        let err = TaskGroup::builder()
            .capture_panics()
            .isolate_failures(|failure: Failure<String>| {
                panic!("handler broke on {}", failure.task_name().unwrap_or("?"));
            })
            .scope(|tg| async move {
                let sibling = tg.spawn(async {
                    sleep(NEVER).await;
                    Ok(())
                });
                tg.task("conn").spawn(async { Err::<(), _>(String::from("reset")) });
                let _ = sibling.await; // cancelled: the group fails
                std::future::pending::<()>().await;
                Ok(())
            })
            .await
            .unwrap_err();
        assert_eq!(err.failures().len(), 1);
        assert!(err.failures()[0].is_panic());
        assert_eq!(
            err.to_string(),
            "task group failed: task `conn` panicked: handler broke on conn"
        );
    }
}

both_runtimes! {
    /// Without `capture_panics`, the handler's panic is resumed in the task awaiting the
    /// group, after every task was dropped.
    async fn handler_panic_fails_the_group_resumed() {
        let dropped = Counter::new();
        let d = dropped.clone();
        let group = TaskGroup::builder()
            .isolate_failures(|_: Failure<String>| -> Result<(), Failure<String>> {
                panic!("handler broke")
            })
            .scope(|tg| async move {
                let guard = d.guard();
                tg.spawn(async move {
                    let _guard = guard;
                    sleep(NEVER).await;
                    Ok(())
                });
                tg.spawn(async { Err::<(), _>(String::from("reset")) });
                std::future::pending::<()>().await;
                Ok(())
            });
        let joined = tokio::spawn(group).await.unwrap_err();
        assert!(joined.is_panic());
        let payload = joined.into_panic();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"handler broke"));
        assert_eq!(dropped.get(), 1);
    }
}

both_runtimes! {
    /// The body is the group's owner: its own `Err` ends the group under isolation too.
    async fn body_error_still_ends_an_isolating_group() {
        let seen_failures = Seen::default();
        let dropped = Counter::new();
        let d = dropped.clone();
        let err = TaskGroup::builder()
            .isolate_failures(recorder::<String>(&seen_failures))
            .scope(|tg| async move {
                let guard = d.guard();
                tg.spawn(async move {
                    let _guard = guard;
                    sleep(NEVER).await;
                    Ok(())
                });
                tg.task("t").spawn(async { Err::<(), _>(String::from("handled")) }).await.ok();
                Err::<(), _>(String::from("bad config"))
            })
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "task group failed: body: bad config");
        assert_eq!(dropped.get(), 1);
        assert_eq!(seen(&seen_failures).len(), 1);
    }
}

both_runtimes! {
    /// The body's panic is resumed as under the default policy (not handed to the handler).
    async fn body_panic_is_resumed_under_isolation() {
        let seen_failures = Seen::default();
        let group = TaskGroup::builder()
            .isolate_failures(recorder::<String>(&seen_failures))
            .scope(|_tg| async move {
                panics::<String>("body bug").await?;
                Ok(())
            });
        let joined = tokio::spawn(group).await.unwrap_err();
        assert!(joined.is_panic());
        assert!(seen(&seen_failures).is_empty());
    }
}

both_runtimes! {
    /// Background tasks hand their failures to the handler too, and the group runs on.
    async fn background_failures_are_isolated() {
        let seen_failures = Seen::default();
        let out = TaskGroup::builder()
            .isolate_failures(recorder::<String>(&seen_failures))
            .scope(|tg| async move {
                tg.task("heartbeat")
                    .spawn_background(async { Err(String::from("lost the peer")) });
                sleep(ms(20)).await;
                Ok("done")
            })
            .await;
        assert_eq!(out.unwrap(), "done");
        assert_eq!(
            seen(&seen_failures),
            [("heartbeat".into(), false, "task `heartbeat`: lost the peer".into())]
        );
    }
}

/// A future that is ready at once and panics when dropped afterwards.
struct ReadyThenPanicOnDrop;

impl std::future::Future for ReadyThenPanicOnDrop {
    type Output = Result<u32, String>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::task::Poll::Ready(Ok(7))
    }
}

impl Drop for ReadyThenPanicOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("destructor bug");
        }
    }
}

both_runtimes! {
    /// A panic in a finished task's destructor is a failure of that task: isolated too.
    async fn destructor_panic_is_isolated() {
        let seen_failures = Seen::default();
        let out = TaskGroup::builder()
            .isolate_failures(recorder::<String>(&seen_failures))
            .scope(|tg| async move {
                let handle = tg.task("leaky").spawn(ReadyThenPanicOnDrop);
                Ok(handle.await.unwrap())
            })
            .await;
        assert_eq!(out.unwrap(), 7);
        assert_eq!(
            seen(&seen_failures),
            [("leaky".into(), true, "task `leaky` panicked: destructor bug".into())]
        );
    }
}

both_runtimes! {
    /// `cancel` works as before: every task is dropped, and the error says cancelled.
    async fn cancel_is_unchanged_under_isolation() {
        let dropped = Counter::new();
        let d = dropped.clone();
        let err = TaskGroup::builder()
            .isolate_failures(|_: Failure<String>| Ok(()))
            .scope(|tg| async move {
                for _ in 0..3 {
                    let guard = d.guard();
                    tg.spawn(async move {
                        let _guard = guard;
                        sleep(NEVER).await;
                        Ok(())
                    });
                }
                tg.cancel();
                std::future::pending::<()>().await;
                Ok(())
            })
            .await
            .unwrap_err();
        assert!(err.is_cancelled());
        assert!(err.failures().is_empty());
        assert_eq!(dropped.get(), 3);
    }
}

both_runtimes! {
    /// A graceful shutdown works as before: a task failing during the grace goes to the
    /// handler, the others finish, and the group completes normally.
    async fn shutdown_is_unchanged_under_isolation() {
        let seen_failures = Seen::default();
        let out = TaskGroup::builder()
            .isolate_failures(recorder::<String>(&seen_failures))
            .scope(|tg| async move {
                let finisher = tg.spawn(async {
                    quattro::shutdown_requested().await;
                    sleep(ms(50)).await;
                    Ok("finished")
                });
                tg.task("quitter").spawn(async {
                    quattro::shutdown_requested().await;
                    Err::<(), _>(String::from("gave up"))
                });
                tg.request_shutdown(Duration::from_secs(1));
                Ok(finisher.await.unwrap())
            })
            .await;
        assert_eq!(out.unwrap(), "finished");
        assert_eq!(seen(&seen_failures).len(), 1);
    }
}

both_runtimes! {
    /// The grace still cuts: a task ignoring the request is dropped when it runs out.
    async fn shutdown_grace_still_cuts_under_isolation() {
        let dropped = Counter::new();
        let d = dropped.clone();
        let err = TaskGroup::builder()
            .isolate_failures(|_: Failure<String>| Ok(()))
            .scope(|tg| async move {
                let guard = d.guard();
                tg.spawn(async move {
                    let _guard = guard;
                    sleep(NEVER).await;
                    Ok(())
                });
                tg.request_shutdown(ms(100));
                Ok(())
            })
            .await
            .unwrap_err();
        assert!(err.is_cancelled());
        assert_eq!(dropped.get(), 1);
    }
}

both_runtimes! {
    /// An enclosing deadline drops an isolating group with the structured guarantee: when
    /// `move_on_after` returns, every task's future was dropped.
    async fn structured_drop_is_unchanged_under_isolation() {
        let dropped = Counter::new();
        let d = dropped.clone();
        let out = move_on_after(ms(100), async move {
            TaskGroup::builder()
                .isolate_failures(|_: Failure<String>| Ok(()))
                .scope(|tg| async move {
                    for _ in 0..10 {
                        let guard = d.guard();
                        tg.spawn(async move {
                            let _guard = guard;
                            sleep(NEVER).await;
                            Ok(())
                        });
                    }
                    tg.spawn(async { Err::<(), _>(String::from("handled")) });
                    std::future::pending::<()>().await;
                    Ok(())
                })
                .await
        })
        .await;
        assert!(out.is_none());
        assert_eq!(dropped.get(), 10);
    }
}

both_runtimes! {
    /// A group that never fails names `Infallible` once, on the handle: no turbofish.
    async fn groups_that_never_fail_need_no_turbofish() {
        let out = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
            let a = tg.spawn(async { Ok(20) });
            tg.spawn_background(async { Ok(()) });
            Ok(a.await.unwrap() + 22)
        })
        .await;
        let out: Result<u32, GroupError<Infallible>> = out;
        assert_eq!(out.unwrap(), 42);
    }
}

both_runtimes! {
    /// A server on the isolating policy (mini-redis style, over real TCP): one connection
    /// handler panics and one returns `Err` while 50 others run; all 50 complete, the
    /// listener (the body) keeps accepting after the failures, and the handler saw exactly
    /// the two failures, by task name.
    async fn server_isolates_a_panicking_and_a_failing_connection() {
        server_scenario().await;
    }
}

/// One connection: reads its request; `PANIC` panics, `ERR` fails, `WORK` waits for the
/// release and answers `OK`.
async fn connection(stream: TcpStream, release: Arc<Notify>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let request = lines.next_line().await?.unwrap_or_default();
    match request.as_str() {
        "PANIC" => panic!("handler bug on a bad request"),
        "ERR" => Err(std::io::Error::other("malformed request")),
        _ => {
            let released = release.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            write.write_all(b"WAITING\n").await?;
            released.await;
            write.write_all(b"OK\n").await
        }
    }
}

/// A client: sends `request`, returns the stream's reader and its local address.
async fn client(
    addr: std::net::SocketAddr,
    request: &str,
) -> (
    tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    String,
    tokio::net::tcp::OwnedWriteHalf,
) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let local = stream.local_addr().unwrap().to_string();
    let (read, mut write) = stream.into_split();
    write
        .write_all(format!("{request}\n").as_bytes())
        .await
        .unwrap();
    (BufReader::new(read).lines(), local, write)
}

async fn server_scenario() {
    const WORKERS: usize = 50;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let release = Arc::new(Notify::new());
    let seen_failures = Seen::default();
    let (failed_tx, mut failed_rx) = mpsc::unbounded_channel::<String>();

    let handler = {
        let seen_failures = seen_failures.clone();
        move |failure: Failure<std::io::Error>| {
            println!("failure handler: {failure}");
            let name = failure.task_name().unwrap_or("").to_string();
            seen_failures.lock().unwrap().push((
                name.clone(),
                failure.is_panic(),
                failure.to_string(),
            ));
            let _ = failed_tx.send(name);
            Ok(())
        }
    };
    let server = {
        let release = release.clone();
        TaskGroup::builder()
            .concurrency_limit(100)
            .isolate_failures(handler)
            .scope(move |tg| async move {
                // The listener: accepts until the clients are all in (52 connections).
                let mut accepted = 0;
                while accepted < WORKERS + 2 {
                    let (stream, peer) = listener.accept().await?;
                    accepted += 1;
                    tg.task(peer.to_string())
                        .spawn(connection(stream, release.clone()));
                }
                println!("listener: accepted {accepted} connections");
                Ok(accepted)
            })
    };
    let server = tokio::spawn(server);

    // Half the workers connect and are running...
    let mut workers = Vec::new();
    for _ in 0..WORKERS / 2 {
        let (mut lines, _, write) = client(addr, "WORK").await;
        assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("WAITING"));
        workers.push((lines, write));
    }
    // ...when one handler panics and one fails...
    let (_panic_lines, panic_addr, _w1) = client(addr, "PANIC").await;
    let (_err_lines, err_addr, _w2) = client(addr, "ERR").await;
    let mut failed = BTreeSet::new();
    failed.insert(failed_rx.recv().await.unwrap());
    failed.insert(failed_rx.recv().await.unwrap());
    assert_eq!(
        failed,
        BTreeSet::from([panic_addr.clone(), err_addr.clone()])
    );
    // ...and the listener keeps accepting afterwards.
    for _ in 0..WORKERS / 2 {
        let (mut lines, _, write) = client(addr, "WORK").await;
        assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("WAITING"));
        workers.push((lines, write));
    }
    println!(
        "clients: {} workers running after the 2 failures",
        workers.len()
    );
    release.notify_waiters();
    let mut completed = 0;
    for (mut lines, _write) in workers {
        assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("OK"));
        completed += 1;
    }
    println!("clients: {completed} of {WORKERS} workers completed");
    assert_eq!(completed, WORKERS);

    let accepted = server.await.unwrap().unwrap();
    assert_eq!(accepted, WORKERS + 2);
    let mut seen = seen(&seen_failures);
    seen.sort_by_key(|(_, panic, _)| !*panic);
    assert_eq!(seen.len(), 2, "exactly the two failures: {seen:?}");
    assert_eq!(
        seen[0],
        (
            panic_addr.clone(),
            true,
            format!("task `{panic_addr}` panicked: handler bug on a bad request")
        )
    );
    assert_eq!(
        seen[1],
        (
            err_addr.clone(),
            false,
            format!("task `{err_addr}`: malformed request")
        )
    );
    println!("server: returned Ok({accepted}); the handler saw exactly: {seen:?}");
}
