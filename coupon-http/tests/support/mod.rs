//! Helpers for the server's integration tests: the app on port 0 with keys and a topic of its
//! own, an HTTP client, snapshots of Redis state, a topic reader, and a Kafka-API broker of the
//! test's own behind a TCP proxy the test can cut.

#![allow(dead_code, missing_docs, unused_imports)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use coupon_gate::Gate;
use coupon_http::{Config, Identity};
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

pub use coupon_testkit::{
    Broker, Proxy, RedisServer, Scratch, brokers, command_calls, connect, eventually, free_port,
    read_topic, redis_url, scan,
};

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// The configuration test apps start from: the defaults, on the machine's Redis and broker,
/// with the test admin token, users named by the body and no per-user limit (the tests of
/// identity and limits set their own), and a relay that takes over stale entries within half a
/// second. [`TestApp`] gives each app its own address, key prefix, topic and relay name.
pub fn config() -> Config {
    let mut config = Config {
        redis: coupon_cli::Redis::server(redis_url()),
        admin_token: Some(ADMIN_TOKEN.to_owned()),
        identity: Identity::Body,
        user_rate: 0,
        max_connections: 1024,
        ..Config::default()
    };
    config.kafka.kafka_brokers = brokers();
    // A database nobody creates: archiving reads it as empty, and never another test's rows.
    config.database.database_url = format!(
        "{}/coupon_http_test_none",
        coupon_testkit::mysql_server_url().trim_end_matches('/')
    );
    config.relay_batch = 200;
    config.relay_claim_idle = Duration::from_millis(500);
    config
}

/// [`config`] on the Redis at `redis_url`, with a sold-out memory that lives a minute: only the
/// change messages can explain a server changing its answer within a test's deadlines.
pub fn remembering(redis_url: String) -> Config {
    Config {
        redis: coupon_cli::Redis::server(redis_url),
        sold_out_ttl: Duration::from_secs(60),
        ..config()
    }
}

/// A quota, for `Config::default_quota`.
pub fn quota(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("a quota is not zero")
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
    /// `config` (made from [`config`]) on a port-0 listener, a key prefix and a topic of its own.
    pub async fn start(config: Config) -> Self {
        let scratch = Scratch::new(&config.redis.redis_url);
        let prefix = scratch.prefix.clone();
        let topic = format!("t_{}", prefix.replace('-', "_"));
        Self::start_with(config, prefix, Some(scratch), topic).await
    }

    /// Another app over the same keys and topic as `self`, as a second process would be.
    pub async fn sibling(&self, config: Config) -> Self {
        Self::start_with(config, self.prefix.clone(), None, self.topic.clone()).await
    }

    /// An app over keys and a topic someone else owns (another process of the test's).
    pub async fn join(config: Config, prefix: &str, topic: &str) -> Self {
        Self::start_with(config, prefix.to_owned(), None, topic.to_owned()).await
    }

    async fn start_with(
        mut config: Config,
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
        let listener = coupon_http::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        config.addr = addr;
        config.key_prefix.key_prefix = prefix.clone();
        config.topic.topic = topic.clone();
        config.relay_consumer = Some(format!("relay-{}", addr.port()));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(coupon_http::serve(config.clone(), listener, async {
            let _ = stopped.await;
        }));
        let gate =
            Gate::with_key_prefix(connect(&config.redis.redis_url).await, prefix.clone()).unwrap();
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
        // Ready, and its relay delivering (the topic created): as the tests expect of an app.
        eventually(Duration::from_secs(30), "the app to be ready", || async {
            let (code, ready) = app.call(Method::GET, "/ready", &[], "").await;
            code == StatusCode::OK && ready["relay"] == true
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

    /// Every key of this app with its content, once the relay has delivered what the outboxes
    /// held: equal snapshots mean nothing changed (see [`coupon_testkit::snapshot`]).
    pub async fn snapshot(&self) -> BTreeMap<String, String> {
        coupon_testkit::snapshot(&self.config.redis.redis_url, &self.prefix).await
    }

    /// Overwrites `campaign`'s meta key with a string, as something else writing to the same
    /// keys would: Redis then refuses the gate's commands on that campaign.
    pub async fn break_campaign(&self, campaign: &str) {
        let mut conn = connect(&self.config.redis.redis_url).await;
        let () = redis::cmd("SET")
            .arg(format!("{}:{{{campaign}}}:meta", self.prefix))
            .arg("not a hash")
            .query_async(&mut conn)
            .await
            .unwrap();
    }

    /// Waits until the relay has delivered every outbox entry of `campaign`.
    pub async fn drained(&self, campaign: &str) {
        let id = coupon_gate::CampaignId::new(campaign).unwrap();
        eventually(Duration::from_secs(30), "the outbox to drain", || async {
            self.gate.outbox().len(&id).await.unwrap() == 0
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

/// Admissions Redis has decided: calls of `HMGET`, with which admit.lua opens (it reads the
/// campaign's meta hash). Unlike the script calls, it does not count the relay's
/// acknowledgements (ack.lua), which may run at any time: a relay slower than the claim time
/// has its entries taken over and delivered by another, and acknowledges them again when its
/// own delivery ends. Nothing else a server does while answering reads with `HMGET`.
pub async fn admissions_decided(redis_url: &str) -> u64 {
    command_calls(&mut connect(redis_url).await, &["hmget"]).await
}

/// An answer's code and `status` field, for comparing both at once.
pub fn status(answer: &(StatusCode, Value)) -> (StatusCode, &str) {
    (answer.0, answer.1["status"].as_str().unwrap_or("?"))
}

/// Applies with new users until the app at `addr` answers sold out without a script call: it has
/// subscribed to changes and remembers the campaign.
pub async fn until_answered_locally(
    addr: SocketAddr,
    redis_url: &str,
    campaign: &str,
    user: &mut u64,
) {
    eventually(
        Duration::from_secs(10),
        "a sold-out answer without an admission decided by redis",
        || {
            *user += 1;
            let u = *user;
            async move {
                let before = admissions_decided(redis_url).await;
                let body = format!(r#"{{"userId":{u}}}"#);
                let path = format!("/api/campaigns/{campaign}/apply");
                let json_type = ("content-type", "application/json");
                let answer = call(addr, Method::POST, &path, &[json_type], body).await;
                assert_eq!(status(&answer), (StatusCode::GONE, "sold_out"));
                admissions_decided(redis_url).await == before
            }
        },
    )
    .await;
}

pub async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> (StatusCode, Value) {
    let answer = raw_call(addr, method, path, headers, body).await;
    (answer.status, answer.body)
}

/// An answer with its headers.
pub struct Answer {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Value,
}

/// As [`call`], keeping the answer's headers.
pub async fn raw_call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    call_from(None, addr, method, path, headers, body).await
}

/// As [`raw_call`], from the local address `source` (any 127.x.y.z is this machine, and a
/// distinct client address to the server).
pub async fn call_from(
    source: Option<std::net::IpAddr>,
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let mut connector = HttpConnector::new();
    connector.set_local_address(source);
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
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
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    // Every answer is JSON but the metrics, in Prometheus's text format.
    let body = if path == "/metrics" && status == StatusCode::OK {
        serde_json::Value::String(String::from_utf8(bytes.to_vec()).expect("UTF-8 metrics"))
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("{path}: answer is not JSON: {bytes:?}"))
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// The JSON body of a raw answer (head and body as the server wrote them).
pub fn body_of(answer: &str) -> Value {
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {answer:?}"))
}

/// A key or certificate of `tests/keys`.
pub fn key_file(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(name)
}

/// An RS256 token for `sub`, signed with `tests/keys/rsa-private.pem`, valid for an hour.
pub fn rs256_token(sub: u64) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let pem = std::fs::read(key_file("rsa-private.pem")).unwrap();
    let key = EncodingKey::from_rsa_pem(&pem).unwrap();
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({"sub": sub, "iat": now, "exp": now + 3600});
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap()
}

/// `token` with its signature's first character changed: refused after verifying.
pub fn forged(token: &str) -> String {
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let first = if signature.starts_with('A') { 'B' } else { 'A' };
    format!("{signed}.{first}{}", &signature[1..])
}
