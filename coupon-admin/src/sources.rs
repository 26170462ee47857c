//! What each store says about one campaign.

use std::time::Duration;

use anyhow::Context;
use coupon_gate::CampaignId;
use coupon_sink::event::Event;
use mysql_async::Pool;
use mysql_async::prelude::Queryable;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The campaign's coupon rows in MySQL, as (user, seq), sorted by user. A database the sink has
/// not set up yet has none.
///
/// # Errors
///
/// MySQL unreachable or refusing the query for another reason.
pub async fn coupon_rows(pool: &Pool, campaign: &CampaignId) -> anyhow::Result<Vec<(u64, u32)>> {
    let rows = query(
        pool,
        "SELECT user_id, seq FROM coupon WHERE campaign_id = ? ORDER BY user_id",
        campaign,
    )
    .await
    .context("cannot read the coupon table")?;
    Ok(rows.unwrap_or_default())
}

/// Unresolved failed events that name the campaign; none in a database the sink has not set up
/// yet.
///
/// # Errors
///
/// MySQL unreachable or refusing the query for another reason.
pub async fn unresolved_failures(pool: &Pool, campaign: &CampaignId) -> anyhow::Result<u64> {
    let count: Option<Vec<u64>> = query(
        pool,
        "SELECT COUNT(*) FROM failed_event WHERE resolved_at IS NULL \
         AND JSON_VALUE(CONVERT(payload USING utf8mb4), '$.campaignId') = ?",
        campaign,
    )
    .await
    .context("cannot read the failed_event table")?;
    Ok(count.and_then(|c| c.first().copied()).unwrap_or(0))
}

/// Runs `sql` with the campaign id; `None` when the database or table does not exist yet.
async fn query<T: mysql_async::prelude::FromRow + Send + 'static>(
    pool: &Pool,
    sql: &str,
    campaign: &CampaignId,
) -> Result<Option<Vec<T>>, mysql_async::Error> {
    // ER_BAD_DB_ERROR, ER_NO_SUCH_TABLE
    let not_created = |err: &mysql_async::Error| matches!(err, mysql_async::Error::Server(e) if e.code == 1049 || e.code == 1146);
    let mut conn = match pool.get_conn().await {
        Ok(conn) => conn,
        Err(err) if not_created(&err) => return Ok(None),
        Err(err) => return Err(err),
    };
    match conn.exec(sql, (campaign.as_str(),)).await {
        Ok(rows) => Ok(Some(rows)),
        Err(err) if not_created(&err) => Ok(None),
        Err(err) => Err(err),
    }
}

/// Every event of the campaign on `topic`, from the beginning of every partition, in partition
/// order (so in order for each user, whose events share a partition). Reading stops once no
/// message arrived for `idle`; messages that are not events are skipped (they are the sink's
/// failed events). Uses no consumer group offsets: nothing is committed.
///
/// # Errors
///
/// The broker unreachable or the topic missing.
pub async fn topic_events(
    brokers: &str,
    topic: &str,
    campaign: &CampaignId,
    idle: Duration,
) -> anyhow::Result<Vec<Event>> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "coupon-admin")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .context("cannot create a Kafka consumer")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("cannot read the metadata of topic {topic}"))?;
    let partitions = metadata
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    anyhow::ensure!(
        partitions > 0,
        "topic {topic} does not exist or has no partitions"
    );
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions as i32 {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut events = Vec::new();
    loop {
        let message = match tokio::time::timeout(idle, consumer.recv()).await {
            Err(_) => break,
            Ok(message) => message.context("reading the topic")?,
        };
        let Some(payload) = message.payload() else {
            continue;
        };
        if let Ok(event) = Event::parse(payload)
            && coupon(&event).campaign == *campaign
        {
            events.push(event);
        }
    }
    Ok(events)
}

/// The coupon an event is about.
pub fn coupon(event: &Event) -> &coupon_sink::event::Coupon {
    match event {
        Event::Admitted(c) | Event::Released(c) => c,
    }
}
