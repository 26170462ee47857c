//! The consume loop: batches from Kafka, written to MySQL, offsets committed after.
//!
//! At least once, and harmless when "more than once" happens: offsets are committed only after
//! the batch's transaction committed, so a crash in between redelivers the batch, and writing a
//! batch again changes nothing (see [`crate::db`]). While the database is unreachable or a lock
//! conflict persists, the batch is retried with backoff and nothing is committed; an event that
//! can never be written goes to `failed_event` and the partition moves on.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use mysql_async::Pool;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::Config;
use crate::db::{self, Item, Written};

type SinkConsumer = StreamConsumer<Rebalances>;

/// Logs every partition assignment and revocation: when a sink starts consuming, and when it
/// hands partitions over to another.
struct Rebalances;

impl ClientContext for Rebalances {}

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
            Rebalance::Revoke(list) => info!(partitions = %partitions(list), "partitions revoked"),
            Rebalance::Error(err) => warn!(cause = %err, "rebalance failed"),
        }
    }
}

/// Consumes `config.topic` into the database at `pool` until `shutdown` resolves; then finishes
/// the batch in hand, commits, and leaves the group.
///
/// # Errors
///
/// The consumer cannot be created or subscribed.
pub async fn run(
    config: &Config,
    pool: &Pool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut client = ClientConfig::new();
    if let Some(instance) = &config.instance_id {
        client.set("group.instance.id", instance);
    }
    client
        .set("bootstrap.servers", &config.brokers)
        .set("client.id", "coupon-sink")
        .set(
            "session.timeout.ms",
            config.session_timeout.as_millis().to_string(),
        )
        .set(
            "fetch.wait.max.ms",
            config.fetch_wait.as_millis().to_string(),
        );
    for (key, value) in &config.kafka_properties {
        client.set(key, value);
    }
    let consumer: SinkConsumer = client
        .set("group.id", &config.group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create_with_context(Rebalances)
        .context("cannot create the Kafka consumer")?;
    consumer
        .subscribe(&[config.topic.as_str()])
        .context("cannot subscribe")?;
    info!(topic = %config.topic, group = %config.group, "sink started");

    let (stop_tx, stop) = watch::channel(false);
    let watcher = tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    while !*stop.borrow() {
        let Some(batch) = next_batch(&consumer, config, stop.clone()).await else {
            break;
        };
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

/// Waits for a first message, then gathers more for up to `config.linger` or until the batch
/// is full. Returns `None` when shutdown came before any message.
async fn next_batch(
    consumer: &SinkConsumer,
    config: &Config,
    mut stop: watch::Receiver<bool>,
) -> Option<Vec<Item>> {
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
                Err(err) => warn!(cause = %err, "kafka consumer error"),
            },
            () = linger => break,
            _ = stop.wait_for(|stop| *stop) => break,
        }
    }
    (!batch.is_empty()).then_some(batch)
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
                        total.released += one.released;
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
