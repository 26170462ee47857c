//! The relay's idempotent producer: what it is created from, which broker answers mean it must
//! be replaced, and how much of a round is handed to it before the relay awaits it
//! ([`Handover`]).

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;

use crate::topic::client_config;

/// Broker answers that reject the producer's id or epoch: no later message of this producer
/// instance can succeed.
pub(crate) const PRODUCER_REJECTED: [RDKafkaErrorCode; 5] = [
    RDKafkaErrorCode::ProducerFenced,
    RDKafkaErrorCode::InvalidProducerEpoch,
    RDKafkaErrorCode::UnknownProducerId,
    RDKafkaErrorCode::OutOfOrderSequenceNumber,
    RDKafkaErrorCode::InvalidProducerIdMapping,
];

/// How long the producer waits for more records before it sends a batch (`linger.ms`): the
/// time a record may wait for the next, at most, before its produce request leaves.
const LINGER_MS: &str = "20";
/// Most records in one produce request (`batch.num.messages`); `batch.size` (1 MB) still bounds
/// its bytes.
const BATCH_MESSAGES: &str = "100000";

/// What the relay's idempotent producer is created from.
///
/// Its batching defaults ([`LINGER_MS`], [`BATCH_MESSAGES`]), which the configured properties
/// may override (under either of librdkafka's names), make few large produce requests;
/// [`Handover`] keeps a round's records within what leaves in them.
pub(crate) fn producer_config(
    brokers: &str,
    properties: &[(String, String)],
    message_timeout: Duration,
) -> ClientConfig {
    let configured = |names: &[&str]| {
        properties
            .iter()
            .any(|(name, _)| names.contains(&name.as_str()))
    };
    let mut client = ClientConfig::new();
    if !configured(&["linger.ms", "queue.buffering.max.ms"]) {
        client.set("linger.ms", LINGER_MS);
    }
    if !configured(&["batch.num.messages"]) {
        client.set("batch.num.messages", BATCH_MESSAGES);
    }
    client_config(&mut client, brokers, properties)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set(
            "message.timeout.ms",
            message_timeout.as_millis().to_string(),
        );
    client
}

/// librdkafka's default `batch.size`: the most bytes of records in one produce request.
const BATCH_BYTES: usize = 1_000_000;

/// How much of a round the relay hands to the producer before it awaits what it handed over.
///
/// An idempotent librdkafka producer has one produce request per partition in flight at a time
/// (it counts the records in flight against its limit of five requests). A record handed over
/// after that request left waits for its answer, and once the record's linger has passed,
/// librdkafka's broker thread polls its socket without pause until the broker answers
/// (`rd_kafka_msgq_allow_wakeup_at`, then `rd_kafka_toppar_producer_serve`): on a loaded machine,
/// where handing over a round of 15,000 records took longer than the linger, that polling was a
/// quarter to two fifths of coupon-http's CPU per admission (BENCHMARKS.md, "The relay's
/// handovers"). So a handover ends when half the linger has passed since its first record,
/// or when its records hold as many bytes as one request of one partition (`batch.size`); the
/// relay then awaits their delivery before it hands over the rest of the round. On a quick
/// machine a round of the default 500 entries is usually one handover.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Handover {
    /// Half the producer's linger; none when the linger is 0, where records leave at once.
    window: Option<Duration>,
    /// The producer's `batch.size`.
    bytes: usize,
}

impl Handover {
    /// The handover for the producer `client` creates (its linger and batch size as
    /// configured, librdkafka's defaults where unset).
    pub(crate) fn of(client: &ClientConfig) -> Self {
        let number = |key| client.get(key).and_then(|v| v.parse::<f64>().ok());
        let linger_ms = number("queue.buffering.max.ms")
            .or_else(|| number("linger.ms"))
            .unwrap_or(5.0);
        Self {
            window: Duration::try_from_secs_f64(linger_ms / 2e3)
                .ok()
                .filter(|window| !window.is_zero()),
            bytes: number("batch.size").map_or(BATCH_BYTES, |bytes| bytes as usize),
        }
    }

    /// Whether a handover begun `since`, of records holding `bytes`, should be awaited before
    /// more records are handed over.
    pub(crate) fn is_full(&self, since: Instant, bytes: usize) -> bool {
        bytes >= self.bytes || self.window.is_some_and(|window| since.elapsed() >= window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handover_lasts_half_the_producers_linger_and_holds_one_request() {
        let handover = |properties: &[(&str, &str)]| {
            let properties: Vec<(String, String)> = properties
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            let client = producer_config("127.0.0.1:9092", &properties, Duration::from_secs(30));
            let handover = Handover::of(&client);
            (handover.window, handover.bytes)
        };
        let ms = |ms| Some(Duration::from_millis(ms));
        assert_eq!(handover(&[]), (ms(10), 1_000_000));
        assert_eq!(handover(&[("linger.ms", "50")]), (ms(25), 1_000_000));
        assert_eq!(
            handover(&[("queue.buffering.max.ms", "8")]),
            (ms(4), 1_000_000)
        );
        assert_eq!(
            handover(&[("linger.ms", "0"), ("batch.size", "65536")]),
            (None, 65_536)
        );

        let quick = Handover {
            window: ms(10),
            bytes: 1000,
        };
        assert!(!quick.is_full(Instant::now(), 999));
        assert!(quick.is_full(Instant::now(), 1000));
        let long_ago = Instant::now() - Duration::from_millis(10);
        assert!(quick.is_full(long_ago, 0));
        let at_once = Handover {
            window: None,
            bytes: 1000,
        };
        assert!(!at_once.is_full(long_ago, 999));
    }
}
