//! One table, quattro beside the hand-written tokio code it replaces, as ratios.
//!
//! `cargo bench --bench compare [-- <filter>...] [--rounds N] [--sample-ms MS] [--list]`
//!
//! Criterion measures one benchmark after the other; on a shared machine the load changes
//! between them and a ratio of two such figures mixes the code's cost with the machine's mood.
//! Here the sides of a job run interleaved — one sample of each per round, in an order that
//! rotates from round to round so that no side always follows the same one — and the ratio is
//! the median over rounds of the per-round ratio, so a slow stretch hits both sides of a round
//! alike. Self-check rows pit a peer against itself to show how much noise is left.
//!
//! Adding a row: build a [`Job`] in one of the `*_jobs` functions below (see
//! `benches/README.md`).

// 64 generic layers of scope futures are deeper than rustc lays out by default.
#![recursion_limit = "512"]

mod common;
mod memory;

use std::fmt::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use common::{
    CANCEL_TASKS, Cancel, DEPTHS, FAN_OUT_LIMIT, FAN_OUT_TASKS, FanOut, Flavor, Gather,
    LimitedGather, SpawnJoin, TASK_COUNTS, count_label,
};

// --- the harness ---------------------------------------------------------------------------

/// Runs a side `iters` times and returns the total cost in the job's unit.
type Side = Rc<dyn Fn(u64) -> f64>;

/// What the sides of a job return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unit {
    /// Nanoseconds for all `iters` runs; the harness divides by `iters`.
    Time,
    /// Bytes (e.g. peak memory) of one run; such jobs run with `iters == 1`.
    Bytes,
}

#[derive(Clone, Copy, Debug)]
enum Target {
    /// The quattro side must cost at most this multiple of the best peer.
    AtMost(f64),
    /// Shown for context; no target.
    Info,
    /// Both sides are the same code: the ratio is the noise floor of the table.
    SelfCheck,
}

/// One row of the table: quattro's side and the hand-written code it is compared with.
struct Job {
    name: String,
    unit: Unit,
    target: Target,
    quattro: Side,
    peers: Vec<(String, Side)>,
    /// Overrides `--rounds` for jobs whose samples are slow (a process per memory sample).
    rounds: Option<usize>,
}

impl Job {
    /// A timed job; `quattro` runs the work `iters` times and returns the time taken.
    fn timed(
        name: impl Into<String>,
        target: Target,
        quattro: impl Fn(u64) -> Duration + 'static,
    ) -> Job {
        Job {
            name: name.into(),
            unit: Unit::Time,
            target,
            quattro: Rc::new(move |iters| quattro(iters).as_nanos() as f64),
            peers: Vec::new(),
            rounds: None,
        }
    }

    /// A job whose sides report a size in bytes for one run (peak memory).
    fn bytes(name: impl Into<String>, target: Target, quattro: impl Fn() -> u64 + 'static) -> Job {
        Job {
            name: name.into(),
            unit: Unit::Bytes,
            target,
            quattro: Rc::new(move |_| quattro() as f64),
            peers: Vec::new(),
            rounds: None,
        }
    }

    /// Adds a timed peer. With several peers the ratio is taken against the fastest.
    fn peer(mut self, name: impl Into<String>, side: impl Fn(u64) -> Duration + 'static) -> Job {
        assert_eq!(self.unit, Unit::Time, "a timed peer for a bytes job");
        let side: Side = Rc::new(move |iters| side(iters).as_nanos() as f64);
        self.peers.push((name.into(), side));
        self
    }

    /// Adds a peer that reports bytes.
    fn peer_bytes(mut self, name: impl Into<String>, side: impl Fn() -> u64 + 'static) -> Job {
        assert_eq!(self.unit, Unit::Bytes, "a bytes peer for a timed job");
        let side: Side = Rc::new(move |_| side() as f64);
        self.peers.push((name.into(), side));
        self
    }

    /// Runs this job for `rounds` rounds whatever `--rounds` says.
    fn rounds(mut self, rounds: usize) -> Job {
        self.rounds = Some(rounds.max(1));
        self
    }

    /// A row measuring `side` against itself.
    fn self_check(name: &str, side: impl Fn(u64) -> Duration + 'static) -> Job {
        let side: Side = Rc::new(move |iters| side(iters).as_nanos() as f64);
        Job {
            name: format!("self-check: {name}"),
            unit: Unit::Time,
            target: Target::SelfCheck,
            quattro: side.clone(),
            peers: vec![(name.to_owned(), side)],
            rounds: None,
        }
    }
}

struct Settings {
    filters: Vec<String>,
    rounds: usize,
    sample: Duration,
    list: bool,
}

impl Settings {
    fn from_args() -> Settings {
        let mut settings = Settings {
            filters: Vec::new(),
            rounds: 151,
            sample: Duration::from_millis(1),
            list: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--rounds" => settings.rounds = number(args.next(), "--rounds").max(3) as usize,
                "--sample-ms" => {
                    settings.sample = Duration::from_millis(number(args.next(), "--sample-ms"))
                }
                "--list" => settings.list = true,
                // `cargo bench` passes `--bench` to every bench binary.
                "--bench" => {}
                flag if flag.starts_with("--") => {
                    eprintln!("compare: ignoring unknown flag {flag}")
                }
                filter => settings.filters.push(filter.to_owned()),
            }
        }
        settings
    }

    fn selects(&self, job: &Job) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| job.name.contains(f.as_str()))
    }
}

fn number(arg: Option<String>, flag: &str) -> u64 {
    arg.and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{flag} takes a number"))
}

/// What one job measured: per-iteration medians and the paired ratio.
struct Outcome {
    quattro: f64,
    best_peer: String,
    best_peer_value: f64,
    ratio: f64,
    ratio_p25: f64,
    ratio_p75: f64,
}

/// How many iterations make one sample last about `sample`.
fn calibrate(side: &Side, sample: Duration) -> u64 {
    let goal = sample.as_nanos() as f64;
    let mut iters = 1u64;
    loop {
        let took = side(iters);
        if took >= goal / 8.0 || iters >= 1 << 40 {
            return ((iters as f64 * goal / took.max(1.0)).ceil() as u64).max(1);
        }
        iters *= 8;
    }
}

fn run(job: &Job, settings: &Settings) -> Outcome {
    let sides: Vec<&Side> = std::iter::once(&job.quattro)
        .chain(job.peers.iter().map(|(_, side)| side))
        .collect();
    let iters = match job.unit {
        Unit::Time => calibrate(&job.quattro, settings.sample),
        Unit::Bytes => 1,
    };
    // One unrecorded sample each: first-touch page faults, lazy runtime state, cold caches.
    for side in &sides {
        side(iters);
    }

    let n = sides.len();
    let rounds = job.rounds.unwrap_or(settings.rounds);
    let mut samples = vec![Vec::with_capacity(rounds); n];
    for round in 0..rounds {
        // Rotating the start varies which side runs right after which; reversing every other
        // lap of rotations varies it again when there are more than two sides.
        let mut order: Vec<usize> = (0..n).map(|i| (i + round) % n).collect();
        if (round / n) % 2 == 1 {
            order.reverse();
        }
        for i in order {
            samples[i].push(sides[i](iters) / iters as f64);
        }
    }

    let medians: Vec<f64> = samples.iter().map(|s| percentile(s, 0.5)).collect();
    let best = (1..n)
        .min_by(|&a, &b| medians[a].total_cmp(&medians[b]))
        .expect("a job has at least one peer");
    let ratios: Vec<f64> = samples[0]
        .iter()
        .zip(&samples[best])
        .map(|(q, p)| q / p)
        .collect();
    Outcome {
        quattro: medians[0],
        best_peer: job.peers[best - 1].0.clone(),
        best_peer_value: medians[best],
        ratio: percentile(&ratios, 0.5),
        ratio_p25: percentile(&ratios, 0.25),
        ratio_p75: percentile(&ratios, 0.75),
    }
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let pos = p * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn format_value(unit: Unit, value: f64) -> String {
    match unit {
        Unit::Time if value < 1e3 => format!("{value:.1} ns"),
        Unit::Time if value < 1e6 => format!("{:.2} µs", value / 1e3),
        Unit::Time => format!("{:.2} ms", value / 1e6),
        Unit::Bytes if value < 1e6 => format!("{:.1} kB", value / 1e3),
        Unit::Bytes => format!("{:.1} MB", value / 1e6),
    }
}

fn row(job: &Job, out: &Outcome) -> String {
    let (target, ok) = match job.target {
        Target::AtMost(max) => (
            format!("≤ {max:.2}×"),
            if out.ratio <= max { "yes" } else { "NO" }.to_owned(),
        ),
        Target::Info => ("info".to_owned(), "–".to_owned()),
        Target::SelfCheck => (
            "≈ 1.00×".to_owned(),
            format!("noise {:+.1}%", (out.ratio - 1.0) * 100.0),
        ),
    };
    let mut line = String::new();
    write!(
        line,
        "| {} | {} | {} {} | {:.2}× | {} | {} | {:.2}–{:.2} |",
        job.name,
        format_value(job.unit, out.quattro),
        out.best_peer,
        format_value(job.unit, out.best_peer_value),
        out.ratio,
        target,
        ok,
        out.ratio_p25,
        out.ratio_p75,
    )
    .expect("write to a String");
    line
}

fn main() {
    // A memory sample re-runs this binary with a hidden flag; that child stops here.
    memory::run_side_if_asked();
    let settings = Settings::from_args();
    let rts = Runtimes {
        ct: Rc::new(Flavor::CurrentThread.runtime()),
        mt: Rc::new(Flavor::MultiThread.runtime()),
    };
    let jobs: Vec<Job> = [
        scope_jobs(&rts),
        deadline_jobs(&rts),
        self_checks(&rts),
        group_jobs(&rts),
        gather_jobs(&rts),
        fan_out_jobs(&rts),
        cancel_jobs(&rts),
        memory_jobs(&rts),
    ]
    .into_iter()
    .flatten()
    .filter(|job| settings.selects(job))
    .collect();

    if settings.list {
        for job in &jobs {
            println!("{}", job.name);
        }
        return;
    }
    if jobs.is_empty() {
        eprintln!("compare: no job matches {:?}; try --list", settings.filters);
        return;
    }

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "quattro compare: {} jobs, {} rounds, ~{} ms per sample, {} cores; medians per \
         iteration, ratio = median of per-round quattro/peer",
        jobs.len(),
        settings.rounds,
        settings.sample.as_millis(),
        cores,
    );
    println!();
    println!("| job | quattro | best peer | ratio | target | ok? | ratio p25–p75 |");
    println!("|---|---|---|---|---|---|---|");
    let start = Instant::now();
    for job in &jobs {
        let out = run(job, &settings);
        println!("{}", row(job, &out));
    }
    println!();
    println!("total {:.1} s", start.elapsed().as_secs_f64());
}

// --- the jobs ------------------------------------------------------------------------------

struct Runtimes {
    ct: Rc<Runtime>,
    mt: Rc<Runtime>,
}

impl Runtimes {
    fn each(&self) -> [(Flavor, Rc<Runtime>); 2] {
        [
            (Flavor::CurrentThread, self.ct.clone()),
            (Flavor::MultiThread, self.mt.clone()),
        ]
    }
}

/// `move_on_after`/`fail_after` around a ready and a one-yield future, and nested scopes.
fn scope_jobs(rts: &Runtimes) -> Vec<Job> {
    let mut jobs = Vec::new();
    for (flavor, rt) in rts.each() {
        let fl = flavor.label();
        // Targets of the core rebuild: a scope around a ready future allocates nothing and arms
        // no timer, so it must beat `timeout`; one `Pending` arms the one timer both need.
        for (what, pendings, target) in [("ready", 0, 0.90), ("one-yield", 1, 1.10)] {
            let (q, p) = (rt.clone(), rt.clone());
            jobs.push(
                Job::timed(
                    format!("move_on_after {what} [{fl}]"),
                    Target::AtMost(target),
                    move |n| common::time_in_place(&q, n, || common::move_on_after_yield(pendings)),
                )
                .peer("timeout", move |n| {
                    common::time_in_place(&p, n, || common::timeout_yield(pendings))
                }),
            );
            let (q, p) = (rt.clone(), rt.clone());
            jobs.push(
                Job::timed(
                    format!("fail_after {what} [{fl}]"),
                    Target::AtMost(target),
                    move |n| common::time_in_place(&q, n, || common::fail_after_yield(pendings)),
                )
                .peer("timeout", move |n| {
                    common::time_in_place(&p, n, || common::timeout_yield(pendings))
                }),
            );
        }
        for depth in DEPTHS {
            let target = if depth == 8 {
                Target::AtMost(0.6)
            } else {
                Target::Info
            };
            let (q, p) = (rt.clone(), rt.clone());
            jobs.push(
                Job::timed(
                    format!("nested ×{depth} Pending×10 [{fl}]"),
                    target,
                    move |n| common::time_nested_scopes(&q, depth, n),
                )
                .peer(format!("timeout ×{depth}"), move |n| {
                    common::time_nested_timeouts(&p, depth, n)
                }),
            );
        }
    }
    jobs
}

/// `current_effective_deadline()` at several depths against a bare task-local read.
fn deadline_jobs(rts: &Runtimes) -> Vec<Job> {
    let mut jobs = Vec::new();
    for (flavor, rt) in rts.each() {
        for depth in DEPTHS {
            let target = if depth == 8 {
                Target::AtMost(1.0)
            } else {
                Target::Info
            };
            let (q, p) = (rt.clone(), rt.clone());
            jobs.push(
                Job::timed(
                    format!(
                        "current_effective_deadline depth {depth} [{}]",
                        flavor.label()
                    ),
                    target,
                    move |n| common::time_effective_deadline(&q, depth, n),
                )
                .peer("task_local read", move |n| {
                    common::time_task_local_read(&p, n)
                }),
            );
        }
    }
    jobs
}

/// Peers against themselves, one per kind of workload, so the noise floor is in the table.
fn self_checks(rts: &Runtimes) -> Vec<Job> {
    let (a, b, c, d) = (
        rts.ct.clone(),
        rts.mt.clone(),
        rts.ct.clone(),
        rts.ct.clone(),
    );
    vec![
        Job::self_check("timeout one-yield [ct]", move |n| {
            common::time_in_place(&a, n, || common::timeout_yield(1))
        }),
        Job::self_check("timeout one-yield [mt]", move |n| {
            common::time_in_place(&b, n, || common::timeout_yield(1))
        }),
        Job::self_check("timeout ×8 Pending×10 [ct]", move |n| {
            common::time_nested_timeouts(&c, 8, n)
        }),
        Job::self_check("task_local read [ct]", move |n| {
            common::time_task_local_read(&d, n)
        }),
    ]
}

// --- task groups, gather, fan-out, cancellation and memory (issue 9) ----------------------
//
// The timed workloads are in `common/mod.rs` (shared with the criterion benches `task_group`
// and `gather`): one iteration is one whole job of N tasks, so the 100k-task rows run one
// iteration per sample.

/// How many rounds a job of `tasks` tasks per iteration runs: one iteration of a 100k-task job
/// takes tens of milliseconds, so those run fewer rounds than the default (their samples are
/// one iteration each, long enough to be steady).
fn rounds_for(job: Job, tasks: u64) -> Job {
    if tasks > 10_000 { job.rounds(21) } else { job }
}

/// A workload of N tasks, one side of which is quattro's.
trait TaskSide: Copy + 'static {
    fn time(self, rt: &Runtime, n: u64, iters: u64) -> Duration;
    fn label(self) -> &'static str;
}

impl TaskSide for SpawnJoin {
    fn time(self, rt: &Runtime, n: u64, iters: u64) -> Duration {
        SpawnJoin::time(self, rt, n, iters)
    }

    fn label(self) -> &'static str {
        SpawnJoin::label(self)
    }
}

impl TaskSide for Gather {
    fn time(self, rt: &Runtime, n: u64, iters: u64) -> Duration {
        Gather::time(self, rt, n, iters)
    }

    fn label(self) -> &'static str {
        Gather::label(self)
    }
}

/// For each runtime and N: `quattro` vs `peer` (target ≤ 1.10×), and at 1k, for context,
/// `quattro` vs the `context` peers in a row named `{what} {N} {context_name}`.
fn task_jobs<S: TaskSide>(
    rts: &Runtimes,
    what: &str,
    (quattro, peer): (S, S),
    context_name: &str,
    context: [S; 2],
) -> Vec<Job> {
    let mut jobs = Vec::new();
    for (flavor, rt) in rts.each() {
        for n in TASK_COUNTS {
            let (count, fl) = (count_label(n), flavor.label());
            let (q, p) = (rt.clone(), rt.clone());
            let job = Job::timed(
                format!("{what} {count} [{fl}]"),
                Target::AtMost(1.10),
                move |iters| quattro.time(&q, n, iters),
            )
            .peer(peer.label(), move |iters| peer.time(&p, n, iters));
            jobs.push(rounds_for(job, n));

            if n > 1_000 {
                continue;
            }
            let q = rt.clone();
            let mut job = Job::timed(
                format!("{what} {count} {context_name} [{fl}]"),
                Target::Info,
                move |iters| quattro.time(&q, n, iters),
            );
            for other in context {
                let p = rt.clone();
                job = job.peer(other.label(), move |iters| other.time(&p, n, iters));
            }
            jobs.push(job);
        }
    }
    jobs
}

/// Spawn + join N trivial tasks in a `TaskGroup` vs a `JoinSet` + `join_next` loop (target
/// ≤ 1.10×); and, for context at 1k, vs `tokio::spawn` + awaiting the handles in order and a
/// `TaskTracker`, which keep no join set (the tracker does not even collect results).
fn group_jobs(rts: &Runtimes) -> Vec<Job> {
    let mut jobs = task_jobs(
        rts,
        "group spawn+join",
        (SpawnJoin::TaskGroup, SpawnJoin::JoinSet),
        "vs no join set",
        [SpawnJoin::SpawnVec, SpawnJoin::TaskTracker],
    );
    let p = rts.mt.clone();
    jobs.push(Job::self_check(
        "JoinSet spawn+join 1k [mt]",
        move |iters| SpawnJoin::JoinSet.time(&p, 1_000, iters),
    ));
    jobs
}

/// `gather` of N trivial futures vs a `JoinSet` + index bookkeeping (target ≤ 1.10×); and, for
/// context at 1k, vs `try_join_all` and `Vec::try_join`, which poll every future inside the
/// caller's task instead of spawning it.
fn gather_jobs(rts: &Runtimes) -> Vec<Job> {
    task_jobs(
        rts,
        "gather",
        (Gather::Quattro, Gather::JoinSetIndex),
        "vs in place",
        [Gather::TryJoinAll, Gather::TryJoinVec],
    )
}

/// Limited fan-out, N = 100k, limit 16, each program against the hand-written ones of its
/// shape:
///
/// - lazy (an item is taken only when a slot is free): `spawn_when_free` in a loop vs a
///   `JoinSet` + a `Semaphore` permit acquired before each spawn, and `buffer_unordered(16)`;
///   the same with a `TaskSet`, and with an unordered `gather`; a limited `gather` vs the
///   `JoinSet` + `Semaphore` with index bookkeeping, and `buffered(16)`;
/// - eager (every item accepted at once, the limit bounds what runs): `spawn` of all N into
///   the group's queue vs spawn-all with the permit taken inside each task, and, for context,
///   vs `buffer_unordered(16)`.
///
/// Target ≤ 1.10×.
fn fan_out_jobs(rts: &Runtimes) -> Vec<Job> {
    let (n, limit) = (FAN_OUT_TASKS, FAN_OUT_LIMIT);
    let mut jobs = Vec::new();
    for (flavor, rt) in rts.each() {
        let name = |what: &str| {
            let (count, fl) = (count_label(n), flavor.label());
            format!("fan-out {what}{count} limit {limit} [{fl}]")
        };

        let q = rt.clone();
        let mut job = Job::timed(
            name("spawn_when_free "),
            Target::AtMost(1.10),
            move |iters| FanOut::TaskGroupWhenFree.time(&q, n, limit, iters),
        );
        for peer in [FanOut::JoinSetSemaphore, FanOut::BufferUnordered] {
            let p = rt.clone();
            job = job.peer(peer.label(), move |iters| peer.time(&p, n, limit, iters));
        }
        jobs.push(rounds_for(job, n));

        // The eager program: every `spawn` is accepted, and waits in the queue.
        for (peer, what, target) in [
            (
                FanOut::PermitInTask,
                "spawn (queued) ",
                Target::AtMost(1.10),
            ),
            (
                FanOut::BufferUnordered,
                "spawn (queued) vs lazy ",
                Target::Info,
            ),
        ] {
            let (q, p) = (rt.clone(), rt.clone());
            let job = Job::timed(name(what), target, move |iters| {
                FanOut::TaskGroup.time(&q, n, limit, iters)
            })
            .peer(peer.label(), move |iters| peer.time(&p, n, limit, iters));
            jobs.push(rounds_for(job, n));
        }

        // The JoinSet-shaped and the stream-shaped programs, each against its own peer.
        for (quattro, peer, what) in [
            (FanOut::TaskSet, FanOut::JoinSetSemaphore, "task_set "),
            (
                FanOut::GatherUnordered,
                FanOut::BufferUnordered,
                "unordered ",
            ),
        ] {
            let (q, p) = (rt.clone(), rt.clone());
            let job = Job::timed(name(what), Target::AtMost(1.10), move |iters| {
                quattro.time(&q, n, limit, iters)
            })
            .peer(peer.label(), move |iters| peer.time(&p, n, limit, iters));
            jobs.push(rounds_for(job, n));
        }

        let q = rt.clone();
        let mut job = Job::timed(name("gather "), Target::AtMost(1.10), move |iters| {
            LimitedGather::Quattro.time(&q, n, limit, iters)
        });
        for peer in LimitedGather::ALL.into_iter().skip(1) {
            let p = rt.clone();
            job = job.peer(peer.label(), move |iters| peer.time(&p, n, limit, iters));
        }
        jobs.push(rounds_for(job, n));
    }
    jobs
}

/// Cancel a group of 10k sleeping tasks until all are dropped vs `JoinSet::abort_all` + drain
/// and a `CancellationToken` every task selects on; target ≤ 1.20×.
fn cancel_jobs(rts: &Runtimes) -> Vec<Job> {
    let n = CANCEL_TASKS;
    let mut jobs = Vec::new();
    for (flavor, rt) in rts.each() {
        let q = rt.clone();
        let mut job = Job::timed(
            format!("cancel {} sleeping [{}]", count_label(n), flavor.label()),
            Target::AtMost(1.20),
            move |iters| Cancel::TaskGroup.time(&q, n, iters),
        );
        for peer in Cancel::ALL.into_iter().skip(1) {
            let p = rt.clone();
            job = job.peer(peer.label(), move |iters| peer.time(&p, n, iters));
        }
        // One iteration takes 10–20 ms.
        jobs.push(job.rounds(51));
    }
    jobs
}

/// Peak memory with `Job::bytes` / `peer_bytes`:
/// - 1M `spawn` calls with limit 16 vs spawn-all + semaphore, target ≤ 0.6×;
/// - limited `gather` over a lazy 1M-item iterator, and the backpressure spawn, vs
///   `buffer_unordered(16)`, target ≤ 2×.
///
/// Each side runs in a fresh process (this binary re-run with a hidden flag naming the side,
/// reading `VmHWM` from `/proc/self/status` before exiting): a peak inside this process would
/// include every earlier row's allocations. 3 rounds; see `benches/memory/mod.rs`.
fn memory_jobs(_rts: &Runtimes) -> Vec<Job> {
    memory::jobs()
}
