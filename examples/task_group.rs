//! `TaskGroup`: fan-out where no task outlives the group.
//!
//! Six short scenes: waiting for every task, the first failure cancelling the rest, a
//! concurrency limit, a background task, backpressure with `spawn_when_free`, and a deadline
//! that reaches the tasks.
//!
//! ```text
//! cargo run --example task_group
//! RUST_LOG=quattro=debug cargo run --example task_group   # with the crate's tracing
//! ```
//!
//! Each line starts with the time since the scene began. What to look for:
//!
//! - Scene 2: `flaky` fails at 30 ms, and the two slow tasks are cancelled at that moment, not
//!   after their 1000 ms.
//! - Scene 3: 9 tasks of 20 ms, 3 at a time, take about 60 ms: three waves.
//! - Scene 4: the heartbeat stops as soon as the normal work is done.
//! - Scene 5: items 1 and 2 take both slots for 20 ms, so the producer waits about that long
//!   for a free slot before item 3, and again before item 5.
//! - Scene 6: both tasks see the 50 ms deadline, and the slow one is cut off when it passes.
//!
//! It runs for about half a second.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use quattro::{TaskGroup, current_effective_deadline, fail_after};
use tokio::time::{Instant, sleep};
use tracing_subscriber::EnvFilter;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Prints a line prefixed by the time since `start`.
fn say(start: Instant, what: impl std::fmt::Display) {
    println!("  [{:>3} ms] {what}", start.elapsed().as_millis());
}

/// Prints when the task holding it is dropped before it finished: that is how a task is
/// cancelled.
struct Dropped {
    start: Instant,
    name: &'static str,
    done: bool,
}

impl Drop for Dropped {
    fn drop(&mut self) {
        if !self.done {
            say(
                self.start,
                format!("{} cancelled (its future was dropped)", self.name),
            );
        }
    }
}

#[tokio::main]
async fn main() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    wait_for_all().await;
    first_failure_cancels().await;
    concurrency_limit().await;
    background_task().await;
    backpressure().await;
    deadline_reaches_tasks().await;
}

/// `scope` returns when the body and every task are done; handles give each task's value.
async fn wait_for_all() {
    println!("1. the group waits for every task");
    let start = Instant::now();
    // Nothing here fails: `Infallible` names the error type once, instead of a turbofish.
    let total = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
        let handles: Vec<_> = [("users", 30), ("orders", 10), ("prices", 20)]
            .into_iter()
            .map(|(name, took)| {
                tg.task(name).spawn(async move {
                    sleep(ms(took)).await;
                    say(start, format!("{name} done"));
                    Ok(took)
                })
            })
            .collect();
        let mut total = 0;
        for handle in handles {
            total += handle.await.unwrap_or(0);
        }
        Ok(total)
    })
    .await;
    say(start, format!("group returned {total:?}\n"));
}

/// A task's `Err` cancels the body and the other tasks; every error comes back, with names.
async fn first_failure_cancels() {
    println!("2. the first failure cancels the rest");
    let start = Instant::now();
    let out: Result<(), _> = TaskGroup::scope(|tg| async move {
        for name in ["slow-a", "slow-b"] {
            tg.task(name).spawn(async move {
                let mut guard = Dropped {
                    start,
                    name,
                    done: false,
                };
                sleep(ms(1000)).await;
                guard.done = true;
                Ok(())
            });
        }
        tg.task("flaky").spawn(async move {
            sleep(ms(30)).await;
            say(start, "flaky fails");
            Err::<(), _>("connection reset".to_string())
        });
        std::future::pending::<()>().await; // the body is cancelled too
        Ok(())
    })
    .await;
    let err = out.unwrap_err();
    say(start, format!("group returned: {err}"));
    for failure in err.failures() {
        let error = match failure.error() {
            Some(error) => format!("{error:?}"),
            None => "a panic".to_string(),
        };
        say(
            start,
            format!(
                "  failure in task {:?}: {error}",
                failure.task_name().unwrap_or("?")
            ),
        );
    }
    println!();
}

/// At most `n` tasks run at once; the others wait in a queue as plain futures.
async fn concurrency_limit() {
    println!("3. concurrency_limit(3): 9 tasks of 20 ms, at most 3 at a time");
    let start = Instant::now();
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (running2, most2) = (running.clone(), most.clone());
    let out = TaskGroup::builder()
        .concurrency_limit(3)
        .scope(|tg: TaskGroup<Infallible>| async move {
            for _ in 0..9 {
                let (running, most) = (running2.clone(), most2.clone());
                tg.spawn(async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    sleep(ms(20)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                });
            }
            say(
                start,
                format!(
                    "9 spawned at once: {} running, the others wait in the queue for a free slot",
                    tg.len()
                ),
            );
            Ok(())
        })
        .await;
    say(
        start,
        format!(
            "group returned {out:?}; at most {} ran at once (3 waves of 20 ms)\n",
            most.load(Ordering::SeqCst)
        ),
    );
}

/// A background task runs beside the work and is cancelled once the work is done.
async fn background_task() {
    println!("4. a background heartbeat, cancelled when the normal work is done");
    let start = Instant::now();
    let out = TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
        tg.task("heartbeat").spawn_background(async move {
            let _guard = Dropped {
                start,
                name: "heartbeat",
                done: false,
            };
            for beat in 1.. {
                sleep(ms(25)).await;
                say(start, format!("heartbeat {beat}"));
            }
            Ok(())
        });
        tg.spawn(async move {
            sleep(ms(90)).await;
            say(start, "work done");
            Ok(())
        });
        Ok("result")
    })
    .await;
    say(start, format!("group returned {out:?}\n"));
}

/// `spawn_when_free` makes the producer wait for a slot instead of queueing without bound.
async fn backpressure() {
    println!("5. spawn_when_free with concurrency_limit(2): the producer waits for a slot");
    let start = Instant::now();
    let out = TaskGroup::builder()
        .concurrency_limit(2)
        .scope(|tg: TaskGroup<Infallible>| async move {
            for i in 1..=5 {
                let asked = Instant::now();
                tg.spawn_when_free(async move {
                    sleep(ms(20)).await;
                    Ok(i)
                })
                .await;
                let waited = asked.elapsed();
                if waited >= ms(1) {
                    say(
                        start,
                        format!(
                            "item {i} spawned, after waiting {} ms for a free slot",
                            waited.as_millis()
                        ),
                    );
                } else {
                    say(start, format!("item {i} spawned at once: a slot was free"));
                }
            }
            Ok(())
        })
        .await;
    say(start, format!("group returned {out:?}\n"));
}

/// A deadline around the group is seen by every task, and cuts off the ones still running.
async fn deadline_reaches_tasks() {
    println!("6. fail_after(50 ms) around the group: the tasks see the deadline");
    let start = Instant::now();
    let out = fail_after(
        ms(50),
        TaskGroup::scope(|tg: TaskGroup<Infallible>| async move {
            for (name, took) in [("fast", 10), ("slow", 500)] {
                tg.task(name).spawn(async move {
                    let mut guard = Dropped {
                        start,
                        name,
                        done: false,
                    };
                    let left = match current_effective_deadline() {
                        Some(deadline) => format!(
                            "{} ms left before the deadline",
                            deadline
                                .saturating_duration_since(Instant::now())
                                .as_millis()
                        ),
                        None => "no deadline".to_string(),
                    };
                    say(start, format!("{name} starts ({took} ms of work), {left}"));
                    sleep(ms(took)).await;
                    say(start, format!("{name} done"));
                    guard.done = true;
                    Ok(())
                });
            }
            Ok(())
        }),
    )
    .await;
    say(start, format!("fail_after returned {out:?}"));
}
