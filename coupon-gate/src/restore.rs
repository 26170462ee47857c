//! A campaign's whole admission state, read or written at once: who holds which seq. For
//! operators' tools (an audit against the database, a rebuild after Redis lost its data), not
//! for the request path.
//!
//! The user buckets are found with `SCAN`, which sees one server: on a Redis Cluster, point the
//! gate at the node that holds the campaign's slot.

use redis::aio::ConnectionLike;

use crate::keys::Keys;
use crate::{Campaign, CampaignId, Error, Gate, UserId};

/// Pairs written per command when restoring.
const CHUNK: usize = 1000;

impl<C> Gate<C>
where
    C: ConnectionLike + Clone + Send + Sync,
{
    /// Every user holding a seq of `campaign`, sorted by user; empty when it has none or does
    /// not exist.
    ///
    /// # Errors
    ///
    /// A Redis or protocol failure.
    pub async fn holders(&self, campaign: &CampaignId) -> Result<Vec<(UserId, u32)>, Error> {
        let mut conn = self.conn();
        let mut holders = Vec::new();
        for bucket in self.buckets(campaign).await? {
            let pairs: Vec<(u64, u64)> = redis::cmd("HGETALL")
                .arg(&bucket)
                .query_async(&mut conn)
                .await?;
            for (user, seq) in pairs {
                let user = UserId::new(user)
                    .map_err(|_| Error::protocol(format!("invalid user id {user} in {bucket}")))?;
                let seq = u32::try_from(seq)
                    .map_err(|_| Error::protocol(format!("seq {seq} out of range in {bucket}")))?;
                holders.push((user, seq));
            }
        }
        holders.sort_unstable();
        Ok(holders)
    }

    /// Replaces the whole admission state of `campaign.id()` with `campaign`'s definition and
    /// `holders`: the users holding a seq, each with its seq. The highest seq becomes the last
    /// one handed out, and every lower seq nobody holds is free for the next applicants.
    ///
    /// The old state is removed first and the campaign's definition written last, so while it
    /// runs the campaign answers `UnknownCampaign`: stop traffic to it first (see the rebuild
    /// tool). The outbox stream, with whatever it still holds, is kept.
    ///
    /// # Errors
    ///
    /// `holders` names a user twice, a seq twice, or a seq beyond the quota (nothing written);
    /// or a Redis failure midway, after which restoring again is safe.
    pub async fn restore(
        &self,
        campaign: &Campaign,
        holders: &[(UserId, u32)],
    ) -> Result<(), Error> {
        let quota = campaign.quota().get();
        let mut users: Vec<u64> = holders.iter().map(|(u, _)| u.get()).collect();
        let mut seqs: Vec<u32> = holders.iter().map(|(_, s)| *s).collect();
        users.sort_unstable();
        seqs.sort_unstable();
        if let Some(w) = users.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::protocol(format!(
                "restore: user {} given twice",
                w[0]
            )));
        }
        if let Some(w) = seqs.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::protocol(format!(
                "restore: seq {} given twice",
                w[0]
            )));
        }
        if let Some(&seq) = seqs.iter().find(|&&s| s == 0 || s > quota) {
            return Err(Error::protocol(format!(
                "restore: seq {seq} is outside 1..={quota}"
            )));
        }

        let id = campaign.id();
        let keys = self.keys(id);
        let mut conn = self.conn();
        let mut old = self.buckets(id).await?;
        old.push(keys.meta.clone());
        old.push(keys.free.clone());
        redis::cmd("DEL").arg(&old).exec_async(&mut conn).await?;

        let digits = Keys::bucket_digits(quota);
        for chunk in holders.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            for (user, seq) in chunk {
                pipe.cmd("HSET")
                    .arg(keys.user_bucket(digits, user.get()))
                    .arg(user.get())
                    .arg(*seq)
                    .ignore();
            }
            pipe.exec_async(&mut conn).await?;
        }
        let next = seqs.last().copied().unwrap_or(0);
        let free: Vec<u32> = (1..=next)
            .filter(|s| seqs.binary_search(s).is_err())
            .collect();
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
            .arg(Self::OUTBOX_GROUP)
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
            .arg(quota)
            .arg("opens")
            .arg(opens)
            .arg("closes")
            .arg(closes)
            .arg("next")
            .arg(next)
            .arg("issued")
            .arg(holders.len())
            .arg("digits")
            .arg(digits)
            .exec_async(&mut conn)
            .await?;
        redis::cmd("SADD")
            .arg(self.registry_key())
            .arg(id.as_str())
            .exec_async(&mut conn)
            .await?;
        redis::cmd("PUBLISH")
            .arg(self.changes_channel())
            .arg(id.as_str())
            .exec_async(&mut conn)
            .await?;
        Ok(())
    }

    /// The names of the campaign's user buckets that exist.
    async fn buckets(&self, campaign: &CampaignId) -> Result<Vec<String>, Error> {
        let keys = self.keys(campaign);
        let mut conn = self.conn();
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
            let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
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
