//! Errors that travel (issue 14): `GroupError`, `Failure` and `TaskError` are `Send + Sync`,
//! are `std::error::Error` for every `E: Debug + Display`, go through `?` into
//! `anyhow::Error`, `Box<dyn Error + Send + Sync>` and `io::Error` with their text, and name
//! who failed. A handle awaited in a body yields the failed task's name and error text.
//!
//! Most tests here are also compile tests: they use `?` in functions that return
//! `anyhow::Result` or `Result<_, Box<dyn Error + Send + Sync>>`, so they only build if the
//! conversions exist. Run with `--features anyhow` as well to check the `anyhow::Error` text in
//! a handle.

use std::error::Error;
use std::fmt;
use std::io;

use quattro::{Cancelled, Failure, GroupError, Reported, TaskError, TaskGroup, gather};

type BoxError = Box<dyn Error + Send + Sync>;

fn assert_send_sync<T: Send + Sync>() {}
fn assert_error<T: Error + Send + Sync + 'static>() {}

/// Every error type is `Send + Sync` and a `std::error::Error` for the four error types users
/// reach for, and for `&'static str`.
#[test]
fn error_types_are_send_sync_errors() {
    fn all<E: fmt::Debug + fmt::Display + Send + Sync + 'static>() {
        assert_send_sync::<GroupError<E>>();
        assert_send_sync::<Failure<E>>();
        assert_send_sync::<TaskError<E>>();
        assert_error::<GroupError<E>>();
        assert_error::<Failure<E>>();
        assert_error::<TaskError<E>>();
    }
    all::<io::Error>();
    all::<String>();
    all::<&'static str>();
    all::<anyhow::Error>();
    all::<BoxError>();
    // A handle's error, and the rest.
    assert_error::<TaskError>();
    assert_error::<Reported>();
    assert_error::<Cancelled>();
    // Concrete, as users write them.
    assert_send_sync::<GroupError<io::Error>>();
    assert_send_sync::<GroupError<String>>();
    assert_send_sync::<GroupError<anyhow::Error>>();
    assert_send_sync::<GroupError<BoxError>>();
}

/// `source()` is `None` by design: the `Display` holds every failure's text.
#[tokio::test]
async fn source_is_none_and_display_has_every_failure() {
    let err = TaskGroup::scope(|tg| async move {
        tg.task("a")
            .spawn(async { Err::<(), _>(io::Error::other("first")) });
        tg.task("b")
            .spawn(async { Err::<(), _>(io::Error::other("second")) });
        Ok(())
    })
    .await
    .unwrap_err();
    assert!(err.source().is_none());
    assert!(err.failures()[0].source().is_none());
    let text = err.to_string();
    assert_eq!(
        text,
        "task group failed with 2 errors: task `a`: first; task `b`: second"
    );
    // An error-chain printer shows it once.
    let any = anyhow::Error::from(err);
    assert_eq!(format!("{any:#}"), text);
}

/// Per error type: `?` from a group and from a `gather` into `anyhow::Error` and into
/// `Box<dyn Error + Send + Sync>`, keeping the task's error text.
macro_rules! question_mark_tests {
    ($($module:ident: $ty:ty = $make:expr;)+) => {$(
        mod $module {
            use super::*;

            type E = $ty;

            fn make(message: &str) -> E {
                let make: fn(&str) -> E = $make;
                make(message)
            }

            async fn group(fail: bool) -> Result<u32, GroupError<E>> {
                TaskGroup::scope(|tg| async move {
                    let fetch = tg.task("fetch").spawn(async move {
                        if fail {
                            Err(make("connection refused"))
                        } else {
                            Ok(41)
                        }
                    });
                    Ok(fetch.await.unwrap_or(0) + 1)
                })
                .await
            }

            async fn fetch(i: u32) -> Result<u32, E> {
                if i == 7 {
                    Err(make("item seven is bad"))
                } else {
                    Ok(i)
                }
            }

            #[tokio::test]
            async fn group_into_anyhow() -> anyhow::Result<()> {
                async fn run(fail: bool) -> anyhow::Result<u32> {
                    let n = group(fail).await?;
                    Ok(n)
                }
                assert_eq!(run(false).await?, 42);
                let err = run(true).await.unwrap_err();
                assert_eq!(
                    err.to_string(),
                    "task group failed: task `fetch`: connection refused"
                );
                assert!(err.downcast_ref::<GroupError<E>>().is_some());
                Ok(())
            }

            #[tokio::test]
            async fn group_into_box_error() -> Result<(), BoxError> {
                async fn run(fail: bool) -> Result<u32, BoxError> {
                    let n = group(fail).await?;
                    Ok(n)
                }
                assert_eq!(run(false).await?, 42);
                let err = run(true).await.unwrap_err();
                assert_eq!(
                    err.to_string(),
                    "task group failed: task `fetch`: connection refused"
                );
                Ok(())
            }

            #[tokio::test]
            async fn gather_into_anyhow() -> anyhow::Result<()> {
                async fn run(n: u32) -> anyhow::Result<Vec<u32>> {
                    let items = gather((0..n).map(fetch)).concurrency_limit(4).await?;
                    Ok(items)
                }
                assert_eq!(run(5).await?, [0, 1, 2, 3, 4]);
                let text = run(10).await.unwrap_err().to_string();
                assert!(text.starts_with("task group failed: "), "{text}");
                assert!(text.ends_with(": item seven is bad"), "{text}");
                Ok(())
            }

            #[tokio::test]
            async fn gather_into_box_error() -> Result<(), BoxError> {
                async fn run(n: u32) -> Result<Vec<u32>, BoxError> {
                    let items = gather((0..n).map(fetch)).await?;
                    Ok(items)
                }
                assert_eq!(run(3).await?, [0, 1, 2]);
                let text = run(10).await.unwrap_err().to_string();
                assert!(text.ends_with(": item seven is bad"), "{text}");
                Ok(())
            }

            #[tokio::test]
            async fn gather_macro_into_anyhow() -> anyhow::Result<()> {
                let (a, b) = quattro::gather!(fetch(1), fetch(2)).await?;
                assert_eq!((a, b), (1, 2));
                let err = quattro::gather!(fetch(1), fetch(7)).await;
                let err = anyhow::Error::from(err.unwrap_err());
                assert!(err.to_string().ends_with(": item seven is bad"), "{err}");
                Ok(())
            }
        }
    )+};
}

question_mark_tests! {
    io_error: io::Error = |m| io::Error::other(m.to_owned());
    string: String = str::to_owned;
    anyhow_error: anyhow::Error = |m| anyhow::Error::msg(m.to_owned());
    box_error: BoxError = |m| m.into();
}

/// The README's one-liner, inside a function that returns `anyhow::Result`.
#[tokio::test]
async fn readme_gather_one_liner() -> anyhow::Result<()> {
    async fn fetch(id: u32) -> Result<String, io::Error> {
        Ok(format!("item {id}"))
    }
    let items = quattro::gather((0..100).map(fetch))
        .concurrency_limit(8)
        .await?;
    assert_eq!(items.len(), 100);
    Ok(())
}

/// A failing body-level `handle.await?`: the group's error holds the task's own error first,
/// then the body's, which names the task and keeps the error's text.
macro_rules! handle_tests {
    ($($name:ident: $ty:ty = $make:expr, text = $text:expr;)+) => {$(
        #[tokio::test]
        async fn $name() {
            type E = $ty;
            let make: fn(&str) -> E = $make;
            let ok = TaskGroup::scope(|tg| async move {
                let v = tg.spawn(async { Ok::<_, E>(20) }).await?;
                Ok::<_, E>(v + 1)
            })
            .await;
            assert_eq!(ok.unwrap(), 21);

            let err = TaskGroup::scope(|tg| async move {
                let fetch = tg
                    .task("fetch")
                    .spawn(async move { Err::<u32, _>(make("connection refused")) });
                let v = fetch.await?;
                Ok::<_, E>(v)
            })
            .await
            .unwrap_err();
            let failures = err.failures();
            assert_eq!(failures.len(), 2, "{err}");
            assert_eq!(failures[0].to_string(), "task `fetch`: connection refused");
            assert!(failures[1].is_body());
            let expected: &str = $text;
            assert_eq!(failures[1].to_string(), format!("body: {expected}"));
        }
    )+};
}

handle_tests! {
    handle_question_mark_into_box_error: BoxError = |m| m.into(),
        text = "task `fetch` failed: connection refused";
    handle_question_mark_into_io_error: io::Error = |m| io::Error::other(m.to_owned()),
        text = "task `fetch` failed: connection refused";
}

#[cfg(feature = "anyhow")]
const ANYHOW_TEXT: &str = "task `fetch` failed: connection refused";
/// Without the `anyhow` feature the handle cannot write an `anyhow::Error`'s text; the
/// group's error still holds it (checked by the first failure).
#[cfg(not(feature = "anyhow"))]
const ANYHOW_TEXT: &str = "task `fetch` failed: the error was reported to the task group";

handle_tests! {
    handle_question_mark_into_anyhow: anyhow::Error = |m| anyhow::Error::msg(m.to_owned()),
        text = ANYHOW_TEXT;
}

/// The documented `handle.await.unwrap()` no longer loses the error's text: the panic's
/// message names the task and carries the text.
#[tokio::test]
async fn handle_unwrap_panic_keeps_the_error_text() {
    let err = TaskGroup::builder()
        .capture_panics()
        .scope(|tg| async move {
            let fetch = tg
                .task("fetch")
                .spawn(async { Err::<u32, _>(io::Error::other("connection refused")) });
            Ok(fetch.await.unwrap())
        })
        .await
        .unwrap_err();
    let failures = err.failures();
    assert_eq!(failures.len(), 2, "{err}");
    assert_eq!(failures[0].to_string(), "task `fetch`: connection refused");
    assert!(failures[1].is_body() && failures[1].is_panic());
    let text = failures[1].to_string();
    assert!(
        text.starts_with("body panicked: called `Result::unwrap()`"),
        "{text}"
    );
    assert!(text.contains("task `fetch`"), "{text}");
    assert!(text.contains("connection refused"), "{text}");
}

/// What a handle yields for a failed task: its label (name, or tokio id when unnamed) and the
/// error's text, for every error type quattro recognises; an unknown type says where the
/// error went.
#[tokio::test]
async fn handle_error_names_the_task_and_carries_the_text() {
    async fn handle_error<E: Send + 'static>(name: Option<&str>, error: E) -> TaskError {
        let name = name.map(str::to_owned);
        let mut seen = None;
        let slot = &mut seen;
        let _ = TaskGroup::scope(|tg| async move {
            let fut = async move { Err::<(), E>(error) };
            let handle = match name {
                Some(name) => tg.task(name).spawn(fut),
                None => tg.spawn(fut),
            };
            *slot = Some(handle.await.unwrap_err());
            Ok(())
        })
        .await;
        seen.unwrap()
    }

    let err = handle_error(Some("load"), "boom").await;
    assert!(err.is_failed() && !err.is_cancelled() && !err.is_panic());
    assert_eq!(err.to_string(), "task `load` failed: boom");
    let debug = format!("{err:?}");
    assert!(debug.contains("load") && debug.contains("boom"), "{debug}");
    assert_eq!(err.into_error().unwrap().message(), Some("boom"));

    // Unnamed: the tokio id is all there is.
    let err = handle_error(None, String::from("boom")).await;
    let text = err.to_string();
    assert!(
        text.starts_with("task ") && text.ends_with(" failed: boom"),
        "{text}"
    );

    let cases: Vec<(TaskError, Option<&str>)> = vec![
        (handle_error(Some("t"), String::from("s")).await, Some("s")),
        (
            handle_error(Some("t"), Box::<str>::from("b")).await,
            Some("b"),
        ),
        (
            handle_error(Some("t"), std::sync::Arc::<str>::from("a")).await,
            Some("a"),
        ),
        (
            handle_error(Some("t"), std::borrow::Cow::Borrowed("c")).await,
            Some("c"),
        ),
        (
            handle_error(Some("t"), io::Error::other("io")).await,
            Some("io"),
        ),
        (
            handle_error(Some("t"), fmt::Error).await,
            Some("an error occurred when formatting an argument"),
        ),
        (
            handle_error(Some("t"), BoxError::from("boxed")).await,
            Some("boxed"),
        ),
        (
            handle_error(
                Some("t"),
                Box::new(io::Error::other("boxed send")) as Box<dyn Error + Send>,
            )
            .await,
            Some("boxed send"),
        ),
        (
            handle_error(
                Some("t"),
                std::sync::Arc::<dyn Error + Send + Sync>::from(BoxError::from("arc")),
            )
            .await,
            Some("arc"),
        ),
        (handle_error(Some("t"), 7u8).await, None),
    ];
    for (err, message) in cases {
        let reported = err.into_error().unwrap();
        assert_eq!(reported.message(), message);
    }

    let err = handle_error(Some("t"), anyhow::Error::msg("from anyhow")).await;
    let message = err.into_error().unwrap().message().map(str::to_owned);
    if cfg!(feature = "anyhow") {
        assert_eq!(message.as_deref(), Some("from anyhow"));
    } else {
        assert_eq!(message, None);
    }

    // An error type without `Display`: the text cannot be known, the task still is.
    #[derive(Debug)]
    struct Opaque;
    let err = handle_error(Some("load"), Opaque).await;
    assert_eq!(
        err.to_string(),
        "task `load` failed: the error was reported to the task group"
    );
}

/// An error whose `Display` panics gives the handle no text, and does not turn the task's
/// failure into a panic.
#[tokio::test]
async fn panicking_display_gives_no_text() {
    #[derive(Debug)]
    struct Bad;
    impl fmt::Display for Bad {
        fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
            panic!("display panicked")
        }
    }
    impl Error for Bad {}

    let mut seen = None;
    let slot = &mut seen;
    let err = TaskGroup::scope(|tg| async move {
        let handle = tg
            .task("bad")
            .spawn(async { Err::<(), BoxError>(Box::new(Bad)) });
        *slot = Some(handle.await.unwrap_err());
        Ok(())
    })
    .await
    .unwrap_err();
    assert!(!err.has_panic());
    assert_eq!(err.errors().count(), 1);
    let handle_err = seen.unwrap();
    assert!(handle_err.is_failed());
    assert_eq!(handle_err.into_error().unwrap().message(), None);
}

/// A captured panic keeps its message in `Display` and `Debug` (`&str` and `String`
/// payloads), crosses `?` into `anyhow`, and can still be resumed with its payload.
#[tokio::test]
async fn captured_panics_are_sync_and_keep_their_message() {
    async fn run() -> anyhow::Result<()> {
        TaskGroup::builder()
            .capture_panics()
            .scope(|tg| async move {
                tg.task("str").spawn(async {
                    if true {
                        panic!("static bug");
                    }
                    Ok::<(), String>(())
                });
                tg.task("string").spawn(async {
                    if true {
                        panic!("bug number {}", 2);
                    }
                    Ok(())
                });
                tg.task("other").spawn(async {
                    if true {
                        std::panic::panic_any(42_u32);
                    }
                    Ok(())
                });
                Ok(())
            })
            .await?;
        Ok(())
    }
    let err = run().await.unwrap_err();
    let group = err.downcast::<GroupError<String>>().unwrap();
    assert!(group.has_panic());
    let mut texts: Vec<String> = group.failures().iter().map(|f| f.to_string()).collect();
    texts.sort();
    assert_eq!(
        texts,
        [
            "task `other` panicked: <non-string panic payload>",
            "task `str` panicked: static bug",
            "task `string` panicked: bug number 2",
        ]
    );
    let debug = format!("{group:?}");
    assert!(
        debug.contains("static bug") && debug.contains("bug number 2"),
        "{debug}"
    );

    // Shared between threads, then resumed.
    let group = std::sync::Arc::new(group);
    let shared = group.clone();
    let text = std::thread::spawn(move || shared.to_string())
        .join()
        .unwrap();
    assert!(
        text.starts_with("task group failed with 3 errors: "),
        "{text}"
    );
    let group = std::sync::Arc::into_inner(group).unwrap();
    let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| group.resume_panic()))
        .unwrap_err();
    assert!(
        payload.downcast_ref::<&str>().is_some()
            || payload.downcast_ref::<String>().is_some()
            || payload.downcast_ref::<u32>().is_some()
    );
}

/// `gather_settled` slots: `TaskError<E>` with the item's own error, `?` into `anyhow` and
/// `io::Error`, panics with their message.
#[tokio::test]
async fn settled_slots_travel() -> anyhow::Result<()> {
    let mut slots = quattro::gather_settled((0..3).map(|i| async move {
        match i {
            0 => Ok(i),
            1 => Err(io::Error::other("bad item")),
            _ => panic!("item bug"),
        }
    }))
    .await;
    let panicked = slots.pop().unwrap().unwrap_err();
    assert_eq!(panicked.to_string(), "item 2 panicked: item bug");
    let failed = slots.pop().unwrap().unwrap_err();
    assert_eq!(failed.to_string(), "item 1 failed: bad item");
    let ok = slots.pop().unwrap()?; // TaskError<io::Error> into anyhow::Error
    assert_eq!(ok, 0);

    fn into_io(err: TaskError<io::Error>) -> io::Result<()> {
        Err(err)?
    }
    let io = into_io(failed).unwrap_err();
    assert_eq!(io.kind(), io::ErrorKind::Other);
    assert_eq!(io.to_string(), "item 1 failed: bad item");
    let anyhow = anyhow::Error::from(panicked);
    assert_eq!(anyhow.to_string(), "item 2 panicked: item bug");
    Ok(())
}

/// A group's error converts into `io::Error` (kind `Other`) with its text.
#[tokio::test]
async fn group_error_into_io_error() {
    async fn run() -> io::Result<()> {
        TaskGroup::scope(|tg| async move {
            tg.task("write")
                .spawn(async { Err::<(), _>(String::from("disk full")) });
            Ok(())
        })
        .await?;
        Ok(())
    }
    let err = run().await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Other);
    assert_eq!(
        err.to_string(),
        "task group failed: task `write`: disk full"
    );
    assert!(err.get_ref().unwrap().is::<GroupError<String>>());
}

/// Labels people can read: the body, a task's name, and otherwise the tokio id.
#[tokio::test]
async fn labels_name_the_body_and_tasks() {
    let err = TaskGroup::scope(|_tg| async { Err::<(), _>("bad input") })
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "task group failed: body: bad input");
    assert_eq!(err.failures()[0].item_index(), None);

    let err = TaskGroup::scope(|tg| async move {
        tg.task("named").spawn(async { Err::<(), _>("x") });
        Ok(())
    })
    .await
    .unwrap_err();
    assert_eq!(err.to_string(), "task group failed: task `named`: x");
}

/// A failed `gather` item is labelled with its input position: "item 7".
#[tokio::test]
async fn gather_failure_names_the_item_position() {
    let err = gather((0..10).map(|i| async move { if i == 7 { Err("bad") } else { Ok(i) } }))
        .await
        .unwrap_err();
    assert_eq!(err.failures()[0].item_index(), Some(7));
    assert_eq!(err.failures()[0].task_name(), None);
    assert_eq!(err.to_string(), "task group failed: item 7: bad");
}

/// An unnamed task is named by where it was spawned, beside its id: also one that waited in a
/// limited group's queue, and one spawned with `spawn_when_free`.
#[tokio::test]
async fn unnamed_tasks_are_named_by_their_spawn_location() {
    let queued = TaskGroup::builder()
        .concurrency_limit(1)
        .scope(|tg| async move {
            tg.spawn(async {
                tokio::task::yield_now().await;
                Ok(())
            });
            tg.spawn(async { Err::<(), _>("queued and failed") });
            Ok(())
        })
        .await
        .unwrap_err();
    let shown = queued.to_string();
    assert!(
        shown.contains("spawned at tests/errors.rs:") && shown.ends_with(": queued and failed"),
        "{shown}"
    );

    let waited = TaskGroup::builder()
        .concurrency_limit(1)
        .scope(|tg| async move {
            // The handle is dropped: the failure reaches the group.
            drop(
                tg.spawn_when_free(async { Err::<(), _>("waited and failed") })
                    .await,
            );
            Ok(())
        })
        .await
        .unwrap_err();
    let shown = waited.to_string();
    assert!(
        shown.contains("spawned at tests/errors.rs:") && shown.ends_with(": waited and failed"),
        "{shown}"
    );
}

/// Gather items are named in failures: by position always, and by the name `name_items`
/// gives; the namer runs only for items that did not succeed, and a namer that panics gives
/// no name.
#[tokio::test(start_paused = true)]
async fn gather_items_are_named() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    let named = Arc::new(AtomicUsize::new(0));
    let count = named.clone();
    let err = quattro::gather((0..100u32).map(|i| async move {
        match i {
            7 => Err(format!("bad {i}")),
            _ => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(i)
            }
        }
    }))
    .name_items(move |i| {
        count.fetch_add(1, Ordering::Relaxed);
        format!("url-{i}")
    })
    .await
    .unwrap_err();
    let failure = &err.failures()[0];
    assert_eq!(failure.item_index(), Some(7));
    assert_eq!(failure.task_name(), Some("url-7"));
    assert_eq!(failure.to_string(), "item 7 (`url-7`): bad 7");
    assert!(
        anyhow::Error::from(err)
            .to_string()
            .contains("item 7 (`url-7`)")
    );
    // Item 7 and the cancelled ones may be named; never all of a successful run.
    let ok = quattro::gather((0..50u32).map(|i| async move { Ok::<_, String>(i) }))
        .name_items({
            let named = named.clone();
            move |i| {
                named.fetch_add(1_000, Ordering::Relaxed);
                i
            }
        })
        .concurrency_limit(4)
        .await
        .unwrap();
    assert_eq!(ok.len(), 50);
    assert!(
        named.load(Ordering::Relaxed) < 1_000,
        "a successful gather names nothing"
    );

    // Unnamed: the position alone.
    let err = quattro::gather([0, 1].map(|i| async move { if i == 1 { Err("x") } else { Ok(i) } }))
        .await
        .unwrap_err();
    assert_eq!(err.failures()[0].to_string(), "item 1: x");
    assert_eq!(err.failures()[0].task_name(), None);

    // A namer that panics gives no name; the failure is still reported.
    let err = quattro::gather([async { Err::<(), _>("x") }])
        .name_items(|_| -> String { panic!("namer bug") })
        .await
        .unwrap_err();
    assert_eq!(err.failures()[0].to_string(), "item 0: x");
}

/// `gather_settled` slots are named by position, and by `name_items`, panics included.
#[tokio::test]
async fn gather_settled_slots_are_named() {
    let slots = quattro::gather_settled((0..3).map(|i| async move {
        match i {
            0 => Ok(i),
            1 => Err("refused"),
            _ => panic!("bug"),
        }
    }))
    .name_items(|i| format!("host-{i}"))
    .concurrency_limit(2)
    .await;
    assert!(slots[0].is_ok());
    let failed = slots[1].as_ref().unwrap_err();
    assert_eq!(failed.to_string(), "item 1 (`host-1`) failed: refused");
    assert_eq!(
        (failed.item_index(), failed.task_name()),
        (Some(1), Some("host-1"))
    );
    let panicked = slots[2].as_ref().unwrap_err();
    assert_eq!(panicked.to_string(), "item 2 (`host-2`) panicked: bug");
}
