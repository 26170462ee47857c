//! What the sale left in MySQL, and the verdict: the answers the crowd got compared with the
//! coupon rows the sink wrote, as a set (who was told `success` must have exactly one row, and
//! nobody else may have one).

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant};

use coupon_admin::sources;
use coupon_gate::CampaignId;
use mysql_async::Pool;

use crate::sale::Tally;

/// The rows of one campaign.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    /// Coupon rows.
    pub rows: u64,
    /// User of every row, sorted; a user twice here is a duplicate coupon.
    pub users: Vec<u64>,
    /// Seq of every row, sorted.
    pub seqs: Vec<u64>,
    /// Unresolved failed events that name the campaign.
    pub failed_events: u64,
}

impl Stored {
    /// Rows beyond the first of their user.
    pub fn duplicate_users(&self) -> u64 {
        let distinct: BTreeSet<_> = self.users.iter().collect();
        self.users.len() as u64 - distinct.len() as u64
    }
}

/// Reads the campaign's rows and unresolved failed events. A database the sink has not created
/// yet reads as empty.
///
/// # Errors
///
/// Not a valid campaign id, or MySQL refused the queries for another reason.
pub async fn stored(pool: &Pool, campaign: &str) -> anyhow::Result<Stored> {
    let id = CampaignId::new(campaign)?;
    let rows = sources::coupon_rows(pool, &id).await?;
    let failed_events = sources::unresolved_failures(pool, &id).await?;
    // The crowds of coupon-load are numeric users.
    let users: Vec<u64> = rows
        .iter()
        .map(|(user, _)| {
            user.as_number()
                .ok_or_else(|| anyhow::anyhow!("a row of user {user}, not a number"))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut seqs: Vec<u64> = rows.iter().map(|(_, seq)| u64::from(*seq)).collect();
    seqs.sort_unstable();
    Ok(Stored {
        rows: users.len() as u64,
        users,
        seqs,
        failed_events,
    })
}

/// Polls [`sources::coupon_count`] until the campaign holds `expected` rows or `limit` passes; returns the rows
/// then ([`stored`]) and how long it took to reach `expected` (`None` if it never did).
///
/// Only the count is polled: reading every row each time would cost the database and this
/// process more than the sink's writes while a large campaign drains.
///
/// # Errors
///
/// As [`stored`].
pub async fn wait_for_rows(
    pool: &Pool,
    campaign: &str,
    expected: u64,
    limit: Duration,
) -> anyhow::Result<(Stored, Option<Duration>)> {
    let id = CampaignId::new(campaign)?;
    let started = Instant::now();
    loop {
        let reached = sources::coupon_count(pool, &id).await? >= expected;
        if reached || started.elapsed() >= limit {
            let took = reached.then(|| started.elapsed());
            return Ok((stored(pool, campaign).await?, took));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One checked property.
#[derive(Debug, Clone)]
pub struct Check {
    /// What must hold.
    pub name: &'static str,
    /// Whether it held (`None`: does not apply to this run).
    pub passed: Option<bool>,
    /// The numbers behind it.
    pub detail: String,
}

/// Every check of a run.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// In the order they are printed.
    pub checks: Vec<Check>,
}

impl Verdict {
    /// True when no check failed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed != Some(false))
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for check in &self.checks {
            let mark = match check.passed {
                Some(true) => "ok  ",
                Some(false) => "FAIL",
                None => "n/a ",
            };
            writeln!(f, "  [{mark}] {:<44} {}", check.name, check.detail)?;
        }
        write!(f, "{}", if self.passed() { "PASS" } else { "FAIL" })
    }
}

/// Compares what the crowd of `users` distinct users was told with what MySQL holds, for a
/// campaign of `quota` coupons.
pub fn verdict(quota: u64, users: u64, tally: &Tally, stored: &Stored) -> Verdict {
    let winners: BTreeSet<u64> = tally.winners.iter().copied().collect();
    let rows: BTreeSet<u64> = stored.users.iter().copied().collect();
    let twice_told = tally.winners.len() - winners.len();
    let lost = winners.difference(&rows).count();
    let unearned = rows.difference(&winners).count();
    let duplicates = stored.duplicate_users();
    let seqs: BTreeSet<u64> = stored.seqs.iter().copied().collect();
    let seqs_ok = seqs.len() == stored.seqs.len() && seqs.iter().all(|s| (1..=quota).contains(s));
    let errors = tally.errors();
    let expected_winners = quota.min(users);
    let mut checks = vec![
        Check {
            name: "success answers <= quota",
            passed: Some(winners.len() as u64 <= quota),
            detail: format!("{} <= {quota}", winners.len()),
        },
        Check {
            name: "no user told success twice",
            passed: Some(twice_told == 0),
            detail: format!("{twice_told} repeated"),
        },
        Check {
            name: "coupons in MySQL = success answers",
            passed: Some(stored.rows == winners.len() as u64),
            detail: format!("{} rows, {} users told success", stored.rows, winners.len()),
        },
        Check {
            name: "0 duplicate users in MySQL",
            passed: Some(duplicates == 0),
            detail: format!("{duplicates} duplicates"),
        },
        Check {
            name: "every success user has a row",
            passed: Some(lost == 0),
            detail: format!("{lost} missing"),
        },
        Check {
            name: "no row without a success answer",
            passed: Some(unearned == 0),
            detail: format!("{unearned} unexpected"),
        },
        Check {
            name: "seqs distinct and within 1..=quota",
            passed: Some(seqs_ok),
            detail: match (stored.seqs.first(), stored.seqs.last()) {
                (Some(lo), Some(hi)) => format!("{} distinct, {lo}..={hi}", seqs.len()),
                _ => "no rows".to_owned(),
            },
        },
        Check {
            name: "no failed events",
            passed: Some(stored.failed_events == 0),
            detail: format!("{} unresolved", stored.failed_events),
        },
        Check {
            name: "no 5xx or transport errors",
            passed: Some(errors == 0),
            detail: format!("{errors} errors"),
        },
    ];
    // Without errors, whoever was turned away must have been turned away for good reason: the
    // first min(quota, users) distinct users all got a coupon.
    checks.push(Check {
        name: "quota filled when users >= quota",
        passed: (errors == 0).then_some(winners.len() as u64 == expected_winners),
        detail: format!("{} of {expected_winners}", winners.len()),
    });
    Verdict { checks }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sale::Answer;

    fn tally(winners: &[u64], errors: u64) -> Tally {
        let mut tally = crate::sale::Tally::empty();
        tally.winners = winners.to_vec();
        tally.answers.insert(
            Answer {
                code: 200,
                status: "success".into(),
            },
            winners.len() as u64,
        );
        if errors > 0 {
            tally.answers.insert(
                Answer {
                    code: 503,
                    status: "unavailable".into(),
                },
                errors,
            );
        }
        tally
    }

    fn stored(rows: &[(u64, u64)]) -> Stored {
        let mut users: Vec<_> = rows.iter().map(|r| r.0).collect();
        let mut seqs: Vec<_> = rows.iter().map(|r| r.1).collect();
        users.sort_unstable();
        seqs.sort_unstable();
        Stored {
            rows: rows.len() as u64,
            users,
            seqs,
            failed_events: 0,
        }
    }

    fn failed(verdict: &Verdict) -> Vec<&str> {
        verdict
            .checks
            .iter()
            .filter(|c| c.passed == Some(false))
            .map(|c| c.name)
            .collect()
    }

    #[test]
    fn a_clean_run_passes() {
        let v = verdict(2, 5, &tally(&[4, 1], 0), &stored(&[(1, 2), (4, 1)]));
        assert!(v.passed(), "{v}");
        assert!(v.to_string().ends_with("PASS"));
    }

    #[test]
    fn a_lost_coupon_fails() {
        let v = verdict(2, 5, &tally(&[4, 1], 0), &stored(&[(1, 2)]));
        assert_eq!(
            failed(&v),
            [
                "coupons in MySQL = success answers",
                "every success user has a row"
            ]
        );
        assert!(v.to_string().ends_with("FAIL"));
    }

    #[test]
    fn a_duplicate_or_unearned_row_fails() {
        let v = verdict(3, 5, &tally(&[4, 1], 0), &stored(&[(1, 2), (4, 1), (4, 3)]));
        assert!(failed(&v).contains(&"0 duplicate users in MySQL"));
        let v = verdict(2, 5, &tally(&[4, 1], 0), &stored(&[(1, 2), (5, 1)]));
        assert!(failed(&v).contains(&"no row without a success answer"));
    }

    #[test]
    fn overselling_fails() {
        let v = verdict(1, 5, &tally(&[4, 1], 0), &stored(&[(1, 2), (4, 1)]));
        assert!(failed(&v).contains(&"success answers <= quota"));
        assert!(failed(&v).contains(&"seqs distinct and within 1..=quota"));
    }

    #[test]
    fn an_unfilled_quota_fails_unless_errors_explain_it() {
        let v = verdict(3, 5, &tally(&[4, 1], 0), &stored(&[(1, 2), (4, 1)]));
        assert_eq!(failed(&v), ["quota filled when users >= quota"]);
        let v = verdict(3, 5, &tally(&[4, 1], 1), &stored(&[(1, 2), (4, 1)]));
        assert_eq!(failed(&v), ["no 5xx or transport errors"]);
    }
}
