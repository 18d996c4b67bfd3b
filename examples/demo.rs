//! The main demo, in three parts. Each line starts with the time since its part began.
//!
//! 1. A request with a 400 ms deadline (`fail_after`) fans out to 8 slow pretend backends
//!    through a `TaskGroup` that runs 3 at once, beside a background heartbeat. Look for: the
//!    others wait for a free slot and start as one ends. At the deadline the running ones are
//!    cut off, and the one still waiting never starts.
//! 2. Nested cancel scopes. Look for: an inner scope's earlier deadline applies inside it, and
//!    a later one does not push back the outer deadline.
//! 3. `gather` over four backends. Look for: backend 99 fails at 90 ms, and the backends still
//!    running are cancelled at that moment.
//!
//! ```text
//! cargo run --example demo
//! RUST_LOG=quattro=debug cargo run --example demo   # with the crate's tracing
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use quattro::{CancelScope, TaskGroup, current_effective_deadline, fail_after, gather};
use tokio::time::{Instant, sleep};

/// Milliseconds from the start of the demo, for readable output.
fn ms(start: Instant, at: Instant) -> String {
    format!("{} ms", at.saturating_duration_since(start).as_millis())
}

fn deadline_text(start: Instant) -> String {
    match current_effective_deadline() {
        Some(deadline) => format!("deadline at {}", ms(start, deadline)),
        None => "no deadline".to_string(),
    }
}

/// Prints when a backend call is cut off: its future is dropped by the cancellation.
struct CutOffReport {
    start: Instant,
    name: String,
    /// The deadline in force when the backend started.
    deadline: Option<Instant>,
    done: bool,
}

impl Drop for CutOffReport {
    fn drop(&mut self) {
        if !self.done {
            let now = Instant::now();
            let why = match self.deadline {
                Some(deadline) if now >= deadline => {
                    format!("the deadline at {} passed", ms(self.start, deadline))
                }
                _ => "cancelled: another backend failed".to_string(),
            };
            println!(
                "  [{:>7}] {:<10} cut off ({why})",
                ms(self.start, now),
                self.name
            );
        }
    }
}

/// Prints when a backend call is dropped while it still waits for a free slot in the group:
/// its code never ran.
struct Queued {
    start: Instant,
    id: u64,
    started: bool,
}

impl Queued {
    fn start(&mut self) {
        self.started = true;
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        if !self.started {
            println!(
                "  [{:>7}] {:<10} never started: it was still waiting for a free slot",
                ms(self.start, Instant::now()),
                format!("backend {}", self.id)
            );
        }
    }
}

async fn backend(start: Instant, id: u64, running: Arc<AtomicUsize>) -> Result<u64, String> {
    let now_running = running.fetch_add(1, Ordering::SeqCst) + 1;
    let name = format!("backend {id}");
    println!(
        "  [{:>7}] {name:<10} starts  ({now_running} running, {})",
        ms(start, Instant::now()),
        deadline_text(start)
    );
    let mut report = CutOffReport {
        start,
        name: name.clone(),
        deadline: current_effective_deadline(),
        done: false,
    };
    // Each backend takes longer than the previous one; backend 99 fails fast.
    sleep(Duration::from_millis(if id == 99 { 90 } else { 60 * id })).await;
    report.done = true;
    running.fetch_sub(1, Ordering::SeqCst);
    if id == 99 {
        return Err(format!("{name} refused"));
    }
    println!("  [{:>7}] {name:<10} answered", ms(start, Instant::now()));
    Ok(id * 10)
}

async fn fan_out(start: Instant) {
    println!("\n1. A request with a 400 ms deadline fans out to 8 backends, 3 at a time:");
    let running = Arc::new(AtomicUsize::new(0));
    let beats = Arc::new(AtomicUsize::new(0));
    let result = fail_after(Duration::from_millis(400), {
        let beats = beats.clone();
        TaskGroup::builder()
            .concurrency_limit(3)
            .scope(move |tg| async move {
                tg.task("heartbeat").spawn_background(async move {
                    loop {
                        sleep(Duration::from_millis(100)).await;
                        beats.fetch_add(1, Ordering::SeqCst);
                    }
                });
                let handles: Vec<_> = (1..=8)
                    .map(|id| {
                        let mut queued = Queued {
                            start,
                            id,
                            started: false,
                        };
                        let call = backend(start, id, running.clone());
                        tg.spawn(async move {
                            queued.start();
                            call.await
                        })
                    })
                    .collect();
                let now_running = tg.len();
                println!(
                    "  [{:>7}] 8 backends spawned: {now_running} running, {} waiting for a free slot",
                    ms(start, Instant::now()),
                    8 - now_running
                );
                let mut answers = Vec::new();
                for handle in handles {
                    answers.extend(handle.await.ok());
                }
                Ok(answers)
            })
    })
    .await;
    match result {
        Ok(Ok(answers)) => println!("  -> all answered: {answers:?}"),
        Ok(Err(err)) => println!("  -> the group failed: {err}"),
        Err(elapsed) => println!(
            "  -> fail_after gave an error at {}: {elapsed}. Every backend task had stopped \
             before this line; the heartbeat beat {} times.",
            ms(start, Instant::now()),
            beats.load(Ordering::SeqCst)
        ),
    }
}

async fn nested_scopes(start: Instant) {
    println!("\n2. Nested scopes: the earliest deadline is in force, at every level:");
    let outer = CancelScope::with_timeout(Duration::from_millis(300));
    let out = outer
        .move_on(async move {
            println!(
                "  outer scope, with_timeout(300 ms): {}",
                deadline_text(start)
            );
            let inner = quattro::move_on_after(Duration::from_millis(100), async move {
                println!(
                    "    inner scope, move_on_after(100 ms): {}",
                    deadline_text(start)
                );
                sleep(Duration::from_secs(10)).await;
            });
            let inner_scope = inner.cancel_scope();
            inner.await;
            println!(
                "    inner cut off at {} (cancelled_caught = {}: its own deadline fired)",
                ms(start, Instant::now()),
                inner_scope.cancelled_caught()
            );
            let later = quattro::move_on_after(Duration::from_secs(60), async move {
                println!(
                    "    inner scope, move_on_after(60 s): {} (the outer one: a later deadline \
                     changes nothing)",
                    deadline_text(start)
                );
                sleep(Duration::from_secs(10)).await;
            });
            later.await;
            unreachable!("the outer deadline drops this code first");
        })
        .await;
    println!(
        "  outer cut off at {} (result {out:?}, cancelled_caught = {})",
        ms(start, Instant::now()),
        outer.cancelled_caught()
    );
}

async fn failure(start: Instant) {
    println!("\n3. gather: one failure cancels the rest and is reported:");
    let running = Arc::new(AtomicUsize::new(0));
    let ids = [1, 99, 4, 5];
    let result = gather(ids.map(|id| backend(start, id, running.clone()))).await;
    match result {
        Ok(values) => println!("  -> values {values:?}"),
        Err(err) => println!("  -> gather returned an error: {err}"),
    }
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let start = Instant::now();
    fan_out(start).await;
    let start = Instant::now();
    nested_scopes(start).await;
    let start = Instant::now();
    failure(start).await;
}
