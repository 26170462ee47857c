//! A static member fenced by the group (another consumer joined under its `group.instance.id`,
//! as the sink itself does when it rejoins after its session timed out on a slow broker): its
//! consumer is fatally failed, and the sink replaces it and goes on writing and committing what
//! comes.

mod support;

use std::time::Duration;

use coupon_sink::Config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use support::{
    ScratchDb, Sink, admitted, brokers, config, count, eventually, fresh_topic, produce,
    wait_for_rows,
};

/// Joins `config`'s group under `instance` and polls until the group gives it partitions;
/// returns how many, once it has left without committing anything.
fn intrude(config: &Config, instance: &str) -> usize {
    let intruder: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.kafka_brokers)
        .set("group.id", &config.group)
        .set("group.instance.id", instance)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "latest")
        .create()
        .expect("the intruding consumer");
    intruder.subscribe(&[config.topic.topic.as_str()]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        // Messages are not taken: the intruder only holds the membership.
        let _ = intruder.poll(Duration::from_millis(100));
        let assigned = intruder.assignment().map_or(0, |list| list.count());
        if assigned > 0 {
            return assigned;
        }
    }
    0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_consumer_is_replaced_and_the_sink_goes_on() {
    let db = ScratchDb::new();
    let topic = fresh_topic(&brokers()).await;
    let config = Config {
        instance_id: Some("sink-1".to_owned()),
        ..config(&db.url(), &topic, "fenced")
    };
    let first: Vec<_> = (1..=200).map(|u| admitted("fenced", u, u)).collect();
    produce(&brokers(), &topic, &first).await;
    let sink = Sink::start(config.clone()).await;
    wait_for_rows(&db, 200, Duration::from_secs(60)).await;

    // Another member under the sink's instance id: the broker hands it the partitions and
    // fences the sink's consumer.
    let intruder_config = config.clone();
    let assigned = tokio::task::spawn_blocking(move || intrude(&intruder_config, "sink-1"))
        .await
        .unwrap();
    assert!(assigned > 0, "the intruder was given the sink's partitions");

    // The sink goes on. A fenced consumer still fetches, and writes what it fetched, but
    // learns at its next commit that it is fenced, and never commits again: every later event
    // must be written and its offset committed, so that a restart does not start over.
    for round in 1..=3_u64 {
        let events: Vec<_> = (1..=200)
            .map(|u| admitted("fenced", round * 200 + u, round * 200 + u))
            .collect();
        produce(&brokers(), &topic, &events).await;
        wait_for_rows(&db, (round + 1) * 200, Duration::from_secs(90)).await;
    }
    eventually(
        Duration::from_secs(60),
        "the group to commit every offset",
        || {
            let config = config.clone();
            async move {
                tokio::task::spawn_blocking(move || committed(&config))
                    .await
                    .unwrap()
                    == 800
            }
        },
    )
    .await;
    sink.stop().await;
    assert_eq!(count(&db, "SELECT COUNT(*) FROM failed_event").await, 0);
}

/// The sum of the offsets `config`'s group committed on its topic's three partitions.
fn committed(config: &Config) -> i64 {
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.kafka_brokers)
        .set("group.id", &config.group)
        .create()
        .expect("a consumer to read the group's offsets");
    let mut partitions = TopicPartitionList::new();
    for partition in 0..3 {
        partitions.add_partition(&config.topic.topic, partition);
    }
    reader
        .committed_offsets(partitions, Duration::from_secs(10))
        .expect("the group's committed offsets")
        .elements()
        .iter()
        .map(|element| match element.offset() {
            Offset::Offset(offset) => offset,
            _ => 0,
        })
        .sum()
}
