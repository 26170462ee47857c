//! `coupon-sink replay` writes a failed event once its cause is fixed and marks it resolved;
//! one that still fails stays unresolved with another attempt counted.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{
    ScratchDb, Sink, admitted, brokers, config, count, eventually, fresh_topic, produce,
    wait_for_rows,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_writes_a_fixed_event_and_marks_it_resolved() {
    let db = ScratchDb::new();
    let topic = fresh_topic(&brokers()).await;
    // User 9 holds seq 1 by mistake (say, a row copied in by hand), stamped as user 1's
    // admission is: no order of the gate's events explains two holders of one seq at one
    // stamp, so user 1's admission fails.
    let sink = Sink::start(config(&db.url(), &topic, "sink")).await;
    db.execute("INSERT INTO coupon (campaign_id, user_id, seq, admitted_at) VALUES ('camp', '9', 1, '2026-11-24 06:00:00.123')").await;
    let poison = ("camp:x".to_owned(), b"{broken".to_vec());
    produce(
        &brokers(),
        &topic,
        &[admitted("camp", 1, 1), poison, admitted("camp", 2, 2)],
    )
    .await;
    wait_for_rows(&db, 2, Duration::from_secs(60)).await;
    eventually(Duration::from_secs(30), "two failed events", || async {
        count(&db, "SELECT COUNT(*) FROM failed_event").await == 2
    })
    .await;
    sink.stop().await;

    // The operator removes the wrong row, then replays.
    db.execute("DELETE FROM coupon WHERE user_id = '9'").await;
    let output = Command::new(env!("CARGO_BIN_EXE_coupon-sink"))
        .arg("replay")
        .env("DATABASE_URL", db.url())
        .output()
        .expect("coupon-sink replay");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "one event still fails: {stdout}"
    );
    assert!(stdout.contains("2 unresolved failed event(s)"), "{stdout}");
    assert!(stdout.contains("written, resolved"), "{stdout}");
    assert!(
        stdout.contains("still failing: payload is not a valid event"),
        "{stdout}"
    );
    assert!(stdout.contains("resolved 1, still failing 1"), "{stdout}");

    let rows: Vec<(u64, u32)> = db
        .query("SELECT user_id, seq FROM coupon ORDER BY CAST(user_id AS UNSIGNED)")
        .await;
    assert_eq!(rows, [(1, 1), (2, 2)]);
    let failed: Vec<(String, u32, bool)> =
        db.query("SELECT CAST(payload AS CHAR), attempts, resolved_at IS NOT NULL FROM failed_event ORDER BY id").await;
    assert_eq!(failed.len(), 2);
    assert!(
        failed
            .iter()
            .any(|(p, attempts, resolved)| p.contains(r#""userId":"1""#)
                && *attempts == 1
                && *resolved)
    );
    assert!(
        failed
            .iter()
            .any(|(p, attempts, resolved)| p == "{broken" && *attempts == 2 && !*resolved)
    );

    // Nothing left to do: a second replay resolves nothing and says so.
    let again = Command::new(env!("CARGO_BIN_EXE_coupon-sink"))
        .arg("replay")
        .env("DATABASE_URL", db.url())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("1 unresolved failed event(s)"));
}
