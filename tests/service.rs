//! The service example's frontend and backends, run in-process over loopback TCP: a deadline
//! set by the client stops the work at every hop, nothing keeps running after it, and the
//! `grpc-timeout` header survives the trip.
//!
//! Real time, with budgets of tens of milliseconds against work of seconds, so the assertions
//! hold with wide margins on a slow, loaded machine; they check what happened, not how fast.

#[path = "../examples/service/app.rs"]
mod app;

use std::io;
use std::time::Duration;

use app::{
    Backend, BackendSpec, Budget, Config, DEADLINE_EXCEEDED, FAILED, FrontendStats,
    INVALID_ARGUMENT, Outcome, RequestLine, System, ms,
};
use quattro::propagate::{self, decode_timeout, encode_timeout};
use quattro::{fail_at, move_on_after};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Work far longer than any budget below.
const SLOW: Duration = Duration::from_secs(2);
/// A short budget.
const SHORT: Duration = Duration::from_millis(50);
/// Everything must have stopped within this after a request returned (it is usually < 5 ms).
const SETTLE: Duration = Duration::from_secs(1);
/// How late after its deadline a backend may stop, at most, on a loaded machine.
const MARGIN: Duration = Duration::from_millis(500);

fn config(backends: Vec<BackendSpec>, fan_out_limit: usize) -> Config {
    Config {
        backends,
        fan_out_limit,
        default_budget: Duration::from_secs(5),
        metrics_every: ms(20),
    }
}

fn slow_backends() -> Vec<BackendSpec> {
    vec![
        BackendSpec::new("a", SLOW),
        BackendSpec::new("b", SLOW),
        BackendSpec::new("c", SLOW),
    ]
}

/// Asserts no backend works or holds a connection once things had `SETTLE` to stop.
async fn assert_quiet(system: &System) {
    system.quiesce(SETTLE).await;
    for backend in &system.backends {
        assert_eq!(
            backend.stats.in_flight(),
            0,
            "{} still working",
            backend.spec.name
        );
        assert_eq!(
            backend.stats.connections(),
            0,
            "{} still has a connection open",
            backend.spec.name
        );
    }
    assert_eq!(FrontendStats::get(&system.frontend.stats.connections), 0);
}

fn record(backend: &Backend, id: u64) -> Option<app::Record> {
    backend.stats.record(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_budget_is_cut_off_at_every_hop() -> io::Result<()> {
    app::run_system(config(slow_backends(), 3), |system| async move {
        let reply = app::call_frontend(system.frontend_addr, 1, Budget::Timeout(SHORT)).await?;

        // The frontend answered at the deadline, not after the backends' 2 s of work.
        assert_eq!(reply.code(), Some(DEADLINE_EXCEEDED), "{reply:?}");
        assert!(reply.latency >= SHORT, "{reply:?}");
        assert!(reply.latency < SLOW / 2, "{reply:?}");

        // Right after: every backend was called, stopped at its propagated deadline, and
        // nothing is in flight any more (the drop guards count it).
        assert!(system.settle(1, SETTLE).await, "a backend kept working");
        assert_quiet(&system).await;
        for backend in &system.backends {
            let record = record(backend, 1).expect("every backend was called");
            assert!(
                matches!(record.outcome, Outcome::CutOff(_) | Outcome::Cancelled(_)),
                "{}: {record:?}",
                backend.spec.name
            );
            assert!(record.overrun < MARGIN, "{}: {record:?}", backend.spec.name);
            let received = decode_timeout(record.header.as_deref().unwrap()).unwrap();
            assert!(received <= SHORT, "{}: {record:?}", backend.spec.name);
            assert!(
                received > Duration::ZERO,
                "{}: {record:?}",
                backend.spec.name
            );
        }
        // Which of the two stopped a backend first, its own deadline (`CutOff`) or the
        // frontend hanging up at the same deadline (`Cancelled`), depends on the transit time;
        // `backend_alone_obeys_the_header` checks the backend's own deadline on its own.
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_backend_calls_are_dropped_unsent() -> io::Result<()> {
    // One call at a time: the first backend takes the whole budget, the others never start.
    app::run_system(config(slow_backends(), 1), |system| async move {
        let reply = app::call_frontend(system.frontend_addr, 1, Budget::Timeout(SHORT)).await?;
        assert_eq!(reply.code(), Some(DEADLINE_EXCEEDED), "{reply:?}");
        assert!(system.settle(1, SETTLE).await);
        assert_quiet(&system).await;
        let [a, b, c] = &system.backends[..] else {
            unreachable!()
        };
        assert!(matches!(
            record(a, 1).unwrap().outcome,
            Outcome::CutOff(_) | Outcome::Cancelled(_)
        ));
        assert!(record(b, 1).is_none());
        assert!(record(c, 1).is_none());
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generous_budget_every_backend_answers() -> io::Result<()> {
    let backends = vec![
        BackendSpec::new("a", ms(10)),
        BackendSpec::new("b", ms(30)),
        BackendSpec::new("c", ms(20)),
    ];
    let budget = Duration::from_secs(5);
    app::run_system(config(backends, 2), |system| async move {
        let reply = app::call_frontend(system.frontend_addr, 7, Budget::Timeout(budget)).await?;
        assert!(reply.is_ok(), "{reply:?}");
        assert_eq!(reply.line, "OK a=10ms,b=30ms,c=20ms");
        assert!(system.settle(7, SETTLE).await);
        assert_quiet(&system).await;
        for backend in &system.backends {
            let record = record(backend, 7).unwrap();
            assert!(matches!(record.outcome, Outcome::Answered(_)), "{record:?}");
            assert_eq!(record.overrun, Duration::ZERO);
            // The time left, shrunk by the time spent on the way, never grown.
            let received = decode_timeout(record.header.as_deref().unwrap()).unwrap();
            assert!(received <= budget, "{record:?}");
            assert!(received > budget - Duration::from_secs(2), "{record:?}");
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_header_gets_the_frontend_default() -> io::Result<()> {
    let mut config = config(slow_backends(), 3);
    config.default_budget = SHORT;
    app::run_system(config, |system| async move {
        let reply = app::call_frontend(system.frontend_addr, 2, Budget::None).await?;
        assert_eq!(reply.code(), Some(DEADLINE_EXCEEDED), "{reply:?}");
        assert!(reply.latency < SLOW / 2, "{reply:?}");
        assert!(system.settle(2, SETTLE).await);
        assert_quiet(&system).await;
        for backend in &system.backends {
            let record = record(backend, 2).unwrap();
            let received = decode_timeout(record.header.as_deref().unwrap()).unwrap();
            assert!(received <= SHORT, "{record:?}");
            assert!(record.overrun < MARGIN, "{record:?}");
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_malformed_headers_reach_no_backend() -> io::Result<()> {
    app::run_system(config(slow_backends(), 3), |system| async move {
        let expired = app::call_frontend(system.frontend_addr, 3, Budget::Raw("0n")).await?;
        assert_eq!(expired.code(), Some(DEADLINE_EXCEEDED), "{expired:?}");

        let malformed = app::call_frontend(system.frontend_addr, 4, Budget::Raw("1.5S")).await?;
        assert_eq!(malformed.code(), Some(INVALID_ARGUMENT), "{malformed:?}");

        let bad_line = raw_call(system.frontend_addr, "HELLO").await?;
        assert!(bad_line.starts_with(&format!("ERR {INVALID_ARGUMENT}")));

        assert_quiet(&system).await;
        for backend in &system.backends {
            assert!(record(backend, 3).is_none(), "{}", backend.spec.name);
            assert!(record(backend, 4).is_none(), "{}", backend.spec.name);
        }
        let stats = &system.frontend.stats;
        assert_eq!(FrontendStats::get(&stats.requests), 3);
        assert_eq!(FrontendStats::get(&stats.invalid), 2);
        assert_eq!(FrontendStats::get(&stats.deadline_exceeded), 1);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_backend_cancels_its_siblings() -> io::Result<()> {
    let backends = vec![
        BackendSpec::new("slow", SLOW),
        BackendSpec {
            fail_every: Some(1),
            ..BackendSpec::new("flaky", ms(200))
        },
    ];
    app::run_system(config(backends, 2), |system| async move {
        let reply = app::call_frontend(
            system.frontend_addr,
            5,
            Budget::Timeout(Duration::from_secs(10)),
        )
        .await?;
        assert_eq!(reply.code(), Some(FAILED), "{reply:?}");
        assert!(reply.line.contains("flaky"), "{reply:?}");
        assert!(reply.latency < SLOW / 2, "{reply:?}");
        assert!(system.settle(5, SETTLE).await);
        assert_quiet(&system).await;
        let [slow, flaky] = &system.backends[..] else {
            unreachable!()
        };
        assert!(matches!(
            record(flaky, 5).unwrap().outcome,
            Outcome::Failed(_)
        ));
        // Stopped long before its deadline, because the frontend hung up.
        assert!(matches!(
            record(slow, 5).unwrap().outcome,
            Outcome::Cancelled(_)
        ));
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_alone_obeys_the_header() -> io::Result<()> {
    app::run_system(config(slow_backends(), 3), |system| async move {
        let backend = &system.backends[0];

        let started = Instant::now();
        let reply = raw_call(backend.addr, "WORK 8 grpc-timeout=30m").await?;
        assert!(
            reply.starts_with(&format!("ERR {DEADLINE_EXCEEDED}")),
            "{reply}"
        );
        assert!(started.elapsed() < SLOW / 2);
        // The reply is written after the work was dropped, so it is counted out already.
        assert_eq!(backend.stats.in_flight(), 0);
        let cut = record(backend, 8).unwrap();
        assert!(matches!(cut.outcome, Outcome::CutOff(_)), "{cut:?}");
        assert_eq!(cut.header.as_deref(), Some("30m"));

        let reply = raw_call(backend.addr, "WORK 9 grpc-timeout=30").await?;
        assert!(
            reply.starts_with(&format!("ERR {INVALID_ARGUMENT}")),
            "{reply}"
        );
        assert_eq!(record(backend, 9).unwrap().outcome, Outcome::Rejected);

        let reply = raw_call(backend.addr, "WORK 10 grpc-timeout=0n").await?;
        assert!(
            reply.starts_with(&format!("ERR {DEADLINE_EXCEEDED}")),
            "{reply}"
        );
        assert_quiet(&system).await;
        Ok(())
    })
    .await
}

/// Sends one raw line and returns the one-line reply.
async fn raw_call(addr: std::net::SocketAddr, line: &str) -> io::Result<String> {
    let stream = TcpStream::connect(addr).await?;
    let (reader, mut writer) = stream.into_split();
    writer.write_all(format!("{line}\n").as_bytes()).await?;
    let reply = BufReader::new(reader).lines().next_line().await?;
    Ok(reply.unwrap_or_default())
}

/// The header as the protocol writes and reads it: what goes out comes back, byte for byte,
/// and decodes to the encoded time.
#[test]
fn header_round_trips_through_the_protocol() {
    for timeout in [
        Duration::ZERO,
        Duration::from_nanos(1),
        ms(1),
        SHORT,
        ms(250),
        Duration::from_millis(1500),
        Duration::from_secs(90),
        Duration::from_secs(3 * 3600),
    ] {
        let value = encode_timeout(timeout);
        let line = RequestLine::new("WORK", 42, Some(value.to_string())).to_string();
        assert_eq!(line, format!("WORK 42 grpc-timeout={value}"));
        let parsed = RequestLine::parse(&line).unwrap();
        assert_eq!(parsed.id, 42);
        assert_eq!(parsed.timeout.as_deref(), Some(value.to_string().as_str()));
        let decoded = decode_timeout(parsed.timeout.as_deref().unwrap()).unwrap();
        assert_eq!(decoded, value.to_duration());
        // Rounded down, by less than one part in 10^5.
        assert!(decoded <= timeout && timeout - decoded <= timeout / 100_000);
    }
    assert_eq!(
        RequestLine::parse("REQ 3"),
        Some(RequestLine::new("REQ", 3, None))
    );
    assert_eq!(RequestLine::parse("REQ 3 timeout=1S"), None);
    assert_eq!(RequestLine::parse("REQ x grpc-timeout=1S"), None);
    assert_eq!(RequestLine::parse("REQ 3 grpc-timeout=1S extra"), None);
}

/// On the paused clock the hop is exact: the deadline a server derives from the header, sent
/// on again from inside `fail_at`, gives back the very same header value.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn header_round_trips_exactly_across_a_hop() {
    for sent in [
        "50000000n",
        "250000u",
        "1500000u",
        "90000000u",
        "3000000m",
        "0n",
    ] {
        let deadline = propagate::deadline_from_header(sent).unwrap();
        let resent = fail_at(deadline, async { propagate::header_value() })
            .await
            .ok()
            .flatten()
            .map(|value| value.to_string());
        // A zero budget is cancelled before the handler runs past its first suspension, but
        // this handler does not suspend, so it still sees the expired deadline.
        assert_eq!(resent.as_deref(), Some(sent), "{sent}");
    }
    // The client's own budget goes out as the encoded time left.
    let header = move_on_after(SHORT, async { propagate::header_value() })
        .await
        .flatten()
        .unwrap();
    assert_eq!(Budget::Timeout(SHORT).header(), Some(header.to_string()));
}
