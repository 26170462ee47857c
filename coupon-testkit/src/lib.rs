//! Helpers shared by the workspace's integration tests and benches: real servers only.
//!
//! Keys, topics and databases of a test's own on the machine's servers, and servers a test
//! starts itself (Redis, a Redis Cluster, a Kafka-API broker) where it must kill, flush or cut
//! them, or serve TLS and ask for authentication ([`Pki`], [`TlsRedis`], [`TlsMariaDb`],
//! [`Broker::start_secured`], [`RedisCluster::start_tls`]); never the machine's shared ones.

mod cluster;
mod kafka;
mod mysql;
mod net;
mod redis;
mod secure;
mod tls;
mod wait;

pub use cluster::RedisCluster;
pub use kafka::{Broker, brokers, produce, read_topic, topic_records};
pub use mysql::{ScratchDb, mysql_server_url};
pub use net::{Process, Proxy, free_port};
pub use redis::{
    RedisServer, Scratch, command_calls, connect, info_field, redis_url, scan, script_calls,
    snapshot, unlink_matching,
};
pub use secure::{TlsMariaDb, TlsRedis};
pub use tls::{Pair, Pki};
pub use wait::eventually;
