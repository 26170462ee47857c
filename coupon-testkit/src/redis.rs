//! Redis for tests: the machine's server under a key prefix of the test's own, and servers a
//! test starts (and kills) itself.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, Commands};

use crate::{eventually, free_port};

/// The shared Redis the machine runs, in a logical database of the tests' own (`REDIS_URL`,
/// default `redis://127.0.0.1:6379/9`).
///
/// Database 9 rather than the default 0: whatever else the machine's Redis holds (a benchmark's
/// million users, say) lives in database 0, and a test's `SCAN` for its own keys reads every key
/// of its database, so in a database of their own the tests' snapshots and clean-ups cost what
/// the tests themselves wrote, not what others keep.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/9".to_owned())
}

/// An async connection to the Redis at `url`.
pub async fn connect(url: &str) -> MultiplexedConnection {
    let client = redis::Client::open(url).expect("valid redis url");
    client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("redis at {url}: {e}"))
}

/// A key prefix no other test (or run) uses; its keys are deleted when it is dropped.
pub struct Scratch {
    /// The prefix: `test-<pid>-<nanos>-<n>`.
    pub prefix: String,
    url: String,
}

impl Scratch {
    /// A fresh prefix on the Redis at `url`.
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
}

impl Scratch {
    /// The Redis the prefix lives on.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every key of the prefix with its content: see [`snapshot`].
    pub async fn snapshot(&self) -> BTreeMap<String, String> {
        snapshot(&self.url, &self.prefix).await
    }
}

/// Every key under `prefix` on the Redis at `url` with its content, once a relay has delivered
/// what the outbox streams held (it removes entries as it goes; waits up to 30 s): equal
/// snapshots mean nothing changed. Streams are compared by their entries, since a relay's
/// polling updates their consumer bookkeeping without changing any data; other keys by `DUMP`.
/// The rate limits' keys (`<prefix>:limit:*`) are left out.
pub async fn snapshot(url: &str, prefix: &str) -> BTreeMap<String, String> {
    let mut conn = connect(url).await;
    let outboxes = scan(&mut conn, &format!("{prefix}:*:outbox"))
        .await
        .expect("SCAN");
    eventually(Duration::from_secs(30), "the outboxes to drain", || {
        let mut conn = conn.clone();
        let outboxes = outboxes.clone();
        async move {
            for key in outboxes {
                let len: u64 = redis::cmd("XLEN")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .expect("XLEN");
                if len > 0 {
                    return false;
                }
            }
            true
        }
    })
    .await;
    let keys = scan(&mut conn, &format!("{prefix}:*")).await.expect("SCAN");
    let limits = format!("{prefix}:limit:");
    let mut snapshot = BTreeMap::new();
    // The rate limits' buckets count requests, not state: a refused request spends them too.
    for key in keys.into_iter().filter(|key| !key.starts_with(&limits)) {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("TYPE");
        let content = if kind == "stream" {
            let entries: redis::Value = redis::cmd("XRANGE")
                .arg(&key)
                .arg("-")
                .arg("+")
                .query_async(&mut conn)
                .await
                .expect("XRANGE");
            format!("{entries:?}")
        } else {
            let dump: Vec<u8> = redis::cmd("DUMP")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .expect("DUMP");
            format!("{dump:?}")
        };
        snapshot.insert(key, content);
    }
    snapshot
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        // SCAN in steps rather than KEYS: the machine's Redis may hold millions of other keys,
        // and one KEYS over all of them would stall every other test's calls meanwhile.
        let Ok(Ok(keys)) = conn
            .scan_options::<String>(scan_options(&format!("{}:*", self.prefix)))
            .map(|keys| keys.collect::<redis::RedisResult<Vec<_>>>())
        else {
            return;
        };
        for chunk in keys.chunks(1000) {
            let _: redis::RedisResult<()> = redis::cmd("UNLINK").arg(chunk).query(&mut conn);
        }
    }
}

/// How a scan of the keys matching `pattern` steps through the keyspace: many keys a step, as
/// the prefix's keys are few among what the server may hold.
fn scan_options(pattern: &str) -> redis::ScanOptions {
    redis::ScanOptions::default()
        .with_pattern(pattern)
        .with_count(10_000)
}

/// Every key matching `pattern`, found with `SCAN` (never `KEYS`, which blocks the server for as
/// long as it takes to read every key it holds).
///
/// # Errors
///
/// A Redis failure.
pub async fn scan(
    conn: &mut MultiplexedConnection,
    pattern: &str,
) -> redis::RedisResult<Vec<String>> {
    let mut found = Vec::new();
    let mut keys = conn.scan_options::<String>(scan_options(pattern)).await?;
    while let Some(key) = keys.next_item().await {
        found.push(key?);
    }
    Ok(found)
}

/// Removes every key matching `pattern` (found with [`scan`]), a thousand to an `UNLINK`: what a
/// test or a benchmark wrote under a prefix of its own.
///
/// # Errors
///
/// A Redis failure.
pub async fn unlink_matching(
    conn: &mut MultiplexedConnection,
    pattern: &str,
) -> redis::RedisResult<()> {
    for chunk in scan(conn, pattern).await?.chunks(1000) {
        let _: () = conn.unlink(chunk).await?;
    }
    Ok(())
}

/// A Redis server of the test's own on a free loopback port, killed when dropped. For tests
/// that flush scripts, count writes or kill the server: never done to the shared Redis.
pub struct RedisServer {
    /// The port the server listens on.
    pub port: u16,
    child: Child,
    dir: PathBuf,
    /// The extra arguments it was started with, for restarts.
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a server without persistence on a free port and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// As [`RedisServer::start`], with extra `redis-server` arguments (e.g. `--appendonly yes`).
    pub fn start_with(extra: &[&str]) -> Self {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("coupon-gate-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        let child = spawn_redis(port, &dir, &extra);
        let server = Self {
            port,
            child,
            dir,
            extra,
        };
        server.wait_ready();
        server
    }

    /// Kills the server (SIGKILL, as a crash) and starts it again on the same port. With
    /// `keep_data` it finds its data directory as it left it (and recovers what it persisted);
    /// without, the directory is emptied and it starts with nothing.
    pub fn restart(&mut self, keep_data: bool) {
        self.kill();
        if !keep_data {
            let _ = std::fs::remove_dir_all(&self.dir);
            std::fs::create_dir_all(&self.dir).expect("temp dir");
        }
        self.child = spawn_redis(self.port, &self.dir, &self.extra);
        self.wait_ready();
    }

    /// Kills the server (SIGKILL) and leaves it down until [`RedisServer::restart`].
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The server's URL.
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
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn_redis(port: u16, dir: &std::path::Path, extra: &[String]) -> Child {
    Command::new("redis-server")
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
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("redis-server on PATH (scripts/services up installs it)")
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

/// Script calls the server has run (`EVALSHA` and `EVAL`), from `INFO commandstats`: how a test
/// tells whether a path reached Redis's scripts.
pub async fn script_calls(conn: &mut MultiplexedConnection) -> u64 {
    command_calls(conn, &["evalsha", "eval"]).await
}

/// Calls of the `commands` (lower case) the server has run, from `INFO commandstats`.
pub async fn command_calls(conn: &mut MultiplexedConnection, commands: &[&str]) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO");
    info.lines()
        .filter(|l| {
            commands
                .iter()
                .any(|c| l.starts_with(&format!("cmdstat_{c}:")))
        })
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}
