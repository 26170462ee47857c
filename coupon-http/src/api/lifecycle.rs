//! The admin calls of a campaign's life after its creation: the page of campaigns with their
//! stages, taking one user's coupon back, ending a campaign early, and archiving it once settled.

use std::sync::Arc;
use std::time::SystemTime;

use coupon_admin::archive::{NotSettled, Run};
use coupon_gate::{CampaignId, Close, Listed, Release, UserId};
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use serde_json::json;

use super::caller::authorize;
use super::input::{campaign_id, path_segment};
use super::lookup::{archived, status_json, tombstone_json, unknown_campaign};
use crate::archiving::{self, Failed};
use crate::response::{self, Body, Rejection, UserJson, json, time_json};
use crate::state::AppState;

/// The most campaigns one page holds, and how many it holds when `limit` is not given.
const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 100;

/// `GET /api/campaigns?after=<id>&limit=<n>`: a page of campaigns in the order of their ids,
/// each with its status and stage; `next` is the `after` of the following page, `null` on the
/// last.
pub(super) async fn list_campaigns(
    state: &AppState,
    head: &Parts,
) -> Result<Response<Body>, Rejection> {
    authorize(state, head)?;
    let (after, limit) = page_query(head.uri.query().unwrap_or(""))?;
    let page = state
        .ask(|gate| gate.campaign_page(after.as_ref(), limit))
        .await;
    let page = match page {
        Ok(page) => page,
        Err(failure) => return Ok(response::failure(&failure)),
    };
    let now = SystemTime::now();
    let next = (page.len() == limit)
        .then(|| page.last().map(|(id, _)| id.as_str().to_owned()))
        .flatten();
    let campaigns: Vec<_> = page
        .iter()
        .map(|(id, listed)| {
            let mut entry = match listed {
                Listed::Live(status) => status_json(id, status),
                Listed::Archived(tombstone) => tombstone_json(id, tombstone),
            };
            if let Some(entry) = entry.as_object_mut() {
                entry.remove("status");
                entry.insert("state".into(), listed.stage(now).name().into());
            }
            entry
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &json!({ "status": "success", "campaigns": campaigns, "next": next }),
    ))
}

/// The `after` and `limit` of a list request's query; anything else in it is refused.
fn page_query(query: &str) -> Result<(Option<CampaignId>, usize), Rejection> {
    let (mut after, mut limit) = (None, None);
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let seen = match name {
            "after" => after.replace(campaign_id(value)?).is_some(),
            "limit" => {
                let n = path_segment(value)?
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        Rejection::bad_request(format!(
                            "limit must be an integer from 1 to {MAX_PAGE}"
                        ))
                    })?;
                limit.replace(n).is_some()
            }
            other => {
                return Err(Rejection::bad_request(format!(
                    "unknown query parameter {:?}: the list takes after and limit",
                    path_segment(other).unwrap_or_default()
                )));
            }
        };
        if seen {
            return Err(Rejection::bad_request(format!(
                "{name} is given more than once"
            )));
        }
    }
    Ok((after, limit.unwrap_or(DEFAULT_PAGE)))
}

/// `DELETE /api/campaigns/{id}/users/{userId}`: takes the user's coupon back. Its seq goes back
/// to the pool, and the release flows through the outbox to the stores.
pub(super) async fn release(
    state: &AppState,
    id: &str,
    user: &str,
    head: &Parts,
) -> Result<Response<Body>, Rejection> {
    authorize(state, head)?;
    let campaign = campaign_id(id)?;
    let user: UserId = path_segment(user)?
        .parse()
        .map_err(|err| Rejection::bad_request(format!("{err}")))?;
    match state.ask(|gate| gate.release(&campaign, &user)).await {
        Ok(Release::Released { seq }) => Ok(json(
            StatusCode::OK,
            &json!({
                "status": "released",
                "message": "the coupon is taken back; its seq goes to the next applicant",
                "campaignId": campaign.as_str(),
                "userId": UserJson::of(&user),
                "seq": seq,
            }),
        )),
        Ok(Release::NotAdmitted) => Ok(json(
            StatusCode::NOT_FOUND,
            &json!({
                "status": "not_a_holder",
                "message": "this user holds no coupon of this campaign; nothing changed",
                "campaignId": campaign.as_str(),
                "userId": UserJson::of(&user),
            }),
        )),
        Ok(Release::UnknownCampaign) => Ok(unknown_campaign(&campaign)),
        Ok(Release::Archived) => Ok(archived(&campaign, None)),
        Err(failure) => Ok(response::failure(&failure)),
    }
}

/// `POST /api/campaigns/{id}/close`: ends the campaign now.
pub(super) async fn close(
    state: &AppState,
    id: &str,
    head: &Parts,
) -> Result<Response<Body>, Rejection> {
    authorize(state, head)?;
    let campaign = campaign_id(id)?;
    let (at, already) = match state.ask(|gate| gate.close(&campaign)).await {
        Ok(Close::Closed { at }) => (at, false),
        Ok(Close::AlreadyClosed { at }) => (at, true),
        Ok(Close::UnknownCampaign) => return Ok(unknown_campaign(&campaign)),
        Ok(Close::Archived) => return Ok(archived(&campaign, None)),
        Err(failure) => return Ok(response::failure(&failure)),
    };
    let message = if already {
        "the campaign had already closed; nothing changed"
    } else {
        "the campaign is closed: later applications are told closed"
    };
    Ok(json(
        StatusCode::OK,
        &json!({
            "status": "closed",
            "message": message,
            "id": campaign.as_str(),
            "closesAt": time_json(Some(at)),
            "alreadyClosed": already,
        }),
    ))
}

/// `POST /api/campaigns/{id}/archive`: archives the campaign if it is settled (closed, its
/// outbox delivered, MySQL holding exactly its holders, no failed event of it waiting); else 409
/// `not_settled` with the reason.
pub(super) async fn archive(
    state: &Arc<AppState>,
    id: &str,
    head: &Parts,
) -> Result<Response<Body>, Rejection> {
    authorize(state, head)?;
    let campaign = campaign_id(id)?;
    let run = archiving::archive(state.clone(), campaign.clone()).await;
    Ok(match run {
        Ok(Run::Archived { tombstone, now }) => {
            let mut answer = tombstone_json(&campaign, &tombstone);
            answer["status"] = "archived".into();
            answer["message"] = if now {
                "the campaign is archived: its state left Redis, MySQL keeps its coupons"
            } else {
                "the campaign was already archived; nothing changed"
            }
            .into();
            answer["alreadyArchived"] = (!now).into();
            json(StatusCode::OK, &answer)
        }
        Ok(Run::Refused(why)) => not_settled(&campaign, &why),
        Ok(Run::UnknownCampaign) => unknown_campaign(&campaign),
        Err(Failed::Redis(failure)) => response::failure(&failure),
        Err(Failed::Database(err)) => {
            tracing::warn!(cause = format!("{err:#}"), %campaign, "cannot archive: the database is not reachable");
            response::unavailable(
                "the database could not be read to check that the campaign is settled; retry in a moment",
                "5",
            )
        }
    })
}

/// 409 `not_settled`: why the campaign cannot be archived yet, with the counts behind it.
fn not_settled(campaign: &CampaignId, why: &NotSettled) -> Response<Body> {
    let mut answer = json!({
        "status": "not_settled",
        "reason": why.reason(),
        "message": why.to_string(),
        "campaignId": campaign.as_str(),
    });
    match why {
        NotSettled::NotClosed { closes_at } => answer["closesAt"] = time_json(*closes_at),
        NotSettled::OutboxPending { events } => answer["events"] = (*events).into(),
        NotSettled::Differs {
            holders,
            rows,
            missing,
            extra,
        } => {
            answer["holders"] = (*holders).into();
            answer["rows"] = (*rows).into();
            answer["missing"] = (*missing).into();
            answer["extra"] = (*extra).into();
        }
        NotSettled::FailedEvents(n) => answer["failedEvents"] = (*n).into(),
        NotSettled::Changed => {}
    }
    json(StatusCode::CONFLICT, &answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_query_takes_after_and_a_bounded_limit() {
        let page = |q: &str| {
            page_query(q).map(|(after, limit)| (after.map(|a| a.as_str().to_owned()), limit))
        };
        assert_eq!(page("").unwrap(), (None, DEFAULT_PAGE));
        assert_eq!(
            page("limit=5&after=spring").unwrap(),
            (Some("spring".into()), 5)
        );
        assert_eq!(page("limit=1000").unwrap(), (None, 1000));
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=x",
            "limit=-1",
            "after=Bad!",
            "limit=2&limit=3",
            "cursor=x",
            "after=",
        ] {
            assert!(page_query(bad).is_err(), "{bad}");
        }
    }
}
