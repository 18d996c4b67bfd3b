//! A deadline crossing three tonic services with no code at the call sites.
//!
//! A calls B with a budget; B's handler calls C without passing any deadline; C works. The
//! servers run under `quattro::tower::ServerLayer` and B's channel to C under `ClientLayer`, so
//! each hop's handler sees what is left of A's budget, C's work is cut when it runs out, and A
//! gets `DEADLINE_EXCEEDED`. Each hop prints its remaining budget as it starts.
//!
//! ```text
//! cargo run --example tonic_chain --features tower
//! ```
//!
//! Everything runs on ephemeral loopback ports, for about a second. The gRPC messages are
//! hand-written prost structs and the route a hand-written tower service (what tonic-build
//! would generate), so no protoc is needed.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::PathAndQuery;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use quattro::propagate;
use quattro::tower::{ClientDeadline, ClientLayer, ServerLayer};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tonic::body::Body;
use tonic::codec::ProstCodec;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};
use tower::{Layer, Service};

/// The request: how long C works.
#[derive(Clone, PartialEq, prost::Message)]
struct Work {
    #[prost(uint64, tag = "1")]
    millis: u64,
}

/// The reply: which hops answered.
#[derive(Clone, PartialEq, prost::Message)]
struct Done {
    #[prost(string, repeated, tag = "1")]
    hops: Vec<String>,
}

const PATH: &str = "/chain.Hop/Call";

/// One service of the chain: B forwards to C; C, the last, works.
#[derive(Clone)]
struct Hop {
    name: &'static str,
    next: Option<tonic::client::Grpc<ClientDeadline<Channel>>>,
}

impl Hop {
    async fn handle(self, work: Work) -> Result<Done, Status> {
        match propagate::remaining() {
            Some(left) => println!("  [{}] remaining budget: {left:.1?}", self.name),
            None => println!("  [{}] no deadline", self.name),
        }
        let mut done = match self.next {
            // No deadline is passed here: the client layer reads it from the scope that the
            // server layer runs this handler in.
            Some(mut next) => {
                next.ready()
                    .await
                    .map_err(|err| Status::unavailable(err.to_string()))?;
                let path = PathAndQuery::from_static(PATH);
                let request = Request::new(work);
                next.unary(request, path, ProstCodec::default())
                    .await?
                    .into_inner()
            }
            None => {
                let mut report = Report {
                    hop: self.name,
                    started: Instant::now(),
                    finished: false,
                };
                tokio::time::sleep(Duration::from_millis(work.millis)).await;
                report.finished = true;
                Done::default()
            }
        };
        done.hops.insert(0, self.name.to_owned());
        Ok(done)
    }
}

/// Says how C's work ended: finished, or dropped when the deadline passed.
struct Report {
    hop: &'static str,
    started: Instant,
    finished: bool,
}

impl Drop for Report {
    fn drop(&mut self) {
        let ended = if self.finished {
            "finished"
        } else {
            "cut at the deadline"
        };
        println!(
            "  [{}] work {ended} after {:.1?}",
            self.hop,
            self.started.elapsed()
        );
    }
}

/// The route: what tonic-build would generate for `service Hop { rpc Call(Work) returns (Done); }`.
#[derive(Clone)]
struct HopService(Hop);

impl NamedService for HopService {
    const NAME: &'static str = "chain.Hop";
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
            let method = tower::service_fn(move |request: Request<Work>| {
                let hop = hop.clone();
                async move { hop.handle(request.into_inner()).await.map(Response::new) }
            });
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Done, Work>::default());
            Ok(grpc.unary(method, request).await)
        })
    }
}

/// Starts a hop on an ephemeral loopback port, behind the server layer.
async fn serve(hop: Hop, layer: ServerLayer) -> Result<SocketAddr, Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = Server::builder()
        .layer(layer)
        .add_service(HopService(hop))
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::spawn(server);
    Ok(addr)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // C, then B with a channel to C wrapped in the client layer.
    let c = serve(
        Hop {
            name: "C",
            next: None,
        },
        ServerLayer::new(),
    )
    .await?;
    let to_c = Endpoint::from_shared(format!("http://{c}"))?
        .connect()
        .await?;
    let to_c = tonic::client::Grpc::new(ClientLayer::new().layer(to_c));
    let b_layer = ServerLayer::new().default_timeout(Duration::from_millis(800));
    let b = serve(
        Hop {
            name: "B",
            next: Some(to_c),
        },
        b_layer,
    )
    .await?;

    // A sends its budget the standard gRPC way. It talks over a plain hyper HTTP/2 client
    // rather than a tonic channel, which would enforce the timeout itself and report its own
    // expiry as CANCELLED before B's answer arrives: here A prints the status B answered.
    let a = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let mut a = tonic::client::Grpc::with_origin(a, format!("http://{b}").parse()?);

    let scenes = [
        ("500 ms budget, C works 50 ms", Some(500), 50),
        ("300 ms budget, C works 2 s", Some(300), 2000),
        (
            "no budget sent (B's default: 800 ms), C works 50 ms",
            None,
            50,
        ),
    ];
    for (title, budget, millis) in scenes {
        println!("A -> B -> C: {title}");
        let mut request = Request::new(Work { millis });
        if let Some(budget) = budget {
            request.set_timeout(Duration::from_millis(budget));
        }
        let started = Instant::now();
        a.ready().await?;
        let path = PathAndQuery::from_static(PATH);
        let outcome = a
            .unary::<_, Done, _>(request, path, ProstCodec::default())
            .await;
        match outcome {
            Ok(done) => println!(
                "  [A] ok from {:?} after {:.1?}",
                done.into_inner().hops,
                started.elapsed()
            ),
            Err(status) => println!(
                "  [A] {:?} ({}) after {:.1?}",
                status.code(),
                status.message(),
                started.elapsed()
            ),
        }
        println!();
    }
    Ok(())
}
