//! A TCP server with graceful shutdown, built on a `TaskGroup`: one task per connection, at most
//! 4 at once, a failing connection isolated from the others (`isolate_failures`), and
//! `shutdown_on` with a grace period of 1 s.
//!
//! Six clients talk to the server in the same process, and a timer stands in for ctrl-c after
//! 700 ms. The protocol is one line per request: `WORK <ms>` is answered with `DONE <ms>` after
//! that much work. Anything else is answered with `ERR`, and that connection fails.
//!
//! Run with `cargo run --example graceful_server`. It exits by itself within about two seconds.
//!
//! Each line starts with the time since the start. The server names a connection by the
//! client's address, which the client prints when it connects. What to look for:
//!
//! - Client 4 connects while the 4 slots are busy: the server waits for a free slot before it
//!   serves it, and accepts no one else meanwhile (client 5 is accepted only after). Client 5
//!   is still waiting for a slot when the shutdown comes, and is refused.
//! - Client 1's bad request fails its own connection only; the other clients go on.
//! - At the shutdown request the server stops accepting. Each connection finishes the request
//!   it is serving and says `BYE`, except client 0's 5 s request, which outlasts the grace and
//!   is cut off.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use quattro::{Failure, TaskGroup, shutdown_requested};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, sleep};

const MAX_CONNECTIONS: usize = 4;
const GRACE: Duration = Duration::from_secs(1);

/// Prints a line with the time since the start.
fn log(start: Instant, what: impl std::fmt::Display) {
    println!("[{:>5} ms] {what}", start.elapsed().as_millis());
}

#[derive(Default)]
struct Stats {
    served: AtomicUsize,
    cut: AtomicUsize,
    failed: AtomicUsize,
    refused: AtomicUsize,
}

/// Reports a request that was cut off: its future was dropped when the grace ran out.
struct InFlight<'a> {
    start: Instant,
    stats: &'a Stats,
    peer: SocketAddr,
    done: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.stats.cut.fetch_add(1, Ordering::SeqCst);
            log(
                self.start,
                format!("server: {} cut off mid-request", self.peer),
            );
        }
    }
}

/// One connection: serves requests until the client leaves or a shutdown is requested
/// between two requests. A request in progress is finished first (or cut by the grace).
async fn connection(
    start: Instant,
    stream: TcpStream,
    peer: SocketAddr,
    stats: Arc<Stats>,
) -> Result<(), std::io::Error> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    loop {
        let line = tokio::select! {
            // The soft request reaches every connection task through the group.
            _ = shutdown_requested() => {
                write.write_all(b"BYE\n").await?;
                log(start, format!("server: {peer} between requests, said BYE"));
                return Ok(());
            }
            line = lines.next_line() => line?,
        };
        let Some(line) = line else {
            return Ok(()); // the client left
        };
        let Some(work) = line
            .strip_prefix("WORK ")
            .and_then(|n| n.parse::<u64>().ok())
        else {
            write.write_all(b"ERR\n").await?;
            // Fails this connection only: the group hands the error to its failure handler.
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad request {line:?}"),
            ));
        };
        let mut in_flight = InFlight {
            start,
            stats: &stats,
            peer,
            done: false,
        };
        sleep(Duration::from_millis(work)).await; // the request's work
        write.write_all(format!("DONE {work}\n").as_bytes()).await?;
        in_flight.done = true;
        stats.served.fetch_add(1, Ordering::SeqCst);
        if quattro::is_shutdown_requested() {
            log(
                start,
                format!("server: {peer} finished its request within the grace"),
            );
        }
    }
}

/// Accepts connections until the shutdown request; at most `MAX_CONNECTIONS` at once.
async fn serve(
    start: Instant,
    listener: TcpListener,
    stats: Arc<Stats>,
) -> Result<(), quattro::GroupError<std::io::Error>> {
    let failures = stats.clone();
    TaskGroup::builder()
        .concurrency_limit(MAX_CONNECTIONS)
        // One connection's failure is not the server's: log it, and keep serving the others.
        // The handler runs in the failed connection's task: keep it short.
        .isolate_failures(move |failure: Failure<std::io::Error>| {
            failures.failed.fetch_add(1, Ordering::SeqCst);
            log(
                start,
                format!("server: a connection failed: {failure} (its slot is freed, the others go on)"),
            );
            Ok(())
        })
        .scope(|tg| async move {
            loop {
                let (stream, peer) = tokio::select! {
                    _ = shutdown_requested() => break,
                    accepted = listener.accept() => accepted?,
                };
                // For the log only: whether this connection will wait for a slot.
                let busy = tg.len() >= MAX_CONNECTIONS;
                if busy {
                    log(
                        start,
                        format!("server: accepted {peer}; all {MAX_CONNECTIONS} slots are busy, it waits for one"),
                    );
                } else {
                    log(start, format!("server: accepted {peer}"));
                }
                // Backpressure: wait for a free slot. At the shutdown request the wait ends
                // and the connection is refused (dropped: the client sees it closed).
                let handle = tg
                    .task(peer.to_string())
                    .spawn_when_free(connection(start, stream, peer, stats.clone()))
                    .await;
                if handle.id().is_none() {
                    stats.refused.fetch_add(1, Ordering::SeqCst);
                    log(
                        start,
                        format!("server: {peer} refused: it was still waiting for a slot at the shutdown request"),
                    );
                } else if busy {
                    log(start, format!("server: {peer} got a free slot"));
                }
            }
            log(start, "server: stopped accepting");
            drop(listener); // connections still in the backlog are closed
            Ok(())
        })
        // `main` of a real server: `.shutdown_on(tokio::signal::ctrl_c(), GRACE)`.
        .shutdown_on(trigger(start), GRACE)
        .await
}

/// The shutdown trigger: ctrl-c, or a timer so that the example ends by itself.
async fn trigger(start: Instant) {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => log(start, "trigger: ctrl-c"),
        _ = sleep(Duration::from_millis(700)) => log(start, "trigger: timer (stands in for ctrl-c)"),
    }
    log(
        start,
        format!(
            "shutdown requested: stop accepting, and give the requests in progress {} ms",
            GRACE.as_millis()
        ),
    );
}

/// A client: connects, sends its requests one at a time, and reports what it got.
async fn client(start: Instant, addr: SocketAddr, id: usize, requests: Vec<String>) {
    sleep(Duration::from_millis(20 * id as u64)).await;
    let Ok(stream) = TcpStream::connect(addr).await else {
        log(start, format!("client {id}: could not connect"));
        return;
    };
    if let Ok(local) = stream.local_addr() {
        log(start, format!("client {id}: connected from {local}"));
    }
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut answers = 0;
    for request in &requests {
        if write
            .write_all(format!("{request}\n").as_bytes())
            .await
            .is_err()
        {
            break;
        }
        match lines.next_line().await {
            Ok(Some(answer)) if answer == "BYE" => {
                log(start, format!("client {id}: server said BYE"));
                return;
            }
            Ok(Some(answer)) if answer == "ERR" => {
                log(
                    start,
                    format!("client {id}: server answered ERR to {request:?}"),
                );
            }
            Ok(Some(_done)) => answers += 1,
            Ok(None) | Err(_) => {
                log(
                    start,
                    format!(
                        "client {id}: the server closed the connection; answers received: {answers}"
                    ),
                );
                return;
            }
        }
    }
    log(
        start,
        format!("client {id}: all {answers} requests answered"),
    );
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let start = Instant::now();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    log(
        start,
        format!("listening on {addr}, at most {MAX_CONNECTIONS} connections"),
    );

    // Six clients for four slots: two wait. Client 0 has one request that outlasts the grace;
    // client 1 sends a bad request, which fails its connection (and frees its slot for a
    // waiting client); the others keep sending short requests, so the trigger catches them
    // mid-request or idle.
    let work = |ms: &[u64]| ms.iter().map(|ms| format!("WORK {ms}")).collect::<Vec<_>>();
    let clients = async {
        let mut set = tokio::task::JoinSet::new();
        for id in 0..6 {
            let requests = match id {
                0 => work(&[100, 5000]),
                1 => [work(&[100, 100]), vec!["HELLO".into()], work(&[100])].concat(),
                _ => work(&[150 + 40 * id as u64; 20]),
            };
            set.spawn(client(start, addr, id, requests));
        }
        set.join_all().await;
    };

    let stats = Arc::new(Stats::default());
    let (served, ()) = tokio::join!(serve(start, listener, stats.clone()), clients);

    match served {
        Ok(()) => log(start, "server: every connection finished within the grace"),
        Err(err) if err.is_cancelled() && err.failures().is_empty() => {
            log(start, "server: the grace ran out; the rest was cut off")
        }
        Err(err) => log(start, format!("server: failed: {err}")),
    }
    println!(
        "requests served: {}, cut off: {}, connections failed (isolated): {}, \
         connections refused at shutdown: {}",
        stats.served.load(Ordering::SeqCst),
        stats.cut.load(Ordering::SeqCst),
        stats.failed.load(Ordering::SeqCst),
        stats.refused.load(Ordering::SeqCst),
    );
    Ok(())
}
