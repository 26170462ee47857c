//! The whole process: HTTP server and relay, started and stopped together, whether or not
//! Redis and the broker are reachable yet.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use coupon_cli::{Waiting, patiently};
use coupon_gate::RedisConnection;
use coupon_relay::{Announcements, Relay, RelayConfig};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tracing::{error, info, warn};

use crate::state::{self, AppState};
use crate::subscription::{self, Listeners};
use crate::{Config, archiving, draws, server};

/// Serves the API on `listener` and runs the relay until `shutdown` resolves. On shutdown:
/// stop accepting, finish requests in flight, then let the relay finish its round and flush,
/// each within `config.shutdown_grace`.
///
/// Neither Redis nor Kafka has to be reachable at start. Until Redis is reached, `/ready` answers
/// 503 and every API call `503 unavailable`; it is tried again every second at most, and the
/// `default` campaign and the sold-out subscription follow once it answers. Until the broker is
/// reached, admissions wait in the outbox, and the relay creates or checks the topic and starts
/// delivering once it answers.
///
/// # Errors
///
/// Only a configuration that no retry can mend: a request timeout not above the Redis timeout,
/// producer properties librdkafka refuses, a Redis that answers but refuses the connection
/// (e.g. a server without cluster support named as a cluster node), and those of
/// [`AppState::new`].
pub async fn serve(
    mut config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // One name for this process's relay, however often it is built.
    if config.relay_consumer.as_deref().is_none_or(str::is_empty) {
        config.relay_consumer = Some(RelayConfig::default_consumer());
    }
    anyhow::ensure!(
        config.request_timeout > config.redis_timeout,
        "the request timeout ({:?}) must exceed the Redis timeout ({:?}): a request waiting on Redis would lose its connection",
        config.request_timeout,
        config.redis_timeout
    );
    config
        .relay()
        .check()
        .context("invalid producer configuration (COUPON_KAFKA_PROPERTIES)")?;
    // Shared by every connection: cloning the state itself (a Redis client with its connection
    // info, the connection handles) would allocate.
    let state = Arc::new(AppState::new(&config)?);
    // One try at once: a Redis that answers, but refuses (a plain server named as a cluster
    // node, a wrong password), is a configuration to mend, not weather to wait out.
    if let Err(err) = state.connect_backend(&config).await {
        if !of_the_moment(&err) {
            return Err(err);
        }
        warn!(
            cause = format!("{err:#}"),
            "redis is not reachable; answering 503 until it is"
        );
    }
    let (stop_relay, relay_stopped) = watch::channel(false);
    // Told by the subscription which outboxes hold work, the relay reads only those.
    let announcements = Announcements::default();
    tokio::spawn(connect_backend(
        state.clone(),
        config.clone(),
        announcements.clone(),
        relay_stopped.clone(),
    ));
    let relay_done = start_relay(state.clone(), &config, announcements, relay_stopped.clone())?;
    tokio::spawn(sweep_limits(state.clone(), relay_stopped.clone()));
    tokio::spawn(archiving::run(
        state.clone(),
        config.archive_after,
        relay_stopped.clone(),
    ));
    tokio::spawn(draws::run(state.clone(), relay_stopped));
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

/// Reaches Redis for the handlers (see [`AppState::connect_backend`]), then keeps the sold-out
/// memory honest and tells the relay which outboxes hold work, with the subscription to the
/// gate's channels, until `stopped` turns true.
async fn connect_backend(
    state: Arc<AppState>,
    config: Config,
    announcements: Announcements,
    stopped: watch::Receiver<bool>,
) {
    let connected = patiently(stopped.clone(), || async {
        let connected = state.connect_backend(&config).await;
        connected.map_err(|err| Waiting::on("redis", err))
    })
    .await;
    let (Some(()), Ok(gate)) = (connected, state.gate()) else {
        return;
    };
    let listeners = Listeners {
        cache: state.sold_out().clone(),
        announcements,
        changes: gate.changes_channel(),
        outboxes: gate.outbox_channel(),
    };
    subscription::watch(listeners, state.redis_nodes().to_vec(), stopped).await;
}

/// Whether `err` comes from Redis being away or busy (worth waiting for) rather than from
/// Redis refusing what it was asked.
fn of_the_moment(err: &anyhow::Error) -> bool {
    err.chain()
        .find_map(|cause| cause.downcast_ref::<coupon_gate::Error>())
        .is_some_and(coupon_gate::Error::is_unavailable)
}

/// Forgets the rate limits' idle keys and the sold-out memory's idle campaigns once a second,
/// until `stopped` turns true.
async fn sweep_limits(state: Arc<AppState>, mut stopped: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                state.limits().sweep();
                state.sold_out().sweep();
            }
            _ = stopped.wait_for(|stop| *stop) => return,
        }
    }
}

/// Starts the relay on a thread of its own, with a single-threaded runtime and a Redis
/// connection of its own. The relay waits there for Redis, then creates or checks the topic,
/// waiting for the broker as long as it takes, and runs until `stopped` turns true; `/ready`
/// reports it running from its first round.
///
/// A relay round decodes and produces hundreds of entries at a time; on the request handlers'
/// runtime each round would hold a worker for that long and delay the answers queued behind it,
/// and its large stream replies would sit on the handlers' Redis connection ahead of theirs. On a
/// thread of its own the operating system interleaves it with the handlers instead.
///
/// Returns a receiver that resolves when the relay thread has ended.
fn start_relay(
    state: Arc<AppState>,
    config: &Config,
    announcements: Announcements,
    mut stopped: watch::Receiver<bool>,
) -> anyhow::Result<oneshot::Receiver<()>> {
    let (done, relay_done) = oneshot::channel();
    let config = config.clone();
    std::thread::Builder::new()
        .name("coupon-relay".to_owned())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => runtime.block_on(async move {
                    let Some(relay) = prepare_relay(&state, &config, stopped.clone()).await else {
                        return;
                    };
                    let relay = relay.with_announcements(announcements);
                    state.relay_started(relay.running());
                    relay
                        .run(async move {
                            let _ = stopped.wait_for(|stop| *stop).await;
                        })
                        .await;
                }),
                Err(err) => error!(cause = %err, "cannot start the relay's runtime"),
            }
            let _ = done.send(());
        })
        .context("cannot start the relay thread")?;
    Ok(relay_done)
}

/// The relay, over a Redis connection of its own and with its topic in place; `None` when
/// stopped first, or when it cannot be built at all (logged).
async fn prepare_relay(
    state: &AppState,
    config: &Config,
    stopped: watch::Receiver<bool>,
) -> Option<Relay<RedisConnection>> {
    let target = state.redis_target();
    let conn = patiently(stopped.clone(), || async {
        let conn = state::connect_redis(target, config).await;
        conn.map_err(|err| Waiting::on("redis (relay)", err))
    })
    .await?;
    let relay = config
        .gate(conn)
        .and_then(|gate| Ok(Relay::new(&gate, config.relay())?));
    let relay = match relay {
        Ok(relay) => relay,
        Err(err) => {
            error!(cause = %err, "cannot build the relay; admissions stay in the outbox");
            return None;
        }
    };
    let topic = &config.topic.topic;
    let what = format!(
        "the broker to create or check topic {topic} (KAFKA_BROKERS, COUPON_KAFKA_PROPERTIES)"
    );
    patiently(stopped, || async {
        let ensured = relay.ensure_topic().await;
        state.broker_refused(matches!(ensured, Err(coupon_relay::Error::Refused { .. })));
        ensured.map_err(|err| Waiting::on(what.as_str(), err))
    })
    .await?;
    Some(relay)
}
