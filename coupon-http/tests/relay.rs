//! The relay from the Redis outbox to Kafka: every admission reaches the topic, through a
//! broker outage and through a relay killed mid-flight.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use coupon_gate::{Campaign, CampaignId, EventKind};
use coupon_http::Config;
use coupon_relay::Event;
use futures_util::future::join_all;
use hyper::{Method, StatusCode};
use serde_json::json;
use support::{
    Broker, RedisServer, Scratch, TestApp, brokers, call, command_calls, config, connect,
    eventually, free_port, quota, read_topic, redis_url,
};

/// Applies `users` concurrently to `campaign`; returns the users told `success`, with their seq.
async fn burst(
    app: &TestApp,
    campaign: &str,
    users: impl IntoIterator<Item = u64>,
) -> BTreeMap<u64, u64> {
    let answers = join_all(
        users
            .into_iter()
            .map(|u| async move { (u, app.apply(Some(campaign), u).await) }),
    )
    .await;
    let mut admitted = BTreeMap::new();
    for (user, (code, body)) in answers {
        match body["status"].as_str() {
            Some("success") => {
                assert_eq!(code, StatusCode::OK);
                admitted.insert(user, body["seq"].as_u64().unwrap());
            }
            Some("sold_out") => assert_eq!(code, StatusCode::GONE),
            other => panic!("user {user}: unexpected {other:?}: {body}"),
        }
    }
    admitted
}

/// Checks the topic holds exactly one distinct admission per admitted user, and nothing else.
fn assert_topic_matches(
    messages: &[(String, Vec<u8>)],
    campaign: &str,
    admitted: &BTreeMap<u64, u64>,
) {
    let mut seen = BTreeMap::new();
    for (key, payload) in messages {
        let event = Event::decode(payload)
            .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(payload)));
        assert_eq!(key, &event.key());
        assert_eq!(event.kind, EventKind::Admitted);
        assert_eq!(event.campaign.as_str(), campaign);
        let user = event
            .user
            .as_number()
            .expect("the tests apply numeric users");
        let previous = seen.insert(user, u64::from(event.seq));
        // At-least-once: a redelivery is allowed, but must be the same admission.
        assert!(
            previous.is_none_or(|seq| Some(&seq) == seen.get(&user)),
            "user {user} with two seqs"
        );
    }
    let missing: Vec<_> = admitted.keys().filter(|u| !seen.contains_key(u)).collect();
    let unexpected: Vec<_> = seen
        .iter()
        .filter(|(u, s)| admitted.get(u) != Some(s))
        .collect();
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "the topic must hold exactly the admissions answered success: missing users {missing:?}, \
         unexpected (user, seq) {unexpected:?}, {} messages read",
        messages.len()
    );
    let seqs: BTreeSet<u64> = seen.values().copied().collect();
    assert_eq!(seqs.len(), seen.len(), "no seq twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admission_becomes_one_message() {
    let app = TestApp::start(config()).await;
    assert_eq!(
        app.create(json!({"id": "flash", "quota": 50})).await.0,
        StatusCode::CREATED
    );
    let admitted = burst(&app, "flash", 1..=80).await;
    assert_eq!(admitted.len(), 50);

    let messages = read_topic(&brokers(), &app.topic, 50, Duration::from_secs(60)).await;
    assert_topic_matches(&messages, "flash", &admitted);
    app.drained("flash").await;
}

/// A round of the relay hands the producer more records than its queue holds: the relay waits
/// for the queued ones to be delivered and goes on, so that nothing is dropped or sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_queue_smaller_than_a_round_loses_nothing() {
    let mut config = config();
    config.kafka.kafka_properties = vec![("queue.buffering.max.messages".into(), "2".into())];
    let app = TestApp::start(config).await;
    assert_eq!(
        app.create(json!({"id": "narrow", "quota": 40})).await.0,
        StatusCode::CREATED
    );
    let admitted = burst(&app, "narrow", 1..=40).await;
    assert_eq!(admitted.len(), 40);

    let messages = read_topic(&brokers(), &app.topic, 40, Duration::from_secs(60)).await;
    assert_topic_matches(&messages, "narrow", &admitted);
    assert_eq!(messages.len(), 40, "each admission exactly once");
    app.drained("narrow").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_a_campaign_and_each_admission_is_relayed_once() {
    let first = TestApp::start(config()).await;
    let second = first.sibling(config()).await;
    assert_eq!(
        first.create(json!({"id": "shared", "quota": 60})).await.0,
        StatusCode::CREATED
    );
    let (a, b) = tokio::join!(
        burst(&first, "shared", (1..=100).step_by(2)),
        burst(&second, "shared", (2..=100).step_by(2))
    );
    let admitted: BTreeMap<u64, u64> = a.into_iter().chain(b).collect();
    assert_eq!(admitted.len(), 60);

    let messages = read_topic(&brokers(), &first.topic, 60, Duration::from_secs(60)).await;
    assert_topic_matches(&messages, "shared", &admitted);
    first.drained("shared").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_mid_burst_loses_nothing() {
    let broker = Broker::behind_proxy().await;
    // Short delivery timeouts, so that failed deliveries go back to the outbox and are
    // re-claimed, rather than waiting inside the producer for the broker to return.
    let mut options = config();
    options.kafka.kafka_brokers = broker.brokers();
    options.relay_message_timeout = Duration::from_secs(2);
    let app = TestApp::start(options).await;
    assert_eq!(
        app.create(json!({"id": "outage", "quota": 100})).await.0,
        StatusCode::CREATED
    );

    let mut admitted = burst(&app, "outage", 1..=60).await;
    broker.proxy().cut();
    // Admissions keep being answered while the broker is unreachable; they queue in Redis.
    admitted.extend(burst(&app, "outage", 61..=200).await);
    assert_eq!(admitted.len(), 100);
    let queued = app
        .gate
        .outbox()
        .len(&coupon_gate::CampaignId::new("outage").unwrap())
        .await
        .unwrap();
    assert!(
        queued > 0,
        "the cut must leave admissions waiting in the outbox"
    );
    // Wait until a delivery has failed and its entry was taken over again (delivery count 2).
    let conn = support::connect(&redis_url()).await;
    let outbox = format!("{}:{{outage}}:outbox", app.prefix);
    eventually(
        Duration::from_secs(30),
        "a failed delivery to be re-claimed",
        || {
            let (mut conn, outbox) = (conn.clone(), outbox.clone());
            async move {
                let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
                    .arg(&outbox)
                    .arg("relay")
                    .arg("-")
                    .arg("+")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                pending.iter().any(|&(_, _, _, deliveries)| deliveries >= 2)
            }
        },
    )
    .await;
    broker.proxy().restore();

    let messages = read_topic(&broker.brokers(), &app.topic, 100, Duration::from_secs(90)).await;
    let left = app
        .gate
        .outbox()
        .len(&coupon_gate::CampaignId::new("outage").unwrap())
        .await
        .unwrap();
    eprintln!("outbox entries left after reading the topic: {left}");
    assert_topic_matches(&messages, "outage", &admitted);
    app.drained("outage").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_flight_is_taken_over() {
    let broker = Broker::behind_proxy().await;
    let scratch = Scratch::new(&redis_url());
    let topic = format!("t_{}", scratch.prefix.replace('-', "_"));
    let port = free_port();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();

    // Process A: the real binary, delivering patiently (it will not get the chance).
    let mut process_a = coupon_testkit::Process(
        Command::new(env!("CARGO_BIN_EXE_coupon-http"))
            .env("COUPON_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("REDIS_URL", redis_url())
            .env("COUPON_KEY_PREFIX", &scratch.prefix)
            .env("KAFKA_BROKERS", broker.brokers())
            .env("COUPON_TOPIC", &topic)
            .env("COUPON_DEFAULT_QUOTA", "40")
            .env("COUPON_IDENTITY", "body")
            .env("COUPON_RELAY_MESSAGE_TIMEOUT_MS", "120000")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Ready, and its relay running: the topic exists before the broker is cut off.
    eventually(Duration::from_secs(30), "process A to be ready", || async {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return false;
        }
        let (code, ready) = call(addr, Method::GET, "/ready", &[], "").await;
        code == StatusCode::OK && ready["relay"] == true
    })
    .await;

    broker.proxy().cut();
    let json = [("content-type", "application/json")];
    let answers = join_all((1..=60u64).map(|u| {
        call(
            addr,
            Method::POST,
            "/api/coupons/apply",
            &json,
            format!(r#"{{"userId":{u}}}"#),
        )
    }))
    .await;
    let mut admitted = BTreeMap::new();
    for (user, (_, body)) in (1..=60u64).zip(answers) {
        if body["status"] == "success" {
            admitted.insert(user, body["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(admitted.len(), 40);

    // A's relay has read admissions and is stuck delivering them: kill it there. Entries that
    // arrived while it was stuck stay unread; B must deliver both kinds.
    let conn = support::connect(&redis_url()).await;
    let outbox = format!("{}:{{default}}:outbox", scratch.prefix);
    eventually(Duration::from_secs(30), "A to hold entries pending", || {
        let (mut conn, outbox) = (conn.clone(), outbox.clone());
        async move {
            let pending: redis::Value = redis::cmd("XPENDING").arg(&outbox).arg("relay").query_async(&mut conn).await.unwrap();
            matches!(pending, redis::Value::Array(ref v) if matches!(v.first(), Some(&redis::Value::Int(n)) if n > 0))
        }
    })
    .await;
    process_a.kill(); // SIGKILL
    broker.proxy().restore();

    // Process B takes over what A left pending.
    let b = TestApp::join(
        {
            let mut config = config();
            config.kafka.kafka_brokers = broker.brokers();
            config
        },
        &scratch.prefix,
        &topic,
    )
    .await;
    let messages = read_topic(&broker.brokers(), &topic, 40, Duration::from_secs(60)).await;
    assert_topic_matches(&messages, "default", &admitted);
    b.drained("default").await;
}

/// With the subscription to outbox announcements live, a relay reads only the outboxes with
/// work: idle, it reads none of a few hundred campaigns' (a relay reading every campaign each
/// round, every 10 ms when idle, would read each a hundred times a second), and an admission to
/// any of them wakes it and is relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_relay_reads_only_the_outboxes_with_work() {
    let redis = RedisServer::start();
    let app = TestApp::start(Config {
        redis: coupon_cli::Redis::server(redis.url()),
        ..config()
    })
    .await;
    for i in 0..300 {
        let id = CampaignId::new(format!("quiet-{i}")).unwrap();
        app.gate
            .create(&Campaign::new(id, quota(10)))
            .await
            .unwrap();
    }
    assert_eq!(app.apply(Some("quiet-7"), 1).await.1["status"], "success");
    app.drained("quiet-7").await;

    let conn = connect(&redis.url()).await;
    let reads = || {
        let mut conn = conn.clone();
        async move { command_calls(&mut conn, &["xreadgroup"]).await }
    };
    // Once the outbox is seen empty, the relay rests.
    eventually(Duration::from_secs(10), "the relay to rest", || async {
        let before = reads().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        reads().await == before
    })
    .await;
    let before = reads().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(reads().await, before, "an idle relay read outboxes");

    assert_eq!(app.apply(Some("quiet-299"), 2).await.1["status"], "success");
    let messages = read_topic(&brokers(), &app.topic, 2, Duration::from_secs(30)).await;
    let users: BTreeSet<String> = messages
        .iter()
        .map(|(_, payload)| Event::decode(payload).unwrap().key())
        .collect();
    assert_eq!(
        users,
        BTreeSet::from(["quiet-7:1".to_owned(), "quiet-299:2".to_owned()])
    );
    app.drained("quiet-299").await;
}

/// One prefix, one topic: a second process on the same key prefix but another topic (a staging
/// deployment pointed at production's Redis by mistake) delivers nothing, answers `/ready` 503
/// with `refused: destination`, and what it admits reaches the first process's topic, whose
/// relay holds the binding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_of_another_topic_on_the_same_prefix_is_unready_and_delivers_nothing() {
    let first = TestApp::start(config()).await;
    let listener = coupon_http::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let other_topic = format!("{}_staging", first.topic);
    let mut second_config = config();
    second_config.addr = addr;
    second_config.key_prefix.key_prefix = first.prefix.clone();
    second_config.topic.topic = other_topic.clone();
    second_config.relay_consumer = Some("staging".to_owned());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let second = tokio::spawn(coupon_http::serve(second_config, listener, async {
        let _ = stopped.await;
    }));
    eventually(
        Duration::from_secs(30),
        "the second to refuse its destination",
        || async {
            let (code, ready) = call(addr, Method::GET, "/ready", &[], "").await;
            code == StatusCode::SERVICE_UNAVAILABLE
                && ready["refused"] == "destination"
                && ready["redis"] == true
        },
    )
    .await;
    let (code, _) = first.call(Method::GET, "/ready", &[], "").await;
    assert_eq!(code, StatusCode::OK, "the first stays ready");

    // What the second admits is delivered by the first's relay, to the first's topic.
    let mut admitted = 0;
    for user in 1..=30 {
        let (code, _) = call(
            addr,
            Method::POST,
            "/api/coupons/apply",
            &[("content-type", "application/json")],
            json!({ "userId": user }).to_string(),
        )
        .await;
        admitted += usize::from(code == StatusCode::OK);
    }
    assert_eq!(admitted, 30);
    let messages = read_topic(&brokers(), &first.topic, 30, Duration::from_secs(30)).await;
    assert_eq!(messages.len(), 30);
    first.drained("default").await;
    let (brokers, staging) = (brokers(), other_topic.clone());
    let on_staging =
        tokio::task::spawn_blocking(move || coupon_testkit::topic_records(&brokers, &staging))
            .await
            .unwrap();
    assert_eq!(on_staging, 0, "nothing reached the other topic");

    stop.send(()).unwrap();
    second.await.unwrap().unwrap();
}
