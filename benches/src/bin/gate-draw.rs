//! `gate-draw`: what a draw costs Redis. Queues `--queued` distinct users in a draw campaign's
//! pre-queue (in `apply_many` batches of 1,000), reports the queue's memory per user
//! (`MEMORY USAGE` of the sorted set, and the growth of `used_memory`), then brings the draw
//! forward and runs it part by part (`Gate::draw_part`), timing each script call from the client:
//! the longest part (an upper bound on how long Redis served nothing else) and the whole draw.
//! Checks that exactly `min(quota, queued)` users were drawn. Works under a key prefix of its
//! own, deleted afterwards.
//!
//! Usage: `gate-draw [--queued N] [--quota N] [--redis-url URL]`.

use std::num::NonZeroU32;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use clap::Parser;
use coupon_gate::{Campaign, CampaignId, Create, Draw, Gate, Outcome, UserId};
use redis::aio::MultiplexedConnection;

/// Measures a draw's memory and time in Redis.
#[derive(Parser, Debug)]
struct Args {
    /// Users in the pre-queue.
    #[arg(long, default_value_t = 1_000_000)]
    queued: u64,
    /// Coupons drawn.
    #[arg(long, default_value_t = 100_000)]
    quota: u32,
    /// The Redis to measure on (one server).
    #[command(flatten)]
    redis: coupon_cli::Redis,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    coupon_bench::scratch::on_scratch_prefix(
        "gate-draw",
        "draw",
        &args.redis,
        async |gate, conn, prefix| measure(gate, conn, prefix, &args).await,
    )
    .await
}

/// A draw of `quota` coupons whose queue opens at `queue_opens_at` and whose draw is at
/// `opens_at`.
fn definition(
    id: &CampaignId,
    quota: NonZeroU32,
    queue_opens_at: SystemTime,
    opens_at: SystemTime,
) -> anyhow::Result<Campaign> {
    Ok(Campaign::new(id.clone(), quota)
        .with_window(Some(opens_at), None)?
        .with_draw(queue_opens_at)?)
}

async fn measure(
    gate: &Gate<MultiplexedConnection>,
    conn: &mut MultiplexedConnection,
    prefix: &str,
    args: &Args,
) -> anyhow::Result<()> {
    let id = CampaignId::new("draw")?;
    let quota = NonZeroU32::new(args.quota).context("--quota must be positive")?;
    let hour = Duration::from_secs(3600);
    let queue_opens_at = SystemTime::now() - hour;
    let later = SystemTime::now() + hour;
    gate.create(&definition(&id, quota, queue_opens_at, later)?)
        .await?;
    let before = used_memory(conn).await?;
    let started = Instant::now();
    let mut next = 1;
    while next <= args.queued {
        let chunk: Vec<UserId> = (next..=(next + 999).min(args.queued))
            .map(UserId::from_number)
            .collect::<Result<_, _>>()?;
        next += chunk.len() as u64;
        let outcomes = gate.apply_many(&id, &chunk).await?;
        anyhow::ensure!(
            outcomes.iter().all(|o| matches!(o, Outcome::Queued { .. })),
            "not every user queued"
        );
    }
    let joined = started.elapsed();
    let after = used_memory(conn).await?;
    let queue = format!("{prefix}:{{draw}}:queue");
    let queue_bytes: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(&queue)
        .arg("SAMPLES")
        .arg(0)
        .query_async(conn)
        .await?;
    let queued = args.queued as f64;
    println!(
        "{} users queued in {:.1} s ({:.0} joins/s, 1,000 to a call)",
        args.queued,
        joined.as_secs_f64(),
        queued / joined.as_secs_f64()
    );
    println!(
        "  queue   {queue_bytes:>12} bytes  {:>6.1} B/user (MEMORY USAGE of the sorted set)",
        queue_bytes as f64 / queued
    );
    println!(
        "  used_memory grew {} bytes: {:.1} B/user",
        after.saturating_sub(before),
        after.saturating_sub(before) as f64 / queued
    );

    let now = definition(&id, quota, queue_opens_at, SystemTime::now())?;
    anyhow::ensure!(
        gate.create(&now).await? == Create::Updated,
        "the draw was not brought forward"
    );
    let started = Instant::now();
    let (mut parts, mut longest, mut winners) = (0u32, Duration::ZERO, 0u64);
    loop {
        let part_started = Instant::now();
        let draw = gate.draw_part(&id).await?;
        longest = longest.max(part_started.elapsed());
        parts += 1;
        match draw {
            Draw::GoesOn { winners: part } => winners += u64::from(part),
            Draw::Done { winners: part, .. } => {
                winners += u64::from(part);
                break;
            }
            other => anyhow::bail!("the draw answered {other:?}"),
        }
    }
    let took = started.elapsed();
    let expected = args.queued.min(u64::from(args.quota));
    anyhow::ensure!(winners == expected, "{winners} drawn, {expected} expected");
    let status = gate.status(&id).await?.context("the campaign exists")?;
    anyhow::ensure!(
        u64::from(status.issued) == expected && status.drawn,
        "status after the draw: {status:?}"
    );
    println!(
        "draw of {winners} among {} in {parts} parts: {:.0} ms in all, the longest part {:.1} ms",
        args.queued,
        took.as_secs_f64() * 1000.0,
        longest.as_secs_f64() * 1000.0
    );
    Ok(())
}

async fn used_memory(conn: &mut MultiplexedConnection) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await?;
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .context("INFO memory has used_memory")
}
