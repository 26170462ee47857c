//! `POST /api/campaigns`: creating a campaign, or changing its quota, window or opening (an
//! admin call).

use std::num::NonZeroU32;
use std::time::SystemTime;

use coupon_gate::{Campaign, Create};
use hyper::body::Incoming;
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::caller::authorize;
use super::input::campaign_id;
use crate::body::read_json;
use crate::response::{self, Body, Rejection, json, time_json};
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    id: Option<String>,
    quota: Option<Value>,
    #[serde(rename = "opensAt")]
    opens_at: Option<String>,
    #[serde(rename = "closesAt")]
    closes_at: Option<String>,
    /// `race` (the default) or `draw`.
    opening: Option<String>,
    #[serde(rename = "queueOpensAt")]
    queue_opens_at: Option<String>,
}

pub(super) async fn create_campaign(
    state: &AppState,
    head: &Parts,
    body: Incoming,
) -> Result<Response<Body>, Rejection> {
    authorize(state, head)?;
    let body: CreateBody = read_json(head, body).await?;
    let campaign = campaign_of(body)?;
    match state.ask(|gate| gate.create(&campaign)).await {
        Ok(created) => Ok(created_answer(&campaign, created)),
        Err(failure) => Ok(response::failure(&failure)),
    }
}

/// The campaign a create request's body defines, every field checked.
fn campaign_of(body: CreateBody) -> Result<Campaign, Rejection> {
    let id = campaign_id(
        body.id
            .as_deref()
            .ok_or_else(|| Rejection::bad_request("id is required"))?,
    )?;
    let quota = quota_from_json(body.quota)?;
    let time = |field: &str, value: Option<String>| {
        value.as_deref().map(|t| rfc3339(field, t)).transpose()
    };
    let opens = time("opensAt", body.opens_at)?;
    let closes = time("closesAt", body.closes_at)?;
    let queue_opens = time("queueOpensAt", body.queue_opens_at)?;
    let campaign = Campaign::new(id, quota)
        .with_window(opens, closes)
        .map_err(|err| Rejection::bad_request(err.to_string()))?;
    match (body.opening.as_deref().unwrap_or("race"), queue_opens) {
        ("race", None) => Ok(campaign),
        ("race", Some(_)) => Err(Rejection::bad_request(
            "queueOpensAt is for a draw: send \"opening\": \"draw\" with it, or leave it out",
        )),
        ("draw", None) => Err(Rejection::bad_request(
            "a draw needs queueOpensAt, when its pre-queue opens, and opensAt, when it draws",
        )),
        ("draw", Some(queue_opens)) => campaign
            .with_draw(queue_opens)
            .map_err(|err| Rejection::bad_request(err.to_string())),
        (other, _) => Err(Rejection::bad_request(format!(
            "opening must be \"race\" or \"draw\", got {other:?}"
        ))),
    }
}

/// The answer to a create request, from what the gate made of it.
fn created_answer(campaign: &Campaign, created: Create) -> Response<Body> {
    let (code, status) = match created {
        Create::Created => (StatusCode::CREATED, "created"),
        Create::Unchanged => (StatusCode::OK, "unchanged"),
        Create::Updated => (StatusCode::OK, "updated"),
        Create::OpeningLocked => {
            let message = "how this campaign opens (opening, queueOpensAt) cannot change once it \
                           takes applications, nor a draw's opensAt once the draw began";
            return json(
                StatusCode::CONFLICT,
                &json!({ "status": "opening_locked", "message": message }),
            );
        }
        Create::Ended => {
            let message = "this campaign was ended early (POST /api/campaigns/{id}/close) and \
                           keeps its definition for good";
            return json(
                StatusCode::CONFLICT,
                &json!({ "status": "campaign_ended", "message": message }),
            );
        }
        Create::Archived => {
            let message = "this campaign was archived; its id is not reused (choose another id, \
                           or bring it back with coupon-admin rebuild --restore)";
            return json(
                StatusCode::CONFLICT,
                &json!({ "status": "campaign_archived", "message": message }),
            );
        }
        Create::QuotaBelowIssued { issued } => {
            let message = format!("the quota cannot go below the {issued} coupons already issued");
            return json(
                StatusCode::CONFLICT,
                &json!({ "status": "quota_below_issued", "message": message, "issued": issued }),
            );
        }
    };
    let mut answer = json!({
        "status": status,
        "id": campaign.id().as_str(),
        "quota": campaign.quota().get(),
    });
    answer["opensAt"] = time_json(campaign.opens_at());
    answer["closesAt"] = time_json(campaign.closes_at());
    answer["opening"] = campaign.opening().name().into();
    answer["queueOpensAt"] = time_json(campaign.opening().queue_opens_at());
    json(code, &answer)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_must_be_positive_u32() {
        let parse = |text: &str| quota_from_json(Some(serde_json::from_str(text).unwrap()));
        assert_eq!(parse("100").unwrap().get(), 100);
        for bad in ["0", "-5", "4294967296", "1.5", "\"10\""] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
