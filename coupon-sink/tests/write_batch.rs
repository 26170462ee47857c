//! `write_batch` against the database directly: a batch of new rows is written without being
//! read back, and a batch with rows already present is checked row by row, whatever the
//! database URL says about `client_found_rows` (which would make an existing row count as
//! written).

mod support;

use coupon_event::{CampaignId, Event, EventKind, UserId};
use coupon_sink::db::{self, Item, Written};
use support::{ScratchDb, admitted};

fn items(events: &[(String, Vec<u8>)], first_offset: i64) -> Vec<Item> {
    events
        .iter()
        .zip(first_offset..)
        .map(|((_, payload), offset)| Item::new("t", 0, offset, payload))
        .collect()
}

#[tokio::test]
async fn new_rows_are_written_and_conflicts_caught_even_with_client_found_rows() {
    let db = ScratchDb::new();
    let pool = db::connect(&format!("{}?client_found_rows=true", db.url()))
        .await
        .expect("database");

    let fresh = items(&[admitted("camp", 1, 1), admitted("camp", 2, 2)], 0);
    let written = db::write_batch(&pool, &fresh).await.expect("write");
    assert_eq!(
        written,
        Written {
            admitted: 2,
            inserted: 2,
            ..Written::default()
        }
    );

    // One redelivery, one user holding another seq, one seq held by another user, one new row.
    let mixed = items(
        &[
            admitted("camp", 1, 1),
            admitted("camp", 2, 5),
            admitted("camp", 3, 1),
            admitted("camp", 4, 4),
        ],
        2,
    );
    let written = db::write_batch(&pool, &mixed).await.expect("write");
    assert_eq!(written.admitted, 2, "the redelivery and the new row");
    assert_eq!(written.inserted, 1, "the new row");
    assert_eq!(written.conflicting, 2);
    assert_eq!(written.malformed, 0);
    let failed: Vec<i64> = written.failed.iter().map(|f| f.1).collect();
    assert_eq!(failed, [3, 4]);
    assert!(written.failed[0].2.contains("user 2 already holds seq 2"));
    assert!(
        written.failed[1]
            .2
            .contains("seq 1 of campaign camp is held by user 1")
    );

    let rows: Vec<(u64, u32)> = db
        .query("SELECT user_id, seq FROM coupon ORDER BY CAST(user_id AS UNSIGNED)")
        .await;
    assert_eq!(rows, [(1, 1), (2, 2), (4, 4)]);
    pool.disconnect().await.expect("disconnect");
}

/// An event of `kind` for `user` holding `seq`, stamped `ms` milliseconds into a minute.
fn stamped(kind: EventKind, user: u64, seq: u32, ms: i64) -> (String, Vec<u8>) {
    let event = Event {
        kind,
        campaign: CampaignId::new("camp").unwrap(),
        user: UserId::from_number(user).unwrap(),
        seq,
        at: time::macros::datetime!(2026-11-24 06:00:00 UTC) + time::Duration::milliseconds(ms),
    };
    (event.key(), event.encode())
}

/// Events are keyed by user, so a campaign's events reach the sink over several partitions, out
/// of the order the gate made them: the admission that took a released seq (or admitted a
/// released user again) can come before the release. The gate stamps the later of two such
/// events later (see `stamp` in coupon-gate's prelude.lua), and the newer row wins; an admission
/// older than the row in its way was released before that row was admitted, and is passed over.
/// The release that comes afterwards removes nothing.
#[tokio::test]
async fn out_of_order_admissions_are_settled_by_their_stamps() {
    let db = ScratchDb::new();
    let pool = db::connect(&db.url()).await.expect("database");
    use EventKind::{Admitted, Released};
    // Gate order: 1 takes seq 1 (at 0), 1 released (at 2), 2 takes seq 1 (at 3), 2 released
    // (at 5), 1 takes seq 2 (at 6). The sink sees user 2's partition first.
    let first = items(&[stamped(Admitted, 1, 1, 0)], 0);
    db::write_batch(&pool, &first).await.expect("write");
    let second = items(&[stamped(Admitted, 2, 1, 3), stamped(Released, 2, 1, 5)], 1);
    let written = db::write_batch(&pool, &second).await.expect("write");
    assert_eq!(
        written.failed,
        [],
        "the newer admission replaces the older row"
    );
    let rows: Vec<(u64, u32)> = db.query("SELECT user_id, seq FROM coupon").await;
    assert_eq!(
        rows,
        [],
        "user 2's own release came after it on its partition"
    );
    let third = items(&[stamped(Released, 1, 1, 2), stamped(Admitted, 1, 2, 6)], 3);
    let written = db::write_batch(&pool, &third).await.expect("write");
    assert_eq!(written.failed, []);
    let rows: Vec<(u64, u32)> = db.query("SELECT user_id, seq FROM coupon").await;
    assert_eq!(rows, [(1, 2)]);

    // The other way round: a row newer than a late admission stays, and the admission is passed
    // over (its release follows on its own partition).
    let late = items(&[stamped(Admitted, 3, 2, 4)], 5);
    let written = db::write_batch(&pool, &late).await.expect("write");
    assert_eq!(written.failed, []);
    assert_eq!((written.admitted, written.inserted), (1, 0));
    let rows: Vec<(u64, u32)> = db.query("SELECT user_id, seq FROM coupon").await;
    assert_eq!(rows, [(1, 2)]);
    pool.disconnect().await.expect("disconnect");
}
