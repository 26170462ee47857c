//! Archiving from coupon-http: the admin call's work, and a census every process takes of the
//! campaigns, which counts them by state and archives those closed longer than
//! `COUPON_ARCHIVE_AFTER`.
//!
//! Metrics: `coupon_campaigns{state}` (campaigns by state at the last census; the census reads
//! each live campaign's meta with one `HGETALL`, and counts archived ones with one `SCARD`, so a
//! campaign costs nothing once archived), and coupon-admin's `coupon_archive_runs_total{result}`
//! and `coupon_archive_refusals_total{reason}`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use coupon_admin::archive::{self, Run};
use coupon_gate::{CampaignId, Gate, RedisConnection, Stage};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::failure::Failure;
use crate::state::AppState;

/// How often a census is taken, unless half of `COUPON_ARCHIVE_AFTER` is shorter.
const CENSUS_EVERY: Duration = Duration::from_secs(60);

/// The states a census counts, each exported even when no campaign is in it.
const STATES: [Stage; 6] = [
    Stage::Scheduled,
    Stage::Queueing,
    Stage::Open,
    Stage::SoldOut,
    Stage::Closed,
    Stage::Archived,
];

/// Why an archive gave no answer.
pub(crate) enum Failed {
    /// Redis away, too slow, or answering something unexpected.
    Redis(Failure),
    /// MySQL away or refusing.
    Database(anyhow::Error),
}

/// Archives `campaign` if it is settled (coupon-admin's [`archive::archive`]). The work runs in
/// a task of its own: a caller that stops waiting (a client gone, a request timeout) leaves it
/// to finish, and a second call then answers that it is archived.
pub(crate) async fn archive(state: Arc<AppState>, campaign: CampaignId) -> Result<Run, Failed> {
    let task = tokio::spawn(async move {
        let gate = state.gate().map_err(Failed::Redis)?;
        let pool = state.database().await.map_err(Failed::Database)?;
        archive::archive(gate, pool, &campaign)
            .await
            .map_err(|err| match err.downcast::<coupon_gate::Error>() {
                Ok(err) => Failed::Redis(Failure::Gate(err)),
                Err(err) => Failed::Database(err),
            })
    });
    task.await.unwrap_or_else(|err| {
        Err(Failed::Database(anyhow::anyhow!(
            "archive task failed: {err}"
        )))
    })
}

/// Takes a census every [`CENSUS_EVERY`] (or half of `archive_after`, if shorter) until
/// `stopped` turns true; with `archive_after`, archives every campaign closed longer than that.
pub(crate) async fn run(
    state: Arc<AppState>,
    archive_after: Option<Duration>,
    mut stopped: watch::Receiver<bool>,
) {
    let every = archive_after.map_or(CENSUS_EVERY, |after| {
        (after / 2).clamp(Duration::from_secs(1), CENSUS_EVERY)
    });
    // The last refusal logged per campaign, so that one that stays unsettled is logged once.
    let mut refused: HashMap<CampaignId, &'static str> = HashMap::new();
    loop {
        // Until Redis is first reached, looked for every second.
        let pause = match state.gate() {
            Ok(gate) => {
                let due = census(gate, archive_after).await;
                for campaign in due {
                    retire(&state, campaign, &mut refused).await;
                }
                every
            }
            Err(_) => Duration::from_secs(1),
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
    }
}

/// Counts the campaigns by state into `coupon_campaigns{state}`, and answers those closed at
/// least `archive_after` ago. A census that fails leaves the last counts and answers none.
async fn census(gate: &Gate<RedisConnection>, archive_after: Option<Duration>) -> Vec<CampaignId> {
    let now = SystemTime::now();
    let counted = async {
        let ids = gate.campaigns().await?;
        let mut counts: HashMap<Stage, u64> = HashMap::new();
        let mut closed = Vec::new();
        // A hundred at a time, sent at once: the connection pipelines them.
        for part in ids.chunks(100) {
            let stages =
                futures_util::future::try_join_all(part.iter().map(|id| gate.stage(id, now)))
                    .await?;
            for (id, stage) in part.iter().zip(stages) {
                let Some(stage) = stage else { continue };
                *counts.entry(stage).or_default() += 1;
                if stage == Stage::Closed {
                    closed.push(id.clone());
                }
            }
        }
        counts.insert(Stage::Archived, gate.archived_count().await?);
        Ok::<_, coupon_gate::Error>((counts, closed))
    };
    let (counts, closed) = match counted.await {
        Ok(counted) => counted,
        Err(err) => {
            warn!(cause = %err, "cannot count the campaigns");
            return Vec::new();
        }
    };
    for state in STATES {
        let count = counts.get(&state).copied().unwrap_or(0);
        metrics::gauge!("coupon_campaigns", "state" => state.name()).set(count as f64);
    }
    let Some(after) = archive_after else {
        return Vec::new();
    };
    let mut due = Vec::new();
    for id in closed {
        if let Ok(Some(status)) = gate.status(&id).await
            && status.closes_at.is_some_and(|closes| closes + after <= now)
        {
            due.push(id);
        }
    }
    due
}

/// Archives `campaign`, whose retention is over; logs what stands in the way once per reason.
async fn retire(
    state: &Arc<AppState>,
    campaign: CampaignId,
    refused: &mut HashMap<CampaignId, &'static str>,
) {
    match archive(state.clone(), campaign.clone()).await {
        Ok(Run::Archived { tombstone, now }) => {
            refused.remove(&campaign);
            if now {
                info!(%campaign, holders = tombstone.holders, "archived (COUPON_ARCHIVE_AFTER)");
            }
        }
        Ok(Run::Refused(why)) => {
            if refused.insert(campaign.clone(), why.reason()) != Some(why.reason()) {
                warn!(%campaign, reason = why.reason(), "not archived yet (COUPON_ARCHIVE_AFTER): {why}");
            }
        }
        Ok(Run::UnknownCampaign) => {}
        Err(Failed::Redis(failure)) => warn!(%campaign, cause = %failure, "cannot archive"),
        Err(Failed::Database(err)) => {
            warn!(%campaign, cause = format!("{err:#}"), "cannot archive: the database is not reachable")
        }
    }
}
