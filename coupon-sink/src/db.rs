//! MySQL/MariaDB: connecting, migrations, and writing batches of events exactly once.
//!
//! A batch is written in one transaction: the coupon rows, the releases, and the failed events
//! of that batch together. Admissions go in as one multi-row `INSERT … ON DUPLICATE KEY UPDATE
//! id = id`, sorted by key so that concurrent sinks lock rows in the same order; the rows are
//! then read back, and only an existing row with the *same* (campaign, user, seq) counts as a
//! harmless redelivery. Any other collision (the user holds another seq, or the seq is held by
//! another user) is reported as a failed event, never hidden. Unlike `INSERT IGNORE`, this form
//! keeps strict mode's errors for truncation and out-of-range values.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, OptsBuilder, Pool, Transaction, TxOpts, Value};

use crate::event::{Coupon, Event};

/// The migrations, in order; applied at start, each once.
const MIGRATIONS: [(u32, &str, &str); 2] = [
    (1, "coupon", include_str!("../migrations/0001_coupon.sql")),
    (
        2,
        "failed_event",
        include_str!("../migrations/0002_failed_event.sql"),
    ),
];

/// Session settings every connection starts with: UTC, and strict mode so that a value that does
/// not fit is an error rather than silently cut.
const SESSION_INIT: [&str; 2] = [
    "SET time_zone = '+00:00'",
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ENGINE_SUBSTITUTION'",
];

/// Connects to `url`, creating its database if it does not exist, and applies the migrations.
///
/// # Errors
///
/// An invalid URL, a server that cannot be reached, or a migration that fails.
pub async fn connect(url: &str) -> anyhow::Result<Pool> {
    let opts = Opts::from_url(url).with_context(|| format!("invalid DATABASE_URL {url:?}"))?;
    let database = opts
        .db_name()
        .map(str::to_owned)
        .context("DATABASE_URL must name a database, e.g. mysql://root@127.0.0.1:3306/coupon")?;
    if !database
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        anyhow::bail!("database name {database:?} must be letters, digits and '_' only");
    }
    // Without CLIENT_FOUND_ROWS a row left as it was by `ON DUPLICATE KEY UPDATE` counts as
    // 0 affected, which `insert_run` relies on; a URL may not turn it on.
    let base = OptsBuilder::from_opts(opts)
        .client_found_rows(false)
        .prefer_socket(false)
        .init(SESSION_INIT.to_vec());

    let mut server = Conn::new(base.clone().db_name(None::<String>))
        .await
        .with_context(|| format!("cannot connect to MySQL at {}", redact(url)))?;
    server
        .query_drop(format!("CREATE DATABASE IF NOT EXISTS `{database}`"))
        .await
        .context("cannot create the database")?;
    server.disconnect().await.ok();

    let pool = Pool::new(base);
    migrate(&pool).await?;
    Ok(pool)
}

/// Applies every migration not yet recorded in `schema_migrations`, under a named lock so that
/// two sinks starting together do not race.
async fn migrate(pool: &Pool) -> anyhow::Result<()> {
    let mut conn = pool.get_conn().await.context("cannot connect to MySQL")?;
    let locked: Option<i64> = conn
        .query_first("SELECT GET_LOCK('coupon_sink_migrations', 30)")
        .await?;
    anyhow::ensure!(
        locked == Some(1),
        "another process held the migration lock for 30s"
    );
    let result = async {
        conn.query_drop(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INT UNSIGNED PRIMARY KEY, name VARCHAR(64) NOT NULL, \
             applied_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)) ENGINE = InnoDB",
        )
        .await?;
        let applied: Vec<u32> = conn.query("SELECT version FROM schema_migrations").await?;
        for (version, name, sql) in MIGRATIONS {
            if applied.contains(&version) {
                continue;
            }
            conn.query_drop(sql).await.with_context(|| format!("migration {version} ({name}) failed"))?;
            conn.exec_drop("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", (version, name)).await?;
            tracing::info!(version, name, "applied migration");
        }
        anyhow::Ok(())
    }
    .await;
    conn.query_drop("DO RELEASE_LOCK('coupon_sink_migrations')")
        .await
        .ok();
    result
}

/// One message to write: where it came from, its raw payload, and what it parsed to.
#[derive(Clone, Debug)]
pub struct Item {
    /// Topic of the message.
    pub topic: String,
    /// Partition of the message.
    pub partition: i32,
    /// Offset of the message.
    pub offset: i64,
    /// The payload as received, kept for the failed-event table.
    pub payload: Vec<u8>,
    /// The event, or why the payload is not one.
    pub event: Result<Event, String>,
}

impl Item {
    /// Parses `payload` received at `topic`/`partition`/`offset`.
    pub fn new(topic: &str, partition: i32, offset: i64, payload: &[u8]) -> Self {
        Self {
            topic: topic.to_owned(),
            partition,
            offset,
            payload: payload.to_vec(),
            event: Event::parse(payload),
        }
    }
}

/// What writing a batch did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Coupon rows inserted or found already present with the same content.
    pub admitted: usize,
    /// Release events applied (the row removed, or already absent).
    pub released: usize,
    /// Items recorded in `failed_event`, with the reason, by position.
    pub failed: Vec<(i32, i64, String)>,
}

/// Writes `items` in one transaction.
///
/// # Errors
///
/// A database error; nothing of the batch is then written. See [`is_transient`].
pub async fn write_batch(pool: &Pool, items: &[Item]) -> Result<Written, mysql_async::Error> {
    let mut conn = pool.get_conn().await?;
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    let mut written = Written::default();
    let mut failures: Vec<(&Item, String)> = Vec::new();
    // Admissions are written in runs; a release ends a run so that, for one user, an admission,
    // its release and a later re-admission apply in the order they were made.
    let mut run: Vec<(&Item, &Coupon)> = Vec::new();
    for item in items {
        match &item.event {
            Err(reason) => failures.push((item, reason.clone())),
            Ok(Event::Admitted(coupon)) => run.push((item, coupon)),
            Ok(Event::Released(coupon)) => {
                insert_run(&mut tx, &mut run, &mut written, &mut failures).await?;
                release(&mut tx, coupon).await?;
                written.released += 1;
            }
        }
    }
    insert_run(&mut tx, &mut run, &mut written, &mut failures).await?;
    record_failures(&mut tx, &failures).await?;
    tx.commit().await?;
    written.failed = failures
        .into_iter()
        .map(|(item, reason)| (item.partition, item.offset, reason))
        .collect();
    Ok(written)
}

/// Inserts a run of admissions, checks each landed as itself, and empties the run.
async fn insert_run<'a>(
    tx: &mut Transaction<'_>,
    run: &mut Vec<(&'a Item, &'a Coupon)>,
    written: &mut Written,
    failures: &mut Vec<(&'a Item, String)>,
) -> Result<(), mysql_async::Error> {
    if run.is_empty() {
        return Ok(());
    }
    run.sort_by(|a, b| (&a.1.campaign, a.1.user).cmp(&(&b.1.campaign, b.1.user)));
    let mut params: Vec<Value> = Vec::with_capacity(run.len() * 4);
    for (_, c) in run.iter() {
        params.extend([
            c.campaign.as_str().into(),
            c.user.get().into(),
            c.seq.into(),
            c.at.as_str().into(),
        ]);
    }
    let rows = vec!["(?, ?, ?, ?)"; run.len()].join(", ");
    tx.exec_drop(
        format!("INSERT INTO coupon (campaign_id, user_id, seq, admitted_at) VALUES {rows} ON DUPLICATE KEY UPDATE id = id"),
        params,
    )
    .await?;
    // Each new row counts 1 and each existing one 0: when all are new, each landed as itself.
    if tx.affected_rows() == run.len() as u64 {
        written.admitted += run.len();
        run.clear();
        return Ok(());
    }

    // Some (campaign, user) or (campaign, seq) existed: read back what each holds now. Keys
    // borrow the batch's own campaign ids, so the check allocates nothing per row.
    let mut by_campaign: BTreeMap<&'a str, Vec<u64>> = BTreeMap::new();
    for &(_, c) in run.iter() {
        by_campaign
            .entry(c.campaign.as_str())
            .or_default()
            .push(c.user.get());
    }
    let mut held: BTreeMap<(&'a str, u64), u32> = BTreeMap::new();
    for (campaign, users) in by_campaign {
        let marks = vec!["?"; users.len()].join(", ");
        let mut params: Vec<Value> = vec![campaign.into()];
        params.extend(users.into_iter().map(Value::from));
        let found: Vec<(u64, u32)> = tx
            .exec(
                format!(
                    "SELECT user_id, seq FROM coupon WHERE campaign_id = ? AND user_id IN ({marks})"
                ),
                params,
            )
            .await?;
        held.extend(found.into_iter().map(|(user, seq)| ((campaign, user), seq)));
    }
    for (item, c) in run.drain(..) {
        match held.get(&(c.campaign.as_str(), c.user.get())) {
            Some(&seq) if seq == c.seq => written.admitted += 1,
            Some(&seq) => failures.push((
                item,
                format!(
                    "user {} already holds seq {seq} of campaign {}, not seq {}",
                    c.user, c.campaign, c.seq
                ),
            )),
            None => {
                let holder: Option<u64> = tx
                    .exec_first(
                        "SELECT user_id FROM coupon WHERE campaign_id = ? AND seq = ?",
                        (c.campaign.as_str(), c.seq),
                    )
                    .await?;
                let holder =
                    holder.map_or_else(|| "another user".to_owned(), |u| format!("user {u}"));
                failures.push((
                    item,
                    format!(
                        "seq {} of campaign {} is held by {holder}, not user {}",
                        c.seq, c.campaign, c.user
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Records `item` as failed with `reason`, in a transaction of its own: for an item whose own
/// write failed with an error about its data.
///
/// # Errors
///
/// A database error.
pub async fn record_failure(
    pool: &Pool,
    item: &Item,
    reason: &str,
) -> Result<(), mysql_async::Error> {
    let mut conn = pool.get_conn().await?;
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    record_failures(&mut tx, &[(item, reason.to_owned())]).await?;
    tx.commit().await
}

/// Removes exactly the row of `coupon`; a row already gone is fine (a redelivered release).
async fn release(tx: &mut Transaction<'_>, coupon: &Coupon) -> Result<(), mysql_async::Error> {
    tx.exec_drop(
        "DELETE FROM coupon WHERE campaign_id = ? AND user_id = ? AND seq = ?",
        (coupon.campaign.as_str(), coupon.user.get(), coupon.seq),
    )
    .await
}

async fn record_failures(
    tx: &mut Transaction<'_>,
    failures: &[(&Item, String)],
) -> Result<(), mysql_async::Error> {
    for (item, reason) in failures {
        tracing::warn!(partition = item.partition, offset = item.offset, reason = %reason, "event recorded as failed");
        tx.exec_drop(
            "INSERT INTO failed_event (payload, topic, kafka_partition, kafka_offset, error) VALUES (?, ?, ?, ?, ?) \
             ON DUPLICATE KEY UPDATE attempts = attempts + 1, last_seen_at = CURRENT_TIMESTAMP(3), error = VALUES(error)",
            (item.payload.as_slice(), item.topic.as_str(), item.partition, item.offset, reason.as_str()),
        )
        .await?;
    }
    Ok(())
}

/// Whether `err` may go away by itself: the connection or server is gone, or a lock conflict
/// (deadlock 1213, lock wait timeout 1205). Such a batch is retried; any other error is about
/// the data.
pub fn is_transient(err: &mysql_async::Error) -> bool {
    match err {
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => true,
        // 1040 too many connections, 1053 server shutdown, 1205 lock wait timeout, 1213
        // deadlock, 1290 read-only (failover), 1927 connection killed, 4031 idle disconnect.
        mysql_async::Error::Server(e) => {
            matches!(e.code, 1040 | 1053 | 1205 | 1213 | 1290 | 1927 | 4031)
        }
        _ => false,
    }
}

/// Backoff before retry `attempt` (from 0): doubling from 50 ms up to `max`.
pub fn backoff(attempt: u32, max: Duration) -> Duration {
    Duration::from_millis(50)
        .saturating_mul(1 << attempt.min(16))
        .min(max)
}

/// `url` without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let max = Duration::from_secs(2);
        assert_eq!(backoff(0, max), Duration::from_millis(50));
        assert_eq!(backoff(3, max), Duration::from_millis(400));
        assert_eq!(backoff(30, max), max);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("mysql://root:secret@db:3306/coupon"),
            "mysql://root:***@db:3306/coupon"
        );
        assert_eq!(
            redact("mysql://root@127.0.0.1:3306/coupon"),
            "mysql://root:***@127.0.0.1:3306/coupon"
        );
        assert_eq!(redact("nonsense"), "nonsense");
    }
}
