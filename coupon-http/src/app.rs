//! The whole process: HTTP server and relay, started and stopped together.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use coupon_relay::{Relay, Running};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use crate::state::{self, AppState};
use crate::{Config, server, sold_out};

/// Connects to Redis, makes sure the topic exists, then serves the API on `listener` and runs
/// the relay until `shutdown` resolves. On shutdown: stop accepting, finish requests in flight,
/// then let the relay finish its round and flush, each within `config.shutdown_grace`.
///
/// # Errors
///
/// Redis or Kafka unreachable at start-up, a configuration they refuse, or a request timeout
/// not above the Redis timeout.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.request_timeout > config.redis_timeout,
        "the request timeout ({:?}) must exceed the Redis timeout ({:?}): a request waiting on Redis would lose its connection",
        config.request_timeout,
        config.redis_timeout
    );
    let mut state = AppState::connect(&config).await?;
    let (stop_relay, relay_stopped) = watch::channel(false);
    let (running, relay_done) = start_relay(&state, &config, relay_stopped.clone()).await?;
    state.watch_relay(running);
    let nodes = state
        .redis_target()
        .node_clients()
        .context("invalid redis address")?;
    tokio::spawn(sold_out::watch(
        state.sold_out().clone(),
        nodes,
        state.gate().changes_channel(),
        relay_stopped.clone(),
    ));
    // Shared by every connection: cloning the state itself (a Redis client with its connection
    // info, the connection handles) would allocate.
    let state = Arc::new(state);
    tokio::spawn(sweep_limits(state.clone(), relay_stopped));
    info!(addr = %listener.local_addr().context("listener address")?, "listening");
    server::run(listener, state, &config, shutdown).await;

    let _ = stop_relay.send(true);
    match tokio::time::timeout(config.shutdown_grace, relay_done).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => warn!("relay thread failed"),
        Err(_) => warn!(
            "relay did not stop within the grace period; its pending entries stay in the outbox"
        ),
    }
    Ok(())
}

/// Forgets the rate limits' idle keys once a second, until `stopped` turns true.
async fn sweep_limits(state: Arc<AppState>, mut stopped: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => state.limits().sweep(),
            _ = stopped.wait_for(|stop| *stop) => return,
        }
    }
}

/// Starts the relay on a thread of its own, with a single-threaded runtime and a Redis
/// connection of its own, and returns once it runs (or with what kept it from starting).
///
/// A relay round decodes and produces hundreds of entries at a time; on the request handlers'
/// runtime each round would hold a worker for that long and delay the answers queued behind it,
/// and its large stream replies would sit on the handlers' Redis connection ahead of theirs. On a
/// thread of its own the operating system interleaves it with the handlers instead.
///
/// Returns the relay's [`Running`] handle, and a receiver that resolves when the relay has
/// stopped (after `stopped` turned true).
async fn start_relay(
    state: &AppState,
    config: &Config,
    mut stopped: watch::Receiver<bool>,
) -> anyhow::Result<(Running, oneshot::Receiver<()>)> {
    let (started, start) = oneshot::channel::<anyhow::Result<Running>>();
    let (done, relay_done) = oneshot::channel();
    let target = state.redis_target().clone();
    let config = config.clone();
    std::thread::Builder::new()
        .name("coupon-relay".to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    let _ = started.send(Err(err).context("cannot start the relay's runtime"));
                    return;
                }
            };
            runtime.block_on(async move {
                let relay = async {
                    let conn = state::connect_redis(&target, &config).await?;
                    let gate = config.gate(conn)?;
                    let relay = Relay::new(&gate, config.relay.clone())?;
                    relay.ensure_topic().await?;
                    anyhow::Ok(relay)
                };
                match relay.await {
                    Ok(relay) => {
                        let _ = started.send(Ok(relay.running()));
                        relay
                            .run(async move {
                                let _ = stopped.wait_for(|stop| *stop).await;
                            })
                            .await;
                    }
                    Err(err) => {
                        let _ = started.send(Err(err));
                    }
                }
            });
            let _ = done.send(());
        })
        .context("cannot start the relay thread")?;
    let running = start
        .await
        .context("the relay thread ended before it started")??;
    Ok((running, relay_done))
}
