//! The sink's configuration, which is also its settings table: each field is one setting with
//! its flag, environment variable, default and help text, and [`Config::default`] gives every
//! declared default.

use std::time::Duration;

use clap::builder::TypedValueParser;
use coupon_cli::{Database, Kafka, Topic};

/// Everything `coupon-sink` needs to consume the topic into the database.
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The database; created if missing.
    #[command(flatten)]
    pub database: Database,
    /// The Kafka cluster, and more librdkafka properties for the consumer (TLS, SASL, fetch
    /// sizes), applied after the defaults and before the settings the guarantees rest on
    /// (`group.id`, `enable.auto.commit`, `auto.offset.reset`), which cannot be overridden.
    #[command(flatten)]
    pub kafka: Kafka,
    /// The topic of admissions.
    #[command(flatten)]
    pub topic: Topic,
    /// Consumer group; sinks of one group share the partitions.
    #[arg(
        long = "sink-group",
        alias = "group",
        global = true,
        env = "COUPON_SINK_GROUP",
        default_value = "coupon-sink"
    )]
    pub group: String,
    /// Most messages written per transaction.
    #[arg(long = "sink-batch", alias = "batch-size", global = true, env = "COUPON_SINK_BATCH", default_value = "500", value_parser = clap::value_parser!(u32).range(1..=10_000).map(|n| n as usize))]
    pub batch_size: usize,
    /// Milliseconds a batch waits for more messages after its first.
    #[arg(long = "sink-linger-ms", alias = "linger-ms", global = true, env = "COUPON_SINK_LINGER_MS", default_value = "20", value_parser = clap::value_parser!(u64).map(Duration::from_millis))]
    pub linger: Duration,
    /// Longest wait between retries of a batch that failed transiently.
    #[arg(skip = Config::MAX_BACKOFF)]
    pub max_backoff: Duration,
    /// Milliseconds the group waits for a silent member (a crashed sink) before moving its
    /// partitions to the others; until then they are not consumed.
    #[arg(long = "sink-session-timeout-ms", alias = "session-timeout-ms", global = true, env = "COUPON_SINK_SESSION_TIMEOUT_MS", default_value = "10000", value_parser = clap::value_parser!(u64).range(1_000..=300_000).map(Duration::from_millis))]
    pub session_timeout: Duration,
    /// Stable name of this sink in the group (static membership, `group.instance.id`): a
    /// restart under the same name takes its partitions back at once. Give each sink of a group
    /// its own. Empty is none.
    #[arg(
        long = "sink-instance-id",
        alias = "instance-id",
        global = true,
        env = "COUPON_SINK_INSTANCE_ID"
    )]
    pub instance_id: Option<String>,
    /// Milliseconds the broker may hold a fetch open waiting for new messages
    /// (`fetch.wait.max.ms`; Kafka's own default, so that an idle sink asks twice a second).
    #[arg(long = "sink-fetch-wait-ms", alias = "fetch-wait-ms", global = true, env = "COUPON_SINK_FETCH_WAIT_MS", default_value = "500", value_parser = clap::value_parser!(u64).range(1..=10_000).map(Duration::from_millis))]
    pub fetch_wait: Duration,
}

impl Config {
    /// Default address of the sink's `/metrics` (`off` serves none): loopback, beside
    /// coupon-http's 9463.
    pub const DEFAULT_METRICS_ADDR: &'static str = "127.0.0.1:9464";
    /// Longest wait between retries of a batch (not a setting).
    pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
}

impl Default for Config {
    fn default() -> Self {
        coupon_cli::defaults()
    }
}
