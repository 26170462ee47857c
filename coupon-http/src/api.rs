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
//! | bad input | `error` | 400, 401, 403, 404, 405, 413, 415 |
//! | Redis unavailable | `unavailable` | 503 (with `Retry-After`) |
//! | a fault of the server | `error` | 500 |

use std::convert::Infallible;
use std::num::NonZeroU32;
use std::time::SystemTime;

use coupon_gate::{Campaign, CampaignId, CampaignStatus, Create, Outcome, UserId};
use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::body::read_json;
use crate::response::{self, Body, Rejection, json, json_bytes};
use crate::state::{AppState, DEFAULT_CAMPAIGN};

/// Every route, recognised from the path alone so that a known path with the wrong method
/// answers 405 rather than 404.
#[derive(Debug)]
enum Route<'a> {
    Health,
    Ready,
    ApplyDefault,
    Apply(&'a str),
    Campaign(&'a str),
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
            ["api", "coupons", "apply"] => Self::ApplyDefault,
            ["api", "campaigns"] => Self::Campaigns,
            ["api", "campaigns", id] => Self::Campaign(id),
            ["api", "campaigns", id, "apply"] => Self::Apply(id),
            ["api", "campaigns", id, "users", user] => Self::UserAdmission(id, user),
            _ => return None,
        })
    }

    fn method(&self) -> (Method, &'static str) {
        match self {
            Self::Health | Self::Ready | Self::Campaign(_) | Self::UserAdmission(..) => {
                (Method::GET, "GET")
            }
            Self::ApplyDefault | Self::Apply(_) | Self::Campaigns => (Method::POST, "POST"),
        }
    }
}

/// Answers one request. Never fails: every problem is an answer.
pub(crate) async fn handle(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    // Split so that the route can borrow the path while the body is read.
    let (head, body) = req.into_parts();
    let path = head.uri.path();
    let Some(route) = Route::recognise(path) else {
        return Ok(
            Rejection::new(StatusCode::NOT_FOUND, format!("no endpoint at {path}")).into_response(),
        );
    };
    let (method, allow) = route.method();
    if head.method != method {
        let message = format!("{} is not allowed on {path}; use {allow}", head.method);
        let rejection =
            Rejection::new(StatusCode::METHOD_NOT_ALLOWED, message).with_header("allow", allow);
        return Ok(rejection.into_response());
    }
    let answer = match route {
        Route::Health => Ok(json(StatusCode::OK, &json!({ "status": "ok" }))),
        Route::Ready => Ok(ready(state).await),
        Route::ApplyDefault => apply(state, DEFAULT_CAMPAIGN, &head, body).await,
        Route::Apply(id) => apply(state, id, &head, body).await,
        Route::Campaign(id) => campaign_status(state, id).await,
        Route::UserAdmission(id, user) => user_admission(state, id, user).await,
        Route::Campaigns => create_campaign(state, &head, body).await,
    };
    Ok(answer.unwrap_or_else(Rejection::into_response))
}

async fn ready(state: &AppState) -> Response<Body> {
    let redis = state.ping_redis().await;
    let relay = state.relay_running();
    let status = if redis && relay {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = if status == StatusCode::OK {
        "ok"
    } else {
        "unavailable"
    };
    json(
        status,
        &json!({ "status": word, "redis": redis, "relay": relay }),
    )
}

#[derive(Deserialize)]
struct ApplyBody {
    #[serde(rename = "userId")]
    user_id: Option<Value>,
}

async fn apply(
    state: &AppState,
    id: &str,
    head: &Parts,
    body: Incoming,
) -> Result<Response<Body>, Rejection> {
    let campaign = campaign_id(id)?;
    let body: ApplyBody = read_json(head, body).await?;
    let user = user_id_from_json(body.user_id)?;
    let outcome = if state.sold_out().is_sold_out(&campaign) {
        Outcome::SoldOut
    } else {
        let generation = state.sold_out().generation();
        match state
            .within_timeout(state.batcher().apply(&campaign, user.clone()))
            .await
        {
            Ok(Outcome::SoldOut) => {
                state.sold_out().remember(&campaign, generation);
                Outcome::SoldOut
            }
            Ok(outcome) => outcome,
            Err(failure) => return Ok(response::failure(&failure)),
        }
    };
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
        user_id: UserJson::of(&user),
    };
    Ok(json_bytes(
        code,
        serde_json::to_vec(&answer).expect("plain fields serialize"),
    ))
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
    match state.within_timeout(state.gate().status(&campaign)).await {
        Ok(Some(status)) => Ok(json(StatusCode::OK, &status_json(&campaign, &status))),
        Ok(None) => Ok(unknown_campaign(&campaign)),
        Err(failure) => Ok(response::failure(&failure)),
    }
}

async fn user_admission(
    state: &AppState,
    id: &str,
    user: &str,
) -> Result<Response<Body>, Rejection> {
    let campaign = campaign_id(id)?;
    let user: UserId = user
        .parse()
        .map_err(|err| Rejection::bad_request(format!("{err}")))?;
    let gate = state.gate();
    let lookup = async {
        Ok((
            gate.status(&campaign).await?.is_some(),
            gate.admission(&campaign, &user).await?,
        ))
    };
    match state.within_timeout(lookup).await {
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

    let created = match state.within_timeout(state.gate().create(&campaign)).await {
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
    let given = head
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(given) = given else {
        return Err(Rejection::new(
            StatusCode::UNAUTHORIZED,
            "send the admin token as Authorization: Bearer <token>",
        )
        .with_header("www-authenticate", "Bearer"));
    };
    if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        return Err(Rejection::new(
            StatusCode::FORBIDDEN,
            "the admin token is wrong",
        ));
    }
    Ok(())
}

/// Compares without returning early, so the time taken does not tell how much of a guess
/// was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn campaign_id(id: &str) -> Result<CampaignId, Rejection> {
    CampaignId::new(id).map_err(|err| Rejection::bad_request(err.to_string()))
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
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
