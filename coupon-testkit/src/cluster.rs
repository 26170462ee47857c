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
    /// Each node's cluster bus port, by the index of its port: free ports of their own, as the
    /// default (port + 10000) may be another process's.
    bus_ports: Vec<u16>,
    /// Each node's process, by the index of its port; `None` while killed.
    children: Vec<Option<Child>>,
    dir: PathBuf,
    /// The extra `redis-server` arguments every node was started with, for restarts.
    extra: Vec<String>,
    /// How many masters it was created with.
    masters: usize,
    /// With TLS: each node's TLS port, by the index of its port, and the arguments that give
    /// every node its certificate (see [`RedisCluster::start_tls`]).
    tls: Option<(Vec<u16>, Vec<String>)>,
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
        Self::create(masters, replicas, extra, None)
    }

    /// As [`RedisCluster::start_with`] without extra arguments, every node also serving TLS
    /// on a port of its own (`tls-port`) with the certificate `pki.server`, its cluster bus and
    /// replication over TLS too (`tls-cluster yes`, `tls-replication yes`), and asking TLS
    /// clients for a certificate of the `pki`'s authority. A client that reaches a node over TLS
    /// is sent to TLS ports by its redirections and slot map; [`RedisCluster::tls_nodes`] names
    /// them. The plaintext ports stay, for the test kit's own checks.
    pub fn start_tls(masters: usize, replicas: usize, pki: &crate::Pki) -> Self {
        let args = vec![
            "--tls-cluster".to_owned(),
            "yes".to_owned(),
            "--tls-replication".to_owned(),
            "yes".to_owned(),
            "--tls-cert-file".to_owned(),
            pki.server.cert.display().to_string(),
            "--tls-key-file".to_owned(),
            pki.server.key.display().to_string(),
            "--tls-ca-cert-file".to_owned(),
            pki.ca.display().to_string(),
            "--tls-auth-clients".to_owned(),
            "yes".to_owned(),
        ];
        Self::create(masters, replicas, &[], Some(args))
    }

    fn create(masters: usize, replicas: usize, extra: &[&str], tls: Option<Vec<String>>) -> Self {
        let count = masters * (1 + replicas);
        let dir = std::env::temp_dir().join(format!(
            "coupon-gate-cluster-{}-{}",
            std::process::id(),
            free_port()
        ));
        let extra: Vec<String> = extra.iter().map(|&arg| arg.to_owned()).collect();
        let mut cluster = Self {
            ports: Vec::with_capacity(count),
            bus_ports: Vec::with_capacity(count),
            children: Vec::with_capacity(count),
            dir,
            extra,
            masters,
            tls: tls.map(|args| (Vec::new(), args)),
        };
        for _ in 0..count {
            let (port, bus, tls_port, child) = cluster.start_node();
            cluster.ports.push(port);
            cluster.bus_ports.push(bus);
            if let Some((tls_ports, _)) = &mut cluster.tls {
                tls_ports.push(tls_port);
            }
            cluster.children.push(Some(child));
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

    /// `rediss://127.0.0.1:<tls port>` for every node of a [`RedisCluster::start_tls`] cluster.
    ///
    /// # Panics
    ///
    /// On a cluster without TLS.
    pub fn tls_nodes(&self) -> Vec<String> {
        let (ports, _) = self.tls.as_ref().expect("a cluster started with TLS");
        ports
            .iter()
            .map(|port| format!("rediss://127.0.0.1:{port}"))
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

    /// Campaign ids `{stem}-0`, `{stem}-1`, ... with the master serving each (a campaign's slot
    /// follows its id, its hash tag), until there are at least `count` and every master serves
    /// one of them.
    pub fn campaigns_on_every_master(&self, stem: &str, count: usize) -> Vec<(String, u16)> {
        let mut campaigns = Vec::new();
        let mut masters = std::collections::BTreeSet::new();
        for n in 0..1000 {
            let id = format!("{stem}-{n}");
            let master = self.master_of(&format!("{{{id}}}"));
            masters.insert(master);
            campaigns.push((id, master));
            if campaigns.len() >= count && masters.len() == self.masters {
                return campaigns;
            }
        }
        panic!("1000 campaign ids and not every master serves one");
    }

    /// The port of the master that serves `key`'s slot.
    pub fn master_of(&self, key: &str) -> u16 {
        let asked = self.ports[0];
        self.slot_master(asked, key)
            .unwrap_or_else(|| panic!("node {asked} names no master for {key}"))
    }

    /// The port of the master that serves `key`'s slot, as the node on `asked` sees it.
    pub fn slot_master(&self, asked: u16, key: &str) -> Option<u16> {
        let mut conn = redis::Client::open(format!("redis://127.0.0.1:{asked}"))
            .ok()?
            .get_connection_with_timeout(Duration::from_secs(1))
            .ok()?;
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut conn)
            .ok()?;
        let shards: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query(&mut conn).ok()?;
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
                return u16::try_from(*port).ok();
            }
        }
        None
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

impl RedisCluster {
    /// Starts a node on free ports and waits until it answers `PING`. A port found free can be
    /// taken before the node binds it (by another test, or as the source port of a connection),
    /// so a node that exits at start is started again on other ports, up to five times.
    fn start_node(&self) -> (u16, u16, u16, Child) {
        for _ in 0..5 {
            let (port, bus, tls_port) = (free_port(), free_port(), free_port());
            let mut child = spawn_node(&self.dir, port, bus, &self.node_args(tls_port));
            let deadline = Instant::now() + Duration::from_secs(20);
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("url");
            loop {
                let pong = client
                    .get_connection()
                    .ok()
                    .and_then(|mut conn| redis::cmd("PING").query::<String>(&mut conn).ok());
                if pong.as_deref() == Some("PONG") {
                    return (port, bus, tls_port, child);
                }
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "cluster node {port} did not answer PING within 20 s"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("no cluster node started in five attempts (see its messages above)");
    }
}

/// Starts the cluster node on `port`, its files in `dir/<port>`.
fn spawn_node(dir: &std::path::Path, port: u16, bus: u16, extra: &[String]) -> Child {
    let node_dir = dir.join(port.to_string());
    std::fs::create_dir_all(&node_dir).expect("node directory");
    Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
        .args(["--cluster-port", &bus.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .args(extra)
        .arg("--dir")
        .arg(&node_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("redis-server on PATH (scripts/services up installs it)")
}

impl RedisCluster {
    /// The extra arguments of a node, with its TLS port when the cluster serves TLS.
    fn node_args(&self, tls_port: u16) -> Vec<String> {
        let mut args = self.extra.clone();
        if let Some((_, tls)) = &self.tls {
            args.extend(["--tls-port".to_owned(), tls_port.to_string()]);
            args.extend(tls.iter().cloned());
        }
        args
    }

    fn index(&self, port: u16) -> usize {
        self.ports
            .iter()
            .position(|&p| p == port)
            .unwrap_or_else(|| panic!("no node on port {port}"))
    }

    /// SIGKILLs the node on `port`.
    pub fn kill(&mut self, port: u16) {
        let i = self.index(port);
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the killed node on `port` again, on its own files (its `nodes.conf`, and its AOF
    /// when started with one), so that it rejoins the cluster: as a replica, if its replica was
    /// promoted meanwhile.
    pub fn restart(&mut self, port: u16) {
        let i = self.index(port);
        assert!(self.children[i].is_none(), "node {port} is running");
        let tls_port = self.tls.as_ref().map_or(0, |(ports, _)| ports[i]);
        let args = self.node_args(tls_port);
        self.children[i] = Some(spawn_node(&self.dir, port, self.bus_ports[i], &args));
        self.wait_for(port, "to answer PING", |reply| reply == "PONG", &["PING"]);
    }

    /// SIGSTOPs the node on `port`: it stays connected but answers nothing, and its master's
    /// writes wait in the replication stream, as on a replica that lags.
    pub fn pause(&self, port: u16) {
        self.signal(port, "-STOP");
    }

    /// SIGCONTs the node on `port` after [`RedisCluster::pause`].
    pub fn resume(&self, port: u16) {
        self.signal(port, "-CONT");
    }

    fn signal(&self, port: u16, signal: &str) {
        let child = self.children[self.index(port)]
            .as_ref()
            .unwrap_or_else(|| panic!("node {port} is not running"));
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} node {port}");
    }

    /// The port of a replica of the master on `master`.
    pub fn replica_of(&self, master: u16) -> u16 {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut self.node(master))
            .expect("INFO replication");
        info.lines()
            .filter(|line| line.starts_with("slave"))
            .find_map(|line| {
                line.split(',')
                    .find_map(|field| field.strip_prefix("port="))
                    .and_then(|port| port.parse().ok())
            })
            .unwrap_or_else(|| panic!("node {master} has no replica: {info}"))
    }

    /// The role of the node on `port` as it reports it: `master` or `slave`.
    pub fn role(&self, port: u16) -> Option<String> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
        let mut conn = client
            .get_connection_with_timeout(Duration::from_secs(1))
            .ok()?;
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut conn)
            .ok()?;
        info.lines()
            .find_map(|line| line.strip_prefix("role:"))
            .map(|role| role.trim().to_owned())
    }

    /// Waits, for up to 30 s, until a node other than `failed` serves `key`'s slot and the
    /// cluster reports ok there: a replica promoted after its master failed. Returns its port.
    pub fn wait_promoted(&self, key: &str, failed: u16) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let live = self
                .ports
                .iter()
                .find(|&&p| p != failed && self.role(p).is_some());
            if let Some(&live) = live
                && let Some(port) = self.slot_master(live, key)
                && port != failed
            {
                self.wait_for(
                    port,
                    "to report the cluster ok",
                    |info| info.contains("cluster_state:ok"),
                    &["CLUSTER", "INFO"],
                );
                return port;
            }
            assert!(
                Instant::now() < deadline,
                "no replica took over {key}'s slot from node {failed} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl RedisCluster {
    /// A connection to the node on `port`.
    fn node(&self, port: u16) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .expect("url")
            .get_connection_with_timeout(Duration::from_secs(2))
            .unwrap_or_else(|err| panic!("node {port}: {err}"))
    }

    /// Moves `key`'s slot from the master serving it to the master on `to`, as `redis-cli
    /// --cluster reshard` does, one key per `MIGRATE` with `pause` between keys so that traffic
    /// meets the slot half moved (`ASK`, `TRYAGAIN`): `IMPORTING` on the target, `MIGRATING` on
    /// the source, the keys, then `SETSLOT NODE` on every master. Returns how many keys moved.
    pub fn migrate_slot(&self, key: &str, to: u16, pause: Duration) -> usize {
        let from = self.master_of(key);
        assert_ne!(from, to, "{key} is already served by {to}");
        let id = |port: u16| -> String {
            redis::cmd("CLUSTER")
                .arg("MYID")
                .query(&mut self.node(port))
                .expect("CLUSTER MYID")
        };
        let (from_id, to_id) = (id(from), id(to));
        let mut source = self.node(from);
        let mut target = self.node(to);
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut source)
            .expect("CLUSTER KEYSLOT");
        let setslot = |conn: &mut redis::Connection, state: &str, node: &str| {
            let () = redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(state)
                .arg(node)
                .query(conn)
                .unwrap_or_else(|err| panic!("CLUSTER SETSLOT {slot} {state}: {err}"));
        };
        setslot(&mut target, "IMPORTING", &from_id);
        setslot(&mut source, "MIGRATING", &to_id);
        let mut moved = 0;
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(1)
                .query(&mut source)
                .expect("CLUSTER GETKEYSINSLOT");
            let Some(key) = keys.first() else {
                break;
            };
            let () = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(to)
                .arg(key)
                .arg(0)
                .arg(5000)
                .query(&mut source)
                .unwrap_or_else(|err| panic!("MIGRATE {key}: {err}"));
            moved += 1;
            std::thread::sleep(pause);
        }
        setslot(&mut target, "NODE", &to_id);
        setslot(&mut source, "NODE", &to_id);
        for &port in &self.ports {
            if port != from && port != to && self.role(port).as_deref() == Some("master") {
                setslot(&mut self.node(port), "NODE", &to_id);
            }
        }
        moved
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
