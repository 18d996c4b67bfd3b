//! The layers around in-process services, under a paused clock: exact budgets, no sockets.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use quattro::propagate;
use quattro::tower::{ClientLayer, DeadlineExceeded, ServerLayer};
use tokio::time::{Instant, sleep};
use tower::{Layer, Service, ServiceExt, service_fn};

/// A handler that reports the time it has left, after sleeping `work` (from the path).
async fn report(request: Request<String>) -> Result<Response<String>, Infallible> {
    let left = propagate::remaining();
    let work: u64 = request
        .uri()
        .path()
        .trim_start_matches('/')
        .parse()
        .unwrap_or(0);
    sleep(Duration::from_millis(work)).await;
    Ok(Response::new(format!("{left:?}")))
}

fn request(timeout: Option<&str>) -> Request<String> {
    let mut builder = Request::builder().uri("/0");
    if let Some(timeout) = timeout {
        builder = builder.header("grpc-timeout", timeout);
    }
    builder.body(String::new()).unwrap()
}

fn grpc_request(timeout: &str) -> Request<String> {
    Request::builder()
        .uri("/0")
        .header("content-type", "application/grpc+proto")
        .header("grpc-timeout", timeout)
        .body(String::new())
        .unwrap()
}

/// A handler that counts its calls, for the answers given without it.
fn counted() -> (
    Arc<AtomicUsize>,
    impl Service<Request<String>, Response = Response<String>, Error = Infallible> + Clone,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let service = service_fn(move |request| {
        counter.fetch_add(1, Ordering::SeqCst);
        report(request)
    });
    (calls, service)
}

#[tokio::test(start_paused = true)]
async fn server_runs_the_handler_under_the_header_deadline() {
    let service = ServerLayer::new().layer(service_fn(report));
    let response = service.oneshot(request(Some("250m"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.into_body(), "Some(250ms)");
}

#[tokio::test(start_paused = true)]
async fn server_without_header_or_default_sets_no_deadline() {
    let service = ServerLayer::new().layer(service_fn(report));
    let response = service.oneshot(request(None)).await.unwrap();
    assert_eq!(response.into_body(), "None");
}

#[tokio::test(start_paused = true)]
async fn server_default_and_maximum_budgets() {
    let layer = ServerLayer::new().default_timeout(Duration::from_secs(2));
    let response = layer
        .layer(service_fn(report))
        .oneshot(request(None))
        .await
        .unwrap();
    assert_eq!(response.into_body(), "Some(2s)");

    // The maximum caps a longer header, leaves a shorter one, and caps the default too.
    let capped = layer.clone().max_timeout(Duration::from_secs(1));
    let response = capped
        .layer(service_fn(report))
        .oneshot(request(Some("5S")))
        .await;
    assert_eq!(response.unwrap().into_body(), "Some(1s)");
    let response = capped
        .layer(service_fn(report))
        .oneshot(request(Some("10m")))
        .await;
    assert_eq!(response.unwrap().into_body(), "Some(10ms)");
    let response = capped
        .layer(service_fn(report))
        .oneshot(request(None))
        .await;
    assert_eq!(response.unwrap().into_body(), "Some(1s)");

    // A maximum without a default is the budget of a request without a header.
    let max_only = ServerLayer::new().max_timeout(Duration::from_secs(3));
    let response = max_only
        .layer(service_fn(report))
        .oneshot(request(None))
        .await;
    assert_eq!(response.unwrap().into_body(), "Some(3s)");
}

#[tokio::test(start_paused = true)]
async fn server_rejects_a_malformed_header_without_calling_the_handler() {
    let (calls, handler) = counted();
    let service = ServerLayer::new()
        .default_timeout(Duration::from_secs(1))
        .layer(handler);
    for bad in ["", "10", "1.5S", "+5S", "123456789m", "5s", "soon"] {
        let response = service.clone().oneshot(request(Some(bad))).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad:?}");
        assert!(response.into_body().is_empty());
    }
    let mut non_ascii = request(None);
    non_ascii
        .headers_mut()
        .insert("grpc-timeout", HeaderValue::from_bytes(b"5\xffS").unwrap());
    let response = service.clone().oneshot(non_ascii).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // gRPC: a trailers-only INVALID_ARGUMENT with the reason.
    let response = service.oneshot(grpc_request("10")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["grpc-status"], "3");
    assert_eq!(response.headers()["content-type"], "application/grpc");
    assert_eq!(
        response.headers()["grpc-message"],
        "invalid grpc-timeout header: grpc-timeout value has no unit"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn server_answers_an_expired_deadline_without_calling_the_handler() {
    let (calls, handler) = counted();
    let service = ServerLayer::new().layer(handler);
    let response = service.clone().oneshot(request(Some("0n"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    let response = service.oneshot(grpc_request("0S")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["grpc-status"], "4");
    assert_eq!(response.headers()["grpc-message"], "deadline exceeded");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn server_cuts_the_handler_at_the_deadline() {
    struct Guard(Arc<AtomicUsize>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicUsize::new(0));
    let seen = dropped.clone();
    let service = ServerLayer::new().layer(service_fn(move |_: Request<String>| {
        let guard = Guard(seen.clone());
        async move {
            let _guard = guard;
            sleep(Duration::from_secs(60)).await;
            Ok::<_, Infallible>(Response::new("finished".to_owned()))
        }
    }));

    let start = Instant::now();
    let response = service
        .clone()
        .oneshot(request(Some("100m")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(dropped.load(Ordering::SeqCst), 1);

    let response = service.oneshot(grpc_request("100m")).await.unwrap();
    assert_eq!(response.headers()["grpc-status"], "4");
    assert_eq!(dropped.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn server_reads_a_custom_header_for_plain_http_only() {
    let layer = ServerLayer::new().http_header(HeaderName::from_static("x-timeout"));
    let custom = Request::builder()
        .uri("/0")
        .header("x-timeout", "3S")
        .header("grpc-timeout", "1S")
        .body(String::new())
        .unwrap();
    let response = layer
        .layer(service_fn(report))
        .oneshot(custom)
        .await
        .unwrap();
    assert_eq!(response.into_body(), "Some(3s)");
    // gRPC requests keep grpc-timeout.
    let response = layer
        .layer(service_fn(report))
        .oneshot(grpc_request("1S"))
        .await;
    assert_eq!(response.unwrap().into_body(), "Some(1s)");
}

/// A transport stand-in that answers with the timeout header it was sent.
fn echo_header(
    name: &'static str,
) -> impl Service<Request<()>, Response = Response<Option<String>>, Error = Infallible> + Clone {
    service_fn(move |request: Request<()>| async move {
        let value = request
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned());
        Ok::<_, Infallible>(Response::new(value))
    })
}

fn with_header(name: &str, value: &str) -> Request<()> {
    Request::builder().header(name, value).body(()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn client_stamps_the_time_left() {
    let client = ClientLayer::new().layer(echo_header("grpc-timeout"));
    let sent = quattro::fail_after(Duration::from_millis(1500), async {
        sleep(Duration::from_millis(500)).await;
        client.clone().oneshot(Request::new(())).await
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(sent.into_body().as_deref(), Some("1000000u"));

    // Outside any deadline the request goes untouched.
    let sent = client.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(sent.into_body(), None);
    let sent = client
        .oneshot(with_header("grpc-timeout", "7S"))
        .await
        .unwrap();
    assert_eq!(sent.into_body().as_deref(), Some("7S"));
}

#[tokio::test(start_paused = true)]
async fn client_keeps_a_shorter_header_and_replaces_a_longer_or_malformed_one() {
    let client = ClientLayer::new().layer(echo_header("grpc-timeout"));
    let sent = |value: &'static str| {
        let client = client.clone();
        quattro::fail_after(Duration::from_secs(2), async move {
            client
                .oneshot(with_header("grpc-timeout", value))
                .await
                .unwrap()
                .into_body()
        })
    };
    assert_eq!(sent("300m").await.unwrap().as_deref(), Some("300m"));
    assert_eq!(sent("2S").await.unwrap().as_deref(), Some("2S"));
    assert_eq!(sent("1M").await.unwrap().as_deref(), Some("2000000u"));
    assert_eq!(sent("banana").await.unwrap().as_deref(), Some("2000000u"));
}

#[tokio::test(start_paused = true)]
async fn client_uses_the_custom_header_for_plain_http_only() {
    let layer = ClientLayer::new().http_header(HeaderName::from_static("x-timeout"));
    let plain = layer.layer(echo_header("x-timeout"));
    let grpc = layer.layer(echo_header("grpc-timeout"));
    let (plain, grpc) = quattro::fail_after(Duration::from_secs(1), async {
        let grpc_request = Request::builder()
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        (
            plain.oneshot(Request::new(())).await.unwrap().into_body(),
            grpc.oneshot(grpc_request).await.unwrap().into_body(),
        )
    })
    .await
    .unwrap();
    assert_eq!(plain.as_deref(), Some("1000000u"));
    assert_eq!(grpc.as_deref(), Some("1000000u"));
}

#[tokio::test(start_paused = true)]
async fn client_fails_at_once_when_the_deadline_has_passed() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let client = ClientLayer::new().layer(service_fn(move |_: Request<()>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(()) }
    }));
    let scope = quattro::CancelScope::new();
    let err = scope
        .move_on(async {
            scope.cancel();
            client.oneshot(Request::new(())).await.unwrap_err()
        })
        .await
        .unwrap();
    let err = err.downcast_ref::<DeadlineExceeded>().unwrap();
    assert!(err.is_unsent() && !err.is_in_flight());
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
#[allow(clippy::async_yields_async)] // on purpose: called in the scope, awaited outside it
async fn client_enforces_the_deadline_read_at_call_time() {
    let mut client = ClientLayer::new().layer(service_fn(|_: Request<()>| async {
        sleep(Duration::from_secs(60)).await;
        Ok::<_, std::io::Error>(())
    }));
    let start = Instant::now();
    // Called inside the scope, awaited in another task outside any scope.
    let future = quattro::move_on_after(Duration::from_millis(300), async {
        client.ready().await.unwrap().call(Request::new(()))
    })
    .await
    .unwrap();
    let err = tokio::spawn(future).await.unwrap().unwrap_err();
    assert!(
        err.downcast_ref::<DeadlineExceeded>()
            .unwrap()
            .is_in_flight()
    );
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    let io: std::io::Error = DeadlineExceeded::clone(err.downcast_ref().unwrap()).into();
    assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
}

#[tokio::test(start_paused = true)]
async fn client_passes_inner_errors_through() {
    let client = ClientLayer::new().layer(service_fn(|_: Request<()>| async {
        Err::<(), _>(std::io::Error::other("connection refused"))
    }));
    let err = quattro::fail_after(Duration::from_secs(1), client.oneshot(Request::new(())))
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.downcast_ref::<DeadlineExceeded>().is_none());
    assert_eq!(err.to_string(), "connection refused");
}

/// A → B → C in process: B's handler calls C through a client layer with no deadline in
/// sight, C sees A's budget minus the time B spent, and C's slow work is cut.
#[tokio::test(start_paused = true)]
async fn in_process_chain_hands_on_the_remaining_budget() {
    let c = ServerLayer::new().layer(service_fn(report));
    let b = ServerLayer::new().layer(service_fn(move |request: Request<String>| {
        let downstream = ClientLayer::new().layer(c.clone());
        async move {
            sleep(Duration::from_millis(100)).await; // B's own work first
            let forwarded = Request::builder()
                .uri(request.uri().clone())
                .body(String::new())
                .unwrap();
            let response = downstream.oneshot(forwarded).await.unwrap();
            Ok::<_, Infallible>(response)
        }
    }));

    let start = Instant::now();
    let quick = b.clone().oneshot(request(Some("400m"))).await.unwrap();
    assert_eq!(quick.into_body(), "Some(300ms)");

    let mut slow = request(Some("400m"));
    *slow.uri_mut() = "/5000".parse().unwrap(); // C works for 5 s
    let start_slow = Instant::now();
    let response = b.oneshot(slow).await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(start_slow.elapsed(), Duration::from_millis(400));
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn server_replaces_an_answer_given_at_the_deadline() {
    // The handler's own timer for the same deadline fires at the same tick, and the handler
    // answers with what it made of that: the caller gets the deadline answer instead.
    let service = ServerLayer::new().layer(service_fn(|_: Request<String>| async {
        let left = propagate::remaining().unwrap();
        let cut = tokio::time::timeout(left, sleep(Duration::from_secs(60))).await;
        assert!(cut.is_err());
        Ok::<_, Infallible>(Response::new("downstream timed out".to_owned()))
    }));
    let response = service
        .clone()
        .oneshot(request(Some("100m")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(response.into_body().is_empty());
    let response = service.oneshot(grpc_request("100m")).await.unwrap();
    assert_eq!(response.headers()["grpc-status"], "4");
}
