//! The sink's test helpers: a fresh topic and database per test, the sink run in-process (or as
//! the real binary), and admissions as the relay writes them.

#![allow(dead_code, missing_docs, unused_imports)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub use coupon_testkit::{Process, Proxy, ScratchDb, brokers, eventually, free_port, produce};

use coupon_event::{CampaignId, Event, EventKind, UserId};
use coupon_sink::{Config, consumer, db};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A topic no other test uses, created with 3 partitions on `brokers`.
pub async fn fresh_topic(brokers: &str) -> String {
    let topic = format!("sink_{}", ScratchDb::new().name);
    coupon_relay::ensure_topic(brokers, &topic, 3, 1)
        .await
        .expect("create topic");
    topic
}

/// A message as the relay produces it: key and value of `kind` for `user` holding `seq`.
fn message(kind: EventKind, campaign: &str, user: u64, seq: u32) -> (String, Vec<u8>) {
    let event = Event {
        kind,
        campaign: CampaignId::new(campaign).unwrap(),
        user: UserId::from_number(user).unwrap(),
        seq,
        at: time::macros::datetime!(2026-11-24 06:00:00.123 UTC),
    };
    (event.key(), event.encode())
}

/// An admission message, as the relay produces it.
pub fn admitted(campaign: &str, user: u64, seq: u64) -> (String, Vec<u8>) {
    message(EventKind::Admitted, campaign, user, seq.try_into().unwrap())
}

/// A release message, as the relay produces it.
pub fn released(campaign: &str, user: u64, seq: u64) -> (String, Vec<u8>) {
    message(EventKind::Released, campaign, user, seq.try_into().unwrap())
}

/// The sink's configuration; `group` is made unique to the topic, so that tests never share a
/// consumer group.
pub fn config(database_url: &str, topic: &str, group: &str) -> Config {
    Config {
        database: coupon_cli::Database {
            database_url: database_url.to_owned(),
            ..Default::default()
        },
        kafka: coupon_cli::Kafka {
            kafka_brokers: brokers(),
            kafka_properties: Vec::new(),
        },
        topic: coupon_cli::Topic {
            topic: topic.to_owned(),
        },
        group: format!("{topic}-{group}"),
        batch_size: 200,
        linger: Duration::from_millis(10),
        max_backoff: Duration::from_millis(200),
        ..Config::default()
    }
}

/// The sink running in-process until [`Sink::stop`].
pub struct Sink {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Sink {
    pub async fn start(config: Config) -> Self {
        let pool = db::connect(&config.database.database_url)
            .await
            .expect("connect and migrate");
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let result = consumer::run(&config, &pool, async {
                let _ = stopped.await;
            })
            .await;
            pool.disconnect().await.ok();
            result
        });
        Self {
            stop: Some(stop),
            task,
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("the sink stops within 30s")
            .expect("task")
            .expect("the sink ends without error");
    }
}

/// The real `coupon-sink` binary, consuming until killed. Its log goes to `coupon-sink-*.log`
/// in the temp directory, named in the test's output.
pub fn spawn_binary(database_url: &str, topic: &str, group: &str) -> Process {
    let log = std::env::temp_dir().join(format!("coupon-sink-{topic}-{}.log", free_port()));
    eprintln!("coupon-sink log: {}", log.display());
    let log = std::fs::File::create(&log).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_coupon-sink"))
        .env("DATABASE_URL", database_url)
        .env("KAFKA_BROKERS", brokers())
        .env("COUPON_TOPIC", topic)
        .env("COUPON_SINK_GROUP", format!("{topic}-{group}"))
        .env("COUPON_SINK_BATCH", "100")
        .env("COUPON_SINK_INSTANCE_ID", "sink-1")
        .env(
            "COUPON_SINK_METRICS_ADDR",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("RUST_LOG", "coupon_sink=debug,info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(Process)
        .expect("coupon-sink binary")
}

pub async fn count(db: &ScratchDb, sql: &str) -> u64 {
    db.query::<u64>(sql)
        .await
        .first()
        .copied()
        .unwrap_or_default()
}

/// Waits until the coupon table holds `n` rows.
pub async fn wait_for_rows(db: &ScratchDb, n: u64, limit: Duration) {
    eventually(limit, &format!("{n} coupon rows"), || async {
        count(db, "SELECT COUNT(*) FROM coupon").await == n
    })
    .await;
}
