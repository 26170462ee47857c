//! Probes the behaviours of the local Kafka-API broker that the clients rely on, against a
//! broker of its own (the test kit's [`Broker`]: nisshi, SQLite storage, a free port), and prints
//! one line per finding. README's "Limits of the local broker" is written from its output.
//!
//! ```sh
//! cargo run -p coupon-testkit --example broker-probe
//! ```
//!
//! 1. A consumer resuming from a committed offset inside a multi-record batch.
//! 2. The high watermark after a known number of records.
//! 3. How long a record takes to reach an idle consumer, for two `fetch.wait.max.ms`.
//! 4. An idempotent producer whose messages timed out while the broker was unreachable: does
//!    it deliver again afterwards?
//! 5. The broker's start-up time and memory.

use std::time::{Duration, Instant};

use coupon_testkit::{Broker, topic_records};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let started = Instant::now();
    let mut broker = Broker::behind_proxy().await;
    println!(
        "start-up: listening {:.2} s after the process was started",
        started.elapsed().as_secs_f64()
    );
    let brokers = broker.brokers();
    resume_inside_a_batch(&brokers).await;
    high_watermark(&brokers).await;
    for wait_ms in [100, 500] {
        idle_latency(&brokers, wait_ms).await;
    }
    timed_out_producer(&broker).await;
    memory(&broker);
    broker.kill();
}

fn create_topic(brokers: &str, name: &str) -> String {
    let topic = format!("probe_{name}_{}", std::process::id());
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .expect("admin client");
    let new = rdkafka::admin::NewTopic::new(&topic, 1, rdkafka::admin::TopicReplication::Fixed(1));
    let runtime = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        runtime.block_on(admin.create_topics([&new], &rdkafka::admin::AdminOptions::new()))
    })
    .expect("create the topic");
    topic
}

fn producer(brokers: &str, extra: &[(&str, &str)]) -> FutureProducer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all");
    for (key, value) in extra {
        config.set(*key, *value);
    }
    config.create().expect("producer")
}

/// Produces `n` records in one batch (a long linger, all sent before any is awaited).
async fn produce_batch(producer: &FutureProducer, topic: &str, n: usize) {
    let payloads: Vec<String> = (0..n).map(|i| format!("record {i}")).collect();
    let sends: Vec<_> = payloads
        .iter()
        .map(|payload| {
            producer.send(
                FutureRecord::to(topic).key("k").payload(payload),
                Duration::from_secs(10),
            )
        })
        .collect();
    for sent in futures_util::future::join_all(sends).await {
        sent.expect("delivered");
    }
}

async fn resume_inside_a_batch(brokers: &str) {
    let topic = create_topic(brokers, "resume");
    let producer = producer(brokers, &[("linger.ms", "100")]);
    produce_batch(&producer, &topic, 10).await;
    let group = format!("{topic}-group");
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut at = TopicPartitionList::new();
    at.add_partition_offset(&topic, 0, Offset::Offset(5))
        .expect("offset");
    consumer
        .commit(&at, CommitMode::Sync)
        .expect("commit offset 5");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let mut offsets = Vec::new();
    while let Ok(Ok(message)) = tokio::time::timeout(Duration::from_secs(10), consumer.recv()).await
    {
        offsets.push(message.offset());
        if message.offset() == 9 {
            break;
        }
    }
    println!(
        "resume inside a batch: committed offset 5 of one 10-record batch; received offsets {offsets:?}"
    );
}

async fn high_watermark(brokers: &str) {
    let topic = create_topic(brokers, "watermark");
    let producer = producer(brokers, &[("linger.ms", "5")]);
    for _ in 0..10 {
        produce_batch(&producer, &topic, 100).await;
    }
    let records = tokio::task::block_in_place(|| topic_records(brokers, &topic));
    println!("high watermark: 1000 records produced in batches of 100; high watermark {records}");
}

async fn idle_latency(brokers: &str, wait_ms: u32) {
    let topic = create_topic(brokers, &format!("idle{wait_ms}"));
    let producer = producer(brokers, &[("linger.ms", "0")]);
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{topic}-group"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", wait_ms.to_string())
        .create()
        .expect("consumer");
    let mut at = TopicPartitionList::new();
    at.add_partition_offset(&topic, 0, Offset::Beginning)
        .expect("offset");
    consumer.assign(&at).expect("assign");
    let mut took = Vec::new();
    for i in 0..20 {
        // Let the consumer sit idle inside a fetch for a while, at a different point each time.
        tokio::time::sleep(Duration::from_millis(300 + 37 * i)).await;
        let sent = Instant::now();
        producer
            .send(
                FutureRecord::to(&topic).key("k").payload("ping"),
                Duration::from_secs(10),
            )
            .await
            .expect("delivered");
        tokio::time::timeout(Duration::from_secs(10), consumer.recv())
            .await
            .expect("received within 10 s")
            .expect("a record");
        took.push(sent.elapsed().as_millis());
    }
    // The first record also waits for the consumer's first fetch.
    let first = took.remove(0);
    took.sort_unstable();
    println!(
        "idle consumer, fetch.wait.max.ms={wait_ms}: produce to receive: first record {first} ms; the {} after it median {} ms, max {} ms",
        took.len(),
        took[took.len() / 2],
        took[took.len() - 1]
    );
}

async fn timed_out_producer(broker: &Broker) {
    let brokers = broker.brokers();
    let topic = create_topic(&brokers, "fenced");
    let producer = producer(
        &brokers,
        &[("linger.ms", "5"), ("message.timeout.ms", "2000")],
    );
    produce_batch(&producer, &topic, 10).await;
    broker.proxy().cut();
    let lost = producer
        .send(
            FutureRecord::to(&topic).key("k").payload("while cut"),
            Duration::from_secs(10),
        )
        .await;
    broker.proxy().restore();
    let mut later = Vec::new();
    for _ in 0..5 {
        let sent = producer
            .send(
                FutureRecord::to(&topic).key("k").payload("after"),
                Duration::from_secs(10),
            )
            .await;
        later.push(
            sent.map(|_| "delivered".to_owned())
                .unwrap_or_else(|(err, _)| err.to_string()),
        );
    }
    let fatal = producer.client().fatal_error();
    println!(
        "timed-out idempotent producer: the send while cut off ended {}; the next 5 sends: {later:?}; fatal error: {fatal:?}",
        lost.map(|_| "delivered".to_owned())
            .unwrap_or_else(|(err, _)| err.to_string())
    );
}

fn memory(broker: &Broker) {
    let rss = broker
        .pid()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .map(|line| line["VmRSS:".len()..].trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("memory: resident set size after the probes {rss}");
}
