//! The HTTP API: routing, input validation and the mapping of gate outcomes to answers.
//!
//! Every request is validated completely before the gate is called, so bad input never
//! reaches Redis and changes no state. A Redis that is unavailable or did not answer in time
//! gets 503; 500 is kept for faults (an unexpected reply, a refused script), logged with their
//! cause.
//!
//! | outcome | `status` | HTTP |
//! |---|---|---|
//! | admitted | `success` | 200 |
//! | already admitted | `duplicate` | 409 |
//! | no coupon left | `sold_out` | 410 |
//! | window not open yet | `not_open` | 425 |
//! | window closed | `closed` | 403 |
//! | no such campaign | `unknown_campaign` | 404 |
//! | bad input, or no verified user | `error` | 400, 401, 403, 404, 405, 413, 415 |
//! | over the user's or the address's limit | `rate_limited` | 429 (with `Retry-After`) |
//! | Redis unavailable | `unavailable` | 503 (with `Retry-After`) |
//! | a fault of the server | `error` | 500 |
//!
//! `GET /metrics` is the Prometheus text exposition (see `telemetry`), when metrics are on and
//! served on this listener.

mod admin;
mod apply;
mod caller;
mod input;
mod lifecycle;
mod lookup;
mod operational;

use std::convert::Infallible;

use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, HOST};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode, Version};
use serde_json::json;

use crate::response::{Body, Rejection, json};
use crate::state::{ConnectionScope, DEFAULT_CAMPAIGN};

/// Every route, recognised from the path alone so that a known path with the wrong method
/// answers 405 rather than 404.
#[derive(Debug)]
enum Route<'a> {
    Health,
    Ready,
    Metrics,
    ApplyDefault,
    Apply(&'a str),
    Campaign(&'a str),
    Me(&'a str),
    UserAdmission(&'a str, &'a str),
    Campaigns,
    Close(&'a str),
    Archive(&'a str),
}

impl<'a> Route<'a> {
    fn recognise(path: &'a str) -> Option<Self> {
        // No route has more than five segments; a longer path is no route.
        let mut segments = [""; 5];
        let mut count = 0;
        for segment in path.strip_prefix('/')?.split('/') {
            *segments.get_mut(count)? = segment;
            count += 1;
        }
        Some(match &segments[..count] {
            ["health"] => Self::Health,
            ["ready"] => Self::Ready,
            ["metrics"] => Self::Metrics,
            ["api", "coupons", "apply"] => Self::ApplyDefault,
            ["api", "campaigns"] => Self::Campaigns,
            ["api", "campaigns", id] => Self::Campaign(id),
            ["api", "campaigns", id, "apply"] => Self::Apply(id),
            ["api", "campaigns", id, "me"] => Self::Me(id),
            ["api", "campaigns", id, "close"] => Self::Close(id),
            ["api", "campaigns", id, "archive"] => Self::Archive(id),
            ["api", "campaigns", id, "users", user] => Self::UserAdmission(id, user),
            _ => return None,
        })
    }

    /// The methods the route answers, as `Allow` lists them. Reads answer `HEAD` too (hyper
    /// sends the head of the `GET` answer).
    fn allow(&self) -> &'static str {
        match self {
            Self::Health | Self::Ready | Self::Metrics | Self::Campaign(_) | Self::Me(_) => {
                "GET, HEAD"
            }
            Self::UserAdmission(..) => "GET, HEAD, DELETE",
            Self::Campaigns => "GET, HEAD, POST",
            Self::ApplyDefault | Self::Apply(_) | Self::Close(_) | Self::Archive(_) => "POST",
        }
    }

    fn allows(&self, method: &Method) -> bool {
        self.allow()
            .split(", ")
            .any(|allowed| allowed == method.as_str())
    }
}

/// Answers one request of a connection. Never fails: every problem is an answer.
pub(crate) async fn handle(
    scope: &ConnectionScope,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let state = &*scope.state;
    // Split so that the route can borrow the path while the body is read.
    let (head, body) = req.into_parts();
    if let Err(rejection) = unambiguous(&head) {
        return Ok(rejection.into_response());
    }
    let path = head.uri.path();
    let Some(route) = Route::recognise(path) else {
        return Ok(
            Rejection::new(StatusCode::NOT_FOUND, format!("no endpoint at {path}")).into_response(),
        );
    };
    if !route.allows(&head.method) {
        let allow = route.allow();
        let message = format!("{} is not allowed on {path}; use {allow}", head.method);
        let rejection =
            Rejection::new(StatusCode::METHOD_NOT_ALLOWED, message).with_header("allow", allow);
        return Ok(rejection.into_response());
    }
    let answer = match route {
        Route::Health => Ok(json(StatusCode::OK, &json!({ "status": "ok" }))),
        Route::Ready => Ok(operational::ready(state).await),
        Route::Metrics => operational::exposition(state),
        Route::ApplyDefault => Ok(apply::apply(scope, DEFAULT_CAMPAIGN, &head, body).await),
        Route::Apply(id) => Ok(apply::apply(scope, id, &head, body).await),
        Route::Campaign(id) => lookup::campaign_status(state, id).await,
        Route::Me(id) => lookup::me(scope, id, &head).await,
        Route::UserAdmission(id, user) if head.method == Method::DELETE => {
            lifecycle::release(state, id, user, &head).await
        }
        Route::UserAdmission(id, user) => lookup::user_admission(state, id, user, &head).await,
        Route::Campaigns if head.method == Method::POST => {
            admin::create_campaign(state, &head, body).await
        }
        Route::Campaigns => lifecycle::list_campaigns(state, &head).await,
        Route::Close(id) => lifecycle::close(state, id, &head).await,
        Route::Archive(id) => lifecycle::archive(&scope.state, id, &head).await,
    };
    Ok(answer.unwrap_or_else(Rejection::into_response))
}

/// Refuses a head that readers along the way could take in two ways: an HTTP/1.1 request
/// without exactly one `Host` (RFC 9112 §3.2), and one with several `Authorization` headers,
/// where a proxy that reads the last and this server, reading the first, would disagree on who
/// is asking.
fn unambiguous(head: &Parts) -> Result<(), Rejection> {
    let hosts = head.headers.get_all(HOST).iter().count();
    if hosts > 1 || (hosts == 0 && head.version == Version::HTTP_11) {
        return Err(Rejection::bad_request(
            "an HTTP/1.1 request needs exactly one Host header",
        ));
    }
    if head.headers.get_all(AUTHORIZATION).iter().nth(1).is_some() {
        return Err(Rejection::bad_request(
            "send one Authorization header, not several",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_recognised_from_the_path() {
        assert!(matches!(
            Route::recognise("/api/coupons/apply"),
            Some(Route::ApplyDefault)
        ));
        assert!(matches!(
            Route::recognise("/api/campaigns/x/apply"),
            Some(Route::Apply("x"))
        ));
        assert!(matches!(
            Route::recognise("/api/campaigns/x/users/7"),
            Some(Route::UserAdmission("x", "7"))
        ));
        assert!(matches!(
            Route::recognise("/api/campaigns/x/close"),
            Some(Route::Close("x"))
        ));
        for unknown in [
            "",
            "/",
            "/api",
            "/api/coupons",
            "/api/coupons/apply/",
            "/health/x",
            "api/campaigns",
        ] {
            assert!(Route::recognise(unknown).is_none(), "{unknown:?}");
        }
    }
}
