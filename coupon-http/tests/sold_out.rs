//! Sold out, answered from memory: no Redis round trip once a campaign is known to be sold out,
//! and the memory gives way on every server as soon as a slot is released or the quota raised.
//! The memory's time to live is set to a minute here, so only the change messages can explain
//! a server changing its answer within the tests' deadlines.

mod support;

use std::time::Duration;

use hyper::StatusCode;
use serde_json::{Value, json};
use support::{
    RedisServer, TestApp, admissions_decided, eventually, remembering, status,
    until_answered_locally,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_known_sold_out_the_crowd_is_answered_without_redis() {
    // An own Redis, so that no other test's calls move the counter.
    let redis = RedisServer::start();
    let app = TestApp::start(remembering(redis.url())).await;
    app.create(json!({"id": "flash", "quota": 1})).await;
    assert_eq!(
        status(&app.apply(Some("flash"), 1).await),
        (StatusCode::OK, "success")
    );
    let mut user = 1;
    until_answered_locally(app.addr, &redis.url(), "flash", &mut user).await;

    let before = admissions_decided(&redis.url()).await;
    for u in 1000..1500 {
        let answer = app.apply(Some("flash"), u).await;
        assert_eq!(
            status(&answer),
            (StatusCode::GONE, "sold_out"),
            "{}",
            answer.1
        );
    }
    assert_eq!(
        admissions_decided(&redis.url()).await,
        before,
        "no admission script for 500 sold-out answers"
    );
    // Bad input is still refused as bad input.
    let (code, _) = app
        .call(
            hyper::Method::POST,
            "/api/campaigns/flash/apply",
            &[("content-type", "application/json")],
            r#"{"userId":0}"#,
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_slot_and_a_raised_quota_are_offered_again_on_every_server() {
    let redis = RedisServer::start();
    let first = TestApp::start(remembering(redis.url())).await;
    let second = first.sibling(remembering(redis.url())).await;
    first.create(json!({"id": "flash", "quota": 1})).await;
    assert_eq!(
        status(&first.apply(Some("flash"), 1).await),
        (StatusCode::OK, "success")
    );
    let mut user = 1;
    until_answered_locally(first.addr, &redis.url(), "flash", &mut user).await;
    until_answered_locally(second.addr, &redis.url(), "flash", &mut user).await;

    // Compensation on some other node: the second server offers the slot again.
    let id = coupon_gate::CampaignId::new("flash").unwrap();
    first
        .gate
        .release(&id, &coupon_gate::UserId::from_number(1).unwrap())
        .await
        .unwrap();
    eventually(
        Duration::from_secs(5),
        "the released slot offered by the second server",
        || {
            user += 1;
            let (app, u) = (&second, user);
            async move { app.apply(Some("flash"), u).await.0 == StatusCode::OK }
        },
    )
    .await;
    until_answered_locally(first.addr, &redis.url(), "flash", &mut user).await;
    until_answered_locally(second.addr, &redis.url(), "flash", &mut user).await;

    // The quota raised through the second server: the first offers the new slot.
    assert_eq!(
        second.create(json!({"id": "flash", "quota": 2})).await.0,
        StatusCode::OK
    );
    eventually(
        Duration::from_secs(5),
        "the new slot offered by the first server",
        || {
            user += 1;
            let (app, u) = (&first, user);
            async move { app.apply(Some("flash"), u).await.0 == StatusCode::OK }
        },
    )
    .await;
    for app in [&first, &second] {
        assert_eq!(
            status(&app.apply(Some("flash"), 9999).await),
            (StatusCode::GONE, "sold_out")
        );
    }
}

/// Answers from `app` to users 1..=`users` of `campaign`: each holder of `seqs` is told
/// `duplicate` with their seq, everyone else `sold_out`.
async fn holders_told_duplicate(
    app: &TestApp,
    campaign: &str,
    users: u64,
    seqs: &std::collections::BTreeMap<u64, Value>,
) {
    for u in 1..=users {
        let (code, answer) = app.apply(Some(campaign), u).await;
        match seqs.get(&u) {
            Some(seq) => assert_eq!(
                (code, &answer["status"], &answer["seq"]),
                (StatusCode::CONFLICT, &json!("duplicate"), seq),
                "holder {u}"
            ),
            None => assert_eq!(
                (code, &answer["status"]),
                (StatusCode::GONE, &json!("sold_out")),
                "user {u}"
            ),
        }
    }
}

/// After sell-out, holders applying again through the server that admitted them and through
/// another are told `duplicate` with their seq, and everyone else `sold_out`, all from memory
/// (no script call, no write to Redis); after a release, the new holder is told `duplicate`
/// and the old one `sold_out`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_hear_duplicate_with_their_seq_after_sell_out() {
    let redis = RedisServer::start();
    let first = TestApp::start(remembering(redis.url())).await;
    let second = first.sibling(remembering(redis.url())).await;
    first.create(json!({"id": "flash", "quota": 20})).await;
    let mut seqs = std::collections::BTreeMap::new();
    for u in 1..=80 {
        let (code, answer) = first.apply(Some("flash"), u).await;
        if code == StatusCode::OK {
            seqs.insert(u, answer["seq"].clone());
        }
    }
    assert_eq!(seqs.len(), 20);
    let mut user = 1000;
    until_answered_locally(first.addr, &redis.url(), "flash", &mut user).await;
    until_answered_locally(second.addr, &redis.url(), "flash", &mut user).await;
    first.drained("flash").await;
    let before = first.snapshot().await;
    let decided = admissions_decided(&redis.url()).await;
    for app in [&first, &second] {
        holders_told_duplicate(app, "flash", 80, &seqs).await;
    }
    assert_eq!(
        admissions_decided(&redis.url()).await,
        decided,
        "no admission script"
    );
    assert_eq!(first.snapshot().await, before, "nothing written to redis");

    // A holder gives the coupon back; a new user takes the slot through the second server.
    let id = coupon_gate::CampaignId::new("flash").unwrap();
    let released = *seqs.keys().next().unwrap();
    let seq = seqs.remove(&released).unwrap();
    first
        .gate
        .release(&id, &coupon_gate::UserId::from_number(released).unwrap())
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "the released slot taken", || {
        user += 1;
        let (app, u) = (&second, user);
        async move { app.apply(Some("flash"), u).await.0 == StatusCode::OK }
    })
    .await;
    let taker = user;
    let mut probe = 2000;
    until_answered_locally(first.addr, &redis.url(), "flash", &mut probe).await;
    until_answered_locally(second.addr, &redis.url(), "flash", &mut probe).await;
    for app in [&first, &second] {
        let (code, answer) = app.apply(Some("flash"), taker).await;
        assert_eq!(
            (code, &answer["status"], &answer["seq"]),
            (StatusCode::CONFLICT, &json!("duplicate"), &seq)
        );
        holders_told_duplicate(app, "flash", 80, &seqs).await;
    }
}
