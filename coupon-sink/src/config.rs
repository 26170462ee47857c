//! Typed configuration of the sink, with documented defaults.

use std::time::Duration;

/// Everything `coupon-sink` needs to run. [`Config::default`] gives every documented default.
#[derive(Clone, Debug)]
pub struct Config {
    /// The database; created if missing.
    pub database_url: String,
    /// Kafka bootstrap servers, comma separated.
    pub brokers: String,
    /// The topic of admissions.
    pub topic: String,
    /// The consumer group; sinks of one group share the partitions.
    pub group: String,
    /// Most messages written in one transaction.
    pub batch_size: usize,
    /// How long a batch waits for more messages after its first.
    pub linger: Duration,
    /// Longest wait between retries of a batch that failed transiently.
    pub max_backoff: Duration,
    /// How long the group waits for a silent member (a crashed sink) before handing its
    /// partitions to the others; until then they are not consumed.
    pub session_timeout: Duration,
    /// A stable name for this sink in the group (`group.instance.id`, static membership): a
    /// sink restarted under the same name takes its partitions back at once instead of waiting
    /// for the group to notice its predecessor is gone. `None` for dynamic membership.
    pub instance_id: Option<String>,
    /// Longest time the broker may hold a fetch open waiting for new messages
    /// (`fetch.wait.max.ms`). A broker answers as soon as a message arrives, so this only bounds
    /// how long an idle sink's fetch stays open.
    pub fetch_wait: Duration,
    /// More librdkafka properties for the consumer (TLS, SASL, fetch sizes), applied after the
    /// defaults and before the settings the guarantees rest on (`group.id`,
    /// `enable.auto.commit`, `auto.offset.reset`), which cannot be overridden.
    pub kafka_properties: Vec<(String, String)>,
}

impl Config {
    /// Default address of the sink's `/metrics` (`off` serves none): loopback, beside
    /// coupon-http's 9463.
    pub const DEFAULT_METRICS_ADDR: &'static str = "127.0.0.1:9464";
    /// Default database.
    pub const DEFAULT_DATABASE_URL: &'static str = "mysql://root@127.0.0.1:3306/coupon";
    /// Default consumer group.
    pub const DEFAULT_GROUP: &'static str = "coupon-sink";
    /// Default batch size.
    pub const DEFAULT_BATCH_SIZE: usize = 500;
    /// Default linger.
    pub const DEFAULT_LINGER: Duration = Duration::from_millis(20);
    /// Default cap on retry backoff.
    pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(2);
    /// Default session timeout: shorter than Kafka's 45 s, so a crashed sink's partitions move
    /// on soon.
    pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default fetch wait: Kafka's own (librdkafka's `fetch.wait.max.ms`, the Java consumer's
    /// `fetch.max.wait.ms`), so that the sink asks an idle broker twice a second, as every other
    /// Kafka consumer of the deployment does.
    pub const DEFAULT_FETCH_WAIT: Duration = Duration::from_millis(500);
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: Self::DEFAULT_DATABASE_URL.to_owned(),
            brokers: coupon_event::DEFAULT_BROKERS.to_owned(),
            topic: coupon_event::DEFAULT_TOPIC.to_owned(),
            group: Self::DEFAULT_GROUP.to_owned(),
            batch_size: Self::DEFAULT_BATCH_SIZE,
            linger: Self::DEFAULT_LINGER,
            max_backoff: Self::DEFAULT_MAX_BACKOFF,
            session_timeout: Self::DEFAULT_SESSION_TIMEOUT,
            instance_id: None,
            fetch_wait: Self::DEFAULT_FETCH_WAIT,
            kafka_properties: Vec::new(),
        }
    }
}
