//! The outbox backlog gauges: how many events of each campaign the broker has not confirmed
//! yet, and how long the oldest has waited, read beside the relay's rounds.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use coupon_gate::{CampaignId, Gate, Outbox};
use redis::aio::ConnectionLike;

use crate::announcements::Announcements;
use crate::config::CAMPAIGN_REFRESH;

/// The campaigns whose backlog gauges are kept: `None` for every campaign, else those the
/// rounds have marked. Written by the rounds, read by [`report_backlogs`].
#[derive(Clone, Default)]
pub(crate) struct Watched(Arc<std::sync::Mutex<Option<Vec<CampaignId>>>>);

impl Watched {
    pub(crate) fn set(&self, campaigns: Option<Vec<CampaignId>>) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = campaigns;
    }

    pub(crate) fn get(&self) -> Option<Vec<CampaignId>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Sets `coupon_outbox_backlog{campaign}` and `coupon_outbox_oldest_seconds{campaign}` once every
/// [`CAMPAIGN_REFRESH`], forever: read for every campaign, or, while the rounds read only the
/// marked ones, read for those and for the ones announced but not yet taken, and set to zero once
/// for every other (an outbox is let rest only once seen empty, and any event to it is
/// announced). A campaign whose figures cannot be read keeps its last ones (Redis failing is the
/// rounds' failure too, counted there).
pub(crate) async fn report_backlogs<C>(
    gate: Gate<C>,
    outbox: Outbox<C>,
    watched: Watched,
    announcements: Option<Announcements>,
) -> std::convert::Infallible
where
    C: ConnectionLike + Clone + Send + Sync,
{
    let mut zeroed: HashSet<CampaignId> = HashSet::new();
    loop {
        if let Ok(campaigns) = gate.campaigns().await {
            match watched.get() {
                None => {
                    for campaign in &campaigns {
                        report_backlog(&outbox, campaign).await;
                    }
                    zeroed.clear();
                }
                Some(marked) => {
                    let mut read: HashSet<CampaignId> = marked.into_iter().collect();
                    read.extend(announcements.iter().flat_map(Announcements::pending));
                    for campaign in &campaigns {
                        if read.contains(campaign) {
                            report_backlog(&outbox, campaign).await;
                            zeroed.remove(campaign);
                        } else if zeroed.insert(campaign.clone()) {
                            let label = campaign.as_str().to_owned();
                            metrics::gauge!("coupon_outbox_backlog", "campaign" => label.clone())
                                .set(0.0);
                            metrics::gauge!("coupon_outbox_oldest_seconds", "campaign" => label)
                                .set(0.0);
                        }
                    }
                }
            }
        }
        tokio::time::sleep(CAMPAIGN_REFRESH).await;
    }
}

async fn report_backlog<C>(outbox: &Outbox<C>, campaign: &CampaignId)
where
    C: ConnectionLike + Clone + Send + Sync,
{
    let label = campaign.as_str().to_owned();
    if let Ok(backlog) = outbox.backlog(campaign).await {
        metrics::gauge!("coupon_outbox_backlog", "campaign" => label.clone()).set(backlog as f64);
    }
    if let Ok(oldest) = outbox.oldest(campaign).await {
        let waited = oldest.map_or(Duration::ZERO, |at| {
            SystemTime::now().duration_since(at).unwrap_or_default()
        });
        metrics::gauge!("coupon_outbox_oldest_seconds", "campaign" => label)
            .set(waited.as_secs_f64());
    }
}
