//! The gate's channels: a campaign that may have stopped being sold out is announced, so that
//! servers answering `SoldOut` from memory can forget it; an outbox that receives work again is
//! announced, so that relays resting empty outboxes read it.

mod support;

use std::num::NonZeroU32;
use std::time::Duration;

use coupon_gate::{Campaign, Outcome, Release};
use support::{Scratch, ScratchGate, campaign, next_payload, redis_url, subscribe, user};

#[tokio::test]
async fn creation_quota_changes_and_releases_are_published_and_rejections_are_not() {
    let scratch = Scratch::new(&redis_url());
    let gate = scratch.gate().await;
    let mut messages = subscribe(&redis_url(), &gate.changes_channel()).await;
    let mut next = async || next_payload(&mut messages, Duration::from_secs(5)).await;

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

/// The outbox channel: a campaign's id is published when its outbox, empty until then, receives
/// an event, and not while it already holds some, so that a relay resting an empty outbox hears
/// of the next event and a busy outbox costs no messages.
#[tokio::test]
async fn an_outbox_that_receives_work_again_is_announced_once() {
    let scratch = Scratch::new(&redis_url());
    let gate = scratch.gate().await;
    let client = redis::Client::open(redis_url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    let channel = gate.outbox_channel();
    pubsub.subscribe(&channel).await.unwrap();
    let mut messages = pubsub.into_on_message();
    let mut publisher = client.get_multiplexed_async_connection().await.unwrap();
    // Messages arrive in the order they were published: a marker published after an action
    // arriving next shows that the action published nothing.
    let mut next = async |marker: bool| {
        if marker {
            let _: i64 = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg("marker")
                .query_async(&mut publisher)
                .await
                .unwrap();
        }
        next_payload(&mut messages, Duration::from_secs(5)).await
    };

    let id = campaign("flash");
    gate.create(&Campaign::new(id.clone(), NonZeroU32::new(3).unwrap()))
        .await
        .unwrap();
    assert_eq!(
        next(true).await,
        "marker",
        "a creation adds nothing to the outbox"
    );
    assert!(gate.apply(&id, &user(1)).await.unwrap().is_admitted());
    assert_eq!(next(false).await, "flash", "the first event");
    assert!(gate.apply(&id, &user(2)).await.unwrap().is_admitted());
    assert_eq!(
        next(true).await,
        "marker",
        "the outbox held an event already"
    );

    let outbox = gate.outbox();
    let records = outbox.read(&id, "relay", 10).await.unwrap();
    outbox.ack(&id, &records).await.unwrap();
    assert!(gate.apply(&id, &user(3)).await.unwrap().is_admitted());
    assert_eq!(
        next(false).await,
        "flash",
        "an event after the outbox drained"
    );
    assert_eq!(
        gate.release(&id, &user(3)).await.unwrap(),
        Release::Released { seq: 3 }
    );
    assert!(gate.apply(&id, &user(1)).await.unwrap() != Outcome::SoldOut);
    assert_eq!(
        next(true).await,
        "marker",
        "a release and a duplicate to a busy outbox"
    );

    let records = outbox.read(&id, "relay", 10).await.unwrap();
    outbox.ack(&id, &records).await.unwrap();
    assert_eq!(
        gate.release(&id, &user(2)).await.unwrap(),
        Release::Released { seq: 2 }
    );
    assert_eq!(next(false).await, "flash", "a release to an empty outbox");
}
