//! Peak-memory rows: each side runs in a fresh child process and reports its `VmHWM`.
//!
//! A peak measured inside the `compare` process would include every earlier row's allocations
//! (and whatever the allocator kept of them), so every sample re-runs this binary as
//! `compare --memory-side <name>`: the child builds its own runtime, does the one side's work,
//! and prints the peak resident set size it reached (`VmHWM` from `/proc/self/status`). The
//! figure is raw: it includes the binary, the runtime's threads and stacks and the allocator's
//! arenas, which the "runtime baseline" row shows on its own.
//!
//! Every side handles [`ITEMS`] items of [`STATE`] bytes each, at most [`LIMIT`] at once, on
//! the current-thread runtime (`Flavor::CurrentThread`): its scheduling is deterministic, and a
//! sample takes about half as long as on the 2-worker runtime, whose peaks were within a few
//! percent of these in a spot check (except the limited gather: +2 MB, allocator arenas). An
//! item's state is moved into its future when the future is built and read after a yield, so
//! it is really held in the future, queued or running, until the item is done.

use std::hint::black_box;
use std::process::{Command, Stdio};
use std::sync::Arc;

use futures::StreamExt as _;
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;

use super::{Job, Target};
use crate::common::Flavor;

/// The hidden flag that makes `compare` run one memory side and exit.
const FLAG: &str = "--memory-side";

/// Items per side.
const ITEMS: u64 = 1_000_000;

/// Items running at once.
const LIMIT: usize = 16;

/// Samples (child processes) per side, after the harness's unrecorded one.
const ROUNDS: usize = 3;

/// An item's state: 256 bytes, filled in (so its pages are touched) when the item is built.
type State = [u64; 32];

/// Bytes of state per item.
const STATE: usize = std::mem::size_of::<State>();

/// The rows, each a quattro side and its peer, by the names the child is asked for.
pub fn jobs() -> Vec<Job> {
    if !cfg!(target_os = "linux") {
        eprintln!("compare: the memory rows read /proc/self/status and run on Linux only");
        return Vec::new();
    }
    vec![
        Job::bytes("memory: runtime baseline [ct]", Target::Info, || {
            measure("empty-group")
        })
        .peer_bytes("empty runtime", || measure("empty-runtime"))
        .rounds(ROUNDS),
        Job::bytes(
            "memory: 1M spawn calls, limit 16 [ct]",
            Target::AtMost(0.5),
            || measure("group-spawn"),
        )
        .peer_bytes("spawn-all + semaphore", || measure("spawn-all-semaphore"))
        .rounds(ROUNDS),
        Job::bytes(
            "memory: limited gather, lazy 1M iterator [ct]",
            Target::AtMost(2.0),
            || measure("gather-limited"),
        )
        .peer_bytes("buffer_unordered(16)", || measure("buffer-unordered"))
        .rounds(ROUNDS),
        Job::bytes(
            "memory: backpressure spawn, 1M items [ct]",
            Target::AtMost(2.0),
            || measure("group-spawn-when-free"),
        )
        .peer_bytes("buffer_unordered(16)", || measure("buffer-unordered"))
        .rounds(ROUNDS),
    ]
}

/// The side a child runs, by name.
fn side(name: &str) -> Option<fn(&Runtime)> {
    let side: fn(&Runtime) = match name {
        "empty-runtime" => empty_runtime,
        "empty-group" => empty_group,
        "group-spawn" => group_spawn,
        "spawn-all-semaphore" => spawn_all_semaphore,
        "gather-limited" => gather_limited,
        "group-spawn-when-free" => group_spawn_when_free,
        "buffer-unordered" => buffer_unordered,
        _ => return None,
    };
    Some(side)
}

/// When this process was started as `compare --memory-side <name>`: runs that side, prints
/// `VmHWM <kB>` and exits. Otherwise returns at once.
pub fn run_side_if_asked() {
    let args: Vec<String> = std::env::args().collect();
    let Some(at) = args.iter().position(|arg| arg == FLAG) else {
        return;
    };
    let name = args
        .get(at + 1)
        .unwrap_or_else(|| panic!("{FLAG} takes a side's name"));
    let run = side(name).unwrap_or_else(|| panic!("{FLAG}: no side named {name:?}"));
    let rt = Flavor::CurrentThread.runtime();
    run(&rt);
    drop(rt);
    println!("VmHWM {}", vm_hwm_kb());
    std::process::exit(0);
}

/// Runs side `name` in a fresh child process and returns its peak resident set size in bytes.
fn measure(name: &str) -> u64 {
    let exe = std::env::current_exe().expect("the path of the compare binary");
    // Only the hidden flag: the child must not see the parent's filters or flags.
    let out = Command::new(exe)
        .arg(FLAG)
        .arg(name)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("compare: starting memory side {name:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "compare: memory side {name:?} failed ({}): {stdout}",
        out.status
    );
    let kb: u64 = stdout
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM "))
        .and_then(|kb| kb.trim().parse().ok())
        .unwrap_or_else(|| panic!("compare: memory side {name:?} printed no VmHWM: {stdout}"));
    kb * 1024
}

/// This process's peak resident set size, in kB.
fn vm_hwm_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmHWM line in /proc/self/status")
}

/// Item `i`'s state.
fn state(i: u64) -> State {
    [i; STATE / 8]
}

// --- the sides -----------------------------------------------------------------------------
//
// The items' bodies are written out in each side rather than shared through an `async fn`:
// awaiting an inner future from an outer block that captured the state would lay the state
// out twice in the outer future.

/// Nothing but the runtime.
fn empty_runtime(rt: &Runtime) {
    rt.block_on(async {
        tokio::task::yield_now().await;
    });
}

/// A group with limit 16 running 16 items: the fixed cost of a group.
fn empty_group(rt: &Runtime) {
    spawn_into_group(rt, LIMIT as u64);
}

/// 1M `spawn` calls into a group with limit 16: all but 16 wait in the group's queue as
/// futures.
fn group_spawn(rt: &Runtime) {
    spawn_into_group(rt, ITEMS);
}

/// `items` `spawn` calls into a group with limit 16.
fn spawn_into_group(rt: &Runtime, items: u64) {
    rt.block_on(async {
        quattro::TaskGroup::builder()
            .concurrency_limit(LIMIT)
            .scope(|tg| async move {
                for i in 0..items {
                    let state = state(i);
                    tg.spawn(async move {
                        tokio::task::yield_now().await;
                        black_box(&state);
                        Ok::<_, ()>(())
                    });
                }
                Ok(())
            })
            .await
            .expect("no item fails");
    });
}

/// The hand-written form of `group_spawn`: spawn every item, each waits for one of 16 permits
/// inside its task, then await every `JoinHandle`.
fn spawn_all_semaphore(rt: &Runtime) {
    rt.block_on(async {
        let permits = Arc::new(Semaphore::new(LIMIT));
        let handles: Vec<_> = (0..ITEMS)
            .map(|i| {
                let (state, permits) = (state(i), permits.clone());
                tokio::spawn(async move {
                    let _permit = permits.acquire().await.expect("never closed");
                    tokio::task::yield_now().await;
                    black_box(&state);
                })
            })
            .collect();
        for handle in handles {
            handle.await.expect("no item panics");
        }
    });
}

/// `gather` with limit 16 over a lazy iterator of 1M items.
fn gather_limited(rt: &Runtime) {
    rt.block_on(async {
        let items = (0..ITEMS).map(|i| {
            let state = state(i);
            async move {
                tokio::task::yield_now().await;
                black_box(&state);
                Ok::<_, ()>(())
            }
        });
        let out = quattro::gather(items)
            .concurrency_limit(LIMIT)
            .await
            .expect("no item fails");
        black_box(out);
    });
}

/// A group with limit 16 fed 1M items by `spawn_when_free`: the body waits for a free slot.
fn group_spawn_when_free(rt: &Runtime) {
    rt.block_on(async {
        quattro::TaskGroup::builder()
            .concurrency_limit(LIMIT)
            .scope(|tg| async move {
                for i in 0..ITEMS {
                    let state = state(i);
                    tg.spawn_when_free(async move {
                        tokio::task::yield_now().await;
                        black_box(&state);
                        Ok::<_, ()>(())
                    })
                    .await;
                }
                Ok(())
            })
            .await
            .expect("no item fails");
    });
}

/// The hand-written bounded fan-out: a lazy stream of spawns, 16 at a time, drained.
fn buffer_unordered(rt: &Runtime) {
    rt.block_on(async {
        let mut done = futures::stream::iter(0..ITEMS)
            .map(|i| {
                let state = state(i);
                tokio::spawn(async move {
                    tokio::task::yield_now().await;
                    black_box(&state);
                })
            })
            .buffer_unordered(LIMIT);
        while let Some(result) = done.next().await {
            result.expect("no item panics");
        }
    });
}
