//! Rebuild: the gate state the other stores imply, for a campaign whose Redis state was lost.
//!
//! The holders are worked out from what outlived Redis: the coupon rows in MySQL, then every
//! event on the topic replayed over them in order (an admission adds its user, a release
//! removes exactly its coupon), then whatever the outbox still holds. MySQL covers events the
//! topic no longer retains; the topic covers admissions the sink has not written yet. The
//! result goes back into Redis with [`coupon_gate::Recovery::restore`].

use std::collections::BTreeMap;
use std::fmt;

use coupon_event::Event;
use coupon_gate::{EventKind, OutboxRecord, UserId};

/// The holders implied by the sources, and how each source contributed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// User -> seq.
    pub holders: BTreeMap<UserId, u32>,
    /// Rows read from MySQL.
    pub rows: usize,
    /// Events replayed from the topic.
    pub topic_events: usize,
    /// Entries replayed from the outbox.
    pub outbox_entries: usize,
    /// Holders not in MySQL: admissions on their way there.
    pub not_yet_in_mysql: usize,
    /// MySQL rows dropped because a later release removed them.
    pub released: usize,
}

/// Why the sources cannot be turned into a gate state.
#[derive(Debug, PartialEq, Eq)]
pub enum Conflict {
    /// Two users would hold the same seq.
    SharedSeq {
        /// The seq.
        seq: u32,
        /// Its holders.
        users: (UserId, UserId),
    },
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SharedSeq { seq, users } => write!(
                f,
                "users {} and {} would both hold seq {seq}; fix the rows in MySQL first",
                users.0, users.1
            ),
        }
    }
}

/// Works out the holders: MySQL rows, then topic events, then outbox entries, each in order.
///
/// # Errors
///
/// The result would give one seq to two users.
pub fn plan(
    rows: &[(UserId, u32)],
    topic: &[Event],
    outbox: &[OutboxRecord],
) -> Result<Plan, Conflict> {
    let mut plan = Plan {
        rows: rows.len(),
        topic_events: topic.len(),
        outbox_entries: outbox.len(),
        ..Plan::default()
    };
    plan.holders.extend(rows.iter().cloned());
    let mut apply = |admitted: bool, user: &UserId, seq: u32| {
        if admitted {
            plan.holders.insert(user.clone(), seq);
        } else if plan.holders.get(user) == Some(&seq) {
            plan.holders.remove(user);
        }
    };
    for event in topic {
        apply(event.kind == EventKind::Admitted, &event.user, event.seq);
    }
    for record in outbox {
        apply(record.kind == EventKind::Admitted, &record.user, record.seq);
    }
    let in_mysql: BTreeMap<&UserId, u32> = rows.iter().map(|(u, s)| (u, *s)).collect();
    plan.not_yet_in_mysql = plan
        .holders
        .iter()
        .filter(|(u, s)| in_mysql.get(u) != Some(*s))
        .count();
    plan.released = in_mysql
        .iter()
        .filter(|(u, s)| plan.holders.get(**u) != Some(s))
        .count();
    let mut by_seq: BTreeMap<u32, &UserId> = BTreeMap::new();
    for (user, &seq) in &plan.holders {
        if let Some(&other) = by_seq.get(&seq) {
            return Err(Conflict::SharedSeq {
                seq,
                users: (other.clone(), user.clone()),
            });
        }
        by_seq.insert(seq, user);
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use coupon_gate::{CampaignId, UserId};

    fn user(u: u64) -> UserId {
        UserId::from_number(u).unwrap()
    }

    /// (user, seq) pairs of numeric users.
    fn pairs(list: &[(u64, u32)]) -> Vec<(UserId, u32)> {
        list.iter().map(|&(u, s)| (user(u), s)).collect()
    }

    fn event(kind: EventKind, u: u64, seq: u32) -> Event {
        Event {
            kind,
            campaign: CampaignId::new("c").unwrap(),
            user: user(u),
            seq,
            at: time::macros::datetime!(2026-11-24 00:00 UTC),
        }
    }

    fn admitted(user: u64, seq: u32) -> Event {
        event(EventKind::Admitted, user, seq)
    }

    fn released(user: u64, seq: u32) -> Event {
        event(EventKind::Released, user, seq)
    }

    #[test]
    fn rows_then_topic_then_outbox() {
        let rows = pairs(&[(1, 1), (2, 2), (3, 3)]);
        let topic = [
            admitted(1, 1), // already a row
            released(2, 2),
            admitted(4, 2), // the released seq, reused
            admitted(5, 4), // not written by the sink yet
        ];
        let plan = plan(&rows, &topic, &[]).unwrap();
        assert_eq!(
            plan.holders,
            pairs(&[(1, 1), (3, 3), (4, 2), (5, 4)])
                .into_iter()
                .collect()
        );
        assert_eq!((plan.not_yet_in_mysql, plan.released), (2, 1));
    }

    #[test]
    fn a_release_removes_only_its_own_coupon() {
        let plan = plan(&pairs(&[(1, 5)]), &[released(1, 4)], &[]).unwrap();
        assert_eq!(plan.holders, pairs(&[(1, 5)]).into_iter().collect());
    }

    #[test]
    fn one_seq_for_two_users_is_refused() {
        let err = plan(&pairs(&[(1, 1)]), &[admitted(2, 1)], &[]).unwrap_err();
        assert_eq!(
            err,
            Conflict::SharedSeq {
                seq: 1,
                users: (user(1), user(2))
            }
        );
    }
}
