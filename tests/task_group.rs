use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use quattro::{TaskGroup, current_effective_deadline, move_on_after};
use tokio::time::{Instant, sleep};

struct DropCount(Arc<AtomicUsize>);
impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn children_awaited() {
    let out = TaskGroup::scope(|tg| async move {
        let a = tg.spawn(async {
            sleep(Duration::from_secs(1)).await;
            Ok::<_, ()>(1)
        });
        let b = tg.spawn(async { Ok(2) });
        Ok((a, b))
    })
    .await
    .unwrap();
    let (a, b) = out;
    assert!(a.is_finished());
    assert_eq!(a.await.unwrap() + b.await.unwrap(), 3);
}

#[tokio::test(start_paused = true)]
async fn child_error_cancels_siblings_and_body() {
    let drops = Arc::new(AtomicUsize::new(0));
    let d = drops.clone();
    let err = TaskGroup::scope(|tg| async move {
        for _ in 0..3 {
            let g = DropCount(d.clone());
            tg.spawn(async move {
                let _g = g;
                sleep(Duration::from_secs(100)).await;
                Ok(())
            });
        }
        tg.spawn(async {
            sleep(Duration::from_secs(1)).await;
            Err::<(), _>("boom")
        });
        let _g = DropCount(d.clone());
        std::future::pending::<()>().await;
        Ok(())
    })
    .await
    .unwrap_err();
    assert_eq!(drops.load(Ordering::SeqCst), 4);
    assert_eq!(err.errors().collect::<Vec<_>>(), [&"boom"]);
}

#[tokio::test(start_paused = true)]
async fn scope_timeout_waits_for_children_drop() {
    let drops = Arc::new(AtomicUsize::new(0));
    let d = drops.clone();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(1);
    let out = move_on_after(
        Duration::from_secs(1),
        TaskGroup::scope(|tg| async move {
            for _ in 0..5 {
                let g = DropCount(d.clone());
                tg.spawn(async move {
                    assert_eq!(current_effective_deadline(), Some(deadline));
                    let _g = g;
                    sleep(Duration::from_secs(100)).await;
                    Ok::<_, ()>(())
                });
            }
            Ok(())
        }),
    )
    .await;
    assert!(out.is_none());
    assert_eq!(drops.load(Ordering::SeqCst), 5);
}

#[tokio::test(start_paused = true)]
async fn limit_never_exceeded() {
    let running = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let (r, m) = (running.clone(), max.clone());
    TaskGroup::builder()
        .concurrency_limit(7)
        .scope(|tg| async move {
            for i in 0..1025u64 {
                let (r, m) = (r.clone(), m.clone());
                tg.spawn(async move {
                    let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                    m.fetch_max(now, Ordering::SeqCst);
                    sleep(Duration::from_millis(i % 13)).await;
                    r.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, ()>(())
                });
            }
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(max.load(Ordering::SeqCst), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_thread_nested_groups_dropped() {
    let drops = Arc::new(AtomicUsize::new(0));
    let d = drops.clone();
    let out = move_on_after(
        Duration::from_millis(20),
        TaskGroup::scope(|tg| async move {
            for _ in 0..4 {
                let d = d.clone();
                tg.spawn(async move {
                    TaskGroup::scope(|inner| async move {
                        for _ in 0..4 {
                            let g = DropCount(d.clone());
                            inner.spawn(async move {
                                let _g = g;
                                std::future::pending::<()>().await;
                                Ok::<_, ()>(())
                            });
                        }
                        Ok(())
                    })
                    .await
                    .map_err(|_| ())
                });
            }
            Ok(())
        }),
    )
    .await;
    assert!(out.is_none());
    assert_eq!(drops.load(Ordering::SeqCst), 16);
}
