//! `archive-memory`: what archiving frees. Fills `--campaigns` campaigns of `--holders` users
//! each through the gate (in `apply_many` batches), relays their outboxes away as a relay would,
//! closes them, and measures Redis memory (`MEMORY USAGE` of every key under the run's prefix,
//! and `INFO memory`'s `used_memory` against the run's start) before and after archiving them
//! all. Archives with the gate's two steps (`begin_archive`, `archive`); the MySQL comparison
//! that coupon-admin and coupon-http add in between reads MySQL only and is left out. Works
//! under a key prefix of its own, deleted afterwards.
//!
//! Usage: `archive-memory [--campaigns N] [--holders N] [--redis-url URL]`.

use std::num::NonZeroU32;

use anyhow::Context;
use clap::Parser;
use coupon_bench::memory::{memory_usage, used_memory};
use coupon_gate::{Archive, Campaign, CampaignId, Gate, UserId};
use redis::aio::MultiplexedConnection;

/// Measures the Redis memory archiving frees.
#[derive(Parser, Debug)]
struct Args {
    /// Campaigns to fill and archive.
    #[arg(long, default_value_t = 100)]
    campaigns: u32,
    /// Holders of each campaign (its quota).
    #[arg(long, default_value_t = 10_000)]
    holders: u32,
    /// The Redis to measure on (one server).
    #[command(flatten)]
    redis: coupon_cli::Redis,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    coupon_bench::scratch::on_scratch_prefix(
        "archive-memory",
        "archive-memory",
        &args.redis,
        async |gate, conn, prefix| measure(gate, conn, prefix, &args).await,
    )
    .await
}

async fn measure(
    gate: &Gate<MultiplexedConnection>,
    conn: &mut MultiplexedConnection,
    prefix: &str,
    args: &Args,
) -> anyhow::Result<()> {
    let quota = NonZeroU32::new(args.holders).context("--holders must be positive")?;
    let ids: Vec<CampaignId> = (0..=args.campaigns)
        .map(|n| CampaignId::new(format!("c{n}")))
        .collect::<Result<_, _>>()?;
    // The first campaign, filled and archived before the start is measured, loads every script
    // Redis caches and allocates what one archive leaves (its tombstone, the archived list).
    let mut start = 0;
    for (n, id) in ids.iter().enumerate() {
        if n == 1 {
            start = used_memory(conn).await?;
        }
        gate.create(&Campaign::new(id.clone(), quota)).await?;
        let mut next = 1u64;
        while next <= u64::from(args.holders) {
            let last = (next + 999).min(u64::from(args.holders));
            let users: Vec<UserId> = (next..=last)
                .map(UserId::from_number)
                .collect::<Result<_, _>>()?;
            next = last + 1;
            let outcomes = gate.apply_many(id, &users).await?;
            anyhow::ensure!(
                outcomes.iter().all(|o| o.is_admitted()),
                "not every user admitted"
            );
            let outbox = gate.outbox();
            let records = outbox.read(id, "memory", users.len()).await?;
            outbox.ack(id, &records).await?;
        }
        gate.close(id).await?;
        if n == 0 {
            archive(gate, id).await?;
        }
    }
    let ids = &ids[1..];
    let (keys_full, count_full) = keys_usage(conn, prefix).await?;
    let full = used_memory(conn).await?;
    println!(
        "{} campaigns of {} holders, closed and relayed (key prefix {prefix})",
        args.campaigns, args.holders
    );
    for id in ids {
        archive(gate, id).await?;
    }
    freed(conn).await?;
    let (keys_after, count_after) = keys_usage(conn, prefix).await?;
    let after = settled_memory(conn).await?;
    let share = |part: u64, whole: u64| part as f64 * 100.0 / whole.max(1) as f64;
    println!(
        "  keys (MEMORY USAGE)  before {keys_full:>11} bytes in {count_full} keys, after \
         {keys_after:>8} bytes in {count_after} keys: {:.2} % stays ({:.0} bytes a campaign)",
        share(keys_after, keys_full),
        keys_after as f64 / f64::from(args.campaigns)
    );
    let grown = full.saturating_sub(start);
    let kept = after.saturating_sub(start);
    println!(
        "  used_memory          grew {grown:>11} bytes, after archiving {kept:>8} bytes above \
         the start: {:.2} % stays",
        share(kept, grown)
    );
    Ok(())
}

async fn archive(gate: &Gate<MultiplexedConnection>, id: &CampaignId) -> anyhow::Result<()> {
    let seal = gate
        .begin_archive(id)
        .await?
        .map_err(|found| anyhow::anyhow!("{id} is not ready to archive: {found:?}"))?;
    match gate.archive(id, &seal).await? {
        Archive::Archived { .. } => Ok(()),
        other => anyhow::bail!("{id} was not archived: {other:?}"),
    }
}

/// Waits until Redis's background thread has freed what `UNLINK` handed it.
async fn freed(conn: &mut MultiplexedConnection) -> anyhow::Result<()> {
    for _ in 0..100 {
        let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await?;
        let pending = info
            .lines()
            .find_map(|l| l.strip_prefix("lazyfree_pending_objects:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if pending == 0 {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    anyhow::bail!("Redis did not free the archived keys within 5 s")
}

/// The `MEMORY USAGE` of every key under `prefix`, and how many there are.
async fn keys_usage(
    conn: &mut MultiplexedConnection,
    prefix: &str,
) -> anyhow::Result<(u64, usize)> {
    let keys = coupon_testkit::scan(conn, &format!("{prefix}:*")).await?;
    let mut total = 0;
    for key in &keys {
        total += memory_usage(conn, key).await?;
    }
    Ok((total, keys.len()))
}

/// `used_memory` once Redis's housekeeping (`serverCron` shrinks the keyspace's hash table a
/// step at a time, ten times a second) has stopped lowering it for half a second; at most 10 s.
async fn settled_memory(conn: &mut MultiplexedConnection) -> anyhow::Result<u64> {
    let mut last = used_memory(conn).await?;
    let mut steady = 0;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let now = used_memory(conn).await?;
        steady = if now < last { 0 } else { steady + 1 };
        last = last.min(now);
        if steady == 5 {
            break;
        }
    }
    Ok(last)
}
