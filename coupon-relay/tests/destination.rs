//! One key prefix, one topic: the first relay on a prefix binds its outboxes to its topic (and
//! its broker's cluster id); a relay of another topic on the same prefix delivers nothing and
//! does not run, until an operator moves the binding, after which the first relay stops and the
//! second delivers what is left. On the machine's Redis and broker.

use std::num::NonZeroU32;
use std::time::Duration;

use coupon_gate::{Campaign, CampaignId, Destination, Gate, UserId};
use coupon_relay::{Relay, RelayConfig};
use coupon_testkit::{Scratch, brokers, connect, eventually, redis_url, topic_records};
use tokio::sync::oneshot;

struct Running {
    running: coupon_relay::Running,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(gate: &Gate<redis::aio::MultiplexedConnection>, topic: &str, name: &str) -> Running {
    let config = RelayConfig {
        brokers: brokers(),
        topic: topic.to_owned(),
        consumer: name.to_owned(),
        ..RelayConfig::default()
    };
    let relay = Relay::new(gate, config).unwrap();
    relay.ensure_topic().await.unwrap();
    let running = relay.running();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(relay.run(async {
        let _ = stopped.await;
    }));
    Running {
        running,
        stop,
        task,
    }
}

async fn records(topic: &str) -> i64 {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || topic_records(&brokers(), &topic))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_of_another_topic_delivers_nothing_until_the_binding_is_moved() {
    let scratch = Scratch::new(&redis_url());
    let gate = Gate::with_key_prefix(connect(&redis_url()).await, scratch.prefix.clone()).unwrap();
    let outbox = gate.outbox();
    assert_eq!(outbox.destination().await.unwrap(), None);
    let stem = format!("bind_{}", scratch.prefix.replace('-', "_"));
    let (production, staging) = (format!("{stem}_production"), format!("{stem}_staging"));
    let id = CampaignId::new("bound").unwrap();
    gate.create(&Campaign::new(id.clone(), NonZeroU32::new(100).unwrap()))
        .await
        .unwrap();
    let users = |range: std::ops::Range<u64>| -> Vec<UserId> {
        range.map(|u| UserId::from_number(u).unwrap()).collect()
    };

    let first = start(&gate, &production, "production").await;
    eventually(
        Duration::from_secs(20),
        "the first relay to run",
        || async { first.running.get() },
    )
    .await;
    let bound = outbox
        .destination()
        .await
        .unwrap()
        .expect("bound by the first relay");
    assert_eq!(bound.topic, production);
    eprintln!("bound to {bound}");

    let second = start(&gate, &staging, "staging").await;
    gate.apply_many(&id, &users(1..41)).await.unwrap();
    eventually(
        Duration::from_secs(30),
        "40 records on production's topic",
        || async { records(&production).await == 40 },
    )
    .await;
    // The second relay had every chance to take a share: it has none, and does not run.
    assert!(
        !second.running.get(),
        "a relay bound elsewhere does not run"
    );
    assert_eq!(
        records(&staging).await,
        0,
        "nothing reached staging's topic"
    );

    // The operator moves the binding: the first relay stops within a second or so, the second
    // starts and delivers what comes next.
    let moved = outbox
        .move_destination(&Destination {
            topic: staging.clone(),
            cluster: None,
        })
        .await
        .unwrap();
    assert_eq!(moved.map(|d| d.topic), Some(production.clone()));
    eventually(Duration::from_secs(20), "the relays to swap", || async {
        second.running.get() && !first.running.get()
    })
    .await;
    gate.apply_many(&id, &users(41..61)).await.unwrap();
    eventually(
        Duration::from_secs(30),
        "20 records on staging's topic",
        || async { records(&staging).await == 20 },
    )
    .await;
    assert_eq!(
        records(&production).await,
        40,
        "nothing more reached production"
    );
    // The second relay filled in its cluster's id, where the broker tells one.
    let bound = outbox.destination().await.unwrap().unwrap();
    assert_eq!(bound.topic, staging);

    for relay in [first, second] {
        relay.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(30), relay.task)
            .await
            .expect("a relay stops when asked, bound or not")
            .unwrap();
    }
}
