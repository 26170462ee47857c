//! The reads: a campaign's status, the caller's own admission, and (an admin call in jwt mode)
//! any user's.

use coupon_gate::{CampaignId, CampaignStatus, Opening, UserId};
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
    match state.ask(|gate| gate.status(&campaign)).await {
        Ok(Some(status)) => Ok(json(StatusCode::OK, &status_json(&campaign, &status))),
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
    let user = token_user(state, verifier, client, head)?;
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
            return Ok(None);
        };
        let seq = gate.admission(id, who).await?;
        // Only a draw's queue holds anyone, and only until the draw ends: a race's lookup
        // costs no read of a queue.
        let may_wait = seq.is_none() && status.opening != Opening::Race && !status.drawn;
        let queued = may_wait && gate.queued(id, who).await?;
        Ok(Some((seq, queued)))
    });
    match lookup.await {
        Ok(None) => Ok(unknown_campaign(&campaign)),
        Ok(Some((seq, queued))) => Ok(json(
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

pub(super) fn unknown_campaign(id: &CampaignId) -> Response<Body> {
    json(
        StatusCode::NOT_FOUND,
        &json!({ "status": "unknown_campaign", "message": "no campaign has this id", "campaignId": id.as_str() }),
    )
}
