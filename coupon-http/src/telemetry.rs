//! What the server tells Prometheus: every application's answer and latency, sold-out answers
//! from memory, token verifications, connections.
//!
//! Recorded through the [`metrics`] facade into the recorder `serve` installs (or an
//! embedder's); `GET /metrics` renders it when it is served on the API's listener.
//!
//! `coupon_applications_total{campaign,outcome}` counts each answer to an application once, as
//! the client got it. Its cardinality stays bounded: the `campaign` label is set only on the
//! outcomes the gate decides for a campaign that exists (`success`, `duplicate`, `sold_out`,
//! `not_open`, `closed`, `queued`), so it takes the ids of admin-created campaigns only; every other
//! outcome (an unknown id, a refusal before the gate, a failure) has `campaign=""`, whatever
//! the request named.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Instant;

use coupon_gate::{CampaignId, Outcome};
use coupon_metrics::PrometheusHandle;
use hyper::StatusCode;
use metrics::{Counter, Histogram, counter, histogram};

use crate::failure::Failure;
use crate::response::Rejection;

/// The `outcome` label of an answer to an application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Success,
    Duplicate,
    SoldOut,
    NotOpen,
    Closed,
    /// 202: in a draw's pre-queue.
    Queued,
    UnknownCampaign,
    /// 410: the campaign was archived.
    Archived,
    RateLimited,
    /// 401 (no token, or a token refused), or 403 (a body naming another user).
    Unauthorized,
    /// Any other 4xx: bad input.
    Invalid,
    /// 503: Redis unavailable or too slow.
    Unavailable,
    /// 500: a fault of the server.
    Error,
}

impl Answer {
    /// The outcomes a campaign that exists can have, in the order of [`Campaign::counters`].
    const OF_CAMPAIGN: [Self; 6] = [
        Self::Success,
        Self::Duplicate,
        Self::SoldOut,
        Self::NotOpen,
        Self::Closed,
        Self::Queued,
    ];
    /// The outcomes counted with `campaign=""`.
    const UNLABELLED: [Self; 7] = [
        Self::UnknownCampaign,
        Self::Archived,
        Self::RateLimited,
        Self::Unauthorized,
        Self::Invalid,
        Self::Unavailable,
        Self::Error,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Duplicate => "duplicate",
            Self::SoldOut => "sold_out",
            Self::NotOpen => "not_open",
            Self::Closed => "closed",
            Self::Queued => "queued",
            Self::UnknownCampaign => "unknown_campaign",
            Self::Archived => "archived",
            Self::RateLimited => "rate_limited",
            Self::Unauthorized => "unauthorized",
            Self::Invalid => "invalid",
            Self::Unavailable => "unavailable",
            Self::Error => "error",
        }
    }

    fn of_outcome(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Admitted { .. } => Self::Success,
            Outcome::Duplicate { .. } => Self::Duplicate,
            Outcome::SoldOut => Self::SoldOut,
            Outcome::NotOpen => Self::NotOpen,
            Outcome::Closed => Self::Closed,
            Outcome::Queued { .. } => Self::Queued,
            Outcome::UnknownCampaign => Self::UnknownCampaign,
            Outcome::Archived => Self::Archived,
        }
    }

    fn of_rejection(rejection: &Rejection) -> Self {
        match rejection.status() {
            StatusCode::TOO_MANY_REQUESTS => Self::RateLimited,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Self::Unauthorized,
            _ => Self::Invalid,
        }
    }
}

/// The counters of one campaign, by [`Answer::OF_CAMPAIGN`].
type Campaign = [Counter; Answer::OF_CAMPAIGN.len()];

/// The server's metric handles. Handles are looked up once (per campaign, the first time it is
/// answered), so that counting an answer costs an atomic add, not a registry lookup.
pub(crate) struct Telemetry {
    /// Renders `GET /metrics` on the API's listener; `None` when metrics are off or served on
    /// an address of their own.
    exposition: Option<PrometheusHandle>,
    campaigns: RwLock<HashMap<CampaignId, Campaign>>,
    unlabelled: [Counter; Answer::UNLABELLED.len()],
    duration: Histogram,
    memory_answers: Counter,
    /// By [`Verification`].
    verifications: [Counter; 3],
}

/// What became of a bearer token that was not among those verified before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verification {
    /// Verified, and accepted.
    Valid,
    /// Refused after verifying (signature, algorithm, times or claims).
    Invalid,
    /// Refused without verifying: its address had spent its bad-token budget.
    Skipped,
}

impl Verification {
    const ALL: [Self; 3] = [Self::Valid, Self::Invalid, Self::Skipped];

    fn label(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Invalid => "invalid",
            Self::Skipped => "skipped",
        }
    }
}

impl Telemetry {
    pub(crate) fn new(exposition: Option<PrometheusHandle>) -> Self {
        Self {
            exposition,
            campaigns: RwLock::new(HashMap::new()),
            unlabelled: Answer::UNLABELLED.map(|answer| {
                counter!("coupon_applications_total", "campaign" => "", "outcome" => answer.label())
            }),
            duration: histogram!("coupon_apply_duration_seconds"),
            memory_answers: counter!("coupon_sold_out_memory_answers_total"),
            verifications: Verification::ALL.map(|result| {
                counter!("coupon_token_verifications_total", "result" => result.label())
            }),
        }
    }

    /// A bearer token verified, or refused without verifying.
    pub(crate) fn token(&self, verification: Verification) {
        self.verifications[verification as usize].increment(1);
    }

    /// The text exposition, when `/metrics` is served on the API's listener.
    pub(crate) fn exposition(&self) -> Option<String> {
        self.exposition.as_ref().map(PrometheusHandle::render)
    }

    /// A sold-out answer given from memory, without Redis.
    pub(crate) fn sold_out_from_memory(&self) {
        self.memory_answers.increment(1);
    }

    /// An application that the gate (or the sold-out memory) decided, answered `started` ago.
    pub(crate) fn decided(&self, campaign: &CampaignId, outcome: &Outcome, started: Instant) {
        let answer = Answer::of_outcome(outcome);
        match Answer::OF_CAMPAIGN.iter().position(|a| *a == answer) {
            Some(i) => self.campaign(campaign, i),
            None => self.unlabelled(answer),
        }
        self.answered(started);
    }

    /// An application refused before the gate, answered `started` ago.
    pub(crate) fn refused(&self, rejection: &Rejection, started: Instant) {
        self.unlabelled(Answer::of_rejection(rejection));
        self.answered(started);
    }

    /// An application the gate could not decide, answered `started` ago.
    pub(crate) fn failed(&self, failure: &Failure, started: Instant) {
        self.unlabelled(if failure.is_unavailable() {
            Answer::Unavailable
        } else {
            Answer::Error
        });
        self.answered(started);
    }

    fn answered(&self, started: Instant) {
        self.duration.record(started.elapsed().as_secs_f64());
    }

    fn unlabelled(&self, answer: Answer) {
        let i = Answer::UNLABELLED
            .iter()
            .position(|a| *a == answer)
            .expect("every answer is of a campaign or unlabelled (a unit test pins it)");
        self.unlabelled[i].increment(1);
    }

    fn campaign(&self, campaign: &CampaignId, i: usize) {
        let known = self.campaigns.read().expect("campaign counters");
        if let Some(counters) = known.get(campaign) {
            counters[i].increment(1);
            return;
        }
        drop(known);
        let mut known = self.campaigns.write().expect("campaign counters");
        let counters = known.entry(campaign.clone()).or_insert_with(|| {
            Answer::OF_CAMPAIGN.map(|answer| {
                counter!(
                    "coupon_applications_total",
                    "campaign" => campaign.as_str().to_owned(),
                    "outcome" => answer.label()
                )
            })
        });
        counters[i].increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_verification_result_counts_on_its_own_counter() {
        for (i, result) in Verification::ALL.iter().enumerate() {
            assert_eq!(*result as usize, i, "{result:?}");
        }
        let labels: Vec<_> = Verification::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels, ["valid", "invalid", "skipped"]);
    }

    #[test]
    fn every_answer_has_one_place() {
        let all = [
            Answer::Success,
            Answer::Duplicate,
            Answer::SoldOut,
            Answer::NotOpen,
            Answer::Closed,
            Answer::Queued,
            Answer::UnknownCampaign,
            Answer::RateLimited,
            Answer::Unauthorized,
            Answer::Invalid,
            Answer::Unavailable,
            Answer::Error,
        ];
        for answer in all {
            let places = usize::from(Answer::OF_CAMPAIGN.contains(&answer))
                + usize::from(Answer::UNLABELLED.contains(&answer));
            assert_eq!(places, 1, "{answer:?}");
        }
    }
}
