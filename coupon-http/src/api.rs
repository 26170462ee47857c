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

use std::convert::Infallible;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Instant, SystemTime};

use coupon_gate::{Campaign, CampaignId, CampaignStatus, Create, Outcome, UserId};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, HOST};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode, Version};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::body::{read_json, read_optional_json};
use crate::identity::{Unauthenticated, Verifier};
use crate::limits::{Limit, Limited};
use crate::response::{self, Body, Rejection, json, json_bytes};
use crate::server::ConnectionScope;
use crate::sold_out::Memory;
use crate::state::{AppState, DEFAULT_CAMPAIGN, Failure};
use crate::telemetry::Verification;

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
            ["api", "campaigns", id, "users", user] => Self::UserAdmission(id, user),
            _ => return None,
        })
    }

    /// The methods the route answers, as `Allow` lists them. Reads answer `HEAD` too (hyper
    /// sends the head of the `GET` answer).
    fn allow(&self) -> &'static str {
        match self {
            Self::Health
            | Self::Ready
            | Self::Metrics
            | Self::Campaign(_)
            | Self::Me(_)
            | Self::UserAdmission(..) => "GET, HEAD",
            Self::ApplyDefault | Self::Apply(_) | Self::Campaigns => "POST",
        }
    }

    fn allows(&self, method: &Method) -> bool {
        match self.allow() {
            "POST" => method == Method::POST,
            _ => method == Method::GET || method == Method::HEAD,
        }
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
        Route::Ready => Ok(ready(state).await),
        Route::Metrics => exposition(state),
        Route::ApplyDefault => Ok(apply(scope, DEFAULT_CAMPAIGN, &head, body).await),
        Route::Apply(id) => Ok(apply(scope, id, &head, body).await),
        Route::Campaign(id) => campaign_status(state, id).await,
        Route::Me(id) => me(scope, id, &head).await,
        Route::UserAdmission(id, user) => user_admission(state, id, user, &head).await,
        Route::Campaigns => create_campaign(state, &head, body).await,
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

/// `GET /ready`: 200 while Redis answers, since admissions need Redis and nothing else (they
/// wait in the outbox while the broker is away); 503 otherwise. `relay` says whether the relay
/// delivers: false while it waits for Redis or the broker at start.
async fn ready(state: &AppState) -> Response<Body> {
    let redis = state.ping_redis().await;
    let relay = state.relay_running();
    let (status, word) = if redis {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    };
    json(
        status,
        &json!({ "status": word, "redis": redis, "relay": relay }),
    )
}

/// `GET /metrics`: the Prometheus text format, unless metrics are off or served elsewhere.
fn exposition(state: &AppState) -> Result<Response<Body>, Rejection> {
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

#[derive(Deserialize, Default)]
struct ApplyBody {
    /// `None` only when the field is absent: an explicit `null` is `Some(Value::Null)`, and
    /// refused as any other value that is no user id.
    #[serde(rename = "userId", default, deserialize_with = "present")]
    user_id: Option<Value>,
}

/// A field's value as given, `null` included.
fn present<'de, D: serde::Deserializer<'de>>(value: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(value).map(Some)
}

/// An application, answered and counted (see `telemetry`).
async fn apply(scope: &ConnectionScope, id: &str, head: &Parts, body: Incoming) -> Response<Body> {
    let started = Instant::now();
    let telemetry = scope.state.telemetry();
    match decide(scope, id, head, body).await {
        Ok((campaign, user, outcome)) => {
            telemetry.decided(&campaign, &outcome, started);
            outcome_answer(&campaign, &user, outcome)
        }
        Err(Refusal::Rejected(rejection)) => {
            telemetry.refused(&rejection, started);
            rejection.into_response()
        }
        Err(Refusal::Failed(failure)) => {
            telemetry.failed(&failure, started);
            response::failure(&failure)
        }
    }
}

/// Why an application got no outcome.
enum Refusal {
    /// Refused before the gate: bad input, no verified user, over a limit.
    Rejected(Rejection),
    /// The gate could not decide.
    Failed(Failure),
}

impl From<Rejection> for Refusal {
    fn from(rejection: Rejection) -> Self {
        Self::Rejected(rejection)
    }
}

/// What an application comes to. Checked in order, each before anything costs more: the
/// campaign id, the client address's limit, who applies (the token's user, or the body's in body
/// mode), that user's limit; then the sold-out memory, then Redis.
async fn decide(
    scope: &ConnectionScope,
    id: &str,
    head: &Parts,
    body: Incoming,
) -> Result<(CampaignId, UserId, Outcome), Refusal> {
    let state = &*scope.state;
    let campaign = campaign_id(id)?;
    let client = state.limits().client(scope.peer.ip(), &head.headers);
    state.limits().check_address(client).map_err(limited)?;
    let user = match state.verifier() {
        Some(verifier) => {
            let user = token_user(state, verifier, client, head)?;
            // The body may be absent or `{}`; a userId it names must be the token's user.
            let body: ApplyBody = read_optional_json(head, body).await?;
            if body.user_id.is_some() && user_id_from_json(body.user_id)? != user {
                return Err(Rejection::new(
                    StatusCode::FORBIDDEN,
                    "the userId in the body is not the user of the token",
                )
                .into());
            }
            user
        }
        None => {
            let body: ApplyBody = read_json(head, body).await?;
            user_id_from_json(body.user_id)?
        }
    };
    state.limits().check_user(&user).map_err(limited)?;
    let outcome = match state.sold_out().check(&campaign, &user) {
        Memory::SoldOut => {
            state.telemetry().sold_out_from_memory();
            Outcome::SoldOut
        }
        Memory::MaybeHolder => {
            match state.ask(|gate| gate.admission(&campaign, &user)).await {
                Ok(Some(seq)) => Outcome::Duplicate { seq },
                // Another id with the same hash as a holder's.
                Ok(None) => Outcome::SoldOut,
                Err(failure) => return Err(Refusal::Failed(failure)),
            }
        }
        Memory::Unknown => {
            let generation = state.sold_out().generation();
            let batcher = state.batcher().map_err(Refusal::Failed)?;
            match state
                .within_timeout(batcher.apply(&campaign, user.clone()))
                .await
            {
                Ok(Outcome::SoldOut) => {
                    state
                        .sold_out()
                        .remember(&campaign, generation, batcher.gate());
                    Outcome::SoldOut
                }
                Ok(outcome) => outcome,
                Err(failure) => return Err(Refusal::Failed(failure)),
            }
        }
    };
    Ok((campaign, user, outcome))
}

/// The answer to an application the gate decided.
fn outcome_answer(campaign: &CampaignId, user: &UserId, outcome: Outcome) -> Response<Body> {
    let (code, status, message, seq) = match outcome {
        Outcome::Admitted { seq } => (StatusCode::OK, "success", "coupon issued", Some(seq)),
        Outcome::Duplicate { seq } => (
            StatusCode::CONFLICT,
            "duplicate",
            "this user already holds a coupon of this campaign",
            Some(seq),
        ),
        Outcome::SoldOut => (
            StatusCode::GONE,
            "sold_out",
            "every coupon of this campaign has been issued",
            None,
        ),
        Outcome::NotOpen => (
            StatusCode::TOO_EARLY,
            "not_open",
            "this campaign is not open yet",
            None,
        ),
        Outcome::Closed => (
            StatusCode::FORBIDDEN,
            "closed",
            "this campaign is closed",
            None,
        ),
        Outcome::UnknownCampaign => (
            StatusCode::NOT_FOUND,
            "unknown_campaign",
            "no campaign has this id",
            None,
        ),
    };
    let answer = ApplyAnswer {
        campaign_id: campaign.as_str(),
        message,
        seq,
        status,
        user_id: UserJson::of(user),
    };
    json_bytes(
        code,
        serde_json::to_vec(&answer).expect("plain fields serialize"),
    )
}

/// The answer to an application: written straight from borrowed fields, as this is the answer
/// a crowd gets thousands of times a second. Fields in alphabetical order, as every other
/// answer's.
#[derive(Serialize)]
struct ApplyAnswer<'a> {
    #[serde(rename = "campaignId")]
    campaign_id: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u32>,
    status: &'a str,
    #[serde(rename = "userId")]
    user_id: UserJson<'a>,
}

/// A user id in an answer: a number for a numeric id (as such ids were always answered), else
/// a string.
#[derive(Serialize)]
#[serde(untagged)]
enum UserJson<'a> {
    Number(u64),
    Text(&'a str),
}

impl<'a> UserJson<'a> {
    fn of(user: &'a UserId) -> Self {
        user.as_number()
            .map_or(Self::Text(user.as_str()), Self::Number)
    }
}

async fn campaign_status(state: &AppState, id: &str) -> Result<Response<Body>, Rejection> {
    let campaign = campaign_id(id)?;
    match state.ask(|gate| gate.status(&campaign)).await {
        Ok(Some(status)) => Ok(json(StatusCode::OK, &status_json(&campaign, &status))),
        Ok(None) => Ok(unknown_campaign(&campaign)),
        Err(failure) => Ok(response::failure(&failure)),
    }
}

/// `GET /api/campaigns/{id}/me`: the admission of the token's user.
async fn me(scope: &ConnectionScope, id: &str, head: &Parts) -> Result<Response<Body>, Rejection> {
    let state = &*scope.state;
    let campaign = campaign_id(id)?;
    let Some(verifier) = state.verifier() else {
        return Err(Rejection::bad_request(
            "this server takes the user from the body (COUPON_IDENTITY=body), not from a token: \
             ask /api/campaigns/{id}/users/{userId}",
        ));
    };
    let client = state.limits().client(scope.peer.ip(), &head.headers);
    let user = token_user(state, verifier, client, head)?;
    lookup(state, campaign, user).await
}

/// `GET /api/campaigns/{id}/users/{userId}`: any user's admission; in jwt mode an admin call.
async fn user_admission(
    state: &AppState,
    id: &str,
    user: &str,
    head: &Parts,
) -> Result<Response<Body>, Rejection> {
    if state.verifier().is_some() {
        authorize(state, head)?;
    }
    let campaign = campaign_id(id)?;
    let user: UserId = path_segment(user)?
        .parse()
        .map_err(|err| Rejection::bad_request(format!("{err}")))?;
    lookup(state, campaign, user).await
}

/// Whether `user` holds a coupon of `campaign`, and which.
async fn lookup(
    state: &AppState,
    campaign: CampaignId,
    user: UserId,
) -> Result<Response<Body>, Rejection> {
    let (id, who) = (&campaign, &user);
    let lookup = state.ask(|gate| async move {
        Ok((
            gate.status(id).await?.is_some(),
            gate.admission(id, who).await?,
        ))
    });
    match lookup.await {
        Ok((false, _)) => Ok(unknown_campaign(&campaign)),
        Ok((true, seq)) => Ok(json(
            StatusCode::OK,
            &json!({
                "status": "success",
                "campaignId": campaign.as_str(),
                "userId": UserJson::of(&user),
                "admitted": seq.is_some(),
                "seq": seq,
            }),
        )),
        Err(failure) => Ok(response::failure(&failure)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    id: Option<String>,
    quota: Option<Value>,
    #[serde(rename = "opensAt")]
    opens_at: Option<String>,
    #[serde(rename = "closesAt")]
    closes_at: Option<String>,
}

async fn create_campaign(
    state: &AppState,
    head: &Parts,
    body: Incoming,
) -> Result<Response<Body>, Rejection> {
    authorize(state, head)?;
    let body: CreateBody = read_json(head, body).await?;
    let id = campaign_id(
        body.id
            .as_deref()
            .ok_or_else(|| Rejection::bad_request("id is required"))?,
    )?;
    let quota = quota_from_json(body.quota)?;
    let opens = body
        .opens_at
        .as_deref()
        .map(|t| rfc3339("opensAt", t))
        .transpose()?;
    let closes = body
        .closes_at
        .as_deref()
        .map(|t| rfc3339("closesAt", t))
        .transpose()?;
    let campaign = Campaign::new(id.clone(), quota)
        .with_window(opens, closes)
        .map_err(|err| Rejection::bad_request(err.to_string()))?;

    let created = match state.ask(|gate| gate.create(&campaign)).await {
        Ok(created) => created,
        Err(failure) => return Ok(response::failure(&failure)),
    };
    let (code, status) = match created {
        Create::Created => (StatusCode::CREATED, "created"),
        Create::Unchanged => (StatusCode::OK, "unchanged"),
        Create::Updated => (StatusCode::OK, "updated"),
        Create::QuotaBelowIssued { issued } => {
            let message = format!("the quota cannot go below the {issued} coupons already issued");
            return Ok(json(
                StatusCode::CONFLICT,
                &json!({ "status": "quota_below_issued", "message": message, "issued": issued }),
            ));
        }
    };
    let mut answer = json!({ "status": status, "id": id.as_str(), "quota": quota.get() });
    answer["opensAt"] = time_json(campaign.opens_at());
    answer["closesAt"] = time_json(campaign.closes_at());
    Ok(json(code, &answer))
}

fn authorize(state: &AppState, head: &Parts) -> Result<(), Rejection> {
    let Some(expected) = state.admin_token() else {
        return Err(Rejection::new(
            StatusCode::FORBIDDEN,
            "admin endpoints are disabled: no COUPON_ADMIN_TOKEN is configured",
        ));
    };
    let given = bearer(head).map_err(|_| {
        Rejection::new(
            StatusCode::UNAUTHORIZED,
            "send the admin token as Authorization: Bearer <token>",
        )
        .with_header("www-authenticate", "Bearer")
    })?;
    if !same_secret(given.as_bytes(), expected.as_bytes()) {
        return Err(Rejection::new(
            StatusCode::FORBIDDEN,
            "the admin token is wrong",
        ));
    }
    Ok(())
}

/// The credentials of `Authorization: Bearer <credentials>`; the scheme's case does not matter
/// (RFC 7235).
fn bearer(head: &Parts) -> Result<&str, Unauthenticated> {
    let value = head
        .headers
        .get(AUTHORIZATION)
        .ok_or_else(|| Unauthenticated("send a token as Authorization: Bearer <token>".into()))?;
    let value = value
        .to_str()
        .map_err(|_| Unauthenticated("the Authorization header is not text".into()))?;
    match value.trim().split_once(' ') {
        Some((scheme, credentials))
            if scheme.eq_ignore_ascii_case("bearer") && !credentials.trim().is_empty() =>
        {
            Ok(credentials.trim())
        }
        _ => Err(Unauthenticated(
            "the Authorization header must be Bearer <token>".into(),
        )),
    }
}

/// The user of the request's bearer token, or 401 saying why there is none. A token verified
/// before passes at once; any other is verified only while `client` has not spent its budget
/// of failed verifications (429 otherwise), and spends it when refused.
fn token_user(
    state: &AppState,
    verifier: &Verifier,
    client: IpAddr,
    head: &Parts,
) -> Result<UserId, Rejection> {
    let token = bearer(head).map_err(|Unauthenticated(why)| Rejection::unauthorized(why, false))?;
    let unknown = match verifier.remembered(token) {
        Ok(user) => return Ok(user),
        Err(unknown) => unknown,
    };
    let telemetry = state.telemetry();
    if let Err(refused) = state.limits().check_bad_tokens(client) {
        telemetry.token(Verification::Skipped);
        return Err(limited(refused));
    }
    match verifier.verify(token, unknown) {
        Ok(user) => {
            telemetry.token(Verification::Valid);
            Ok(user)
        }
        Err(Unauthenticated(why)) => {
            telemetry.token(Verification::Invalid);
            state.limits().spend_bad_token(client);
            Err(Rejection::unauthorized(why, true))
        }
    }
}

/// 429 for an application over a limit.
fn limited(limited: Limited) -> Rejection {
    let what = match limited.limit {
        Limit::User => "too many applications from this user",
        Limit::Address => "too many applications from this client address",
        Limit::BadTokens => "too many invalid tokens from this client address",
    };
    Rejection::rate_limited(
        format!("{what}; retry after the time in Retry-After"),
        limited.retry_after,
    )
}

/// Compares two secrets in time that depends on neither their content nor their lengths: both
/// are hashed, and the digests compared in constant time.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

fn campaign_id(id: &str) -> Result<CampaignId, Rejection> {
    CampaignId::new(path_segment(id)?).map_err(|err| Rejection::bad_request(err.to_string()))
}

/// A path segment as its sender meant it: percent-decoded (RFC 3986 §2.1), so that a user id
/// with `:` or `|` arrives the same whether or not the client encoded those.
fn path_segment(segment: &str) -> Result<std::borrow::Cow<'_, str>, Rejection> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| Rejection::bad_request("a path segment is not percent-encoded UTF-8"))
}

fn user_id_from_json(value: Option<Value>) -> Result<UserId, Rejection> {
    let value = value.ok_or_else(|| {
        Rejection::bad_request("userId is required: a positive integer or an id string")
    })?;
    // `as_u64` is `None` for negative numbers, fractions (even 1.0) and numbers beyond u64.
    let user = match &value {
        Value::Number(n) => n.as_u64().and_then(|n| UserId::from_number(n).ok()),
        Value::String(text) => UserId::new(text.as_str()).ok(),
        _ => None,
    };
    user.ok_or_else(|| {
        Rejection::bad_request(format!(
            "userId must be an integer from 1 to {} or 1 to 64 characters from A-Z, a-z, 0-9 and . _ : @ | -, got {value}",
            UserId::MAX_NUMBER
        ))
    })
}

fn quota_from_json(value: Option<Value>) -> Result<NonZeroU32, Rejection> {
    let value =
        value.ok_or_else(|| Rejection::bad_request("quota is required: a positive integer"))?;
    value
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .and_then(NonZeroU32::new)
        .ok_or_else(|| {
            Rejection::bad_request(format!(
                "quota must be an integer from 1 to {}, got {value}",
                u32::MAX
            ))
        })
}

fn rfc3339(field: &str, text: &str) -> Result<SystemTime, Rejection> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map(SystemTime::from)
        .map_err(|err| {
            Rejection::bad_request(format!(
                "{field} must be an RFC 3339 time such as 2026-12-01T10:00:00+09:00: {err}"
            ))
        })
}

fn time_json(t: Option<SystemTime>) -> Value {
    t.and_then(|t| OffsetDateTime::from(t).format(&Rfc3339).ok())
        .map_or(Value::Null, Value::String)
}

fn status_json(id: &CampaignId, status: &CampaignStatus) -> Value {
    json!({
        "status": "success",
        "id": id.as_str(),
        "quota": status.quota,
        "issued": status.issued,
        "remaining": status.remaining(),
        "opensAt": time_json(status.opens_at),
        "closesAt": time_json(status.closes_at),
    })
}

fn unknown_campaign(id: &CampaignId) -> Response<Body> {
    json(
        StatusCode::NOT_FOUND,
        &json!({ "status": "unknown_campaign", "message": "no campaign has this id", "campaignId": id.as_str() }),
    )
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

    #[test]
    fn user_ids_from_json_are_positive_i64_integers_or_id_strings() {
        let parse = |text: &str| user_id_from_json(Some(serde_json::from_str(text).unwrap()));
        assert_eq!(parse("1").unwrap().as_str(), "1");
        assert_eq!(
            parse("9223372036854775807").unwrap().as_number(),
            Some(i64::MAX as u64)
        );
        assert_eq!(parse(r#""42""#).unwrap(), parse("42").unwrap());
        assert_eq!(parse(r#""auth0|5f3a9c""#).unwrap().as_str(), "auth0|5f3a9c");
        let longest = format!("\"{}\"", "x".repeat(64));
        assert!(parse(&longest).is_ok());
        let too_long = format!("\"{}\"", "x".repeat(65));
        for bad in [
            "0",
            "-1",
            "1.0",
            "1.5",
            "9223372036854775808",
            "18446744073709551616",
            r#""""#,
            r#""0""#,
            r#""-1""#,
            r#""1.5""#,
            r#""a b""#,
            r#""쿠폰""#,
            &too_long,
            "true",
            "null",
            "[1]",
            "{}",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(user_id_from_json(None).is_err());
    }

    #[test]
    fn quotas_must_be_positive_u32() {
        let parse = |text: &str| quota_from_json(Some(serde_json::from_str(text).unwrap()));
        assert_eq!(parse("100").unwrap().get(), 100);
        for bad in ["0", "-5", "4294967296", "1.5", "\"10\""] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secret_comparison() {
        assert!(same_secret(b"secret", b"secret"));
        assert!(!same_secret(b"secret", b"secreT"));
        assert!(!same_secret(b"secret", b"secret2"));
        assert!(!same_secret(b"", b"secret"));
    }

    #[test]
    fn bearer_schemes_are_case_insensitive() {
        let head = |value: &str| {
            Request::builder()
                .header(AUTHORIZATION, value)
                .body(())
                .unwrap()
                .into_parts()
                .0
        };
        for ok in ["Bearer abc", "bearer abc", "BEARER  abc ", "bEaReR abc"] {
            assert_eq!(bearer(&head(ok)).ok(), Some("abc"), "{ok:?}");
        }
        for bad in ["Basic abc", "Bearer", "Bearer ", "abc", "Token abc"] {
            assert!(bearer(&head(bad)).is_err(), "{bad:?}");
        }
    }
}
