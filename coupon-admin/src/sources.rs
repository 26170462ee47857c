//! What each store says about one campaign.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use anyhow::Context;
use coupon_event::Event;
use coupon_gate::{CampaignId, UserId};
use mysql_async::Pool;
use mysql_async::prelude::Queryable;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// A pool of connections to the database coupon-sink writes to, after connecting once to its
/// server (not the database: one the sink has not created yet reads as empty).
///
/// # Errors
///
/// The server unreachable or refusing (the error names the settings in use), an invalid
/// `DATABASE_URL`, a CA file that cannot be read.
pub async fn database(database: &coupon_cli::Database) -> anyhow::Result<Pool> {
    let opts = database.opts()?;
    let name = mysql_async::Opts::from(opts.clone())
        .db_name()
        .map(str::to_owned);
    let (conn, opts) = database.connect(opts.db_name(None::<String>)).await?;
    conn.disconnect().await.ok();
    Ok(Pool::new(opts.db_name(name)))
}

/// The campaign's coupon rows in MySQL, as (user, seq), sorted by user. A database the sink has
/// not set up yet has none.
///
/// # Errors
///
/// MySQL unreachable or refusing the query for another reason, or a row whose user id the gate
/// would not accept.
pub async fn coupon_rows(pool: &Pool, campaign: &CampaignId) -> anyhow::Result<Vec<(UserId, u32)>> {
    let rows: Vec<(String, u32)> = query(
        pool,
        "SELECT user_id, seq FROM coupon WHERE campaign_id = ? ORDER BY user_id",
        campaign,
    )
    .await
    .context("cannot read the coupon table")?
    .unwrap_or_default();
    rows.into_iter()
        .map(|(user, seq)| {
            let id = UserId::new(user.as_str())
                .with_context(|| format!("coupon row of user {user:?}"))?;
            Ok((id, seq))
        })
        .collect()
}

/// How many coupon rows the campaign has in MySQL, counted there; none in a database the sink
/// has not set up yet.
///
/// # Errors
///
/// MySQL unreachable or refusing the query for another reason.
pub async fn coupon_count(pool: &Pool, campaign: &CampaignId) -> anyhow::Result<u64> {
    let count: Option<Vec<u64>> = query(
        pool,
        "SELECT COUNT(*) FROM coupon WHERE campaign_id = ?",
        campaign,
    )
    .await
    .context("cannot count the coupon rows")?;
    Ok(count.and_then(|c| c.first().copied()).unwrap_or(0))
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

/// Every event of the campaign on `topic` of the cluster `kafka` names (bootstrap servers and
/// the operator's librdkafka properties), from the beginning of every partition up to its high
/// watermark when reading starts, in partition order (so in order for each user, whose events
/// share a partition). Messages that are not events are skipped (they are the sink's failed
/// events). Uses no consumer group offsets: nothing is committed.
///
/// # Errors
///
/// The broker unreachable, the topic missing, or not every record read within `limit`.
pub async fn topic_events(
    kafka: &ClientConfig,
    topic: &str,
    campaign: &CampaignId,
    limit: Duration,
) -> anyhow::Result<Vec<Event>> {
    let consumer: StreamConsumer = kafka
        .clone()
        .set("group.id", "coupon-admin")
        .set("enable.auto.commit", "false")
        .create()
        .context("cannot create a Kafka consumer")?;
    // Where each partition ends now; records produced while reading are left out.
    let ends = tokio::task::spawn_blocking({
        let (kafka, topic) = (kafka.clone(), topic.to_owned());
        move || partition_ends(&kafka, &topic)
    })
    .await
    .context("reading the partitions' ends")??;
    let ends: HashMap<i32, i64> = ends
        .into_iter()
        .filter(|&(_, (low, high))| high > low)
        .map(|(partition, (_, high))| (partition, high))
        .collect();
    let mut assignment = TopicPartitionList::new();
    for partition in ends.keys() {
        assignment.add_partition_offset(topic, *partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut unfinished: HashSet<i32> = ends.keys().copied().collect();
    let deadline = tokio::time::Instant::now() + limit;
    let mut events = Vec::new();
    while !unfinished.is_empty() {
        let Ok(message) = tokio::time::timeout_at(deadline, consumer.recv()).await else {
            anyhow::bail!(
                "could not read topic {topic} to its end within {limit:?} ({} of {} partitions \
                 unfinished); raise --topic-timeout-ms if the broker is slow",
                unfinished.len(),
                ends.len()
            );
        };
        let message = message.context("reading the topic")?;
        let end = ends.get(&message.partition()).copied().unwrap_or(0);
        if message.offset() + 1 >= end {
            unfinished.remove(&message.partition());
        }
        if message.offset() >= end {
            continue;
        }
        if let Some(payload) = message.payload()
            && let Ok(event) = Event::decode(payload)
            && event.campaign == *campaign
        {
            events.push(event);
        }
    }
    Ok(events)
}

/// The low and high watermark of every partition of `topic`; blocks for up to 10 seconds per
/// request.
fn partition_ends(kafka: &ClientConfig, topic: &str) -> anyhow::Result<BTreeMap<i32, (i64, i64)>> {
    let consumer: BaseConsumer = kafka.create().context("cannot create a Kafka consumer")?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("cannot read the metadata of topic {topic}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .first()
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    anyhow::ensure!(
        !partitions.is_empty(),
        "topic {topic} does not exist or has no partitions"
    );
    partitions
        .into_iter()
        .map(|p| {
            let marks = consumer
                .fetch_watermarks(topic, p, timeout)
                .with_context(|| format!("cannot read where partition {p} of {topic} ends"))?;
            Ok((p, marks))
        })
        .collect()
}
