//! The whole process: HTTP server and relay, started and stopped together.

use std::future::Future;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::relay::Relay;
use crate::{AppState, Config, server, sold_out};

/// Connects to Redis, makes sure the topic exists, then serves the API on `listener` and runs
/// the relay until `shutdown` resolves. On shutdown: stop accepting, finish requests in flight,
/// then let the relay finish its round and flush, each within `config.shutdown_grace`.
///
/// # Errors
///
/// Redis or Kafka unreachable at start-up, or a configuration they refuse.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let state = AppState::connect(&config).await?;
    let relay = Relay::new(state.gate().clone(), config.relay.clone())?;
    relay.ensure_topic().await?;

    let (stop_relay, relay_stopped) = watch::channel(false);
    tokio::spawn(sold_out::watch(
        state.sold_out().clone(),
        state.client().clone(),
        state.gate().changes_channel(),
        relay_stopped.clone(),
    ));
    let relay_task = tokio::spawn(relay.run(state.relay_flag(), relay_stopped));
    info!(addr = %listener.local_addr().context("listener address")?, "listening");
    server::run(
        listener,
        state,
        config.max_connections,
        config.shutdown_grace,
        shutdown,
    )
    .await;

    let _ = stop_relay.send(true);
    match tokio::time::timeout(config.shutdown_grace, relay_task).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => warn!(cause = %err, "relay task failed"),
        Err(_) => warn!(
            "relay did not stop within the grace period; its pending entries stay in the outbox"
        ),
    }
    Ok(())
}
