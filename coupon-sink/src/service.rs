//! The sink as a process: what `coupon-sink` and `coupon-sink replay` run, from a [`Config`]
//! and a shutdown signal, so that the binary only parses its settings and sets up logging.

use std::future::Future;

use tokio::sync::watch;

use crate::db::Database;
use crate::{Config, consumer, replay};

/// Consumes the topic into the database until `shutdown` resolves. A sink started before its
/// database waits for it, logging what it waits for (and so for the broker and the topic).
///
/// # Errors
///
/// An invalid `DATABASE_URL`, or a consumer that cannot go on (see [`consumer::run`]).
pub async fn run(
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let database = Database::new(&config.database)?;
    if let Some(warning) = config.kafka.plaintext_warning() {
        tracing::warn!("{warning}");
    }
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let Some(pool) = database.open_patiently(stop.clone()).await else {
        return Ok(());
    };
    let mut stopped = stop;
    let shutdown = async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let consumed = consumer::run(config, &pool, shutdown).await;
    pool.disconnect().await.ok();
    consumed
}

/// Writes the unresolved failed events again, a line for each to `out`; `true` when none still
/// fails.
///
/// # Errors
///
/// A database that cannot be reached, or a replay that cannot record its results.
pub async fn replay_failed(config: &Config, out: &mut impl std::io::Write) -> anyhow::Result<bool> {
    let pool = Database::new(&config.database)?.open().await?;
    let done = replay::replay(&pool, out).await;
    pool.disconnect().await.ok();
    Ok(done?.still_failing == 0)
}
