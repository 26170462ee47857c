//! The seed's tests, end to end: real HTTP into the `coupon-http` binary, Redis, the relay, the
//! Kafka-API broker, the `coupon-sink` binary and MariaDB. Each test has a campaign, key prefix,
//! topic and database of its own, so they run in any order and again. Each runs twice: with a
//! bearer token per user (jwt mode, as in production), and with the user in the body (body
//! mode, the seed's API). And what the front door refuses changes neither store.

mod support;

use std::collections::BTreeSet;

use coupon_bench::check;
use coupon_bench::sale::{self, Answer, Crowd, Identity, Signer, Target};
use indicatif::ProgressBar;
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

/// What the front door refuses reaches neither Redis nor MySQL: a crowd whose tokens another key
/// signed is answered 401, one user's burst past the per-user limit 429, and afterwards both
/// stores hold exactly what the accepted requests made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_reach_neither_redis_nor_mysql() {
    let pipeline = Pipeline::start_with(Setup {
        user_rate: 5,
        ..Setup::default()
    })
    .await;
    let campaign = pipeline.campaign("refusals", 100).await;
    let honest = pipeline.fire(0, &campaign, (1..=10).collect(), 8).await;
    assert_eq!(honest.count("success"), 10, "{:?}", honest.answers);
    let stored_before = pipeline.wait_for_rows(&campaign, 10).await;
    let redis_before = pipeline.scratch.snapshot().await;

    let forger = Target::local(pipeline.http[0].addr, &campaign).with_identity(Identity::Token(
        Box::new(Signer::hs256(b"another key of more than thirty-two bytes")),
    ));
    let forged = sale::run(&forger, (11..=500).collect(), 32, &ProgressBar::hidden()).await;
    let unauthenticated = Answer {
        code: 401,
        status: "error".to_owned(),
    };
    assert_eq!(
        forged.answers,
        [(unauthenticated, 490)].into(),
        "every forged token is refused"
    );

    // User 3 holds a coupon and clicks 300 times at once: a few duplicates, then the limit. The
    // limit (a burst of 10, then 5 a second) lets through at most its burst and what refilled
    // while the clicks were sent, timed by the test's clock, however slow the machine.
    let started = std::time::Instant::now();
    let burst = pipeline.fire(0, &campaign, vec![3; 300], 16).await;
    let took = started.elapsed();
    assert_eq!(
        burst.count("duplicate") + burst.count("rate_limited"),
        300,
        "{:?}",
        burst.answers
    );
    let allowed = 10 + (took.as_secs_f64() * 5.0).floor() as u64;
    assert!(
        burst.count("duplicate") <= allowed,
        "{} passed the limit in {took:?}, at most {allowed} may: {:?}",
        burst.count("duplicate"),
        burst.answers
    );

    assert_eq!(pipeline.scratch.snapshot().await, redis_before);
    let stored_after = pipeline.wait_for_rows(&campaign, 10).await;
    assert_eq!(stored_after.users, stored_before.users);
    assert_eq!(stored_after.seqs, stored_before.seqs);
    assert_eq!(pipeline.rows(&campaign).await, 10);
}
