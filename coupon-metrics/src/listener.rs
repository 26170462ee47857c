//! The metrics listener: `GET /metrics` (and `HEAD`) answered with the exposition, and nothing
//! else. A scraper that mistypes the path is told so (404), and a request that is not a read is
//! refused (405), rather than every path and method getting the metrics.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

/// The path the exposition is served at.
const PATH: &str = "/metrics";

/// A listener on `addr`, bound now so that a taken address fails the start.
///
/// # Errors
///
/// The address cannot be bound.
pub(crate) fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    std::net::TcpListener::bind(addr)
        .and_then(|listener| {
            listener.set_nonblocking(true)?;
            TcpListener::from_std(listener)
        })
        .with_context(|| format!("cannot serve metrics on {addr}"))
}

/// Serves `handle`'s exposition on `listener` for as long as the process runs.
pub(crate) async fn serve(listener: TcpListener, handle: PrometheusHandle) {
    let mut http = http1::Builder::new();
    // With a timer, hyper closes a connection whose request head is not complete within its
    // default 30 s: a silent client does not hold a connection for ever.
    http.timer(TokioTimer::new());
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(cause = %err, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let handle = handle.clone();
        let service = service_fn(move |req| {
            let answer = answer(&req, &handle);
            async move { Ok::<_, Infallible>(answer) }
        });
        let conn = http.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(cause = %err, "metrics connection ended with an error");
            }
        });
    }
}

/// The answer to one request: the exposition, or why not.
fn answer(req: &Request<Incoming>, handle: &PrometheusHandle) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path != PATH {
        return refusal(
            StatusCode::NOT_FOUND,
            &format!("no endpoint at {path}: the metrics are at {PATH}"),
        );
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut refusal = refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{} is not allowed on {PATH}; use GET, HEAD", req.method()),
        );
        refusal
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return refusal;
    }
    let mut response = Response::new(Full::new(Bytes::from(handle.render())));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// A JSON error answer, as the API's.
fn refusal(code: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "status": "error", "message": message }).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
