//! Kafka for tests: the machine's broker, a broker of the test's own behind a proxy, reading a
//! topic back, and producing raw messages.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use tokio::net::TcpStream;

use crate::{Proxy, eventually, free_port};

/// The machine's Kafka-API broker (`KAFKA_BROKERS`, default 127.0.0.1:9092).
pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// Every message on `topic` from the start, read until at least `expected` distinct keys were
/// seen (or `limit` passed), and then until the topic has been quiet for a second, so that
/// extra messages are caught too. Returns (key, value) pairs in arrival order.
pub async fn read_topic(
    brokers: &str,
    topic: &str,
    expected: usize,
    limit: Duration,
) -> Vec<(String, Value)> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{topic}-{}", free_port()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + limit;
    let mut messages = Vec::new();
    let mut keys = BTreeSet::new();
    loop {
        let wait = if keys.len() >= expected {
            Duration::from_secs(1)
        } else {
            deadline.saturating_duration_since(Instant::now())
        };
        match tokio::time::timeout(wait, consumer.recv()).await {
            Ok(Ok(message)) => {
                let key = String::from_utf8(message.key().unwrap_or_default().to_vec()).unwrap();
                let value: Value =
                    serde_json::from_slice(message.payload().unwrap_or_default()).unwrap();
                keys.insert(key.clone());
                messages.push((key, value));
            }
            Ok(Err(err)) => panic!("reading {topic}: {err}"),
            Err(_) => break,
        }
    }
    messages
}

/// A Kafka-API broker (Tansu, in memory) of the test's own, reached through a [`Proxy`]: it
/// advertises the proxy's port, so every client connection passes the proxy and a test can
/// cut them all without killing the broker (whose memory engine would lose the topics).
pub struct Broker {
    /// The proxy every client connection passes through.
    pub proxy: Proxy,
    child: Child,
}

impl Broker {
    /// Starts the broker on a free port, advertised through a new proxy.
    pub async fn start() -> Self {
        let port = free_port();
        let proxy = Proxy::start(port).await;
        let child = Command::new("tansu")
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://127.0.0.1:{port}"),
            ])
            .args([
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{}", proxy.port),
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu on PATH (scripts/services up installs it)");
        let broker = Self { proxy, child };
        eventually(
            Duration::from_secs(20),
            "the test broker to listen",
            || async { TcpStream::connect(("127.0.0.1", port)).await.is_ok() },
        )
        .await;
        broker
    }

    /// The bootstrap address clients use: the proxy.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.proxy.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An idempotent producer (acks=all) on `brokers`, as the relay produces; `extra` settings on top.
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

/// Produces `messages` (key, payload) to `topic` and waits until the broker has every one.
pub async fn produce(brokers: &str, topic: &str, messages: &[(String, Vec<u8>)]) {
    let producer = producer(brokers, &[]);
    // All sent at once (one key keeps its order within its partition), then awaited.
    let sends = messages.iter().map(|(key, payload)| {
        producer.send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(30),
        )
    });
    for sent in join_all(sends).await {
        sent.unwrap_or_else(|(err, _)| panic!("producing to {topic}: {err}"));
    }
}

/// Produces `messages` one at a time, so that each is a record batch of its own.
///
/// For tests that restart a consumer from committed offsets on the local broker: Tansu 0.6
/// answers a fetch that starts inside a record batch with no records, so a consumer whose
/// committed offset falls inside a multi-record batch stalls there (Apache Kafka returns the
/// batch and the client skips the records before the offset).
pub async fn produce_unbatched(brokers: &str, topic: &str, messages: &[(String, Vec<u8>)]) {
    let producer = producer(brokers, &[("linger.ms", "0"), ("batch.num.messages", "1")]);
    for (key, payload) in messages {
        producer
            .send(
                FutureRecord::to(topic).key(key).payload(payload),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|(err, _)| panic!("producing to {topic}: {err}"));
    }
}
