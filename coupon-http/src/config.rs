//! Typed configuration of the server, with documented defaults; the relay's part is
//! [`RelayConfig`], from coupon-relay.
//!
//! The binary builds a [`Config`] from flags and environment variables; everything below takes
//! it (or a part of it) as a value and reads no environment itself.

use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use coupon_relay::RelayConfig;

/// Everything `coupon-http` needs to run. [`Config::default`] gives every documented default.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the HTTP server listens.
    pub addr: SocketAddr,
    /// The Redis the gate runs on.
    pub redis_url: String,
    /// Prepended to every Redis key, so that deployments can share one Redis.
    pub key_prefix: String,
    /// Quota of the `default` campaign, created at start-up if missing (never changed if present).
    pub default_quota: NonZeroU32,
    /// Bearer token for the admin endpoints; without one they answer 403.
    pub admin_token: Option<String>,
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// How long one request may wait on Redis before it is answered 503.
    pub redis_timeout: Duration,
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
    /// The relay from the outbox to Kafka.
    pub relay: RelayConfig,
}

impl Config {
    /// Default listen address: loopback, port 8080.
    pub const DEFAULT_ADDR: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
    /// Default Redis.
    pub const DEFAULT_REDIS_URL: &'static str = "redis://127.0.0.1:6379";
    /// Default quota of the `default` campaign.
    pub const DEFAULT_QUOTA: NonZeroU32 = NonZeroU32::new(100).expect("100 is not zero");
    /// Default cap on concurrent connections.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
    /// Default wait on Redis per request.
    pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_secs(2);
    /// Default of [`Config::request_timeout`].
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default shutdown grace.
    pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
    /// Default of [`Config::apply_batch`].
    pub const DEFAULT_APPLY_BATCH: usize = coupon_gate::BatchConfig::DEFAULT_MAX_BATCH;
    /// Default of [`Config::sold_out_ttl`].
    pub const DEFAULT_SOLD_OUT_TTL: Duration = Duration::from_secs(1);
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: Self::DEFAULT_ADDR,
            redis_url: Self::DEFAULT_REDIS_URL.to_owned(),
            key_prefix: coupon_gate::DEFAULT_KEY_PREFIX.to_owned(),
            default_quota: Self::DEFAULT_QUOTA,
            admin_token: None,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            redis_timeout: Self::DEFAULT_REDIS_TIMEOUT,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            shutdown_grace: Self::DEFAULT_SHUTDOWN_GRACE,
            apply_batch: Self::DEFAULT_APPLY_BATCH,
            sold_out_ttl: Self::DEFAULT_SOLD_OUT_TTL,
            relay: RelayConfig::default(),
        }
    }
}
