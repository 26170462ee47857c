//! One connection type for both deployments of Redis: a single server (reconnecting by itself)
//! or a Redis Cluster, chosen by configuration, so that a service holds one concrete
//! `Gate<RedisConnection>` either way.
//!
//! Every key of a campaign shares one hash tag, so each script and stream command runs on the
//! one master that serves the campaign's slot; the cluster connection follows `MOVED` and `ASK`
//! redirections and refreshes its slot map when a master fails over.

use std::fmt;
use std::sync::Once;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{ClientTlsConfig, Cmd, Pipeline, RedisFuture, TlsCertificates, Value};

use crate::Error;

/// Where Redis is: one server, or the seed nodes of a cluster; and, for `rediss://` addresses,
/// the certificates that verify Redis and identify this client.
#[derive(Clone, Debug)]
pub struct RedisTarget {
    nodes: Nodes,
    tls: Option<TlsCertificates>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Nodes {
    /// One server, by URL (`redis://host:6379`).
    Server(String),
    /// Some nodes of a cluster, as URLs; the rest are discovered from them.
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// One server, by URL (`redis://host:6379`, `rediss://user:password@host:6380`).
    pub fn server(url: impl Into<String>) -> Self {
        Self {
            nodes: Nodes::Server(url.into()),
            tls: None,
        }
    }

    /// Some nodes of a cluster, as URLs; the rest are discovered from them.
    pub fn cluster(nodes: Vec<String>) -> Self {
        Self {
            nodes: Nodes::Cluster(nodes),
            tls: None,
        }
    }

    /// The cluster named by `cluster_nodes` (`host:port,host:port,...`, as in
    /// `REDIS_CLUSTER_NODES`) when it names any node, else the server at `url`: the cluster
    /// takes precedence. A node without a scheme is `redis://`.
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
            Self::server(url)
        } else {
            Self::cluster(nodes)
        }
    }

    /// The same Redis, reached over TLS with these PEM certificates: `ca`, the authorities
    /// that verify it (`None`: the system's roots), and `client`, this client's certificate
    /// chain and private key if it must show one. Every address must then be `rediss://`.
    /// Without either, a `rediss://` address verifies Redis against the system's roots.
    pub fn with_tls(self, ca: Option<Vec<u8>>, client: Option<(Vec<u8>, Vec<u8>)>) -> Self {
        let tls = (ca.is_some() || client.is_some()).then(|| TlsCertificates {
            root_cert: ca,
            client_tls: client.map(|(client_cert, client_key)| ClientTlsConfig {
                client_cert,
                client_key,
            }),
        });
        Self { tls, ..self }
    }

    /// Whether this is a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.nodes, Nodes::Cluster(_))
    }

    fn urls(&self) -> &[String] {
        match &self.nodes {
            Nodes::Server(url) => std::slice::from_ref(url),
            Nodes::Cluster(nodes) => nodes.as_slice(),
        }
    }

    fn client(&self, url: &str) -> Result<redis::Client, Error> {
        install_crypto();
        Ok(match &self.tls {
            Some(certificates) => redis::Client::build_with_tls(url, certificates.clone())?,
            None => redis::Client::open(url)?,
        })
    }

    /// Clients of each node named (one for a server), for what the cluster connection does not
    /// carry: a pub/sub subscription. Classic pub/sub messages reach every node of a cluster,
    /// so a subscriber may listen on any node and move to the next when it fails.
    ///
    /// # Errors
    ///
    /// A URL that does not parse, or certificates for an address that is not `rediss://`.
    pub fn node_clients(&self) -> Result<Vec<redis::Client>, Error> {
        self.urls().iter().map(|url| self.client(url)).collect()
    }

    /// Connects, waiting at most `timeout` for each connection and each answer.
    ///
    /// # Errors
    ///
    /// A URL that does not parse, Redis unreachable, or its TLS handshake refused (a
    /// certificate that does not verify, a plaintext server).
    pub async fn connect(&self, timeout: Duration) -> Result<RedisConnection, Error> {
        let inner = match &self.nodes {
            Nodes::Server(url) => {
                let client = self.client(url)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout));
                Inner::Server(ConnectionManager::new_with_config(client, config).await?)
            }
            Nodes::Cluster(nodes) => {
                install_crypto();
                let mut builder = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                    .connection_timeout(timeout)
                    .response_timeout(timeout);
                if let Some(certificates) = &self.tls {
                    builder = builder.certs(certificates.clone());
                }
                Inner::Cluster(builder.build()?.get_async_connection().await?)
            }
        };
        Ok(RedisConnection { inner })
    }
}

/// Makes rustls's aws-lc-rs provider the process's default, once, for `rediss://` connections
/// (the redis crate asks for the default and has none of its own); a default installed earlier
/// by the embedding program is kept.
fn install_crypto() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let _kept_if_set = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// A URL without its user and password: what a log line may show.
fn without_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme}://{host}")
        }
        None => url.to_owned(),
    }
}

/// Shows the addresses without their users and passwords.
impl fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<String> = self
            .urls()
            .iter()
            .map(|url| without_userinfo(url))
            .collect();
        match &self.nodes {
            Nodes::Server(_) => f.write_str(&shown.join(",")),
            Nodes::Cluster(_) => write!(f, "the cluster of {}", shown.join(",")),
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
            RedisTarget::from_config(url, &[]).nodes,
            Nodes::Server(url.to_owned())
        );
        assert_eq!(
            RedisTarget::from_config(url, &[" ".to_owned()]).nodes,
            Nodes::Server(url.to_owned())
        );
        assert_eq!(
            RedisTarget::from_config(
                url,
                &[
                    "10.0.0.1:7000".to_owned(),
                    " rediss://10.0.0.2:7001".to_owned()
                ]
            )
            .nodes,
            Nodes::Cluster(vec![
                "redis://10.0.0.1:7000".to_owned(),
                "rediss://10.0.0.2:7001".to_owned()
            ])
        );
    }

    #[test]
    fn addresses_are_shown_without_users_and_passwords() {
        let target = RedisTarget::server("rediss://app:p@ss@cache.example.com:6380");
        assert_eq!(target.to_string(), "rediss://cache.example.com:6380");
        let target = RedisTarget::cluster(vec![
            "rediss://:secret@10.0.0.1:7000".to_owned(),
            "redis://10.0.0.2:7001".to_owned(),
        ]);
        assert_eq!(
            target.to_string(),
            "the cluster of rediss://10.0.0.1:7000,redis://10.0.0.2:7001"
        );
    }
}
