//! MySQL/MariaDB: connecting, migrations, and writing batches of events exactly once.
//!
//! A batch is written in one transaction: the coupon rows, the releases, and the failed events
//! of that batch together. Admissions go in as one multi-row `INSERT … ON DUPLICATE KEY UPDATE
//! id = id`, sorted by key so that concurrent sinks lock rows in the same order; the rows are
//! then read back, and only an existing row with the *same* (campaign, user, seq) counts as a
//! harmless redelivery. Any other collision (the user holds another seq, or the seq is held by
//! another user) is settled by the gate's stamps (`admitted_at`): events are keyed by user, so
//! the admission that took a released seq, or admitted a released user again, can arrive before
//! the release, and the gate stamps it later than the release and the release later than the
//! admission it undoes (coupon-gate's prelude.lua, `stamp`). The newer row wins; an admission
//! older than every row in its way was released before them and is passed over. A collision the
//! stamps cannot order (one stamp, or rows on both sides of it) is reported as a failed event,
//! never hidden. Unlike `INSERT IGNORE`, this form keeps strict mode's errors for truncation and
//! out-of-range values.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use coupon_event::{Event, EventKind, InvalidEvent};
use mysql_async::prelude::*;
use mysql_async::{Opts, OptsBuilder, Pool, Transaction, TxOpts, Value};
use time::OffsetDateTime;
use tokio::sync::watch;

use coupon_cli::{Waiting, patiently};

/// The migrations, in order; applied at start, each once.
const MIGRATIONS: [(u32, &str, &str); 3] = [
    (1, "coupon", include_str!("../migrations/0001_coupon.sql")),
    (
        2,
        "failed_event",
        include_str!("../migrations/0002_failed_event.sql"),
    ),
    (
        3,
        "user_id_text",
        include_str!("../migrations/0003_user_id_text.sql"),
    ),
];

/// Session settings every connection starts with: UTC, and strict mode so that a value that does
/// not fit is an error rather than silently cut.
const SESSION_INIT: [&str; 2] = [
    "SET time_zone = '+00:00'",
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ENGINE_SUBSTITUTION'",
];

/// The database settings, checked: where to connect and how (TLS), and the database to create
/// and use.
pub struct Database {
    settings: coupon_cli::Database,
    base: OptsBuilder,
    name: String,
}

impl Database {
    /// Checks `url`, with the default TLS for its host: see [`Database::new`].
    ///
    /// # Errors
    ///
    /// As [`Database::new`].
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        Self::new(&coupon_cli::Database {
            database_url: url.to_owned(),
            ..coupon_cli::Database::default()
        })
    }

    /// Checks `settings`: the URL must parse and name a database of letters, digits and `_`,
    /// and a CA file must be readable.
    ///
    /// # Errors
    ///
    /// A URL that does not parse, names no database, or one of another name; a CA file that
    /// cannot be read.
    pub fn new(settings: &coupon_cli::Database) -> anyhow::Result<Self> {
        let opts = settings.opts()?;
        let name = Opts::from(opts.clone())
            .db_name()
            .map(str::to_owned)
            .context(
                "DATABASE_URL must name a database, e.g. mysql://root@127.0.0.1:3306/coupon",
            )?;
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            anyhow::bail!("database name {name:?} must be letters, digits and '_' only");
        }
        // Without CLIENT_FOUND_ROWS a row left as it was by `ON DUPLICATE KEY UPDATE` counts as
        // 0 affected, which `insert_admissions` relies on; a URL may not turn it on.
        let base = opts
            .client_found_rows(false)
            .prefer_socket(false)
            .init(SESSION_INIT.to_vec());
        Ok(Self {
            settings: settings.clone(),
            base,
            name,
        })
    }

    /// Connects, creating the database if it does not exist, and applies the migrations.
    ///
    /// # Errors
    ///
    /// A server that cannot be reached (named with the settings in use), or a migration that
    /// fails.
    pub async fn open(&self) -> anyhow::Result<Pool> {
        let (mut server, base) = self
            .settings
            .connect(self.base.clone().db_name(None::<String>))
            .await?;
        server
            .query_drop(format!("CREATE DATABASE IF NOT EXISTS `{}`", self.name))
            .await
            .context("cannot create the database")?;
        server.disconnect().await.ok();

        let pool = Pool::new(base.db_name(Some(self.name.clone())));
        migrate(&pool).await?;
        Ok(pool)
    }

    /// [`Database::open`], tried again until it succeeds (after 100 ms, then twice as long each
    /// time, at most a second), each failure logged with what is waited for; `None` once `stop`
    /// turns true first.
    pub async fn open_patiently(&self, stop: watch::Receiver<bool>) -> Option<Pool> {
        patiently(stop, || async {
            self.open()
                .await
                .map_err(|err| Waiting::on("the database", err))
        })
        .await
    }
}

/// Connects to `url` (with the default TLS for its host), creating its database if it does not
/// exist, and applies the migrations.
///
/// # Errors
///
/// An invalid URL, a server that cannot be reached, or a migration that fails.
pub async fn connect(url: &str) -> anyhow::Result<Pool> {
    Database::parse(url)?.open().await
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
    pub event: Result<Event, InvalidEvent>,
}

impl Item {
    /// Parses `payload` received at `topic`/`partition`/`offset`.
    pub fn new(topic: &str, partition: i32, offset: i64, payload: &[u8]) -> Self {
        Self {
            topic: topic.to_owned(),
            partition,
            offset,
            payload: payload.to_vec(),
            event: Event::decode(payload),
        }
    }
}

/// What writing a batch did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Coupon rows inserted or found already present with the same content.
    pub admitted: usize,
    /// Of those, the rows inserted; the others were there already (a redelivery).
    pub inserted: usize,
    /// Release events applied (the row removed, or already absent).
    pub released: usize,
    /// Items recorded in `failed_event`, with the reason, by position.
    pub failed: Vec<(i32, i64, String)>,
    /// Of those, the items that are no event.
    pub malformed: usize,
    /// Of those, the admissions that collide with another row.
    pub conflicting: usize,
}

impl Written {
    /// The failed items the database refused (neither malformed nor conflicting).
    pub fn refused(&self) -> usize {
        self.failed.len() - self.malformed - self.conflicting
    }
}

/// One step of writing a batch, in the order of the items: a run of admissions goes in as one
/// insert; a release ends a run, so that for one user an admission, its release and a later
/// re-admission apply in the order they were made.
enum Step<'a> {
    Admit(Vec<(&'a Item, &'a Event)>),
    Release(&'a Event),
}

/// Splits `items` into steps, and the items that are no event into failures.
fn plan(items: &[Item]) -> (Vec<Step<'_>>, Vec<(&Item, String)>) {
    let mut steps = Vec::new();
    let mut failures = Vec::new();
    let mut run = Vec::new();
    for item in items {
        match &item.event {
            Err(reason) => failures.push((item, reason.to_string())),
            Ok(event) if event.kind == EventKind::Admitted => run.push((item, event)),
            Ok(event) => {
                if !run.is_empty() {
                    steps.push(Step::Admit(std::mem::take(&mut run)));
                }
                steps.push(Step::Release(event));
            }
        }
    }
    if !run.is_empty() {
        steps.push(Step::Admit(run));
    }
    (steps, failures)
}

/// Writes `items` in one transaction.
///
/// # Errors
///
/// A database error; nothing of the batch is then written. See [`is_transient`].
pub async fn write_batch(pool: &Pool, items: &[Item]) -> Result<Written, mysql_async::Error> {
    let (steps, mut failures) = plan(items);
    let mut conn = pool.get_conn().await?;
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    let mut written = Written {
        malformed: failures.len(),
        ..Written::default()
    };
    for step in steps {
        match step {
            Step::Admit(mut run) => {
                let inserted = insert_admissions(&mut tx, &mut run).await?;
                written.admitted += inserted.admitted;
                written.inserted += inserted.new_rows;
                written.conflicting += inserted.conflicts.len();
                failures.extend(inserted.conflicts);
            }
            Step::Release(event) => {
                release(&mut tx, event).await?;
                written.released += 1;
            }
        }
    }
    record_failures(&mut tx, &failures).await?;
    tx.commit().await?;
    written.failed = failures
        .into_iter()
        .map(|(item, reason)| (item.partition, item.offset, reason))
        .collect();
    Ok(written)
}

/// What inserting a run of admissions did.
struct Inserted<'a> {
    /// Rows inserted, or found already present with the same content (a redelivery).
    admitted: usize,
    /// Of those, the rows inserted.
    new_rows: usize,
    /// Admissions that collide with another row, with the reason.
    conflicts: Vec<(&'a Item, String)>,
}

/// Inserts a run of admissions and checks that each landed as itself.
async fn insert_admissions<'a>(
    tx: &mut Transaction<'_>,
    run: &mut [(&'a Item, &'a Event)],
) -> Result<Inserted<'a>, mysql_async::Error> {
    run.sort_by(|a, b| (&a.1.campaign, &a.1.user).cmp(&(&b.1.campaign, &b.1.user)));
    let mut params: Vec<Value> = Vec::with_capacity(run.len() * 4);
    for (_, e) in run.iter() {
        params.extend([
            e.campaign.as_str().into(),
            e.user.as_str().into(),
            e.seq.into(),
            datetime(e.at),
        ]);
    }
    let rows = vec!["(?, ?, ?, ?)"; run.len()].join(", ");
    tx.exec_drop(
        format!("INSERT INTO coupon (campaign_id, user_id, seq, admitted_at) VALUES {rows} ON DUPLICATE KEY UPDATE id = id"),
        params,
    )
    .await?;
    // Each new row counts 1 and each existing one 0: when all are new, each landed as itself.
    let new_rows = usize::try_from(tx.affected_rows()).unwrap_or(usize::MAX);
    if new_rows == run.len() {
        return Ok(Inserted {
            admitted: run.len(),
            new_rows,
            conflicts: Vec::new(),
        });
    }

    // Some (campaign, user) or (campaign, seq) existed: read every row either could be, and
    // settle each admission against them in the order the gate stamped them.
    let mut existing = Existing::read(tx, run).await?;
    let mut inserted = Inserted {
        admitted: 0,
        new_rows,
        conflicts: Vec::new(),
    };
    let mut order: Vec<&(&'a Item, &'a Event)> = run.iter().collect();
    order.sort_by_key(|(_, e)| e.at);
    for &&(item, e) in &order {
        let campaign = e.campaign.as_str();
        let stamp = stamp_of(e.at);
        let by_user = existing.row_of_user(campaign, e.user.as_str());
        if by_user.as_ref().is_some_and(|row| row.seq == e.seq) {
            // Itself: inserted now, or there already (a redelivery).
            inserted.admitted += 1;
            continue;
        }
        let by_seq = existing.row_of_seq(campaign, e.seq);
        let clashing: Vec<Row> = by_user.into_iter().chain(by_seq).collect();
        if clashing.iter().all(|row| row.stamp < stamp) {
            // Every row in the way is older: its release, stamped between it and this
            // admission, is on its way on another partition (events are keyed by user).
            for row in &clashing {
                delete_row(tx, campaign, &row.user, row.seq).await?;
                existing.remove(campaign, row);
            }
            tx.exec_drop(
                "INSERT INTO coupon (campaign_id, user_id, seq, admitted_at) VALUES (?, ?, ?, ?)",
                (campaign, e.user.as_str(), e.seq, datetime(e.at)),
            )
            .await?;
            existing.insert(
                campaign,
                Row {
                    user: e.user.as_str().to_owned(),
                    seq: e.seq,
                    stamp,
                },
            );
            inserted.admitted += 1;
            inserted.new_rows += 1;
        } else if clashing.iter().all(|row| row.stamp > stamp) {
            // This admission is older than the rows in the way: it was released before they
            // were admitted, and its release removes nothing when it comes.
            tracing::debug!(campaign, user = %e.user, seq = e.seq, "admission superseded by a later one");
            inserted.admitted += 1;
        } else {
            let reason = match clashing.iter().find(|row| row.user == e.user.as_str()) {
                Some(row) => format!(
                    "user {} already holds seq {} of campaign {campaign}, not seq {}",
                    e.user, row.seq, e.seq
                ),
                None => format!(
                    "seq {} of campaign {campaign} is held by user {}, not user {}",
                    e.seq, clashing[0].user, e.user
                ),
            };
            inserted.conflicts.push((item, reason));
        }
    }
    Ok(inserted)
}

/// A coupon row as the conflict check reads it.
#[derive(Clone, Debug)]
struct Row {
    user: String,
    seq: u32,
    /// `admitted_at` as [`stamp_of`] writes it.
    stamp: String,
}

/// A stamp as text that sorts as the time does: `YYYYMMDDhhmmssffffff`, UTC, as MariaDB's
/// `DATE_FORMAT(admitted_at, '%Y%m%d%H%i%s%f')` writes a `DATETIME(3)`.
fn stamp_of(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}{:06}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        u32::from(at.millisecond()) * 1000
    )
}

/// The rows that share a (campaign, user) or a (campaign, seq) with a run of admissions.
struct Existing {
    /// (campaign, user) -> row.
    by_user: HashMap<(String, String), Row>,
    /// (campaign, seq) -> row.
    by_seq: HashMap<(String, u32), Row>,
}

impl Existing {
    /// Reads them in one query.
    async fn read(
        tx: &mut Transaction<'_>,
        run: &[(&Item, &Event)],
    ) -> Result<Self, mysql_async::Error> {
        let mut by_campaign: HashMap<&str, (Vec<&str>, Vec<u32>)> = HashMap::new();
        for (_, e) in run {
            let (users, seqs) = by_campaign.entry(e.campaign.as_str()).or_default();
            users.push(e.user.as_str());
            seqs.push(e.seq);
        }
        let mut clauses = Vec::with_capacity(by_campaign.len());
        let mut params: Vec<Value> = Vec::new();
        for (campaign, (users, seqs)) in &by_campaign {
            clauses.push(format!(
                "(campaign_id = ? AND (user_id IN ({}) OR seq IN ({})))",
                vec!["?"; users.len()].join(", "),
                vec!["?"; seqs.len()].join(", ")
            ));
            params.push((*campaign).into());
            params.extend(users.iter().map(|&u| Value::from(u)));
            params.extend(seqs.iter().map(|&s| Value::from(s)));
        }
        let rows: Vec<(String, String, u32, String)> = tx
            .exec(
                format!(
                    "SELECT campaign_id, user_id, seq, DATE_FORMAT(admitted_at, '%Y%m%d%H%i%s%f') \
                     FROM coupon WHERE {}",
                    clauses.join(" OR ")
                ),
                params,
            )
            .await?;
        let mut existing = Self {
            by_user: HashMap::with_capacity(rows.len()),
            by_seq: HashMap::with_capacity(rows.len()),
        };
        for (campaign, user, seq, stamp) in rows {
            existing.insert(&campaign, Row { user, seq, stamp });
        }
        Ok(existing)
    }

    fn insert(&mut self, campaign: &str, row: Row) {
        self.by_user
            .insert((campaign.to_owned(), row.user.clone()), row.clone());
        self.by_seq.insert((campaign.to_owned(), row.seq), row);
    }

    fn remove(&mut self, campaign: &str, row: &Row) {
        self.by_user
            .remove(&(campaign.to_owned(), row.user.clone()));
        self.by_seq.remove(&(campaign.to_owned(), row.seq));
    }

    fn row_of_user(&self, campaign: &str, user: &str) -> Option<Row> {
        self.by_user
            .get(&(campaign.to_owned(), user.to_owned()))
            .cloned()
    }

    fn row_of_seq(&self, campaign: &str, seq: u32) -> Option<Row> {
        self.by_seq.get(&(campaign.to_owned(), seq)).cloned()
    }
}

/// A time as a `DATETIME(3)` value: UTC, to the millisecond.
fn datetime(at: OffsetDateTime) -> Value {
    let at = at.to_offset(time::UtcOffset::UTC);
    // The event decoder refused years outside 1970..=9999, which fit a u16.
    Value::Date(
        u16::try_from(at.year()).unwrap_or(9999),
        at.month().into(),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        u32::from(at.millisecond()) * 1000,
    )
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

/// Removes exactly the row of a release's coupon; a row already gone is fine (a redelivered
/// release).
async fn release(tx: &mut Transaction<'_>, event: &Event) -> Result<(), mysql_async::Error> {
    delete_row(tx, event.campaign.as_str(), event.user.as_str(), event.seq).await
}

/// Removes exactly the row of `user` holding `seq` of `campaign`, if it is there.
async fn delete_row(
    tx: &mut Transaction<'_>,
    campaign: &str,
    user: &str,
    seq: u32,
) -> Result<(), mysql_async::Error> {
    tx.exec_drop(
        "DELETE FROM coupon WHERE campaign_id = ? AND user_id = ? AND seq = ?",
        (campaign, user, seq),
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
}
