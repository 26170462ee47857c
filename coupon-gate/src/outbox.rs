//! Reading a campaign's outbox stream: the hand-over from the gate to a relay.
//!
//! Every admission (and every release) is appended to the campaign's outbox stream by the same
//! script that decides it, so nothing the gate answered can be missing from the outbox. A relay
//! reads entries through the consumer group [`Gate::OUTBOX_GROUP`], delivers them, and only
//! then acknowledges them, which also deletes them. Entries a crashed relay read but never
//! acknowledged stay pending, and any relay takes them over with [`Gate::claim_outbox`] once
//! they have been idle long enough. Delivery is therefore at least once; consumers downstream
//! must be idempotent on (campaign, user, seq).

use std::time::{Duration, SystemTime};

use redis::aio::ConnectionLike;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};

use crate::campaign::from_millis;
use crate::gate::run_script;
use crate::{CampaignId, Error, Gate, UserId};

/// What an outbox entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The user was admitted and holds slot `seq`.
    Admitted,
    /// The user's slot `seq` was given back by [`Gate::release`].
    Released,
}

/// One entry of a campaign's outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The stream entry id, passed back to [`Gate::ack_outbox`] once delivered.
    pub id: String,
    /// Admission or release.
    pub kind: EventKind,
    /// The campaign the entry belongs to.
    pub campaign: CampaignId,
    /// The user admitted or released.
    pub user: UserId,
    /// The slot taken or given back.
    pub seq: u32,
    /// When the script ran, by the Redis server's clock.
    pub at: SystemTime,
}

impl<C> Gate<C>
where
    C: ConnectionLike + Clone + Send + Sync,
{
    /// Reads up to `count` entries of `campaign`'s outbox that no relay has read yet, as
    /// `consumer` (a name unique to this relay process). They stay pending for `consumer`
    /// until acknowledged.
    ///
    /// The read does not block, so it is safe on a shared multiplexed connection; a relay that
    /// finds nothing should wait a little before it reads again.
    ///
    /// # Errors
    ///
    /// A Redis failure, a campaign that was never created (no consumer group), or an entry the
    /// gate did not write.
    pub async fn read_outbox(
        &self,
        campaign: &CampaignId,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<OutboxEntry>, Error> {
        let keys = self.keys(campaign);
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(Self::OUTBOX_GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg(&keys.outbox)
            .arg(">")
            .query_async(&mut self.conn())
            .await?;
        let ids = reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids);
        ids.map(|entry| decode_entry(campaign, &entry)).collect()
    }

    /// Every entry still in `campaign`'s outbox (read or not, not yet acknowledged), oldest
    /// first, without reading them as a relay: for audits and rebuilds.
    ///
    /// # Errors
    ///
    /// As for [`Gate::read_outbox`].
    pub async fn peek_outbox(&self, campaign: &CampaignId) -> Result<Vec<OutboxEntry>, Error> {
        let keys = self.keys(campaign);
        let entries: Vec<StreamId> = redis::cmd("XRANGE")
            .arg(&keys.outbox)
            .arg("-")
            .arg("+")
            .query_async::<redis::streams::StreamRangeReply>(&mut self.conn())
            .await?
            .ids;
        entries
            .iter()
            .map(|entry| decode_entry(campaign, entry))
            .collect()
    }

    /// Takes over up to `count` entries of `campaign`'s outbox that another consumer read but
    /// has not acknowledged for at least `min_idle`, as `consumer`, and returns them.
    ///
    /// Choose `min_idle` well above the time a relay needs to deliver a batch: an entry claimed
    /// from a relay that is merely slow is delivered twice (harmless downstream, but wasted).
    ///
    /// # Errors
    ///
    /// As for [`Gate::read_outbox`].
    pub async fn claim_outbox(
        &self,
        campaign: &CampaignId,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<OutboxEntry>, Error> {
        let keys = self.keys(campaign);
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&keys.outbox)
            .arg(Self::OUTBOX_GROUP)
            .arg(consumer)
            .arg(u64::try_from(min_idle.as_millis()).unwrap_or(u64::MAX))
            .arg("0-0")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.conn())
            .await?;
        reply
            .claimed
            .iter()
            .map(|entry| decode_entry(campaign, entry))
            .collect()
    }

    /// Acknowledges delivered entries of `campaign`'s outbox and deletes them from the stream,
    /// in one atomic step, so that the outbox holds only what is still to be delivered.
    ///
    /// Call it only after the destination confirmed the entries durable. Acknowledging an id
    /// twice, or one that was never read, is harmless: an entry no relay has read is never
    /// deleted.
    ///
    /// # Errors
    ///
    /// A Redis failure; the entries may then still be pending, and are delivered again.
    pub async fn ack_outbox(&self, campaign: &CampaignId, ids: &[String]) -> Result<(), Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let keys = self.keys(campaign);
        let mut call = self.shared.ack.key(&keys.outbox);
        call.arg(Self::OUTBOX_GROUP).arg(ids);
        let _acknowledged: u64 = run_script(&call, &mut self.conn()).await?;
        Ok(())
    }

    /// How many entries of `campaign`'s outbox are still to be delivered: read by no relay
    /// yet, or read and not acknowledged.
    ///
    /// # Errors
    ///
    /// A Redis failure.
    pub async fn outbox_len(&self, campaign: &CampaignId) -> Result<u64, Error> {
        let keys = self.keys(campaign);
        // Acknowledged entries are deleted, so the stream's length is exactly what is left.
        Ok(redis::cmd("XLEN")
            .arg(&keys.outbox)
            .query_async(&mut self.conn())
            .await?)
    }
}

fn decode_entry(campaign: &CampaignId, entry: &StreamId) -> Result<OutboxEntry, Error> {
    let bad =
        |field: &str| Error::protocol(format!("outbox entry {} has no valid {field}", entry.id));
    let kind = match entry.get::<String>("kind").as_deref() {
        Some("admit") => EventKind::Admitted,
        Some("release") => EventKind::Released,
        _ => return Err(bad("kind")),
    };
    let user = entry
        .get::<u64>("user")
        .and_then(|u| UserId::new(u).ok())
        .ok_or_else(|| bad("user"))?;
    let seq = entry
        .get::<u32>("seq")
        .filter(|&s| s > 0)
        .ok_or_else(|| bad("seq"))?;
    let at = entry
        .get::<u64>("at")
        .map(from_millis)
        .ok_or_else(|| bad("at"))?;
    Ok(OutboxEntry {
        id: entry.id.clone(),
        kind,
        campaign: campaign.clone(),
        user,
        seq,
        at,
    })
}
