//! End to end with tonic over loopback: a tonic server with the server layer, tonic channels
//! with the client layer, and a hand-written route (prost messages, no protoc).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::PathAndQuery;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use quattro::propagate;
use quattro::tower::{ClientDeadline, ClientLayer, ServerLayer};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tonic::body::Body;
use tonic::codec::ProstCodec;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Status};
use tower::{Layer, Service};

/// The request: how long the last hop works, in milliseconds.
#[derive(Clone, PartialEq, prost::Message)]
struct Ask {
    #[prost(uint64, tag = "1")]
    work_ms: u64,
}

/// The reply: each hop's remaining budget when its handler started, first hop first.
#[derive(Clone, PartialEq, prost::Message)]
struct Reply {
    #[prost(message, repeated, tag = "1")]
    budgets: Vec<Budget>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Budget {
    #[prost(string, tag = "1")]
    hop: String,
    /// `None` when the hop had no deadline.
    #[prost(uint64, optional, tag = "2")]
    remaining_us: Option<u64>,
}

const PATH: &str = "/quattro.e2e.Hop/Call";

/// What the hops tell the test.
#[derive(Debug, PartialEq)]
enum Event {
    /// A handler started with this budget.
    Budget(&'static str, Option<Duration>),
    /// The last hop's work was dropped before it finished.
    Cut(&'static str),
    /// The last hop's work finished.
    Finished(&'static str),
}

/// Sends `Cut` when the work is dropped unfinished.
struct CutGuard {
    hop: &'static str,
    events: mpsc::UnboundedSender<Event>,
    finished: bool,
}

impl Drop for CutGuard {
    fn drop(&mut self) {
        let event = if self.finished {
            Event::Finished(self.hop)
        } else {
            Event::Cut(self.hop)
        };
        let _ = self.events.send(event);
    }
}

type HopClient = tonic::client::Grpc<ClientDeadline<Channel>>;

/// One service of the chain: forwards to `next`, or is the last hop and works.
#[derive(Clone)]
struct Hop {
    name: &'static str,
    next: Option<HopClient>,
    events: mpsc::UnboundedSender<Event>,
}

impl Hop {
    async fn call(self, ask: Ask) -> Result<Reply, Status> {
        let left = propagate::remaining();
        let _ = self.events.send(Event::Budget(self.name, left));
        let mut reply = match self.next {
            // No deadline is passed here: the client layer finds it.
            Some(next) => call(next, ask).await?,
            None => {
                let mut guard = CutGuard {
                    hop: self.name,
                    events: self.events.clone(),
                    finished: false,
                };
                tokio::time::sleep(Duration::from_millis(ask.work_ms)).await;
                guard.finished = true;
                Reply::default()
            }
        };
        reply.budgets.insert(
            0,
            Budget {
                hop: self.name.to_owned(),
                remaining_us: left.map(|left| left.as_micros() as u64),
            },
        );
        Ok(reply)
    }
}

async fn call<T>(mut client: tonic::client::Grpc<T>, ask: Ask) -> Result<Reply, Status>
where
    T: tonic::client::GrpcService<Body>,
    T::ResponseBody: hyper::body::Body<Data = hyper::body::Bytes> + Send + 'static,
    <T::ResponseBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    call_request(&mut client, tonic::Request::new(ask)).await
}

async fn call_request<T>(
    client: &mut tonic::client::Grpc<T>,
    request: tonic::Request<Ask>,
) -> Result<Reply, Status>
where
    T: tonic::client::GrpcService<Body>,
    T::ResponseBody: hyper::body::Body<Data = hyper::body::Bytes> + Send + 'static,
    <T::ResponseBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    client
        .ready()
        .await
        .map_err(|err| Status::unavailable(err.into().to_string()))?;
    let path = PathAndQuery::from_static(PATH);
    let reply = client.unary(request, path, ProstCodec::default()).await?;
    Ok(reply.into_inner())
}

/// The hand-written route: what tonic-build would generate for `service Hop { rpc Call }`.
#[derive(Clone)]
struct HopService(Hop);

impl NamedService for HopService {
    const NAME: &'static str = "quattro.e2e.Hop";
}

impl Service<http::Request<Body>> for HopService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let hop = self.0.clone();
        Box::pin(async move {
            if request.uri().path() != PATH {
                return Ok(Status::unimplemented("no such method").into_http());
            }
            let method = tower::service_fn(move |request: tonic::Request<Ask>| {
                let hop = hop.clone();
                async move {
                    hop.call(request.into_inner())
                        .await
                        .map(tonic::Response::new)
                }
            });
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Reply, Ask>::default());
            Ok(grpc.unary(method, request).await)
        })
    }
}

/// Starts a hop on an ephemeral loopback port with the server layer.
async fn serve(hop: Hop, layer: ServerLayer) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::builder()
        .layer(layer)
        .add_service(HopService(hop))
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::spawn(server);
    addr
}

async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A gRPC client with no timer of its own: tonic's codec over a plain hyper HTTP/2 client, so
/// the status it gets is the one the server answered. (A tonic channel enforces a call's
/// `grpc-timeout` itself too, and reports its own expiry as `CANCELLED`, which would come
/// first: the server's deadline starts later, when the request arrives.)
fn raw_client(addr: SocketAddr) -> tonic::client::Grpc<RawClient> {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    tonic::client::Grpc::with_origin(client, format!("http://{addr}").parse().unwrap())
}

type RawClient = Client<HttpConnector, Body>;

/// A channel with the client layer, as a handler would use.
async fn layered(addr: SocketAddr) -> HopClient {
    tonic::client::Grpc::new(ClientLayer::new().layer(channel(addr).await))
}

/// B → C, both with both layers; returns B's address and the events of both.
async fn chain(c_layer: ServerLayer) -> (SocketAddr, mpsc::UnboundedReceiver<Event>) {
    let (events, received) = mpsc::unbounded_channel();
    let c = serve(
        Hop {
            name: "C",
            next: None,
            events: events.clone(),
        },
        c_layer,
    )
    .await;
    let b = serve(
        Hop {
            name: "B",
            next: Some(layered(c).await),
            events,
        },
        ServerLayer::new(),
    )
    .await;
    (b, received)
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

#[tokio::test]
async fn three_hops_cut_at_the_deadline_and_a_gets_deadline_exceeded() {
    let (b, mut events) = chain(ServerLayer::new()).await;
    // A: a gRPC client that sends a 300 ms timeout with the call.
    let mut a = raw_client(b);
    let mut request = tonic::Request::new(Ask { work_ms: 60_000 });
    let budget_a = Duration::from_millis(300);
    request.set_timeout(budget_a);

    let status = call_request(&mut a, request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");

    // C saw A's budget less the time spent on the way, and its work was cut.
    let b_left = budget(next_event(&mut events).await, "B");
    let c_left = budget(next_event(&mut events).await, "C");
    assert!(
        c_left <= b_left && b_left <= budget_a,
        "{c_left:?} {b_left:?}"
    );
    assert_eq!(next_event(&mut events).await, Event::Cut("C"));
}

#[tokio::test]
async fn three_hops_report_the_budget_each_hop_saw() {
    let (b, mut events) = chain(ServerLayer::new()).await;
    let mut a = tonic::client::Grpc::new(channel(b).await);
    let mut request = tonic::Request::new(Ask { work_ms: 1 });
    request.set_timeout(Duration::from_secs(5));

    let reply = call_request(&mut a, request).await.unwrap();
    let hops: Vec<_> = reply.budgets.iter().map(|b| b.hop.as_str()).collect();
    assert_eq!(hops, ["B", "C"]);
    let b_left = reply.budgets[0].remaining_us.unwrap();
    let c_left = reply.budgets[1].remaining_us.unwrap();
    assert!(0 < c_left && c_left <= b_left && b_left <= 5_000_000);
    budget(next_event(&mut events).await, "B");
    budget(next_event(&mut events).await, "C");
    assert_eq!(next_event(&mut events).await, Event::Finished("C"));
}

#[tokio::test]
async fn a_in_a_scope_with_the_client_layer_ends_at_its_own_deadline() {
    let (b, mut events) = chain(ServerLayer::new()).await;
    let a = layered(b).await;
    let outcome =
        quattro::fail_after(Duration::from_millis(200), call(a, Ask { work_ms: 60_000 })).await;
    match outcome {
        // The scope's timer fired first.
        Err(elapsed) => assert!(elapsed.is_deadline_reached()),
        // The channel's own timer for the header the layer stamped fired at the same instant,
        // and tonic reports that as CANCELLED.
        Ok(Err(status)) => assert_eq!(status.code(), Code::Cancelled, "{status:?}"),
        Ok(Ok(reply)) => panic!("C's work finished: {reply:?}"),
    }
    budget(next_event(&mut events).await, "B");
    budget(next_event(&mut events).await, "C");
    assert_eq!(next_event(&mut events).await, Event::Cut("C"));
}

#[tokio::test]
async fn malformed_timeout_is_invalid_argument_and_runs_nothing() {
    let (b, mut events) = chain(ServerLayer::new()).await;
    let mut a = tonic::client::Grpc::new(channel(b).await);
    let mut request = tonic::Request::new(Ask { work_ms: 1 });
    request
        .metadata_mut()
        .insert("grpc-timeout", "1.5S".parse().unwrap());

    let status = call_request(&mut a, request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("grpc-timeout"), "{status:?}");
    assert!(events.try_recv().is_err(), "no handler ran");
}

#[tokio::test]
async fn expired_timeout_is_deadline_exceeded_and_runs_nothing() {
    let (b, mut events) = chain(ServerLayer::new()).await;
    let mut a = raw_client(b);
    let mut request = tonic::Request::new(Ask { work_ms: 1 });
    request
        .metadata_mut()
        .insert("grpc-timeout", "0n".parse().unwrap());

    let status = call_request(&mut a, request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(events.try_recv().is_err(), "no handler ran");
}

#[tokio::test]
async fn no_timeout_runs_under_the_default_budget() {
    let default = Duration::from_secs(3);
    let (events, mut received) = mpsc::unbounded_channel();
    let c = serve(
        Hop {
            name: "C",
            next: None,
            events,
        },
        ServerLayer::new().default_timeout(default),
    )
    .await;
    let mut a = tonic::client::Grpc::new(channel(c).await);
    let reply = call_request(&mut a, tonic::Request::new(Ask { work_ms: 1 }))
        .await
        .unwrap();
    let c_left = reply.budgets[0].remaining_us.unwrap();
    assert!(0 < c_left && c_left <= 3_000_000);
    assert!(budget(next_event(&mut received).await, "C") <= default);
}
