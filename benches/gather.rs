//! `gather` beside the hand-written tokio code it replaces: N futures run as tasks, values in
//! input order, unlimited and with a concurrency limit.
//!
//! The workloads are those of the `compare` table (`common/mod.rs`): one iteration is one
//! whole gather, run in a task on the runtime. `JoinSet` + index bookkeeping is the peer that
//! does the same job (every item a task); `try_join_all` and futures-concurrency's
//! `Vec::try_join` poll every future inside the caller's task and are shown for context. Run
//! with `cargo bench --bench gather`; the ratios with targets are in
//! `cargo bench --bench compare -- gather`.

// `common` nests 64 generic layers of scope futures, deeper than rustc lays out by default.
#![recursion_limit = "512"]

mod common;

use criterion::{Criterion, criterion_group, criterion_main};

use common::{
    FAN_OUT_LIMIT, FAN_OUT_TASKS, Flavor, Gather, LimitedGather, TASK_COUNTS, configure,
    count_label,
};

/// `gather` of N trivial futures vs `JoinSet` + index, `try_join_all` and `Vec::try_join`.
fn gather(c: &mut Criterion) {
    for flavor in Flavor::ALL {
        let rt = flavor.runtime();
        for n in TASK_COUNTS {
            let mut group =
                c.benchmark_group(format!("gather_{}/{}", count_label(n), flavor.label()));
            configure(&mut group, n);
            for side in Gather::ALL {
                group.bench_function(side.id(), |b| {
                    b.iter_custom(|iters| side.time(&rt, n, iters))
                });
            }
            group.finish();
        }
    }
}

/// A gather of 100k trivial futures, at most 16 at once, vs `JoinSet` + `Semaphore` + index
/// and `buffered(16)` over spawned tasks.
fn limited(c: &mut Criterion) {
    let (n, limit) = (FAN_OUT_TASKS, FAN_OUT_LIMIT);
    for flavor in Flavor::ALL {
        let rt = flavor.runtime();
        let name = format!("gather_{}_limit{limit}/{}", count_label(n), flavor.label());
        let mut group = c.benchmark_group(name);
        configure(&mut group, n);
        for side in LimitedGather::ALL {
            group.bench_function(side.id(), |b| {
                b.iter_custom(|iters| side.time(&rt, n, limit, iters))
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    // A tenth of the default bootstrap resamples: the analysis otherwise takes longer than
    // measuring the fast jobs.
    config = Criterion::default().nresamples(10_000);
    targets = gather, limited
}
criterion_main!(benches);
