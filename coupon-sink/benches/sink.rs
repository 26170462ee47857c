//! Rows per second into MariaDB (`TEST_MYSQL_URL`, default `mysql://root@127.0.0.1:3306`).
//!
//! - `write_batch/500`: the sink's batch write: one transaction with a 500-row `INSERT … ON
//!   DUPLICATE KEY UPDATE`, the read-back that tells redeliveries from conflicts, and commit.
//! - `plain_insert/500` (reference, same run): the same 500 rows as one plain multi-row
//!   `INSERT` in autocommit, with no checks: what the server does for the rows alone.
//! - `drain/20000`: 20,000 admissions waiting on a fresh topic of 3 partitions, consumed by a
//!   fresh sink (`consumer::run`); the time is from the first row's `created_at` to the last
//!   one's, so neither producing nor the consumer group join is in it.
//! - `drain_one_partition/20000`: the same on a topic of one partition: what one partition
//!   carries, as one sink at a time reads it.

use std::time::Duration;

use coupon_event::{CampaignId, Event, EventKind, UserId};
use coupon_sink::db::{self, Item};
use coupon_sink::{Config, consumer};
use coupon_testkit::{ScratchDb, brokers, produce};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mysql_async::prelude::*;
use tokio::runtime::Runtime;

const BATCH: u64 = 500;
const DRAIN: u64 = 20_000;

/// An admission of `user` to slot `user`, as the relay writes it.
fn payload(campaign: &str, user: u64) -> Vec<u8> {
    Event {
        kind: EventKind::Admitted,
        campaign: CampaignId::new(campaign).expect("campaign id"),
        user: UserId::from_number(user).expect("user id"),
        seq: u32::try_from(user).expect("seq"),
        at: time::macros::datetime!(2026-11-24 06:00:00 UTC),
    }
    .encode()
}

fn sink(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let db = ScratchDb::new();
    let pool = rt.block_on(db::connect(&db.url())).expect("database");
    let mut group = c.benchmark_group("sink");

    group.throughput(Throughput::Elements(BATCH));
    let mut next = 1u64;
    group.bench_function("write_batch/500", |b| {
        b.iter(|| {
            let items: Vec<Item> = (next..next + BATCH)
                .map(|u| Item::new("bench", 0, u as i64, &payload("batch", u)))
                .collect();
            next += BATCH;
            let written = rt.block_on(db::write_batch(&pool, &items)).expect("write");
            assert_eq!(written.admitted, BATCH as usize);
        })
    });

    let mut next = 1u64;
    group.bench_function("plain_insert/500", |b| {
        b.iter(|| {
            let rows = vec!["(?, ?, ?, ?)"; BATCH as usize].join(", ");
            let mut params: Vec<mysql_async::Value> = Vec::new();
            for u in next..next + BATCH {
                params.extend([
                    "plain".into(),
                    u.into(),
                    u.into(),
                    "2026-11-24 06:00:00.000".into(),
                ]);
            }
            next += BATCH;
            rt.block_on(async {
                let mut conn = pool.get_conn().await.expect("conn");
                conn.exec_drop(
                    format!(
                        "INSERT INTO coupon (campaign_id, user_id, seq, admitted_at) VALUES {rows}"
                    ),
                    params,
                )
                .await
                .expect("insert");
            })
        })
    });

    // Each sample: a fresh topic filled with 20,000 admissions and a fresh sink group (neither
    // timed), then the drain rate from the rows' own timestamps, first row to last, so that the
    // group join and the producer are not in the figure.
    group.throughput(Throughput::Elements(DRAIN));
    group.sample_size(10);
    let mut round = 0u32;
    // Three partitions, as the default topic has, and one: a partition is read by one sink at a
    // time, so the second is what one partition carries.
    for (name, partitions) in [("drain/20000", 3), ("drain_one_partition/20000", 1)] {
        group.bench_function(name, |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                round += 1;
                let campaign = format!("drain{round}");
                let topic = format!("bench_{}_{round}", db.name);
                let events: Vec<(String, Vec<u8>)> = (1..=DRAIN).map(|u| (format!("{campaign}:{u}"), payload(&campaign, u))).collect();
                total += rt.block_on(async {
                    coupon_relay::ensure_topic(&brokers(), &topic, partitions, 1).await.expect("topic");
                    produce(&brokers(), &topic, &events).await;
                    let config = Config {
                        database: coupon_cli::Database { database_url: db.url(), ..Default::default() },
                        kafka: coupon_cli::Kafka { kafka_brokers: brokers(), kafka_properties: Vec::new() },
                        topic: coupon_cli::Topic { topic: topic.clone() },
                        group: format!("{topic}-sink"),
                        ..Config::default()
                    };
                    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                    let run_pool = pool.clone();
                    let task = tokio::spawn(async move {
                        consumer::run(&config, &run_pool, async {
                            let _ = stopped.await;
                        })
                        .await
                    });
                    let count = format!("SELECT COUNT(*) FROM coupon WHERE campaign_id = '{campaign}'");
                    loop {
                        let n: Option<u64> = pool.get_conn().await.expect("conn").query_first(count.as_str()).await.expect("count");
                        if n == Some(DRAIN) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    let _ = stop.send(());
                    task.await.expect("task").expect("sink");
                    let span = format!(
                        "SELECT TIMESTAMPDIFF(MICROSECOND, MIN(created_at), MAX(created_at)) FROM coupon WHERE campaign_id = '{campaign}'"
                    );
                    let micros: Option<u64> = pool.get_conn().await.expect("conn").query_first(span).await.expect("span");
                    Duration::from_micros(micros.unwrap_or_default())
                });
            }
            total
        })
    });
    }
    group.finish();
    rt.block_on(pool.disconnect()).ok();
}

criterion_group!(benches, sink);
criterion_main!(benches);
