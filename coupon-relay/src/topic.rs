//! The admissions topic: created when missing, with the brokers and properties every client of
//! the relay shares.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use tracing::{debug, info};

use crate::Error;

/// librdkafka configuration shared by the relay's clients: the brokers, then the operator's
/// `properties`.
pub(crate) fn client_config<'a>(
    config: &'a mut ClientConfig,
    brokers: &str,
    properties: &[(String, String)],
) -> &'a mut ClientConfig {
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", "coupon-relay");
    for (key, value) in properties {
        config.set(key, value);
    }
    config
}

/// Creates `topic` on `brokers` with `partitions` and `replication`, unless it exists. For
/// tools and tests that need the topic before any relay runs; a relay creates its own with
/// [`Relay::ensure_topic`](crate::Relay::ensure_topic).
///
/// # Errors
///
/// The brokers are unreachable or refuse the topic.
pub async fn ensure_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    replication: i32,
) -> Result<(), Error> {
    create_topic(brokers, &[], topic, partitions, replication).await
}

pub(crate) async fn create_topic(
    brokers: &str,
    properties: &[(String, String)],
    topic: &str,
    partitions: i32,
    replication: i32,
) -> Result<(), Error> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(&mut ClientConfig::new(), brokers, properties)
            .create()
            .map_err(Error::Config)?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(15)));
    let results = admin
        .create_topics([&new], &options)
        .await
        .map_err(|source| Error::Unreachable {
            brokers: brokers.to_owned(),
            source,
        })?;
    for result in results {
        match result {
            Ok(_) => info!(topic, partitions, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => debug!(topic, "topic exists"),
            Err((name, code)) => return Err(Error::TopicRefused { topic: name, code }),
        }
    }
    Ok(())
}
