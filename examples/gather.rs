//! `gather`: run futures as tasks, get every result in input order, or cancel the rest.
//!
//! Five short scenes: results in input order, the first failure cancelling the rest,
//! `gather_settled` keeping every outcome, `gather!` for a typed tuple, and a concurrency limit
//! that pulls a lazy input only as slots free.
//!
//! ```text
//! cargo run --example gather
//! RUST_LOG=quattro=debug cargo run --example gather   # with the crate's tracing
//! ```
//!
//! Each line starts with the time since the scene began. What to look for:
//!
//! - Scene 1: the lookups finish in the order 2, 3, 1, but the result lists them in input order.
//! - Scene 2: lookup -2 fails at 20 ms. Lookups 3 and 4 are cancelled at that moment, and the
//!   error names the failed item by its input position.
//! - Scene 3: every outcome comes back, the failure included, and lookup 3 still finishes.
//! - Scene 5: when item 250 starts, only about 250 of the 1000 inputs have been pulled. The
//!   input is read as slots free, not all at once, and never more than 4 run at once.
//!
//! It runs for about a quarter of a second.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use quattro::{gather, gather_settled};
use tokio::time::{Instant, sleep};
use tracing_subscriber::EnvFilter;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn say(start: Instant, what: impl std::fmt::Display) {
    println!("  [{:>3} ms] {what}", start.elapsed().as_millis());
}

/// A pretend lookup: takes `took` ms, fails for negative ids.
async fn lookup(start: Instant, id: i64, took: u64) -> Result<String, String> {
    sleep(ms(took)).await;
    if id < 0 {
        say(start, format!("lookup {id} fails"));
        return Err(format!("no such id {id}"));
    }
    say(start, format!("lookup {id} done"));
    Ok(format!("item-{id}"))
}

/// Prints when a lookup is cancelled (its future dropped) before it finished.
struct Dropped {
    start: Instant,
    id: i64,
    done: bool,
}

impl Drop for Dropped {
    fn drop(&mut self) {
        if !self.done {
            say(
                self.start,
                format!("lookup {} cancelled (another lookup failed)", self.id),
            );
        }
    }
}

async fn guarded_lookup(start: Instant, id: i64, took: u64) -> Result<String, String> {
    let mut guard = Dropped {
        start,
        id,
        done: false,
    };
    let out = lookup(start, id, took).await;
    guard.done = true;
    out
}

#[tokio::main]
async fn main() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    println!("1. gather: they finish in any order, the results keep input order");
    let start = Instant::now();
    let items = gather([(1, 30), (2, 10), (3, 20)].map(|(id, took)| lookup(start, id, took))).await;
    say(start, format!("gather returned {items:?}\n"));

    println!("2. the first failure cancels the rest and comes back in a GroupError");
    println!("   (the error names the item by its input position, counting from 0)");
    let start = Instant::now();
    let items = gather(
        [(1, 10), (-2, 20), (3, 200), (4, 300)].map(|(id, took)| guarded_lookup(start, id, took)),
    )
    .await;
    match items {
        Ok(items) => say(start, format!("gather returned {items:?}")),
        Err(err) => say(start, format!("gather returned an error: {err}")),
    }
    println!();

    println!("3. gather_settled: no item cancels another, every outcome comes back");
    let start = Instant::now();
    let slots =
        gather_settled([(1, 10), (-2, 20), (3, 30)].map(|(id, took)| lookup(start, id, took)))
            .await;
    for (i, slot) in slots.into_iter().enumerate() {
        match slot {
            Ok(item) => say(start, format!("result {i}: {item}")),
            Err(err) => say(
                start,
                format!(
                    "result {i}: failed: {:?}",
                    err.into_error().unwrap_or_default()
                ),
            ),
        }
    }
    println!();

    println!("4. gather!: futures of different types, a typed tuple back");
    let start = Instant::now();
    let tuple = quattro::gather!(lookup(start, 7, 20), async move {
        sleep(ms(10)).await;
        Ok::<_, String>(42u32)
    })
    .await;
    match tuple {
        Ok((item, count)) => say(start, format!("gather! returned ({item:?}, {count})\n")),
        Err(err) => say(start, format!("gather! failed: {err}\n")),
    }

    println!("5. concurrency_limit(4) over a lazy input of 1000 items: pulled only as slots free");
    let start = Instant::now();
    let pulled = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let items = {
        let (pulled, running, most) = (pulled.clone(), running.clone(), most.clone());
        (0..1000u64).map(move |i| {
            pulled.fetch_add(1, Ordering::SeqCst);
            let (pulled, running, most) = (pulled.clone(), running.clone(), most.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                if i % 250 == 0 {
                    // A few slow ones; when they start, most of the input is still unpulled.
                    let so_far = pulled.load(Ordering::SeqCst);
                    say(
                        start,
                        format!("item {i} starts: {so_far} of 1000 pulled so far"),
                    );
                    sleep(ms(20)).await;
                } else {
                    tokio::task::yield_now().await;
                }
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, String>(i * i)
            }
        })
    };
    let squares = gather(items).concurrency_limit(4).await.unwrap();
    say(
        start,
        format!(
            "{} results (sum {}), {} futures pulled from the input, at most {} running at once",
            squares.len(),
            squares.iter().sum::<u64>(),
            pulled.load(Ordering::SeqCst),
            most.load(Ordering::SeqCst)
        ),
    );
}
