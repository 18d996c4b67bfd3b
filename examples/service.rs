//! The main example: a request deadline that crosses the network.
//!
//! One command starts a frontend and three backends on loopback ports, which speak a small line
//! protocol over TCP, and sends them seven requests with different budgets, one after the other:
//!
//! - The **client** sends its budget in a `grpc-timeout` header.
//! - The **frontend** runs the request under `fail_at(deadline)` and calls the backends two at
//!   a time (`gather(..).concurrency_limit(2)`), sending each the time left in the same header.
//!   It also counts its connections with a `Deferrer` and logs metrics from a background task.
//! - Each **backend** runs its work under `fail_at` with the deadline it received, so it stops
//!   at the caller's deadline instead of working for nobody.
//!
//! ```text
//! cargo run --example service
//! RUST_LOG=info cargo run --example service                   # + the servers' logs
//! RUST_LOG=debug,quattro=trace cargo run --example service    # + every hop and the crate
//! ```
//!
//! What to look for:
//!
//! - In the table, a backend too slow for the budget is cut off at the deadline (search, at
//!   200 ms in request 2), and when the ranker fails (request 4) search is cancelled at once.
//! - Under "on the wire", each backend gets a little less time than the client's budget: the
//!   time already spent when its call goes out. The ranker, third in line, also waited for a
//!   slot, so it gets visibly less.
//! - The last line: nothing is left running, and no backend stopped long after its deadline.
//!
//! It runs for about two seconds and stops by itself: the servers are background tasks of one
//! task group, which ends when the workload does. The services live in `examples/service/app.rs`,
//! which `tests/service.rs` drives too.

#[path = "service/app.rs"]
mod app;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use app::{Budget, Config, Outcome, Reply, Slot, System, ms};
use quattro::propagate::decode_timeout;
use tracing_subscriber::EnvFilter;

/// The workload: one request per row, sent one after the other so latencies are clean.
const WORKLOAD: [(&str, Budget); 7] = [
    (
        "plenty of time",
        Budget::Timeout(Duration::from_millis(1000)),
    ),
    (
        "search too slow",
        Budget::Timeout(Duration::from_millis(200)),
    ),
    ("tight", Budget::Timeout(Duration::from_millis(45))),
    ("ranker fails", Budget::Timeout(Duration::from_millis(1000))),
    ("frontend default", Budget::None),
    ("already expired", Budget::Raw("0n")),
    ("malformed header", Budget::Raw("soon")),
];

#[tokio::main]
async fn main() -> io::Result<()> {
    // Quiet unless asked: the errors in this run are on purpose.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .init();

    let config = Config::demo();
    print_setup(&config);

    let rows = app::run_system(config, |system| async move {
        let mut rows = Vec::new();
        for (id, (label, budget)) in (1..).zip(WORKLOAD) {
            let reply = app::call_frontend(system.frontend_addr, id, budget).await?;
            // The backends stop at the deadline too; give them a moment to record it.
            system.settle(id, ms(500)).await;
            rows.push(Row::collect(&system, id, label, budget, reply));
        }
        let idle = system.quiesce(ms(500)).await;
        Ok((rows, idle, system))
    })
    .await?;

    let (rows, idle, system) = rows;
    print_table(&system, &rows);
    print_wire(&system, &rows);
    print_summary(&system, idle);
    Ok(())
}

fn print_setup(config: &Config) {
    println!("backends (work time depends on the request id):");
    for spec in &config.backends {
        let fails = match spec.fail_every {
            Some(n) => format!(", fails every request whose id is a multiple of {n}"),
            None => String::new(),
        };
        println!(
            "  {:<7} {}-{} ms{fails}",
            spec.name,
            spec.work.as_millis(),
            (spec.work + spec.jitter).as_millis()
        );
    }
    println!(
        "frontend: calls the backends {} at a time (gather(..).concurrency_limit({})), so a call \
         may\n          wait for a free slot. Its budget is {} ms when the client sends none.\n",
        config.fan_out_limit,
        config.fan_out_limit,
        config.default_budget.as_millis()
    );
}

/// One request, as the client saw it and as each backend recorded it.
struct Row {
    id: u64,
    label: &'static str,
    budget: Budget,
    reply: Reply,
    /// One per backend: what it did, or `None` if it was never called.
    did: Vec<Option<app::Record>>,
    /// One per backend: how the frontend's call fared with its fan-out slot, or `None` if the
    /// request never reached the fan-out.
    slots: Vec<Option<Slot>>,
}

impl Row {
    fn collect(system: &System, id: u64, label: &'static str, budget: Budget, reply: Reply) -> Row {
        let did = system.backends.iter().map(|b| b.stats.record(id)).collect();
        let slots = system
            .backends
            .iter()
            .map(|b| system.frontend.stats.slot(id, b.spec.name))
            .collect();
        Row {
            id,
            label,
            budget,
            reply,
            did,
            slots,
        }
    }
}

const BACKEND_WIDTH: usize = 17;

fn print_table(system: &Arc<System>, rows: &[Row]) {
    let mut header = format!("{:>2}  {:<17} {:<8}", "#", "request", "budget");
    for backend in &system.backends {
        header += &format!(" {:<BACKEND_WIDTH$}", backend.spec.name);
    }
    header += &format!(" {:>7}  outcome", "latency");
    let mut lines = Vec::new();
    for row in rows {
        let mut line = format!("{:>2}  {:<17} {:<8}", row.id, row.label, row.budget);
        for (position, (did, slot)) in row.did.iter().zip(&row.slots).enumerate() {
            // The first calls get a slot at once; the later ones wait for one to free.
            let queued = position >= system.frontend.fan_out_limit;
            let text = match (did, slot) {
                (Some(record), _) => record.outcome.to_string(),
                (None, Some(Slot::Waiting)) if queued => "never got a slot".to_string(),
                (None, Some(_)) => "not sent".to_string(),
                (None, None) => "not called".to_string(),
            };
            line += &format!(" {text:<BACKEND_WIDTH$}");
        }
        line += &format!(
            " {:>5}ms  {}",
            row.reply.latency.as_millis(),
            outcome(&row.reply)
        );
        lines.push(line);
    }
    let width = lines
        .iter()
        .chain([&header])
        .map(|l| l.chars().count())
        .max();
    println!("{header}");
    println!("{}", "-".repeat(width.unwrap_or(0)));
    for line in lines {
        println!("{line}");
    }
    let legend = [
        "",
        "budget: the client's grpc-timeout (a quoted value is sent as is).",
        "A backend's column says what it did, and how long after it started:",
        "  answered   did its work and replied",
        "  cut off    stopped by the deadline it received",
        "  failed     its own error",
        "  cancelled  stopped before the deadline, when the frontend hung up (another backend failed)",
        "or why the frontend did not call it:",
        "  never got a slot  the call still waited for a fan-out slot when the request ended",
        "  not sent          the request ended before the call went out (here: the deadline had",
        "                    already passed)",
        "  not called        the frontend rejected the request before calling any backend",
    ];
    for line in legend {
        println!("{line}");
    }
}

/// The reply, shortened to fit the table: `OK`, or the error code (and who failed).
fn outcome(reply: &Reply) -> String {
    match reply.code() {
        None if reply.is_ok() => "OK".to_string(),
        None => reply.line.clone(),
        Some(code) if code == app::FAILED => {
            let detail = reply.line.split(' ').nth(2).unwrap_or("");
            format!("{code} ({})", detail.trim_end_matches(':'))
        }
        Some(code) => code.to_string(),
    }
}

fn print_wire(system: &Arc<System>, rows: &[Row]) {
    println!(
        "\non the wire: the grpc-timeout the frontend and each backend received. A value is a \
         number\nand a unit letter: n nanoseconds, u microseconds, m milliseconds, S seconds, \
         M minutes, H hours.\nThe frontend sends each backend the time left when the call goes \
         out: the budget minus\nthe time already spent, waiting for a slot included."
    );
    let default = system.frontend.default_budget;
    for row in rows {
        let budget = match row.budget.header() {
            None => {
                println!(
                    "{:>2}  the client sent no grpc-timeout: the frontend's default of {} applies",
                    row.id,
                    millis(default)
                );
                Some(default)
            }
            Some(header) => match decode_timeout(&header) {
                Ok(budget) => {
                    let expired = if budget.is_zero() {
                        ": already expired"
                    } else {
                        ""
                    };
                    println!(
                        "{:>2}  the client sent {header} = {}{expired}",
                        row.id,
                        millis(budget)
                    );
                    Some(budget)
                }
                Err(_) => {
                    println!(
                        "{:>2}  the client sent {header:?}: not a valid value",
                        row.id
                    );
                    None
                }
            },
        };
        let mut any = false;
        let calls = system.backends.iter().zip(&row.did).zip(&row.slots);
        for (position, ((backend, did), slot)) in calls.enumerate() {
            let Some(record) = did else { continue };
            any = true;
            let name = backend.spec.name;
            let Some(header) = &record.header else {
                println!("    {name:<7} no grpc-timeout");
                continue;
            };
            let Ok(received) = decode_timeout(header) else {
                println!("    {name:<7} {header:>10}");
                continue;
            };
            let mut line = format!("    {name:<7} {header:>10} = {:>9}", millis(received));
            if let Some(budget) = budget {
                let spent = budget.saturating_sub(received);
                line += &format!("  {:>8} spent before the call", millis(spent));
                // The first calls get a slot at once; the later ones wait for one to free.
                let queued = position >= system.frontend.fan_out_limit;
                match slot {
                    Some(Slot::Got(waited)) if queued => {
                        line += &format!(", {} of it waiting for a slot", millis(*waited));
                    }
                    _ => {}
                }
            }
            println!("{line}");
        }
        if !any {
            println!("    (no backend received the request)");
        }
        println!("    reply: {}", row.reply.line);
    }
}

/// A duration in milliseconds, to a tenth: `967.8 ms`.
fn millis(time: Duration) -> String {
    format!("{:.1} ms", time.as_secs_f64() * 1000.0)
}

fn print_summary(system: &Arc<System>, idle: bool) {
    let stats = &system.frontend.stats;
    let get = app::FrontendStats::get;
    println!(
        "\nfrontend: {} requests: {} ok, {} deadline exceeded, {} failed, {} invalid.\n          \
         Its background metrics loop ticked {} times.",
        get(&stats.requests),
        get(&stats.ok),
        get(&stats.deadline_exceeded),
        get(&stats.failed),
        get(&stats.invalid),
        get(&stats.metrics_ticks),
    );
    let records: Vec<app::Record> = system
        .backends
        .iter()
        .flat_map(|b| (1..=WORKLOAD.len() as u64).filter_map(|id| b.stats.record(id)))
        .collect();
    let late = records.iter().map(|r| r.overrun).max().unwrap_or_default();
    let running = records
        .iter()
        .filter(|r| r.outcome == Outcome::Running)
        .count();
    let state = if idle && running == 0 {
        "no work still running, no connection left open".to_string()
    } else {
        format!("STILL BUSY: {running} requests running")
    };
    println!(
        "backends: {state} (as counted by drop guards).\n          \
         The latest any backend stopped after its deadline: {} ms.",
        late.as_millis()
    );
}
