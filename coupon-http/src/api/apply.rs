//! `POST /api/campaigns/{id}/apply` (and the default campaign's `POST /api/coupons/apply`):
//! every check before the gate, then the sold-out memory or the gate, then the answer.

use std::time::{Instant, SystemTime};

use coupon_gate::{CampaignId, Outcome, UserId};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, RETRY_AFTER};
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::caller::{limited, token_user};
use super::input::{campaign_id, user_id_from_json};
use crate::body::{read_json, read_optional_json};
use crate::failure::Failure;
use crate::response::{self, Body, Rejection, UserJson, json_bytes, time_json};
use crate::sold_out::Memory;
use crate::state::ConnectionScope;

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
pub(super) async fn apply(
    scope: &ConnectionScope,
    id: &str,
    head: &Parts,
    body: Incoming,
) -> Response<Body> {
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
    state
        .limits()
        .check_address(client)
        .await
        .map_err(limited)?;
    let user = match state.verifier() {
        Some(verifier) => {
            let user = token_user(state, verifier, client, head).await?;
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
    state.limits().check_user(&user).await.map_err(limited)?;
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
        Outcome::Archived => (
            StatusCode::GONE,
            "archived",
            "this campaign has ended and was archived; the coupons it issued are kept",
            None,
        ),
        Outcome::Queued { draw_at } => return queued_answer(campaign, user, draw_at),
    };
    let answer = ApplyAnswer {
        campaign_id: campaign.as_str(),
        draw_at: None,
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

/// 202 `queued`: the user is in the pre-queue of a draw at `draw_at`. `Retry-After` names the
/// seconds until the draw, plus one to five more chosen by the user id (see [`spread`]), so that
/// a queued crowd does not come back in one spike.
fn queued_answer(campaign: &CampaignId, user: &UserId, draw_at: SystemTime) -> Response<Body> {
    let until_draw = draw_at
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let seconds = until_draw.as_secs() + u64::from(until_draw.subsec_nanos() > 0) + spread(user);
    let draw_at_text = time_json(Some(draw_at));
    let answer = ApplyAnswer {
        campaign_id: campaign.as_str(),
        draw_at: draw_at_text.as_str(),
        message: "you are in the queue; the draw at drawAt decides who gets a coupon",
        seq: None,
        status: "queued",
        user_id: UserJson::of(user),
    };
    let mut response = json_bytes(
        StatusCode::ACCEPTED,
        serde_json::to_vec(&answer).expect("plain fields serialize"),
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// One to five seconds, the same for a user every time (FNV-1a of its id), by which a queued
/// user's `Retry-After` exceeds the time until the draw.
fn spread(user: &UserId) -> u64 {
    let hash = user
        .as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    1 + hash % 5
}

/// The answer to an application: written straight from borrowed fields, as this is the answer
/// a crowd gets thousands of times a second. Fields in alphabetical order, as every other
/// answer's.
#[derive(Serialize)]
struct ApplyAnswer<'a> {
    #[serde(rename = "campaignId")]
    campaign_id: &'a str,
    #[serde(rename = "drawAt", skip_serializing_if = "Option::is_none")]
    draw_at: Option<&'a str>,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u32>,
    status: &'a str,
    #[serde(rename = "userId")]
    user_id: UserJson<'a>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queued_user_comes_back_one_to_five_seconds_after_the_draw() {
        let spreads: std::collections::BTreeSet<u64> = (1..=200)
            .map(|u| spread(&UserId::from_number(u).unwrap()))
            .collect();
        assert_eq!(
            spreads,
            (1..=5).collect(),
            "every spread is used, none other"
        );
        let user = UserId::new("auth0|5f3a9c").unwrap();
        assert_eq!(spread(&user), spread(&user));
    }
}
