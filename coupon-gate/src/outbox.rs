//! The outbox protocol: the hand-over from the gate to a relay.
//!
//! Every admission (and every release) is appended to the campaign's outbox stream by the same
//! script that decides it, so nothing the gate answered can be missing from the outbox. A relay
//! reads entries through the consumer group [`OUTBOX_GROUP`](crate::OUTBOX_GROUP), delivers
//! them, and only then acknowledges them, which also deletes them. Entries a crashed relay read
//! but never acknowledged stay pending, and any relay takes them over with
//! [`Outbox::claim`] once they have been idle long enough; a relay that is alive keeps what it
//! delivers with [`Outbox::hold`], however slow the destination. Delivery is therefore at least
//! once; consumers downstream must be idempotent on (campaign, user, seq).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use redis::Value;
use redis::aio::ConnectionLike;

use crate::campaign::from_millis;
use crate::keys::Keys;
use crate::shared::Shared;
use crate::{CampaignId, Error, EventKind, OUTBOX_GROUP, UserId, script};

mod destination;

pub use destination::Destination;

/// Most records in one outbox entry that the draw script writes, and the batcher's default
/// batch ([`BatchConfig::max_batch`](crate::BatchConfig::max_batch)), so that an entry a relay
/// reads holds at most this many records unless a service chose larger batches.
pub(crate) const ENTRY_RECORDS: usize = 128;

/// One admission or release, as read from a campaign's outbox.
///
/// A script call writes one stream entry for all the admissions it decided (a batch of
/// [`Gate::apply_many`](crate::Gate::apply_many) costs Redis one `XADD`, not one per user), so
/// several records can share a stream entry and its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRecord {
    /// The id of the stream entry that holds the record, passed back to [`Outbox::ack`] once
    /// every record of that entry is delivered.
    pub entry: String,
    /// Admission or release.
    pub kind: EventKind,
    /// The campaign the record belongs to.
    pub campaign: CampaignId,
    /// The user admitted or released.
    pub user: UserId,
    /// The slot taken or given back.
    pub seq: u32,
    /// When the script ran, by the Redis server's clock.
    pub at: SystemTime,
}

/// The outbox streams of a gate's campaigns, as a relay sees them. Made by
/// [`Gate::outbox`](crate::Gate::outbox); cheap to clone.
#[derive(Clone)]
pub struct Outbox<C> {
    conn: C,
    shared: Arc<Shared>,
}

impl<C> Outbox<C>
where
    C: ConnectionLike + Clone + Send + Sync,
{
    pub(crate) fn new(conn: C, shared: Arc<Shared>) -> Self {
        Self { conn, shared }
    }

    fn keys(&self, campaign: &CampaignId) -> Keys {
        self.shared.keys(campaign)
    }

    /// Reads the records of up to `count` stream entries of `campaign`'s outbox that no relay
    /// has read yet, as `consumer` (a name unique to this relay process). The entries stay
    /// pending for `consumer` until acknowledged. An entry holds the records of one script
    /// call, so there can be more records than `count`; those of one entry come together, in
    /// the order decided.
    ///
    /// The read does not block, so it is safe on a shared multiplexed connection; a relay that
    /// finds nothing should wait a little before it reads again.
    ///
    /// # Errors
    ///
    /// A Redis failure, a campaign that was never created (no consumer group), or an entry the
    /// gate did not write. An archived campaign has nothing to read.
    pub async fn read(
        &self,
        campaign: &CampaignId,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<OutboxRecord>, Error> {
        let keys = self.keys(campaign);
        let mut conn = self.conn.clone();
        let reply: Result<Value, redis::RedisError> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(OUTBOX_GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg(&keys.outbox)
            .arg(">")
            .query_async(&mut conn)
            .await;
        let reply = match reply {
            Err(err) if err.code() == Some("NOGROUP") => {
                // The stream is gone with its group. An archived campaign's was empty: a relay
                // that still had it on its list reads nothing. Any other is refused.
                let archived: bool = redis::cmd("HEXISTS")
                    .arg(&keys.meta)
                    .arg("archived")
                    .query_async(&mut conn)
                    .await?;
                if archived {
                    return Ok(Vec::new());
                }
                return Err(err.into());
            }
            reply => reply?,
        };
        let records = decode_read_reply(campaign, &reply)?;
        if !records.is_empty() {
            // The read is itself a write (the entries become pending), later than theirs.
            self.shared.confirm_replicated(&mut conn, campaign).await?;
        }
        Ok(records)
    }

    /// Every record still in `campaign`'s outbox (read or not, not yet acknowledged), oldest
    /// first, without reading them as a relay: for audits and rebuilds.
    ///
    /// # Errors
    ///
    /// As for [`Outbox::read`].
    pub async fn peek(&self, campaign: &CampaignId) -> Result<Vec<OutboxRecord>, Error> {
        self.range(campaign, None).await
    }

    /// The records of the first `count` entries of `campaign`'s outbox (all of them for
    /// `None`), oldest first.
    async fn range(
        &self,
        campaign: &CampaignId,
        count: Option<usize>,
    ) -> Result<Vec<OutboxRecord>, Error> {
        let keys = self.keys(campaign);
        let mut xrange = redis::cmd("XRANGE");
        xrange.arg(&keys.outbox).arg("-").arg("+");
        if let Some(count) = count {
            xrange.arg("COUNT").arg(count);
        }
        let entries: Value = xrange.query_async(&mut self.conn.clone()).await?;
        decode_entries(campaign, &entries)
    }

    /// Takes over up to `count` stream entries of `campaign`'s outbox that another consumer
    /// read but has not acknowledged for at least `min_idle`, as `consumer`, and returns their
    /// records.
    ///
    /// Choose `min_idle` well above the time a relay needs to deliver a batch, or have relays
    /// [`Outbox::hold`] what they deliver: an entry claimed from a relay that is merely slow is
    /// delivered twice (harmless downstream, but wasted).
    ///
    /// # Errors
    ///
    /// As for [`Outbox::read`].
    pub async fn claim(
        &self,
        campaign: &CampaignId,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<OutboxRecord>, Error> {
        let keys = self.keys(campaign);
        let mut conn = self.conn.clone();
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(&keys.outbox)
            .arg(OUTBOX_GROUP)
            .arg(consumer)
            .arg(u64::try_from(min_idle.as_millis()).unwrap_or(u64::MAX))
            .arg("0-0")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        // [next cursor, claimed entries, ids deleted meanwhile (Redis 7)]
        let records = match &reply {
            Value::Array(parts) if parts.len() >= 2 => decode_entries(campaign, &parts[1])?,
            _ => return Err(Error::protocol("unexpected XAUTOCLAIM reply")),
        };
        if !records.is_empty() {
            self.shared.confirm_replicated(&mut conn, campaign).await?;
        }
        Ok(records)
    }

    /// Tells the outbox that `consumer` still works on the records of `held` (as
    /// [`Outbox::read`] or [`Outbox::claim`] gave them): their entries' idle time starts again
    /// from zero, so [`Outbox::claim`] does not hand them to another relay while this one
    /// delivers them. A relay whose delivery may outlast the others' `min_idle` calls this more
    /// often than that.
    ///
    /// Only entries still pending are touched; one acknowledged meanwhile is left alone. An
    /// entry that another consumer took over (this one was silent for longer than `min_idle`)
    /// comes back to `consumer`: both deliver it, which the idempotent consumers downstream
    /// absorb.
    ///
    /// # Errors
    ///
    /// A Redis failure.
    pub async fn hold<'a>(
        &self,
        campaign: &CampaignId,
        consumer: &str,
        held: impl IntoIterator<Item = &'a OutboxRecord>,
    ) -> Result<(), Error> {
        let entries = entries(held);
        if entries.is_empty() {
            return Ok(());
        }
        let keys = self.keys(campaign);
        let mut xclaim = redis::cmd("XCLAIM");
        xclaim
            .arg(&keys.outbox)
            .arg(OUTBOX_GROUP)
            .arg(consumer)
            .arg(0);
        for (entry, _) in entries {
            xclaim.arg(entry);
        }
        // JUSTID: the delivery count stays as it is, and no entry is sent back.
        let _ids: Value = xclaim
            .arg("JUSTID")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Acknowledges the stream entries of `delivered` (by [`OutboxRecord::entry`]) in
    /// `campaign`'s outbox and deletes them from the stream, in one atomic step, so that the
    /// outbox holds only what is still to be delivered; their events leave
    /// [`Outbox::backlog`].
    ///
    /// Pass every record of each entry, as [`Outbox::read`] or [`Outbox::claim`] gave them (an
    /// entry's records come one after another), and call it only after the destination
    /// confirmed them all durable. Acknowledging an entry twice, or one that was never read,
    /// is harmless; an entry no relay has read is never deleted.
    ///
    /// # Errors
    ///
    /// A Redis failure; the entries may then still be pending, and are delivered again.
    pub async fn ack<'a>(
        &self,
        campaign: &CampaignId,
        delivered: impl IntoIterator<Item = &'a OutboxRecord>,
    ) -> Result<(), Error> {
        let entries = entries(delivered);
        if entries.is_empty() {
            return Ok(());
        }
        let keys = self.keys(campaign);
        let mut call = self.shared.scripts.ack.key(&keys.outbox);
        call.key(&keys.meta).arg(OUTBOX_GROUP);
        for (entry, events) in entries {
            call.arg(entry).arg(events);
        }
        let _acknowledged: u64 = script::run(&call, &mut self.conn.clone()).await?;
        Ok(())
    }

    /// How many events (admissions and releases) of `campaign` are in its outbox still to be
    /// delivered, read by a relay or not: counted by the scripts that append them and by
    /// [`Outbox::ack`], so reading it costs one field. Zero for a campaign that does not exist.
    ///
    /// A campaign whose outbox held entries when this count was introduced reads low (never
    /// below zero) until the outbox has once drained.
    ///
    /// # Errors
    ///
    /// A Redis failure.
    pub async fn backlog(&self, campaign: &CampaignId) -> Result<u64, Error> {
        let keys = self.keys(campaign);
        let count: Option<i64> = redis::cmd("HGET")
            .arg(&keys.meta)
            .arg("outbox")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(count.map_or(0, |count| u64::try_from(count).unwrap_or(0)))
    }

    /// When the oldest event still in `campaign`'s outbox was made (read by a relay or not):
    /// how long an admission already told success has waited for the broker. `None` when the
    /// outbox is empty.
    ///
    /// # Errors
    ///
    /// A Redis failure, or an entry that is no outbox entry.
    pub async fn oldest(&self, campaign: &CampaignId) -> Result<Option<SystemTime>, Error> {
        Ok(self
            .range(campaign, Some(1))
            .await?
            .iter()
            .map(|record| record.at)
            .min())
    }

    /// How many stream entries of `campaign`'s outbox are still to be delivered: read by no
    /// relay yet, or read and not acknowledged. Zero means every record was delivered; any
    /// other figure counts script calls, not records.
    ///
    /// # Errors
    ///
    /// A Redis failure.
    pub async fn len(&self, campaign: &CampaignId) -> Result<u64, Error> {
        let keys = self.keys(campaign);
        // Acknowledged entries are deleted, so the stream's length is exactly what is left.
        Ok(redis::cmd("XLEN")
            .arg(&keys.outbox)
            .query_async(&mut self.conn.clone())
            .await?)
    }
}

/// The stream entries `records` belong to, each with how many of them it holds, in order: as
/// [`Outbox::read`] and [`Outbox::claim`] give them, an entry's records come one after another.
fn entries<'a>(records: impl IntoIterator<Item = &'a OutboxRecord>) -> Vec<(&'a str, u64)> {
    let mut entries: Vec<(&str, u64)> = Vec::new();
    for record in records {
        match entries.last_mut() {
            Some((entry, events)) if *entry == record.entry => *events += 1,
            _ => entries.push((record.entry.as_str(), 1)),
        }
    }
    entries
}

/// The records of a stream reply (`XREADGROUP`, `XRANGE`, the entry list of `XAUTOCLAIM`),
/// decoded straight from the reply: a relay reads hundreds of entries per round, and going
/// through `redis::streams` would build a map of owned fields for each one first.
fn decode_entries(campaign: &CampaignId, reply: &Value) -> Result<Vec<OutboxRecord>, Error> {
    let mut records = Vec::new();
    match reply {
        Value::Nil => {}
        Value::Array(entries) => {
            // XAUTOCLAIM on older servers lists an entry deleted meanwhile as nil.
            for entry in entries.iter().filter(|entry| !matches!(entry, Value::Nil)) {
                decode_entry(campaign, entry, &mut records)?;
            }
        }
        other => {
            return Err(Error::protocol(format!(
                "unexpected stream reply {other:?}"
            )));
        }
    }
    Ok(records)
}

/// The records of an `XREADGROUP` reply for one stream: `[[key, entries]]`, or a map of key
/// to entries over RESP3, or nil when there is nothing new.
fn decode_read_reply(campaign: &CampaignId, reply: &Value) -> Result<Vec<OutboxRecord>, Error> {
    match reply {
        Value::Nil => Ok(Vec::new()),
        Value::Array(streams) => match streams.as_slice() {
            [] => Ok(Vec::new()),
            [Value::Array(stream)] if stream.len() == 2 => decode_entries(campaign, &stream[1]),
            _ => Err(Error::protocol("unexpected XREADGROUP reply")),
        },
        Value::Map(streams) => match streams.as_slice() {
            [] => Ok(Vec::new()),
            [(_, entries)] => decode_entries(campaign, entries),
            _ => Err(Error::protocol("unexpected XREADGROUP reply")),
        },
        other => Err(Error::protocol(format!(
            "unexpected XREADGROUP reply {other:?}"
        ))),
    }
}

/// Appends the records of one stream entry to `records`.
///
/// The scripts write `[id, [kind, "<at ms> <user>:<seq> <user>:<seq> ..."]]`, the kind being
/// `admit` or `release`: one entry per script call, its admissions in the order decided.
fn decode_entry(
    campaign: &CampaignId,
    entry: &Value,
    records: &mut Vec<OutboxRecord>,
) -> Result<(), Error> {
    let (id, fields) = match entry {
        Value::Array(parts) => match parts.as_slice() {
            [Value::BulkString(id), Value::Array(fields)] => (text(id), fields.as_slice()),
            _ => return Err(Error::protocol("unexpected stream entry")),
        },
        _ => return Err(Error::protocol("unexpected stream entry")),
    };
    let id = id.ok_or_else(|| Error::protocol("stream entry id is not text"))?;
    let bad = |what: &str| Error::protocol(format!("outbox entry {id} has no valid {what}"));
    let [Value::BulkString(kind), Value::BulkString(body)] = fields else {
        return Err(bad("fields"));
    };
    let kind = match text(kind) {
        Some("admit") => EventKind::Admitted,
        Some("release") => EventKind::Released,
        _ => return Err(bad("kind")),
    };
    let mut parts = text(body).ok_or_else(|| bad("body"))?.split(' ');
    let at = parts
        .next()
        .and_then(|at| at.parse::<u64>().ok())
        .map(from_millis)
        .ok_or_else(|| bad("at"))?;
    let before = records.len();
    for part in parts {
        // A user id may hold ':' itself; the seq is what follows the last one.
        let (user, seq) = part.rsplit_once(':').ok_or_else(|| bad("user:seq"))?;
        records.push(OutboxRecord {
            entry: id.to_owned(),
            kind,
            campaign: campaign.clone(),
            user: UserId::new(user).map_err(|_| bad("user"))?,
            seq: seq
                .parse()
                .ok()
                .filter(|&s: &u32| s > 0)
                .ok_or_else(|| bad("seq"))?,
            at,
        });
    }
    if records.len() == before {
        return Err(bad("user:seq"));
    }
    Ok(())
}

fn text(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn entry(id: &str, fields: &[&str]) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(fields.iter().map(|f| bulk(f)).collect()),
        ])
    }

    fn decode(entry: &Value) -> Result<Vec<(EventKind, String, u32, SystemTime)>, Error> {
        let campaign = CampaignId::new("spring-sale").unwrap();
        let mut records = Vec::new();
        decode_entry(&campaign, entry, &mut records)?;
        Ok(records
            .into_iter()
            .inspect(|r| assert_eq!((r.entry.as_str(), &r.campaign), ("7-1", &campaign)))
            .map(|r| (r.kind, r.user.as_str().to_owned(), r.seq, r.at))
            .collect())
    }

    #[test]
    fn one_entry_holds_the_admissions_of_one_call_in_order() {
        let at = from_millis(1_764_000_000_123);
        let records = decode(&entry(
            "7-1",
            &["admit", "1764000000123 42:1 auth0|7:2 urn:user:9:3"],
        ))
        .unwrap();
        let admitted = |user: &str, seq| (EventKind::Admitted, user.to_owned(), seq, at);
        assert_eq!(
            records,
            [
                admitted("42", 1),
                admitted("auth0|7", 2),
                admitted("urn:user:9", 3)
            ]
        );
        let released = decode(&entry("7-1", &["release", "1764000000123 42:1"])).unwrap();
        assert_eq!(released, [(EventKind::Released, "42".to_owned(), 1, at)]);
    }

    #[test]
    fn entries_the_gate_did_not_write_are_refused() {
        for fields in [
            &["admit", "1764000000123"][..],
            &["admit", "1764000000123 42"],
            &["admit", "1764000000123 0:1"],
            &["admit", "1764000000123 a b:1"],
            &["admit", "1764000000123 42:0"],
            &["admit", "soon 42:1"],
            &["grant", "1764000000123 42:1"],
            &[
                "kind",
                "admit",
                "user",
                "42",
                "seq",
                "1",
                "at",
                "1764000000123",
            ],
            &[],
        ] {
            assert!(decode(&entry("7-1", fields)).is_err(), "{fields:?}");
        }
        assert!(decode(&bulk("7-1")).is_err());
    }
}
