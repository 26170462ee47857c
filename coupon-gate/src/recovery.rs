//! A campaign's whole admission state, read or written at once: who holds which seq. For
//! operators' tools (an audit against the database, a rebuild after Redis lost its data), not
//! for the request path.
//!
//! The user buckets are found with `SCAN`, sent through a script keyed on the campaign so that
//! on a Redis Cluster it pages through the master that holds the campaign's slot.

use std::fmt;
use std::sync::Arc;

use redis::aio::ConnectionLike;

use crate::error::to_seq;
use crate::keys::Keys;
use crate::script;
use crate::shared::Shared;
use crate::{Campaign, CampaignId, Error, OUTBOX_GROUP, UserId};

/// Pairs written per command when restoring.
const CHUNK: usize = 1000;

/// A campaign's definition with the users holding its seqs, checked when built: no user holds
/// two seqs, no seq has two holders, and every seq lies within the quota. [`Recovery::restore`]
/// writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CampaignState {
    campaign: Campaign,
    /// (user, seq), sorted by user.
    holders: Vec<(UserId, u32)>,
}

impl CampaignState {
    /// Checks `holders` against `campaign`'s quota.
    ///
    /// # Errors
    ///
    /// [`InvalidState`] naming the first user given twice, seq given twice, or seq outside
    /// `1..=quota`.
    pub fn new(
        campaign: Campaign,
        holders: impl IntoIterator<Item = (UserId, u32)>,
    ) -> Result<Self, InvalidState> {
        let quota = campaign.quota().get();
        let mut holders: Vec<(UserId, u32)> = holders.into_iter().collect();
        holders.sort_unstable();
        if let Some(w) = holders.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(InvalidState::UserTwice(w[0].0.clone()));
        }
        let mut seqs: Vec<u32> = holders.iter().map(|&(_, seq)| seq).collect();
        seqs.sort_unstable();
        if let Some(w) = seqs.windows(2).find(|w| w[0] == w[1]) {
            return Err(InvalidState::SeqTwice(w[0]));
        }
        if let Some(&seq) = seqs.iter().find(|&&s| s == 0 || s > quota) {
            return Err(InvalidState::SeqOutsideQuota { seq, quota });
        }
        Ok(Self { campaign, holders })
    }

    /// The campaign's definition.
    pub fn campaign(&self) -> &Campaign {
        &self.campaign
    }

    /// Who holds which seq, sorted by user.
    pub fn holders(&self) -> &[(UserId, u32)] {
        &self.holders
    }

    /// What the gate's keys must say for this state: the highest seq handed out, and every
    /// lower seq nobody holds (free for the next applicants), ascending.
    fn seqs(&self) -> (u32, Vec<u32>) {
        let mut held: Vec<u32> = self.holders.iter().map(|&(_, seq)| seq).collect();
        held.sort_unstable();
        let next = held.last().copied().unwrap_or(0);
        let free = (1..=next)
            .filter(|s| held.binary_search(s).is_err())
            .collect();
        (next, free)
    }
}

/// Why a [`CampaignState`] was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidState {
    /// This user is given two seqs.
    UserTwice(UserId),
    /// This seq is given to two users.
    SeqTwice(u32),
    /// This seq lies outside `1..=quota`.
    SeqOutsideQuota {
        /// The seq.
        seq: u32,
        /// The campaign's quota.
        quota: u32,
    },
}

impl fmt::Display for InvalidState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UserTwice(user) => write!(f, "user {user} is given two seqs"),
            Self::SeqTwice(seq) => write!(f, "seq {seq} is given to two users"),
            Self::SeqOutsideQuota { seq, quota } => {
                write!(f, "seq {seq} is outside 1..={quota}")
            }
        }
    }
}

impl std::error::Error for InvalidState {}

/// Reads and restores of campaigns' whole admission state. Made by
/// [`Gate::recovery`](crate::Gate::recovery); cheap to clone.
#[derive(Clone)]
pub struct Recovery<C> {
    conn: C,
    shared: Arc<Shared>,
}

impl<C> Recovery<C>
where
    C: ConnectionLike + Clone + Send + Sync,
{
    pub(crate) fn new(conn: C, shared: Arc<Shared>) -> Self {
        Self { conn, shared }
    }

    /// Every user holding a seq of `campaign`, sorted by user; empty when it has none or does
    /// not exist.
    ///
    /// # Errors
    ///
    /// A Redis or protocol failure.
    pub async fn holders(&self, campaign: &CampaignId) -> Result<Vec<(UserId, u32)>, Error> {
        let mut conn = self.conn.clone();
        let mut holders = Vec::new();
        for bucket in self.buckets(campaign).await? {
            let pairs: Vec<(String, u64)> = redis::cmd("HGETALL")
                .arg(&bucket)
                .query_async(&mut conn)
                .await?;
            for (user, seq) in pairs {
                let user = UserId::new(user.as_str()).map_err(|_| {
                    Error::protocol(format!("invalid user id {user:?} in {bucket}"))
                })?;
                holders.push((user, to_seq(seq)?));
            }
        }
        holders.sort_unstable();
        Ok(holders)
    }

    /// Replaces the whole admission state of the campaign with `state`: its definition, and
    /// who holds which seq. The highest seq held becomes the last one handed out, and every
    /// lower seq nobody holds is free for the next applicants.
    ///
    /// The old state is removed first and the campaign's definition written last, so while it
    /// runs the campaign answers `UnknownCampaign`: stop traffic to it first (see the rebuild
    /// tool). An archived campaign's tombstone is part of the old state: it is live again. The
    /// outbox stream, with whatever it still holds, is kept; its events then leave
    /// [`Outbox::backlog`](crate::Outbox::backlog)'s count, which reads low until it drains.
    ///
    /// # Errors
    ///
    /// A Redis failure midway, after which restoring again is safe.
    pub async fn restore(&self, state: &CampaignState) -> Result<(), Error> {
        let campaign = state.campaign();
        let id = campaign.id();
        let keys = self.shared.keys(id);
        let (next, free) = state.seqs();
        let digits = Keys::bucket_digits(campaign.quota().get());
        let mut conn = self.conn.clone();

        let mut old = self.buckets(id).await?;
        old.push(keys.meta.clone());
        old.push(keys.free.clone());
        redis::cmd("DEL").arg(&old).exec_async(&mut conn).await?;

        for chunk in state.holders().chunks(CHUNK) {
            let mut pipe = redis::pipe();
            for (user, seq) in chunk {
                pipe.cmd("HSET")
                    .arg(keys.user_bucket(digits, user))
                    .arg(user.as_str())
                    .arg(*seq)
                    .ignore();
            }
            pipe.exec_async(&mut conn).await?;
        }
        for chunk in free.chunks(CHUNK) {
            let mut zadd = redis::cmd("ZADD");
            zadd.arg(&keys.free);
            for seq in chunk {
                zadd.arg(*seq).arg(*seq);
            }
            zadd.exec_async(&mut conn).await?;
        }
        // The outbox's group, if the stream was lost with the rest; entries still there stay.
        let group: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&keys.outbox)
            .arg(OUTBOX_GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .exec_async(&mut conn)
            .await;
        if let Err(err) = group
            && err.code() != Some("BUSYGROUP")
        {
            return Err(err.into());
        }
        let (opens, closes) = campaign.window_millis();
        redis::cmd("HSET")
            .arg(&keys.meta)
            .arg("quota")
            .arg(campaign.quota().get())
            .arg("opens")
            .arg(opens)
            .arg("closes")
            .arg(closes)
            .arg("next")
            .arg(next)
            .arg("issued")
            .arg(state.holders().len())
            .arg("digits")
            .arg(digits)
            .exec_async(&mut conn)
            .await?;
        redis::cmd("SADD")
            .arg(Keys::registry(&self.shared.prefix))
            .arg(id.as_str())
            .exec_async(&mut conn)
            .await?;
        // A campaign restored from its archive is live again.
        redis::cmd("SREM")
            .arg(Keys::archived(&self.shared.prefix))
            .arg(id.as_str())
            .exec_async(&mut conn)
            .await?;
        redis::cmd("PUBLISH")
            .arg(Keys::changes(&self.shared.prefix))
            .arg(id.as_str())
            .exec_async(&mut conn)
            .await?;
        Ok(())
    }

    /// The names of the campaign's user buckets that exist.
    pub(crate) async fn buckets(&self, campaign: &CampaignId) -> Result<Vec<String>, Error> {
        let keys = self.shared.keys(campaign);
        let mut conn = self.conn.clone();
        // The prefix is free text: its glob characters must match themselves.
        let mut pattern = String::with_capacity(keys.users.len() + 2);
        for c in keys.users.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push_str(":*");
        let mut cursor: u64 = 0;
        let mut buckets = Vec::new();
        loop {
            let mut call = self.shared.scripts.scan.key(&keys.meta);
            call.arg(cursor).arg(&pattern).arg(1000);
            let (next, page): (u64, Vec<String>) = script::run(&call, &mut conn).await?;
            buckets.extend(page);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        buckets.sort_unstable();
        buckets.dedup();
        Ok(buckets)
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    fn state(quota: u32, holders: &[(&str, u32)]) -> Result<CampaignState, InvalidState> {
        let campaign = Campaign::new(
            CampaignId::new("c").unwrap(),
            NonZeroU32::new(quota).unwrap(),
        );
        CampaignState::new(
            campaign,
            holders.iter().map(|&(u, s)| (UserId::new(u).unwrap(), s)),
        )
    }

    #[test]
    fn a_state_gives_each_seq_once_within_the_quota() {
        let user = |u: &str| UserId::new(u).unwrap();
        assert_eq!(
            state(10, &[("1", 1), ("1", 2)]),
            Err(InvalidState::UserTwice(user("1")))
        );
        assert_eq!(
            state(10, &[("1", 3), ("b", 3)]),
            Err(InvalidState::SeqTwice(3))
        );
        assert_eq!(
            state(10, &[("1", 11)]),
            Err(InvalidState::SeqOutsideQuota { seq: 11, quota: 10 })
        );
        assert_eq!(
            state(10, &[("1", 0)]),
            Err(InvalidState::SeqOutsideQuota { seq: 0, quota: 10 })
        );
        let ok = state(10, &[("9", 5), ("3", 2)]).unwrap();
        assert_eq!(ok.holders(), [(user("3"), 2), (user("9"), 5)]);
        assert_eq!(ok.seqs(), (5, vec![1, 3, 4]));
        assert_eq!(state(10, &[]).unwrap().seqs(), (0, vec![]));
    }
}
