//! The services of `examples/service.rs`: a frontend, backends, a client, and the line protocol
//! they speak over TCP. `tests/service.rs` includes this file too, so everything the tests need
//! is `pub`. It does not run by itself: `cargo run --example service` runs it and prints what
//! happened, `cargo test --test service` checks it.
//!
//! Besides their work, the servers keep notes for the printout: each backend records what it
//! did with each request ([`Record`]), and the frontend when each call got its fan-out slot
//! ([`Slot`]).
//!
//! # Protocol
//!
//! One request per TCP connection, one line each way:
//!
//! ```text
//! client   -> frontend   REQ <id> [grpc-timeout=<value>]
//! frontend -> backend    WORK <id> [grpc-timeout=<value>]
//! replies                OK <detail> | ERR <CODE> [<detail>]
//! ```
//!
//! The `grpc-timeout` value is the time left, in gRPC's wire format
//! ([`quattro::propagate`]). No value means no deadline (the frontend then applies its own
//! default). The error codes are gRPC's: `DEADLINE_EXCEEDED`, `INVALID_ARGUMENT`, and `FAILED`
//! for a backend's own failure.
//!
//! # Who stops when
//!
//! The frontend runs each request under [`fail_at`] with the incoming deadline and fans out with
//! [`gather`]; every task of the gather sees that deadline and sends it on with
//! [`propagate::header_value`]. A backend runs its work under [`fail_at`] with the deadline it
//! received. When the deadline passes, the frontend's gather is dropped (its connections to the
//! backends close) and each backend's own deadline fires at the same moment, give or take the
//! transit time. A backend also stops when its caller hangs up, e.g. when a sibling failed and
//! the gather cancelled the rest.

#![allow(dead_code)] // the example and the tests each use a different part

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quattro::propagate::{self, HEADER_NAME};
use quattro::{Deferrer, GroupError, TaskGroup, fail_after, fail_at, gather};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, sleep};
use tracing::{debug, info, warn};

// ---------------------------------------------------------------------------------------------
// Configuration

/// What one backend does: how long its work takes and how often it fails.
#[derive(Clone, Debug)]
pub struct BackendSpec {
    pub name: &'static str,
    /// The shortest work.
    pub work: Duration,
    /// Up to this much more, depending on the request id (deterministic, so runs repeat).
    pub jitter: Duration,
    /// Fails (after doing its work) every request whose id is a multiple of this.
    pub fail_every: Option<u64>,
}

impl BackendSpec {
    pub fn new(name: &'static str, work: Duration) -> BackendSpec {
        BackendSpec {
            name,
            work,
            jitter: Duration::ZERO,
            fail_every: None,
        }
    }

    /// How long the work for request `id` takes.
    pub fn work_for(&self, id: u64) -> Duration {
        let step = u32::try_from(id.wrapping_mul(7) % 5).unwrap_or(0);
        self.work + self.jitter * step / 4
    }

    /// Whether request `id` fails.
    pub fn fails(&self, id: u64) -> bool {
        self.fail_every.is_some_and(|n| n > 0 && id % n == 0)
    }
}

/// The whole system: the backends, and how the frontend calls them.
#[derive(Clone, Debug)]
pub struct Config {
    pub backends: Vec<BackendSpec>,
    /// At most this many backend calls at once per request (the gather's concurrency limit).
    pub fan_out_limit: usize,
    /// The deadline the frontend sets for a request that comes without one.
    pub default_budget: Duration,
    /// How often the frontend's metrics loop logs.
    pub metrics_every: Duration,
}

impl Config {
    /// The demo: a fast backend, a slow one, and a flaky one, called two at a time.
    pub fn demo() -> Config {
        Config {
            backends: vec![
                BackendSpec {
                    jitter: ms(20),
                    ..BackendSpec::new("users", ms(20))
                },
                BackendSpec {
                    jitter: ms(100),
                    ..BackendSpec::new("search", ms(220))
                },
                BackendSpec {
                    jitter: ms(40),
                    fail_every: Some(4),
                    ..BackendSpec::new("ranker", ms(50))
                },
            ],
            fan_out_limit: 2,
            default_budget: ms(400),
            metrics_every: ms(250),
        }
    }
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------------------------
// The line protocol

/// A parsed request line: `REQ <id> [grpc-timeout=<value>]` or `WORK <id> [...]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestLine {
    pub verb: String,
    pub id: u64,
    /// The raw `grpc-timeout` value, not yet validated.
    pub timeout: Option<String>,
}

impl RequestLine {
    pub fn new(verb: &str, id: u64, timeout: Option<String>) -> RequestLine {
        RequestLine {
            verb: verb.to_string(),
            id,
            timeout,
        }
    }

    /// Parses a line (without its newline); `None` if it is not `<VERB> <id> [header]`.
    pub fn parse(line: &str) -> Option<RequestLine> {
        let mut words = line.split_ascii_whitespace();
        let verb = words.next()?.to_string();
        let id = words.next()?.parse().ok()?;
        let timeout = match words.next() {
            None => None,
            Some(header) => {
                let (name, value) = header.split_once('=')?;
                if name != HEADER_NAME {
                    return None;
                }
                Some(value.to_string())
            }
        };
        if words.next().is_some() {
            return None;
        }
        Some(RequestLine { verb, id, timeout })
    }
}

impl fmt::Display for RequestLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb, self.id)?;
        if let Some(timeout) = &self.timeout {
            write!(f, " {HEADER_NAME}={timeout}")?;
        }
        Ok(())
    }
}

pub const DEADLINE_EXCEEDED: &str = "DEADLINE_EXCEEDED";
pub const INVALID_ARGUMENT: &str = "INVALID_ARGUMENT";
pub const FAILED: &str = "FAILED";

async fn write_line(stream: &mut tokio::net::tcp::OwnedWriteHalf, line: &str) {
    // The peer may have hung up (it gave up at its deadline); there is nobody left to tell.
    let _ = stream.write_all(format!("{line}\n").as_bytes()).await;
}

/// Completes when the peer closes its side of the connection (or it breaks). Lines it sends
/// in the meantime are ignored.
async fn hangup(mut lines: Lines<BufReader<OwnedReadHalf>>) {
    while let Ok(Some(_)) = lines.next_line().await {}
}

// ---------------------------------------------------------------------------------------------
// Backends

/// What a backend did with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still working.
    Running,
    /// Did its work and answered, after this long.
    Answered(Duration),
    /// Stopped by the deadline it received, after this long.
    CutOff(Duration),
    /// Did its work and failed, after this long.
    Failed(Duration),
    /// Stopped because the caller hung up before the deadline, after this long.
    Cancelled(Duration),
    /// The request was malformed (bad `grpc-timeout`).
    Rejected,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, after) = match self {
            Outcome::Running => return f.pad("running"),
            Outcome::Rejected => return f.pad("rejected"),
            Outcome::Answered(after) => ("answered", after),
            Outcome::CutOff(after) => ("cut off", after),
            Outcome::Failed(after) => ("failed", after),
            Outcome::Cancelled(after) => ("cancelled", after),
        };
        f.pad(&format!("{what} {}ms", after.as_millis()))
    }
}

/// What a backend knows about one request.
#[derive(Clone, Debug)]
pub struct Record {
    /// The `grpc-timeout` value it received, as sent.
    pub header: Option<String>,
    pub outcome: Outcome,
    /// How long after its deadline the work stopped (zero when it stopped in time).
    pub overrun: Duration,
}

/// A backend's counters and log, shared with whoever wants to look.
#[derive(Debug, Default)]
pub struct BackendStats {
    in_flight: AtomicUsize,
    connections: AtomicUsize,
    log: Mutex<HashMap<u64, Record>>,
}

impl BackendStats {
    /// Requests being worked on right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Connections open right now.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// What happened to request `id`; `None` if it never arrived.
    pub fn record(&self, id: u64) -> Option<Record> {
        self.log.lock().unwrap().get(&id).cloned()
    }

    fn insert(&self, id: u64, record: Record) {
        self.log.lock().unwrap().insert(id, record);
    }

    fn finish(&self, id: u64, outcome: Outcome, overrun: Duration) {
        if let Some(record) = self.log.lock().unwrap().get_mut(&id) {
            record.outcome = outcome;
            record.overrun = overrun;
        }
    }
}

/// A running backend: its spec, its address, its stats.
#[derive(Debug)]
pub struct Backend {
    pub spec: BackendSpec,
    pub addr: SocketAddr,
    pub stats: Arc<BackendStats>,
}

/// Counts a request as in flight while alive, and records how it ended when dropped: by
/// [`finish`](Self::finish), or, when the work future was dropped, by its deadline or by its
/// caller hanging up.
struct InFlight {
    stats: Arc<BackendStats>,
    id: u64,
    started: Instant,
    deadline: Option<Instant>,
    outcome: Option<Outcome>,
}

/// Within this much of its deadline, a backend whose caller hangs up counts as cut off by the
/// deadline: the caller gave up at the same deadline, and the two race by the transit time.
const SAME_DEADLINE: Duration = Duration::from_millis(5);

impl InFlight {
    fn new(stats: Arc<BackendStats>, id: u64, deadline: Option<Instant>) -> InFlight {
        stats.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight {
            stats,
            id,
            started: Instant::now(),
            deadline,
            outcome: None,
        }
    }

    fn finish(mut self, outcome: fn(Duration) -> Outcome) {
        self.outcome = Some(outcome(self.started.elapsed()));
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = Instant::now();
        let after = now - self.started;
        let outcome = self.outcome.unwrap_or_else(|| match self.deadline {
            Some(deadline) if now + SAME_DEADLINE >= deadline => Outcome::CutOff(after),
            _ => Outcome::Cancelled(after),
        });
        let overrun = self.deadline.map_or(Duration::ZERO, |deadline| {
            now.saturating_duration_since(deadline)
        });
        self.stats.finish(self.id, outcome, overrun);
        self.stats.in_flight.fetch_sub(1, Ordering::SeqCst);
        debug!(id = self.id, %outcome, ?overrun, "backend work ended");
    }
}

/// Accepts connections until dropped; each one carries one `WORK` request.
pub async fn serve_backend(listener: TcpListener, backend: Arc<Backend>) -> io::Result<()> {
    let name = backend.spec.name;
    TaskGroup::scope(|tg| async move {
        loop {
            let (stream, peer) = listener.accept().await?;
            let backend = backend.clone();
            tg.task(format!("{name} {peer}")).spawn(async move {
                handle_backend_connection(stream, backend).await;
                Ok(())
            });
        }
    })
    .await
    .map_err(group_to_io)
}

async fn handle_backend_connection(stream: TcpStream, backend: Arc<Backend>) {
    Deferrer::enable(|defer| async move {
        let stats = backend.stats.clone();
        stats.connections.fetch_add(1, Ordering::SeqCst);
        defer.callback(move || {
            stats.connections.fetch_sub(1, Ordering::SeqCst);
        });

        let (reader, mut writer) = stream.into_split();
        let mut lines = BufReader::new(reader).lines();
        let Ok(Some(line)) = lines.next_line().await else {
            return;
        };
        let reply = match RequestLine::parse(&line) {
            Some(request) if request.verb == "WORK" => {
                tokio::select! {
                    reply = work(&backend, request) => reply,
                    // The caller gave up: stop working, there is nobody to answer.
                    () = hangup(lines) => return,
                }
            }
            _ => format!("ERR {INVALID_ARGUMENT} bad request line"),
        };
        write_line(&mut writer, &reply).await;
    })
    .await;
}

/// Runs one request under the deadline it came with; returns the reply line.
async fn work(backend: &Backend, request: RequestLine) -> String {
    let spec = &backend.spec;
    let stats = &backend.stats;
    let id = request.id;
    stats.insert(
        id,
        Record {
            header: request.timeout.clone(),
            outcome: Outcome::Running,
            overrun: Duration::ZERO,
        },
    );
    let deadline = match request
        .timeout
        .as_deref()
        .map(propagate::deadline_from_header)
    {
        None => None,
        Some(Ok(deadline)) => Some(deadline),
        Some(Err(err)) => {
            stats.finish(id, Outcome::Rejected, Duration::ZERO);
            return format!("ERR {INVALID_ARGUMENT} {err}");
        }
    };
    debug!(backend = spec.name, id, header = ?request.timeout, "work received");

    let in_flight = InFlight::new(stats.clone(), id, deadline);
    let job = async move {
        sleep(spec.work_for(id)).await;
        if spec.fails(id) {
            in_flight.finish(Outcome::Failed);
            Err(format!("ERR {FAILED} injected failure (request {id})"))
        } else {
            in_flight.finish(Outcome::Answered);
            Ok(format!("OK {}", spec.work_for(id).as_millis()))
        }
    };
    let done = match deadline {
        Some(deadline) => fail_at(deadline, job).await,
        None => Ok(job.await),
    };
    match done {
        Ok(Ok(reply) | Err(reply)) => reply,
        Err(elapsed) => format!("ERR {DEADLINE_EXCEEDED} {elapsed}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Frontend

/// The frontend's counters, logged by its metrics loop.
#[derive(Debug, Default)]
pub struct FrontendStats {
    pub requests: AtomicUsize,
    pub ok: AtomicUsize,
    pub deadline_exceeded: AtomicUsize,
    pub failed: AtomicUsize,
    pub invalid: AtomicUsize,
    pub connections: AtomicUsize,
    pub metrics_ticks: AtomicUsize,
    /// Per request and backend: how the call fared with its fan-out slot.
    slots: Mutex<HashMap<(u64, &'static str), Slot>>,
}

impl FrontendStats {
    fn count(&self, counter: &AtomicUsize) {
        counter.fetch_add(1, Ordering::SeqCst);
    }

    pub fn get(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::SeqCst)
    }

    /// How the call to `backend` for request `id` fared with its fan-out slot; `None` if the
    /// request never reached the fan-out.
    pub fn slot(&self, id: u64, backend: &str) -> Option<Slot> {
        self.slots.lock().unwrap().get(&(id, backend)).copied()
    }

    fn note_slot(&self, id: u64, backend: &'static str, slot: Slot) {
        self.slots.lock().unwrap().insert((id, backend), slot);
    }
}

/// A backend call waits for one of the fan-out's slots (`Config::fan_out_limit`) before it
/// starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Still waiting, or dropped while waiting: the call never started.
    Waiting,
    /// Got one, this long after the request arrived.
    Got(Duration),
}

/// What the frontend knows: where the backends are.
#[derive(Debug)]
pub struct Frontend {
    pub backends: Vec<(&'static str, SocketAddr)>,
    pub fan_out_limit: usize,
    pub default_budget: Duration,
    pub metrics_every: Duration,
    pub stats: Arc<FrontendStats>,
}

/// Accepts connections until dropped, with a metrics loop in the background.
pub async fn serve_frontend(listener: TcpListener, frontend: Arc<Frontend>) -> io::Result<()> {
    TaskGroup::scope(|tg| async move {
        tg.task("metrics")
            .spawn_background(metrics_loop(frontend.clone()));
        loop {
            let (stream, peer) = listener.accept().await?;
            let frontend = frontend.clone();
            tg.task(format!("frontend {peer}")).spawn(async move {
                handle_frontend_connection(stream, frontend).await;
                Ok(())
            });
        }
    })
    .await
    .map_err(group_to_io)
}

/// The background task: logs the counters now and then, until the server stops.
async fn metrics_loop(frontend: Arc<Frontend>) -> io::Result<()> {
    let stats = &frontend.stats;
    loop {
        sleep(frontend.metrics_every).await;
        stats.count(&stats.metrics_ticks);
        info!(
            requests = FrontendStats::get(&stats.requests),
            ok = FrontendStats::get(&stats.ok),
            deadline_exceeded = FrontendStats::get(&stats.deadline_exceeded),
            failed = FrontendStats::get(&stats.failed),
            open_connections = FrontendStats::get(&stats.connections),
            "frontend metrics"
        );
    }
}

async fn handle_frontend_connection(stream: TcpStream, frontend: Arc<Frontend>) {
    Deferrer::enable(|defer| async move {
        let stats = frontend.stats.clone();
        stats.count(&stats.connections);
        let opened = Instant::now();
        // Runs however the connection ends: answered, client gone, or server shut down.
        defer.callback(move || {
            stats.connections.fetch_sub(1, Ordering::SeqCst);
            debug!(open_for = ?opened.elapsed(), "frontend connection closed");
        });

        let (reader, mut writer) = stream.into_split();
        let mut lines = BufReader::new(reader).lines();
        let Ok(Some(line)) = lines.next_line().await else {
            return;
        };
        let reply = tokio::select! {
            reply = handle_request(&frontend, &line) => reply,
            () = hangup(lines) => return,
        };
        write_line(&mut writer, &reply).await;
    })
    .await;
}

/// Why a backend call did not give an answer.
#[derive(Debug)]
pub enum CallError {
    /// The deadline had passed before the call (not sent), or the backend said so.
    Deadline(&'static str),
    /// The backend failed, or could not be reached.
    Failed(&'static str, String),
}

/// Handles one request line; returns the reply line.
async fn handle_request(frontend: &Frontend, line: &str) -> String {
    let arrived = Instant::now();
    let stats = &frontend.stats;
    stats.count(&stats.requests);
    let Some(request) = RequestLine::parse(line).filter(|r| r.verb == "REQ") else {
        stats.count(&stats.invalid);
        return format!("ERR {INVALID_ARGUMENT} bad request line");
    };
    let deadline = match request.timeout.as_deref() {
        // No deadline from the client: the frontend's own default bounds the work.
        None => Instant::now() + frontend.default_budget,
        Some(value) => match propagate::deadline_from_header(value) {
            Ok(deadline) => deadline,
            Err(err) => {
                stats.count(&stats.invalid);
                return format!("ERR {INVALID_ARGUMENT} {err}");
            }
        },
    };
    let id = request.id;
    debug!(id, header = ?request.timeout, "request received");

    // Every backend call runs as a task of the gather, under this deadline. A call starts when
    // it gets a slot; the notes say when that was, for the example's printout.
    let calls: Vec<_> = frontend
        .backends
        .iter()
        .map(|&(name, addr)| {
            stats.note_slot(id, name, Slot::Waiting);
            call_in_slot(stats.clone(), arrived, name, addr, id)
        })
        .collect();
    let answers = fail_at(
        deadline,
        gather(calls).concurrency_limit(frontend.fan_out_limit),
    )
    .await;

    match answers {
        Ok(Ok(answers)) => {
            stats.count(&stats.ok);
            format!("OK {}", answers.join(","))
        }
        Ok(Err(group_error)) => {
            let first = group_error.into_failures().into_iter().next();
            match first.and_then(|failure| failure.into_error()) {
                Some(CallError::Failed(name, why)) => {
                    stats.count(&stats.failed);
                    format!("ERR {FAILED} {name}: {why}")
                }
                Some(CallError::Deadline(name)) => {
                    stats.count(&stats.deadline_exceeded);
                    format!("ERR {DEADLINE_EXCEEDED} at {name}")
                }
                None => {
                    stats.count(&stats.failed);
                    format!("ERR {FAILED} fan-out cancelled")
                }
            }
        }
        Err(elapsed) => {
            stats.count(&stats.deadline_exceeded);
            format!("ERR {DEADLINE_EXCEEDED} {elapsed}")
        }
    }
}

/// Notes that the call got its fan-out slot, then makes it.
async fn call_in_slot(
    stats: Arc<FrontendStats>,
    arrived: Instant,
    name: &'static str,
    addr: SocketAddr,
    id: u64,
) -> Result<String, CallError> {
    stats.note_slot(id, name, Slot::Got(arrived.elapsed()));
    call_backend(name, addr, id).await
}

/// Calls one backend with the deadline in force (the request's, seen from inside the gather).
pub async fn call_backend(
    name: &'static str,
    addr: SocketAddr,
    id: u64,
) -> Result<String, CallError> {
    let failed = |err: io::Error| CallError::Failed(name, err.to_string());
    let expired = || propagate::remaining() == Some(Duration::ZERO);
    if expired() {
        return Err(CallError::Deadline(name)); // no point asking
    }
    let stream = TcpStream::connect(addr).await.map_err(failed)?;
    let (reader, mut writer) = stream.into_split();
    // Read the time left right before sending: it shrinks while we wait for a slot or connect.
    let timeout = propagate::header_value();
    if expired() {
        return Err(CallError::Deadline(name));
    }
    let request = RequestLine::new("WORK", id, timeout.map(|t| t.to_string()));
    writer
        .write_all(format!("{request}\n").as_bytes())
        .await
        .map_err(failed)?;
    let reply = BufReader::new(reader)
        .lines()
        .next_line()
        .await
        .map_err(failed)?
        .unwrap_or_default();
    if let Some(work_ms) = reply.strip_prefix("OK ") {
        Ok(format!("{name}={work_ms}ms"))
    } else if reply.starts_with(&format!("ERR {DEADLINE_EXCEEDED}")) {
        Err(CallError::Deadline(name))
    } else {
        let why = reply
            .strip_prefix(&format!("ERR {FAILED} "))
            .unwrap_or(&reply);
        let why = if why.is_empty() {
            "connection closed"
        } else {
            why
        };
        Err(CallError::Failed(name, why.to_string()))
    }
}

fn group_to_io(err: GroupError<io::Error>) -> io::Error {
    match err.into_failures().into_iter().find_map(|f| f.into_error()) {
        Some(err) => err,
        None => io::Error::other("server cancelled"),
    }
}

// ---------------------------------------------------------------------------------------------
// Client

/// What a client puts in the `grpc-timeout` header.
#[derive(Clone, Copy, Debug)]
pub enum Budget {
    /// The time the client is willing to wait, encoded with [`propagate::encode_timeout`].
    Timeout(Duration),
    /// No header: the frontend's default applies.
    None,
    /// A raw value, valid or not.
    Raw(&'static str),
}

impl Budget {
    pub fn header(self) -> Option<String> {
        match self {
            Budget::Timeout(timeout) => Some(propagate::encode_timeout(timeout).to_string()),
            Budget::None => None,
            Budget::Raw(value) => Some(value.to_string()),
        }
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Budget::Timeout(timeout) => f.pad(&format!("{}ms", timeout.as_millis())),
            Budget::None => f.pad("none"),
            Budget::Raw(value) => f.pad(&format!("\"{value}\"")),
        }
    }
}

/// The frontend's reply as the client saw it.
#[derive(Clone, Debug)]
pub struct Reply {
    pub line: String,
    pub latency: Duration,
}

impl Reply {
    pub fn is_ok(&self) -> bool {
        self.line.starts_with("OK")
    }

    /// The error code, for an `ERR` reply.
    pub fn code(&self) -> Option<&str> {
        self.line.strip_prefix("ERR ")?.split(' ').next()
    }
}

/// How long the client waits beyond its budget before it gives up on the frontend: the
/// frontend is meant to answer at the deadline, and this is only a safety net.
pub const CLIENT_PATIENCE: Duration = Duration::from_secs(3);

/// Sends one request to the frontend and waits for the reply.
pub async fn call_frontend(addr: SocketAddr, id: u64, budget: Budget) -> io::Result<Reply> {
    let started = Instant::now();
    let patience = match budget {
        Budget::Timeout(timeout) => timeout + CLIENT_PATIENCE,
        _ => CLIENT_PATIENCE,
    };
    let line = fail_after(patience, async {
        let stream = TcpStream::connect(addr).await?;
        let (reader, mut writer) = stream.into_split();
        let request = RequestLine::new("REQ", id, budget.header());
        writer.write_all(format!("{request}\n").as_bytes()).await?;
        BufReader::new(reader).lines().next_line().await
    })
    .await
    .map_err(|elapsed| io::Error::new(io::ErrorKind::TimedOut, elapsed))??;
    Ok(Reply {
        line: line.unwrap_or_else(|| "ERR connection closed".to_string()),
        latency: started.elapsed(),
    })
}

// ---------------------------------------------------------------------------------------------
// The system

/// Everything running, for the body of [`run_system`].
#[derive(Debug)]
pub struct System {
    pub frontend_addr: SocketAddr,
    pub frontend: Arc<Frontend>,
    pub backends: Vec<Arc<Backend>>,
}

impl System {
    /// Waits (at most `limit`) until no backend is still working on request `id`; returns
    /// whether that happened.
    pub async fn settle(&self, id: u64, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        loop {
            let running = self.backends.iter().any(|backend| {
                backend
                    .stats
                    .record(id)
                    .is_some_and(|record| record.outcome == Outcome::Running)
            });
            if !running {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            sleep(ms(2)).await;
        }
    }

    /// Waits (at most `limit`) until no backend has work in flight or a connection open.
    pub async fn quiesce(&self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        loop {
            let idle = self
                .backends
                .iter()
                .all(|b| b.stats.in_flight() == 0 && b.stats.connections() == 0)
                && FrontendStats::get(&self.frontend.stats.connections) == 0;
            if idle {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            sleep(ms(2)).await;
        }
    }
}

/// Starts the backends and the frontend on ephemeral loopback ports, runs `body`, then stops
/// every server: they are background tasks of one task group, so none outlives this call.
pub async fn run_system<B, Fut, R>(config: Config, body: B) -> io::Result<R>
where
    B: FnOnce(Arc<System>) -> Fut,
    Fut: Future<Output = io::Result<R>>,
{
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut backends = Vec::new();
    let mut listeners = Vec::new();
    for spec in config.backends {
        let listener = TcpListener::bind(loopback).await?;
        let backend = Arc::new(Backend {
            spec,
            addr: listener.local_addr()?,
            stats: Arc::default(),
        });
        info!(name = backend.spec.name, addr = %backend.addr, "backend listening");
        listeners.push((listener, backend.clone()));
        backends.push(backend);
    }
    let frontend_listener = TcpListener::bind(loopback).await?;
    let frontend_addr = frontend_listener.local_addr()?;
    info!(addr = %frontend_addr, "frontend listening");
    let frontend = Arc::new(Frontend {
        backends: backends.iter().map(|b| (b.spec.name, b.addr)).collect(),
        fan_out_limit: config.fan_out_limit,
        default_budget: config.default_budget,
        metrics_every: config.metrics_every,
        stats: Arc::default(),
    });
    let system = Arc::new(System {
        frontend_addr,
        frontend: frontend.clone(),
        backends,
    });

    TaskGroup::scope(|tg| async move {
        for (listener, backend) in listeners {
            tg.task(backend.spec.name)
                .spawn_background(serve_backend(listener, backend));
        }
        tg.task("frontend")
            .spawn_background(serve_frontend(frontend_listener, frontend));
        let out = body(system).await;
        if out.is_err() {
            warn!("system body failed; stopping the servers");
        }
        out
    })
    .await
    .map_err(group_to_io)
}
