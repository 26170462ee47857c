//! What every request handler shares: the gate behind its batcher (once Redis was reached), the
//! sold-out memory, the admin token, the Redis timeout, and whether the relay runs.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use coupon_gate::{BatchConfig, Batcher, Campaign, CampaignId, Gate, RedisConnection, RedisTarget};
use coupon_relay::Running;
use tracing::info;

use crate::Config;
use crate::config::Identity;
use crate::failure::Failure;
use crate::identity::Verifier;
use crate::limits::Limits;
use crate::sold_out::SoldOutCache;
use crate::telemetry::Telemetry;
use crate::watchdog::Watchdog;

/// How long connecting to coupon-sink's database may take (see [`AppState::database`]).
const DATABASE_TIMEOUT: Duration = Duration::from_secs(10);

/// The campaign `POST /api/coupons/apply` applies to, created at start-up if missing.
pub(crate) const DEFAULT_CAMPAIGN: &str = "default";

/// The state of the server, behind one `Arc` shared by every connection.
pub(crate) struct AppState {
    /// The gate, set once Redis was first reached ([`AppState::connect_backend`]); until then
    /// every call that needs Redis fails with [`Failure::NotConnected`], answered 503.
    backend: OnceLock<Backend>,
    /// Campaigns answered `sold_out` without asking Redis.
    sold_out: SoldOutCache,
    /// Where Redis is: the handlers' connection and the relay's are made from it.
    target: RedisTarget,
    /// A client of each node `target` names, for the changes subscription; parsed at start.
    nodes: Vec<redis::Client>,
    /// The admin bearer token; `None` disables the admin endpoints.
    admin_token: Option<Arc<str>>,
    /// Verifies bearer tokens in jwt mode; `None` in body mode, where the body names the user.
    verifier: Option<Verifier>,
    /// The per-user and per-address limits, and where requests come from.
    limits: Limits,
    /// How long a request waits on Redis before it is answered 503.
    redis_timeout: Duration,
    /// Whether the relay runs, for `/ready`; set once the relay thread holds its relay.
    relay: OnceLock<Running>,
    /// Set while the brokers refuse the relay's client (credentials, TLS), for `/ready`.
    broker_refused: AtomicBool,
    telemetry: Telemetry,
    /// Where coupon-sink's database is, for archiving; connected on first use.
    database: coupon_cli::Database,
    pool: tokio::sync::OnceCell<mysql_async::Pool>,
}

/// What needs Redis: the admission rules, over a connection to the server or cluster that
/// reconnects by itself once made. Applications go through the batcher, coalesced per campaign,
/// everything else to its gate; `/ready` pings over the same connection.
struct Backend {
    batcher: Batcher<RedisConnection>,
    redis: RedisConnection,
}

/// What the requests of one connection share. Each request holds a clone of this `Arc`, which
/// only that connection's worker touches, rather than of the state's, whose count every worker
/// would bounce between cores on every request.
pub(crate) struct ConnectionScope {
    pub(crate) state: Arc<AppState>,
    /// Closes the connection when its client is too slow, or when its slot is needed.
    pub(crate) watchdog: Arc<Watchdog>,
    /// The peer's address, and so the client's unless the peer is a trusted proxy.
    pub(crate) peer: SocketAddr,
}

/// A connection to the Redis server or cluster of `config`, with its timeouts; reconnects by
/// itself.
///
/// # Errors
///
/// Redis unreachable, or a URL that does not parse.
pub(crate) async fn connect_redis(
    target: &RedisTarget,
    config: &Config,
) -> anyhow::Result<RedisConnection> {
    target.connect(config.redis_timeout).await.with_context(|| {
        format!(
            "cannot connect to Redis at {target} ({})",
            config.redis.settings_in_use()
        )
    })
}

impl AppState {
    /// Reads the identity, metrics and Redis configuration; nothing is connected yet (see
    /// [`AppState::connect_backend`]) and the relay counts as not running until
    /// [`AppState::relay_started`].
    ///
    /// # Errors
    ///
    /// What no retry can mend: jwt mode without a usable key, metrics that cannot be served, a
    /// key prefix or Redis address that is not valid.
    pub(crate) fn new(config: &Config) -> anyhow::Result<Self> {
        let verifier = match config.identity {
            Identity::Jwt => Some(Verifier::new(&config.jwt)?),
            Identity::Body => {
                tracing::warn!(
                    "identity is body (COUPON_IDENTITY=body): the userId of a request's body is \
                     trusted as it is; use it for development, tests and trusted internal callers \
                     only"
                );
                None
            }
        };
        let warnings = [
            config.redis.plaintext_warning(),
            config.kafka.plaintext_warning(),
        ];
        for warning in warnings.into_iter().flatten() {
            tracing::warn!("{warning}");
        }
        let prefix = &config.key_prefix.key_prefix;
        coupon_gate::check_key_prefix(prefix)
            .with_context(|| format!("COUPON_KEY_PREFIX {prefix:?}"))?;
        let target = config.redis_target()?;
        let nodes = target.node_clients().with_context(|| {
            format!(
                "invalid Redis address {target} ({})",
                config.redis.settings_in_use()
            )
        })?;
        // Before anything records: the recorder must be in place for the handles to count.
        let exposition = if config.metrics {
            let handle = coupon_metrics::install(
                "coupon-http",
                env!("CARGO_PKG_VERSION"),
                config.metrics_addr,
            )
            .context("cannot set up metrics (COUPON_METRICS, COUPON_METRICS_ADDR)")?;
            if let (Some(addr), Some(_)) = (config.metrics_addr, &handle) {
                info!(%addr, "serving metrics");
            }
            handle.filter(|_| config.metrics_addr.is_none())
        } else {
            None
        };
        Ok(Self {
            backend: OnceLock::new(),
            sold_out: SoldOutCache::new(config.sold_out_ttl, config.sold_out_holders),
            target,
            nodes,
            admin_token: config.admin_token().map(Arc::from),
            verifier,
            limits: Limits::new(
                config.user_limit(),
                config.address_limit(),
                config.bad_token_limit(),
                config.trusted_proxies.clone(),
                config.redis_timeout,
            ),
            redis_timeout: config.redis_timeout,
            relay: OnceLock::new(),
            broker_refused: AtomicBool::new(false),
            telemetry: Telemetry::new(exposition),
            database: config.database.clone(),
            pool: tokio::sync::OnceCell::new(),
        })
    }

    /// Connects to Redis and creates the `default` campaign if it is missing (an existing one
    /// is left as it is, whatever its quota); from then on the handlers reach the gate. Does
    /// nothing once connected.
    ///
    /// # Errors
    ///
    /// Redis unreachable or failing: the caller tries again later.
    pub(crate) async fn connect_backend(&self, config: &Config) -> anyhow::Result<()> {
        if self.backend.get().is_some() {
            return Ok(());
        }
        let redis = connect_redis(&self.target, config).await?;
        if redis.is_cluster() {
            info!(target = %self.target, "redis cluster (REDIS_CLUSTER_NODES takes precedence over REDIS_URL)");
        }
        let gate = config.gate(redis.clone())?;
        let default = CampaignId::new(DEFAULT_CAMPAIGN).context("default campaign id")?;
        if gate.status(&default).await?.is_none() {
            let created = gate
                .create(&Campaign::new(default, config.default_quota))
                .await?;
            info!(quota = config.default_quota.get(), outcome = ?created, "default campaign");
        }
        let batcher = Batcher::new(
            gate,
            BatchConfig {
                max_batch: config.apply_batch,
                ..BatchConfig::default()
            },
        );
        self.limits
            .connect(redis.clone(), &config.key_prefix.key_prefix);
        let _ = self.backend.set(Backend { batcher, redis });
        info!(target = %self.target, "connected to redis");
        Ok(())
    }

    /// Reports `relay`'s state on `/ready` from now on.
    pub(crate) fn relay_started(&self, relay: Running) {
        let _ = self.relay.set(relay);
    }

    /// The gate the handlers call (the relay has a gate and connection of its own), once Redis
    /// was reached.
    pub(crate) fn gate(&self) -> Result<&Gate<RedisConnection>, Failure> {
        self.batcher().map(Batcher::gate)
    }

    /// Applications, coalesced per campaign, once Redis was reached.
    pub(crate) fn batcher(&self) -> Result<&Batcher<RedisConnection>, Failure> {
        self.backend
            .get()
            .map(|backend| &backend.batcher)
            .ok_or(Failure::NotConnected)
    }

    /// Campaigns known to be sold out.
    pub(crate) fn sold_out(&self) -> &SoldOutCache {
        &self.sold_out
    }

    /// A client of each Redis node named in the configuration, for the changes subscription.
    pub(crate) fn redis_nodes(&self) -> &[redis::Client] {
        &self.nodes
    }

    /// Where Redis is, for the relay's connection of its own.
    pub(crate) fn redis_target(&self) -> &RedisTarget {
        &self.target
    }

    pub(crate) fn relay_running(&self) -> bool {
        self.relay.get().is_some_and(Running::get)
    }

    /// Records whether the brokers refuse the relay's client, as its start last found.
    pub(crate) fn broker_refused(&self, refused: bool) {
        self.broker_refused.store(refused, Ordering::Relaxed);
    }

    /// What misconfiguration keeps the relay from delivering, if any: `broker` while the brokers
    /// refuse its credentials or TLS, `destination` while the key prefix is bound to another
    /// topic. The log says which settings; this says only which kind, for `/ready`.
    pub(crate) fn relay_refused(&self) -> Option<&'static str> {
        if self.broker_refused.load(Ordering::Relaxed) {
            Some("broker")
        } else if self.relay.get().is_some_and(Running::bound_elsewhere) {
            Some("destination")
        } else {
            None
        }
    }

    /// Connections to coupon-sink's database, made on first use (within [`DATABASE_TIMEOUT`]).
    ///
    /// # Errors
    ///
    /// The database unreachable or refusing; the error names the settings in use.
    pub(crate) async fn database(&self) -> anyhow::Result<&mysql_async::Pool> {
        self.pool
            .get_or_try_init(|| async {
                let connect = coupon_admin::sources::database(&self.database);
                tokio::time::timeout(DATABASE_TIMEOUT, connect)
                    .await
                    .with_context(|| {
                        format!(
                            "no answer from MySQL within {DATABASE_TIMEOUT:?} ({})",
                            self.database.settings_in_use()
                        )
                    })?
            })
            .await
    }

    pub(crate) fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }

    /// The token verifier in jwt mode; `None` in body mode.
    pub(crate) fn verifier(&self) -> Option<&Verifier> {
        self.verifier.as_ref()
    }

    pub(crate) fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    pub(crate) async fn ping_redis(&self) -> bool {
        let Some(backend) = self.backend.get() else {
            return false;
        };
        let mut conn = backend.redis.clone();
        let ping = async move {
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map_err(coupon_gate::Error::from)
        };
        self.within_timeout(ping).await.is_ok()
    }

    /// Runs `call` on the gate under the Redis timeout; [`Failure::NotConnected`] while Redis
    /// was not reached yet.
    pub(crate) async fn ask<'a, T, Fut>(
        &'a self,
        call: impl FnOnce(&'a Gate<RedisConnection>) -> Fut,
    ) -> Result<T, Failure>
    where
        Fut: Future<Output = Result<T, coupon_gate::Error>>,
    {
        let gate = self.gate()?;
        self.within_timeout(call(gate)).await
    }

    /// Runs a gate call under the Redis timeout.
    pub(crate) async fn within_timeout<T>(
        &self,
        call: impl Future<Output = Result<T, coupon_gate::Error>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(self.redis_timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(Failure::Gate(err)),
            Err(_) => Err(Failure::TimedOut(self.redis_timeout)),
        }
    }
}
