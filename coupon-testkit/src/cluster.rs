//! A real Redis Cluster of the test's own: `redis-server` processes on free loopback ports (by
//! default 3 masters, each with a replica), joined by `redis-cli --cluster create`, killed and
//! their directories removed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;

use crate::free_port;

/// A local cluster; every node a child process of the test.
pub struct RedisCluster {
    /// Every node's port, masters first as `redis-cli` assigned them at creation.
    pub ports: Vec<u16>,
    children: Vec<Child>,
    dir: PathBuf,
}

impl RedisCluster {
    /// 3 masters with 1 replica each, without persistence.
    pub fn start() -> Self {
        Self::start_with(3, 1, &[])
    }

    /// `masters` masters with `replicas` replicas each, every node started with `extra`
    /// `redis-server` arguments (`--appendonly yes` for a node a test kills). Waits until every
    /// node reports `cluster_state:ok` and knows every other.
    pub fn start_with(masters: usize, replicas: usize, extra: &[&str]) -> Self {
        let count = masters * (1 + replicas);
        let ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
        let dir = std::env::temp_dir().join(format!(
            "coupon-gate-cluster-{}-{}",
            std::process::id(),
            ports[0]
        ));
        let mut children = Vec::with_capacity(count);
        for port in &ports {
            let node_dir = dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("node directory");
            children.push(
                Command::new("redis-server")
                    .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                    .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                    .args(["--save", "", "--appendonly", "no"])
                    .args(extra)
                    .arg("--dir")
                    .arg(&node_dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .expect("redis-server on PATH (scripts/services up installs it)"),
            );
        }
        let cluster = Self {
            ports,
            children,
            dir,
        };
        for port in &cluster.ports {
            cluster.wait_for(*port, "to answer PING", |reply| reply == "PONG", &["PING"]);
        }
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(cluster.ports.iter().map(|port| format!("127.0.0.1:{port}")))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli on PATH");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let known = format!("cluster_known_nodes:{count}");
        for port in &cluster.ports {
            cluster.wait_for(
                *port,
                "to report the cluster ok",
                |info| info.contains("cluster_state:ok") && info.contains(&known),
                &["CLUSTER", "INFO"],
            );
        }
        cluster.wait_replicated(replicas);
        cluster
    }

    /// Waits until every master has `replicas` replicas online and every replica's link to its
    /// master is up (a replica joins with a full sync, after the cluster reports ok).
    pub fn wait_replicated(&self, replicas: usize) {
        let online = format!("connected_slaves:{replicas}");
        for port in &self.ports {
            self.wait_for(
                *port,
                "to replicate",
                |info| {
                    if info.contains("role:master") {
                        info.contains(&online) && info.matches("state=online").count() == replicas
                    } else {
                        info.contains("master_link_status:up")
                    }
                },
                &["INFO", "replication"],
            );
        }
    }

    /// `redis://127.0.0.1:<port>` for every node.
    pub fn nodes(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    /// A cluster connection, as an application makes one from its node list.
    pub async fn connection(&self) -> ClusterConnection {
        ClusterClient::new(self.nodes())
            .expect("cluster client")
            .get_async_connection()
            .await
            .expect("cluster connection")
    }

    /// The port of the master that serves `key`'s slot.
    pub fn master_of(&self, key: &str) -> u16 {
        let mut conn = redis::Client::open(self.nodes()[0].as_str())
            .expect("url")
            .get_connection()
            .expect("a node");
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut conn)
            .expect("CLUSTER KEYSLOT");
        let shards: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut conn)
            .expect("CLUSTER SLOTS");
        for shard in shards {
            let redis::Value::Array(fields) = shard else {
                continue;
            };
            let bound = |i: usize| match fields.get(i) {
                Some(redis::Value::Int(n)) => *n,
                _ => -1,
            };
            if i64::from(slot) >= bound(0)
                && i64::from(slot) <= bound(1)
                && let Some(redis::Value::Array(master)) = fields.get(2)
                && let Some(redis::Value::Int(port)) = master.get(1)
            {
                return u16::try_from(*port).expect("a port");
            }
        }
        panic!("no master serves slot {slot}");
    }

    /// Polls node `port` with `command` until `done` holds for its reply (as text), for up to
    /// 20 s.
    fn wait_for(&self, port: u16, what: &str, done: impl Fn(&str) -> bool, command: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("url");
        loop {
            let reply: Option<String> = client.get_connection().ok().and_then(|mut conn| {
                let mut cmd = redis::cmd(command[0]);
                for arg in &command[1..] {
                    cmd.arg(*arg);
                }
                cmd.query(&mut conn).ok()
            });
            if reply.as_deref().is_some_and(&done) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cluster node {port} did not come {what} within 20 s: {reply:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
