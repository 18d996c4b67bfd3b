//! Memory of a streaming gather: a crawl over N items with a limit peaks at O(limit), not
//! O(N). Counted with the shared counting allocator (one allocator per binary, so this file
//! holds only these tests). The million-item run is `--ignored` (CI runs it in release).

#[path = "counting_alloc/mod.rs"]
mod counting_alloc;

use counting_alloc::{live, peak, reset_peak};

#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;

/// A crawl of `n` lazy items, 32 in flight, consumed as they finish; returns the peak bytes
/// above what was live before it started.
fn crawl_peak(n: usize) -> isize {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let before = live();
        reset_peak();
        let mut pages = quattro::gather((0..n).map(|i| async move {
            tokio::task::yield_now().await; // a fetch that waits once
            Ok::<_, std::io::Error>(vec![0u8; 64 + i % 64]) // a small body
        }))
        .concurrency_limit(32)
        .unordered();
        let mut bytes = 0;
        while let Some(page) = pages.next().await {
            bytes += page.unwrap().1.len();
        }
        assert!(bytes >= 64 * n);
        drop(pages);
        peak() - before
    })
}

/// 10k and 100k items peak at the same memory: it does not grow with N.
#[test]
fn a_streaming_crawl_peaks_at_o_limit() {
    let small = crawl_peak(10_000);
    let large = crawl_peak(100_000);
    println!("peak above baseline: 10k items {small} B, 100k items {large} B");
    assert!(
        large < small + 16 * 1024,
        "memory grows with N: {small} B at 10k, {large} B at 100k"
    );
    assert!(large < 256 * 1024, "peak {large} B for 32 in flight");
}

/// The figure: a million-item crawl through the stream peaks at O(limit).
#[test]
#[ignore = "a million tasks: run in release with --ignored (CI does)"]
fn a_million_item_crawl_peaks_at_o_limit() {
    let small = crawl_peak(10_000);
    let million = crawl_peak(1_000_000);
    println!("peak above baseline: 10k items {small} B, 1M items {million} B");
    assert!(
        million < small + 16 * 1024,
        "memory grows with N: {small} B at 10k, {million} B at 1M"
    );
}
