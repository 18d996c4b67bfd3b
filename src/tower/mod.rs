//! Deadline propagation as tower middleware, with no code at the call sites.
//!
//! *Requires the `tower` feature.*
//!
//! A request's deadline follows it from service to service. [`propagate`] turns the deadline
//! in force into gRPC's `grpc-timeout` header and back, and the two layers here apply it to
//! every request, the way Go's `context` carries a deadline:
//!
//! - [`ServerLayer`], on a server, reads the timeout of each incoming request and runs the
//!   handler under [`fail_at`] with the deadline it gives. The handler, everything it awaits,
//!   and the tasks it spawns in a [`TaskGroup`] see that deadline in
//!   [`current_effective_deadline`]. When it passes, the handler is dropped and the caller
//!   gets `DEADLINE_EXCEEDED` (gRPC) or `504 Gateway Timeout` (plain HTTP). A malformed
//!   timeout gets `INVALID_ARGUMENT` or `400 Bad Request`. A default budget and a maximum can
//!   be set.
//! - [`ClientLayer`], on a client (a tonic channel, a hyper client), stamps every outgoing
//!   request with the time left before [`current_effective_deadline`], and stops waiting for
//!   the response when the deadline passes.
//!
//! With both, a service B that calls C while serving A's request passes on to C what is left
//! of A's budget. C's work is cut when it runs out, and A gets `DEADLINE_EXCEEDED`.
//!
//! The layers work on [`http::Request`] and [`http::Response`], so they fit tonic, axum,
//! hyper and anything else built on tower and `http` 1.x.
//!
//! # Examples
//!
//! A tonic server and the channel its handlers use to call the next service:
//!
//! ```no_run
//! use quattro::tower::{ClientLayer, ServerLayer};
//! use tower::ServiceBuilder;
//!
//! # async fn run(routes: tonic::service::Routes) -> Result<(), Box<dyn std::error::Error>> {
//! let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051").connect_lazy();
//! let downstream = ServiceBuilder::new().layer(ClientLayer::new()).service(channel);
//! // `tonic::client::Grpc::new(downstream)`, or a generated client's `new(downstream)`.
//!
//! tonic::transport::Server::builder()
//!     .layer(ServerLayer::new())
//!     .add_routes(routes)
//!     .serve("127.0.0.1:50052".parse()?)
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! An axum router and the hyper client its handlers use:
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use axum::{Router, routing::get};
//! use http_body_util::Empty;
//! use hyper::body::Bytes;
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use quattro::tower::{ClientLayer, ServerLayer};
//! use tower::Layer;
//!
//! # async fn run() -> std::io::Result<()> {
//! let client = ClientLayer::new().layer(Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>());
//! let app = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(ServerLayer::new().default_timeout(Duration::from_secs(10)));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await
//! # }
//! ```
//!
//! [`propagate`]: crate::propagate
//! [`fail_at`]: crate::fail_at
//! [`TaskGroup`]: crate::TaskGroup
//! [`current_effective_deadline`]: crate::current_effective_deadline

use std::time::Duration;

use http::{HeaderMap, HeaderName};
use tokio::time::Instant;

mod client;
mod server;

pub use client::{ClientDeadline, ClientFuture, ClientLayer, DeadlineExceeded};
pub use server::{ServerDeadline, ServerFuture, ServerLayer};

/// tower's error type: what a [`ClientDeadline`] fails with.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The `grpc-timeout` header.
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static(crate::propagate::HEADER_NAME);

/// Whether a request or response is gRPC: its `content-type` starts with `application/grpc`
/// (`application/grpc`, `application/grpc+proto`, `application/grpc-web`, ...).
fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

/// `now + timeout`, or about thirty years from now when that overflows (as tokio's `timeout`).
fn deadline_after(timeout: Duration) -> Instant {
    const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);
    let now = Instant::now();
    now.checked_add(timeout).unwrap_or(now + FAR_FUTURE)
}
