//! Cancel scopes beside `tokio::time::timeout`, the code they replace.
//!
//! Every future is built and polled to completion in place (see `common::poll_in_place`), so
//! the figures are the cost of the wrappers themselves: building the scope, entering it on
//! each poll, arming and dropping the timer. Run with `cargo bench --bench scope`.

// 64 generic layers of scope futures are deeper than rustc lays out by default.
#![recursion_limit = "512"]

mod common;

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

use common::{DEPTHS, Flavor};

/// A ready future (0 pendings) and a one-yield future (1 pending) inside one scope.
fn single(c: &mut Criterion) {
    for flavor in Flavor::ALL {
        let rt = flavor.runtime();
        for (what, pendings) in [("ready", 0), ("one_yield", 1)] {
            let mut group = c.benchmark_group(format!("scope_{what}/{}", flavor.label()));
            group.bench_function("move_on_after", |b| {
                b.iter_custom(|iters| {
                    common::time_in_place(&rt, iters, || common::move_on_after_yield(pendings))
                })
            });
            group.bench_function("fail_after", |b| {
                b.iter_custom(|iters| {
                    common::time_in_place(&rt, iters, || common::fail_after_yield(pendings))
                })
            });
            group.bench_function("tokio_timeout", |b| {
                b.iter_custom(|iters| {
                    common::time_in_place(&rt, iters, || common::timeout_yield(pendings))
                })
            });
            group.finish();
        }
    }
}

/// `depth` nested scopes around a future that returns `Pending` ten times.
fn nested(c: &mut Criterion) {
    for flavor in Flavor::ALL {
        let rt = flavor.runtime();
        let mut group = c.benchmark_group(format!("scope_nested_pending10/{}", flavor.label()));
        for depth in DEPTHS {
            group.bench_with_input(
                BenchmarkId::new("move_on_after", depth),
                &depth,
                |b, &depth| b.iter_custom(|iters| common::time_nested_scopes(&rt, depth, iters)),
            );
            group.bench_with_input(
                BenchmarkId::new("tokio_timeout", depth),
                &depth,
                |b, &depth| {
                    b.iter_custom(|iters| {
                        common::time_nested_timeouts(&rt, black_box(depth), iters)
                    })
                },
            );
        }
        group.finish();
    }
}

criterion_group!(benches, single, nested);
criterion_main!(benches);
