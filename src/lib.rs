//! Structured concurrency for tokio: task groups, `gather`, Trio-style cancel scopes with
//! deadlines, and Go-style `defer`.
//!
//! *Structured concurrency* means that concurrent work has a shape that follows the code: a
//! task is started inside a block, and the block does not end until the task has ended. No
//! task is leaked, no error goes unnoticed, and cancelling the block cancels everything in it.
//! tokio gives the parts ([`JoinSet`], [`CancellationToken`], `time::sleep_until`,
//! `task_local!`); this crate puts them together, the way Python's *quattro* does for
//! asyncio and Trio does for its own runtime.
//!
//! # The tools
//!
//! - **[`TaskGroup`]**: fan-out without leaked tasks. `TaskGroup::scope(|tg| async move { .. })`
//!   returns when the body and every task spawned with `tg.spawn(..)` are done; the first
//!   failure cancels the rest and every error comes back in one [`GroupError`]. Optional
//!   concurrency limit (queued tasks are plain futures, not tasks), background tasks, task
//!   names, panics propagated like `std::thread::scope`.
//! - **[`gather()`]**: "run these, give me all results in order, or cancel the rest"; with
//!   [`gather_settled()`] for "give me every outcome", [`gather!`] for a typed tuple, and a lazy
//!   concurrency limit that pulls the input only as slots free.
//! - **Cancel scopes**: [`move_on_after`] / [`move_on_at`] (yield `None` when the deadline
//!   passes) and [`fail_after`] / [`fail_at`] (yield `Err(Cancelled)`), or a [`CancelScope`]
//!   handle to cancel and move deadlines while the code runs. Scopes nest, the outer one wins
//!   a tie, and [`current_effective_deadline`] reads the deadline in force anywhere inside,
//!   including in tasks spawned by a group (but not in a plain `tokio::spawn`: see below), so
//!   it can be passed on to the next service
//!   ([`propagate`] speaks gRPC's `grpc-timeout`, and with the `tower` feature,
//!   `quattro::tower` does it for every request: see
//!   [Deadlines across services](#deadlines-across-services)).
//! - **[`Deferrer`]** / [`defer`]: cleanup (sync or async) deferred to the end of an async
//!   function, in reverse order, also when it fails, panics or is cancelled.
//! - **[`WithScope::in_current_scope`]**: a task started with plain `tokio::spawn` (by your code
//!   or a library) sees none of the scopes around the spawn: no deadline, no shutdown request.
//!   `fut.in_current_scope()` carries them into it (the view only; for a task whose life is
//!   tied to the scope, use [`TaskGroup::spawn`]).
//!
//! # Example
//!
//! A request handler with a deadline that fans out to backends, at most 4 at a time, with a
//! heartbeat running beside:
//!
//! ```
//! use std::time::Duration;
//! use quattro::{TaskGroup, current_effective_deadline, fail_after};
//! use tokio::time::sleep;
//!
//! async fn backend(i: u64) -> Result<u64, String> {
//!     // Every task sees the request's deadline, ready to pass on.
//!     assert!(current_effective_deadline().is_some());
//!     sleep(Duration::from_millis(10 * i)).await;
//!     Ok(i)
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let handled = fail_after(Duration::from_millis(500), async {
//!     TaskGroup::builder()
//!         .concurrency_limit(4)
//!         .scope(|tg| async move {
//!             tg.spawn_background(async {
//!                 loop {
//!                     sleep(Duration::from_millis(100)).await; // cancelled when the work is done
//!                 }
//!             });
//!             let answers: Vec<_> = (1..=8).map(|i| tg.spawn(backend(i))).collect();
//!             let mut sum = 0;
//!             for answer in answers {
//!                 sum += answer.await.unwrap_or(0);
//!             }
//!             Ok(sum)
//!         })
//!         .await
//! })
//! .await;
//! assert_eq!(handled.unwrap().unwrap(), 36);
//! # }
//! ```
//!
//! # Deadlines across services
//!
//! A deadline set where a request enters a system should bound the work done for it in every
//! service it reaches. [`propagate`] carries the deadline in force over the wire as gRPC's
//! `grpc-timeout` header; with the **`tower` feature**, the `quattro::tower` module makes that
//! automatic, as middleware for tonic, axum, hyper or any tower service over `http` types:
//!
//! - `ServerLayer` runs each incoming request under [`fail_at`] with the deadline its header
//!   carries, so the handler and everything it spawns in a group see it; when it passes, the
//!   handler is dropped and the caller gets `DEADLINE_EXCEEDED` (HTTP: 504). A malformed
//!   header gets `INVALID_ARGUMENT` (HTTP: 400); a default budget and a maximum are
//!   configurable.
//! - `ClientLayer` stamps the time left before [`current_effective_deadline`] on every
//!   outgoing request and stops waiting when it runs out, so a call made deep in a handler
//!   inherits the request's remaining budget with no code at the call site.
//!
//! ```toml
//! quattro = { version = "0.1", features = ["tower"] }
//! ```
//!
//! With tonic, on the server and on the channel its handlers call the next service with:
//!
//! ```no_run
//! # #[cfg(feature = "tower")]
//! # mod example {
//! use quattro::tower::{ClientLayer, ServerLayer};
//! use tonic::transport::{Endpoint, Server};
//! use tower::Layer;
//!
//! # async fn run(routes: tonic::service::Routes) -> Result<(), Box<dyn std::error::Error>> {
//! let channel = Endpoint::from_static("http://backend:50051").connect_lazy();
//! let backend = tonic::client::Grpc::new(ClientLayer::new().layer(channel)); // or a generated client
//! Server::builder()
//!     .layer(ServerLayer::new())
//!     .add_routes(routes)
//!     .serve("127.0.0.1:50051".parse()?)
//!     .await?;
//! # Ok(())
//! # }
//! # }
//! # fn main() {}
//! ```
//!
//! With axum, and a hyper client for the calls its handlers make:
//!
//! ```no_run
//! # #[cfg(feature = "tower")]
//! # mod example {
//! # use std::time::Duration;
//! # use axum::{Router, routing::get};
//! # use http_body_util::Empty;
//! # use hyper::body::Bytes;
//! # use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use quattro::tower::{ClientLayer, ServerLayer};
//! use tower::Layer;
//!
//! # async fn run() -> std::io::Result<()> {
//! let hyper = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
//! let backend = ClientLayer::new().layer(hyper); // put it in the router's state
//! let app = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(ServerLayer::new().default_timeout(Duration::from_secs(10)));
//! axum::serve(tokio::net::TcpListener::bind("127.0.0.1:3000").await?, app).await
//! # }
//! # }
//! # fn main() {}
//! ```
//!
//! `cargo run --example tonic_chain --features tower` shows a deadline crossing three tonic
//! services, with each hop's remaining budget.
//!
//! # Cancellation is level-triggered
//!
//! When a scope is cancelled, the future inside it is *dropped*: no code in the scope runs
//! after the cancellation point, and nothing can swallow the cancellation. (asyncio delivers a
//! `CancelledError` that code may catch; Rust's drop semantics give the stronger guarantee for
//! free.) Every future in this crate is safe to drop at any await; each documents what dropping
//! it does under `# Cancel safety`.
//!
//! A cancelled task's [`TaskError`], and a cancelled group's [`GroupError`], say why: its
//! handle aborted it, a sibling failed, `cancel()` was called, a shutdown's grace ran out, a
//! deadline around the group was reached, the group was dropped... (see [`CancelReason`]).
//!
//! # Internals
//!
//! `src/README.md` in the crate's source is a short guide to how this works inside: the
//! per-poll deadline frame, how dropped groups' tasks are awaited, the group's slot and queue
//! accounting, who wakes whom, and which test file guards which promise.
//!
//! [`JoinSet`]: tokio::task::JoinSet
//! [`TaskGroup::spawn`]: crate::TaskGroup::spawn
//! [`CancellationToken`]: tokio_util::sync::CancellationToken
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(
    no_crate_inject,
    attr(deny(warnings, rust_2018_idioms), allow(dead_code, unused_variables))
))]

mod context;
pub mod defer;
mod error;
mod frame;
pub mod gather;
pub mod group;
mod loom;
mod node;
pub mod propagate;
mod scope;
pub mod shutdown;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod tower;
mod waker;

pub use context::{InCurrentScope, WithScope};
pub use defer::{AsyncExit, Deferrer};
pub use error::{CancelReason, Cancelled, Failure, GroupError, Reported, TaskError};
pub use frame::current_effective_deadline;
#[doc(hidden)]
pub use gather::__private;
pub use gather::{gather, gather_settled};
pub use group::{GroupScope, TaskGroup, TaskHandle};
pub use scope::{CancelScope, Fail, MoveOn, fail_after, fail_at, move_on_after, move_on_at};
pub use shutdown::{
    ShutdownOn, ShutdownRequested, is_shutdown_requested, shutdown_requested, shutdown_token,
};
