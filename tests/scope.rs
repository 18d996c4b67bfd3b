use std::time::Duration;

use quattro::{CancelScope, current_effective_deadline, fail_after, move_on_after};
use tokio::time::{Instant, sleep};

#[tokio::test(start_paused = true)]
async fn move_on_after_cancels_at_deadline() {
    let start = Instant::now();
    let fut = move_on_after(Duration::from_millis(500), sleep(Duration::from_secs(1)));
    let scope = fut.cancel_scope();
    assert_eq!(fut.await, None);
    assert!(scope.cancelled_caught());
    assert_eq!(start.elapsed(), Duration::from_millis(500));
}

#[tokio::test(start_paused = true)]
async fn nested_same_deadline_outer_wins() {
    let deadline = Instant::now() + Duration::from_secs(1);
    let outer = CancelScope::with_deadline(deadline);
    let inner = CancelScope::with_deadline(deadline);
    let inner2 = inner.clone();
    let out = outer
        .move_on(async move {
            inner2.move_on(sleep(Duration::from_secs(5))).await;
            panic!("inner must not claim the cancellation");
        })
        .await;
    assert_eq!(out, None::<()>);
    assert!(outer.cancelled_caught());
    assert!(!inner.cancelled_caught());
}

#[tokio::test(start_paused = true)]
async fn precancel_and_past_deadline() {
    let scope = CancelScope::new();
    scope.cancel();
    assert_eq!(scope.move_on(async { 3 }).await, Some(3));
    assert!(!scope.cancelled_caught());
    let past = Instant::now() - Duration::from_secs(10);
    let r = quattro::fail_at(past, sleep(Duration::from_secs(1))).await;
    assert!(r.unwrap_err().is_deadline_reached());
    assert!(fail_after(Duration::MAX, async { 1 }).await.is_ok());
    assert_eq!(current_effective_deadline(), None);
}

#[tokio::test(start_paused = true)]
async fn set_deadline_moves_one_timer() {
    let scope = CancelScope::with_timeout(Duration::from_secs(1));
    let h = scope.clone();
    let start = Instant::now();
    let out = scope
        .move_on(async move {
            for i in 0..10_000u64 {
                h.set_deadline(Some(start + Duration::from_millis(2000 + i)));
                tokio::task::yield_now().await;
            }
            assert_eq!(current_effective_deadline(), Some(start + Duration::from_millis(11_999)));
            sleep(Duration::from_secs(100)).await;
        })
        .await;
    assert_eq!(out, None);
    assert_eq!(start.elapsed(), Duration::from_millis(11_999));
}
