//! Kafka for tests: the machine's broker, a broker of the test's own (to kill, restart or cut
//! off), reading a topic back, and producing raw messages.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::net::TcpStream;

use crate::tls::Pair;
use crate::{Proxy, eventually, free_port};

/// The machine's Kafka-API broker (`KAFKA_BROKERS`, default 127.0.0.1:9092).
pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// Every message on `topic` from the start, read until at least `expected` distinct keys were
/// seen (or `limit` passed), and then until the topic has been quiet for a second, so that
/// extra messages are caught too. Returns (key, payload) pairs in arrival order.
pub async fn read_topic(
    brokers: &str,
    topic: &str,
    expected: usize,
    limit: Duration,
) -> Vec<(String, Vec<u8>)> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{topic}-{}", free_port()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + limit;
    let mut messages = Vec::new();
    let mut keys = BTreeSet::new();
    loop {
        let wait = if keys.len() >= expected {
            Duration::from_secs(1)
        } else {
            deadline.saturating_duration_since(Instant::now())
        };
        match tokio::time::timeout(wait, consumer.recv()).await {
            Ok(Ok(message)) => {
                let key = String::from_utf8(message.key().unwrap_or_default().to_vec()).unwrap();
                keys.insert(key.clone());
                messages.push((key, message.payload().unwrap_or_default().to_vec()));
            }
            Ok(Err(err)) => panic!("reading {topic}: {err}"),
            Err(_) => break,
        }
    }
    messages
}

/// Records the broker holds on `topic`: the sum of its partitions' high watermarks; 0 while the
/// broker names no partition of it (not created yet, or its metadata not complete yet: a
/// loaded broker answered so for a topic coupon-http had just created, so callers wait on a
/// count, not on the first answer).
///
/// # Panics
///
/// When the broker does not answer within 10 seconds.
pub fn topic_records(brokers: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("consumer");
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .unwrap_or_else(|err| panic!("metadata of {topic}: {err}"));
    let partitions = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len());
    (0..partitions as i32)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, timeout)
                .unwrap_or_else(|err| panic!("watermarks of {topic}/{p}: {err}"))
                .1
        })
        .sum()
}

/// A Kafka-API broker of the test's own: nisshi on a free port, with SQLite storage in a data
/// directory of its own, so that it keeps what it acknowledged when it is killed and restarted.
///
/// [`Broker::start`] advertises the broker itself; [`Broker::behind_proxy`] advertises a
/// [`Proxy`] instead, so that every client connection passes it and a test can cut them all (a
/// network partition) while the broker runs on.
pub struct Broker {
    /// The port the broker listens on.
    port: u16,
    /// The proxy clients reach the broker through, when there is one.
    proxy: Option<Proxy>,
    /// The broker's working directory, which holds its SQLite database; removed on drop.
    dir: PathBuf,
    /// Where the broker's output goes; kept after the test, and named in its output.
    log: PathBuf,
    /// The running broker; `None` between [`Broker::kill`] and [`Broker::restart`].
    child: Option<Child>,
    /// The certificate it serves TLS with, when it serves TLS only.
    secured: Option<Pair>,
    /// Whether it requires SASL SCRAM authentication.
    authentication: bool,
}

impl Broker {
    /// Starts a broker on a free port, advertising that port.
    pub async fn start() -> Self {
        Self::launch(None).await
    }

    /// Starts a broker on a free port, advertising a new [`Proxy`] in front of it.
    pub async fn behind_proxy() -> Self {
        let port = free_port();
        let proxy = Proxy::start(port).await;
        Self::launch(Some((port, proxy))).await
    }

    /// A broker that is not running yet: a free port on which nothing listens until
    /// [`Broker::restart`] starts it, for clients that must start before their broker.
    pub fn not_started() -> Self {
        Self::prepare(free_port(), None)
    }

    async fn launch(proxied: Option<(u16, Proxy)>) -> Self {
        let (port, proxy) = match proxied {
            Some((port, proxy)) => (port, Some(proxy)),
            None => (free_port(), None),
        };
        let mut broker = Self::prepare(port, proxy);
        broker.restart().await;
        broker
    }

    /// Starts a broker on a free port that serves TLS only, with the certificate `pair` (of
    /// the test's [`Pki`](crate::Pki)), and requires SASL SCRAM-SHA-512: `user` with
    /// `password` is created first, on the broker started without either, which is then
    /// restarted with both.
    pub async fn start_secured(pair: &Pair, user: &str, password: &str) -> Self {
        let mut broker = Self::prepare(free_port(), None);
        broker.secured = Some(pair.clone());
        broker.authentication = true;
        broker.add_user(user, password).await;
        broker
    }

    /// Starts a broker on a free port that serves TLS only, with the certificate `pair`, and
    /// asks for no authentication (`security.protocol=SSL`).
    pub async fn start_tls(pair: &Pair) -> Self {
        let mut broker = Self::prepare(free_port(), None);
        broker.secured = Some(pair.clone());
        broker.restart().await;
        broker
    }

    /// Creates SCRAM-SHA-512 `user` with `password` on a [`Broker::start_secured`] broker:
    /// restarted without TLS and authentication for `nisshi user create`, then with both again
    /// (as a broker's operator would put a missing user right). Its clients lose their
    /// connections meanwhile.
    ///
    /// # Panics
    ///
    /// On a broker started without [`Broker::start_secured`], or when the user is refused.
    pub async fn add_user(&mut self, user: &str, password: &str) {
        let secured = self.secured.take().expect("a broker started secured");
        self.restart().await;
        let created = Command::new("nisshi")
            .args(["user", "create", "--broker"])
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .args([user, password])
            .output()
            .expect("nisshi on PATH");
        assert!(
            created.status.success(),
            "nisshi user create: {}{}",
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        );
        self.secured = Some(secured);
        self.restart().await;
    }

    fn prepare(port: u16, proxy: Option<Proxy>) -> Self {
        let dir = std::env::temp_dir().join(format!("coupon-broker-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("the broker's data directory");
        let log = std::env::temp_dir().join(format!("coupon-broker-{port}.log"));
        eprintln!(
            "test broker on port {port}, data in {}, log: {}",
            dir.display(),
            log.display()
        );
        Self {
            port,
            proxy,
            dir,
            log,
            child: None,
            secured: None,
            authentication: false,
        }
    }

    /// The bootstrap address clients use: the proxy's when there is one.
    pub fn brokers(&self) -> String {
        let port = self.proxy.as_ref().map_or(self.port, |proxy| proxy.port);
        format!("127.0.0.1:{port}")
    }

    /// The proxy in front of the broker.
    ///
    /// # Panics
    ///
    /// When the broker was started without one ([`Broker::start`]).
    pub fn proxy(&self) -> &Proxy {
        self.proxy
            .as_ref()
            .expect("a broker started with Broker::behind_proxy")
    }

    /// The broker's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the broker (SIGSTOP) without closing a connection: its clients' requests wait
    /// unanswered, as on a broker that has become very slow, until [`Broker::resume`].
    ///
    /// # Panics
    ///
    /// When the broker does not run.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a [`Broker::pause`]d broker go on (SIGCONT).
    ///
    /// # Panics
    ///
    /// When the broker does not run.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.pid().expect("a running broker");
        let sent = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill {signal} {pid}");
    }

    /// SIGKILLs the broker, as a crash would, and reaps it. Its storage stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker (again) on the same port and storage, and waits until it listens.
    pub async fn restart(&mut self) {
        self.kill();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the broker's log file");
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let mut command = Command::new("nisshi");
        command.current_dir(&self.dir);
        command.args(["broker", "--listener-url", &listener]);
        if let Some(pair) = &self.secured {
            command
                .arg("--cert")
                .arg(&pair.cert)
                .arg("--key")
                .arg(&pair.key);
            if self.authentication {
                command.arg("--authentication");
            }
        }
        let child = command
            .args([
                "--advertised-listener-url",
                &format!("tcp://{}", self.brokers()),
            ])
            // Relative to the working directory: the data directory.
            .args(["--storage-engine", "sqlite://broker.db"])
            .stdout(log.try_clone().expect("the broker's log file"))
            .stderr(log)
            .spawn()
            .expect("nisshi on PATH (scripts/services up installs it)");
        self.child = Some(child);
        let port = self.port;
        eventually(
            Duration::from_secs(20),
            "the test broker to listen",
            || async { TcpStream::connect(("127.0.0.1", port)).await.is_ok() },
        )
        .await;
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Produces `messages` (key, payload) to `topic` with an idempotent producer (acks=all), as
/// the relay produces, batched as librdkafka batches them; waits until the broker has every one.
pub async fn produce(brokers: &str, topic: &str, messages: &[(String, Vec<u8>)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .expect("producer");
    // All sent at once (one key keeps its order within its partition), then awaited.
    let sends = messages.iter().map(|(key, payload)| {
        producer.send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(30),
        )
    });
    for sent in join_all(sends).await {
        sent.unwrap_or_else(|(err, _)| panic!("producing to {topic}: {err}"));
    }
}
