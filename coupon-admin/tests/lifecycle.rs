//! `coupon-admin list`, `release` and `close`, run as the real binary against the machine's
//! Redis under a key prefix of the test's own: what each prints, how it exits, and what it
//! changed in Redis.

use std::num::NonZeroU32;
use std::process::{Command, Output};

use coupon_gate::{Campaign, CampaignId, Gate, Outcome, UserId};
use coupon_testkit::{Scratch, connect, redis_url};

fn admin(scratch: &Scratch, args: &[&str]) -> (Option<i32>, String) {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_coupon-admin"))
        .args(args)
        .env_clear()
        .env("REDIS_URL", redis_url())
        .env("COUPON_KEY_PREFIX", &scratch.prefix)
        .output()
        .expect("coupon-admin runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[tokio::test]
async fn list_release_and_close_act_on_redis_and_say_what_they_did() {
    let scratch = Scratch::new(&redis_url());
    let gate = Gate::with_key_prefix(connect(&redis_url()).await, scratch.prefix.clone()).unwrap();
    let id = CampaignId::new("refunds").unwrap();
    let user = |n: u64| UserId::from_number(n).unwrap();
    gate.create(&Campaign::new(id.clone(), NonZeroU32::new(1).unwrap()))
        .await
        .unwrap();
    gate.create(&Campaign::new(
        CampaignId::new("other").unwrap(),
        NonZeroU32::new(5).unwrap(),
    ))
    .await
    .unwrap();
    assert!(gate.apply(&id, &user(7)).await.unwrap().is_admitted());

    let (code, text) = admin(&scratch, &["list"]);
    assert_eq!(code, Some(0), "{text}");
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .filter(|l| !l.contains("campaigns under"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert_eq!(&rows[0][..4], ["other", "open", "5", "0"], "{text}");
    assert_eq!(&rows[1][..4], ["refunds", "sold_out", "1", "1"], "{text}");
    assert!(text.contains("2 campaigns under key prefix"), "{text}");

    let (code, text) = admin(
        &scratch,
        &["release", "--campaign", "refunds", "--user", "7"],
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("gave back seq 1"), "{text}");
    assert_eq!(gate.admission(&id, &user(7)).await.unwrap(), None);
    let (code, text) = admin(
        &scratch,
        &["release", "--campaign", "refunds", "--user", "7"],
    );
    assert_eq!(code, Some(1), "a second release changes nothing: {text}");
    assert!(text.contains("holds no coupon"), "{text}");
    let (code, text) = admin(
        &scratch,
        &["release", "--campaign", "refunds", "--user", "0"],
    );
    assert_eq!(code, Some(2), "bad input is refused by clap: {text}");

    let (code, text) = admin(&scratch, &["close", "--campaign", "refunds"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("closed at"), "{text}");
    assert_eq!(gate.apply(&id, &user(8)).await.unwrap(), Outcome::Closed);
    let (code, text) = admin(&scratch, &["close", "--campaign", "refunds"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("had already closed"), "{text}");
    let (code, text) = admin(&scratch, &["close", "--campaign", "nobody"]);
    assert_eq!(code, Some(1), "{text}");

    let (_, text) = admin(&scratch, &["list"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("refunds") && l.contains(" closed ")),
        "{text}"
    );
}
