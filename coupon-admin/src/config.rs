//! The settings of `coupon-admin`, as one table: where the campaign's stores are (the same
//! settings coupon-http and coupon-sink read) and how long reading the topic may take.

use std::time::Duration;

use clap::builder::TypedValueParser;
use coupon_cli::{Database, Kafka, KeyPrefix, Redis, Topic};
use rdkafka::ClientConfig;

/// Where every command of `coupon-admin` reads from and writes to.
#[derive(clap::Args, Clone, Debug)]
pub struct Config {
    /// The gate's Redis.
    #[command(flatten)]
    pub redis: Redis,
    /// The gate's key prefix.
    #[command(flatten)]
    pub key_prefix: KeyPrefix,
    /// The Kafka cluster of the topic.
    #[command(flatten)]
    pub kafka: Kafka,
    /// The topic of admissions.
    #[command(flatten)]
    pub topic: Topic,
    /// The database coupon-sink writes to.
    #[command(flatten)]
    pub database: Database,
    /// Milliseconds reading the topic (to where each partition ends when reading starts) may
    /// take before it fails.
    #[arg(long = "topic-timeout-ms", global = true, env = "COUPON_TOPIC_TIMEOUT_MS", default_value = "60000", value_parser = clap::value_parser!(u64).range(1..).map(Duration::from_millis))]
    pub topic_timeout: Duration,
}

impl Config {
    /// A Kafka client configuration for the topic's cluster: its bootstrap servers and the
    /// operator's properties (TLS, SASL).
    pub fn kafka_client(&self) -> ClientConfig {
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", &self.kafka.kafka_brokers);
        for (key, value) in &self.kafka.kafka_properties {
            client.set(key, value);
        }
        client
    }
}
