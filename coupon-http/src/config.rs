//! Typed configuration of the server, with documented defaults: the server's own, how it knows
//! who applies ([`Identity`], [`JwtConfig`]), and the relay's ([`RelayConfig`], from
//! coupon-relay).
//!
//! The binary reads a [`Config`] from flags, the environment and the settings file: the struct
//! is its settings table, each setting declared once beside the field it sets. Everything below
//! takes it (or a part of it) as a value and reads no environment itself.

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::{Arg, ArgGroup, ArgMatches, Command, FromArgMatches};
use coupon_cli::{Database, Kafka, KeyPrefix, Redis, Topic};
use coupon_gate::{Gate, RedisTarget};
use coupon_relay::RelayConfig;
use ipnet::IpNet;

use crate::limits::RateLimit;

/// Everything `coupon-http` needs to run, which is also its settings table: each field is one
/// setting (or a group of them) with its flag, environment variable, default and help text.
/// [`Config::default`] gives every declared default.
#[derive(clap::Args, Clone, Debug)]
pub struct Config {
    /// Listen address.
    #[arg(
        long = "http-addr",
        alias = "addr",
        env = "COUPON_HTTP_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub addr: SocketAddr,
    /// The Redis the gate runs on: one server, or the nodes of a cluster.
    #[command(flatten)]
    pub redis: Redis,
    /// Prepended to every Redis key, so that deployments can share one Redis.
    #[command(flatten)]
    pub key_prefix: KeyPrefix,
    /// The Kafka cluster the relay delivers to, with more librdkafka properties for its clients
    /// (TLS, SASL, batching), applied after the relay's defaults and before the settings the
    /// guarantees rest on (`enable.idempotence`, `acks`, `message.timeout.ms`), which cannot be
    /// overridden.
    #[command(flatten)]
    pub kafka: Kafka,
    /// The topic admissions are produced to.
    #[command(flatten)]
    pub topic: Topic,
    /// The database coupon-sink writes to: archiving a campaign checks that it holds exactly the
    /// campaign's holders. Nothing else of coupon-http reads it, and it is not needed to start
    /// or to be ready.
    #[command(flatten)]
    pub database: Database,
    /// Archive a campaign this long after it closed (e.g. 30d, 12h), once it is settled: its
    /// state leaves Redis but for a tombstone. Unset: never by itself (POST
    /// /api/campaigns/{id}/archive and coupon-admin archive still do).
    #[arg(long, env = "COUPON_ARCHIVE_AFTER", value_parser = humantime::parse_duration)]
    pub archive_after: Option<Duration>,
    /// Partitions of the topic, when it has to be created (an existing topic is left as it is).
    #[arg(long, env = "COUPON_TOPIC_PARTITIONS", default_value = "3", value_parser = clap::value_parser!(i32).range(1..))]
    pub topic_partitions: i32,
    /// Replication factor of the topic, when it has to be created.
    #[arg(long, env = "COUPON_TOPIC_REPLICATION", default_value = "1", value_parser = clap::value_parser!(i32).range(1..))]
    pub topic_replication: i32,
    /// Quota of the `default` campaign, created at start-up if missing (never changed if present).
    #[arg(long, env = "COUPON_DEFAULT_QUOTA", default_value = "100")]
    pub default_quota: NonZeroU32,
    /// Bearer token for the admin endpoints; without it they answer 403.
    #[arg(long, env = "COUPON_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// How the user of an application is known: jwt (a verified bearer token) or body (the
    /// body's userId, trusted: development, tests and trusted internal callers only).
    #[arg(long, env = "COUPON_IDENTITY", value_enum, default_value = "jwt")]
    pub identity: Identity,
    /// How bearer tokens are checked, in jwt mode.
    #[command(flatten)]
    pub jwt: JwtConfig,
    /// Applications per second one user may make, sustained (0: no limit).
    #[arg(long, env = "COUPON_USER_RATE", default_value = "5")]
    pub user_rate: u32,
    /// Applications one user may make at once.
    #[arg(long, env = "COUPON_USER_BURST", default_value = "10")]
    pub user_burst: NonZeroU32,
    /// Applications per second one client address may make, sustained (none: no limit, the
    /// default, as a carrier may put many users behind one address).
    #[arg(long, env = "COUPON_IP_RATE")]
    pub ip_rate: Option<NonZeroU32>,
    /// Applications one client address may make at once (default: the rate).
    #[arg(long, env = "COUPON_IP_BURST")]
    pub ip_burst: Option<NonZeroU32>,
    /// Tokens refused after verifying that one client address may send a second, sustained,
    /// before its token-bearing requests are answered 429 without verifying (0: no budget). A
    /// client with a stale token fails a few times before it signs in again; a forger, once past
    /// the burst, is held to this many verifications a second per address, one at a time (about
    /// 0.1 ms of CPU a second with RS256).
    #[arg(long, env = "COUPON_BAD_TOKEN_RATE", default_value = "5")]
    pub bad_token_rate: u32,
    /// Tokens refused after verifying that one client address may send at once.
    #[arg(long, env = "COUPON_BAD_TOKEN_BURST", default_value = "50")]
    pub bad_token_burst: NonZeroU32,
    /// Proxies in front of the server, as CIDRs or addresses, comma separated: their
    /// X-Forwarded-For entries name the client, and their connections are not counted per
    /// address.
    #[arg(long, env = "COUPON_TRUSTED_PROXIES", value_delimiter = ',', value_parser = proxy_net)]
    pub trusted_proxies: Vec<IpNet>,
    /// Connections one client address may hold at once (trusted proxies excepted). The default
    /// is a sixteenth of the default cap, so that one address cannot take the server, yet a
    /// carrier's address shared by many users can hold hundreds.
    #[arg(long = "max-connections-per-ip", env = "COUPON_MAX_CONNECTIONS_PER_IP", default_value = "256", value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub max_connections_per_address: usize,
    /// Milliseconds a request's head may take to arrive, from its first byte (a request head
    /// of a few hundred bytes takes a round trip or two, even on a poor mobile network).
    #[arg(long = "header-timeout-ms", env = "COUPON_HEADER_TIMEOUT_MS", default_value = "5000", value_parser = clap::value_parser!(u64).range(1..).map(Duration::from_millis))]
    pub header_timeout: Duration,
    /// The largest request head accepted (request line and headers), in bytes; a larger one is
    /// answered 431.
    #[arg(long, env = "COUPON_MAX_HEAD_BYTES", default_value = "8192", value_parser = clap::value_parser!(u32).range(1024..=1_048_576).map(|n| n as usize))]
    pub max_head_bytes: usize,
    /// Connections served at once. At the cap, the connection idle the longest is closed for a
    /// new client; when none is idle, new clients wait in the listen backlog.
    #[arg(long, env = "COUPON_MAX_CONNECTIONS", default_value = "4096", value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub max_connections: usize,
    /// Milliseconds a request waits on Redis before it is answered 503.
    #[arg(long = "redis-timeout-ms", env = "COUPON_REDIS_TIMEOUT_MS", default_value = "2000", value_parser = clap::value_parser!(u64).range(1..).map(Duration::from_millis))]
    pub redis_timeout: Duration,
    /// Replicas of a campaign's Redis master that must hold an admission before it is answered
    /// success and before it is relayed (Redis WAIT); 0 answers once the master decided.
    #[arg(long, env = "COUPON_REDIS_WAIT_REPLICAS", default_value = "0")]
    pub redis_wait_replicas: u32,
    /// Milliseconds an admission waits for those replicas before it is answered 503.
    #[arg(long = "redis-wait-timeout-ms", env = "COUPON_REDIS_WAIT_TIMEOUT_MS", default_value = "500", value_parser = clap::value_parser!(u64).range(1..).map(Duration::from_millis))]
    pub redis_wait_timeout: Duration,
    /// Milliseconds a connection may take to send a complete request and have it answered,
    /// counted from when the server starts waiting for it (on connecting, after each answer);
    /// then it is closed (silent, slow or idle clients). Must exceed the Redis timeout.
    #[arg(long = "request-timeout-ms", env = "COUPON_REQUEST_TIMEOUT_MS", default_value = "10000", value_parser = clap::value_parser!(u64).range(1..).map(Duration::from_millis))]
    pub request_timeout: Duration,
    /// Seconds shutdown waits for requests in flight and the relay's last batch.
    #[arg(long = "shutdown-grace-secs", env = "COUPON_SHUTDOWN_GRACE_SECS", default_value = "10", value_parser = clap::value_parser!(u64).map(Duration::from_secs))]
    pub shutdown_grace: Duration,
    /// Most applications to one campaign decided in one Redis script call (1: one call each).
    #[arg(long, env = "COUPON_APPLY_BATCH", default_value_t = coupon_gate::BatchConfig::DEFAULT_MAX_BATCH, value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub apply_batch: usize,
    /// Milliseconds a sold-out campaign is answered from memory unless a change message comes
    /// first (0: always ask Redis).
    #[arg(long = "sold-out-ttl-ms", env = "COUPON_SOLD_OUT_TTL_MS", default_value = "1000", value_parser = clap::value_parser!(u64).map(Duration::from_millis))]
    pub sold_out_ttl: Duration,
    /// The most holders of sold-out campaigns remembered, over every campaign (10 to 19 bytes
    /// each), so that holders applying again are told `duplicate` from memory; a campaign with
    /// more is answered by Redis (0: every campaign is).
    #[arg(long, env = "COUPON_SOLD_OUT_HOLDERS", default_value = "1000000")]
    pub sold_out_holders: usize,
    /// Outbox entries relayed per round.
    #[arg(long, env = "COUPON_RELAY_BATCH", default_value_t = RelayConfig::DEFAULT_BATCH, value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub relay_batch: usize,
    /// Milliseconds an outbox entry stays unacknowledged, its relay silent, before another relay takes it over.
    #[arg(long = "relay-claim-idle-ms", env = "COUPON_RELAY_CLAIM_IDLE_MS", default_value = "30000", value_parser = clap::value_parser!(u64).range(1..).map(Duration::from_millis))]
    pub relay_claim_idle: Duration,
    /// Milliseconds the producer tries to deliver one message before the relay retries it later.
    #[arg(long = "relay-message-timeout-ms", env = "COUPON_RELAY_MESSAGE_TIMEOUT_MS", default_value = "30000", value_parser = clap::value_parser!(u64).range(1..).map(Duration::from_millis))]
    pub relay_message_timeout: Duration,
    /// Name of this relay in the outbox consumer group (default: host, pid and start time).
    #[arg(long, env = "COUPON_RELAY_CONSUMER")]
    pub relay_consumer: Option<String>,
    /// Prometheus metrics: `on` records them and serves `GET /metrics`, `off` neither.
    #[arg(long, env = "COUPON_METRICS", default_value = "on", value_parser = on_off, action = clap::ArgAction::Set)]
    pub metrics: bool,
    /// Serve `/metrics` on this address only (e.g. 127.0.0.1:9463), not on the API's port.
    #[arg(long, env = "COUPON_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

impl Config {
    /// The cluster of the Redis cluster nodes if any node is named, else the server at the
    /// Redis URL; over TLS with the certificates of the Redis TLS settings.
    ///
    /// # Errors
    ///
    /// A certificate file that cannot be read, or one given for a plaintext address.
    pub fn redis_target(&self) -> anyhow::Result<RedisTarget> {
        let target =
            RedisTarget::from_config(&self.redis.redis_url, &self.redis.redis_cluster_nodes);
        let tls = self.redis.tls()?;
        Ok(target.with_tls(tls.ca, tls.client))
    }

    /// Applications per user; `None` for no limit.
    pub fn user_limit(&self) -> Option<RateLimit> {
        NonZeroU32::new(self.user_rate).map(|per_second| RateLimit {
            per_second,
            burst: self.user_burst,
        })
    }

    /// Applications per client address; `None` (the default) for no limit.
    pub fn address_limit(&self) -> Option<RateLimit> {
        self.ip_rate.map(|per_second| RateLimit {
            per_second,
            burst: self.ip_burst.unwrap_or(per_second),
        })
    }

    /// Tokens refused after verifying, per client address: once an address spent this budget,
    /// its requests with a token not verified before are answered 429 without verifying until
    /// it refills. `None` for no budget.
    pub fn bad_token_limit(&self) -> Option<RateLimit> {
        NonZeroU32::new(self.bad_token_rate).map(|per_second| RateLimit {
            per_second,
            burst: self.bad_token_burst,
        })
    }

    /// The admin token, if one is set and not empty.
    pub(crate) fn admin_token(&self) -> Option<&str> {
        self.admin_token
            .as_deref()
            .filter(|token| !token.is_empty())
    }

    /// The relay's configuration: where and how it delivers. Without a configured consumer
    /// name, each call makes a new one (see [`RelayConfig::default_consumer`]); [`crate::serve`]
    /// names it once at start.
    pub fn relay(&self) -> RelayConfig {
        RelayConfig {
            brokers: self.kafka.kafka_brokers.clone(),
            topic: self.topic.topic.clone(),
            partitions: self.topic_partitions,
            replication: self.topic_replication,
            batch: self.relay_batch,
            claim_idle: self.relay_claim_idle,
            message_timeout: self.relay_message_timeout,
            consumer: self
                .relay_consumer
                .clone()
                .filter(|name| !name.is_empty())
                .unwrap_or_else(RelayConfig::default_consumer),
            kafka_properties: self.kafka.kafka_properties.clone(),
        }
    }

    /// A gate over `conn` with this configuration's key prefix and replica confirmations.
    pub(crate) fn gate<C>(&self, conn: C) -> anyhow::Result<Gate<C>>
    where
        C: redis::aio::ConnectionLike + Clone + Send + Sync,
    {
        use anyhow::Context;
        Ok(
            Gate::with_key_prefix(conn, self.key_prefix.key_prefix.clone())
                .context("invalid key prefix")?
                .with_replica_acks(self.redis_wait_replicas, self.redis_wait_timeout),
        )
    }
}

impl Default for Config {
    fn default() -> Self {
        coupon_cli::defaults()
    }
}

/// How the server learns who applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Identity {
    /// The user is a claim of a bearer token signed with the configured key (the default).
    #[default]
    Jwt,
    /// The user is the `userId` of the request body, trusted as it is: for development, tests
    /// and trusted internal callers only.
    Body,
}

impl Identity {
    /// The mode's name, as `COUPON_IDENTITY` gives it: `jwt` or `body`.
    pub fn mode(&self) -> &'static str {
        match self {
            Self::Jwt => "jwt",
            Self::Body => "body",
        }
    }
}

/// How bearer tokens are checked.
#[derive(clap::Args, Clone, Debug)]
pub struct JwtConfig {
    /// The key tokens are signed with; without one the server refuses to start in jwt mode.
    #[command(flatten)]
    pub key: Option<JwtKey>,
    /// The iss tokens must carry.
    #[arg(long = "jwt-issuer", env = "COUPON_JWT_ISSUER")]
    pub issuer: Option<String>,
    /// The aud tokens must name; without it, a token that names an audience is accepted
    /// whatever it names.
    #[arg(long = "jwt-audience", env = "COUPON_JWT_AUDIENCE")]
    pub audience: Option<String>,
    /// Seconds of clock skew allowed on exp, nbf and iat.
    #[arg(long = "jwt-leeway-secs", env = "COUPON_JWT_LEEWAY_SECS", default_value = "30", value_parser = clap::value_parser!(u64).map(Duration::from_secs))]
    pub leeway: Duration,
    /// The token claim that names the user.
    #[arg(
        long = "jwt-user-claim",
        env = "COUPON_JWT_USER_CLAIM",
        default_value = "sub"
    )]
    pub user_claim: String,
}

impl JwtConfig {
    /// The shortest HS256 secret accepted, in bytes (the hash's own size, as RFC 7518 asks).
    pub const MIN_SECRET: usize = 32;
}

impl Default for JwtConfig {
    fn default() -> Self {
        coupon_cli::defaults()
    }
}

/// The key bearer tokens are verified with; the algorithm follows from it.
#[derive(Clone)]
pub enum JwtKey {
    /// A shared secret: HS256.
    Secret(Vec<u8>),
    /// A PEM file with a public key: RSA (RS256), EC P-256 (ES256) or Ed25519 (EdDSA).
    PublicKey(PathBuf),
    /// A JWKS file; each token names its key with `kid`. Read again when it changes.
    Jwks(PathBuf),
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Secret(secret) => write!(f, "Secret({} bytes)", secret.len()),
            Self::PublicKey(path) => f.debug_tuple("PublicKey").field(path).finish(),
            Self::Jwks(path) => f.debug_tuple("Jwks").field(path).finish(),
        }
    }
}

/// The ids of [`JwtKey`]'s three settings, one of which names the key.
const JWT_KEY_SETTINGS: [&str; 3] = ["jwt_secret", "jwt_public_key", "jwt_jwks"];

/// The key's three settings, of which at most one may be given: declared by hand, as they make
/// one value of the enum.
impl clap::Args for JwtKey {
    fn group_id() -> Option<clap::Id> {
        Some(clap::Id::from("JwtKey"))
    }

    fn augment_args(command: Command) -> Command {
        command
            .arg(
                Arg::new("jwt_secret")
                    .value_name("JWT_SECRET")
                    .long("jwt-secret")
                    .env("COUPON_JWT_SECRET")
                    .hide_env_values(true)
                    .help("HS256 secret tokens are signed with (at least 32 bytes)"),
            )
            .arg(
                Arg::new("jwt_public_key")
                    .value_name("JWT_PUBLIC_KEY")
                    .long("jwt-public-key")
                    .env("COUPON_JWT_PUBLIC_KEY")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help("PEM file of the public key tokens are signed with: RSA (RS256), EC P-256 (ES256) or Ed25519 (EdDSA)"),
            )
            .arg(
                Arg::new("jwt_jwks")
                    .value_name("JWT_JWKS")
                    .long("jwt-jwks")
                    .env("COUPON_JWT_JWKS")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help("JWKS file of the keys tokens are signed with, chosen by the token's kid; read again when it changes"),
            )
            .group(
                ArgGroup::new("JwtKey")
                    .args(JWT_KEY_SETTINGS)
                    .multiple(false),
            )
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}

impl FromArgMatches for JwtKey {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let refuse = |message: &str| {
            Err(clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!("{message}\n"),
            ))
        };
        if let Some(secret) = matches.get_one::<String>("jwt_secret") {
            if secret.is_empty() {
                // An empty variable is more likely a secret that was not handed over than a
                // wish for no key: refused, rather than read as unset.
                return refuse(
                    "COUPON_JWT_SECRET (--jwt-secret) is empty: give the HS256 secret, or unset it",
                );
            }
            return Ok(Self::Secret(secret.clone().into_bytes()));
        }
        let public_key = matches.get_one::<PathBuf>("jwt_public_key").cloned();
        let jwks = matches.get_one::<PathBuf>("jwt_jwks").cloned();
        match (public_key.map(Self::PublicKey), jwks.map(Self::Jwks)) {
            (Some(key), _) | (None, Some(key)) => Ok(key),
            (None, None) => refuse(
                "no JWT key: set one of COUPON_JWT_SECRET, COUPON_JWT_PUBLIC_KEY, COUPON_JWT_JWKS",
            ),
        }
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

/// A switch given as `on` or `off`.
fn on_off(text: &str) -> Result<bool, String> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{text:?} is neither on nor off")),
    }
}

/// A trusted proxy: a CIDR, or one address.
fn proxy_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not a CIDR such as 10.0.0.0/8, nor an address"))
}
