//! The relay: moves admissions from the campaigns' Redis outbox streams to a Kafka topic.
//!
//! Each round reads new outbox entries of every campaign through the gate's consumer group,
//! produces them with an idempotent producer (`enable.idempotence=true`, `acks=all`), and
//! acknowledges (which deletes) only the entries the broker confirmed. An entry whose delivery
//! failed stays pending in the outbox; so does every entry a crashed relay had read. Every relay
//! periodically takes over entries left pending longer than
//! [`RelayConfig::claim_idle`](crate::config::RelayConfig::claim_idle), its own included, so
//! each admission reaches the topic at least once while any relay runs. The HTTP answer never
//! waits for any of this.
//!
//! Message key: `<campaign>:<user>`. Value (JSON):
//! `{"event":"admitted","campaignId":"spring-sale","userId":42,"seq":7,"admittedAt":"2026-…Z"}`,
//! or, after a compensation, `{"event":"released",…,"releasedAt":"…"}`.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use coupon_gate::{CampaignId, EventKind, Gate, OutboxEntry};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use redis::aio::ConnectionLike;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::config::RelayConfig;

/// How often the list of campaigns is read again, to find new outboxes.
const CAMPAIGN_REFRESH: Duration = Duration::from_secs(1);
/// How long an idle relay waits before it looks at the outboxes again.
const IDLE_POLL: Duration = Duration::from_millis(10);
/// How long the relay waits after Redis failed before it tries again.
const ERROR_BACKOFF: Duration = Duration::from_millis(500);
/// How long the relay waits before it hands the producer a record again when the producer's
/// queue is full of records already delivered but not yet freed.
const QUEUE_FULL_RETRY: Duration = Duration::from_millis(1);

/// A relay over one gate and one producer.
pub struct Relay<C> {
    /// Where the outboxes are read and acknowledged.
    gate: Gate<C>,
    /// The idempotent producer; shared by every send of a round.
    producer: FutureProducer,
    /// Topic, batch size and timeouts.
    config: RelayConfig,
}

impl<C> Relay<C>
where
    C: ConnectionLike + Clone + Send + Sync,
{
    /// A relay delivering `gate`'s outboxes as `config` says.
    ///
    /// # Errors
    ///
    /// A producer configuration librdkafka refuses.
    pub fn new(gate: Gate<C>, config: RelayConfig) -> anyhow::Result<Self> {
        let producer = producer(&config)?;
        Ok(Self {
            gate,
            producer,
            config,
        })
    }

    /// Creates the topic with the configured partitions and replication, unless it exists.
    ///
    /// # Errors
    ///
    /// The broker is unreachable or refuses the topic.
    pub async fn ensure_topic(&self) -> anyhow::Result<()> {
        create_topic(
            &self.config.brokers,
            &self.config.kafka_properties,
            &self.config.topic,
            self.config.partitions,
            self.config.replication,
        )
        .await
    }

    /// Runs rounds until `shutdown` turns true, then finishes the round in progress, flushes the
    /// producer and returns. `running` is true while it runs.
    pub async fn run(mut self, running: Arc<AtomicBool>, mut shutdown: watch::Receiver<bool>) {
        running.store(true, Ordering::Relaxed);
        info!(topic = %self.config.topic, consumer = %self.config.consumer, "relay started");
        let mut campaigns: Vec<CampaignId> = Vec::new();
        let mut campaigns_read: Option<Instant> = None;
        // Claim at once on start, to pick up what a crashed predecessor left behind.
        let mut next_claim = Instant::now();
        while !*shutdown.borrow() {
            if campaigns_read.is_none_or(|t| t.elapsed() >= CAMPAIGN_REFRESH) {
                match self.gate.campaigns().await {
                    Ok(ids) => {
                        campaigns = ids;
                        campaigns_read = Some(Instant::now());
                    }
                    Err(err) => warn!(cause = %err, "relay cannot list campaigns"),
                }
            }
            let claim = Instant::now() >= next_claim;
            if claim {
                next_claim =
                    Instant::now() + (self.config.claim_idle / 2).max(Duration::from_millis(50));
            }
            let mut moved = 0;
            let mut failed = false;
            let mut rejected = false;
            for campaign in &campaigns {
                match self.round(campaign, claim).await {
                    Ok(sent) => {
                        moved += sent.delivered;
                        failed |= sent.failed > 0;
                        rejected |= sent.producer_rejected;
                    }
                    Err(err) => {
                        warn!(cause = %err, campaign = %campaign, "relay round failed; entries stay in the outbox");
                        failed = true;
                    }
                }
            }
            self.replace_failed_producer(rejected);
            let pause = if failed { ERROR_BACKOFF } else { IDLE_POLL };
            if moved == 0 || failed {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
        if let Err(err) = self
            .producer
            .flush(Timeout::After(self.config.message_timeout))
        {
            warn!(cause = %err, "relay could not flush the producer on shutdown");
        }
        running.store(false, Ordering::Relaxed);
        info!("relay stopped");
    }

    /// One round for one campaign: take over stale entries (when `claim`), read new ones,
    /// deliver, acknowledge what was delivered.
    async fn round(&self, campaign: &CampaignId, claim: bool) -> Result<Sent, coupon_gate::Error> {
        let (consumer, batch) = (&self.config.consumer, self.config.batch);
        let mut entries = Vec::new();
        if claim {
            entries = self
                .gate
                .claim_outbox(campaign, consumer, self.config.claim_idle, batch)
                .await?;
            if !entries.is_empty() {
                info!(campaign = %campaign, count = entries.len(), "relay took over pending outbox entries");
            }
        }
        entries.extend(self.gate.read_outbox(campaign, consumer, batch).await?);
        if entries.is_empty() {
            return Ok(Sent::default());
        }
        let sent = self.deliver(&entries).await;
        self.gate.ack_outbox(campaign, &sent.acknowledge).await?;
        debug!(campaign = %campaign, read = entries.len(), delivered = sent.delivered, "relay round");
        Ok(sent)
    }

    /// Replaces the producer when librdkafka marked it fatally failed, or when the broker
    /// `rejected` its identity.
    ///
    /// An idempotent producer whose messages timed out must reset its epoch with the broker.
    /// When that goes wrong, the broker refuses every later message of this producer id
    /// (`ProducerFenced`, `InvalidProducerEpoch`, ...), whether or not librdkafka calls the
    /// state fatal, and the only way out is a new producer instance with a new id. Entries whose
    /// delivery failed are still pending in the outbox; the new producer sends them again.
    fn replace_failed_producer(&mut self, rejected: bool) {
        let fatal = self.producer.client().fatal_error();
        if fatal.is_none() && !rejected {
            return;
        }
        let reason = fatal.map_or_else(
            || "the broker rejected its producer id".to_owned(),
            |(code, why)| format!("{code}: {why}"),
        );
        error!(%reason, "the Kafka producer cannot deliver any more; creating a new one");
        match producer(&self.config) {
            Ok(fresh) => self.producer = fresh,
            Err(err) => {
                error!(cause = %err, "cannot create a new Kafka producer; retrying next round")
            }
        }
    }

    /// Produces every record and says which outbox entries the broker confirmed whole.
    ///
    /// Every record is handed to the producer first (librdkafka copies key and value, so one
    /// buffer of each serves every record), then the deliveries are awaited in order. The
    /// records of one stream entry share its timestamp, which is formatted once.
    async fn deliver(&self, entries: &[OutboxEntry]) -> Sent {
        let topic = self.config.topic.as_str();
        let mut results: Vec<Option<KafkaError>> = Vec::with_capacity(entries.len());
        let mut pending: Vec<(usize, DeliveryFuture)> = Vec::with_capacity(entries.len());
        let mut key = String::new();
        let mut payload = Vec::new();
        let (mut stamped, mut stamp) = (None, String::new());
        for (i, entry) in entries.iter().enumerate() {
            results.push(None);
            if stamped != Some(entry.at) {
                stamp = rfc3339(entry.at);
                stamped = Some(entry.at);
            }
            key.clear();
            let _ = write!(key, "{}:{}", entry.campaign, entry.user);
            payload.clear();
            write_message(&mut payload, entry, &stamp);
            let mut full_since = None;
            loop {
                let record = FutureRecord::to(topic).key(&key).payload(&payload);
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
        let mut failed_ids = HashSet::new();
        let mut first_error = None;
        for (entry, result) in entries.iter().zip(results) {
            match result {
                None => sent.delivered += 1,
                Some(err) => {
                    sent.failed += 1;
                    failed_ids.insert(entry.id.as_str());
                    sent.producer_rejected |= matches!(err.rdkafka_error_code(), Some(code) if PRODUCER_REJECTED.contains(&code));
                    first_error.get_or_insert(err);
                }
            }
        }
        if let Some(err) = first_error {
            let campaign = &entries[0].campaign;
            warn!(cause = %err, campaign = %campaign, failed = sent.failed, "deliveries failed; the entries stay in the outbox");
        }
        sent.acknowledge = acknowledgeable(entries, &failed_ids);
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

/// The ids of the outbox entries whose records were all delivered, each once, in order.
///
/// The records of one stream entry (the admissions of one script call) share its id and come
/// one after another; an entry with any record in `failed` stays pending and is delivered again
/// as a whole (the consumers are idempotent).
fn acknowledgeable(records: &[OutboxEntry], failed: &HashSet<&str>) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for record in records {
        if !failed.contains(record.id.as_str()) && ids.last() != Some(&record.id) {
            ids.push(record.id.clone());
        }
    }
    ids
}

/// What one round of sends came to.
#[derive(Default)]
struct Sent {
    /// Ids of the outbox entries the broker confirmed whole, to acknowledge.
    acknowledge: Vec<String>,
    /// Records the broker confirmed.
    delivered: usize,
    /// Records it did not; their entries stay in the outbox.
    failed: usize,
    /// Whether the broker refused this producer's identity, so that it must be replaced.
    producer_rejected: bool,
}

/// Broker answers that reject the producer's id or epoch: no later message of this producer
/// instance can succeed.
const PRODUCER_REJECTED: [RDKafkaErrorCode; 5] = [
    RDKafkaErrorCode::ProducerFenced,
    RDKafkaErrorCode::InvalidProducerEpoch,
    RDKafkaErrorCode::UnknownProducerId,
    RDKafkaErrorCode::OutOfOrderSequenceNumber,
    RDKafkaErrorCode::InvalidProducerIdMapping,
];

/// The relay's idempotent producer.
fn producer(config: &RelayConfig) -> anyhow::Result<FutureProducer> {
    let mut client = ClientConfig::new();
    client.set("linger.ms", "5");
    client_config(&mut client, &config.brokers, &config.kafka_properties)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set(
            "message.timeout.ms",
            config.message_timeout.as_millis().to_string(),
        )
        .create()
        .context("cannot create the Kafka producer")
}

/// librdkafka configuration shared by the relay's clients: the brokers, then the operator's
/// `properties`.
fn client_config<'a>(
    config: &'a mut ClientConfig,
    brokers: &str,
    properties: &[(String, String)],
) -> &'a mut ClientConfig {
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", "coupon-http");
    for (key, value) in properties {
        config.set(key, value);
    }
    config
}

/// Creates `topic` unless it exists.
///
/// # Errors
///
/// The broker is unreachable or refuses the topic.
pub async fn ensure_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    replication: i32,
) -> anyhow::Result<()> {
    create_topic(brokers, &[], topic, partitions, replication).await
}

async fn create_topic(
    brokers: &str,
    properties: &[(String, String)],
    topic: &str,
    partitions: i32,
    replication: i32,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(&mut ClientConfig::new(), brokers, properties)
            .create()
            .context("cannot create the Kafka admin client")?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(15)));
    let results = admin
        .create_topics([&new], &options)
        .await
        .with_context(|| format!("cannot reach Kafka at {brokers}"))?;
    for result in results {
        match result {
            Ok(_) => info!(topic, partitions, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => debug!(topic, "topic exists"),
            Err((name, code)) => anyhow::bail!("cannot create topic {name}: {code}"),
        }
    }
    Ok(())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Message<'a> {
    event: &'static str,
    campaign_id: &'a str,
    user_id: u64,
    seq: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    admitted_at: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    released_at: Option<&'a str>,
}

/// Appends the JSON value of an outbox entry on the topic to `out`; `at` is the entry's time
/// in RFC 3339.
fn write_message(out: &mut Vec<u8>, entry: &OutboxEntry, at: &str) {
    let (event, admitted_at, released_at) = match entry.kind {
        EventKind::Admitted => ("admitted", Some(at), None),
        EventKind::Released => ("released", None, Some(at)),
    };
    let message = Message {
        event,
        campaign_id: entry.campaign.as_str(),
        user_id: entry.user.get(),
        seq: entry.seq,
        admitted_at,
        released_at,
    };
    serde_json::to_writer(out, &message).expect("plain fields serialize");
}

fn rfc3339(t: SystemTime) -> String {
    OffsetDateTime::from(t).format(&Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use coupon_gate::UserId;

    fn message(entry: &OutboxEntry) -> Vec<u8> {
        let mut out = Vec::new();
        write_message(&mut out, entry, &rfc3339(entry.at));
        out
    }

    #[test]
    fn messages_carry_the_admission() {
        let entry = OutboxEntry {
            id: "1-0".into(),
            kind: EventKind::Admitted,
            campaign: CampaignId::new("spring-sale").unwrap(),
            user: UserId::new(42).unwrap(),
            seq: 7,
            at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_000_000_123),
        };
        let value: serde_json::Value = serde_json::from_slice(&message(&entry)).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"event":"admitted","campaignId":"spring-sale","userId":42,"seq":7,"admittedAt":"2025-11-24T16:00:00.123Z"})
        );
        let released = OutboxEntry {
            kind: EventKind::Released,
            ..entry
        };
        let value: serde_json::Value = serde_json::from_slice(&message(&released)).unwrap();
        assert_eq!(value["event"], "released");
        assert_eq!(value["releasedAt"], "2025-11-24T16:00:00.123Z");
        assert!(value.get("admittedAt").is_none());
    }

    #[test]
    fn an_entry_is_acknowledged_only_when_all_its_records_were_delivered() {
        let record = |id: &str, user: u64| OutboxEntry {
            id: id.into(),
            kind: EventKind::Admitted,
            campaign: CampaignId::new("spring-sale").unwrap(),
            user: UserId::new(user).unwrap(),
            seq: u32::try_from(user).unwrap(),
            at: SystemTime::UNIX_EPOCH,
        };
        let records = [
            record("1-0", 1),
            record("1-0", 2),
            record("2-0", 3),
            record("2-0", 4),
            record("2-0", 5),
            record("3-0", 6),
        ];
        assert_eq!(
            acknowledgeable(&records, &HashSet::new()),
            ["1-0", "2-0", "3-0"]
        );
        assert_eq!(
            acknowledgeable(&records, &HashSet::from(["2-0"])),
            ["1-0", "3-0"]
        );
    }
}
