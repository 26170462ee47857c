//! A relay whose round outlasts `claim_idle` because the broker is slow keeps the entries it
//! delivers: a second relay with the same short `claim_idle` does not take them over, and every
//! admission reaches the topic once, not twice.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use coupon_gate::{Campaign, CampaignId, Gate, OUTBOX_GROUP, Outcome, UserId};
use coupon_relay::{Relay, RelayConfig};
use coupon_testkit::{Broker, Scratch, connect, eventually, redis_url, topic_records};
use tokio::sync::oneshot;

const ADMISSIONS: u64 = 300;
const CLAIM_IDLE: Duration = Duration::from_secs(1);

/// The outbox's pending entries: (entry id, consumer, milliseconds idle).
async fn pending(
    conn: &mut redis::aio::MultiplexedConnection,
    outbox: &str,
) -> Vec<(String, String, u64)> {
    let entries: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(outbox)
        .arg(OUTBOX_GROUP)
        .arg("-")
        .arg("+")
        .arg(10_000)
        .query_async(conn)
        .await
        .expect("XPENDING of the outbox");
    entries
        .into_iter()
        .map(|(id, consumer, idle, _deliveries)| (id, consumer, idle))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_round_is_held_by_its_relay_not_taken_over() {
    let broker = Broker::start().await;
    let scratch = Scratch::new(&redis_url());
    let gate = Gate::with_key_prefix(connect(&redis_url()).await, scratch.prefix.clone()).unwrap();
    let id = CampaignId::new("slow-broker").unwrap();
    let quota = NonZeroU32::new(u32::try_from(ADMISSIONS).unwrap()).unwrap();
    gate.create(&Campaign::new(id.clone(), quota))
        .await
        .unwrap();
    let users: Vec<UserId> = (1..=ADMISSIONS)
        .map(|u| UserId::from_number(u).unwrap())
        .collect();
    // Several script calls, so several outbox entries.
    for chunk in users.chunks(20) {
        for outcome in gate.apply_many(&id, chunk).await.unwrap() {
            assert!(matches!(outcome, Outcome::Admitted { .. }), "{outcome:?}");
        }
    }
    let outbox = format!("{}:{{slow-broker}}:outbox", scratch.prefix);
    let conn = connect(&redis_url()).await;

    let topic = format!("slow_{}", scratch.prefix.replace('-', "_"));
    let config = |consumer: &str| RelayConfig {
        brokers: broker.brokers(),
        topic: topic.clone(),
        consumer: consumer.to_owned(),
        claim_idle: CLAIM_IDLE,
        ..RelayConfig::default()
    };
    let first = Relay::new(&gate, config("first")).unwrap();
    first.ensure_topic().await.unwrap();

    // The broker stops answering; the first relay reads every entry and waits on the broker.
    broker.pause();
    let (stop_first, first_stopped) = oneshot::channel::<()>();
    let first = tokio::spawn(first.run(async {
        let _ = first_stopped.await;
    }));
    let entries = gate.outbox().len(&id).await.unwrap();
    assert!(entries > 1, "{entries} outbox entries");
    eventually(
        Duration::from_secs(10),
        "the first relay to read every entry",
        || async {
            let pending = pending(&mut conn.clone(), &outbox).await;
            pending.len() as u64 == entries && pending.iter().all(|(_, c, _)| c == "first")
        },
    )
    .await;
    let read_at = Instant::now();

    // A second relay, which takes over entries idle for CLAIM_IDLE, runs beside it for several
    // CLAIM_IDLE: the entries stay the first relay's, and their idle time keeps starting again.
    let second = Relay::new(&gate, config("second")).unwrap();
    let second_running = second.running();
    let (stop_second, second_stopped) = oneshot::channel::<()>();
    let second = tokio::spawn(second.run(async {
        let _ = second_stopped.await;
    }));
    eventually(
        Duration::from_secs(30),
        "four claim_idle to pass with the second relay running",
        || async {
            let pending = pending(&mut conn.clone(), &outbox).await;
            assert_eq!(pending.len() as u64, entries, "entries pending");
            for (entry, consumer, idle) in &pending {
                assert_eq!(
                    consumer, "first",
                    "entry {entry} was taken from the relay delivering it"
                );
                assert!(
                    Duration::from_millis(*idle) < CLAIM_IDLE,
                    "entry {entry} idle for {idle} ms while its relay delivers it"
                );
            }
            second_running.get() && read_at.elapsed() >= 4 * CLAIM_IDLE
        },
    )
    .await;

    // The broker answers again: every admission reaches the topic once.
    broker.resume();
    eventually(Duration::from_secs(60), "the outbox to empty", || async {
        gate.outbox().len(&id).await.unwrap() == 0
    })
    .await;
    let brokers = broker.brokers();
    let topic_for_count = topic.clone();
    let records = tokio::task::spawn_blocking(move || topic_records(&brokers, &topic_for_count))
        .await
        .unwrap();
    assert_eq!(
        records,
        i64::try_from(ADMISSIONS).unwrap(),
        "each admission produced once"
    );

    stop_first.send(()).unwrap();
    stop_second.send(()).unwrap();
    for relay in [first, second] {
        tokio::time::timeout(Duration::from_secs(30), relay)
            .await
            .expect("the relay stops when asked")
            .unwrap();
    }
}
