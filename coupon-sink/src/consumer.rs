//! The consume loop: batches from Kafka, written to MySQL, offsets committed after.
//!
//! At least once, and harmless when "more than once" happens: offsets are committed only after
//! the batch's transaction committed, so a crash in between redelivers the batch, and writing a
//! batch again changes nothing (see [`crate::db`]). While the database is unreachable or a lock
//! conflict persists, the batch is retried with backoff and nothing is committed; an event that
//! can never be written goes to `failed_event` and the partition moves on.
//!
//! The loop records through the [`metrics`] facade (nothing is recorded until the process
//! installs a recorder, as the binary does): `coupon_sink_rows_written_total` (coupon rows
//! inserted), `coupon_sink_redeliveries_total` (admissions whose row was there already),
//! `coupon_sink_releases_total`, `coupon_sink_failed_events_total{reason}` (`malformed`: no
//! event; `conflict`: the user or seq is held otherwise; `refused`: the database refused the
//! event), `coupon_sink_batch_seconds` (a batch from its write's start to its offsets' commit,
//! retries included), `coupon_sink_consumer_replacements_total` (consumers replaced after
//! librdkafka declared them fatally failed), and from librdkafka's statistics
//! `coupon_sink_consumer_lag{partition}` (messages of an assigned partition after the committed
//! offset; 0 once it is revoked).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use coupon_cli::{Waiting, patiently};
use mysql_async::Pool;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, ClientContext, Offset, Statistics, TopicPartitionList};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::Config;
use crate::db::{self, Item, Written};

type SinkConsumer = StreamConsumer<Rebalances>;

/// How often librdkafka reports its statistics, from which the consumer lag is taken.
const STATISTICS_INTERVAL: Duration = Duration::from_secs(5);

/// Logs every partition assignment and revocation: when a sink starts consuming, and when it
/// hands partitions over to another. Publishes the consumer lag from librdkafka's statistics.
struct Rebalances {
    topic: String,
}

impl ClientContext for Rebalances {
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        // Partition -1 is librdkafka's internal one; a lag of -1 means "not known" (a partition
        // this sink does not consume).
        for (partition, stats) in &topic.partitions {
            if *partition >= 0 && stats.consumer_lag >= 0 {
                lag_gauge(*partition).set(stats.consumer_lag as f64);
            }
        }
    }
}

fn lag_gauge(partition: i32) -> metrics::Gauge {
    metrics::gauge!("coupon_sink_consumer_lag", "partition" => partition.to_string())
}

impl ConsumerContext for Rebalances {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let partitions = |list: &TopicPartitionList| {
            list.elements()
                .iter()
                .map(|e| format!("{}/{}", e.topic(), e.partition()))
                .collect::<Vec<_>>()
                .join(",")
        };
        match rebalance {
            Rebalance::Assign(list) => info!(partitions = %partitions(list), "partitions assigned"),
            Rebalance::Revoke(list) => {
                info!(partitions = %partitions(list), "partitions revoked");
                // Their lag is the new owner's to report now.
                for element in list.elements() {
                    lag_gauge(element.partition()).set(0.0);
                }
            }
            Rebalance::Error(err) => warn!(cause = %err, "rebalance failed"),
        }
    }
}

/// Consumes `config.topic` into the database at `pool` until `shutdown` resolves; then finishes
/// the batch in hand, commits, and leaves the group. Waits first, as long as it takes, for the
/// broker to answer and the topic to exist.
///
/// # Errors
///
/// The consumer cannot be created or subscribed.
pub async fn run(
    config: &Config,
    pool: &Pool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let client = client_config(config);
    // Created first, so that properties librdkafka refuses stop the start rather than wait.
    let mut consumer = create(&client, config)?;
    let (stop_tx, stop) = watch::channel(false);
    let watcher = tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    if !wait_for_topic(&client, &config.topic.topic, stop.clone()).await {
        watcher.abort();
        return Ok(());
    }
    consumer
        .subscribe(&[config.topic.topic.as_str()])
        .context("cannot subscribe")?;
    info!(topic = %config.topic.topic, group = %config.group, "sink started");
    let counts = Counts::new();

    // When the consumer was last replaced.
    let mut replaced: Option<Instant> = None;
    while !*stop.borrow() {
        let batch = match next_batch(&consumer, config, stop.clone()).await {
            Next::Batch(batch) => batch,
            Next::Stopped => break,
            Next::Failed => {
                consumer = replace(&client, config, consumer, &mut replaced, &stop).await?;
                continue;
            }
        };
        let started = Instant::now();
        let Some(written) = write_with_retry(pool, &batch, config.max_backoff, &stop).await else {
            info!(
                messages = batch.len(),
                "stopping before the batch could be written; it will be redelivered"
            );
            break;
        };
        debug!(
            messages = batch.len(),
            admitted = written.admitted,
            released = written.released,
            failed = written.failed.len(),
            "batch written"
        );
        commit(&consumer, &batch);
        counts.batch_seconds.record(started.elapsed().as_secs_f64());
        if consumer.client().fatal_error().is_some() {
            // The batch is written; uncommitted, it comes again to the new consumer, and
            // writing it again changes nothing.
            consumer = replace(&client, config, consumer, &mut replaced, &stop).await?;
        }
        counts.record(&written);
    }
    watcher.abort();
    if let Err(err) = consumer.commit_consumer_state(CommitMode::Sync) {
        // Nothing consumed yet has no state to commit; anything else means a redelivery later.
        debug!(cause = %err, "final commit");
    }
    consumer.unsubscribe();
    info!("sink stopped");
    Ok(())
}

/// The sink's counters of written batches.
struct Counts {
    rows_written: metrics::Counter,
    redeliveries: metrics::Counter,
    releases: metrics::Counter,
    batch_seconds: metrics::Histogram,
}

impl Counts {
    /// The counters, every one shown from the start (at zero until it counts).
    fn new() -> Self {
        metrics::counter!("coupon_sink_consumer_replacements_total").increment(0);
        for reason in ["malformed", "conflict", "refused"] {
            metrics::counter!("coupon_sink_failed_events_total", "reason" => reason).increment(0);
        }
        Self {
            rows_written: metrics::counter!("coupon_sink_rows_written_total"),
            redeliveries: metrics::counter!("coupon_sink_redeliveries_total"),
            releases: metrics::counter!("coupon_sink_releases_total"),
            batch_seconds: metrics::histogram!("coupon_sink_batch_seconds"),
        }
    }

    /// Counts what writing a batch did.
    fn record(&self, written: &Written) {
        self.rows_written.increment(written.inserted as u64);
        self.redeliveries
            .increment((written.admitted - written.inserted) as u64);
        self.releases.increment(written.released as u64);
        for (reason, count) in [
            ("malformed", written.malformed),
            ("conflict", written.conflicting),
            ("refused", written.refused()),
        ] {
            if count > 0 {
                metrics::counter!("coupon_sink_failed_events_total", "reason" => reason)
                    .increment(count as u64);
            }
        }
    }
}

/// A consumer of `client`'s configuration, reporting to a [`Rebalances`] of its own.
fn create(client: &ClientConfig, config: &Config) -> anyhow::Result<SinkConsumer> {
    client
        .create_with_context(Rebalances {
            topic: config.topic.topic.clone(),
        })
        .context("cannot create the Kafka consumer")
}

/// Replaces `failed`, a consumer librdkafka declared fatally failed, with a new one subscribed
/// to the topic. A static member (`group.instance.id`) whose session timed out while the broker
/// was slow rejoins under a new member id, and the broker then refuses the old one's commits as
/// fenced, which librdkafka treats as fatal: no later message or commit of that consumer can
/// succeed. What it had not committed is delivered again to the new one.
///
/// A consumer replaced again within [`REPLACED_AGAIN`] of the last time (two sinks sharing one
/// `group.instance.id` fence each other without end) waits a second first, or until `stop`.
async fn replace(
    client: &ClientConfig,
    config: &Config,
    failed: SinkConsumer,
    replaced: &mut Option<Instant>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<SinkConsumer> {
    let reason = failed.client().fatal_error().map_or_else(
        || "unknown".to_owned(),
        |(code, why)| format!("{code}: {why}"),
    );
    error!(%reason, "the Kafka consumer cannot go on; creating a new one");
    // A failed consumer commits nothing more; dropping it frees it (librdkafka may log that
    // closing its queue failed, for the same reason).
    drop(failed);
    if replaced.is_some_and(|at| at.elapsed() < REPLACED_AGAIN) {
        warn!(
            "the Kafka consumer was replaced less than {REPLACED_AGAIN:?} ago; is this sink's \
             group.instance.id (COUPON_SINK_INSTANCE_ID) given to another consumer as well?"
        );
        let mut stop = stop.clone();
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait_for(|stop| *stop) => {}
        }
    }
    *replaced = Some(Instant::now());
    let consumer = create(client, config)?;
    consumer
        .subscribe(&[config.topic.topic.as_str()])
        .context("cannot subscribe")?;
    metrics::counter!("coupon_sink_consumer_replacements_total").increment(1);
    Ok(consumer)
}

/// A consumer replaced again sooner than this after the last replacement waits a second first.
const REPLACED_AGAIN: Duration = Duration::from_secs(10);

/// What [`next_batch`] came back with.
enum Next {
    /// Messages to write.
    Batch(Vec<Item>),
    /// Shutdown came before any message.
    Stopped,
    /// The consumer failed fatally (see [`replace`]); what it gathered is dropped, uncommitted.
    Failed,
}

/// The consumer's librdkafka configuration: the group, manual commits, from the earliest offset,
/// with the operator's extra properties.
fn client_config(config: &Config) -> ClientConfig {
    let mut client = ClientConfig::new();
    if let Some(instance) = config.instance_id.as_deref().filter(|id| !id.is_empty()) {
        client.set("group.instance.id", instance);
    }
    client
        .set("bootstrap.servers", &config.kafka.kafka_brokers)
        .set("client.id", "coupon-sink")
        .set(
            "session.timeout.ms",
            config.session_timeout.as_millis().to_string(),
        )
        .set(
            "fetch.wait.max.ms",
            config.fetch_wait.as_millis().to_string(),
        )
        .set(
            "statistics.interval.ms",
            STATISTICS_INTERVAL.as_millis().to_string(),
        );
    for (key, value) in &config.kafka.kafka_properties {
        client.set(key, value);
    }
    client
        .set("group.id", &config.group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    client
}

/// What a sink waits for while the broker does not answer, naming the settings that say how it
/// is reached.
const BROKER_SETTINGS: &str = "the broker (KAFKA_BROKERS, COUPON_KAFKA_PROPERTIES)";

/// Waits until the broker answers and `topic` exists on it (the relay creates it), logging what
/// it waits for, so that a sink started before its broker subscribes once the topic is there
/// rather than after librdkafka's next periodic metadata refresh. `false` when stopped first.
async fn wait_for_topic(client: &ClientConfig, topic: &str, stop: watch::Receiver<bool>) -> bool {
    let found = patiently(stop, || {
        let probe = client.clone();
        let name = topic.to_owned();
        async move {
            let found =
                tokio::task::spawn_blocking(move || {
                    let consumer: BaseConsumer = probe.create()?;
                    let metadata = consumer.fetch_metadata(Some(&name), Duration::from_secs(2))?;
                    Ok::<_, rdkafka::error::KafkaError>(metadata.topics().iter().any(|t| {
                        t.name() == name && t.error().is_none() && !t.partitions().is_empty()
                    }))
                });
            match found.await {
                Ok(Ok(true)) => Ok(()),
                Ok(Ok(false)) => Err(Waiting::for_(format!(
                    "topic {topic} to be created (by a relay)"
                ))),
                Ok(Err(err)) => Err(Waiting::on(BROKER_SETTINGS, err)),
                Err(err) => Err(Waiting::on(BROKER_SETTINGS, err)),
            }
        }
    });
    found.await.is_some()
}

/// Waits for a first message, then gathers more for up to `config.linger` or until the batch
/// is full.
async fn next_batch(
    consumer: &SinkConsumer,
    config: &Config,
    mut stop: watch::Receiver<bool>,
) -> Next {
    let mut batch = Vec::with_capacity(config.batch_size);
    let mut deadline: Option<Instant> = None;
    while batch.len() < config.batch_size {
        let linger = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            received = consumer.recv() => match received {
                Ok(message) => {
                    let payload = message.payload().unwrap_or_default();
                    batch.push(Item::new(message.topic(), message.partition(), message.offset(), payload));
                    deadline.get_or_insert_with(|| Instant::now() + config.linger);
                }
                Err(err) => {
                    warn!(cause = %err, "kafka consumer error");
                    let fatal = matches!(err, KafkaError::MessageConsumptionFatal(_));
                    if fatal || consumer.client().fatal_error().is_some() {
                        return Next::Failed;
                    }
                }
            },
            () = linger => break,
            _ = stop.wait_for(|stop| *stop) => break,
        }
    }
    if batch.is_empty() {
        Next::Stopped
    } else {
        Next::Batch(batch)
    }
}

/// Writes `batch`, retrying transient failures until they pass. A batch that fails for a
/// reason about its data is written item by item, and each item that still fails is recorded
/// as a failed event, so one bad message never blocks the partition. `None` when `stop` came
/// while the database was unavailable: the batch was not (completely) written.
async fn write_with_retry(
    pool: &Pool,
    batch: &[Item],
    max_backoff: Duration,
    stop: &watch::Receiver<bool>,
) -> Option<Written> {
    match retry(|| db::write_batch(pool, batch), max_backoff, stop).await? {
        Ok(written) => Some(written),
        Err(err) => {
            warn!(cause = %err, messages = batch.len(), "batch refused by the database; writing its messages one by one");
            let mut total = Written::default();
            for item in batch {
                match retry(
                    || db::write_batch(pool, std::slice::from_ref(item)),
                    max_backoff,
                    stop,
                )
                .await?
                {
                    Ok(one) => {
                        total.admitted += one.admitted;
                        total.inserted += one.inserted;
                        total.released += one.released;
                        total.malformed += one.malformed;
                        total.conflicting += one.conflicting;
                        total.failed.extend(one.failed);
                    }
                    Err(err) => {
                        let reason = format!("the database refused this event: {err}");
                        // Recording the failure may itself meet a transient error; retry that too.
                        let recorded = retry(
                            || db::record_failure(pool, item, &reason),
                            max_backoff,
                            stop,
                        )
                        .await?;
                        if let Err(err) = recorded {
                            warn!(cause = %err, partition = item.partition, offset = item.offset, "cannot record a failed event; it will be redelivered");
                        }
                        total.failed.push((item.partition, item.offset, reason));
                    }
                }
            }
            Some(total)
        }
    }
}

/// Runs `op` until it succeeds or fails with an error that is not transient; `None` when
/// `stop` came while waiting to retry.
async fn retry<T, F, Fut>(
    mut op: F,
    max_backoff: Duration,
    stop: &watch::Receiver<bool>,
) -> Option<Result<T, mysql_async::Error>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, mysql_async::Error>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Err(err) if db::is_transient(&err) => {
                let wait = db::backoff(attempt, max_backoff);
                warn!(cause = %err, attempt, ?wait, "database unavailable; retrying the batch, offsets not committed");
                let mut stop = stop.clone();
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stop.wait_for(|stop| *stop) => return None,
                }
                attempt += 1;
            }
            other => return Some(other),
        }
    }
}

/// Commits, for each partition of `batch`, the offset after its last message.
fn commit(consumer: &SinkConsumer, batch: &[Item]) {
    let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for item in batch {
        let offset = next
            .entry((item.topic.as_str(), item.partition))
            .or_insert(0);
        *offset = (*offset).max(item.offset + 1);
    }
    let mut list = TopicPartitionList::new();
    for ((topic, partition), offset) in next {
        if let Err(err) = list.add_partition_offset(topic, partition, Offset::Offset(offset)) {
            warn!(cause = %err, "cannot build the offset commit");
            return;
        }
    }
    // Asynchronous: a commit lost in a crash only causes a redelivery, which is harmless.
    if let Err(err) = consumer.commit(&list, CommitMode::Async) {
        warn!(cause = %err, "offset commit failed; the batch may be redelivered");
    }
}
