//! Bad tokens cost their sender: an address that sends tokens refused after verifying spends its
//! budget (`COUPON_BAD_TOKEN_RATE`, `COUPON_BAD_TOKEN_BURST`), and from then on its token-bearing
//! requests are answered 429 before any signature is checked, while another address applying
//! with valid tokens is answered as before. A test binary of its own: it reads the process's
//! verification counters, which no other test may move.

mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use coupon_http::{Config, Identity, JwtConfig, JwtKey};
use futures_util::StreamExt;
use hyper::{Method, StatusCode};
use support::{TestApp, call_from, config, forged, key_file, rs256_token as token};

const ATTACKER: [u8; 4] = [127, 0, 0, 2];
const USER: [u8; 4] = [127, 0, 0, 3];
/// Forged tokens the attacker sends, [`CONCURRENCY`] at a time.
const FLOOD: usize = 1_500;
const CONCURRENCY: usize = 16;

/// `coupon_token_verifications_total{result}` as the app's `/metrics` says.
async fn verifications(app: &TestApp, result: &str) -> u64 {
    let (code, text) = app.call(Method::GET, "/metrics", &[], "").await;
    assert_eq!(code, StatusCode::OK);
    let series = format!("coupon_token_verifications_total{{result=\"{result}\"}} ");
    text.as_str()
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .unwrap_or_else(|| panic!("no {series} in the metrics"))
        .trim()
        .parse()
        .unwrap()
}

async fn apply_from(app: &TestApp, from: [u8; 4], token: &str) -> (StatusCode, Option<String>) {
    let auth = format!("Bearer {token}");
    let answer = call_from(
        Some(IpAddr::from(from)),
        app.addr,
        Method::POST,
        "/api/coupons/apply",
        &[("authorization", auth.as_str())],
        "",
    )
    .await;
    let retry_after = answer
        .headers
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (answer.status, retry_after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_forged_tokens_is_refused_before_verifying_and_spares_other_addresses() {
    let budget = Config::default()
        .bad_token_limit()
        .expect("a bad-token budget by default");
    let app = TestApp::start(Config {
        identity: Identity::Jwt,
        jwt: JwtConfig {
            key: Some(JwtKey::PublicKey(key_file("rsa-public.pem"))),
            ..JwtConfig::default()
        },
        default_quota: support::quota(100_000),
        ..config()
    })
    .await;
    let forged_token = forged(&token(1));
    let started = Instant::now();
    let flood = futures_util::stream::iter(0..FLOOD)
        .map(|_| apply_from(&app, ATTACKER, &forged_token))
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>();
    let users = async {
        let mut answers = Vec::new();
        for user in 1..=200 {
            let started = Instant::now();
            let (code, _) = apply_from(&app, USER, &token(user)).await;
            answers.push((code, started.elapsed()));
        }
        answers
    };
    let (flood, users) = tokio::join!(flood, users);
    let took = started.elapsed();

    // The attacker: 401 while its budget lasted, 429 with Retry-After after.
    let rate_limited = flood
        .iter()
        .filter(|(code, _)| *code == StatusCode::TOO_MANY_REQUESTS)
        .count();
    for (code, retry_after) in &flood {
        match *code {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::TOO_MANY_REQUESTS => assert!(retry_after.is_some()),
            other => panic!("the attacker was answered {other}"),
        }
    }
    // The other address: every valid token verified and admitted.
    assert!(
        users.iter().all(|(code, _)| *code == StatusCode::OK),
        "{users:?}"
    );
    let invalid = verifications(&app, "invalid").await;
    let skipped = verifications(&app, "skipped").await;
    let valid = verifications(&app, "valid").await;
    let slowest = users.iter().map(|(_, took)| *took).max().unwrap();
    println!(
        "{FLOOD} forged tokens in {took:?}: invalid={invalid} skipped={skipped}; 200 valid tokens \
         from another address: valid={valid}, slowest answer {slowest:?}"
    );
    assert_eq!(valid, 200);
    assert_eq!(invalid + skipped, FLOOD as u64);
    assert_eq!(skipped, rate_limited as u64);
    // The budget, the requests in flight when it ran out, and one refill per interval of the
    // time taken (see src/limits/mod.rs).
    let allowed = u64::from(budget.burst.get())
        + CONCURRENCY as u64
        + u64::from(budget.per_second.get()) * (took.as_secs() + 1);
    assert!(
        invalid <= allowed,
        "{invalid} verifications, {allowed} allowed"
    );
    assert!(
        skipped > invalid,
        "mostly skipped: {skipped} against {invalid}"
    );

    // Once the budget refills, a valid token from the attacker's address is verified again.
    let valid_token = token(999_999);
    support::eventually(Duration::from_secs(10), "the budget to refill", || async {
        apply_from(&app, ATTACKER, &valid_token).await.0 == StatusCode::OK
    })
    .await;
}
