//! Helpers shared by the integration tests: connections to the machine's Redis under a key
//! prefix of their own, and Redis servers a test starts (and kills) itself.

#![allow(dead_code, missing_docs)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use coupon_gate::{CampaignId, Gate, UserId};
use redis::aio::MultiplexedConnection;

/// The shared Redis the machine runs (`REDIS_URL`, default `redis://127.0.0.1:6379`).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

pub async fn connect(url: &str) -> MultiplexedConnection {
    let client = redis::Client::open(url).expect("valid redis url");
    client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("redis at {url}: {e}"))
}

/// A key prefix no other test (or run) uses; its keys are deleted when it is dropped.
pub struct Scratch {
    pub prefix: String,
    url: String,
}

impl Scratch {
    pub fn new(url: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("test-{}-{nanos}-{n}", std::process::id());
        Self {
            prefix,
            url: url.to_owned(),
        }
    }

    pub async fn gate(&self) -> Gate<MultiplexedConnection> {
        Gate::with_key_prefix(connect(&self.url).await, self.prefix.clone()).expect("valid prefix")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}

/// A Redis server of the test's own on a free loopback port, killed when dropped. For tests
/// that flush scripts, count writes or kill the server: never done to the shared Redis.
pub struct RedisServer {
    pub port: u16,
    child: Child,
    dir: PathBuf,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("coupon-gate-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server on PATH (scripts/services up installs it)");
        let server = Self { port, child, dir };
        server.wait_ready();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = redis::Client::open(self.url()).expect("valid url");
        loop {
            let pong: Option<String> = client
                .get_connection()
                .ok()
                .and_then(|mut c| redis::cmd("PING").query(&mut c).ok());
            if pong.as_deref() == Some("PONG") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within 10s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

pub fn campaign(id: &str) -> CampaignId {
    CampaignId::new(id).expect("valid campaign id")
}

pub fn user(id: u64) -> UserId {
    UserId::new(id).expect("valid user id")
}

/// A field of `INFO` as an integer.
pub async fn info_field(conn: &mut MultiplexedConnection, section: &str, field: &str) -> i64 {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(conn)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("INFO {section} has no integer field {field}"))
}
