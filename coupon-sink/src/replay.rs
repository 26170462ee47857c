//! `coupon-sink replay`: writes unresolved failed events again, after an operator fixed what
//! made them fail, and marks those it wrote as resolved.

use anyhow::Context;
use mysql_async::Pool;
use mysql_async::prelude::*;

use crate::db::{self, Item};

/// What a replay did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Events written now and marked resolved.
    pub resolved: usize,
    /// Events that still fail; their attempts, last-seen time and error were updated.
    pub still_failing: usize,
}

/// Replays every unresolved failed event, oldest first, printing a line for each to `out`.
///
/// # Errors
///
/// The database is unavailable.
pub async fn replay(pool: &Pool, out: &mut impl std::io::Write) -> anyhow::Result<Replayed> {
    let mut conn = pool.get_conn().await.context("cannot connect to MySQL")?;
    let pending: Vec<(u64, Vec<u8>, String, i32, i64)> = conn
        .query("SELECT id, payload, topic, kafka_partition, kafka_offset FROM failed_event WHERE resolved_at IS NULL ORDER BY id")
        .await?;
    drop(conn);
    let total = pending.len();
    writeln!(out, "{total} unresolved failed event(s)")?;
    let mut replayed = Replayed::default();
    for (n, (id, payload, topic, partition, offset)) in pending.into_iter().enumerate() {
        let item = Item::new(&topic, partition, offset, &payload);
        let written = db::write_batch(pool, std::slice::from_ref(&item)).await?;
        let mut conn = pool.get_conn().await?;
        match written.failed.first() {
            None => {
                conn.exec_drop(
                    "UPDATE failed_event SET resolved_at = CURRENT_TIMESTAMP(3) WHERE id = ?",
                    (id,),
                )
                .await?;
                replayed.resolved += 1;
                writeln!(
                    out,
                    "[{}/{total}] #{id} {topic}/{partition}@{offset}: written, resolved",
                    n + 1
                )?;
            }
            Some((_, _, reason)) => {
                // write_batch recorded the attempt on the same row (same position).
                replayed.still_failing += 1;
                writeln!(
                    out,
                    "[{}/{total}] #{id} {topic}/{partition}@{offset}: still failing: {reason}",
                    n + 1
                )?;
            }
        }
    }
    writeln!(
        out,
        "resolved {}, still failing {}",
        replayed.resolved, replayed.still_failing
    )?;
    Ok(replayed)
}
