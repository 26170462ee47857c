//! The reads: a campaign's status, the caller's own admission, and (an admin call in jwt mode)
//! any user's.

use coupon_gate::{CampaignId, CampaignStatus, Listed, Opening, Tombstone, UserId};
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use serde_json::{Value, json};

use super::caller::{authorize, token_user};
use super::input::{campaign_id, path_segment};
use crate::response::{self, Body, Rejection, UserJson, json, time_json};
use crate::state::{AppState, ConnectionScope};

/// `GET /api/campaigns/{id}`: quota, issued, remaining and window.
pub(super) async fn campaign_status(
    state: &AppState,
    id: &str,
) -> Result<Response<Body>, Rejection> {
    let campaign = campaign_id(id)?;
    match state.ask(|gate| gate.listed(&campaign)).await {
        Ok(Some(Listed::Live(status))) => {
            Ok(json(StatusCode::OK, &status_json(&campaign, &status)))
        }
        Ok(Some(Listed::Archived(tombstone))) => Ok(archived(&campaign, Some(&tombstone))),
        Ok(None) => Ok(unknown_campaign(&campaign)),
        Err(failure) => Ok(response::failure(&failure)),
    }
}

/// `GET /api/campaigns/{id}/me`: the admission of the token's user.
pub(super) async fn me(
    scope: &ConnectionScope,
    id: &str,
    head: &Parts,
) -> Result<Response<Body>, Rejection> {
    let state = &*scope.state;
    let campaign = campaign_id(id)?;
    let Some(verifier) = state.verifier() else {
        return Err(Rejection::bad_request(
            "this server takes the user from the body (COUPON_IDENTITY=body), not from a token: \
             ask /api/campaigns/{id}/users/{userId}",
        ));
    };
    let client = state.limits().client(scope.peer.ip(), &head.headers);
    let user = token_user(state, verifier, client, head).await?;
    lookup(state, campaign, user).await
}

/// `GET /api/campaigns/{id}/users/{userId}`: any user's admission; in jwt mode an admin call.
pub(super) async fn user_admission(
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
        let Some(status) = gate.status(id).await? else {
            return Ok(Err(gate.tombstone(id).await?));
        };
        let seq = gate.admission(id, who).await?;
        // Only a draw's queue holds anyone, and only until the draw ends: a race's lookup
        // costs no read of a queue.
        let may_wait = seq.is_none() && status.opening != Opening::Race && !status.drawn;
        let queued = may_wait && gate.queued(id, who).await?;
        Ok(Ok((seq, queued)))
    });
    match lookup.await {
        Ok(Err(None)) => Ok(unknown_campaign(&campaign)),
        Ok(Err(Some(tombstone))) => Ok(archived(&campaign, Some(&tombstone))),
        Ok(Ok((seq, queued))) => Ok(json(
            StatusCode::OK,
            &json!({
                "status": "success",
                "campaignId": campaign.as_str(),
                "userId": UserJson::of(&user),
                "admitted": seq.is_some(),
                "seq": seq,
                "queued": queued,
            }),
        )),
        Err(failure) => Ok(response::failure(&failure)),
    }
}

pub(super) fn status_json(id: &CampaignId, status: &CampaignStatus) -> Value {
    json!({
        "status": "success",
        "id": id.as_str(),
        "quota": status.quota,
        "issued": status.issued,
        "remaining": status.remaining(),
        "opensAt": time_json(status.opens_at),
        "closesAt": time_json(status.closes_at),
        "opening": status.opening.name(),
        "queueOpensAt": time_json(status.opening.queue_opens_at()),
        "queued": status.queued,
        "drawn": status.drawn,
    })
}

/// The fields of an archived campaign in a status or a list: what its tombstone keeps.
pub(super) fn tombstone_json(id: &CampaignId, tombstone: &Tombstone) -> Value {
    json!({
        "id": id.as_str(),
        "quota": tombstone.quota,
        "issued": tombstone.holders,
        "closesAt": time_json(Some(tombstone.closed_at)),
        "archivedAt": time_json(Some(tombstone.archived_at)),
    })
}

/// 410 `archived`: the campaign ended and its state left Redis; MySQL keeps its coupons. With
/// the tombstone when the caller read it.
pub(super) fn archived(id: &CampaignId, tombstone: Option<&Tombstone>) -> Response<Body> {
    let mut answer = match tombstone {
        Some(tombstone) => tombstone_json(id, tombstone),
        None => json!({ "id": id.as_str() }),
    };
    answer["status"] = "archived".into();
    answer["message"] =
        "this campaign has ended and was archived; the coupons it issued are kept".into();
    answer["campaignId"] = id.as_str().into();
    json(StatusCode::GONE, &answer)
}

pub(super) fn unknown_campaign(id: &CampaignId) -> Response<Body> {
    json(
        StatusCode::NOT_FOUND,
        &json!({ "status": "unknown_campaign", "message": "no campaign has this id", "campaignId": id.as_str() }),
    )
}
