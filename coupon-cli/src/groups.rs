//! The settings that several binaries read, each declared once: its flag, environment variable,
//! default and help text. A binary takes a group with `#[command(flatten)]`, so that every
//! binary names, documents and defaults a shared setting the same way.
//!
//! The flags are global, so that they may come before or after a subcommand
//! (`coupon-sink --topic t replay`, `coupon-admin audit --topic t`). The settings that may hold
//! a secret (a URL with a password, a Kafka property such as `sasl.password`) hide their values
//! from `--help`, and so may also be given from a file (`REDIS_URL_FILE`, `redis_url_file`).

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::parse::kafka_property;

/// Default of [`Redis::redis_url`]: the local server.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Default of [`KeyPrefix::key_prefix`].
pub const DEFAULT_KEY_PREFIX: &str = "coupon";
/// Default of [`Kafka::kafka_brokers`]: the local broker.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";
/// Default of [`Topic::topic`].
pub const DEFAULT_TOPIC: &str = "coupon_create";
/// Default of [`Database::database_url`]: the local server's `coupon` database.
pub const DEFAULT_DATABASE_URL: &str = "mysql://root@127.0.0.1:3306/coupon";

/// Where the gate's Redis is: one server, or the nodes of a cluster.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct Redis {
    /// Redis URL (one server).
    #[arg(long, global = true, env = "REDIS_URL", default_value = DEFAULT_REDIS_URL, hide_env_values = true)]
    pub redis_url: String,
    /// Nodes of a Redis Cluster, host:port, comma separated (the others are discovered from
    /// them); when set, it takes precedence over REDIS_URL.
    #[arg(
        long,
        global = true,
        env = "REDIS_CLUSTER_NODES",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub redis_cluster_nodes: Vec<String>,
    /// PEM file of the certificate authorities that verify Redis's certificate, for `rediss://`
    /// URLs and nodes; unset: the system's roots.
    #[arg(long, global = true, env = "COUPON_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// PEM file of this client's certificate (chain), for a Redis that asks for one (mutual TLS,
    /// `tls-auth-clients yes`); with COUPON_REDIS_CLIENT_KEY_FILE.
    #[arg(long, global = true, env = "COUPON_REDIS_CLIENT_CERT_FILE")]
    pub redis_client_cert_file: Option<PathBuf>,
    /// PEM file of the private key of COUPON_REDIS_CLIENT_CERT_FILE.
    #[arg(long, global = true, env = "COUPON_REDIS_CLIENT_KEY_FILE")]
    pub redis_client_key_file: Option<PathBuf>,
}

/// The prefix of every Redis key, so that deployments can share one Redis.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct KeyPrefix {
    /// Prefix of every Redis key.
    #[arg(long, global = true, env = "COUPON_KEY_PREFIX", default_value = DEFAULT_KEY_PREFIX)]
    pub key_prefix: String,
}

/// How to reach the Kafka cluster.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct Kafka {
    /// Kafka bootstrap servers, comma separated.
    #[arg(long, global = true, env = "KAFKA_BROKERS", default_value = DEFAULT_BROKERS)]
    pub kafka_brokers: String,
    /// More librdkafka properties, key=value (repeat the flag, or comma-separate in the
    /// environment): TLS and SASL settings, batching, fetch sizes. The properties the
    /// guarantees rest on stay as each binary sets them (the relay: enable.idempotence, acks,
    /// message.timeout.ms; the sink: group.id, enable.auto.commit, auto.offset.reset).
    #[arg(long, alias = "kafka-property", global = true, env = "COUPON_KAFKA_PROPERTIES", value_delimiter = ',', value_parser = kafka_property, hide_env_values = true)]
    pub kafka_properties: Vec<(String, String)>,
}

/// The topic of admissions: the relay produces to it, the sink and the operator tools read it.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct Topic {
    /// Topic of admissions.
    #[arg(long, global = true, env = "COUPON_TOPIC", default_value = DEFAULT_TOPIC)]
    pub topic: String,
}

/// The MySQL/MariaDB database coupon-sink writes the coupons to.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct Database {
    /// MySQL database of the coupons; coupon-sink creates it if missing and applies its
    /// migrations at start.
    #[arg(long, global = true, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: String,
    /// TLS to MySQL, as the mysql client's --ssl-mode: disabled, preferred (TLS when the server
    /// offers it, unverified), required (TLS, unverified), verify_ca (TLS, the certificate
    /// verified), verify_identity (verify_ca, and the certificate names the host). Unset:
    /// disabled for a server on loopback, verify_identity for any other.
    #[arg(long, global = true, env = "COUPON_DATABASE_SSL_MODE", value_enum)]
    pub database_ssl_mode: Option<SslMode>,
    /// PEM file of the certificate authorities that verify MySQL's certificate (for verify_ca
    /// and verify_identity); unset: the system's roots.
    #[arg(long, global = true, env = "COUPON_DATABASE_CA_FILE")]
    pub database_ca_file: Option<PathBuf>,
}

/// How a connection to MySQL uses TLS: the values of the mysql client's `--ssl-mode`, in lower
/// case.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
#[value(rename_all = "snake_case")]
pub enum SslMode {
    /// Plaintext.
    Disabled,
    /// TLS if the server offers it, its certificate not verified; plaintext otherwise.
    Preferred,
    /// TLS, its certificate not verified.
    Required,
    /// TLS, the certificate verified against the CA, whatever host it names.
    VerifyCa,
    /// TLS, the certificate verified and naming the host connected to.
    VerifyIdentity,
}

impl Redis {
    /// One server at `url`.
    pub fn server(url: impl Into<String>) -> Self {
        Self {
            redis_url: url.into(),
            ..Self::default()
        }
    }

    /// The cluster of `nodes` (`host:port`; the others are discovered).
    pub fn cluster(nodes: Vec<String>) -> Self {
        Self {
            redis_cluster_nodes: nodes,
            ..Self::default()
        }
    }
}

/// A group's `Default` is its declared defaults, so that no default is written twice.
macro_rules! declared_defaults {
    ($($group:ty),*) => {$(
        impl Default for $group {
            fn default() -> Self {
                crate::defaults()
            }
        }
    )*};
}

declared_defaults!(Redis, KeyPrefix, Kafka, Topic, Database);

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// Every group, as a binary would flatten them.
    #[derive(Parser, Debug)]
    struct All {
        #[command(flatten)]
        redis: Redis,
        #[command(flatten)]
        key_prefix: KeyPrefix,
        #[command(flatten)]
        kafka: Kafka,
        #[command(flatten)]
        topic: Topic,
        #[command(flatten)]
        database: Database,
    }

    #[test]
    fn the_defaults_are_the_local_services() {
        assert_eq!(Redis::default().redis_url, "redis://127.0.0.1:6379");
        assert_eq!(Kafka::default().kafka_brokers, "127.0.0.1:9092");
        assert_eq!(Topic::default().topic, "coupon_create");
        assert_eq!(KeyPrefix::default().key_prefix, "coupon");
        assert_eq!(
            Database::default().database_url,
            "mysql://root@127.0.0.1:3306/coupon"
        );
    }

    #[test]
    fn the_old_flag_of_kafka_properties_still_works() {
        let all = All::try_parse_from(["all", "--kafka-property", "acks=1"]).unwrap();
        assert_eq!(
            all.kafka.kafka_properties,
            vec![("acks".to_owned(), "1".to_owned())]
        );
    }
}
