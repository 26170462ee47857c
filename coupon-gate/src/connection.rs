//! One connection type for both deployments of Redis: a single server (reconnecting by itself)
//! or a Redis Cluster, chosen by configuration, so that a service holds one concrete
//! `Gate<RedisConnection>` either way.
//!
//! Every key of a campaign shares one hash tag, so each script and stream command runs on the
//! one master that serves the campaign's slot; the cluster connection follows `MOVED` and `ASK`
//! redirections and refreshes its slot map when a master fails over.

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::Error;

/// Where Redis is: one server, or the seed nodes of a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server, by URL (`redis://host:6379`).
    Server(String),
    /// Some nodes of a cluster, as `host:port` or URLs; the rest are discovered from them.
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// The cluster named by `cluster_nodes` (`host:port,host:port,...`, as in
    /// `REDIS_CLUSTER_NODES`) when it names any node, else the server at `url`: the cluster
    /// takes precedence.
    pub fn from_config(url: &str, cluster_nodes: &[String]) -> Self {
        let nodes: Vec<String> = cluster_nodes
            .iter()
            .map(|node| node.trim())
            .filter(|node| !node.is_empty())
            .map(|node| {
                if node.contains("://") {
                    node.to_owned()
                } else {
                    format!("redis://{node}")
                }
            })
            .collect();
        if nodes.is_empty() {
            Self::Server(url.to_owned())
        } else {
            Self::Cluster(nodes)
        }
    }

    /// Clients of each node named (one for a server), for what the cluster connection does not
    /// carry: a pub/sub subscription. Classic pub/sub messages reach every node of a cluster,
    /// so a subscriber may listen on any node and move to the next when it fails.
    ///
    /// # Errors
    ///
    /// A URL that does not parse.
    pub fn node_clients(&self) -> Result<Vec<redis::Client>, Error> {
        let urls = match self {
            Self::Server(url) => std::slice::from_ref(url),
            Self::Cluster(nodes) => nodes.as_slice(),
        };
        urls.iter()
            .map(|url| redis::Client::open(url.as_str()).map_err(Error::from))
            .collect()
    }

    /// Connects, waiting at most `timeout` for each connection and each answer.
    ///
    /// # Errors
    ///
    /// A URL that does not parse, or Redis unreachable.
    pub async fn connect(&self, timeout: Duration) -> Result<RedisConnection, Error> {
        let inner = match self {
            Self::Server(url) => {
                let client = redis::Client::open(url.as_str())?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout));
                Inner::Server(ConnectionManager::new_with_config(client, config).await?)
            }
            Self::Cluster(nodes) => {
                let client = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .build()?;
                Inner::Cluster(client.get_async_connection().await?)
            }
        };
        Ok(RedisConnection { inner })
    }
}

impl fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Server(url) => f.write_str(url),
            Self::Cluster(nodes) => write!(f, "the cluster of {}", nodes.join(",")),
        }
    }
}

/// A connection to a [`RedisTarget`]: multiplexed, cheap to clone, reconnecting by itself.
#[derive(Clone)]
pub struct RedisConnection {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisConnection {
    /// Whether this is a connection to a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner, Inner::Cluster(_))
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.inner {
            Inner::Server(conn) => conn.req_packed_command(cmd),
            Inner::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.inner {
            Inner::Server(conn) => conn.req_packed_commands(pipeline, offset, count),
            Inner::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Server(conn) => conn.get_db(),
            Inner::Cluster(conn) => conn.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_take_precedence_over_the_url() {
        let url = "redis://127.0.0.1:6379";
        assert_eq!(
            RedisTarget::from_config(url, &[]),
            RedisTarget::Server(url.to_owned())
        );
        assert_eq!(
            RedisTarget::from_config(url, &[" ".to_owned()]),
            RedisTarget::Server(url.to_owned())
        );
        assert_eq!(
            RedisTarget::from_config(
                url,
                &[
                    "10.0.0.1:7000".to_owned(),
                    " redis://10.0.0.2:7001".to_owned()
                ]
            ),
            RedisTarget::Cluster(vec![
                "redis://10.0.0.1:7000".to_owned(),
                "redis://10.0.0.2:7001".to_owned()
            ])
        );
    }
}
