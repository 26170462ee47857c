//! The real binary killed with SIGKILL mid-drain, several times, and restarted: every event
//! ends as exactly one row, and redeliveries after the kills are not failures.

mod support;

use std::time::Duration;

use support::{
    ScratchDb, admitted, brokers, count, eventually, fresh_topic, produce, spawn_binary,
    wait_for_rows,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_killed_mid_drain_and_restarted_writes_everything_once() {
    let db = ScratchDb::new();
    let topic = fresh_topic(&brokers()).await;
    let total = 3000;
    // Produced in multi-record batches, as the relay produces: each restart resumes from a
    // committed offset, which may fall inside a batch.
    produce(
        &brokers(),
        &topic,
        &(1..=total)
            .map(|u| admitted("camp", u, u))
            .collect::<Vec<_>>(),
    )
    .await;

    for stage in [500, 1500] {
        let mut sink = spawn_binary(&db.url(), &topic, "sink");
        eventually(
            Duration::from_secs(30),
            "the sink to create and migrate its database",
            || db.has_tables(&["coupon", "failed_event"]),
        )
        .await;
        // After a kill the group waits out the session timeout (10 s) before it hands the dead
        // member's partitions to the restarted sink.
        eventually(
            Duration::from_secs(120),
            &format!("at least {stage} rows"),
            || async { count(&db, "SELECT COUNT(*) FROM coupon").await >= stage },
        )
        .await;
        sink.kill();
    }
    let _sink = spawn_binary(&db.url(), &topic, "sink");
    wait_for_rows(&db, total, Duration::from_secs(120)).await;

    assert_eq!(
        count(&db, "SELECT COUNT(DISTINCT user_id) FROM coupon").await,
        total
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM failed_event").await, 0);
}
