//! Sold out, answered from memory: no Redis round trip once a campaign is known to be sold out,
//! and the memory gives way on every server as soon as a slot is released or the quota raised.
//! The memory's time to live is set to a minute here, so only the change messages can explain
//! a server changing its answer within the tests' deadlines.

mod support;

use std::time::Duration;

use coupon_http::Config;
use hyper::StatusCode;
use serde_json::{Value, json};
use support::{RedisServer, TestApp, config, connect, eventually};

fn options(redis_url: String) -> Config {
    Config {
        redis_url,
        sold_out_ttl: Duration::from_secs(60),
        ..config()
    }
}

/// Script calls the Redis at `redis_url` has run.
async fn script_calls(redis_url: &str) -> u64 {
    coupon_testkit::script_calls(&mut connect(redis_url).await).await
}

fn status(answer: &(StatusCode, Value)) -> (StatusCode, &str) {
    (answer.0, answer.1["status"].as_str().unwrap_or("?"))
}

/// Applies with new users until `app` answers sold out without a script call: it has
/// subscribed to changes and remembers the campaign.
async fn until_answered_locally(app: &TestApp, redis_url: &str, campaign: &str, user: &mut u64) {
    eventually(
        Duration::from_secs(10),
        "a sold-out answer without a script call",
        || {
            *user += 1;
            let u = *user;
            async move {
                let before = script_calls(redis_url).await;
                let answer = app.apply(Some(campaign), u).await;
                assert_eq!(status(&answer), (StatusCode::GONE, "sold_out"));
                script_calls(redis_url).await == before
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_known_sold_out_the_crowd_is_answered_without_redis() {
    // An own Redis, so that no other test's calls move the counter.
    let redis = RedisServer::start();
    let app = TestApp::start(options(redis.url())).await;
    app.create(json!({"id": "flash", "quota": 1})).await;
    assert_eq!(
        status(&app.apply(Some("flash"), 1).await),
        (StatusCode::OK, "success")
    );
    let mut user = 1;
    until_answered_locally(&app, &redis.url(), "flash", &mut user).await;

    let before = script_calls(&redis.url()).await;
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
        script_calls(&redis.url()).await,
        before,
        "no script call for 500 sold-out answers"
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
    let first = TestApp::start(options(redis.url())).await;
    let second = first.sibling(options(redis.url())).await;
    first.create(json!({"id": "flash", "quota": 1})).await;
    assert_eq!(
        status(&first.apply(Some("flash"), 1).await),
        (StatusCode::OK, "success")
    );
    let mut user = 1;
    until_answered_locally(&first, &redis.url(), "flash", &mut user).await;
    until_answered_locally(&second, &redis.url(), "flash", &mut user).await;

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
    until_answered_locally(&first, &redis.url(), "flash", &mut user).await;
    until_answered_locally(&second, &redis.url(), "flash", &mut user).await;

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
