//! Typed configuration of the server and the relay, with documented defaults.
//!
//! The binary builds a [`Config`] from flags and environment variables; everything below takes
//! it (or a part of it) as a value and reads no environment itself.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

/// Everything `coupon-http` needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the HTTP server listens.
    pub addr: SocketAddr,
    /// The Redis the gate runs on.
    pub redis_url: String,
    /// Prepended to every Redis key, so that deployments can share one Redis.
    pub key_prefix: String,
    /// Quota of the `default` campaign, created at start-up if missing (never changed if present).
    pub default_quota: NonZeroU32,
    /// Bearer token for the admin endpoints; without one they answer 403.
    pub admin_token: Option<String>,
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// How long one request may wait on Redis before it is answered 503.
    pub redis_timeout: Duration,
    /// How long a connection may take to send a complete request and have it answered,
    /// counted from when the server starts waiting for it (on connecting, after each answer);
    /// then the connection is closed. Guards against silent, dribbling and idle clients; must
    /// exceed `redis_timeout`.
    pub request_timeout: Duration,
    /// How long shutdown waits for requests in flight and the relay's last batch.
    pub shutdown_grace: Duration,
    /// Most applications to one campaign decided in one script call (1: one call each).
    pub apply_batch: usize,
    /// How long a campaign that Redis answered sold out is answered so from memory, unless a
    /// change message says otherwise first (zero: always ask Redis).
    pub sold_out_ttl: Duration,
    /// The relay from the outbox to Kafka.
    pub relay: RelayConfig,
}

impl Config {
    /// Default listen address.
    pub const DEFAULT_ADDR: &'static str = "127.0.0.1:8080";
    /// Default Redis.
    pub const DEFAULT_REDIS_URL: &'static str = "redis://127.0.0.1:6379";
    /// Default quota of the `default` campaign.
    pub const DEFAULT_QUOTA: u32 = 100;
    /// Default cap on concurrent connections.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
    /// Default wait on Redis per request.
    pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_secs(2);
    /// Default of [`Config::request_timeout`].
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default shutdown grace.
    pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
    /// Default of [`Config::apply_batch`].
    pub const DEFAULT_APPLY_BATCH: usize = coupon_gate::BatchConfig::DEFAULT_MAX_BATCH;
    /// Default of [`Config::sold_out_ttl`].
    pub const DEFAULT_SOLD_OUT_TTL: Duration = Duration::from_secs(1);
}

/// Where and how the relay delivers admissions.
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
    /// How long an entry read by another relay stays unacknowledged before this relay takes it
    /// over. Well above a normal delivery round, so that a slow relay is not duplicated.
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
    /// Default bootstrap servers.
    pub const DEFAULT_BROKERS: &'static str = "127.0.0.1:9092";
    /// Default topic.
    pub const DEFAULT_TOPIC: &'static str = "coupon_create";
    /// Default partitions of a topic the relay creates.
    pub const DEFAULT_PARTITIONS: i32 = 3;
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

/// Parses a librdkafka property given as `key=value`.
///
/// # Errors
///
/// No `=`, or an empty key.
pub fn kafka_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("{text:?} is not key=value")),
    }
}
