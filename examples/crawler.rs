//! A crawler over a long list of URLs, with the streaming form of `gather`
//! (`gather_settled(urls).concurrency_limit(32).unordered()`): 32 fetches in flight, pages
//! handled as they finish, and a missing page does not stop the crawl.
//!
//! The fetch is simulated (a yield and a made-up body) so that the example runs anywhere. Each
//! fetch runs under the crawl's deadline (`move_on_after`), which a real client would pass on.
//!
//! The argument is the number of URLs (200000 if none):
//!
//! ```text
//! cargo run --example crawler -- 20000
//! cargo run --release --example crawler -- 1000000
//! ```
//!
//! What to look for: the peak memory after 1% of the pages and at the end are about the same,
//! however many URLs you give. The list is read lazily, and only 32 fetches exist at a time.
//! One URL in 10000 is missing: the first few failures are printed, all are counted.

use std::time::Duration;

use quattro::{current_effective_deadline, gather};

/// Fetches one page: here, waits a little and makes up a body.
async fn fetch(url: String) -> Result<usize, std::io::Error> {
    // A real client would send `current_effective_deadline()` on (see `quattro::propagate`).
    debug_assert!(current_effective_deadline().is_some());
    tokio::task::yield_now().await; // stands in for the network
    if url.ends_with("/gone") {
        return Err(std::io::Error::other(format!("{url}: not found")));
    }
    Ok(512 + url.len())
}

/// The peak resident memory of this process (Linux's `VmHWM`), if the system tells it.
fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            Some(line.trim_start_matches("VmHWM:").trim().to_string())
        })
        .unwrap_or_else(|| "unknown (no /proc/self/status)".to_string())
}

#[tokio::main]
async fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    let urls = (0..count).map(|i| {
        let path = if i % 10_000 == 9_999 {
            "gone".to_string()
        } else {
            i.to_string()
        };
        format!("https://example.com/{path}")
    });

    let crawl = quattro::move_on_after(Duration::from_secs(600), async move {
        // Lazy input, 32 in flight, settled so that a missing page does not stop the crawl.
        let mut pages = gather::gather_settled(urls.map(fetch))
            .concurrency_limit(32)
            .unordered();
        let (mut bytes, mut failed, mut done) = (0usize, 0usize, 0usize);
        while let Some((_index, page)) = pages.next().await {
            match page {
                Ok(size) => bytes += size,
                Err(err) => {
                    failed += 1;
                    if failed <= 3 {
                        println!("  page failed, the crawl goes on: {err}");
                    }
                }
            }
            done += 1;
            if done == (count / 100).max(1) {
                println!("after {done} of {count} pages: peak memory {}", peak_rss());
            }
        }
        (bytes, failed)
    });
    match crawl.await {
        Some((bytes, failed)) => {
            println!("crawled {count} pages ({bytes} bytes, {failed} failed)");
            println!(
                "after all {count} pages: peak memory {} (about the same as above: it does not \
                 grow with the list)",
                peak_rss()
            );
        }
        None => println!("the crawl ran out of time (its 600 s deadline passed)"),
    }
}
