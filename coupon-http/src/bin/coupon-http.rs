//! `coupon-http`: reads configuration from flags and the environment, sets up logging, binds,
//! and runs the server and relay until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use clap::builder::TypedValueParser;
use coupon_cli::{LogTo, shutdown_signal};
use coupon_http::{Config, Identity, IpNet, JwtConfig, JwtKey, RateLimit, RelayConfig};

/// First-come-first-served coupon issuance over HTTP, with the relay from the Redis outbox to Kafka.
///
/// Every flag falls back to the environment variable named beside it, and that to the settings
/// file (--config): its keys are the variables' names in lower case without COUPON_. Logging
/// follows RUST_LOG (default: info).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Listen address.
    #[arg(long, alias = "addr", env = "COUPON_HTTP_ADDR", default_value_t = Config::DEFAULT_ADDR)]
    http_addr: SocketAddr,
    #[command(flatten)]
    redis: coupon_cli::Redis,
    #[command(flatten)]
    key_prefix: coupon_cli::KeyPrefix,
    #[command(flatten)]
    kafka: coupon_cli::Kafka,
    #[command(flatten)]
    topic: coupon_cli::Topic,
    /// Partitions of the topic, when it has to be created.
    #[arg(long, env = "COUPON_TOPIC_PARTITIONS", default_value_t = RelayConfig::DEFAULT_PARTITIONS, value_parser = clap::value_parser!(i32).range(1..))]
    topic_partitions: i32,
    /// Replication factor of the topic, when it has to be created.
    #[arg(long, env = "COUPON_TOPIC_REPLICATION", default_value_t = RelayConfig::DEFAULT_REPLICATION, value_parser = clap::value_parser!(i32).range(1..))]
    topic_replication: i32,
    /// Quota of the `default` campaign, created at start-up if missing.
    #[arg(long, env = "COUPON_DEFAULT_QUOTA", default_value_t = Config::DEFAULT_QUOTA)]
    default_quota: NonZeroU32,
    /// Bearer token for the admin endpoints; without it they answer 403.
    #[arg(long, env = "COUPON_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// How the user of an application is known: jwt (a verified bearer token) or body (the
    /// body's userId, trusted: development, tests and trusted internal callers only).
    #[arg(long, env = "COUPON_IDENTITY", default_value = Identity::default().mode(), value_parser = ["jwt", "body"])]
    identity: String,
    /// HS256 secret tokens are signed with (at least 32 bytes).
    #[arg(long, env = "COUPON_JWT_SECRET", hide_env_values = true, conflicts_with_all = ["jwt_public_key", "jwt_jwks"])]
    jwt_secret: Option<String>,
    /// PEM file of the public key tokens are signed with: RSA (RS256), EC P-256 (ES256) or
    /// Ed25519 (EdDSA).
    #[arg(long, env = "COUPON_JWT_PUBLIC_KEY", conflicts_with = "jwt_jwks")]
    jwt_public_key: Option<PathBuf>,
    /// JWKS file of the keys tokens are signed with, chosen by the token's kid; read again when
    /// it changes.
    #[arg(long, env = "COUPON_JWT_JWKS")]
    jwt_jwks: Option<PathBuf>,
    /// The iss tokens must carry.
    #[arg(long, env = "COUPON_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// The aud tokens must name.
    #[arg(long, env = "COUPON_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
    /// Seconds of clock skew allowed on exp, nbf and iat.
    #[arg(long, env = "COUPON_JWT_LEEWAY_SECS", default_value_t = JwtConfig::DEFAULT_LEEWAY.as_secs())]
    jwt_leeway_secs: u64,
    /// The token claim that names the user.
    #[arg(long, env = "COUPON_JWT_USER_CLAIM", default_value = JwtConfig::DEFAULT_USER_CLAIM)]
    jwt_user_claim: String,
    /// Applications per second one user may make, sustained (0: no limit).
    #[arg(long, env = "COUPON_USER_RATE", default_value_t = Config::DEFAULT_USER_LIMIT.per_second.get())]
    user_rate: u32,
    /// Applications one user may make at once.
    #[arg(long, env = "COUPON_USER_BURST", default_value_t = Config::DEFAULT_USER_LIMIT.burst, value_parser = clap::value_parser!(NonZeroU32))]
    user_burst: NonZeroU32,
    /// Applications per second one client address may make, sustained (none: no limit, the
    /// default, as a carrier may put many users behind one address).
    #[arg(long, env = "COUPON_IP_RATE")]
    ip_rate: Option<NonZeroU32>,
    /// Applications one client address may make at once (default: the rate).
    #[arg(long, env = "COUPON_IP_BURST")]
    ip_burst: Option<NonZeroU32>,
    /// Tokens refused after verifying that one client address may send a second, sustained,
    /// before its token-bearing requests are answered 429 without verifying (0: no budget).
    #[arg(long, env = "COUPON_BAD_TOKEN_RATE", default_value_t = Config::DEFAULT_BAD_TOKEN_LIMIT.per_second.get())]
    bad_token_rate: u32,
    /// Tokens refused after verifying that one client address may send at once.
    #[arg(long, env = "COUPON_BAD_TOKEN_BURST", default_value_t = Config::DEFAULT_BAD_TOKEN_LIMIT.burst, value_parser = clap::value_parser!(NonZeroU32))]
    bad_token_burst: NonZeroU32,
    /// Proxies in front of the server, as CIDRs or addresses, comma separated: their
    /// X-Forwarded-For entries name the client, and their connections are not counted per
    /// address.
    #[arg(long, env = "COUPON_TRUSTED_PROXIES", value_delimiter = ',', value_parser = proxy_net)]
    trusted_proxies: Vec<IpNet>,
    /// Connections one client address may hold at once (trusted proxies excepted).
    #[arg(long, env = "COUPON_MAX_CONNECTIONS_PER_IP", default_value_t = Config::DEFAULT_MAX_CONNECTIONS_PER_ADDRESS, value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    max_connections_per_ip: usize,
    /// Milliseconds a request's head may take to arrive, from its first byte.
    #[arg(long, env = "COUPON_HEADER_TIMEOUT_MS", default_value_t = Config::DEFAULT_HEADER_TIMEOUT.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout_ms: u64,
    /// The largest request head accepted (request line and headers), in bytes.
    #[arg(long, env = "COUPON_MAX_HEAD_BYTES", default_value_t = Config::DEFAULT_MAX_HEAD_BYTES, value_parser = clap::value_parser!(u32).range(1024..=1_048_576).map(|n| n as usize))]
    max_head_bytes: usize,
    /// Connections served at once.
    #[arg(long, env = "COUPON_MAX_CONNECTIONS", default_value_t = Config::DEFAULT_MAX_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    max_connections: usize,
    /// Milliseconds a request waits on Redis before it is answered 503.
    #[arg(long, env = "COUPON_REDIS_TIMEOUT_MS", default_value_t = Config::DEFAULT_REDIS_TIMEOUT.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..))]
    redis_timeout_ms: u64,
    /// Replicas of a campaign's Redis master that must hold an admission before it is answered
    /// success and before it is relayed (Redis WAIT); 0 answers once the master decided.
    #[arg(long, env = "COUPON_REDIS_WAIT_REPLICAS", default_value_t = Config::DEFAULT_REDIS_WAIT_REPLICAS)]
    redis_wait_replicas: u32,
    /// Milliseconds an admission waits for those replicas before it is answered 503.
    #[arg(long, env = "COUPON_REDIS_WAIT_TIMEOUT_MS", default_value_t = Config::DEFAULT_REDIS_WAIT_TIMEOUT.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..))]
    redis_wait_timeout_ms: u64,
    /// Milliseconds a connection may take to send a complete request and have it answered,
    /// counted from when the server starts waiting for it; then it is closed (silent, slow or
    /// idle clients). Must exceed the Redis timeout.
    #[arg(long, env = "COUPON_REQUEST_TIMEOUT_MS", default_value_t = Config::DEFAULT_REQUEST_TIMEOUT.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..))]
    request_timeout_ms: u64,
    /// Seconds shutdown waits for requests in flight and the relay.
    #[arg(long, env = "COUPON_SHUTDOWN_GRACE_SECS", default_value_t = Config::DEFAULT_SHUTDOWN_GRACE.as_secs())]
    shutdown_grace_secs: u64,
    /// Most applications to one campaign decided in one Redis script call (1: one call each).
    #[arg(long, env = "COUPON_APPLY_BATCH", default_value_t = Config::DEFAULT_APPLY_BATCH, value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    apply_batch: usize,
    /// Milliseconds a sold-out campaign is answered from memory unless a change message comes
    /// first (0: always ask Redis).
    #[arg(long, env = "COUPON_SOLD_OUT_TTL_MS", default_value_t = Config::DEFAULT_SOLD_OUT_TTL.as_millis() as u64)]
    sold_out_ttl_ms: u64,
    /// The most holders of sold-out campaigns remembered, over every campaign (10 to 19 bytes
    /// each), so that holders applying again are told `duplicate` from memory; a campaign with
    /// more is answered by Redis (0: every campaign is).
    #[arg(long, env = "COUPON_SOLD_OUT_HOLDERS", default_value_t = Config::DEFAULT_SOLD_OUT_HOLDERS)]
    sold_out_holders: usize,
    /// Outbox entries relayed per round.
    #[arg(long, env = "COUPON_RELAY_BATCH", default_value_t = RelayConfig::DEFAULT_BATCH, value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    relay_batch: usize,
    /// Milliseconds an outbox entry stays unacknowledged, its relay silent, before another relay takes it over.
    #[arg(long, env = "COUPON_RELAY_CLAIM_IDLE_MS", default_value_t = RelayConfig::DEFAULT_CLAIM_IDLE.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..))]
    relay_claim_idle_ms: u64,
    /// Milliseconds the producer tries to deliver one message before the relay retries it later.
    #[arg(long, env = "COUPON_RELAY_MESSAGE_TIMEOUT_MS", default_value_t = RelayConfig::DEFAULT_MESSAGE_TIMEOUT.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..))]
    relay_message_timeout_ms: u64,
    /// Name of this relay in the outbox consumer group (default: host, pid and start time).
    #[arg(long, env = "COUPON_RELAY_CONSUMER")]
    relay_consumer: Option<String>,
    /// Prometheus metrics: `on` records them and serves `GET /metrics`, `off` neither.
    #[arg(long, env = "COUPON_METRICS", default_value = on_off(Config::DEFAULT_METRICS), value_parser = ["on", "off"])]
    metrics: String,
    /// Serve `/metrics` on this address only (e.g. 127.0.0.1:9463), not on the API's port.
    #[arg(long, env = "COUPON_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
}

impl Args {
    fn into_config(self) -> Config {
        Config {
            addr: self.http_addr,
            redis_url: self.redis.redis_url,
            redis_cluster_nodes: self.redis.redis_cluster_nodes,
            key_prefix: self.key_prefix.key_prefix,
            default_quota: self.default_quota,
            admin_token: self.admin_token.filter(|t| !t.is_empty()),
            identity: match self.identity.as_str() {
                "body" => Identity::Body,
                _ => Identity::Jwt(JwtConfig {
                    key: self
                        .jwt_secret
                        .filter(|s| !s.is_empty())
                        .map(|s| JwtKey::Secret(s.into_bytes()))
                        .or(self.jwt_public_key.map(JwtKey::PublicKey))
                        .or(self.jwt_jwks.map(JwtKey::Jwks)),
                    issuer: self.jwt_issuer.filter(|s| !s.is_empty()),
                    audience: self.jwt_audience.filter(|s| !s.is_empty()),
                    leeway: Duration::from_secs(self.jwt_leeway_secs),
                    user_claim: self.jwt_user_claim,
                }),
            },
            user_limit: NonZeroU32::new(self.user_rate).map(|per_second| RateLimit {
                per_second,
                burst: self.user_burst,
            }),
            address_limit: self.ip_rate.map(|per_second| RateLimit {
                per_second,
                burst: self.ip_burst.unwrap_or(per_second),
            }),
            bad_token_limit: NonZeroU32::new(self.bad_token_rate).map(|per_second| RateLimit {
                per_second,
                burst: self.bad_token_burst,
            }),
            trusted_proxies: self.trusted_proxies,
            max_connections: self.max_connections,
            max_connections_per_address: self.max_connections_per_ip,
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            max_head_bytes: self.max_head_bytes,
            redis_timeout: Duration::from_millis(self.redis_timeout_ms),
            redis_wait_replicas: self.redis_wait_replicas,
            redis_wait_timeout: Duration::from_millis(self.redis_wait_timeout_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            apply_batch: self.apply_batch,
            sold_out_ttl: Duration::from_millis(self.sold_out_ttl_ms),
            sold_out_holders: self.sold_out_holders,
            relay: RelayConfig {
                brokers: self.kafka.kafka_brokers,
                topic: self.topic.topic,
                partitions: self.topic_partitions,
                replication: self.topic_replication,
                batch: self.relay_batch,
                claim_idle: Duration::from_millis(self.relay_claim_idle_ms),
                message_timeout: Duration::from_millis(self.relay_message_timeout_ms),
                consumer: self
                    .relay_consumer
                    .unwrap_or_else(RelayConfig::default_consumer),
                kafka_properties: self.kafka.kafka_properties,
            },
            metrics: self.metrics == "on",
            metrics_addr: self.metrics_addr,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = coupon_cli::parse::<Args>().into_config();
    coupon_cli::init_logging("info", LogTo::Stdout);
    let listener = coupon_http::listen(config.addr)
        .with_context(|| format!("cannot listen on {}", config.addr))?;
    coupon_http::serve(config, listener, shutdown_signal()).await
}

/// A switch's value as the table writes it.
fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// A trusted proxy: a CIDR, or one address.
fn proxy_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not a CIDR such as 10.0.0.0/8, nor an address"))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::{CommandFactory, FromArgMatches};

    use super::*;

    #[test]
    fn the_readme_and_the_example_file_document_these_settings() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let example = root.join("deploy/coupon-http.example.toml");
        coupon_cli::check_settings::<Args>(&root.join("README.md"), Some(&example))
            .unwrap_or_else(|err| panic!("{err}"));
    }

    #[test]
    fn the_tables_defaults_are_the_librarys() {
        // Without the environment, so that the test reads the table alone.
        let command = Args::command().mut_args(|arg| arg.env(None::<&str>));
        let matches = command.try_get_matches_from(["coupon-http"]).unwrap();
        let mut parsed = Args::from_arg_matches(&matches).unwrap().into_config();
        let mut library = Config::default();
        // The relay's consumer name is made of the host, the pid and the time.
        parsed.relay.consumer.clear();
        library.relay.consumer.clear();
        assert_eq!(format!("{parsed:?}"), format!("{library:?}"));
    }
}
