//! Nested cancel scopes with deadlines, on a pretend request that takes too long.
//!
//! Each line shows the time since the start, then, indented by nesting level, what started,
//! what finished (✓) and what was cut off (✗), and the deadline in force with the
//! `grpc-timeout` value an outgoing call would carry.
//!
//! ```text
//! cargo run --example cancel_scope
//! RUST_LOG=quattro=trace cargo run --example cancel_scope   # with the crate's own tracing
//! ```
//!
//! It runs for about 0.8 s of real time.

use std::fmt::Display;
use std::sync::OnceLock;
use std::time::Duration;

use quattro::{current_effective_deadline, fail_after, move_on_after, propagate};
use tokio::time::{Instant, sleep};
use tracing_subscriber::EnvFilter;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::from_default_env())
        .init();
    START.get_or_init(Instant::now);

    say(0, "request: move_on_after(800 ms)");
    let response = move_on_after(ms(800), request()).await;
    match response {
        Some(()) => say(0, "request finished"),
        None => say(
            0,
            "request cut off at its deadline: move_on_after gave None",
        ),
    }
}

/// The request: some work, two sub-scopes, then more work than the deadline leaves room for.
async fn request() {
    say_deadline(1);
    work(1, "load user", 100).await;

    let avatar = fail_after(ms(300), avatar()).await;
    if let Err(elapsed) = avatar {
        say(
            1,
            format!("avatar scope failed: {elapsed}; carrying on without it"),
        );
    }

    say(1, "move_on_after(200 ms): recommendations");
    let recommendations = move_on_after(ms(200), async {
        say_deadline(2);
        work(2, "rank recommendations", 300).await;
    })
    .await;
    if recommendations.is_none() {
        say(1, "recommendations skipped: their scope moved on");
    }

    work(1, "render page", 300).await;
    say(
        1,
        "response sent (not reached: the request deadline falls first)",
    );
}

async fn avatar() {
    say(1, "fail_after(300 ms): avatar");
    say_deadline(2);
    work(2, "download avatar", 100).await;

    say(2, "move_on_after(1000 ms): thumbnail");
    move_on_after(ms(1000), async {
        // The enclosing avatar deadline is earlier, so it stays in force.
        say_deadline(3);
        work(3, "resize thumbnail", 500).await;
    })
    .await;
    say(
        2,
        "thumbnail done (not reached: the avatar scope dropped this future)",
    );
}

/// Pretends to work for `millis`, and reports whether it finished or was cut off.
async fn work(depth: usize, name: &'static str, millis: u64) {
    let mut report = Report {
        depth,
        name,
        finished: false,
    };
    say(depth, format!("▶ {name} ({millis} ms of work)"));
    sleep(ms(millis)).await;
    report.finished = true;
}

/// Says how the work it guards ended. A cancelled scope drops the future inside it, so the
/// "cut off" line comes from this destructor: no other code of the cut-off work runs.
struct Report {
    depth: usize,
    name: &'static str,
    finished: bool,
}

impl Drop for Report {
    fn drop(&mut self) {
        let outcome = if self.finished { "✓" } else { "✗" };
        let verb = if self.finished { "done" } else { "cut off" };
        say(self.depth, format!("{outcome} {} {verb}", self.name));
    }
}

static START: OnceLock<Instant> = OnceLock::new();

fn since_start(at: Instant) -> u128 {
    at.saturating_duration_since(*START.get().expect("set in main"))
        .as_millis()
}

fn say(depth: usize, message: impl Display) {
    let indent = "    ".repeat(depth);
    println!("{:>4} ms  {indent}{message}", since_start(Instant::now()));
}

fn say_deadline(depth: usize) {
    match (current_effective_deadline(), propagate::header_value()) {
        (Some(deadline), Some(header)) => say(
            depth,
            format!(
                "deadline in force: +{} ms (grpc-timeout: {header})",
                since_start(deadline)
            ),
        ),
        _ => say(depth, "no deadline in force"),
    }
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}
