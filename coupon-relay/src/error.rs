//! What can keep the relay from starting: a configuration librdkafka refuses, brokers that refuse
//! its credentials or TLS, or a topic the brokers cannot or will not create. Once it runs, the relay has no errors to return: what
//! fails to deliver stays in the outbox and is tried again.

use std::fmt;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// A failure to set up the relay's Kafka clients or its topic.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// librdkafka refused the client configuration (an unknown property, a bad value).
    Config(KafkaError),
    /// The brokers did not answer the request to create the topic.
    Unreachable {
        /// The bootstrap servers asked.
        brokers: String,
        /// What the client saw.
        source: KafkaError,
    },
    /// The brokers refused the relay's client: its credentials (SASL) or its TLS handshake (a
    /// certificate that does not verify, a plaintext client of a TLS listener). A
    /// misconfiguration: it stays until the properties or the brokers are put right.
    Refused {
        /// The bootstrap servers asked.
        brokers: String,
        /// What librdkafka said.
        reason: String,
    },
    /// The brokers refused to create the topic.
    TopicRefused {
        /// The topic.
        topic: String,
        /// The broker's answer.
        code: RDKafkaErrorCode,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(err) => write!(f, "librdkafka refused the configuration: {err}"),
            Self::Unreachable { brokers, source } => {
                write!(f, "cannot reach Kafka at {brokers}: {source}")
            }
            Self::Refused { brokers, reason } => {
                write!(f, "Kafka at {brokers} refused the relay's client: {reason}")
            }
            Self::TopicRefused { topic, code } => write!(f, "cannot create topic {topic}: {code}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Config(err) | Self::Unreachable { source: err, .. } => Some(err),
            Self::TopicRefused { .. } | Self::Refused { .. } => None,
        }
    }
}
