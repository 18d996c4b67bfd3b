//! A deadline crossing three tonic services, with no deadline code at the call sites.
//!
//! A calls B with a budget. B's handler calls C without passing any deadline, and C works. The
//! servers run under `quattro::tower::ServerLayer` and B's channel to C under `ClientLayer`, so
//! each hop's handler runs under what is left of A's budget, C's work is cut when it runs out,
//! and A gets `DEADLINE_EXCEEDED`.
//!
//! ```text
//! cargo run --example tonic_chain --features tower
//! ```
//!
//! What to look for: each hop prints the `grpc-timeout` it received and the time it has left.
//! C receives what B had left, so the budget only shrinks along the chain. In the second
//! scene, C's 2 s of work is cut at A's 300 ms.
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
    /// Who calls this hop, for the printout.
    caller: &'static str,
    next: Option<tonic::client::Grpc<ClientDeadline<Channel>>>,
}

impl Hop {
    /// `received` is the request's `grpc-timeout` header, read for the printout only: the
    /// server layer has already put the handler under that deadline.
    async fn handle(self, work: Work, received: Option<String>) -> Result<Done, Status> {
        self.say_budget(received.as_deref());
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

    /// Prints the `grpc-timeout` this hop received and the time it has left.
    fn say_budget(&self, received: Option<&str>) {
        let (name, caller) = (self.name, self.caller);
        let sent = match received {
            Some(header) => {
                // A is the client; a caller that is a hop sends on the time it has left.
                let relayed = if caller == "A" {
                    String::new()
                } else {
                    format!(": what {caller} had left when it called {name}")
                };
                println!(
                    "  [{name}] grpc-timeout from {caller}: {header} ({}){relayed}",
                    spelled_out(header)
                );
                propagate::decode_timeout(header).ok()
            }
            None => {
                println!(
                    "  [{name}] no grpc-timeout from {caller}: the server layer's default applies"
                );
                None
            }
        };
        let Some(left) = propagate::remaining() else {
            println!("  [{name}] no deadline");
            return;
        };
        // The server layer starts the deadline when the headers arrive; the handler starts once
        // the whole request is in.
        match sent.and_then(|sent| sent.checked_sub(left)) {
            Some(gap) if gap >= Duration::from_millis(1) => println!(
                "  [{name}] {} left when the handler starts: {} went on waiting for the \
                 request's body",
                in_ms(left),
                in_ms(gap)
            ),
            _ => println!("  [{name}] {} left when the handler starts", in_ms(left)),
        }
    }
}

/// A duration in milliseconds, to a tenth: `455.1 ms`.
fn in_ms(time: Duration) -> String {
    format!("{:.1} ms", time.as_secs_f64() * 1000.0)
}

/// A `grpc-timeout` value is a number and a unit letter: `455039u` is 455039 microseconds.
fn spelled_out(header: &str) -> String {
    let Some(unit) = header.chars().last() else {
        return "empty".to_string();
    };
    let number = &header[..header.len() - unit.len_utf8()];
    let unit = match unit {
        'H' => "hours",
        'M' => "minutes",
        'S' => "seconds",
        'm' => "milliseconds",
        'u' => "microseconds",
        'n' => "nanoseconds",
        _ => "(unknown unit)",
    };
    format!("{number} {unit}")
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
            "  [{}] work {ended} after {}",
            self.hop,
            in_ms(self.started.elapsed())
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
                let received = request
                    .metadata()
                    .get(propagate::HEADER_NAME)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned);
                async move {
                    hop.handle(request.into_inner(), received)
                        .await
                        .map(Response::new)
                }
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
            caller: "B",
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
            caller: "A",
            next: Some(to_c),
        },
        b_layer,
    )
    .await?;

    // A sends its budget the standard gRPC way. It talks over a plain hyper HTTP/2 client
    // rather than a tonic channel, which would enforce the timeout itself and report its own
    // expiry as CANCELLED before B's answer arrives: here A prints the status B answered.
    // Without TCP_NODELAY, the request's body can follow its headers some 40 ms later on a
    // new connection, and B's deadline already runs from the headers.
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    let a = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(connector);
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
                "  [A] OK, answered by {}, after {}",
                done.into_inner().hops.join(" and "),
                in_ms(started.elapsed())
            ),
            Err(status) => println!(
                "  [A] B answered {:?} ({}) after {}",
                status.code(),
                status.message(),
                in_ms(started.elapsed())
            ),
        }
        println!();
    }
    Ok(())
}
