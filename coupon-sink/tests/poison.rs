//! An event that can never be written goes to `failed_event` with its reason, and the events
//! around it are written: one bad message never blocks the partition.

mod support;

use std::time::Duration;

use support::{
    ScratchDb, Sink, admitted, brokers, config, count, eventually, fresh_topic, produce,
    wait_for_rows,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_between_good_events_is_recorded_and_the_rest_flows() {
    let db = ScratchDb::new();
    let topic = fresh_topic(&brokers()).await;
    // One key for all, so they share a partition and the poison sits between the good ones.
    let key = |(_, payload): (String, Vec<u8>)| ("same-key".to_owned(), payload);
    let messages = vec![
        key(admitted("camp", 1, 1)),
        ("same-key".to_owned(), b"this is not json".to_vec()),
        key(admitted("camp", 2, 2)),
        key(admitted("camp", 3, 2)), // seq 2 is held by user 2: a conflict with a different row
        key(admitted("camp", 1, 5)), // user 1 holds seq 1: a conflict too
        (
            "same-key".to_owned(),
            br#"{"campaignId":"camp","userId":-4,"seq":1,"admittedAt":"2026-01-01T00:00:00Z"}"#
                .to_vec(),
        ),
        key(admitted("camp", 4, 4)),
    ];
    produce(&brokers(), &topic, &messages).await;
    let sink = Sink::start(config(&db.url(), &topic, "sink")).await;
    wait_for_rows(&db, 3, Duration::from_secs(60)).await;
    eventually(Duration::from_secs(30), "four failed events", || async {
        count(&db, "SELECT COUNT(*) FROM failed_event").await == 4
    })
    .await;

    // Redelivery of the whole partition: the failures count another attempt, nothing more.
    sink.stop().await;
    let again = Sink::start(config(&db.url(), &topic, "another-group")).await;
    eventually(
        Duration::from_secs(60),
        "every failure seen twice",
        || async { count(&db, "SELECT COUNT(*) FROM failed_event WHERE attempts = 2").await == 4 },
    )
    .await;
    again.stop().await;

    let rows: Vec<(u64, u32)> = db
        .query("SELECT user_id, seq FROM coupon ORDER BY CAST(user_id AS UNSIGNED)")
        .await;
    assert_eq!(rows, [(1, 1), (2, 2), (4, 4)]);
    let failed: Vec<(i64, String, Option<String>)> =
        db.query("SELECT kafka_offset, error, CAST(resolved_at AS CHAR) FROM failed_event ORDER BY kafka_offset").await;
    let offsets: Vec<i64> = failed.iter().map(|f| f.0).collect();
    assert_eq!(offsets, [1, 3, 4, 5]);
    assert!(failed[0].1.contains("not a valid event"), "{}", failed[0].1);
    assert!(
        failed[1]
            .1
            .contains("seq 2 of campaign camp is held by user 2"),
        "{}",
        failed[1].1
    );
    assert!(
        failed[2].1.contains("user 1 already holds seq 1"),
        "{}",
        failed[2].1
    );
    assert!(failed[3].1.contains("userId"), "{}", failed[3].1);
    assert!(failed.iter().all(|f| f.2.is_none()));
    let payload: Vec<Vec<u8>> = db
        .query("SELECT payload FROM failed_event WHERE kafka_offset = 1")
        .await;
    assert_eq!(payload[0], b"this is not json", "the raw payload is kept");
}
