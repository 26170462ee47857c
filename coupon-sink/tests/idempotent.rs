//! Each admission becomes exactly one row, however often it is delivered.

mod support;

use std::time::Duration;

use support::{
    ScratchDb, Sink, admitted, brokers, config, count, fresh_topic, produce, released,
    wait_for_rows,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_events_make_n_rows_and_redelivery_changes_nothing() {
    let db = ScratchDb::new();
    let topic = fresh_topic(&brokers()).await;
    let events: Vec<_> = (1..=300).map(|u| admitted("flash", u, u)).collect();
    produce(&brokers(), &topic, &events).await;

    let sink = Sink::start(config(&db.url(), &topic, "sink-a")).await;
    wait_for_rows(&db, 300, Duration::from_secs(60)).await;

    // The same events produced again: still 300 rows.
    produce(&brokers(), &topic, &events).await;
    // One more distinct event behind them proves the duplicates were consumed, not skipped.
    produce(&brokers(), &topic, &[admitted("flash", 301, 301)]).await;
    wait_for_rows(&db, 301, Duration::from_secs(60)).await;
    sink.stop().await;

    // A crash after the database commit but before the offset commit leaves exactly this
    // state: rows written, offsets not. A group with no committed offsets reads everything again.
    let again = Sink::start(config(&db.url(), &topic, "sink-b")).await;
    produce(&brokers(), &topic, &[admitted("flash", 302, 302)]).await;
    wait_for_rows(&db, 302, Duration::from_secs(60)).await;
    again.stop().await;

    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM failed_event").await,
        0,
        "a redelivery is not a failure"
    );
    let rows: Vec<(u64, u32, String)> = db.query("SELECT user_id, seq, DATE_FORMAT(admitted_at, '%Y-%m-%d %H:%i:%s.%f') FROM coupon ORDER BY CAST(user_id AS UNSIGNED)").await;
    assert_eq!(rows.len(), 302);
    assert!(rows.iter().all(|(user, seq, _)| *user == u64::from(*seq)));
    assert_eq!(rows[0].2, "2026-11-24 06:00:00.123000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_removes_exactly_its_row_and_the_slot_can_be_taken_again() {
    let db = ScratchDb::new();
    let topic = fresh_topic(&brokers()).await;
    // User 1 takes seq 1, gives it back, user 2 takes seq 1; user 3 keeps seq 2. All on one key
    // per user, so their order per user holds on any partition.
    produce(
        &brokers(),
        &topic,
        &[admitted("camp", 1, 1), admitted("camp", 3, 2)],
    )
    .await;
    let sink = Sink::start(config(&db.url(), &topic, "sink")).await;
    wait_for_rows(&db, 2, Duration::from_secs(60)).await;
    produce(
        &brokers(),
        &topic,
        &[released("camp", 1, 1), released("camp", 3, 99)],
    )
    .await;
    wait_for_rows(&db, 1, Duration::from_secs(60)).await;
    produce(&brokers(), &topic, &[admitted("camp", 2, 1)]).await;
    wait_for_rows(&db, 2, Duration::from_secs(60)).await;
    sink.stop().await;

    let rows: Vec<(u64, u32)> = db
        .query("SELECT user_id, seq FROM coupon ORDER BY seq")
        .await;
    assert_eq!(
        rows,
        [(2, 1), (3, 2)],
        "a release for another seq removes nothing"
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM failed_event").await, 0);
}
