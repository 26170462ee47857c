//! How a relay delivers one campaign's round: reads the outbox (taking over stale entries when
//! it claims), produces every record while it holds their entries, and acknowledges the entries
//! the broker confirmed whole.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use coupon_event::Encoder;
use coupon_gate::{CampaignId, OutboxRecord};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureRecord};
use redis::aio::ConnectionLike;
use tracing::{debug, info, warn};

use super::Relay;
use crate::producer::PRODUCER_REJECTED;

/// How long the relay waits before it hands the producer a record again when the producer's
/// queue is full of records already delivered but not yet freed.
const QUEUE_FULL_RETRY: Duration = Duration::from_millis(1);

impl<C> Relay<C>
where
    C: ConnectionLike + Clone + Send + Sync,
{
    /// One round for one campaign: take over stale entries (when `claim`), read new ones,
    /// deliver, acknowledge what was delivered.
    pub(super) async fn round(
        &self,
        campaign: &CampaignId,
        claim: bool,
    ) -> Result<Sent, coupon_gate::Error> {
        let (consumer, batch) = (&self.config.consumer, self.config.batch);
        let mut records = Vec::new();
        if claim {
            records = self
                .outbox
                .claim(campaign, consumer, self.config.claim_idle, batch)
                .await?;
            if !records.is_empty() {
                info!(campaign = %campaign, count = records.len(), "relay took over pending outbox entries");
            }
        }
        records.extend(self.outbox.read(campaign, consumer, batch).await?);
        if records.is_empty() {
            return Ok(Sent::default());
        }
        let mut sent = self.deliver_held(campaign, &records).await;
        sent.read = records.len();
        self.outbox
            .ack(campaign, delivered(&records, &sent.failed_entries))
            .await?;
        debug!(campaign = %campaign, read = records.len(), delivered = sent.delivered, "relay round");
        Ok(sent)
    }

    /// [`Relay::deliver`]s `records` of `campaign`, and while the broker has not confirmed them
    /// all, tells the outbox every [`hold_every`] that this relay still holds their entries, so
    /// that no other relay takes over a round that is merely slow and delivers it a second time.
    async fn deliver_held(&self, campaign: &CampaignId, records: &[OutboxRecord]) -> Sent {
        let delivery = self.deliver(records);
        tokio::pin!(delivery);
        let every = hold_every(self.config.claim_idle);
        let mut hold = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        hold.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                sent = &mut delivery => return sent,
                _ = hold.tick() => {
                    // Missing one is harmless while the next comes in time: at worst another
                    // relay delivers the entries too.
                    if let Err(err) = self.outbox.hold(campaign, &self.config.consumer, records).await {
                        warn!(cause = %err, campaign = %campaign, "relay could not hold the entries it delivers");
                    }
                }
            }
        }
    }

    /// Produces every record and says which outbox entries the broker confirmed whole.
    ///
    /// The records are handed to the producer in [`Handover`]s (librdkafka copies key and
    /// value, so one buffer of each serves every record), and each handover's deliveries are
    /// awaited in order before the next.
    async fn deliver(&self, records: &[OutboxRecord]) -> Sent {
        let topic = self.config.topic.as_str();
        let mut results: Vec<Option<KafkaError>> = Vec::with_capacity(records.len());
        let mut pending: Vec<(usize, DeliveryFuture)> = Vec::with_capacity(records.len());
        let mut encoder = Encoder::default();
        let (mut since, mut bytes) = (Instant::now(), 0);
        for (i, outbox_record) in records.iter().enumerate() {
            results.push(None);
            if self.handover.is_full(since, bytes) && !pending.is_empty() {
                settle(&mut pending, &mut results).await;
            }
            if pending.is_empty() {
                (since, bytes) = (Instant::now(), 0);
            }
            let (key, payload) = encoder.encode(
                outbox_record.kind,
                &outbox_record.campaign,
                &outbox_record.user,
                outbox_record.seq,
                outbox_record.at,
            );
            bytes += key.len() + payload.len();
            let mut full_since = None;
            loop {
                let record = FutureRecord::to(topic).key(key).payload(payload);
                match self.producer.send_result(record) {
                    Ok(delivery) => pending.push((i, delivery)),
                    // The producer's queue is full of this round's records: wait for them to
                    // be delivered, then try again.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                        if !pending.is_empty() =>
                    {
                        settle(&mut pending, &mut results).await;
                        continue;
                    }
                    // Every record handed over has had its delivery report, yet the queue still
                    // counts some: librdkafka frees a message only after its report, on its own
                    // thread. Wait for that, as long as a message may take to deliver.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                        if full_since.get_or_insert_with(Instant::now).elapsed()
                            < self.config.message_timeout =>
                    {
                        tokio::time::sleep(QUEUE_FULL_RETRY).await;
                        continue;
                    }
                    Err((err, _)) => results[i] = Some(err),
                }
                break;
            }
        }
        settle(&mut pending, &mut results).await;

        let mut sent = Sent::default();
        let mut first_error = None;
        let confirmed = SystemTime::now();
        let latency = metrics::histogram!("coupon_relay_delivery_seconds");
        for (record, result) in records.iter().zip(results) {
            match result {
                None => {
                    sent.delivered += 1;
                    let waited = confirmed.duration_since(record.at).unwrap_or_default();
                    latency.record(waited.as_secs_f64());
                }
                Some(err) => {
                    sent.failed += 1;
                    sent.failed_entries.insert(record.entry.clone());
                    sent.producer_rejected |= matches!(err.rdkafka_error_code(), Some(code) if PRODUCER_REJECTED.contains(&code));
                    first_error.get_or_insert(err);
                }
            }
        }
        metrics::counter!("coupon_relay_delivered_total").increment(sent.delivered as u64);
        metrics::counter!("coupon_relay_failures_total", "reason" => "delivery")
            .increment(sent.failed as u64);
        if let Some(err) = first_error {
            let campaign = &records[0].campaign;
            warn!(cause = %err, campaign = %campaign, failed = sent.failed, "deliveries failed; the entries stay in the outbox");
        }
        sent
    }
}

/// Awaits the `pending` deliveries in order and writes each one's error, if any, to its place
/// in `results`.
async fn settle(pending: &mut Vec<(usize, DeliveryFuture)>, results: &mut [Option<KafkaError>]) {
    for (i, delivery) in pending.drain(..) {
        results[i] = match delivery.await {
            Ok(Ok(_)) => None,
            Ok(Err((err, _))) => Some(err),
            Err(_canceled) => Some(KafkaError::Canceled),
        };
    }
}

/// The records of the outbox entries whose records were all delivered, to acknowledge.
///
/// The records of one stream entry (the admissions of one script call) share its id; an entry
/// with any record `failed` stays pending and is delivered again as a whole (the consumers are
/// idempotent).
pub(super) fn delivered<'a>(
    records: &'a [OutboxRecord],
    failed: &'a HashSet<String>,
) -> impl Iterator<Item = &'a OutboxRecord> {
    records
        .iter()
        .filter(move |record| !failed.contains(&record.entry))
}

/// How often a relay holds the entries it delivers ([`Outbox::hold`]): three times within
/// `claim_idle`, so that one missed or late hold does not yet let the entries be taken over.
fn hold_every(claim_idle: Duration) -> Duration {
    (claim_idle / 3).max(Duration::from_millis(10))
}

/// What one round of sends came to.
#[derive(Default)]
pub(super) struct Sent {
    /// Records read (new or taken over).
    pub(super) read: usize,
    /// Ids of the outbox entries with a record the broker did not confirm: they stay pending.
    pub(super) failed_entries: HashSet<String>,
    /// Records the broker confirmed.
    pub(super) delivered: usize,
    /// Records it did not; their entries stay in the outbox.
    pub(super) failed: usize,
    /// Whether the broker refused this producer's identity, so that it must be replaced.
    pub(super) producer_rejected: bool,
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use coupon_gate::{EventKind, UserId};

    use super::*;

    #[test]
    fn an_entry_is_acknowledged_only_when_all_its_records_were_delivered() {
        let record = |id: &str, user: u64| OutboxRecord {
            entry: id.into(),
            kind: EventKind::Admitted,
            campaign: CampaignId::new("spring-sale").unwrap(),
            user: UserId::from_number(user).unwrap(),
            seq: u32::try_from(user).unwrap(),
            at: UNIX_EPOCH + Duration::from_millis(1),
        };
        let records = [
            record("1-0", 1),
            record("1-0", 2),
            record("2-0", 3),
            record("2-0", 4),
            record("2-0", 5),
            record("3-0", 6),
        ];
        let entries = |failed: &[&str]| {
            let failed = failed.iter().map(|id| (*id).to_owned()).collect();
            delivered(&records, &failed)
                .map(|r| (r.entry.clone(), r.seq))
                .collect::<Vec<_>>()
        };
        assert_eq!(entries(&[]).len(), 6);
        assert_eq!(
            entries(&["2-0"]),
            [("1-0".into(), 1), ("1-0".into(), 2), ("3-0".into(), 6)]
        );
    }
}
