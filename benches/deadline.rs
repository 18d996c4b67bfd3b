//! `current_effective_deadline()` beside a bare `tokio::task_local!` read.
//!
//! Services call the lookup on hot paths to propagate deadlines, so it should stay within a
//! small factor of the cheapest way to carry a value along a task. Only the lookups are timed,
//! inside scopes that were entered beforehand. Run with `cargo bench --bench deadline`.

// 64 generic layers of scope futures are deeper than rustc lays out by default.
#![recursion_limit = "512"]

mod common;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

use common::{DEPTHS, Flavor};

fn lookup(c: &mut Criterion) {
    for flavor in Flavor::ALL {
        let rt = flavor.runtime();
        let mut group = c.benchmark_group(format!("effective_deadline/{}", flavor.label()));
        for depth in DEPTHS {
            group.bench_with_input(
                BenchmarkId::new("current_effective_deadline", depth),
                &depth,
                |b, &depth| {
                    b.iter_custom(|iters| common::time_effective_deadline(&rt, depth, iters))
                },
            );
        }
        // Depth does not matter to a task-local: one line in the same group as reference.
        group.bench_function("task_local_read", |b| {
            b.iter_custom(|iters| common::time_task_local_read(&rt, iters))
        });
        group.finish();
    }
}

criterion_group!(benches, lookup);
criterion_main!(benches);
