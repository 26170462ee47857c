//! `coupon-admin` reads the topic with the operator's librdkafka properties
//! (`COUPON_KAFKA_PROPERTIES`), as coupon-http and coupon-sink do, so that it reaches a topic
//! they reach over TLS or SASL. Run as the real binary against the machine's Redis, MariaDB and
//! broker, under a key prefix and a database name of the test's own (nothing is written).

use std::process::{Command, Output};

use coupon_testkit::{Scratch, ScratchDb, brokers, redis_url};

/// `coupon-admin audit` of a campaign nobody created, with `properties`.
fn audit(properties: &str, extra: &[&str]) -> Output {
    let scratch = Scratch::new(&redis_url());
    let db = ScratchDb::new();
    Command::new(env!("CARGO_BIN_EXE_coupon-admin"))
        .args(["audit", "--campaign", "nobody-made-it"])
        .args(extra)
        .env_clear()
        .env("REDIS_URL", redis_url())
        .env("COUPON_KEY_PREFIX", &scratch.prefix)
        .env("DATABASE_URL", db.url())
        .env("KAFKA_BROKERS", brokers())
        .env("COUPON_TOPIC", format!("t_{}", db.name))
        .env("COUPON_KAFKA_PROPERTIES", properties)
        .output()
        .expect("coupon-admin runs")
}

#[test]
fn the_topic_is_read_with_the_kafka_properties() {
    // A property librdkafka refuses stops the read of the topic, naming the property: so the
    // properties reach the consumer.
    let out = audit("security.protocol=carrier-pigeon", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("security.protocol"), "{stderr}");

    // Without reading the topic, the same settings audit the other stores (nothing there).
    let out = audit("security.protocol=carrier-pigeon", &["--no-topic"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("topic   not read"), "{stdout}");
}
