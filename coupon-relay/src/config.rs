//! Typed configuration of the relay, with documented defaults.

use std::time::Duration;

pub use coupon_event::{DEFAULT_BROKERS, DEFAULT_TOPIC};
use rdkafka::ClientConfig;
use rdkafka::producer::FutureProducer;

use crate::Error;
use crate::producer::producer_config;
use crate::refusals::Refusals;

/// How often the list of campaigns is read again, to find new outboxes (and to report their
/// backlogs).
pub(crate) const CAMPAIGN_REFRESH: Duration = Duration::from_secs(1);

/// Where and how the relay delivers admissions. [`RelayConfig::default`] gives every documented
/// default.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Kafka bootstrap servers, comma separated.
    pub brokers: String,
    /// The topic admissions are produced to.
    pub topic: String,
    /// Partitions of the topic when the relay creates it (an existing topic is left as it is).
    pub partitions: i32,
    /// Replication factor of the topic when the relay creates it.
    pub replication: i32,
    /// Outbox stream entries read per round; each holds the admissions of one script call,
    /// and every one of them is produced.
    pub batch: usize,
    /// How long an entry read by another relay stays unacknowledged, with no sign of life from
    /// that relay, before this relay takes it over: how soon a crashed relay's entries move on.
    /// A live relay holds the entries it delivers three times within this, however long the
    /// broker takes, so a short setting does not duplicate a slow round.
    pub claim_idle: Duration,
    /// How long the producer keeps trying to deliver one message before the relay gives up on
    /// it for this round (it stays in the outbox and is retried).
    pub message_timeout: Duration,
    /// The relay's name in the outbox consumer group; unique per process.
    pub consumer: String,
    /// More librdkafka properties for the relay's clients (TLS, SASL, batching), applied after
    /// the defaults and before the settings the guarantees rest on (`enable.idempotence`,
    /// `acks`, `message.timeout.ms`), which cannot be overridden.
    pub kafka_properties: Vec<(String, String)>,
}

impl RelayConfig {
    /// Default partitions of a topic the relay creates.
    pub const DEFAULT_PARTITIONS: i32 = 3;
    /// Default replication factor of a topic the relay creates.
    pub const DEFAULT_REPLICATION: i32 = 1;
    /// Default entries per round.
    pub const DEFAULT_BATCH: usize = 500;
    /// Default idle time before another relay's pending entries are taken over.
    pub const DEFAULT_CLAIM_IDLE: Duration = Duration::from_secs(30);
    /// Default delivery timeout per message.
    pub const DEFAULT_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);

    /// A consumer name unique to this process: host, process id and start time.
    pub fn default_consumer() -> String {
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "host".to_owned());
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        format!("{host}-{}-{started}", std::process::id())
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            brokers: DEFAULT_BROKERS.to_owned(),
            topic: DEFAULT_TOPIC.to_owned(),
            partitions: Self::DEFAULT_PARTITIONS,
            replication: Self::DEFAULT_REPLICATION,
            batch: Self::DEFAULT_BATCH,
            claim_idle: Self::DEFAULT_CLAIM_IDLE,
            message_timeout: Self::DEFAULT_MESSAGE_TIMEOUT,
            consumer: Self::default_consumer(),
            kafka_properties: Vec::new(),
        }
    }
}

impl RelayConfig {
    /// Checks the producer configuration (brokers, extra librdkafka properties) as the relay
    /// will use it, without reaching any broker: for a service that refuses a bad configuration
    /// at start but starts while the broker is away.
    ///
    /// # Errors
    ///
    /// [`Error::Config`]: a producer configuration librdkafka refuses.
    pub fn check(&self) -> Result<(), Error> {
        self.producer(&Refusals::default()).map(drop)
    }

    /// What the relay's idempotent producer is created from: the brokers, the properties and
    /// the message timeout of this configuration, with the relay's batching defaults and the
    /// settings the guarantees rest on.
    pub(crate) fn producer_config(&self) -> ClientConfig {
        producer_config(&self.brokers, &self.kafka_properties, self.message_timeout)
    }

    /// The relay's idempotent producer, counting the brokers' refusals in `refusals`.
    pub(crate) fn producer(&self, refusals: &Refusals) -> Result<FutureProducer<Refusals>, Error> {
        self.producer_config()
            .create_with_context(refusals.clone())
            .map_err(Error::Config)
    }
}
