//! Campaign management: creation, updates and their limits, windows by Redis time, status,
//! the registry, and a released slot offered again.

mod support;

use std::num::NonZeroU32;
use std::time::{Duration, Instant, SystemTime};

use coupon_gate::{Campaign, CampaignId, CampaignState, Create, Outcome, Release, UserId};
use support::{Scratch, ScratchGate, campaign, redis_url, user};

fn quota(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

#[tokio::test]
async fn create_is_idempotent_and_refuses_a_quota_below_issued() {
    let scratch = Scratch::new(&redis_url());
    let gate = scratch.gate().await;
    let id = campaign("manage");
    assert_eq!(
        gate.create(&Campaign::new(id.clone(), quota(3)))
            .await
            .unwrap(),
        Create::Created
    );
    assert_eq!(
        gate.create(&Campaign::new(id.clone(), quota(3)))
            .await
            .unwrap(),
        Create::Unchanged
    );
    for u in 1..=3 {
        assert!(gate.apply(&id, &user(u)).await.unwrap().is_admitted());
    }
    assert_eq!(gate.apply(&id, &user(4)).await.unwrap(), Outcome::SoldOut);

    assert_eq!(
        gate.create(&Campaign::new(id.clone(), quota(5)))
            .await
            .unwrap(),
        Create::Updated
    );
    assert_eq!(
        gate.apply(&id, &user(4)).await.unwrap(),
        Outcome::Admitted { seq: 4 },
        "a raised quota opens slots"
    );
    assert_eq!(
        gate.create(&Campaign::new(id.clone(), quota(3)))
            .await
            .unwrap(),
        Create::QuotaBelowIssued { issued: 4 }
    );
    let status = gate.status(&id).await.unwrap().unwrap();
    assert_eq!(
        (status.quota, status.issued, status.remaining()),
        (5, 4, 1),
        "a refused update changes nothing"
    );
    assert_eq!(
        gate.create(&Campaign::new(id.clone(), quota(4)))
            .await
            .unwrap(),
        Create::Updated
    );
    assert_eq!(gate.apply(&id, &user(5)).await.unwrap(), Outcome::SoldOut);
}

#[tokio::test]
async fn status_admission_and_registry() {
    let scratch = Scratch::new(&redis_url());
    let gate = scratch.gate().await;
    let (a, b) = (campaign("first"), campaign("second"));
    assert_eq!(gate.status(&a).await.unwrap(), None);
    assert!(gate.campaigns().await.unwrap().is_empty());

    let opens = SystemTime::now() - Duration::from_secs(60);
    let closes = SystemTime::now() + Duration::from_secs(3600);
    let def = Campaign::new(a.clone(), quota(10))
        .with_window(Some(opens), Some(closes))
        .unwrap();
    gate.create(&def).await.unwrap();
    gate.create(&Campaign::new(b.clone(), quota(1)))
        .await
        .unwrap();
    assert_eq!(gate.campaigns().await.unwrap(), [a.clone(), b.clone()]);

    gate.apply(&a, &user(77)).await.unwrap();
    let status = gate.status(&a).await.unwrap().unwrap();
    assert_eq!(
        (status.quota, status.issued, status.remaining()),
        (10, 1, 9)
    );
    assert_eq!(
        (status.opens_at, status.closes_at),
        (def.opens_at(), def.closes_at())
    );
    assert_eq!(gate.admission(&a, &user(77)).await.unwrap(), Some(1));
    assert_eq!(gate.admission(&a, &user(78)).await.unwrap(), None);
    assert_eq!(
        gate.admission(&b, &user(77)).await.unwrap(),
        None,
        "campaigns are separate"
    );
}

#[tokio::test]
async fn the_window_is_judged_by_redis_time() {
    let scratch = Scratch::new(&redis_url());
    let gate = scratch.gate().await;
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let create = |id: &CampaignId, opens, closes| {
        Campaign::new(id.clone(), quota(5))
            .with_window(opens, closes)
            .unwrap()
    };

    let later = campaign("later");
    gate.create(&create(&later, Some(now + hour), None))
        .await
        .unwrap();
    assert_eq!(
        gate.apply(&later, &user(1)).await.unwrap(),
        Outcome::NotOpen
    );

    let over = campaign("over");
    gate.create(&create(&over, None, Some(now - hour)))
        .await
        .unwrap();
    assert_eq!(gate.apply(&over, &user(1)).await.unwrap(), Outcome::Closed);
    assert_eq!(gate.status(&over).await.unwrap().unwrap().issued, 0);

    // Opens two seconds from now: refused first, admitted once Redis's clock passes it.
    let soon = campaign("soon");
    gate.create(&create(
        &soon,
        Some(now + Duration::from_secs(2)),
        Some(now + hour),
    ))
    .await
    .unwrap();
    assert_eq!(gate.apply(&soon, &user(1)).await.unwrap(), Outcome::NotOpen);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match gate.apply(&soon, &user(1)).await.unwrap() {
            Outcome::NotOpen if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            outcome => {
                assert_eq!(outcome, Outcome::Admitted { seq: 1 });
                break;
            }
        }
    }
}

#[tokio::test]
async fn a_released_slot_is_offered_again() {
    let scratch = Scratch::new(&redis_url());
    let gate = scratch.gate().await;
    let id = campaign("compensate");
    gate.create(&Campaign::new(id.clone(), quota(2)))
        .await
        .unwrap();
    assert_eq!(
        gate.apply(&id, &user(1)).await.unwrap(),
        Outcome::Admitted { seq: 1 }
    );
    assert_eq!(
        gate.apply(&id, &user(2)).await.unwrap(),
        Outcome::Admitted { seq: 2 }
    );
    assert_eq!(gate.apply(&id, &user(3)).await.unwrap(), Outcome::SoldOut);

    assert_eq!(
        gate.release(&id, &user(1)).await.unwrap(),
        Release::Released { seq: 1 }
    );
    assert_eq!(
        gate.release(&id, &user(1)).await.unwrap(),
        Release::NotAdmitted,
        "release is idempotent"
    );
    assert_eq!(
        gate.apply(&id, &user(3)).await.unwrap(),
        Outcome::Admitted { seq: 1 },
        "the freed slot is reused"
    );
    assert_eq!(gate.apply(&id, &user(1)).await.unwrap(), Outcome::SoldOut);
    assert_eq!(
        gate.release(&campaign("nope"), &user(1)).await.unwrap(),
        Release::UnknownCampaign
    );
}

/// The scripts find a user's bucket with `bucket_of` (prelude.lua); `Gate::admission` and
/// `Recovery::restore` with `Keys::user_bucket`. If the two rules disagreed, an admitted user
/// would look unadmitted to a lookup, and a restored holder could apply again.
#[tokio::test]
async fn lua_and_rust_find_a_user_in_the_same_bucket() {
    let scratch = Scratch::new(&redis_url());
    let gate = scratch.gate().await;
    // Quotas giving 0, 1, 2 and 5 bucket digits; numeric ids shorter, as long as and longer than
    // them (last digits), and string ids (hashed).
    let numbers = [
        1,
        7,
        42,
        99,
        100,
        12_345,
        10_007,
        9_000_000_001,
        i64::MAX as u64,
    ];
    let strings = [
        "auth0|5f3a9c",
        "a",
        "someone@example.com",
        "urn:user:7",
        "550e8400-e29b-41d4-a716-446655440000",
        &"z".repeat(64),
    ];
    let users: Vec<UserId> = numbers
        .into_iter()
        .map(|u| UserId::from_number(u).unwrap())
        .chain(strings.into_iter().map(|u| UserId::new(u).unwrap()))
        .collect();
    for quota in [100, 1_000, 10_000, 10_000_000] {
        let id = campaign(&format!("buckets-{quota}"));
        gate.create(&Campaign::new(id.clone(), self::quota(quota)))
            .await
            .unwrap();
        for u in &users {
            let Outcome::Admitted { seq } = gate.apply(&id, u).await.unwrap() else {
                panic!("user {u} of quota {quota} not admitted");
            };
            assert_eq!(
                gate.admission(&id, u).await.unwrap(),
                Some(seq),
                "the lookup finds user {u} where admit.lua put it (quota {quota})"
            );
        }
        // Restored holders are where the script looks: applying again is a duplicate.
        let recovery = gate.recovery();
        let holders = recovery.holders(&id).await.unwrap();
        assert_eq!(holders.len(), users.len());
        let state =
            CampaignState::new(Campaign::new(id.clone(), self::quota(quota)), holders).unwrap();
        recovery.restore(&state).await.unwrap();
        for u in &users {
            assert!(
                matches!(gate.apply(&id, u).await.unwrap(), Outcome::Duplicate { .. }),
                "user {u} of quota {quota} is a holder after the restore"
            );
        }
    }
}
