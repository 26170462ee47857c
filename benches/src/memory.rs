//! Redis memory, as the memory benchmarks (`gate-memory`, `archive-memory`) read it.

use anyhow::Context;
use redis::aio::MultiplexedConnection;

/// `MEMORY USAGE` of `key` in bytes, every element counted (`SAMPLES 0`); 0 for no such key.
///
/// # Errors
///
/// Redis unreachable or refusing.
pub async fn memory_usage(conn: &mut MultiplexedConnection, key: &str) -> anyhow::Result<u64> {
    let bytes: Option<u64> = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .arg("SAMPLES")
        .arg(0)
        .query_async(conn)
        .await?;
    Ok(bytes.unwrap_or(0))
}

/// `used_memory` of `INFO memory`: every byte Redis's allocator holds for it.
///
/// # Errors
///
/// Redis unreachable, or an `INFO` without the field.
pub async fn used_memory(conn: &mut MultiplexedConnection) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .context("INFO memory has no used_memory")
}
