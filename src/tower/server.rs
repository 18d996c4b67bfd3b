//! The server side: run each request under the deadline its header carries.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use pin_project::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use super::{GRPC_TIMEOUT, deadline_after, is_grpc};
use crate::propagate::GrpcTimeout;
use crate::{Fail, fail_at};

/// Layer that runs each request under the deadline its `grpc-timeout` header carries.
///
/// Its service, [`ServerDeadline`], reads the timeout when the request arrives (in `call`),
/// and runs the inner service's future under [`fail_at`] with the deadline it gives. The
/// handler, everything it awaits, and the tasks it spawns in a [`TaskGroup`] see that
/// deadline through [`current_effective_deadline`], and a [`ClientLayer`] on their outgoing
/// calls passes it on. When the deadline passes, the handler's future is dropped and the
/// caller gets a *deadline exceeded* answer.
///
/// gRPC requests, whose `content-type` starts with `application/grpc`, always carry their
/// timeout in `grpc-timeout`. Other requests use the same header by default, in the same
/// format. [`http_header`](Self::http_header) picks another header for them.
///
/// | the request | gRPC answer | HTTP answer | the inner service |
/// |---|---|---|---|
/// | a valid timeout | the handler's | the handler's | runs under the deadline |
/// | a malformed timeout | `grpc-status: 3` (`INVALID_ARGUMENT`) | `400 Bad Request` | not called |
/// | a timeout of zero | `grpc-status: 4` (`DEADLINE_EXCEEDED`) | `504 Gateway Timeout` | not called |
/// | the deadline passes | `grpc-status: 4` (`DEADLINE_EXCEEDED`) | `504 Gateway Timeout` | its future is dropped |
///
/// An answer the handler gives only once the deadline has passed is replaced by the deadline
/// answer too. The caller has stopped waiting by then, and such an answer is usually what the
/// handler made of its own calls failing at the same instant, which would hide the cause. A
/// tonic channel, for instance, reports the expiry of the `grpc-timeout` it sent as
/// `CANCELLED`.
///
/// A gRPC answer is a *trailers-only* response: HTTP `200 OK` with `grpc-status` and
/// `grpc-message` in the headers, which every gRPC client reads as the call's status. The
/// layer's own answers have an empty body, made with `ResBody::default()`, so the inner
/// service's response body must implement [`Default`], as tonic's and axum's bodies do.
///
/// A request without a timeout runs under the [default budget](Self::default_timeout) if
/// one is set, and with no deadline otherwise. A [maximum](Self::max_timeout) caps every
/// budget, the default one included, and applies to requests without a header when there is
/// no default.
///
/// # Examples
///
/// ```
/// use std::convert::Infallible;
/// use std::time::Duration;
///
/// use http::{Request, Response, StatusCode};
/// use quattro::tower::ServerLayer;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// async fn handler(_: Request<String>) -> Result<Response<String>, Infallible> {
///     // The caller's deadline is in force here.
///     let left = quattro::propagate::remaining().unwrap();
///     Ok(Response::new(format!("{} ms left", left.as_millis())))
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let service = ServerLayer::new()
///     .default_timeout(Duration::from_secs(1))
///     .layer(service_fn(handler));
///
/// let request = Request::builder().header("grpc-timeout", "250m").body(String::new());
/// let response = service.clone().oneshot(request.unwrap()).await.unwrap();
/// assert_eq!(response.into_body(), "250 ms left");
///
/// // No header: the default budget.
/// let response = service.clone().oneshot(Request::new(String::new())).await.unwrap();
/// assert_eq!(response.into_body(), "1000 ms left");
///
/// // A malformed header is the caller's bug: the handler does not run.
/// let request = Request::builder().header("grpc-timeout", "1.5S").body(String::new());
/// let response = service.oneshot(request.unwrap()).await.unwrap();
/// assert_eq!(response.status(), StatusCode::BAD_REQUEST);
/// # }
/// ```
///
/// # With tonic
///
/// tonic's server reads `grpc-timeout` too, and answers `CANCELLED` when its own timer runs
/// out first. For the same header, this layer's deadline is never later than tonic's (it is
/// computed first) and its answer wins a tie, so callers get `DEADLINE_EXCEEDED`. A
/// `Server::timeout` shorter than the timeouts callers send would win instead: cap budgets
/// with [`max_timeout`](Self::max_timeout).
///
/// [`TaskGroup`]: crate::TaskGroup
/// [`current_effective_deadline`]: crate::current_effective_deadline
/// [`ClientLayer`]: super::ClientLayer
#[derive(Clone, Debug)]
pub struct ServerLayer {
    /// The budget of a request without a timeout header.
    default_timeout: Option<Duration>,
    /// The largest budget any request gets.
    max_timeout: Option<Duration>,
    /// The header that carries the timeout on requests that are not gRPC.
    http_header: HeaderName,
}

impl ServerLayer {
    /// Creates a layer with no default budget, no maximum, and `grpc-timeout` for every request.
    ///
    /// # Examples
    ///
    /// ```
    /// let layer = quattro::tower::ServerLayer::new();
    /// ```
    #[must_use]
    pub fn new() -> ServerLayer {
        ServerLayer {
            default_timeout: None,
            max_timeout: None,
            http_header: GRPC_TIMEOUT,
        }
    }

    /// Sets the budget of a request that comes without a timeout header.
    ///
    /// Without a default, such a request runs with no deadline (or the
    /// [maximum](Self::max_timeout), if one is set).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let layer = quattro::tower::ServerLayer::new().default_timeout(Duration::from_secs(5));
    /// ```
    #[must_use]
    pub fn default_timeout(mut self, timeout: Duration) -> ServerLayer {
        self.default_timeout = Some(timeout);
        self
    }

    /// Caps every request's budget at `timeout`.
    ///
    /// A longer timeout in the header is shortened to `timeout`. The cap applies to the
    /// [default budget](Self::default_timeout) too, and is the budget of a request without a
    /// header when there is no default.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// // Nobody gets more than 30 s, whatever they ask for.
    /// let layer = quattro::tower::ServerLayer::new().max_timeout(Duration::from_secs(30));
    /// ```
    #[must_use]
    pub fn max_timeout(mut self, timeout: Duration) -> ServerLayer {
        self.max_timeout = Some(timeout);
        self
    }

    /// Sets the header that carries the timeout on requests that are not gRPC.
    ///
    /// Its value has the `grpc-timeout` format (see [`decode_timeout`]). gRPC requests keep
    /// using `grpc-timeout`, as the gRPC protocol says. Pair it with the same setting on the
    /// callers' [`ClientLayer`](super::ClientLayer).
    ///
    /// # Examples
    ///
    /// ```
    /// use http::HeaderName;
    ///
    /// let layer = quattro::tower::ServerLayer::new()
    ///     .http_header(HeaderName::from_static("x-request-timeout"));
    /// ```
    ///
    /// [`decode_timeout`]: crate::propagate::decode_timeout
    #[must_use]
    pub fn http_header(mut self, name: HeaderName) -> ServerLayer {
        self.http_header = name;
        self
    }

    /// The budget for a request: `Ok(None)` for no deadline.
    fn budget(&self, headers: &HeaderMap, name: &HeaderName) -> Result<Option<Duration>, String> {
        let asked = match headers.get(name) {
            None => self.default_timeout,
            Some(value) => {
                Some(parse_timeout(value).map_err(|why| format!("invalid {name} header: {why}"))?)
            }
        };
        Ok(match (asked, self.max_timeout) {
            (Some(asked), Some(max)) => Some(asked.min(max)),
            (asked, max) => asked.or(max),
        })
    }
}

impl Default for ServerLayer {
    fn default() -> ServerLayer {
        ServerLayer::new()
    }
}

impl<S> Layer<S> for ServerLayer {
    type Service = ServerDeadline<S>;

    fn layer(&self, inner: S) -> ServerDeadline<S> {
        ServerDeadline {
            inner,
            layer: self.clone(),
        }
    }
}

fn parse_timeout(value: &HeaderValue) -> Result<Duration, String> {
    let text = value
        .to_str()
        .map_err(|_| "value is not visible ASCII".to_owned())?;
    text.parse::<GrpcTimeout>()
        .map(GrpcTimeout::to_duration)
        .map_err(|err| err.to_string())
}

/// Service that runs each request under the deadline its timeout header carries.
///
/// Made by [`ServerLayer`], which describes what it does.
///
/// # Examples
///
/// ```
/// use std::convert::Infallible;
///
/// use http::{Request, Response};
/// use quattro::tower::{ServerDeadline, ServerLayer};
/// use tower::{Layer, service_fn};
///
/// let service: ServerDeadline<_> = ServerLayer::new().layer(service_fn(|_: Request<String>| async {
///     Ok::<_, Infallible>(Response::new(String::new()))
/// }));
/// let inner = service.get_ref(); // the service_fn
/// ```
#[derive(Clone, Debug)]
pub struct ServerDeadline<S> {
    inner: S,
    layer: ServerLayer,
}

impl<S> ServerDeadline<S> {
    /// Returns a reference to the inner service.
    ///
    /// # Examples
    ///
    /// See [`ServerDeadline`].
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Returns a mutable reference to the inner service.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower::{Layer, service_fn};
    ///
    /// let mut service = quattro::tower::ServerLayer::new().layer(service_fn(|()| async {
    ///     Ok::<_, std::convert::Infallible>(())
    /// }));
    /// let inner = service.get_mut();
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Returns the inner service, dropping the layer's settings.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower::{Layer, service_fn};
    ///
    /// let service = quattro::tower::ServerLayer::new().layer(service_fn(|()| async {
    ///     Ok::<_, std::convert::Infallible>(())
    /// }));
    /// let inner = service.into_inner();
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ServerDeadline<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ServerFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let grpc = is_grpc(request.headers());
        let name = if grpc {
            &GRPC_TIMEOUT
        } else {
            &self.layer.http_header
        };
        let state = match self.layer.budget(request.headers(), name) {
            Ok(None) => State::Unbounded {
                inner: self.inner.call(request),
            },
            Ok(Some(budget)) if budget.is_zero() => {
                tracing::debug!("request arrived with its deadline already passed");
                State::Answered {
                    reason: Reason::DeadlineExceeded,
                    response: Some(Reason::DeadlineExceeded.response(grpc, DEADLINE_MESSAGE)),
                }
            }
            Ok(Some(budget)) => {
                let deadline = deadline_after(budget);
                State::Bounded {
                    inner: fail_at(deadline, self.inner.call(request)),
                    deadline,
                    grpc,
                }
            }
            Err(message) => {
                tracing::debug!(%message, "request rejected");
                State::Answered {
                    reason: Reason::InvalidTimeout,
                    response: Some(Reason::InvalidTimeout.response(grpc, &message)),
                }
            }
        };
        ServerFuture { state }
    }
}

/// The message of a deadline-exceeded answer.
const DEADLINE_MESSAGE: &str = "deadline exceeded";

/// Why the layer answers a request itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    InvalidTimeout,
    DeadlineExceeded,
}

impl Reason {
    /// The answer: a trailers-only gRPC response, or a bare HTTP status.
    fn response<B: Default>(self, grpc: bool, message: &str) -> Response<B> {
        let mut response = Response::new(B::default());
        if grpc {
            let code = match self {
                Reason::InvalidTimeout => "3",
                Reason::DeadlineExceeded => "4",
            };
            let headers = response.headers_mut();
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            headers.insert(GRPC_STATUS, HeaderValue::from_static(code));
            if let Ok(message) = HeaderValue::try_from(percent_encode(message)) {
                headers.insert(GRPC_MESSAGE, message);
            }
        } else {
            *response.status_mut() = match self {
                Reason::InvalidTimeout => StatusCode::BAD_REQUEST,
                Reason::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            };
        }
        response
    }
}

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// Percent-encodes a `grpc-message` value as the gRPC protocol asks: every byte outside
/// printable ASCII, and `%` itself.
fn percent_encode(message: &str) -> String {
    let mut encoded = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Future returned by [`ServerDeadline`].
///
/// It returns the inner service's response, or the layer's own answer if the deadline passes
/// first or the request's timeout is malformed or zero.
///
/// # Examples
///
/// ```
/// use std::convert::Infallible;
/// use std::time::Duration;
///
/// use http::{Request, Response, StatusCode};
/// use quattro::tower::ServerLayer;
/// use tower::{Layer, Service, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let mut service = ServerLayer::new().layer(service_fn(|_: Request<String>| async {
///     tokio::time::sleep(Duration::from_secs(60)).await; // too slow
///     Ok::<_, Infallible>(Response::new("done".to_owned()))
/// }));
/// let request = Request::builder().header("grpc-timeout", "100m").body(String::new());
/// let future = service.call(request.unwrap());
/// println!("{future:?}");
/// assert_eq!(future.await.unwrap().status(), StatusCode::GATEWAY_TIMEOUT);
/// # }
/// ```
///
/// # Errors
///
/// Returns the inner service's error if it fails before the deadline, or with no deadline.
/// The layer's own answers are `Ok` responses.
///
/// # Panics
///
/// Panics if it must arm its timer outside a tokio runtime that has the time driver enabled.
/// Polling it again after it completed may panic.
///
/// # Cancel safety
///
/// Dropping it drops the inner service's future, as the deadline does.
#[pin_project]
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct ServerFuture<F: Future, B> {
    #[pin]
    state: State<F, B>,
}

#[pin_project(project = StateProj)]
enum State<F: Future, B> {
    /// No deadline for this request.
    Unbounded {
        #[pin]
        inner: F,
    },
    /// The inner future, under the request's deadline.
    Bounded {
        #[pin]
        inner: Fail<F>,
        deadline: Instant,
        grpc: bool,
    },
    /// The layer answered without calling the inner service (`None` once taken).
    Answered {
        reason: Reason,
        response: Option<Response<B>>,
    },
}

impl<F, B, E> Future for ServerFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Default,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Unbounded { inner } => inner.poll(cx),
            StateProj::Bounded {
                inner,
                deadline,
                grpc,
            } => Poll::Ready(match ready!(inner.poll(cx)) {
                // Ready before the deadline: the handler's answer.
                Ok(output) if Instant::now() < *deadline => output,
                // Ready only once the deadline has passed (a timer inside the handler fired
                // at the same tick as the scope's, and the handler went on to answer): the
                // caller has stopped waiting, and the cause is the deadline.
                Ok(_) => {
                    tracing::debug!("request answered only after its deadline");
                    Ok(Reason::DeadlineExceeded.response(*grpc, DEADLINE_MESSAGE))
                }
                Err(_) => {
                    tracing::debug!("request cut off at its deadline");
                    Ok(Reason::DeadlineExceeded.response(*grpc, DEADLINE_MESSAGE))
                }
            }),
            StateProj::Answered { response, .. } => Poll::Ready(Ok(response
                .take()
                .expect("a ServerFuture was polled after it completed"))),
        }
    }
}

impl<F: Future, B> fmt::Debug for ServerFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("ServerFuture");
        match &self.state {
            State::Unbounded { .. } => debug.field("deadline", &None::<()>),
            State::Bounded {
                inner,
                deadline,
                grpc,
            } => debug
                .field("scope", inner)
                .field("deadline", deadline)
                .field("grpc", grpc),
            State::Answered { reason, response } => debug
                .field("answered", reason)
                .field("taken", &response.is_none()),
        };
        debug.finish()
    }
}
