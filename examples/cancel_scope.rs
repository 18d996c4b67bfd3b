//! Nested cancel scopes with deadlines, on a pretend request that takes too long.
//!
//! The request gets 800 ms (`move_on_after`). Inside it, the avatar gets 300 ms (`fail_after`:
//! running out is an error the request can handle) and the recommendations 200 ms
//! (`move_on_after`: running out just skips them). The code inside reads the deadline in force
//! with `current_effective_deadline` and `propagate::header_value`.
//!
//! ```text
//! cargo run --example cancel_scope
//! RUST_LOG=quattro=trace cargo run --example cancel_scope   # with the crate's own tracing
//! ```
//!
//! Each line starts with the time since the start, and is indented by nesting level. What to
//! look for:
//!
//! - ✓ marks work that finished, ✗ work cut off by its scope's deadline (its future was dropped,
//!   so none of its code ran after that point).
//! - The thumbnail asks for 1000 ms, but the deadline in force stays the avatar's: an inner
//!   scope can shorten the deadline, never extend it.
//! - The `grpc-timeout` value is the time left, as a gRPC call made there would send it.
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
        say(
            1,
            "recommendations skipped: their 200 ms ran out, move_on_after gave None",
        );
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
    let own_deadline = Instant::now() + ms(1000);
    move_on_after(ms(1000), async move {
        // The enclosing avatar deadline is earlier, so it stays in force.
        say_deadline(3);
        say(
            3,
            format!(
                "(not at {} ms: the avatar's earlier deadline stays in force)",
                since_start(own_deadline)
            ),
        );
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
        let verb = if self.finished {
            "done"
        } else {
            "cut off at the deadline"
        };
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

/// Says when the deadline in force falls (in ms since the start), and the `grpc-timeout`
/// value a call made here would send: the time left, spelled out.
fn say_deadline(depth: usize) {
    match (current_effective_deadline(), propagate::header_value()) {
        (Some(deadline), Some(header)) => say(
            depth,
            format!(
                "deadline in force: at {} ms, {} ms from now (grpc-timeout: {header}, {})",
                since_start(deadline),
                deadline
                    .saturating_duration_since(Instant::now())
                    .as_millis(),
                spelled_out(header)
            ),
        ),
        _ => say(depth, "no deadline in force"),
    }
}

/// A `grpc-timeout` value is a number and a unit letter: `198554u` is 198554 microseconds.
fn spelled_out(header: impl Display) -> String {
    let header = header.to_string();
    let (number, unit) = header.split_at(header.len() - 1);
    let unit = match unit {
        "H" => "hours",
        "M" => "minutes",
        "S" => "seconds",
        "m" => "milliseconds",
        "u" => "microseconds",
        "n" => "nanoseconds",
        _ => "(unknown unit)",
    };
    format!("i.e. {number} {unit}")
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}
