//! Helpers for the server's integration tests: the app on port 0 with keys and a topic of its
//! own, an HTTP client, snapshots of Redis state, a topic reader, and a Kafka-API broker of the
//! test's own behind a TCP proxy the test can cut.

#![allow(dead_code, missing_docs, unused_imports)]

#[path = "../../../coupon-gate/tests/support/mod.rs"]
pub mod gate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use coupon_gate::Gate;
use coupon_http::{Config, RelayConfig};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use redis::aio::MultiplexedConnection;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub use gate::{RedisServer, Scratch, free_port, redis_url};

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// The machine's Kafka-API broker (`KAFKA_BROKERS`, default 127.0.0.1:9092).
pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// Waits for `check` to be true, polling, for at most `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How a test app is configured; `Options::default()` suits most tests.
pub struct Options {
    pub redis_url: String,
    pub brokers: String,
    pub default_quota: u32,
    pub claim_idle: Duration,
    pub message_timeout: Duration,
    pub redis_timeout: Duration,
    pub admin_token: Option<String>,
    pub max_connections: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            redis_url: redis_url(),
            brokers: brokers(),
            default_quota: 100,
            claim_idle: Duration::from_millis(500),
            message_timeout: Duration::from_secs(30),
            redis_timeout: Duration::from_secs(2),
            admin_token: Some(ADMIN_TOKEN.to_owned()),
            max_connections: 1024,
        }
    }
}

/// `coupon_http::serve` on a port-0 listener, with a key prefix and a topic of its own.
pub struct TestApp {
    pub addr: SocketAddr,
    /// The key prefix of the app's campaigns.
    pub prefix: String,
    /// Deletes the keys when the first app over them is dropped; `None` for siblings.
    _scratch: Option<Scratch>,
    pub topic: String,
    pub config: Config,
    pub gate: Gate<MultiplexedConnection>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn start(options: Options) -> Self {
        let scratch = Scratch::new(&options.redis_url);
        let prefix = scratch.prefix.clone();
        let topic = format!("t_{}", prefix.replace('-', "_"));
        Self::start_with(options, prefix, Some(scratch), topic).await
    }

    /// Another app over the same keys and topic as `self`, as a second process would be.
    pub async fn sibling(&self, options: Options) -> Self {
        Self::start_with(options, self.prefix.clone(), None, self.topic.clone()).await
    }

    /// An app over keys and a topic someone else owns (another process of the test's).
    pub async fn join(options: Options, prefix: &str, topic: &str) -> Self {
        Self::start_with(options, prefix.to_owned(), None, topic.to_owned()).await
    }

    async fn start_with(
        options: Options,
        prefix: String,
        scratch: Option<Scratch>,
        topic: String,
    ) -> Self {
        // The app's logs, shown by the test harness when a test fails.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "coupon_http=info,warn".into()),
            )
            .with_test_writer()
            .try_init();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = Config {
            addr,
            redis_url: options.redis_url.clone(),
            key_prefix: prefix.clone(),
            default_quota: NonZeroU32::new(options.default_quota).unwrap(),
            admin_token: options.admin_token.clone(),
            max_connections: options.max_connections,
            redis_timeout: options.redis_timeout,
            shutdown_grace: Duration::from_secs(10),
            relay: RelayConfig {
                brokers: options.brokers.clone(),
                topic: topic.clone(),
                partitions: 3,
                replication: 1,
                batch: 200,
                claim_idle: options.claim_idle,
                message_timeout: options.message_timeout,
                consumer: format!("relay-{}", addr.port()),
            },
        };
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(coupon_http::serve(config.clone(), listener, async {
            let _ = stopped.await;
        }));
        let gate =
            Gate::with_key_prefix(gate::connect(&options.redis_url).await, prefix.clone()).unwrap();
        let app = Self {
            addr,
            prefix,
            _scratch: scratch,
            topic,
            config,
            gate,
            stop: Some(stop),
            task: Some(task),
        };
        eventually(Duration::from_secs(30), "the app to be ready", || async {
            app.call(Method::GET, "/ready", &[], "").await.0 == StatusCode::OK
        })
        .await;
        app
    }

    /// Graceful shutdown; returns what `serve` returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take().unwrap().await.unwrap()
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> (StatusCode, Value) {
        call(self.addr, method, path, headers, body).await
    }

    /// `POST /api/campaigns/{campaign}/apply` (or the seed's endpoint for `None`).
    pub async fn apply(&self, campaign: Option<&str>, user: u64) -> (StatusCode, Value) {
        let path = campaign.map_or_else(
            || "/api/coupons/apply".to_owned(),
            |c| format!("/api/campaigns/{c}/apply"),
        );
        let body = format!(r#"{{"userId":{user}}}"#);
        self.call(
            Method::POST,
            &path,
            &[("content-type", "application/json")],
            body,
        )
        .await
    }

    /// `POST /api/campaigns` with the admin token.
    pub async fn create(&self, definition: Value) -> (StatusCode, Value) {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let headers = [
            ("content-type", "application/json"),
            ("authorization", auth.as_str()),
        ];
        self.call(
            Method::POST,
            "/api/campaigns",
            &headers,
            definition.to_string(),
        )
        .await
    }

    /// Every key of this app with its content: equal snapshots mean nothing changed. Streams
    /// are compared by their entries, since the relay's polling updates their consumer
    /// bookkeeping without changing any data.
    pub async fn snapshot(&self) -> BTreeMap<String, Value> {
        let mut conn = gate::connect(&self.config.redis_url).await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query_async(&mut conn)
            .await
            .unwrap();
        let mut snapshot = BTreeMap::new();
        for key in keys {
            let kind: String = redis::cmd("TYPE")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            let content = if kind == "stream" {
                let entries: redis::Value = redis::cmd("XRANGE")
                    .arg(&key)
                    .arg("-")
                    .arg("+")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                format!("{entries:?}")
            } else {
                let dump: Vec<u8> = redis::cmd("DUMP")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                format!("{dump:?}")
            };
            snapshot.insert(key, Value::String(content));
        }
        snapshot
    }

    /// Waits until the relay has delivered every outbox entry of `campaign`.
    pub async fn drained(&self, campaign: &str) {
        let id = coupon_gate::CampaignId::new(campaign).unwrap();
        eventually(Duration::from_secs(30), "the outbox to drain", || async {
            self.gate.outbox_len(&id).await.unwrap() == 0
        })
        .await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> (StatusCode, Value) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("{path}: answer is not JSON: {bytes:?}"));
    (status, value)
}

/// Every message on `topic` from the start, read until at least `expected` distinct keys were
/// seen (or `limit` passed), and then until the topic has been quiet for a second, so that
/// extra messages are caught too. Returns (key, value) pairs in arrival order.
pub async fn read_topic(
    brokers: &str,
    topic: &str,
    expected: usize,
    limit: Duration,
) -> Vec<(String, Value)> {
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
    let mut keys = std::collections::BTreeSet::new();
    loop {
        let wait = if keys.len() >= expected {
            Duration::from_secs(1)
        } else {
            deadline.saturating_duration_since(Instant::now())
        };
        match tokio::time::timeout(wait, consumer.recv()).await {
            Ok(Ok(message)) => {
                let key = String::from_utf8(message.key().unwrap_or_default().to_vec()).unwrap();
                let value: Value =
                    serde_json::from_slice(message.payload().unwrap_or_default()).unwrap();
                keys.insert(key.clone());
                messages.push((key, value));
            }
            Ok(Err(err)) => panic!("reading {topic}: {err}"),
            Err(_) => break,
        }
    }
    messages
}

/// A Kafka-API broker (Tansu, in memory) of the test's own, reached through a [`Proxy`]: it
/// advertises the proxy's port, so every client connection passes the proxy and a test can
/// cut them all without killing the broker (whose memory engine would lose the topics).
pub struct Broker {
    pub proxy: Proxy,
    child: Child,
}

impl Broker {
    pub async fn start() -> Self {
        let port = free_port();
        let proxy = Proxy::start(port).await;
        let child = Command::new("tansu")
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://127.0.0.1:{port}"),
            ])
            .args([
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{}", proxy.port),
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu on PATH (scripts/services up installs it)");
        let broker = Self { proxy, child };
        eventually(
            Duration::from_secs(20),
            "the test broker to listen",
            || async { TcpStream::connect(("127.0.0.1", port)).await.is_ok() },
        )
        .await;
        broker
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.proxy.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy on a free loopback port. While cut, it closes every connection through it and
/// refuses new ones, as an unreachable broker would look to its clients.
pub struct Proxy {
    pub port: u16,
    cut: watch::Sender<bool>,
}

impl Proxy {
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, cut_rx) = watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if *cut_rx.borrow() {
                    continue; // dropping the stream closes it
                }
                let mut cut_rx = cut_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut_rx.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self { port, cut }
    }

    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}
