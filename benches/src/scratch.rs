//! The Redis benchmarks' common frame (`gate-memory`, `gate-draw`, `archive-memory`): one Redis
//! server, a gate over a key prefix of the run's own, and the prefix's keys removed afterwards.

use coupon_gate::Gate;
use coupon_testkit::unlink_matching;
use redis::aio::MultiplexedConnection;

/// Runs `measure` with a gate over the key prefix `<stem>-<pid>` on the server `redis` names,
/// and a connection of the same; removes every key of the prefix afterwards, whatever `measure`
/// answered.
///
/// # Errors
///
/// A cluster given (the benchmark `bench` measures one server), Redis unreachable, or what
/// `measure` answers.
pub async fn on_scratch_prefix(
    bench: &str,
    stem: &str,
    redis: &coupon_cli::Redis,
    measure: impl AsyncFnOnce(
        &Gate<MultiplexedConnection>,
        &mut MultiplexedConnection,
        &str,
    ) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        redis.redis_cluster_nodes.is_empty(),
        "{bench} measures one Redis server: give REDIS_URL, not REDIS_CLUSTER_NODES"
    );
    let client = redis::Client::open(redis.redis_url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let prefix = format!("{stem}-{}", std::process::id());
    let gate = Gate::with_key_prefix(conn.clone(), prefix.clone())?;
    let result = measure(&gate, &mut conn, &prefix).await;
    unlink_matching(&mut conn, &format!("{prefix}:*")).await?;
    result
}
