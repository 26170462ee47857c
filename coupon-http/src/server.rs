//! The HTTP server: shared state, the accept loop, connection cap and graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use coupon_gate::{BatchConfig, Batcher, Campaign, CampaignId, Gate};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::Config;
use crate::api::{self, DEFAULT_CAMPAIGN};
use crate::poll_again::PollAgain;
use crate::sold_out::SoldOutCache;
use crate::watchdog::Watchdog;

/// What every request handler shares, behind one `Arc` (see [`run`]).
pub struct AppState {
    /// The admission rules, over a connection that reconnects by itself; applications go
    /// through it coalesced per campaign, everything else to its gate.
    batcher: Batcher<ConnectionManager>,
    /// Campaigns answered `sold_out` without asking Redis.
    sold_out: SoldOutCache,
    /// For connections of their own (the changes subscription, the relay).
    client: redis::Client,
    /// The same connection, for `/ready`'s `PING`.
    redis: ConnectionManager,
    /// The admin bearer token; `None` disables the admin endpoints.
    admin_token: Option<Arc<str>>,
    /// How long a request waits on Redis before it is answered 503.
    redis_timeout: Duration,
    /// Set by the relay while it runs, for `/ready`.
    relay_running: Arc<AtomicBool>,
}

/// What the requests of one connection share. Each request holds a clone of this `Arc`, which
/// only that connection's worker touches, rather than of the state's, whose count every worker
/// would bounce between cores on every request.
struct ConnectionScope {
    state: Arc<AppState>,
    /// Closes the connection when its client is too slow.
    watchdog: Watchdog,
}

/// A connection to Redis with the timeouts of `config`; reconnects by itself.
///
/// # Errors
///
/// Redis unreachable.
pub(crate) async fn connect_redis(
    client: &redis::Client,
    config: &Config,
) -> anyhow::Result<ConnectionManager> {
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.redis_timeout))
        .set_response_timeout(Some(config.redis_timeout));
    ConnectionManager::new_with_config(client.clone(), manager_config)
        .await
        .with_context(|| format!("cannot connect to redis at {}", config.redis_url))
}

impl AppState {
    /// Connects to Redis and creates the `default` campaign if it is missing (an existing one
    /// is left as it is, whatever its quota).
    ///
    /// # Errors
    ///
    /// Redis unreachable, or a key prefix that is not valid.
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        let client = redis::Client::open(config.redis_url.as_str())
            .with_context(|| format!("invalid REDIS_URL {:?}", config.redis_url))?;
        let redis = connect_redis(&client, config).await?;
        let gate = Gate::with_key_prefix(redis.clone(), config.key_prefix.clone())
            .context("invalid key prefix")?;

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
        Ok(Self {
            batcher,
            sold_out: SoldOutCache::new(config.sold_out_ttl),
            client,
            redis,
            admin_token: config.admin_token.as_deref().map(Arc::from),
            redis_timeout: config.redis_timeout,
            relay_running: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The gate the handlers call (the relay has a gate and connection of its own).
    pub fn gate(&self) -> &Gate<ConnectionManager> {
        self.batcher.gate()
    }

    /// Applications, coalesced per campaign.
    pub(crate) fn batcher(&self) -> &Batcher<ConnectionManager> {
        &self.batcher
    }

    /// Campaigns known to be sold out.
    pub(crate) fn sold_out(&self) -> &SoldOutCache {
        &self.sold_out
    }

    /// The Redis client, for connections of their own (the changes subscription, the relay).
    pub(crate) fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The flag the relay keeps set while it runs.
    pub fn relay_flag(&self) -> Arc<AtomicBool> {
        self.relay_running.clone()
    }

    pub(crate) fn relay_running(&self) -> bool {
        self.relay_running.load(Ordering::Relaxed)
    }

    pub(crate) fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }

    pub(crate) async fn ping_redis(&self) -> bool {
        let mut conn = self.redis.clone();
        let ping = async move { redis::cmd("PING").query_async::<String>(&mut conn).await };
        api::with_timeout(self.redis_timeout, ping).await.is_ok()
    }

    pub(crate) async fn within_timeout<T>(
        &self,
        call: impl Future<Output = Result<T, coupon_gate::Error>>,
    ) -> Result<T, String> {
        api::with_timeout(self.redis_timeout, call).await
    }
}

/// Serves the API on `listener` until `shutdown` resolves, then stops accepting, lets requests
/// in flight finish for up to `grace`, and returns.
///
/// At most `max_connections` connections are served at once; further clients wait in the
/// listen backlog until one closes. A connection whose next answer is not ready within
/// `request_timeout` of the server starting to wait for its request (silent, dribbling or idle
/// clients) is closed.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    max_connections: usize,
    request_timeout: Duration,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) {
    // Shared by every connection: cloning the state itself (a Redis client with its connection
    // info, the connection handles) would allocate.
    let state = Arc::new(state);
    let permits = Arc::new(Semaphore::new(max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    warn!(cause = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let scope = Arc::new(ConnectionScope {
            state: state.clone(),
            watchdog: Watchdog::new(request_timeout),
        });
        let watchdog = scope.clone();
        let service = service_fn(move |req| {
            let scope = scope.clone();
            async move {
                let answer = api::handle(&scope.state, req).await;
                scope.watchdog.answered();
                answer
            }
        });
        let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            tokio::pin!(conn);
            tokio::select! {
                ended = PollAgain::new(conn.as_mut()) => if let Err(err) = ended {
                    debug!(cause = %err, %peer, "connection ended with an error");
                },
                () = watchdog.watchdog.expired() => {
                    debug!(%peer, ?request_timeout, "closing a connection that sent no complete request in time");
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    info!("shutting down: no new connections; waiting for requests in flight");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(
            ?grace,
            "requests still in flight after the grace period; closing them"
        );
    }
}
