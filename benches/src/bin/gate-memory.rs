//! `gate-memory`: Redis memory per admitted user. Admits `--users` distinct users to one
//! campaign through the gate (in `apply_many` batches), relays the outbox away as a relay would
//! (read, then acknowledge and delete), and reports `MEMORY USAGE` of the campaign's keys and the
//! growth of `used_memory`, per user. Works under a key prefix of its own, deleted afterwards.
//!
//! Usage: `gate-memory [--users N] [--redis-url URL]`.

use std::num::NonZeroU32;

use anyhow::Context;
use clap::Parser;
use coupon_bench::memory::{memory_usage, used_memory};
use coupon_gate::{Campaign, CampaignId, Gate, UserId};

/// Measures Redis memory per admitted user.
#[derive(Parser, Debug)]
struct Args {
    /// Users to admit.
    #[arg(long, default_value_t = 1_000_000)]
    users: u64,
    /// The Redis to measure on (one server).
    #[command(flatten)]
    redis: coupon_cli::Redis,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    coupon_bench::scratch::on_scratch_prefix(
        "gate-memory",
        "memory",
        &args.redis,
        async |gate, conn, prefix| measure(gate, conn, prefix, args.users).await,
    )
    .await
}

async fn measure(
    gate: &Gate<redis::aio::MultiplexedConnection>,
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    users: u64,
) -> anyhow::Result<()> {
    let id = CampaignId::new("memory")?;
    let quota = NonZeroU32::new(u32::try_from(users).context("--users fits in u32")?)
        .context("--users must be positive")?;
    let before = used_memory(conn).await?;
    gate.create(&Campaign::new(id.clone(), quota)).await?;
    let batch = 1000;
    let mut next = 1;
    while next <= users {
        let chunk: Vec<UserId> = (next..=(next + batch - 1).min(users))
            .map(UserId::from_number)
            .collect::<Result<_, _>>()?;
        next += chunk.len() as u64;
        let outcomes = gate.apply_many(&id, &chunk).await?;
        anyhow::ensure!(
            outcomes.iter().all(|o| o.is_admitted()),
            "not every user admitted"
        );
        // Relay as the relay does, so that the outbox is measured after delivery.
        let outbox = gate.outbox();
        let records = outbox.read(&id, "memory", chunk.len()).await?;
        outbox.ack(&id, &records).await?;
    }
    let after = used_memory(conn).await?;
    println!("{users} users admitted and relayed (key prefix {prefix})");
    let base = format!("{prefix}:{{memory}}");
    let mut total = 0;
    for suffix in ["meta", "free", "outbox"] {
        let key = format!("{base}:{suffix}");
        let bytes = memory_usage(conn, &key).await?;
        total += bytes;
        println!(
            "  {suffix:<7} {bytes:>12} bytes  {:>7.1} B/user",
            bytes as f64 / users as f64
        );
    }
    // The user buckets: hashes of about a hundred users each, in the compact listpack encoding
    // while they stay within Redis's hash-max-listpack-entries.
    let buckets = coupon_testkit::scan(conn, &format!("{base}:users:*")).await?;
    let (mut bytes, mut listpack) = (0, 0);
    for key in &buckets {
        bytes += memory_usage(conn, key).await?;
        let encoding: String = redis::cmd("OBJECT")
            .arg("ENCODING")
            .arg(key)
            .query_async(conn)
            .await?;
        listpack += usize::from(encoding == "listpack");
    }
    total += bytes;
    println!(
        "  users   {bytes:>12} bytes  {:>7.1} B/user  ({} buckets, {listpack} of them listpack)",
        bytes as f64 / users as f64,
        buckets.len()
    );
    println!(
        "  keys    {total:>12} bytes  {:>7.1} B/user",
        total as f64 / users as f64
    );
    println!(
        "  used_memory grew {} bytes: {:.1} B/user",
        after.saturating_sub(before),
        after.saturating_sub(before) as f64 / users as f64
    );
    Ok(())
}
