//! Typed configuration of the server, with documented defaults: the server's own, how it knows
//! who applies ([`Identity`], [`JwtConfig`]), and the relay's ([`RelayConfig`], from
//! coupon-relay).
//!
//! The binary builds a [`Config`] from flags and environment variables; everything below takes
//! it (or a part of it) as a value and reads no environment itself.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use coupon_gate::{Gate, RedisTarget};
use coupon_relay::RelayConfig;
use ipnet::IpNet;

use crate::limits::RateLimit;

/// Everything `coupon-http` needs to run. [`Config::default`] gives every documented default.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the HTTP server listens.
    pub addr: SocketAddr,
    /// The Redis the gate runs on, unless `redis_cluster_nodes` names a cluster.
    pub redis_url: String,
    /// Nodes of the Redis Cluster the gate runs on (`host:port`; the others are discovered);
    /// when any is given it takes precedence over `redis_url`. Empty by default.
    pub redis_cluster_nodes: Vec<String>,
    /// Prepended to every Redis key, so that deployments can share one Redis.
    pub key_prefix: String,
    /// Quota of the `default` campaign, created at start-up if missing (never changed if present).
    pub default_quota: NonZeroU32,
    /// Bearer token for the admin endpoints; without one they answer 403.
    pub admin_token: Option<String>,
    /// How the server learns who applies: a verified bearer token (the default) or the body.
    pub identity: Identity,
    /// Applications per user; `None` for no limit.
    pub user_limit: Option<RateLimit>,
    /// Applications per client address; `None` (the default) for no limit, as a mobile carrier
    /// may put many users behind one address.
    pub address_limit: Option<RateLimit>,
    /// Tokens refused after verifying, per client address: once an address spent this budget,
    /// its requests with a token not verified before are answered 429 without verifying until
    /// it refills. `None` for no budget.
    pub bad_token_limit: Option<RateLimit>,
    /// Proxies in front of the server: their `X-Forwarded-For` entries name the client, and
    /// their connections are not counted per address.
    pub trusted_proxies: Vec<IpNet>,
    /// Connections served at once. At the cap, the connection idle the longest is closed for a
    /// new client; when none is idle, new clients wait in the listen backlog.
    pub max_connections: usize,
    /// Connections one client address may hold at once (trusted proxies excepted).
    pub max_connections_per_address: usize,
    /// How long a request's head may take to arrive, from its first byte.
    pub header_timeout: Duration,
    /// The largest request head accepted (request line and headers), in bytes; a larger one is
    /// answered 431.
    pub max_head_bytes: usize,
    /// How long one request may wait on Redis before it is answered 503.
    pub redis_timeout: Duration,
    /// Replicas of the campaign's master that must hold an admission before it is answered
    /// and before it is relayed (0, the default: answer once the master decided). See
    /// [`coupon_gate::Gate::with_replica_acks`].
    pub redis_wait_replicas: u32,
    /// How long an admission waits for those replicas before it is answered 503.
    pub redis_wait_timeout: Duration,
    /// How long a connection may take to send a complete request and have it answered,
    /// counted from when the server starts waiting for it (on connecting, after each answer);
    /// then the connection is closed. Guards against silent, dribbling and idle clients; must
    /// exceed `redis_timeout`.
    pub request_timeout: Duration,
    /// How long shutdown waits for requests in flight and the relay's last batch.
    pub shutdown_grace: Duration,
    /// Most applications to one campaign decided in one script call (1: one call each).
    pub apply_batch: usize,
    /// How long a campaign that Redis answered sold out is answered so from memory, unless a
    /// change message says otherwise first (zero: always ask Redis).
    pub sold_out_ttl: Duration,
    /// The most holders of sold-out campaigns remembered, over every campaign, so that a
    /// holder applying again is told `duplicate` without the crowd reaching Redis: 10 to 19
    /// bytes each. A campaign with more holders than the room left is answered by Redis; zero
    /// answers every campaign from Redis.
    pub sold_out_holders: usize,
    /// The relay from the outbox to Kafka.
    pub relay: RelayConfig,
    /// Whether the process records Prometheus metrics and serves them (`GET /metrics`); on by
    /// default. Off, nothing is recorded and `/metrics` answers 404.
    pub metrics: bool,
    /// Serve `/metrics` on this address only, not on the API's listener (to keep it off the
    /// public port); `None` (the default) serves it on the API's listener.
    pub metrics_addr: Option<SocketAddr>,
}

impl Config {
    /// Default listen address: loopback, port 8080.
    pub const DEFAULT_ADDR: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
    /// Default Redis.
    pub const DEFAULT_REDIS_URL: &'static str = coupon_gate::DEFAULT_REDIS_URL;
    /// Default quota of the `default` campaign.
    pub const DEFAULT_QUOTA: NonZeroU32 = NonZeroU32::new(100).expect("100 is not zero");
    /// Default cap on concurrent connections.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
    /// Default of [`Config::user_limit`]: 5 a second, 10 at once.
    pub const DEFAULT_USER_LIMIT: RateLimit = RateLimit {
        per_second: NonZeroU32::new(5).expect("5 is not zero"),
        burst: NonZeroU32::new(10).expect("10 is not zero"),
    };
    /// Default of [`Config::bad_token_limit`]: 50 at once, 5 a second. A client with a stale
    /// token fails a few times before it signs in again; a forger, once past the burst, is held
    /// to 5 verifications a second per address, one at a time (about 0.1 ms of CPU a second with
    /// RS256).
    pub const DEFAULT_BAD_TOKEN_LIMIT: RateLimit = RateLimit {
        per_second: NonZeroU32::new(5).expect("5 is not zero"),
        burst: NonZeroU32::new(50).expect("50 is not zero"),
    };
    /// Default of [`Config::max_connections_per_address`]: a sixteenth of the default cap, so
    /// that one address cannot take the server, yet a carrier's address shared by many users
    /// can hold hundreds.
    pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 256;
    /// Default of [`Config::header_timeout`]: a request head of a few hundred bytes takes a
    /// round trip or two, even on a poor mobile network.
    pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default of [`Config::max_head_bytes`]: headers of a browser or an app, with a token.
    pub const DEFAULT_MAX_HEAD_BYTES: usize = 8 * 1024;
    /// Default wait on Redis per request.
    pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_secs(2);
    /// Default of [`Config::redis_wait_replicas`]: answer once the master decided.
    pub const DEFAULT_REDIS_WAIT_REPLICAS: u32 = 0;
    /// Default of [`Config::redis_wait_timeout`].
    pub const DEFAULT_REDIS_WAIT_TIMEOUT: Duration = Duration::from_millis(500);
    /// Default of [`Config::request_timeout`].
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default shutdown grace.
    pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
    /// Default of [`Config::apply_batch`].
    pub const DEFAULT_APPLY_BATCH: usize = coupon_gate::BatchConfig::DEFAULT_MAX_BATCH;
    /// Default of [`Config::sold_out_ttl`].
    pub const DEFAULT_SOLD_OUT_TTL: Duration = Duration::from_secs(1);
    /// Default of [`Config::metrics`]: on.
    pub const DEFAULT_METRICS: bool = true;
    /// Default of [`Config::sold_out_holders`]: at most 19 MB.
    pub const DEFAULT_SOLD_OUT_HOLDERS: usize = 1_000_000;
}

impl Config {
    /// The cluster of `redis_cluster_nodes` if it names any node, else the server at
    /// `redis_url`.
    pub fn redis_target(&self) -> RedisTarget {
        RedisTarget::from_config(&self.redis_url, &self.redis_cluster_nodes)
    }

    /// A gate over `conn` with this configuration's key prefix and replica confirmations.
    pub(crate) fn gate<C>(&self, conn: C) -> anyhow::Result<Gate<C>>
    where
        C: redis::aio::ConnectionLike + Clone + Send + Sync,
    {
        use anyhow::Context;
        Ok(Gate::with_key_prefix(conn, self.key_prefix.clone())
            .context("invalid key prefix")?
            .with_replica_acks(self.redis_wait_replicas, self.redis_wait_timeout))
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: Self::DEFAULT_ADDR,
            redis_url: Self::DEFAULT_REDIS_URL.to_owned(),
            redis_cluster_nodes: Vec::new(),
            key_prefix: coupon_gate::DEFAULT_KEY_PREFIX.to_owned(),
            default_quota: Self::DEFAULT_QUOTA,
            admin_token: None,
            identity: Identity::default(),
            user_limit: Some(Self::DEFAULT_USER_LIMIT),
            address_limit: None,
            bad_token_limit: Some(Self::DEFAULT_BAD_TOKEN_LIMIT),
            trusted_proxies: Vec::new(),
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: Self::DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            header_timeout: Self::DEFAULT_HEADER_TIMEOUT,
            max_head_bytes: Self::DEFAULT_MAX_HEAD_BYTES,
            redis_timeout: Self::DEFAULT_REDIS_TIMEOUT,
            redis_wait_replicas: Self::DEFAULT_REDIS_WAIT_REPLICAS,
            redis_wait_timeout: Self::DEFAULT_REDIS_WAIT_TIMEOUT,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            shutdown_grace: Self::DEFAULT_SHUTDOWN_GRACE,
            apply_batch: Self::DEFAULT_APPLY_BATCH,
            sold_out_ttl: Self::DEFAULT_SOLD_OUT_TTL,
            sold_out_holders: Self::DEFAULT_SOLD_OUT_HOLDERS,
            relay: RelayConfig::default(),
            metrics: Self::DEFAULT_METRICS,
            metrics_addr: None,
        }
    }
}

/// How the server learns who applies.
#[derive(Clone, Debug)]
pub enum Identity {
    /// The user is a claim of a bearer token signed with the configured key (the default).
    Jwt(JwtConfig),
    /// The user is the `userId` of the request body, trusted as it is: for development, tests
    /// and trusted internal callers only.
    Body,
}

impl Default for Identity {
    fn default() -> Self {
        Self::Jwt(JwtConfig::default())
    }
}

impl Identity {
    /// The mode's name, as `COUPON_IDENTITY` gives it: `jwt` or `body`.
    pub fn mode(&self) -> &'static str {
        match self {
            Self::Jwt(_) => "jwt",
            Self::Body => "body",
        }
    }
}

/// How bearer tokens are checked.
#[derive(Clone, Debug)]
pub struct JwtConfig {
    /// The key tokens are signed with; without one the server refuses to start.
    pub key: Option<JwtKey>,
    /// The `iss` a token must carry, when set.
    pub issuer: Option<String>,
    /// The `aud` a token must name, when set; without it, a token that names an audience is
    /// accepted whatever it names.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// The claim that names the user.
    pub user_claim: String,
}

impl JwtConfig {
    /// Default of [`JwtConfig::leeway`].
    pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
    /// Default of [`JwtConfig::user_claim`].
    pub const DEFAULT_USER_CLAIM: &'static str = "sub";
    /// The shortest HS256 secret accepted, in bytes (the hash's own size, as RFC 7518 asks).
    pub const MIN_SECRET: usize = 32;
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            key: None,
            issuer: None,
            audience: None,
            leeway: Self::DEFAULT_LEEWAY,
            user_claim: Self::DEFAULT_USER_CLAIM.to_owned(),
        }
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
