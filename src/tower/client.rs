//! The client side: stamp the deadline in force on each outgoing request, and enforce it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Request};
use pin_project::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use super::{BoxError, GRPC_TIMEOUT, is_grpc};
use crate::propagate::{GrpcTimeout, encode_timeout};
use crate::{Fail, current_effective_deadline, fail_at};

/// Layer that sends the deadline in force with every request and stops waiting when it passes.
///
/// Its service, [`ClientDeadline`], reads [`current_effective_deadline`] when it is called.
/// A call made anywhere inside a cancel scope, inside a request served under a
/// [`ServerLayer`], or in a task of a group inside either, thus carries the time left with no
/// code at the call site. A call made in a task started with plain `tokio::spawn` carries
/// nothing, unless that task's future was wrapped with
/// [`in_current_scope`](crate::WithScope::in_current_scope).
///
/// For each request, the service:
///
/// - puts the time left in the `grpc-timeout` header, rounded down as [`encode_timeout`]
///   does. A valid timeout already in the header is kept if it is not longer, so an explicit,
///   shorter per-call timeout wins. A malformed one is replaced.
/// - waits for the response under [`fail_at`] with the deadline, and fails with
///   [`DeadlineExceeded`] if the deadline passes first.
/// - fails at once with [`DeadlineExceeded`], without calling the inner service, if the
///   deadline has already passed.
///
/// Outside any deadline, the request goes through untouched.
///
/// gRPC requests, whose `content-type` starts with `application/grpc`, always carry the
/// timeout in `grpc-timeout`. Other requests use the same header by default, or the one set
/// with [`http_header`](Self::http_header).
///
/// The service's error is tower's `BoxError`, `Box<dyn Error + Send + Sync>`. It is the inner
/// service's error or a [`DeadlineExceeded`]: tell them apart with `downcast_ref`. tonic's
/// channels and hyper's clients accept such a service as it is.
///
/// # Examples
///
/// ```
/// use std::convert::Infallible;
/// use std::time::Duration;
///
/// use http::{Request, Response};
/// use quattro::tower::ClientLayer;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// // Stands for a transport (a tonic channel, a hyper client): shows what it would send.
/// let transport = service_fn(|request: Request<()>| async move {
///     let timeout = request.headers().get("grpc-timeout").cloned();
///     Ok::<_, Infallible>(Response::new(timeout))
/// });
/// let client = ClientLayer::new().layer(transport);
///
/// // Deep inside a request with 2 s left, the call carries them.
/// let call = client.clone().oneshot(Request::new(()));
/// let sent = quattro::fail_after(Duration::from_secs(2), call).await.unwrap().unwrap();
/// assert_eq!(sent.into_body().unwrap(), "2000000u");
///
/// // Outside any deadline there is nothing to send.
/// let sent = client.oneshot(Request::new(())).await.unwrap();
/// assert_eq!(sent.into_body(), None);
/// # }
/// ```
///
/// # Which timer fires
///
/// The deadline is read when the service is called, so a response future moved to another
/// task keeps it. When the response is awaited inside the scope whose deadline it is, as is
/// usual, that scope reaches the same deadline at the same instant. Being the outer one, it
/// wins against the layer's own timer: the awaiting code is cancelled and never sees
/// [`DeadlineExceeded`] (tonic would report one as a status with code `UNKNOWN`).
///
/// A transport that enforces the timeout header itself may end the call at that instant
/// first, with its own error. A tonic channel does: its calls then fail with `CANCELLED`
/// ("Timeout expired"), as with tonic's own `Request::set_timeout`. A server under a
/// [`ServerLayer`] answers `DEADLINE_EXCEEDED` either way, since it replaces an answer given
/// after its deadline.
///
/// [`current_effective_deadline`]: crate::current_effective_deadline
/// [`ServerLayer`]: super::ServerLayer
#[derive(Clone, Debug)]
pub struct ClientLayer {
    /// The header that carries the timeout on requests that are not gRPC.
    http_header: HeaderName,
}

impl ClientLayer {
    /// Creates a layer that uses `grpc-timeout` for every request.
    ///
    /// # Examples
    ///
    /// ```
    /// let layer = quattro::tower::ClientLayer::new();
    /// ```
    #[must_use]
    pub fn new() -> ClientLayer {
        ClientLayer {
            http_header: GRPC_TIMEOUT,
        }
    }

    /// Sets the header that carries the timeout on requests that are not gRPC.
    ///
    /// The value has the `grpc-timeout` format. gRPC requests keep using `grpc-timeout`.
    /// Pair it with the same setting on the server's [`ServerLayer`](super::ServerLayer).
    ///
    /// # Examples
    ///
    /// ```
    /// use http::HeaderName;
    ///
    /// let layer = quattro::tower::ClientLayer::new()
    ///     .http_header(HeaderName::from_static("x-request-timeout"));
    /// ```
    #[must_use]
    pub fn http_header(mut self, name: HeaderName) -> ClientLayer {
        self.http_header = name;
        self
    }
}

impl Default for ClientLayer {
    fn default() -> ClientLayer {
        ClientLayer::new()
    }
}

impl<S> Layer<S> for ClientLayer {
    type Service = ClientDeadline<S>;

    fn layer(&self, inner: S) -> ClientDeadline<S> {
        ClientDeadline {
            inner,
            layer: self.clone(),
        }
    }
}

/// Service that sends the deadline in force with every request, and enforces it.
///
/// Made by [`ClientLayer`], which describes what it does.
///
/// # Examples
///
/// ```
/// use http::Request;
/// use quattro::tower::{ClientDeadline, ClientLayer};
/// use tower::{Layer, service_fn};
///
/// let client: ClientDeadline<_> = ClientLayer::new().layer(service_fn(|_: Request<()>| async {
///     Ok::<_, std::io::Error>(http::Response::new(()))
/// }));
/// let transport = client.get_ref(); // the service_fn
/// ```
#[derive(Clone, Debug)]
pub struct ClientDeadline<S> {
    inner: S,
    layer: ClientLayer,
}

impl<S> ClientDeadline<S> {
    /// Returns a reference to the inner service.
    ///
    /// # Examples
    ///
    /// See [`ClientDeadline`].
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
    /// let mut client = quattro::tower::ClientLayer::new().layer(service_fn(|()| async {
    ///     Ok::<_, std::io::Error>(())
    /// }));
    /// let transport = client.get_mut();
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Returns the inner service.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower::{Layer, service_fn};
    ///
    /// let client = quattro::tower::ClientLayer::new().layer(service_fn(|()| async {
    ///     Ok::<_, std::io::Error>(())
    /// }));
    /// let transport = client.into_inner();
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for ClientDeadline<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ClientFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let Some(deadline) = current_effective_deadline() else {
            return ClientFuture {
                state: State::Unbounded {
                    inner: self.inner.call(request),
                },
            };
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return ClientFuture {
                state: State::Expired,
            };
        }
        let name = if is_grpc(request.headers()) {
            &GRPC_TIMEOUT
        } else {
            &self.layer.http_header
        };
        stamp(request.headers_mut(), name, left);
        ClientFuture {
            state: State::Bounded {
                inner: fail_at(deadline, self.inner.call(request)),
            },
        }
    }
}

/// Puts `left` in the header `name`, unless a valid timeout there is no longer.
fn stamp(headers: &mut HeaderMap, name: &HeaderName, left: Duration) {
    let set = headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<GrpcTimeout>().ok());
    if set.is_some_and(|set| set.to_duration() <= left) {
        return;
    }
    // The wire form is digits and a unit letter, always a valid header value.
    if let Ok(value) = HeaderValue::try_from(encode_timeout(left).to_string()) {
        headers.insert(name.clone(), value);
    }
}

/// Future returned by [`ClientDeadline`].
///
/// It returns the inner service's response, or fails with [`DeadlineExceeded`] if the
/// deadline passes first.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// use http::Request;
/// use quattro::tower::{ClientLayer, DeadlineExceeded};
/// use tower::{Layer, Service, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let mut client = ClientLayer::new().layer(service_fn(|_: Request<()>| async {
///     tokio::time::sleep(Duration::from_secs(60)).await; // a server that does not answer
///     Ok::<_, std::io::Error>(())
/// }));
/// // The call is made inside a scope, and its future awaited outside.
/// let future = quattro::move_on_after(Duration::from_secs(1), async {
///     client.call(Request::new(()))
/// })
/// .await
/// .unwrap();
/// println!("{future:?}");
/// let err = future.await.unwrap_err();
/// assert!(err.downcast_ref::<DeadlineExceeded>().unwrap().is_in_flight());
/// # }
/// ```
///
/// # Errors
///
/// Returns the inner service's error, boxed, or a [`DeadlineExceeded`].
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
pub struct ClientFuture<F: Future> {
    #[pin]
    state: State<F>,
}

#[pin_project(project = StateProj)]
enum State<F: Future> {
    /// No deadline in force at the call.
    Unbounded {
        #[pin]
        inner: F,
    },
    /// The inner future, under the deadline in force at the call.
    Bounded {
        #[pin]
        inner: Fail<F>,
    },
    /// The deadline had passed at the call; the inner service was not called.
    Expired,
}

impl<F, T, E> Future for ClientFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(match self.project().state.project() {
            StateProj::Unbounded { inner } => ready!(inner.poll(cx)).map_err(Into::into),
            StateProj::Bounded { inner } => match ready!(inner.poll(cx)) {
                Ok(output) => output.map_err(Into::into),
                Err(_) => Err(DeadlineExceeded { sent: true }.into()),
            },
            StateProj::Expired => Err(DeadlineExceeded { sent: false }.into()),
        })
    }
}

impl<F: Future> fmt::Debug for ClientFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("ClientFuture");
        match &self.state {
            State::Unbounded { .. } => debug.field("deadline", &None::<()>),
            State::Bounded { inner } => debug.field("scope", inner),
            State::Expired => debug.field("expired", &true),
        };
        debug.finish()
    }
}

/// Error returned by a [`ClientDeadline`] call when the deadline passes before the response.
///
/// It comes boxed, as the service's error, so find it with `downcast_ref`. It converts into
/// an [`std::io::Error`] of kind `TimedOut`.
///
/// # Examples
///
/// ```
/// use http::Request;
/// use quattro::CancelScope;
/// use quattro::tower::{ClientLayer, DeadlineExceeded};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let client = ClientLayer::new().layer(service_fn(|_: Request<()>| async {
///     Ok::<_, std::io::Error>(())
/// }));
/// let scope = CancelScope::new();
/// let sent = scope
///     .move_on(async {
///         scope.cancel(); // counts as a deadline that has passed
///         client.oneshot(Request::new(())).await
///     })
///     .await
///     .unwrap();
/// let err = sent.unwrap_err();
/// let err = err.downcast_ref::<DeadlineExceeded>().unwrap();
/// assert!(err.is_unsent());
/// assert_eq!(err.to_string(), "deadline exceeded before the request was sent");
/// # }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct DeadlineExceeded {
    /// Whether the inner service was called.
    sent: bool,
}

impl DeadlineExceeded {
    /// Returns `true` if the deadline had passed when the call was made.
    ///
    /// The request was then not sent.
    ///
    /// # Examples
    ///
    /// See [`DeadlineExceeded`].
    #[must_use]
    pub fn is_unsent(&self) -> bool {
        !self.sent
    }

    /// Returns `true` if the deadline passed while the response was awaited.
    ///
    /// The request was then sent, and the server may have acted on it.
    ///
    /// # Examples
    ///
    /// See [`ClientFuture`].
    #[must_use]
    pub fn is_in_flight(&self) -> bool {
        self.sent
    }
}

impl fmt::Debug for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadlineExceeded")
            .field("sent", &self.sent)
            .finish()
    }
}

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.sent {
            "deadline exceeded while awaiting the response"
        } else {
            "deadline exceeded before the request was sent"
        })
    }
}

impl std::error::Error for DeadlineExceeded {}

impl From<DeadlineExceeded> for std::io::Error {
    fn from(err: DeadlineExceeded) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::TimedOut, err)
    }
}
