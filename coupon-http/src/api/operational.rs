//! The endpoints operators and orchestrators call: `/ready` and `/metrics` (`/health` is
//! answered by the router itself).

use hyper::{Response, StatusCode};
use serde_json::json;

use crate::response::{Body, Rejection, json};
use crate::state::AppState;

/// `GET /ready`: 200 while Redis answers, since admissions need Redis and nothing else (they
/// wait in the outbox while the broker is away); 503 otherwise, and while a misconfiguration
/// keeps the relay from ever delivering (`refused`: `broker` when the brokers refuse its
/// credentials or TLS, `destination` when the key prefix is bound to another topic). `relay`
/// says whether the relay delivers: false while it waits for Redis or the broker at start.
pub(super) async fn ready(state: &AppState) -> Response<Body> {
    let redis = state.ping_redis().await;
    let relay = state.relay_running();
    let refused = state.relay_refused();
    let (status, word) = if redis && refused.is_none() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    };
    let mut body = json!({ "status": word, "redis": redis, "relay": relay });
    if let Some(refused) = refused {
        body["refused"] = json!(refused);
    }
    json(status, &body)
}

/// `GET /metrics`: the Prometheus text format, unless metrics are off or served elsewhere.
pub(super) fn exposition(state: &AppState) -> Result<Response<Body>, Rejection> {
    let text = state.telemetry().exposition().ok_or_else(|| {
        Rejection::new(
            StatusCode::NOT_FOUND,
            "no metrics on this listener: they are off (COUPON_METRICS=off), served on COUPON_METRICS_ADDR, or recorded by the embedding process's own recorder",
        )
    })?;
    let mut response = Response::new(Body::from(text));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}
