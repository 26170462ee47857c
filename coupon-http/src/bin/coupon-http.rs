//! `coupon-http`: reads configuration from flags and the environment, sets up logging, binds,
//! and runs the server and relay until SIGTERM or Ctrl-C.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use clap::builder::TypedValueParser;
use coupon_http::{Config, RelayConfig};
use coupon_relay::{DEFAULT_BROKERS, DEFAULT_TOPIC, kafka_property};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// First-come-first-served coupon issuance over HTTP, with the relay from the Redis outbox to Kafka.
///
/// Every flag falls back to the environment variable named beside it. Logging follows RUST_LOG
/// (default: info).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Listen address.
    #[arg(long, env = "COUPON_HTTP_ADDR", default_value_t = Config::DEFAULT_ADDR)]
    addr: SocketAddr,
    /// Redis URL.
    #[arg(long, env = "REDIS_URL", default_value = Config::DEFAULT_REDIS_URL)]
    redis_url: String,
    /// Prefix of every Redis key.
    #[arg(long, env = "COUPON_KEY_PREFIX", default_value = coupon_gate::DEFAULT_KEY_PREFIX)]
    key_prefix: String,
    /// Kafka bootstrap servers, comma separated.
    #[arg(long, env = "KAFKA_BROKERS", default_value = DEFAULT_BROKERS)]
    kafka_brokers: String,
    /// Topic admissions are produced to.
    #[arg(long, env = "COUPON_TOPIC", default_value = DEFAULT_TOPIC)]
    topic: String,
    /// Partitions of the topic, when it has to be created.
    #[arg(long, env = "COUPON_TOPIC_PARTITIONS", default_value_t = RelayConfig::DEFAULT_PARTITIONS, value_parser = clap::value_parser!(i32).range(1..))]
    topic_partitions: i32,
    /// Replication factor of the topic, when it has to be created.
    #[arg(long, env = "COUPON_TOPIC_REPLICATION", default_value_t = RelayConfig::DEFAULT_REPLICATION, value_parser = clap::value_parser!(i32).range(1..))]
    topic_replication: i32,
    /// Quota of the `default` campaign, created at start-up if missing.
    #[arg(long, env = "COUPON_DEFAULT_QUOTA", default_value_t = Config::DEFAULT_QUOTA)]
    default_quota: NonZeroU32,
    /// Bearer token for the admin endpoints; without it they answer 403.
    #[arg(long, env = "COUPON_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Connections served at once.
    #[arg(long, env = "COUPON_MAX_CONNECTIONS", default_value_t = Config::DEFAULT_MAX_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    max_connections: usize,
    /// Milliseconds a request waits on Redis before it is answered 503.
    #[arg(long, env = "COUPON_REDIS_TIMEOUT_MS", default_value_t = Config::DEFAULT_REDIS_TIMEOUT.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..))]
    redis_timeout_ms: u64,
    /// Milliseconds a connection may take to send a complete request and have it answered,
    /// counted from when the server starts waiting for it; then it is closed (silent, slow or
    /// idle clients). Must exceed the Redis timeout.
    #[arg(long, env = "COUPON_REQUEST_TIMEOUT_MS", default_value_t = Config::DEFAULT_REQUEST_TIMEOUT.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..))]
    request_timeout_ms: u64,
    /// Seconds shutdown waits for requests in flight and the relay.
    #[arg(long, env = "COUPON_SHUTDOWN_GRACE_SECS", default_value_t = Config::DEFAULT_SHUTDOWN_GRACE.as_secs())]
    shutdown_grace_secs: u64,
    /// Most applications to one campaign decided in one Redis script call (1: one call each).
    #[arg(long, env = "COUPON_APPLY_BATCH", default_value_t = Config::DEFAULT_APPLY_BATCH, value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    apply_batch: usize,
    /// Milliseconds a sold-out campaign is answered from memory unless a change message comes
    /// first (0: always ask Redis).
    #[arg(long, env = "COUPON_SOLD_OUT_TTL_MS", default_value_t = Config::DEFAULT_SOLD_OUT_TTL.as_millis() as u64)]
    sold_out_ttl_ms: u64,
    /// Outbox entries relayed per round.
    #[arg(long, env = "COUPON_RELAY_BATCH", default_value_t = RelayConfig::DEFAULT_BATCH, value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    relay_batch: usize,
    /// Milliseconds an outbox entry stays unacknowledged before another relay takes it over.
    #[arg(long, env = "COUPON_RELAY_CLAIM_IDLE_MS", default_value_t = RelayConfig::DEFAULT_CLAIM_IDLE.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..))]
    relay_claim_idle_ms: u64,
    /// Milliseconds the producer tries to deliver one message before the relay retries it later.
    #[arg(long, env = "COUPON_RELAY_MESSAGE_TIMEOUT_MS", default_value_t = RelayConfig::DEFAULT_MESSAGE_TIMEOUT.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..))]
    relay_message_timeout_ms: u64,
    /// Name of this relay in the outbox consumer group (default: host, pid and start time).
    #[arg(long, env = "COUPON_RELAY_CONSUMER")]
    relay_consumer: Option<String>,
    /// More librdkafka properties, key=value (repeat the flag, or comma-separate in the
    /// environment): TLS and SASL settings, batching. enable.idempotence, acks and
    /// message.timeout.ms stay as the relay sets them.
    #[arg(long = "kafka-property", env = "COUPON_KAFKA_PROPERTIES", value_delimiter = ',', value_parser = kafka_property)]
    kafka_properties: Vec<(String, String)>,
}

impl Args {
    fn into_config(self) -> Config {
        Config {
            addr: self.addr,
            redis_url: self.redis_url,
            key_prefix: self.key_prefix,
            default_quota: self.default_quota,
            admin_token: self.admin_token.filter(|t| !t.is_empty()),
            max_connections: self.max_connections,
            redis_timeout: Duration::from_millis(self.redis_timeout_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            apply_batch: self.apply_batch,
            sold_out_ttl: Duration::from_millis(self.sold_out_ttl_ms),
            relay: RelayConfig {
                brokers: self.kafka_brokers,
                topic: self.topic,
                partitions: self.topic_partitions,
                replication: self.topic_replication,
                batch: self.relay_batch,
                claim_idle: Duration::from_millis(self.relay_claim_idle_ms),
                message_timeout: Duration::from_millis(self.relay_message_timeout_ms),
                consumer: self
                    .relay_consumer
                    .unwrap_or_else(RelayConfig::default_consumer),
                kafka_properties: self.kafka_properties,
            },
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Args::parse().into_config();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    let listener = TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.addr))?;
    coupon_http::serve(config, listener, shutdown_signal()).await
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(term) => term,
            Err(err) => {
                tracing::warn!(cause = %err, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
