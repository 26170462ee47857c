//! `write_batch` against the database directly: a batch of new rows is written without being
//! read back, and a batch with rows already present is checked row by row, whatever the
//! database URL says about `client_found_rows` (which would make an existing row count as
//! written).

mod support;

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
