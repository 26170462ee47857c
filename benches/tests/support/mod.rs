//! The whole pipeline as in production, for end-to-end tests: the real `coupon-http` and
//! `coupon-sink` binaries as child processes, on a key prefix, a topic and a database of the
//! test's own, over the machine's Redis, Kafka-API broker and MariaDB.

#![allow(dead_code, missing_docs)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use coupon_bench::admin::Server;
use coupon_bench::check::{self, Stored};
use coupon_bench::sale::{self, Identity, Signer, Tally, Target};
use indicatif::ProgressBar;

pub use coupon_testkit::{
    Process, RedisCluster, Scratch, ScratchDb, brokers, eventually, free_port, redis_url,
};

pub const ADMIN_TOKEN: &str = "e2e-admin-token";

/// How long the pipeline may take to bring every coupon into MySQL.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(120);

/// The path of a workspace binary, built once per test process with the same profile as the
/// tests, so that the processes run the code under test and not an older build.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        // target/<profile>/deps/<test binary>
        let exe = std::env::current_exe().expect("the test binary's path");
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("the test binary lives in target/<profile>/deps")
            .to_owned();
        let mut build = Command::new(env!("CARGO"));
        build.current_dir(env!("CARGO_MANIFEST_DIR")).args([
            "build",
            "--bins",
            "-p",
            "coupon-http",
            "-p",
            "coupon-sink",
            "-p",
            "coupon-admin",
        ]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let out = build.output().expect("run cargo build");
        assert!(
            out.status.success(),
            "building the binaries failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        profile_dir
    });
    dir.join(name)
}

/// The log file of a child process started by [`spawn`], in the temp directory.
pub fn log_path(name: &str, tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{name}-{tag}.log"))
}

/// A child process whose output goes to its [`log_path`], named in the test's output so that a
/// failure can be read up.
pub fn spawn(name: &str, tag: &str, envs: &[(&str, String)]) -> Process {
    let log = log_path(name, tag);
    eprintln!("{name} log: {}", log.display());
    let file = std::fs::File::create(&log).expect("log file");
    Command::new(binary(name))
        .envs(envs.iter().map(|(k, v)| (k, v.as_str())))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file)
        .spawn()
        .map(Process)
        .unwrap_or_else(|err| panic!("cannot start {name}: {err}"))
}

/// One `coupon-http` process.
pub struct Http {
    pub process: Process,
    pub addr: SocketAddr,
    pub server: Server,
}

/// One `coupon-sink` process.
pub struct Sink {
    pub process: Process,
    /// Its log: standard output and error.
    pub log: PathBuf,
    /// Where it serves its metrics (`COUPON_SINK_METRICS_ADDR`).
    pub metrics: SocketAddr,
}

impl Sink {
    /// The partitions of every assignment in the sink's log so far, oldest first.
    pub fn assignments(&self) -> Vec<Vec<String>> {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .filter_map(|line| line.split("partitions assigned partitions=").nth(1))
            .map(|list| {
                list.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .collect()
    }
}

/// How the servers of a pipeline learn who applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A bearer token per user, HS256 with a secret of the pipeline's own (the default, as in
    /// production).
    Jwt,
    /// The body's userId (`COUPON_IDENTITY=body`).
    Body,
}

/// How a pipeline is set up; `Setup::default()` is one server and one sink on the machine's
/// Redis and broker, in jwt mode, without a per-user limit.
pub struct Setup {
    pub servers: usize,
    pub mode: Mode,
    /// `COUPON_USER_RATE`: 0 (the default here) turns the per-user limit off, so that a user
    /// clicking a thousand times meets duplicates, not the limit.
    pub user_rate: u32,
    /// Sinks in the consumer group.
    pub sinks: usize,
    /// Whether each sink has a `COUPON_SINK_INSTANCE_ID` of its own (static membership), as the
    /// README advises, or joins the group anew each time it starts (dynamic membership).
    pub static_membership: bool,
    pub redis_url: String,
    /// `REDIS_CLUSTER_NODES` for every `coupon-http` and `coupon-admin` (`host:port`), which
    /// then use the cluster instead of `redis_url`; empty by default.
    pub redis_cluster_nodes: Vec<String>,
    /// Bootstrap servers for every process (a broker of the test's own, say).
    pub brokers: String,
    /// The sink reaches MariaDB through this port (a proxy of the test's) instead of the
    /// server's own.
    pub sink_mysql_port: Option<u16>,
    /// More environment for every `coupon-http`.
    pub http_env: Vec<(&'static str, String)>,
    /// More environment for every sink.
    pub sink_env: Vec<(&'static str, String)>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            servers: 1,
            mode: Mode::Jwt,
            user_rate: 0,
            sinks: 1,
            static_membership: true,
            redis_url: redis_url(),
            redis_cluster_nodes: Vec::new(),
            brokers: brokers(),
            sink_mysql_port: None,
            http_env: Vec::new(),
            sink_env: Vec::new(),
        }
    }
}

impl Setup {
    /// The default set-up on `cluster`: every `coupon-http` and `coupon-admin` given
    /// `REDIS_CLUSTER_NODES` naming its first `seeds` nodes (the rest are discovered).
    pub fn on_cluster(cluster: &RedisCluster, seeds: usize) -> Self {
        Self {
            redis_url: cluster.nodes()[0].clone(),
            redis_cluster_nodes: cluster.ports[..seeds]
                .iter()
                .map(|port| format!("127.0.0.1:{port}"))
                .collect(),
            ..Self::default()
        }
    }
}

/// The pipeline: `coupon-http` processes sharing one key prefix and topic, and `coupon-sink`
/// processes sharing one consumer group. Fields drop in order: processes first, then the keys
/// and the database.
pub struct Pipeline {
    pub http: Vec<Http>,
    /// How the crowd says who it is, as the servers expect.
    pub identity: Identity,
    pub sinks: Vec<Sink>,
    pub scratch: Scratch,
    pub db: ScratchDb,
    pub topic: String,
    pub redis_url: String,
    /// `REDIS_CLUSTER_NODES`, empty when the pipeline runs on `redis_url`.
    pub redis_cluster_nodes: String,
    pub brokers: String,
    /// Every sink's environment, to start one again.
    sink_env: Vec<Vec<(&'static str, String)>>,
    /// Every server's environment, to start one again.
    http_env: Vec<Vec<(&'static str, String)>>,
    /// Sinks started so far, to name their logs apart.
    sinks_started: usize,
    pool: mysql_async::Pool,
}

/// A random number, for secrets of the test's own.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// Starts the `n`th sink of the pipeline on `topic`.
fn start_sink(topic: &str, n: usize, env: &[(&'static str, String)]) -> Sink {
    let tag = format!("{topic}-{n}");
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut env = env.to_vec();
    env.push(("COUPON_SINK_METRICS_ADDR", metrics.to_string()));
    Sink {
        process: spawn("coupon-sink", &tag, &env),
        log: log_path("coupon-sink", &tag),
        metrics,
    }
}

/// Starts server `i` of the pipeline at `addr` and waits until it is ready; `again` tells its log
/// from an earlier one's.
async fn start_http(
    topic: &str,
    i: usize,
    addr: SocketAddr,
    env: &[(&'static str, String)],
    again: &str,
) -> Http {
    let process = spawn("coupon-http", &format!("{topic}-{i}{again}"), env);
    let server = Server::new(&format!("http://{addr}")).expect("a valid URL");
    server
        .wait_ready(Duration::from_secs(60))
        .await
        .unwrap_or_else(|err| panic!("coupon-http {i}: {err:#}"));
    Http {
        process,
        addr,
        server,
    }
}

impl Pipeline {
    /// Starts `servers` coupon-http processes and one sink, and waits until every server is ready.
    pub async fn start(servers: usize) -> Self {
        Self::start_with(Setup {
            servers,
            ..Setup::default()
        })
        .await
    }

    /// Starts the pipeline as `setup` says.
    pub async fn start_with(setup: Setup) -> Self {
        let servers = setup.servers;
        let scratch = Scratch::new(&setup.redis_url);
        let db = ScratchDb::new();
        let topic = format!("e2e_{}", db.name);
        // A secret of this pipeline's own, 64 hex digits.
        let secret: String = (0..4).map(|_| format!("{:016x}", rand_u64())).collect();
        let identity = match setup.mode {
            Mode::Jwt => Identity::Token(Box::new(Signer::hs256(secret.as_bytes()))),
            Mode::Body => Identity::Body,
        };
        let mode = match setup.mode {
            Mode::Jwt => "jwt",
            Mode::Body => "body",
        };
        let mut http = Vec::new();
        let mut http_env = Vec::new();
        for i in 0..servers {
            let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let mut env = vec![
                ("COUPON_HTTP_ADDR", addr.to_string()),
                ("REDIS_URL", setup.redis_url.clone()),
                ("COUPON_KEY_PREFIX", scratch.prefix.clone()),
                ("KAFKA_BROKERS", setup.brokers.clone()),
                ("COUPON_TOPIC", topic.clone()),
                ("COUPON_TOPIC_PARTITIONS", "3".to_owned()),
                ("COUPON_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
                ("COUPON_RELAY_CONSUMER", format!("http-{i}")),
                // A killed server's unacknowledged outbox entries are taken over within a second.
                ("COUPON_RELAY_CLAIM_IDLE_MS", "1000".to_owned()),
                ("COUPON_REDIS_TIMEOUT_MS", "1000".to_owned()),
                ("COUPON_IDENTITY", mode.to_owned()),
                ("COUPON_JWT_SECRET", secret.clone()),
                ("COUPON_USER_RATE", setup.user_rate.to_string()),
                // The sink's database, which an archive reads.
                ("DATABASE_URL", db.url()),
            ];
            if !setup.redis_cluster_nodes.is_empty() {
                env.push(("REDIS_CLUSTER_NODES", setup.redis_cluster_nodes.join(",")));
            }
            env.extend(setup.http_env.iter().cloned());
            // The first server creates the topic before it is ready; the sink needs the topic.
            http.push(start_http(&topic, i, addr, &env, "").await);
            http_env.push(env);
        }
        let database_url = setup
            .sink_mysql_port
            .map_or_else(|| db.url(), |port| db.url_via(port));
        let sink_env: Vec<_> = (1..=setup.sinks)
            .map(|n| {
                let mut env = vec![
                    ("DATABASE_URL", database_url.clone()),
                    ("KAFKA_BROKERS", setup.brokers.clone()),
                    ("COUPON_TOPIC", topic.clone()),
                    ("COUPON_SINK_GROUP", format!("{topic}-sink")),
                ];
                if setup.static_membership {
                    env.push(("COUPON_SINK_INSTANCE_ID", format!("sink-{n}")));
                }
                env.extend(setup.sink_env.iter().cloned());
                env
            })
            .collect();
        let sinks = sink_env
            .iter()
            .enumerate()
            .map(|(i, env)| start_sink(&topic, i + 1, env))
            .collect();
        let pool = mysql_async::Pool::new(db.url().as_str());
        Self {
            http,
            identity,
            sinks,
            scratch,
            db,
            topic,
            redis_url: setup.redis_url,
            redis_cluster_nodes: setup.redis_cluster_nodes.join(","),
            brokers: setup.brokers,
            sinks_started: setup.sinks,
            sink_env,
            http_env,
            pool,
        }
    }

    /// SIGKILLs server `i` (if it still runs) and starts it again on the same address with the
    /// same environment, as a process supervisor would; returns once it is ready.
    pub async fn restart_http(&mut self, i: usize) {
        self.http[i].process.kill();
        let addr = self.http[i].addr;
        self.http[i] = start_http(&self.topic, i, addr, &self.http_env[i], "-again").await;
    }

    /// SIGKILLs sink `i` and starts it again with the same environment (under the same name in
    /// the group when membership is static).
    pub fn restart_sink(&mut self, i: usize) {
        self.sinks[i].process.kill();
        self.sinks_started += 1;
        self.sinks[i] = start_sink(&self.topic, self.sinks_started, &self.sink_env[i]);
    }

    /// Waits until every sink has been given partitions, so that what is produced from now on is
    /// drained at once.
    pub async fn sinks_hold_partitions(&self) {
        for sink in &self.sinks {
            eventually(
                Duration::from_secs(60),
                "every sink to be given partitions",
                || async { sink.assignments().last().is_some_and(|p| !p.is_empty()) },
            )
            .await;
        }
    }

    /// Entries (batches of admissions) of `campaign` in its outbox stream now: not yet confirmed by the broker.
    pub async fn outbox_len(&self, campaign: &str) -> u64 {
        let mut conn = coupon_testkit::connect(&self.redis_url).await;
        redis::cmd("XLEN")
            .arg(format!("{}:{{{campaign}}}:outbox", self.scratch.prefix))
            .query_async(&mut conn)
            .await
            .expect("XLEN of the outbox")
    }

    /// Coupon rows of `campaign` in MySQL now.
    pub async fn rows(&self, campaign: &str) -> u64 {
        check::stored(&self.pool, campaign)
            .await
            .expect("read the coupons")
            .rows
    }

    /// Coupon rows of `campaign` in MySQL now, as user -> seq (the crowds are numeric users; a
    /// user with two rows would show once here, which `check::stored`'s count tells apart).
    pub async fn coupon_rows(&self, campaign: &str) -> std::collections::BTreeMap<u64, u64> {
        let id = coupon_gate::CampaignId::new(campaign).expect("a campaign id");
        coupon_admin::sources::coupon_rows(&self.pool, &id)
            .await
            .expect("read the coupons")
            .into_iter()
            .map(|(user, seq)| (user.as_number().expect("a numeric user"), u64::from(seq)))
            .collect()
    }

    /// Runs `coupon-admin` with `args` against this pipeline's stores; returns its exit code and
    /// standard output.
    pub fn admin(&self, args: &[&str]) -> (i32, String) {
        let out = self.admin_command(args).output().expect("run coupon-admin");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        eprintln!(
            "coupon-admin {}:\n{stdout}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), stdout)
    }

    /// `coupon-admin` with `args`, on the pipeline's stores, not started yet.
    pub fn admin_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(binary("coupon-admin"));
        command
            .args(args)
            .env("REDIS_URL", &self.redis_url)
            .env("REDIS_CLUSTER_NODES", &self.redis_cluster_nodes)
            .env("COUPON_KEY_PREFIX", &self.scratch.prefix)
            .env("DATABASE_URL", self.db.url())
            .env("KAFKA_BROKERS", &self.brokers)
            .env("COUPON_TOPIC", &self.topic);
        command
    }

    /// A campaign of `quota` coupons, created through the first server's admin endpoint.
    pub async fn campaign(&self, id: &str, quota: u32) -> String {
        self.http[0]
            .server
            .create_campaign(id, quota, Some(ADMIN_TOKEN))
            .await
            .expect("create the campaign");
        id.to_owned()
    }

    /// Fires `clicks` (user ids, in arrival order) at server `i` over `concurrency` connections.
    pub async fn fire(
        &self,
        i: usize,
        campaign: &str,
        clicks: Vec<u64>,
        concurrency: usize,
    ) -> Tally {
        self.fire_with(i, campaign, clicks, concurrency, &ProgressBar::hidden())
            .await
    }

    /// As [`Pipeline::fire`], advancing `progress` as answers come, so that a test can strike
    /// mid-burst.
    pub async fn fire_with(
        &self,
        i: usize,
        campaign: &str,
        clicks: Vec<u64>,
        concurrency: usize,
        progress: &ProgressBar,
    ) -> Tally {
        let target =
            Target::local(self.http[i].addr, campaign).with_identity(self.identity.clone());
        sale::run(&target, clicks, concurrency, progress).await
    }

    /// Waits, with [`DRAIN_LIMIT`], until MySQL holds `rows` coupons of `campaign`, and returns
    /// them. Fails the test if they never come.
    pub async fn wait_for_rows(&self, campaign: &str, rows: u64) -> Stored {
        let (stored, took) = check::wait_for_rows(&self.pool, campaign, rows, DRAIN_LIMIT)
            .await
            .expect("read the coupons");
        if let Some(took) = took {
            eprintln!("{campaign}: {rows} coupons in MySQL after {took:?}");
        } else {
            let outbox = self.outbox_len(campaign).await;
            let (brokers, topic) = (self.brokers.clone(), self.topic.clone());
            let on_topic = tokio::task::spawn_blocking(move || {
                coupon_testkit::topic_records(&brokers, &topic)
            })
            .await
            .expect("count the topic's records");
            panic!(
                "MySQL holds {} of {rows} coupons after {DRAIN_LIMIT:?}, {outbox} entries are in \
                 the outbox, {on_topic} records on the topic (every campaign's); the logs named \
                 above end:\n{}",
                stored.rows,
                self.log_tails()
            );
        }
        stored
    }

    /// The last lines of note (warnings, errors, take-overs) of every log of this pipeline's
    /// processes, for a failure's message: a CI run keeps the test's output, not its files.
    fn log_tails(&self) -> String {
        let mut tails = String::new();
        let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) else {
            return tails;
        };
        let mut logs: Vec<PathBuf> = dir
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| {
                path.file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.starts_with("coupon-") && name.contains(&self.topic))
            })
            .collect();
        logs.sort();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let noted: Vec<&str> = text
                .lines()
                .filter(|line| {
                    ["WARN", "ERROR", "took over"]
                        .iter()
                        .any(|mark| line.contains(mark))
                })
                .collect();
            tails.push_str(&format!("== {}\n", log.display()));
            for line in &noted[noted.len().saturating_sub(15)..] {
                tails.push_str(line);
                tails.push('\n');
            }
        }
        tails
    }
}
