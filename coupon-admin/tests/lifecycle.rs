//! `coupon-admin list`, `release` and `close`, run as the real binary against the machine's
//! Redis under a key prefix of the test's own: what each prints, how it exits, and what it
//! changed in Redis.

use std::num::NonZeroU32;
use std::process::{Command, Output};

use coupon_gate::{Campaign, CampaignId, Gate, Outcome, UserId};
use coupon_testkit::{Scratch, ScratchDb, connect, redis_url};

fn admin(scratch: &Scratch, args: &[&str]) -> (Option<i32>, String) {
    admin_on(scratch, None, args)
}

/// `coupon-admin` with `args` on the scratch prefix, and on `db` when given (else no database
/// is named: the commands of Redis alone).
fn admin_on(scratch: &Scratch, db: Option<&ScratchDb>, args: &[&str]) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_coupon-admin"));
    command
        .args(args)
        .env_clear()
        .env("REDIS_URL", redis_url())
        .env("COUPON_KEY_PREFIX", &scratch.prefix);
    if let Some(db) = db {
        command.env("DATABASE_URL", db.url());
    }
    let out: Output = command.output().expect("coupon-admin runs");
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

/// `archive` against a database the sink has not set up (no coupon rows): a closed campaign
/// nobody holds a coupon of is settled and archived; one whose holders MySQL does not hold is
/// refused with the counts; the tombstone then answers list, release, close, audit and rebuild.
#[tokio::test]
async fn archive_refuses_what_mysql_does_not_hold_and_leaves_a_tombstone() {
    let scratch = Scratch::new(&redis_url());
    let db = ScratchDb::new();
    let gate = Gate::with_key_prefix(connect(&redis_url()).await, scratch.prefix.clone()).unwrap();
    let quota = NonZeroU32::new(10).unwrap();
    let empty = CampaignId::new("empty").unwrap();
    let held = CampaignId::new("held").unwrap();
    for id in [&empty, &held] {
        gate.create(&Campaign::new(id.clone(), quota))
            .await
            .unwrap();
    }
    assert!(
        gate.apply(&held, &UserId::from_number(3).unwrap())
            .await
            .unwrap()
            .is_admitted()
    );
    let archive = |id: &str| admin_on(&scratch, Some(&db), &["archive", "--campaign", id]);

    let (code, text) = archive("empty");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("no end: close it first"), "{text}");
    admin(&scratch, &["close", "--campaign", "empty"]);
    admin(&scratch, &["close", "--campaign", "held"]);
    let (code, text) = archive("held");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("1 events are still in the outbox"), "{text}");
    let outbox = gate.outbox();
    let read = outbox.read(&held, "test", 10).await.unwrap();
    outbox.ack(&held, &read).await.unwrap();
    let (code, text) = archive("held");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("1 holders in Redis, 0 coupon rows, 1 holders without their row"),
        "{text}"
    );
    assert!(
        gate.status(&held).await.unwrap().is_some(),
        "nothing changed"
    );

    let (code, text) = archive("empty");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("campaign empty: archived at"), "{text}");
    let (code, text) = archive("empty");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("already archived"), "{text}");
    let (code, text) = archive("nobody");
    assert_eq!(code, Some(1), "{text}");

    let (_, text) = admin(&scratch, &["list"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("empty") && l.contains(" archived ")),
        "{text}"
    );
    let (code, text) = admin(&scratch, &["release", "--campaign", "empty", "--user", "3"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("is archived"), "{text}");
    assert_eq!(
        gate.apply(&empty, &UserId::from_number(4).unwrap())
            .await
            .unwrap(),
        Outcome::Archived
    );
    let with_db = |args: &[&str]| admin_on(&scratch, Some(&db), args);
    let (code, text) = with_db(&["audit", "--campaign", "empty", "--no-topic"]);
    assert_eq!(code, Some(0), "an archived campaign audits clean: {text}");
    assert!(text.contains("archived at"), "{text}");
    let (code, text) = with_db(&["rebuild", "--campaign", "empty", "--dry-run"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("pass --restore"), "{text}");
}
