//! JSON answers. Every answer has a `status` field; errors carry a `message` naming the problem.

use std::time::SystemTime;

use bytes::Bytes;
use coupon_gate::UserId;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::failure::Failure;

/// The body type of every answer.
pub(crate) type Body = Full<Bytes>;

/// `value` as a JSON answer with `status`.
pub(crate) fn json(status: StatusCode, value: &Value) -> Response<Body> {
    json_bytes(status, value.to_string().into_bytes())
}

/// A JSON answer already serialized.
pub(crate) fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A request refused before it reached Redis: `{"status":"error","message":...}`, or
/// `rate_limited` for a request over a limit.
#[derive(Debug)]
pub(crate) struct Rejection {
    status: StatusCode,
    /// The `status` word of the answer.
    word: &'static str,
    message: String,
    /// Extra headers the status calls for (`Allow` on 405, `WWW-Authenticate` on 401,
    /// `Retry-After` on 429).
    headers: Vec<(&'static str, HeaderValue)>,
}

impl Rejection {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            word: "error",
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// 429 `rate_limited`, to come back after `retry_after` (whole seconds, at least one).
    pub(crate) fn rate_limited(
        message: impl Into<String>,
        retry_after: std::time::Duration,
    ) -> Self {
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        let mut rejection = Self::new(StatusCode::TOO_MANY_REQUESTS, message);
        rejection.word = "rate_limited";
        rejection
            .headers
            .push(("retry-after", HeaderValue::from(seconds.max(1))));
        rejection
    }

    /// 401 with the reason a bearer token is missing or refused (RFC 6750).
    pub(crate) fn unauthorized(message: impl Into<String>, token_given: bool) -> Self {
        let challenge = if token_given {
            HeaderValue::from_static(r#"Bearer error="invalid_token""#)
        } else {
            HeaderValue::from_static("Bearer")
        };
        let mut rejection = Self::new(StatusCode::UNAUTHORIZED, message);
        rejection.headers.push(("www-authenticate", challenge));
        rejection
    }

    /// The HTTP status of the answer.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn with_header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }

    pub(crate) fn into_response(self) -> Response<Body> {
        let mut response = json(
            self.status,
            &json!({ "status": self.word, "message": self.message }),
        );
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// A user id in an answer: a number for a numeric id (as such ids were always answered), else
/// a string.
#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum UserJson<'a> {
    Number(u64),
    Text(&'a str),
}

impl<'a> UserJson<'a> {
    pub(crate) fn of(user: &'a UserId) -> Self {
        user.as_number()
            .map_or(Self::Text(user.as_str()), Self::Number)
    }
}

/// A time in an answer: RFC 3339, or `null` for none.
pub(crate) fn time_json(t: Option<SystemTime>) -> Value {
    t.and_then(|t| OffsetDateTime::from(t).format(&Rfc3339).ok())
        .map_or(Value::Null, Value::String)
}

/// The answer to a backend call that failed. Redis unavailable or too slow: 503 with a retry
/// hint; the request may or may not have taken effect, so the client is told to retry, which is
/// safe (a retry of an admission that did happen answers `duplicate`). Anything else is a fault
/// of the server or its deployment, which a retry meets again: 500, logged at error level with
/// its cause.
pub(crate) fn failure(failure: &Failure) -> Response<Body> {
    if !failure.is_unavailable() {
        tracing::error!(cause = %failure, "internal error");
        return json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({
                "status": "error",
                "message": "internal error; it is logged for the operators",
            }),
        );
    }
    tracing::warn!(cause = %failure, "backend unavailable");
    unavailable(
        "the coupon store is unavailable; retry in a moment (a retry never issues a second coupon)",
        "1",
    )
}

/// 503 `unavailable` with `message`, and `Retry-After` of `seconds`.
pub(crate) fn unavailable(message: &str, seconds: &'static str) -> Response<Body> {
    let mut response = json(
        StatusCode::SERVICE_UNAVAILABLE,
        &json!({ "status": "unavailable", "message": message }),
    );
    response
        .headers_mut()
        .insert("retry-after", HeaderValue::from_static(seconds));
    response
}
