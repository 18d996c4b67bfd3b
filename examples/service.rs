//! The main example: a request deadline that crosses the network.
//!
//! One command starts, on ephemeral loopback ports, a frontend and three backends that speak a
//! small line protocol over TCP, sends a workload of requests with different budgets, and
//! prints, for each request, what every backend did with it:
//!
//! - the **client** sends its budget in a `grpc-timeout` header;
//! - the **frontend** runs the request under `fail_at(deadline)`, fans out to the backends with
//!   `gather(..).concurrency_limit(2)`, passes the time left on to each backend in the same
//!   header, counts connections with a `Deferrer`, and logs metrics from a background task;
//! - each **backend** reads the header and runs its work under `fail_at` with it, so it stops
//!   at the caller's deadline instead of working for nobody.
//!
//! ```text
//! cargo run --example service
//! RUST_LOG=info cargo run --example service                   # + the servers' logs
//! RUST_LOG=debug,quattro=trace cargo run --example service    # + every hop and the crate
//! ```
//!
//! It runs for about two seconds and stops by itself: the servers are background tasks of one
//! task group, which ends when the workload does. The services live in `examples/service/app.rs`,
//! which `tests/service.rs` drives too.

#[path = "service/app.rs"]
mod app;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use app::{Budget, Config, Outcome, Reply, System, ms};
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
        "frontend: fan-out gather(..).concurrency_limit({}), default budget {} ms when the client \
         sends none\n",
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
}

impl Row {
    fn collect(system: &System, id: u64, label: &'static str, budget: Budget, reply: Reply) -> Row {
        let did = system.backends.iter().map(|b| b.stats.record(id)).collect();
        Row {
            id,
            label,
            budget,
            reply,
            did,
        }
    }
}

const BACKEND_WIDTH: usize = 16;

fn print_table(system: &Arc<System>, rows: &[Row]) {
    let mut header = format!("{:>2}  {:<17} {:<8}", "#", "request", "budget");
    for backend in &system.backends {
        header += &format!(" {:<BACKEND_WIDTH$}", backend.spec.name);
    }
    header += &format!(" {:>7}  outcome", "latency");
    let mut lines = Vec::new();
    for row in rows {
        let mut line = format!("{:>2}  {:<17} {:<8}", row.id, row.label, row.budget);
        for did in &row.did {
            let text = match did {
                None => "not called".to_string(),
                Some(record) => record.outcome.to_string(),
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
    println!(
        "\nanswered: did its work and replied; cut off: stopped by the deadline it received; \
         failed: its own error;\ncancelled: stopped when the frontend hung up (a sibling failed); \
         not called: waiting for a slot, or\nthe deadline had passed before the call."
    );
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
        "\non the wire: the grpc-timeout each hop received (the frontend re-encodes the time left"
    );
    println!("right before each call), and the frontend's reply:");
    for row in rows {
        let sent = row.budget.header().unwrap_or_else(|| "-".to_string());
        let mut line = format!("{:>2}  frontend {sent:<9} ->", row.id);
        let mut any = false;
        for (backend, did) in system.backends.iter().zip(&row.did) {
            if let Some(header) = did.as_ref().and_then(|record| record.header.as_ref()) {
                line += &format!("  {} {header}", backend.spec.name);
                any = true;
            }
        }
        if !any {
            line += "  (no backend called)";
        }
        println!("{line}");
        println!("    reply: {}", row.reply.line);
    }
}

fn print_summary(system: &Arc<System>, idle: bool) {
    let stats = &system.frontend.stats;
    let get = app::FrontendStats::get;
    println!(
        "\nfrontend: {} requests, {} ok, {} deadline exceeded, {} failed, {} invalid; the metrics \
         loop ticked {} times",
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
        "nothing in flight, no connection open".to_string()
    } else {
        format!("STILL BUSY: {running} requests running")
    };
    println!(
        "backends: {state} (drop guards count both); the latest stop came {} ms after its \
         deadline",
        late.as_millis()
    );
}
