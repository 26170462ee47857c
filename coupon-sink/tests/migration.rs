//! A database written before user ids became strings: the migration keeps its rows, and the
//! sink goes on recognising them, from events in either form.

mod support;

use coupon_sink::db::{self, Item, Written};
use mysql_async::prelude::Queryable;
use support::{ScratchDb, admitted};

/// The schema as the first two migrations left it, with two coupons of numeric users.
async fn an_older_database(db: &ScratchDb) {
    let server = mysql_async::Pool::new(coupon_testkit::mysql_server_url().as_str());
    let mut conn = server.get_conn().await.unwrap();
    conn.query_drop(format!("CREATE DATABASE `{}`", db.name))
        .await
        .unwrap();
    drop(conn);
    server.disconnect().await.ok();
    db.execute(include_str!("../migrations/0001_coupon.sql"))
        .await;
    db.execute(include_str!("../migrations/0002_failed_event.sql"))
        .await;
    db.execute(
        "CREATE TABLE schema_migrations (version INT UNSIGNED PRIMARY KEY, name VARCHAR(64) NOT NULL, \
         applied_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3))",
    )
    .await;
    db.execute(
        "INSERT INTO schema_migrations (version, name) VALUES (1, 'coupon'), (2, 'failed_event')",
    )
    .await;
    db.execute(
        "INSERT INTO coupon (campaign_id, user_id, seq, admitted_at) VALUES \
         ('camp', 42, 1, '2026-11-24 06:00:00'), ('camp', 9223372036854775807, 2, '2026-11-24 06:00:01')",
    )
    .await;
}

#[tokio::test]
async fn numeric_rows_survive_the_move_to_string_ids() {
    let db = ScratchDb::new();
    an_older_database(&db).await;
    let pool = db::connect(&db.url()).await.expect("connect and migrate");

    let rows: Vec<(String, u32)> = db
        .query("SELECT user_id, seq FROM coupon ORDER BY seq")
        .await;
    assert_eq!(
        rows,
        [("42".to_owned(), 1), ("9223372036854775807".to_owned(), 2)]
    );

    // The same admission again, as a numeric event already on the topic and as a string one:
    // both are redeliveries of the existing row, not conflicts. New users of either kind go in.
    let legacy = br#"{"event":"admitted","campaignId":"camp","userId":42,"seq":1,"admittedAt":"2026-11-24T06:00:00Z"}"#;
    let opaque = br#"{"event":"admitted","campaignId":"camp","userId":"auth0|5f3a9c","seq":4,"admittedAt":"2026-11-24T06:00:00Z"}"#;
    let items = [
        Item::new("t", 0, 0, legacy),
        Item::new("t", 0, 1, &admitted("camp", 42, 1).1),
        Item::new("t", 0, 2, &admitted("camp", 7, 3).1),
        Item::new("t", 0, 3, opaque),
    ];
    let written = db::write_batch(&pool, &items).await.expect("write");
    assert_eq!(
        written,
        Written {
            admitted: 4,
            inserted: 2,
            ..Written::default()
        }
    );
    let users: Vec<String> = db.query("SELECT user_id FROM coupon ORDER BY seq").await;
    assert_eq!(users, ["42", "9223372036854775807", "7", "auth0|5f3a9c"]);

    // Case matters: `AUTH0|5F3A9C` is another user, so taking seq 4 is a conflict.
    let other = br#"{"event":"admitted","campaignId":"camp","userId":"AUTH0|5F3A9C","seq":4,"admittedAt":"2026-11-24T06:00:00Z"}"#;
    let written = db::write_batch(&pool, &[Item::new("t", 0, 4, other)])
        .await
        .expect("write");
    assert_eq!(written.failed.len(), 1, "{written:?}");
    assert!(
        written.failed[0].2.contains("held by user auth0|5f3a9c"),
        "{written:?}"
    );
    pool.disconnect().await.ok();
}
