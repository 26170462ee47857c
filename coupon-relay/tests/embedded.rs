//! The relay as a service embeds it, with coupon-gate and nothing else: admissions made through
//! a gate reach the topic once each, in the one event form, and the outbox empties; the relay
//! says it runs while it does, and stops when asked. The same with produce requests so small
//! (`batch.size`) that each round is handed to the producer in many parts.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::Duration;

use coupon_gate::{Campaign, CampaignId, EventKind, Gate, Outcome, UserId};
use coupon_relay::{Event, Relay, RelayConfig};
use coupon_testkit::{Scratch, brokers, connect, eventually, read_topic, redis_url};
use tokio::sync::oneshot;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admissions_reach_the_topic_once_each_and_the_outbox_empties() {
    relays_each_admission_once(Vec::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_handed_over_in_many_parts_reaches_the_topic_once_each() {
    // About fifteen records per part: the 150 admissions of a round go in ten or more.
    relays_each_admission_once(vec![("batch.size".to_owned(), "2000".to_owned())]).await;
}

async fn relays_each_admission_once(kafka_properties: Vec<(String, String)>) {
    let scratch = Scratch::new(&redis_url());
    let gate = Gate::with_key_prefix(connect(&redis_url()).await, scratch.prefix.clone()).unwrap();
    let id = CampaignId::new("embedded").unwrap();
    gate.create(&Campaign::new(id.clone(), NonZeroU32::new(150).unwrap()))
        .await
        .unwrap();
    let users: Vec<UserId> = (1..=200)
        .map(|u| {
            // Numeric ids and opaque ones, as an identity provider gives them.
            if u % 2 == 0 {
                UserId::from_number(u).unwrap()
            } else {
                UserId::new(format!("auth0|{u:x}")).unwrap()
            }
        })
        .collect();
    let mut admitted = BTreeMap::new();
    for chunk in users.chunks(40) {
        let outcomes = gate.apply_many(&id, chunk).await.unwrap();
        for (user, outcome) in chunk.iter().zip(outcomes) {
            if let Outcome::Admitted { seq } = outcome {
                admitted.insert(user.clone(), seq);
            }
        }
    }
    assert_eq!(admitted.len(), 150);

    let config = RelayConfig {
        brokers: brokers(),
        topic: format!("relay_{}", scratch.prefix.replace('-', "_")),
        consumer: "embedded".to_owned(),
        kafka_properties,
        ..RelayConfig::default()
    };
    let topic = config.topic.clone();
    let relay = Relay::new(&gate, config).unwrap();
    relay.ensure_topic().await.unwrap();
    let running = relay.running();
    assert!(!running.get(), "not running before run");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(relay.run(async {
        let _ = stopped.await;
    }));
    eventually(Duration::from_secs(10), "the relay to run", || async {
        running.get()
    })
    .await;

    let messages = read_topic(&brokers(), &topic, admitted.len(), Duration::from_secs(60)).await;
    let mut seen = BTreeMap::new();
    for (key, payload) in &messages {
        let event = Event::decode(payload).unwrap();
        assert_eq!(
            (key.as_str(), event.kind),
            (event.key().as_str(), EventKind::Admitted)
        );
        assert_eq!(event.campaign, id);
        assert!(
            seen.insert(event.user.clone(), event.seq).is_none(),
            "user {} relayed twice",
            event.user
        );
    }
    assert_eq!(seen, admitted);
    eventually(Duration::from_secs(10), "the outbox to empty", || async {
        gate.outbox().len(&id).await.unwrap() == 0
    })
    .await;

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the relay stops when asked")
        .unwrap();
    assert!(!running.get(), "not running after it stopped");
}
