//! Audit: the gate's holders in Redis against the coupon rows in MySQL, with what is still on
//! its way (outbox, topic) and what failed, named one by one.

use std::collections::BTreeMap;
use std::fmt;

use coupon_event::Event;
use coupon_gate::{OutboxRecord, UserId};

use crate::rebuild;

/// What the audit compares.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The campaign's issued count in Redis; `None` when Redis does not know the campaign.
    pub issued: Option<u32>,
    /// Holders when the campaign was archived, from its tombstone; `None` when it was not.
    pub archived: Option<u32>,
    /// Users holding a seq in Redis, as (user, seq).
    pub holders: &'a [(UserId, u32)],
    /// Entries still in the outbox.
    pub outbox: &'a [OutboxRecord],
    /// The campaign's events on the topic; `None` when the topic was not read.
    pub topic: Option<&'a [Event]>,
    /// Coupon rows in MySQL, as (user, seq).
    pub rows: &'a [(UserId, u32)],
    /// Unresolved failed events of the campaign.
    pub failed_events: u64,
}

/// One difference between the stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// On its way to MySQL: normal while traffic flows, a problem if it stays.
    InFlight {
        /// The user.
        user: UserId,
        /// The seq.
        seq: u32,
        /// Where it is: `outbox` or `topic`.
        place: &'static str,
        /// An admission (else a release).
        admitted: bool,
    },
    /// Admitted in Redis but neither in MySQL nor on its way there.
    NotPersisted {
        /// The user.
        user: UserId,
        /// The seq.
        seq: u32,
    },
    /// A coupon row whose user holds nothing in Redis, and no release on its way.
    NotAdmitted {
        /// The user.
        user: UserId,
        /// The seq of the row.
        seq: u32,
    },
    /// The user holds another seq in Redis than in MySQL, and nothing on its way explains it.
    SeqMismatch {
        /// The user.
        user: UserId,
        /// Seq in Redis.
        redis: u32,
        /// Seq in MySQL.
        mysql: u32,
    },
    /// The issued count in the campaign's meta differs from the holders counted.
    IssuedCount {
        /// The meta's count.
        meta: u32,
        /// Holders counted.
        holders: usize,
    },
    /// Redis does not know the campaign, but MySQL has its coupons: Redis lost its state.
    UnknownInRedis {
        /// Rows in MySQL.
        rows: usize,
    },
    /// Events of the campaign that the sink could not write.
    FailedEvents(u64),
    /// The campaign was archived with `holders` holders, and MySQL has another number of rows.
    ArchivedCount {
        /// Holders when it was archived.
        holders: u32,
        /// Rows in MySQL.
        rows: usize,
    },
}

impl Finding {
    /// Whether it needs an operator (anything but an admission or release on its way).
    pub fn is_problem(&self) -> bool {
        !matches!(self, Self::InFlight { .. })
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InFlight {
                user,
                seq,
                place,
                admitted,
            } => write!(
                f,
                "in flight      user {user} seq {seq}: {} in the {place}, not yet in MySQL",
                if *admitted { "admission" } else { "release" }
            ),
            Self::NotPersisted { user, seq } => write!(
                f,
                "NOT PERSISTED  user {user} seq {seq}: admitted in Redis, not in MySQL, outbox or topic"
            ),
            Self::NotAdmitted { user, seq } => write!(
                f,
                "NOT ADMITTED   user {user} seq {seq}: a row in MySQL, no holder in Redis"
            ),
            Self::SeqMismatch { user, redis, mysql } => write!(
                f,
                "SEQ MISMATCH   user {user}: seq {redis} in Redis, {mysql} in MySQL"
            ),
            Self::IssuedCount { meta, holders } => write!(
                f,
                "ISSUED COUNT   meta says {meta}, {holders} holders counted"
            ),
            Self::UnknownInRedis { rows } => write!(
                f,
                "UNKNOWN        Redis has no such campaign but MySQL has {rows} coupons: run `coupon-admin rebuild`"
            ),
            Self::FailedEvents(n) => write!(
                f,
                "FAILED EVENTS  {n} unresolved: fix their cause, then `coupon-sink replay`"
            ),
            Self::ArchivedCount { holders, rows } => write!(
                f,
                "ARCHIVED COUNT archived with {holders} holders, MySQL has {rows} coupons"
            ),
        }
    }
}

/// Every finding, in user order, then the campaign-wide ones.
pub fn audit(inputs: &Inputs<'_>) -> Vec<Finding> {
    let redis: BTreeMap<&UserId, u32> = inputs.holders.iter().map(|(u, s)| (u, *s)).collect();
    let mysql: BTreeMap<&UserId, u32> = inputs.rows.iter().map(|(u, s)| (u, *s)).collect();
    // Downstream's view once everything on its way has arrived; seqs shared by two users are
    // a conflict the rebuild would refuse, and show here as mismatches.
    let topic = inputs.topic.unwrap_or(&[]);
    let downstream: BTreeMap<UserId, u32> = match rebuild::plan(inputs.rows, topic, inputs.outbox) {
        Ok(plan) => plan.holders,
        Err(_) => inputs.rows.iter().cloned().collect(),
    };
    let mut findings = Vec::new();
    match inputs.archived {
        // Redis keeps only the count of an archived campaign: MySQL holds the coupons.
        Some(holders) if holders as usize != mysql.len() => {
            findings.push(Finding::ArchivedCount {
                holders,
                rows: mysql.len(),
            });
        }
        Some(_) => {}
        None if inputs.issued.is_none() && !mysql.is_empty() => {
            findings.push(Finding::UnknownInRedis { rows: mysql.len() });
        }
        None => {}
    }
    let judge = Judge {
        downstream: &downstream,
        outbox: inputs.outbox,
        known: inputs.issued.is_some(),
    };
    let users: std::collections::BTreeSet<&UserId> =
        redis.keys().chain(mysql.keys()).copied().collect();
    findings.extend(
        users.into_iter().filter_map(|user| {
            judge.user(user, redis.get(user).copied(), mysql.get(user).copied())
        }),
    );
    if let Some(meta) = inputs.issued
        && meta as usize != redis.len()
    {
        findings.push(Finding::IssuedCount {
            meta,
            holders: redis.len(),
        });
    }
    if inputs.failed_events > 0 {
        findings.push(Finding::FailedEvents(inputs.failed_events));
    }
    findings
}

/// Judges one user's seqs in Redis and MySQL against downstream's view.
struct Judge<'a> {
    /// Holders once the topic and the outbox have arrived in MySQL.
    downstream: &'a BTreeMap<UserId, u32>,
    outbox: &'a [OutboxRecord],
    /// Whether Redis knows the campaign; when not, MySQL's rows are reported once, together.
    known: bool,
}

impl Judge<'_> {
    fn user(&self, user: &UserId, redis: Option<u32>, mysql: Option<u32>) -> Option<Finding> {
        let on_its_way = |seq: u32| self.downstream.get(user) == Some(&seq);
        let user = user.clone();
        Some(match (redis, mysql) {
            (Some(r), Some(m)) if r == m => return None,
            (Some(seq), _) if on_its_way(seq) => Finding::InFlight {
                place: self.place(&user),
                user,
                seq,
                admitted: true,
            },
            (Some(redis), Some(mysql)) => Finding::SeqMismatch { user, redis, mysql },
            (Some(seq), None) => Finding::NotPersisted { user, seq },
            (None, Some(_)) if !self.known => return None,
            (None, Some(seq)) if !on_its_way(seq) => Finding::InFlight {
                place: self.place(&user),
                user,
                seq,
                admitted: false,
            },
            (None, Some(seq)) => Finding::NotAdmitted { user, seq },
            (None, None) => return None,
        })
    }

    /// Where a user's event on its way is: still in the outbox, or on the topic.
    fn place(&self, user: &UserId) -> &'static str {
        if self.outbox.iter().any(|e| e.user == *user) {
            "outbox"
        } else {
            "topic"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coupon_gate::{CampaignId, EventKind, UserId};

    fn user(u: u64) -> UserId {
        UserId::from_number(u).unwrap()
    }

    /// (user, seq) pairs of numeric users.
    fn pairs(list: &[(u64, u32)]) -> Vec<(UserId, u32)> {
        list.iter().map(|&(u, s)| (user(u), s)).collect()
    }

    fn inputs<'a>(
        holders: &'a [(UserId, u32)],
        rows: &'a [(UserId, u32)],
        topic: &'a [Event],
    ) -> Inputs<'a> {
        Inputs {
            issued: Some(holders.len() as u32),
            archived: None,
            holders,
            outbox: &[],
            topic: Some(topic),
            rows,
            failed_events: 0,
        }
    }

    fn admitted(u: u64, seq: u32) -> Event {
        Event {
            kind: EventKind::Admitted,
            campaign: CampaignId::new("c").unwrap(),
            user: user(u),
            seq,
            at: time::macros::datetime!(2026-11-24 00:00 UTC),
        }
    }

    #[test]
    fn agreeing_stores_have_no_findings() {
        assert!(
            audit(&inputs(
                &pairs(&[(1, 1), (2, 2)]),
                &pairs(&[(1, 1), (2, 2)]),
                &[]
            ))
            .is_empty()
        );
    }

    #[test]
    fn an_admission_on_the_topic_is_in_flight_and_one_nowhere_is_not_persisted() {
        let topic = [admitted(2, 2)];
        let found = audit(&inputs(
            &pairs(&[(1, 1), (2, 2), (3, 3)]),
            &pairs(&[(1, 1)]),
            &topic,
        ));
        assert_eq!(
            found,
            [
                Finding::InFlight {
                    user: user(2),
                    seq: 2,
                    place: "topic",
                    admitted: true
                },
                Finding::NotPersisted {
                    user: user(3),
                    seq: 3
                },
            ]
        );
        assert!(!found[0].is_problem() && found[1].is_problem());
    }

    #[test]
    fn rows_without_holders_mismatches_counts_and_failures_are_problems() {
        let (holders, rows) = (pairs(&[(1, 2)]), pairs(&[(1, 1), (5, 5)]));
        let mut i = inputs(&holders, &rows, &[]);
        i.issued = Some(3);
        i.failed_events = 2;
        assert_eq!(
            audit(&i),
            [
                Finding::SeqMismatch {
                    user: user(1),
                    redis: 2,
                    mysql: 1
                },
                Finding::NotAdmitted {
                    user: user(5),
                    seq: 5
                },
                Finding::IssuedCount {
                    meta: 3,
                    holders: 1
                },
                Finding::FailedEvents(2),
            ]
        );
        let rows = pairs(&[(1, 1)]);
        let mut lost = inputs(&[], &rows, &[]);
        lost.issued = None;
        assert_eq!(audit(&lost), [Finding::UnknownInRedis { rows: 1 }]);
        let mut archived = inputs(&[], &rows, &[]);
        archived.issued = None;
        archived.archived = Some(1);
        assert!(
            audit(&archived).is_empty(),
            "MySQL holds an archived campaign's coupons"
        );
        archived.archived = Some(2);
        assert_eq!(
            audit(&archived),
            [Finding::ArchivedCount {
                holders: 2,
                rows: 1
            }]
        );
    }
}
