//! The seed's tests, end to end: real HTTP into the `coupon-http` binary, Redis, the relay, the
//! Kafka-API broker, the `coupon-sink` binary and MariaDB. Each test has a campaign, key prefix,
//! topic and database of its own, so they run in any order and again. Each runs twice: with a
//! bearer token per user (jwt mode, as in production), and with the user in the body (body
//! mode, the seed's API).

mod support;

use std::collections::BTreeSet;

use coupon_bench::check;
use coupon_bench::sale::Crowd;
use support::{Mode, Pipeline, Setup};

/// A pipeline of `servers` coupon-http processes in `mode`.
async fn pipeline(servers: usize, mode: Mode) -> Pipeline {
    Pipeline::start_with(Setup {
        servers,
        mode,
        ..Setup::default()
    })
    .await
}

/// 한번만응모: one apply gives one coupon row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn 한번만응모() {
    once_in(Mode::Jwt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn 한번만응모_body_mode() {
    once_in(Mode::Body).await;
}

async fn once_in(mode: Mode) {
    let pipeline = pipeline(1, mode).await;
    let campaign = pipeline.campaign("once", 100).await;

    let tally = pipeline.fire(0, &campaign, vec![1], 1).await;

    assert_eq!(tally.count("success"), 1, "{:?}", tally.answers);
    let stored = pipeline.wait_for_rows(&campaign, 1).await;
    assert_eq!(stored.users, [1]);
    assert_eq!(stored.seqs, [1]);
    let verdict = check::verdict(100, 1, &tally, &stored);
    assert!(verdict.passed(), "{verdict}");
}

/// 여러명응모: 1000 distinct users at once on a quota of 100 get exactly 100 coupons, seqs 1 to
/// 100, and 900 sold-out answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn 여러명응모() {
    crowd_in(Mode::Jwt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn 여러명응모_body_mode() {
    crowd_in(Mode::Body).await;
}

async fn crowd_in(mode: Mode) {
    let pipeline = pipeline(1, mode).await;
    let campaign = pipeline.campaign("crowd", 100).await;
    let crowd = Crowd {
        seed: 1,
        ..Crowd::once_each(1000)
    };

    let tally = pipeline.fire(0, &campaign, crowd.clicks(), 64).await;

    assert_eq!(tally.count("success"), 100, "{:?}", tally.answers);
    assert_eq!(tally.count("sold_out"), 900, "{:?}", tally.answers);
    let stored = pipeline.wait_for_rows(&campaign, 100).await;
    assert_eq!(stored.seqs, (1..=100).collect::<Vec<_>>());
    let verdict = check::verdict(100, 1000, &tally, &stored);
    assert!(verdict.passed(), "{verdict}");
}

/// 한명당_한개의_쿠폰발급: one user applying 1000 times at once gets one coupon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn 한명당_한개의_쿠폰발급() {
    one_user_in(Mode::Jwt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn 한명당_한개의_쿠폰발급_body_mode() {
    one_user_in(Mode::Body).await;
}

async fn one_user_in(mode: Mode) {
    let pipeline = pipeline(1, mode).await;
    let campaign = pipeline.campaign("one-user", 100).await;

    let tally = pipeline.fire(0, &campaign, vec![7; 1000], 64).await;

    assert_eq!(tally.count("success"), 1, "{:?}", tally.answers);
    assert_eq!(tally.count("duplicate"), 999, "{:?}", tally.answers);
    let stored = pipeline.wait_for_rows(&campaign, 1).await;
    assert_eq!(stored.users, [7]);
    let verdict = check::verdict(100, 1, &tally, &stored);
    assert!(verdict.passed(), "{verdict}");
}

/// The same race across two coupon-http processes sharing one campaign: every user applies to
/// both at once, and still exactly the quota is issued, one coupon per user, each in MySQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_campaign() {
    two_servers_in(Mode::Jwt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_campaign_body_mode() {
    two_servers_in(Mode::Body).await;
}

async fn two_servers_in(mode: Mode) {
    let pipeline = pipeline(2, mode).await;
    let campaign = pipeline.campaign("shared", 100).await;
    let clicks = Crowd {
        seed: 2,
        ..Crowd::once_each(1000)
    }
    .clicks();

    let (mut tally, other) = tokio::join!(
        pipeline.fire(0, &campaign, clicks.clone(), 32),
        pipeline.fire(1, &campaign, clicks, 32),
    );
    tally.merge(other);

    let winners: BTreeSet<_> = tally.winners.iter().collect();
    assert_eq!(tally.winners.len(), 100, "{:?}", tally.answers);
    assert_eq!(winners.len(), 100, "no user told success twice");
    assert_eq!(tally.count("sold_out") + tally.count("duplicate"), 1900);
    let stored = pipeline.wait_for_rows(&campaign, 100).await;
    let verdict = check::verdict(100, 1000, &tally, &stored);
    assert!(verdict.passed(), "{verdict}");
}
