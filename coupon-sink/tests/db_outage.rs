//! MariaDB unreachable while events arrive: the sink waits and retries without committing
//! offsets, and when the database is back every row is written, none twice.

mod support;

use std::time::Duration;

use support::{
    Proxy, ScratchDb, Sink, admitted, brokers, config, count, eventually, fresh_topic, produce,
    wait_for_rows,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_that_arrive_while_the_database_is_down_are_written_when_it_returns() {
    let db = ScratchDb::new();
    let topic = fresh_topic(&brokers()).await;
    // The machine's MariaDB stays up; the sink reaches it through a proxy the test cuts.
    let proxy = Proxy::start(3306).await;
    let sink = Sink::start(config(&db.url_via(proxy.port), &topic, "sink")).await;

    produce(
        &brokers(),
        &topic,
        &(1..=50).map(|u| admitted("camp", u, u)).collect::<Vec<_>>(),
    )
    .await;
    wait_for_rows(&db, 50, Duration::from_secs(60)).await;

    proxy.cut();
    produce(
        &brokers(),
        &topic,
        &(51..=150)
            .map(|u| admitted("camp", u, u))
            .collect::<Vec<_>>(),
    )
    .await;
    let refused = proxy.refused();
    eventually(
        Duration::from_secs(30),
        "the sink to try the database while it is down",
        || async { proxy.refused() > refused + 2 },
    )
    .await;
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM coupon").await,
        50,
        "nothing was written while it was down"
    );

    proxy.restore();
    wait_for_rows(&db, 150, Duration::from_secs(60)).await;
    sink.stop().await;

    let users: Vec<u64> = db
        .query("SELECT user_id FROM coupon ORDER BY CAST(user_id AS UNSIGNED)")
        .await;
    assert_eq!(users, (1..=150).collect::<Vec<_>>());
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM failed_event").await,
        0,
        "an outage is not a failure of the events"
    );
}
