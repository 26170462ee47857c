//! The changes channel: a campaign that may have stopped being sold out is announced, so that
//! servers answering `SoldOut` from memory can forget it.

mod support;

use std::num::NonZeroU32;
use std::time::Duration;

use coupon_gate::{Campaign, Outcome, Release};
use futures_util::StreamExt;
use support::{Scratch, ScratchGate, campaign, redis_url, user};

#[tokio::test]
async fn creation_quota_changes_and_releases_are_published_and_rejections_are_not() {
    let scratch = Scratch::new(&redis_url());
    let gate = scratch.gate().await;
    let mut pubsub = redis::Client::open(redis_url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub.subscribe(gate.changes_channel()).await.unwrap();
    let mut messages = pubsub.into_on_message();
    let mut next = async || {
        let msg = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .expect("a message within 5 s")
            .expect("the subscription is open");
        msg.get_payload::<String>().unwrap()
    };

    let id = campaign("flash");
    let one = NonZeroU32::new(1).unwrap();
    gate.create(&Campaign::new(id.clone(), one)).await.unwrap();
    assert_eq!(next().await, "flash", "creation");
    assert!(gate.apply(&id, &user(1)).await.unwrap().is_admitted());
    assert_eq!(gate.apply(&id, &user(2)).await.unwrap(), Outcome::SoldOut);
    gate.create(&Campaign::new(id.clone(), one)).await.unwrap(); // unchanged: not published
    assert_eq!(
        gate.release(&id, &user(1)).await.unwrap(),
        Release::Released { seq: 1 }
    );
    assert_eq!(
        next().await,
        "flash",
        "release (the admission, the sold-out answer and the unchanged definition published nothing)"
    );
    gate.create(&Campaign::new(id.clone(), NonZeroU32::new(2).unwrap()))
        .await
        .unwrap();
    assert_eq!(next().await, "flash", "quota raised");
}
