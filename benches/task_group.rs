//! Task groups beside the hand-written tokio code they replace: spawning and joining N tasks,
//! a limited fan-out, and cancelling a group of sleeping tasks.
//!
//! The workloads are those of the `compare` table (`common/mod.rs`): one iteration is one
//! whole job, run in a task on the runtime. Run with `cargo bench --bench task_group`; the
//! ratios with targets are in `cargo bench --bench compare -- group fan-out cancel`.

// `common` nests 64 generic layers of scope futures, deeper than rustc lays out by default.
#![recursion_limit = "512"]

mod common;

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};

use common::{
    CANCEL_TASKS, Cancel, FAN_OUT_LIMIT, FAN_OUT_TASKS, FanOut, Flavor, SpawnJoin, TASK_COUNTS,
    configure, count_label,
};

/// Spawn N trivial tasks and wait for all: `TaskGroup::scope` vs `JoinSet` + `join_next`,
/// `tokio::spawn` + the handles awaited in order, and `TaskTracker`.
fn spawn_join(c: &mut Criterion) {
    for flavor in Flavor::ALL {
        let rt = flavor.runtime();
        for n in TASK_COUNTS {
            let mut group =
                c.benchmark_group(format!("spawn_join_{}/{}", count_label(n), flavor.label()));
            configure(&mut group, n);
            for side in SpawnJoin::ALL {
                group.bench_function(side.id(), |b| {
                    b.iter_custom(|iters| side.time(&rt, n, iters))
                });
            }
            group.finish();
        }
    }
}

/// 100k trivial tasks, at most 16 at once: `concurrency_limit(16)` vs `JoinSet` + a permit
/// acquired before each spawn, `buffer_unordered(16)`, and spawn-all + a permit in each task.
fn fan_out(c: &mut Criterion) {
    let (n, limit) = (FAN_OUT_TASKS, FAN_OUT_LIMIT);
    for flavor in Flavor::ALL {
        let rt = flavor.runtime();
        let name = format!("fan_out_{}_limit{limit}/{}", count_label(n), flavor.label());
        let mut group = c.benchmark_group(name);
        configure(&mut group, n);
        for side in FanOut::ALL {
            group.bench_function(side.id(), |b| {
                b.iter_custom(|iters| side.time(&rt, n, limit, iters))
            });
        }
        group.finish();
    }
}

/// Cancel 10k tasks sleeping for an hour and wait until all are dropped: `TaskGroup::cancel`
/// vs `JoinSet::abort_all` + drain, and a `CancellationToken` each task selects on.
fn cancel(c: &mut Criterion) {
    let n = CANCEL_TASKS;
    for flavor in Flavor::ALL {
        let rt = flavor.runtime();
        let name = format!("cancel_{}_sleeping/{}", count_label(n), flavor.label());
        let mut group = c.benchmark_group(name);
        configure(&mut group, n);
        // About 20 ms an iteration: few samples, as for the big jobs.
        group.sample_size(10);
        group.sampling_mode(SamplingMode::Flat);
        for side in Cancel::ALL {
            group.bench_function(side.id(), |b| {
                b.iter_custom(|iters| side.time(&rt, n, iters))
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
    targets = spawn_join, fan_out, cancel
}
criterion_main!(benches);
