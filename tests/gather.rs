use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use quattro::{gather, gather_settled};
use tokio::time::sleep;

struct DropCount(Arc<AtomicUsize>);
impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn empty_needs_no_runtime() {
    let empty: Vec<std::future::Ready<Result<(), ()>>> = Vec::new();
    let out = futures::executor::block_on(gather(empty));
    assert_eq!(out.unwrap(), Vec::<()>::new());
}

#[tokio::test(start_paused = true)]
async fn input_order_under_reversed_completion() {
    let v = gather((0..10u64).map(|i| async move {
        sleep(Duration::from_millis(100 - i * 10)).await;
        Ok::<_, ()>(i)
    }))
    .await
    .unwrap();
    assert_eq!(v, (0..10).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn error_cancels_the_rest() {
    let drops = Arc::new(AtomicUsize::new(0));
    let futs: Vec<std::pin::Pin<Box<dyn Future<Output = Result<u32, &str>> + Send>>> = (0..5u32)
        .map(|i| {
            let g = DropCount(drops.clone());
            Box::pin(async move {
                let _g = g;
                if i == 2 {
                    sleep(Duration::from_millis(10)).await;
                    return Err("boom");
                }
                sleep(Duration::from_secs(10)).await;
                Ok(i)
            }) as _
        })
        .collect();
    let err = gather(futs).await.unwrap_err();
    assert_eq!(err.errors().collect::<Vec<_>>(), [&"boom"]);
    assert_eq!(drops.load(Ordering::SeqCst), 5);
}

#[tokio::test(start_paused = true)]
async fn limited_is_lazy_and_bounded() {
    let pulled = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let (p, r, m) = (pulled.clone(), running.clone(), max.clone());
    let iter = (0..100_000u64).map(move |i| {
        p.fetch_add(1, Ordering::SeqCst);
        let (r, m) = (r.clone(), m.clone());
        async move {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            tokio::task::yield_now().await;
            r.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, ()>(i)
        }
    });
    let v = gather(iter).concurrency_limit(16).await.unwrap();
    assert_eq!(v.len(), 100_000);
    assert_eq!(max.load(Ordering::SeqCst), 16);
    assert_eq!(pulled.load(Ordering::SeqCst), 100_000);
}

#[tokio::test(start_paused = true)]
async fn settled_keeps_positions() {
    let slots = gather_settled((0..3).map(|i| async move {
        if i == 1 {
            Err("bad")
        } else {
            Ok(i)
        }
    }))
    .await;
    assert_eq!(slots[0].as_ref().ok(), Some(&0));
    assert!(slots[1].as_ref().unwrap_err().is_failed());
    assert_eq!(slots[2].as_ref().ok(), Some(&2));
}

#[tokio::test]
async fn tuple_macro() {
    let (a, b, c) = quattro::gather!(async { Ok::<_, ()>(1u8) }, async { Ok("s") }, async {
        Ok(2.5f64)
    })
    .await
    .unwrap();
    assert_eq!((a, b, c), (1, "s", 2.5));
}
