//! End to end with axum servers and hyper clients over loopback: plain HTTP, the timeout in
//! the `grpc-timeout` header (or a header of the application's choice).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use http::{HeaderName, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use quattro::propagate;
use quattro::tower::{ClientDeadline, ClientLayer, DeadlineExceeded, ServerLayer};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tower::{Layer, ServiceExt};

/// What the services tell the test.
#[derive(Debug, PartialEq)]
enum Event {
    /// A handler started with this budget.
    Budget(&'static str, Option<Duration>),
    /// C's work was dropped before it finished.
    Cut,
    /// C's work finished.
    Finished,
}

type Events = mpsc::UnboundedSender<Event>;

/// Sends `Cut` when C's work is dropped unfinished.
struct CutGuard {
    events: Events,
    finished: bool,
}

impl Drop for CutGuard {
    fn drop(&mut self) {
        let _ = self.events.send(if self.finished {
            Event::Finished
        } else {
            Event::Cut
        });
    }
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// C: works for `ms` milliseconds, and answers with the budget it had, in microseconds.
async fn work(State(events): State<Events>, Path(ms): Path<u64>) -> String {
    let left = propagate::remaining();
    let _ = events.send(Event::Budget("C", left));
    let mut guard = CutGuard {
        events,
        finished: false,
    };
    tokio::time::sleep(Duration::from_millis(ms)).await;
    guard.finished = true;
    format!("{:?}", left.map(|left| left.as_micros()))
}

#[derive(Clone)]
struct Relay {
    /// The client to C, with the client layer: no deadline is passed by hand.
    client: ClientDeadline<HttpClient>,
    c: SocketAddr,
    events: Events,
}

/// B: calls C and relays its answer.
async fn relay(State(relay): State<Relay>, Path(ms): Path<u64>) -> (StatusCode, String) {
    let _ = relay
        .events
        .send(Event::Budget("B", propagate::remaining()));
    let request = Request::get(format!("http://{}/work/{ms}", relay.c))
        .body(Empty::new())
        .unwrap();
    match relay.client.oneshot(request).await {
        Ok(response) => {
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8(body.to_vec()).unwrap())
        }
        Err(err) if err.is::<DeadlineExceeded>() => (StatusCode::GATEWAY_TIMEOUT, err.to_string()),
        Err(err) => (StatusCode::BAD_GATEWAY, err.to_string()),
    }
}

async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// B → C, each behind a server layer, with the timeout in `header`; returns B's address and
/// the events of both.
async fn chain(
    header: HeaderName,
    b_layer: ServerLayer,
) -> (SocketAddr, mpsc::UnboundedReceiver<Event>) {
    let (events, received) = mpsc::unbounded_channel();
    let c = Router::new()
        .route("/work/{ms}", get(work))
        .with_state(events.clone())
        .layer(ServerLayer::new().http_header(header.clone()));
    let c = serve(c).await;
    let state = Relay {
        client: ClientLayer::new()
            .http_header(header.clone())
            .layer(http_client()),
        c,
        events,
    };
    let b = Router::new()
        .route("/relay/{ms}", get(relay))
        .with_state(state)
        .layer(b_layer.http_header(header));
    (serve(b).await, received)
}

/// A: a plain hyper client, with no deadline of its own; the timeout goes in a header.
async fn get_from(
    b: SocketAddr,
    path: &str,
    timeout: Option<(&str, &str)>,
) -> (StatusCode, String) {
    let mut request = Request::get(format!("http://{b}{path}"));
    if let Some((name, value)) = timeout {
        request = request.header(name, value);
    }
    let response = http_client()
        .request(request.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// The next event, waiting at most 10 s for it (a bound, not a timing assertion).
async fn next_event(events: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("an event within 10 s")
        .expect("the servers are running")
}

fn budget(event: Event, hop: &str) -> Duration {
    match event {
        Event::Budget(name, Some(left)) if name == hop => left,
        other => panic!("expected {hop}'s budget, got {other:?}"),
    }
}

fn grpc_timeout() -> HeaderName {
    HeaderName::from_static("grpc-timeout")
}

#[tokio::test]
async fn three_hops_cut_at_the_deadline_and_a_gets_504() {
    let (b, mut events) = chain(grpc_timeout(), ServerLayer::new()).await;
    let (status, body) = get_from(b, "/relay/60000", Some(("grpc-timeout", "300m"))).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(body.is_empty(), "the layer's own answer: {body}");

    let b_left = budget(next_event(&mut events).await, "B");
    let c_left = budget(next_event(&mut events).await, "C");
    assert!(
        c_left <= b_left && b_left <= Duration::from_millis(300),
        "{c_left:?} {b_left:?}"
    );
    assert_eq!(next_event(&mut events).await, Event::Cut);
}

#[tokio::test]
async fn three_hops_hand_on_the_budget_in_a_custom_header() {
    let header = HeaderName::from_static("x-request-timeout");
    let (b, mut events) = chain(header, ServerLayer::new()).await;
    let (status, body) = get_from(b, "/relay/1", Some(("x-request-timeout", "5S"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let b_left = budget(next_event(&mut events).await, "B");
    let c_left = budget(next_event(&mut events).await, "C");
    assert!(Duration::ZERO < c_left && c_left <= b_left && b_left <= Duration::from_secs(5));
    assert_eq!(body, format!("Some({})", c_left.as_micros()));
    assert_eq!(next_event(&mut events).await, Event::Finished);
}

#[tokio::test]
async fn malformed_timeout_is_400_and_runs_nothing() {
    let (b, mut events) = chain(grpc_timeout(), ServerLayer::new()).await;
    for bad in ["300", "1.5S", "soon"] {
        let (status, _) = get_from(b, "/relay/1", Some(("grpc-timeout", bad))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let (status, _) = get_from(b, "/relay/1", Some(("grpc-timeout", "0m"))).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(events.try_recv().is_err(), "no handler ran");
}

#[tokio::test]
async fn no_header_runs_under_the_default_budget_and_hands_it_on() {
    let default = Duration::from_secs(2);
    let (b, mut events) = chain(grpc_timeout(), ServerLayer::new().default_timeout(default)).await;
    let (status, body) = get_from(b, "/relay/1", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let b_left = budget(next_event(&mut events).await, "B");
    let c_left = budget(next_event(&mut events).await, "C");
    assert!(Duration::ZERO < c_left && c_left <= b_left && b_left <= default);
}
