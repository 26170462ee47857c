//! The keys a benchmark wrote under a prefix of its own: found with `SCAN` and removed with
//! `UNLINK`, never `KEYS`, which would stall a Redis that holds much else while it reads every key.

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;

/// Every key matching `pattern`, 10,000 keys a `SCAN` step.
///
/// # Errors
///
/// A Redis failure.
pub async fn scan(conn: &mut MultiplexedConnection, pattern: &str) -> anyhow::Result<Vec<String>> {
    let options = redis::ScanOptions::default()
        .with_pattern(pattern)
        .with_count(10_000);
    let mut found = Vec::new();
    let mut keys = conn.scan_options::<String>(options).await?;
    while let Some(key) = keys.next_item().await {
        found.push(key?);
    }
    Ok(found)
}

/// Removes every key matching `pattern`, a thousand to an `UNLINK`.
///
/// # Errors
///
/// A Redis failure.
pub async fn unlink_matching(
    conn: &mut MultiplexedConnection,
    pattern: &str,
) -> anyhow::Result<()> {
    for chunk in scan(conn, pattern).await?.chunks(1000) {
        let _: () = conn.unlink(chunk).await?;
    }
    Ok(())
}
