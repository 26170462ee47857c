//! Archiving a settled campaign: its state leaves Redis once MySQL holds exactly its holders.
//!
//! Settled means: its window has ended, its outbox is empty and every event in it acknowledged,
//! MySQL's coupon rows are exactly its holders in Redis (user and seq), and no failed event of
//! it waits for a replay. The gate checks what it can see ([`Gate::begin_archive`]); this module
//! adds MySQL's side between the seal and the archive, which happens only if no coupon was taken
//! or released meanwhile. coupon-admin's `archive` command, coupon-http's archive call and its
//! retention (`COUPON_ARCHIVE_AFTER`) all run [`archive`].

use std::collections::BTreeSet;
use std::fmt;
use std::time::SystemTime;

use anyhow::Context;
use coupon_gate::{Archive, CampaignId, Gate, Tombstone, UserId};
use mysql_async::Pool;
use redis::aio::ConnectionLike;

use crate::sources;

/// How many times a campaign whose holders changed during the check is checked again.
const ATTEMPTS: usize = 3;

/// What [`archive`] found or did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Run {
    /// Archived: now (`now`), or before.
    Archived {
        /// What stays of the campaign.
        tombstone: Tombstone,
        /// Whether this run archived it.
        now: bool,
    },
    /// Not settled; nothing changed.
    Refused(NotSettled),
    /// No campaign has this id.
    UnknownCampaign,
}

/// Why a campaign is not settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotSettled {
    /// Its window has not ended (`None`: it has no end).
    NotClosed {
        /// When it closes.
        closes_at: Option<SystemTime>,
    },
    /// Events are still in its outbox, not acknowledged by a relay.
    OutboxPending {
        /// How many.
        events: u64,
    },
    /// MySQL's coupon rows are not its holders: events still on the topic, or lost.
    Differs {
        /// Holders in Redis.
        holders: usize,
        /// Coupon rows in MySQL.
        rows: usize,
        /// Holders (user and seq) without that row in MySQL.
        missing: usize,
        /// Rows in MySQL that are no holder's (user and seq).
        extra: usize,
    },
    /// Failed events of it wait in MySQL for a replay.
    FailedEvents(u64),
    /// Its holders changed during every check (releases going on).
    Changed,
}

impl NotSettled {
    /// A short name of the reason: the HTTP answer's `reason` and the metric's label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotClosed { .. } => "not_closed",
            Self::OutboxPending { .. } => "outbox_pending",
            Self::Differs { .. } => "mysql_differs",
            Self::FailedEvents(_) => "failed_events",
            Self::Changed => "changed",
        }
    }
}

impl fmt::Display for NotSettled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotClosed { closes_at: None } => {
                f.write_str("the campaign has no end: close it first")
            }
            Self::NotClosed { closes_at: Some(_) } => {
                f.write_str("the campaign's window has not ended: close it first, or wait")
            }
            Self::OutboxPending { events } => write!(
                f,
                "{events} events are still in the outbox, not yet delivered to the topic: is a \
                 relay running?"
            ),
            Self::Differs {
                holders,
                rows,
                missing,
                extra,
            } => write!(
                f,
                "MySQL does not hold exactly the holders yet: {holders} holders in Redis, {rows} \
                 coupon rows, {missing} holders without their row, {extra} rows of no holder \
                 (events still on the topic, or lost: `coupon-admin audit` names them)"
            ),
            Self::FailedEvents(n) => write!(
                f,
                "{n} failed events of the campaign wait in MySQL: fix their cause, then \
                 `coupon-sink replay`"
            ),
            Self::Changed => {
                f.write_str("coupons were taken back during the check, again and again: retry")
            }
        }
    }
}

/// Archives `campaign` if it is settled (see the module's documentation), else says why not.
/// Counted in `coupon_archive_runs_total{result}` and `coupon_archive_refusals_total{reason}`.
///
/// # Errors
///
/// Redis or MySQL unreachable or answering something unexpected; nothing is half-done that the
/// next run does not finish.
pub async fn archive<C>(gate: &Gate<C>, pool: &Pool, campaign: &CampaignId) -> anyhow::Result<Run>
where
    C: ConnectionLike + Clone + Send + Sync,
{
    let run = attempt(gate, pool, campaign).await;
    let result = match &run {
        Ok(Run::Archived { now: true, .. }) => "archived",
        Ok(Run::Archived { now: false, .. }) => "already_archived",
        Ok(Run::Refused(why)) => {
            metrics::counter!("coupon_archive_refusals_total", "reason" => why.reason())
                .increment(1);
            "refused"
        }
        Ok(Run::UnknownCampaign) => "unknown_campaign",
        Err(_) => "error",
    };
    metrics::counter!("coupon_archive_runs_total", "result" => result).increment(1);
    run
}

async fn attempt<C>(gate: &Gate<C>, pool: &Pool, campaign: &CampaignId) -> anyhow::Result<Run>
where
    C: ConnectionLike + Clone + Send + Sync,
{
    for _ in 0..ATTEMPTS {
        let seal = match gate.begin_archive(campaign).await? {
            Ok(seal) => seal,
            Err(found) => return Ok(run_of(found)),
        };
        let holders = gate.recovery().holders(campaign).await?;
        let rows = sources::coupon_rows(pool, campaign).await?;
        if let Some(differs) = differs(&holders, &rows) {
            return Ok(Run::Refused(differs));
        }
        let failed = sources::unresolved_failures(pool, campaign).await?;
        if failed > 0 {
            return Ok(Run::Refused(NotSettled::FailedEvents(failed)));
        }
        match gate
            .archive(campaign, &seal)
            .await
            .context("archiving in Redis")?
        {
            Archive::Changed => continue,
            found => return Ok(run_of(found)),
        }
    }
    Ok(Run::Refused(NotSettled::Changed))
}

/// What the gate's answer means for a run.
fn run_of(found: Archive) -> Run {
    match found {
        Archive::Archived { tombstone, now } => Run::Archived { tombstone, now },
        Archive::NotClosed { closes_at } => Run::Refused(NotSettled::NotClosed { closes_at }),
        Archive::OutboxPending { events } => Run::Refused(NotSettled::OutboxPending { events }),
        Archive::Changed => Run::Refused(NotSettled::Changed),
        Archive::UnknownCampaign => Run::UnknownCampaign,
    }
}

/// How MySQL's rows differ from the holders, if they do.
fn differs(holders: &[(UserId, u32)], rows: &[(UserId, u32)]) -> Option<NotSettled> {
    let redis: BTreeSet<&(UserId, u32)> = holders.iter().collect();
    let mysql: BTreeSet<&(UserId, u32)> = rows.iter().collect();
    let missing = redis.difference(&mysql).count();
    let extra = mysql.difference(&redis).count();
    (missing > 0 || extra > 0 || holders.len() != rows.len()).then_some(NotSettled::Differs {
        holders: holders.len(),
        rows: rows.len(),
        missing,
        extra,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(u64, u32)]) -> Vec<(UserId, u32)> {
        list.iter()
            .map(|&(u, s)| (UserId::from_number(u).unwrap(), s))
            .collect()
    }

    #[test]
    fn rows_differ_by_user_or_seq() {
        assert_eq!(
            differs(&pairs(&[(1, 1), (2, 2)]), &pairs(&[(1, 1), (2, 2)])),
            None
        );
        assert_eq!(
            differs(&pairs(&[(1, 1), (2, 2)]), &pairs(&[(1, 1), (2, 3), (4, 4)])),
            Some(NotSettled::Differs {
                holders: 2,
                rows: 3,
                missing: 1,
                extra: 2
            })
        );
    }
}
