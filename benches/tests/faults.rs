//! The fault suite: a concurrent burst through the whole pipeline, a fault injected mid-burst,
//! recovery, and then the set check Jepsen-style: every user told `success` (or `duplicate`)
//! has exactly one row, nobody else has one, never more rows than the quota, no 5xx but 503.
//! Users whose request got no decision (503, or a connection that died) retry, as clients are
//! told to. Every fault hits servers the test started itself. Each scenario prints one line.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use coupon_bench::sale::{Crowd, Tally};
use coupon_testkit::{Broker, Proxy, RedisCluster, RedisServer, eventually};
use indicatif::ProgressBar;
use support::{Pipeline, Setup};

const USERS: u64 = 20_000;
const QUOTA: u32 = 3_000;
/// Answers before the fault strikes: while coupons are still being issued.
const STRIKE_AT: u64 = 1_500;

fn crowd(seed: u64) -> Vec<u64> {
    Crowd {
        users: USERS,
        first_user: 1,
        repeat_share: 0.1,
        max_clicks: 3,
        seed,
    }
    .clicks()
}

/// Waits until `bar` counted `answers` answers (the burst is under way).
async fn strike_when(bar: &ProgressBar, answers: u64) {
    eventually(
        Duration::from_secs(60),
        "the burst to get under way",
        || async { bar.position() >= answers },
    )
    .await;
}

/// Settles every undecided user at server `i` as a client is told to: retry (a retry answers
/// `duplicate` if the first attempt had worked, also once the campaign is sold out), and for
/// every user retried and not found a holder so, ask `GET /api/campaigns/{id}/users/{userId}`,
/// the definitive answer: it must agree that the user holds none (every answer is true).
async fn settle(pipeline: &Pipeline, i: usize, campaign: &str, tally: &mut Tally) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut asked = BTreeSet::new();
    loop {
        let undecided: BTreeSet<u64> = std::mem::take(&mut tally.undecided).into_iter().collect();
        if undecided.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} users still undecided after 60 s of retries",
            undecided.len()
        );
        asked.extend(undecided.iter().copied());
        let retry = pipeline
            .fire(i, campaign, undecided.into_iter().collect(), 16)
            .await;
        tally.merge(retry);
    }
    let holders: BTreeSet<u64> = tally
        .winners
        .iter()
        .chain(&tally.duplicates)
        .copied()
        .collect();
    for user in asked.difference(&holders) {
        let seq = pipeline.http[i]
            .server
            .admission(campaign, *user, Some(support::ADMIN_TOKEN))
            .await
            .expect("user lookup");
        assert_eq!(
            seq, None,
            "user {user} holds a coupon, but its retry was told otherwise"
        );
    }
}

/// The checks of every scenario, once the pipeline has drained; prints the verdict line.
async fn judge(
    name: &str,
    pipeline: &Pipeline,
    campaign: &str,
    tally: &Tally,
    transport_errors_allowed: bool,
) {
    let winners: BTreeSet<u64> = tally.winners.iter().copied().collect();
    assert_eq!(
        winners.len(),
        tally.winners.len(),
        "{name}: a user was told success twice"
    );
    let holders: BTreeSet<u64> = winners
        .union(&tally.duplicates.iter().copied().collect())
        .copied()
        .collect();
    let stored = pipeline.wait_for_rows(campaign, holders.len() as u64).await;
    let rows: BTreeSet<u64> = stored.users.iter().copied().collect();
    let seqs: BTreeSet<u64> = stored.seqs.iter().copied().collect();
    let server_errors: u64 = tally
        .answers
        .iter()
        .filter(|(a, _)| a.code >= 500 && a.code != 503)
        .map(|(_, n)| n)
        .sum();
    let unavailable = tally.count("unavailable");
    let transport = tally.count("transport_error");
    println!(
        "fault {name}: rows={} told={} quota={QUOTA} success={} 503={unavailable} transport_errors={transport} failed_events={}",
        stored.rows,
        holders.len(),
        winners.len(),
        stored.failed_events
    );
    assert_eq!(
        rows.len() as u64,
        stored.rows,
        "{name}: a user has two rows"
    );
    assert_eq!(
        rows, holders,
        "{name}: rows and the users told they hold a coupon differ"
    );
    assert!(
        stored.rows <= u64::from(QUOTA),
        "{name}: more rows than the quota"
    );
    assert_eq!(seqs.len() as u64, stored.rows, "{name}: a seq given twice");
    assert!(seqs.iter().all(|&s| (1..=u64::from(QUOTA)).contains(&s)));
    assert_eq!(stored.failed_events, 0, "{name}: failed events");
    assert_eq!(
        server_errors, 0,
        "{name}: a 5xx other than 503: {:?}",
        tally.answers
    );
    if !transport_errors_allowed {
        assert_eq!(transport, 0, "{name}: requests without an answer");
    }
    // With every undecided user retried, the crowd must have filled the quota.
    assert_eq!(
        holders.len(),
        QUOTA as usize,
        "{name}: the quota was not filled"
    );
    println!("fault {name}: PASS");
}

/// `coupon-admin audit` of `campaign` exits 0: Redis, the outbox, the topic and MySQL agree.
fn audit_finds_nothing(pipeline: &Pipeline, campaign: &str) {
    let (code, out) = pipeline.admin(&["audit", "--campaign", campaign]);
    assert_eq!(code, 0, "{out}");
}

/// SIGKILL to a process the test started, by pid: the process stays borrowed by the burst.
fn sigkill(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -KILL {pid}");
}

/// 1. Two coupon-http processes share the campaign; one is SIGKILLed mid-burst. Its users retry
///    at the other; its unacknowledged outbox entries are taken over by the other's relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_burst() {
    let pipeline = Pipeline::start(2).await;
    let campaign = pipeline.campaign("kill-http", QUOTA).await;
    let clicks = crowd(1);
    let bar = ProgressBar::hidden();
    let victim = pipeline.http[1].process.0.id();
    let ((mut tally, other), ()) = tokio::join!(
        async {
            tokio::join!(
                pipeline.fire_with(0, &campaign, clicks.clone(), 32, &bar),
                pipeline.fire(1, &campaign, clicks.clone(), 32),
            )
        },
        async {
            strike_when(&bar, STRIKE_AT).await;
            sigkill(victim);
        },
    );
    tally.merge(other);
    settle(&pipeline, 0, &campaign, &mut tally).await;
    judge("server-killed", &pipeline, &campaign, &tally, true).await;
}

/// 5. Redis (the test's own, AOF with `appendfsync always`) is SIGKILLed mid-burst and restarted:
///    it recovers every acknowledged admission from its AOF; meanwhile the server answers 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_burst_recovers_from_its_aof() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let pipeline = Pipeline::start_with(Setup {
        redis_url: redis.url(),
        ..Setup::default()
    })
    .await;
    let campaign = pipeline.campaign("kill-redis", QUOTA).await;
    let bar = ProgressBar::hidden();
    let (mut tally, ()) = tokio::join!(
        pipeline.fire_with(0, &campaign, crowd(5), 32, &bar),
        async {
            strike_when(&bar, STRIKE_AT).await;
            tokio::task::block_in_place(|| redis.restart(true));
        },
    );
    settle(&pipeline, 0, &campaign, &mut tally).await;
    judge("redis-killed-aof", &pipeline, &campaign, &tally, false).await;
}

/// 6. Redis loses everything (restarted without persistence) after a burst: the campaign is
///    unknown until the operator rebuilds it from MySQL and the topic; then the users admitted
///    before the loss are duplicates, and the rest of the quota goes to new users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_state_lost_and_rebuilt() {
    let mut redis = RedisServer::start();
    let pipeline = Pipeline::start_with(Setup {
        redis_url: redis.url(),
        ..Setup::default()
    })
    .await;
    let campaign = pipeline.campaign("lost", QUOTA).await;
    // A first burst that leaves part of the quota.
    let first: Vec<u64> = (1..=1_000).collect();
    let mut tally = pipeline.fire(0, &campaign, first.clone(), 32).await;
    assert_eq!(tally.count("success"), 1_000);
    pipeline.wait_for_rows(&campaign, 1_000).await;
    // While the campaign is open to traffic, a rebuild is refused.
    let (code, out) = pipeline.admin(&["rebuild", "--campaign", &campaign]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("open to traffic"), "{out}");

    tokio::task::block_in_place(|| redis.restart(false));
    // The server's connection to the old Redis is dead; it reconnects when a call finds that
    // out (that call answers 503), so wait until it reports ready again.
    pipeline.http[0]
        .server
        .wait_ready(Duration::from_secs(30))
        .await
        .unwrap();
    let answer = pipeline.fire(0, &campaign, vec![1], 1).await;
    assert_eq!(answer.count("unknown_campaign"), 1, "{:?}", answer.answers);
    let (code, out) = pipeline.admin(&["audit", "--campaign", &campaign]);
    assert_eq!(code, 1, "the audit reports the loss");
    assert!(out.contains("UNKNOWN"), "{out}");
    let (code, out) = pipeline.admin(&[
        "rebuild",
        "--campaign",
        &campaign,
        "--quota",
        &QUOTA.to_string(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("rebuilt: quota 3000, issued 1000"), "{out}");

    // Everyone again, and new users: none of the first thousand is admitted again (they are
    // duplicates, or told sold out once the server knows the campaign is), seqs continue.
    let second = pipeline.fire(0, &campaign, crowd(6), 32).await;
    assert!(first.iter().all(|u| !second.winners.contains(u)));
    assert!(
        second.duplicates.iter().any(|u| first.contains(u)),
        "the gate knows the earlier holders"
    );
    tally.merge(second);
    settle(&pipeline, 0, &campaign, &mut tally).await;
    judge("redis-lost-rebuilt", &pipeline, &campaign, &tally, false).await;
    audit_finds_nothing(&pipeline, &campaign);
}

/// 7. `SCRIPT FLUSH` mid-burst: the gate reloads its scripts; no answer is an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_mid_burst() {
    let redis = RedisServer::start();
    let pipeline = Pipeline::start_with(Setup {
        redis_url: redis.url(),
        ..Setup::default()
    })
    .await;
    let campaign = pipeline.campaign("flush", QUOTA).await;
    let bar = ProgressBar::hidden();
    let mut admin = coupon_testkit::connect(&redis.url()).await;
    let (tally, ()) = tokio::join!(
        pipeline.fire_with(0, &campaign, crowd(7), 32, &bar),
        async {
            for strike in [STRIKE_AT, STRIKE_AT + 500, STRIKE_AT + 1000] {
                strike_when(&bar, strike).await;
                let () = redis::cmd("SCRIPT")
                    .arg("FLUSH")
                    .query_async(&mut admin)
                    .await
                    .unwrap();
            }
        },
    );
    assert_eq!(tally.errors(), 0, "{:?}", tally.answers);
    judge("script-flush", &pipeline, &campaign, &tally, false).await;
}

/// 2. The Kafka-API broker (the test's own, behind a proxy the test cuts) becomes unreachable
///    mid-burst and comes back: admissions wait in the outbox, then flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_unreachable_mid_burst() {
    let broker = Broker::behind_proxy().await;
    let pipeline = Pipeline::start_with(Setup {
        brokers: broker.brokers(),
        ..Setup::default()
    })
    .await;
    let campaign = pipeline.campaign("cut-broker", QUOTA).await;
    let bar = ProgressBar::hidden();
    let (mut tally, ()) = tokio::join!(
        pipeline.fire_with(0, &campaign, crowd(2), 32, &bar),
        async {
            strike_when(&bar, STRIKE_AT).await;
            broker.proxy().cut();
        },
    );
    // Answers went on while the broker was away; nothing reached MySQL that had not before.
    eventually(
        Duration::from_secs(30),
        "a client to knock on the cut broker",
        || async { broker.proxy().refused() > 0 },
    )
    .await;
    broker.proxy().restore();
    settle(&pipeline, 0, &campaign, &mut tally).await;
    judge("broker-unreachable", &pipeline, &campaign, &tally, false).await;
}

/// 4. MariaDB becomes unreachable for the sink (through a proxy the test owns) mid-drain and
///    comes back: the sink retries its batch and commits nothing until it is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_unreachable_mid_drain() {
    let proxy = Proxy::start(mysql_port()).await;
    let pipeline = Pipeline::start_with(Setup {
        sink_mysql_port: Some(proxy.port),
        ..Setup::default()
    })
    .await;
    let campaign = pipeline.campaign("cut-mysql", QUOTA).await;
    let bar = ProgressBar::hidden();
    let (mut tally, ()) = tokio::join!(
        pipeline.fire_with(0, &campaign, crowd(4), 32, &bar),
        async {
            strike_when(&bar, STRIKE_AT).await;
            proxy.cut();
        },
    );
    eventually(
        Duration::from_secs(30),
        "the sink to knock on the cut database",
        || async { proxy.refused() > 0 },
    )
    .await;
    proxy.restore();
    settle(&pipeline, 0, &campaign, &mut tally).await;
    judge("mariadb-unreachable", &pipeline, &campaign, &tally, false).await;
}

/// 8. A poison message produced to the topic mid-drain: it lands in `failed_event`, everything
///    else flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_message_mid_drain() {
    let pipeline = Pipeline::start(1).await;
    let campaign = pipeline.campaign("poison", QUOTA).await;
    let bar = ProgressBar::hidden();
    let (tally, ()) = tokio::join!(
        pipeline.fire_with(0, &campaign, crowd(8), 32, &bar),
        async {
            strike_when(&bar, STRIKE_AT).await;
            coupon_testkit::produce(
                &pipeline.brokers,
                &pipeline.topic,
                &[("poison".to_owned(), b"{not an event".to_vec())],
            )
            .await;
        },
    );
    judge("poison-message", &pipeline, &campaign, &tally, false).await;
    eventually(
        Duration::from_secs(30),
        "the poison in failed_event",
        || async {
            pipeline
                .db
                .query::<u64>("SELECT COUNT(*) FROM failed_event")
                .await
                == [1]
        },
    )
    .await;
}

/// 9. Redis unreachable from coupon-http (its connections cut by a proxy the test owns) mid-burst:
///    requests answer 503 within the timeout, never a false `success`, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_mid_burst() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(redis.port).await;
    let pipeline = Pipeline::start_with(Setup {
        redis_url: format!("redis://127.0.0.1:{}", proxy.port),
        ..Setup::default()
    })
    .await;
    let campaign = pipeline.campaign("cut-redis", QUOTA).await;
    let bar = ProgressBar::hidden();
    let (mut tally, ()) = tokio::join!(
        pipeline.fire_with(0, &campaign, crowd(9), 32, &bar),
        async {
            strike_when(&bar, STRIKE_AT).await;
            proxy.cut();
            strike_when(&bar, STRIKE_AT + 500).await;
            proxy.restore();
        },
    );
    settle(&pipeline, 0, &campaign, &mut tally).await;
    assert!(
        tally.count("unavailable") > 0,
        "the cut was felt: {:?}",
        tally.answers
    );
    judge("redis-unreachable", &pipeline, &campaign, &tally, false).await;
}

/// The machine's MariaDB port, from `TEST_MYSQL_URL` (default 3306).
fn mysql_port() -> u16 {
    coupon_testkit::mysql_server_url()
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or(3306)
}

/// 3. The sink SIGKILLed mid-drain, three times, and restarted under its static group name:
///    every admission ends as exactly one row. The relay batches as in production, so a restart
///    resumes from committed offsets that fall inside multi-record batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_killed_mid_drain_three_times() {
    let mut pipeline = Pipeline::start_with(Setup {
        sink_env: slow_drain(),
        ..Setup::default()
    })
    .await;
    let campaign = pipeline.campaign("kill-sink", QUOTA).await;
    let mut tally = pipeline.fire(0, &campaign, crowd(3), 32).await;
    let mut at_kill = Vec::new();
    for stage in [300, 1200, 2100] {
        eventually(
            Duration::from_secs(120),
            &format!("{stage} rows"),
            || async { pipeline.rows(&campaign).await >= stage },
        )
        .await;
        at_kill.push(pipeline.rows(&campaign).await);
        pipeline.restart_sink(0);
    }
    println!("fault sink-killed: killed at {at_kill:?} rows");
    settle(&pipeline, 0, &campaign, &mut tally).await;
    judge("sink-killed", &pipeline, &campaign, &tally, false).await;
}

/// Small transactions, so that a drain takes long enough to be struck mid-way.
fn slow_drain() -> Vec<(&'static str, String)> {
    vec![
        ("COUPON_SINK_BATCH", "10".to_owned()),
        ("COUPON_SINK_LINGER_MS", "0".to_owned()),
    ]
}

/// 10. The broker (the test's own, SQLite storage) SIGKILLed mid-burst and restarted on the same
///     storage: answers go on while it is down, admissions wait in the outbox, the records it
///     had acknowledged are still there after the restart, and every admission arrives, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_mid_burst_and_restarted() {
    let mut broker = Broker::start().await;
    let pipeline = Pipeline::start_with(Setup {
        brokers: broker.brokers(),
        ..Setup::default()
    })
    .await;
    let campaign = pipeline.campaign("kill-broker", QUOTA).await;
    pipeline.sinks_hold_partitions().await;
    let bar = ProgressBar::hidden();
    let (mut tally, acknowledged) = tokio::join!(
        pipeline.fire_with(0, &campaign, crowd(10), 32, &bar),
        async {
            strike_when(&bar, STRIKE_AT).await;
            // Every record counted here was acknowledged before the kill.
            let acknowledged = tokio::task::block_in_place(|| {
                coupon_testkit::topic_records(&broker.brokers(), &pipeline.topic)
            });
            broker.kill();
            acknowledged
        },
    );
    // The burst was answered without the broker; what it admitted since waits in the outbox.
    assert_eq!(tally.errors(), 0, "{:?}", tally.answers);
    let waiting = pipeline.outbox_len(&campaign).await;
    assert!(
        waiting > 0,
        "admissions wait in the outbox while the broker is down"
    );
    broker.restart().await;
    let kept = tokio::task::block_in_place(|| {
        coupon_testkit::topic_records(&broker.brokers(), &pipeline.topic)
    });
    println!(
        "fault broker-killed: {acknowledged} records acknowledged before the kill, {kept} on the topic after the restart, {waiting} outbox entries waiting meanwhile"
    );
    assert!(
        acknowledged > 0 && kept >= acknowledged,
        "the broker keeps what it acknowledged: {acknowledged} before, {kept} after"
    );
    settle(&pipeline, 0, &campaign, &mut tally).await;
    judge("broker-killed", &pipeline, &campaign, &tally, false).await;
    eventually(Duration::from_secs(60), "the outbox to drain", || async {
        pipeline.outbox_len(&campaign).await == 0
    })
    .await;
}

/// 14. Started in bad weather: coupon-http and the sink before their broker (a port on which
///     nothing listens yet), and the sink before its database (reached through a proxy the test
///     keeps cut: the machine's MariaDB is shared and stays up). Admissions are answered from
///     the start and wait in the outbox; the sink waits, saying for what, instead of exiting;
///     once the database and then the broker appear, every admission reaches MySQL once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_before_the_broker_and_the_database() {
    let mut broker = Broker::not_started();
    let database = Proxy::start(mysql_port()).await;
    database.cut();
    let mut pipeline = Pipeline::start_with(Setup {
        brokers: broker.brokers(),
        sink_mysql_port: Some(database.port),
        ..Setup::default()
    })
    .await;
    let campaign = pipeline.campaign("bad-weather", QUOTA).await;
    let mut tally = pipeline.fire(0, &campaign, crowd(14), 32).await;
    assert_eq!(tally.errors(), 0, "{:?}", tally.answers);
    assert_eq!(tally.winners.len(), QUOTA as usize, "{:?}", tally.answers);
    assert!(pipeline.outbox_len(&campaign).await > 0);

    let log = pipeline.sinks[0].log.clone();
    let said = |what: &'static str| {
        let log = log.clone();
        move || {
            let log = log.clone();
            async move { std::fs::read_to_string(&log).is_ok_and(|text| text.contains(what)) }
        }
    };
    eventually(
        Duration::from_secs(30),
        "the sink to say it waits for the database",
        said("waiting for the database"),
    )
    .await;
    assert!(database.refused() > 0, "the sink knocked on the database");
    assert!(!pipeline.db.has_tables(&["coupon"]).await);
    database.restore();
    eventually(
        Duration::from_secs(60),
        "the sink to say it waits for the broker",
        said("waiting for the broker"),
    )
    .await;
    let exited = pipeline.sinks[0]
        .process
        .0
        .try_wait()
        .expect("the sink's status");
    assert!(exited.is_none(), "the sink exited: {exited:?}");
    broker.restart().await;
    settle(&pipeline, 0, &campaign, &mut tally).await;
    judge(
        "started-before-broker-and-database",
        &pipeline,
        &campaign,
        &tally,
        false,
    )
    .await;
    eventually(Duration::from_secs(60), "the outbox to drain", || async {
        pipeline.outbox_len(&campaign).await == 0
    })
    .await;
    audit_finds_nothing(&pipeline, &campaign);
}

/// The session timeout of the sinks in [`a_sink_killed_beside_another_hands_over_its_partitions`].
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

/// 11. Two sinks of one group with dynamic membership (no instance id) on a broker of the
///     test's own; one is SIGKILLed mid-drain and not restarted. The survivor is given every
///     partition once the group's session timeout has passed, and writes the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_killed_beside_another_hands_over_its_partitions() {
    let broker = Broker::start().await;
    let mut sink_env = slow_drain();
    sink_env.push((
        "COUPON_SINK_SESSION_TIMEOUT_MS",
        SESSION_TIMEOUT.as_millis().to_string(),
    ));
    let pipeline = Pipeline::start_with(Setup {
        brokers: broker.brokers(),
        sinks: 2,
        static_membership: false,
        sink_env,
        ..Setup::default()
    })
    .await;
    let campaign = pipeline.campaign("kill-member", QUOTA).await;
    // Both sinks hold partitions before the burst: the kill must take some from the group.
    pipeline.sinks_hold_partitions().await;
    let survivor = &pipeline.sinks[1];
    // Struck while the burst is still being drained. The survivor's assignments are counted at
    // the kill, inside this branch: the burst can outlast the handover, so a count taken after
    // the join would already include the reassignment this test waits for.
    let (mut tally, (held, at_kill, before, killed)) =
        tokio::join!(pipeline.fire(0, &campaign, crowd(11), 32), async {
            eventually(Duration::from_secs(120), "300 rows", || async {
                pipeline.rows(&campaign).await >= 300
            })
            .await;
            let held = pipeline.sinks[0]
                .assignments()
                .last()
                .cloned()
                .unwrap_or_default();
            let at_kill = pipeline.rows(&campaign).await;
            let before = survivor.assignments().len();
            sigkill(pipeline.sinks[0].process.0.id());
            (held, at_kill, before, std::time::Instant::now())
        },);
    assert!(
        at_kill < u64::from(QUOTA),
        "the kill came after the drain ({at_kill} rows)"
    );
    assert!(!held.is_empty(), "the killed sink held partitions");
    // The group notices the kill after the session timeout and then rebalances, which takes
    // longer on a loaded machine: three timeouts from here, at least that long from the kill.
    eventually(
        SESSION_TIMEOUT * 3,
        "the survivor to be given every partition",
        || async {
            survivor
                .assignments()
                .get(before..)
                .is_some_and(|later| later.iter().any(|p| p.len() == 3))
        },
    )
    .await;
    println!(
        "fault sink-member-killed: killed at {at_kill} rows holding {held:?}; the survivor held all 3 partitions {:.1} s later (session timeout {} s)",
        killed.elapsed().as_secs_f64(),
        SESSION_TIMEOUT.as_secs()
    );
    settle(&pipeline, 0, &campaign, &mut tally).await;
    judge("sink-member-killed", &pipeline, &campaign, &tally, false).await;
}

/// A pipeline whose servers and admin tool use `cluster` (`REDIS_CLUSTER_NODES`, every node).
async fn pipeline_on_cluster(
    cluster: &RedisCluster,
    http_env: &[(&'static str, &str)],
) -> Pipeline {
    Pipeline::start_with(Setup {
        http_env: http_env
            .iter()
            .map(|&(name, value)| (name, value.to_owned()))
            .collect(),
        ..Setup::on_cluster(cluster, cluster.ports.len())
    })
    .await
}

/// 12. On a Redis Cluster (AOF, `appendfsync always`, two replicas per master,
///     `cluster-require-full-coverage no`), the master serving the campaign is SIGKILLed
///     mid-burst and a replica promoted. Admissions wait for one replica
///     (`COUPON_REDIS_WAIT_REPLICAS=1`), so none answered can be lost with the master, and the
///     promoted master still has one: 503 while the slot has no master, then the rest of the
///     quota goes out without the failed node. A campaign of another master is served
///     throughout. The failed node is restarted afterwards and rejoins as a replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_master_killed_mid_burst_fails_over_to_its_replica() {
    let mut cluster = RedisCluster::start_with(
        3,
        2,
        &[
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--cluster-require-full-coverage",
            "no",
        ],
    );
    let pipeline = pipeline_on_cluster(&cluster, &[("COUPON_REDIS_WAIT_REPLICAS", "1")]).await;
    let campaign = pipeline.campaign("failover", QUOTA).await;
    let key = format!("{{{campaign}}}");
    let master = cluster.master_of(&key);
    // A campaign of another master, applied to all through the failover.
    let elsewhere = (0..)
        .map(|n| format!("elsewhere-{n}"))
        .find(|id| cluster.master_of(&format!("{{{id}}}")) != master)
        .expect("a campaign id of another master");
    pipeline.campaign(&elsewhere, 1_000_000).await;
    let failed_over = std::sync::atomic::AtomicBool::new(false);
    let bar = ProgressBar::hidden();
    let (mut tally, promoted, other) = tokio::join!(
        pipeline.fire_with(0, &campaign, crowd(12), 32, &bar),
        async {
            strike_when(&bar, STRIKE_AT).await;
            tokio::task::block_in_place(|| cluster.kill(master));
            let killed = std::time::Instant::now();
            // Before any replica can be promoted (the node timeout is 2 s), the server stays
            // ready: Redis answers, only one shard does not.
            pipeline.http[0]
                .server
                .wait_ready(Duration::from_millis(1500))
                .await
                .expect("ready while one master is down");
            // Polled between awaits, not blocking the task: the other campaign's applications
            // run in it meanwhile.
            let asked = *cluster
                .ports
                .iter()
                .find(|&&p| p != master)
                .expect("a node");
            eventually(
                Duration::from_secs(30),
                "a replica to take over the campaign's slot",
                || async {
                    cluster
                        .slot_master(asked, &key)
                        .is_some_and(|p| p != master)
                },
            )
            .await;
            let promoted = tokio::task::block_in_place(|| cluster.wait_promoted(&key, master));
            println!(
                "fault cluster-failover: a replica took over {:.1} s after the kill",
                killed.elapsed().as_secs_f64()
            );
            failed_over.store(true, std::sync::atomic::Ordering::Release);
            promoted
        },
        async {
            strike_when(&bar, STRIKE_AT).await;
            let mut other = Tally::empty();
            let mut users = 1..;
            while !failed_over.load(std::sync::atomic::Ordering::Acquire) {
                let batch: Vec<u64> = users.by_ref().take(20).collect();
                other.merge(pipeline.fire(0, &elsewhere, batch, 4).await);
            }
            other
        },
    );
    settle(&pipeline, 0, &campaign, &mut tally).await;
    assert_ne!(promoted, master);
    // The other master's campaign was served throughout (`cluster-require-full-coverage no`).
    assert_eq!(
        other.count("success"),
        other.winners.len() as u64,
        "{:?}",
        other.answers
    );
    assert_eq!(
        other.answers.values().sum::<u64>(),
        other.count("success"),
        "only successes on the other master: {:?}",
        other.answers
    );
    pipeline
        .wait_for_rows(&elsewhere, other.winners.len() as u64)
        .await;
    println!(
        "fault cluster-failover: {} admissions on another master meanwhile, none refused; latency p50 {} ms, max {} ms",
        other.winners.len(),
        other.latency.value_at_quantile(0.5) / 1000,
        other.latency.max() / 1000
    );
    assert!(
        tally.count("unavailable") > 0,
        "the failover was felt: {:?}",
        tally.answers
    );
    judge("cluster-failover", &pipeline, &campaign, &tally, false).await;
    audit_finds_nothing(&pipeline, &campaign);

    tokio::task::block_in_place(|| cluster.restart(master));
    eventually(
        Duration::from_secs(30),
        "the restarted node to rejoin as a replica",
        || async { cluster.role(master).as_deref() == Some("slave") },
    )
    .await;
}

/// 13. On a Redis Cluster, the campaign's slot is migrated to another master mid-burst, key by
///     key (`CLUSTER SETSLOT` and `MIGRATE`, as `redis-cli --cluster reshard` does): requests
///     meet `ASK` and `TRYAGAIN` while the slot is half moved, then `MOVED`. No answer but
///     503 is an error, and the result is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_slot_migrated_mid_burst() {
    let cluster = RedisCluster::start();
    let pipeline = pipeline_on_cluster(&cluster, &[]).await;
    let campaign = pipeline.campaign("reshard", QUOTA).await;
    let key = format!("{{{campaign}}}");
    let from = cluster.master_of(&key);
    let to = cluster.master_of(
        &(0..)
            .map(|n| format!("{{other-{n}}}"))
            .find(|other| cluster.master_of(other) != from)
            .expect("a key of another master"),
    );
    let bar = ProgressBar::hidden();
    let (mut tally, moved) = tokio::join!(
        pipeline.fire_with(0, &campaign, crowd(13), 32, &bar),
        async {
            strike_when(&bar, STRIKE_AT).await;
            tokio::task::block_in_place(|| {
                cluster.migrate_slot(&key, to, Duration::from_millis(20))
            })
        },
    );
    settle(&pipeline, 0, &campaign, &mut tally).await;
    assert_eq!(cluster.master_of(&key), to, "the slot moved");
    assert!(moved > 3, "the campaign's keys moved: {moved}");
    judge("cluster-reshard", &pipeline, &campaign, &tally, false).await;
    audit_finds_nothing(&pipeline, &campaign);
}

/// 14. Coupons taken back mid-burst: an operator releases 200 holders while the crowd applies
///     (`DELETE /api/campaigns/{id}/users/{userId}`), then a second wave of new users takes what
///     is left. At the end Redis holds exactly the quota's holders, MySQL exactly the same users
///     with the same seqs (every release removed its row once, every freed seq went to one new
///     holder), every user told `success` either holds a coupon or was released, nobody holds one
///     without having been told so, and the audit finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coupons_taken_back_mid_burst() {
    const RELEASES: usize = 200;
    let pipeline = Pipeline::start(1).await;
    let campaign = pipeline.campaign("release-mid-burst", QUOTA).await;
    let server = pipeline.http[0].server.clone();
    let bar = ProgressBar::hidden();
    let (mut tally, released) = tokio::join!(
        pipeline.fire_with(0, &campaign, crowd(14), 32, &bar),
        async {
            strike_when(&bar, STRIKE_AT).await;
            let mut released = BTreeMap::new();
            for user in 1..=USERS {
                if released.len() == RELEASES {
                    break;
                }
                let answer = server.release(&campaign, user, Some(support::ADMIN_TOKEN));
                if let Some(seq) = answer.await.expect("release") {
                    released.insert(user, seq);
                }
            }
            released
        },
    );
    assert_eq!(released.len(), RELEASES, "the crowd held enough coupons");
    settle(&pipeline, 0, &campaign, &mut tally).await;
    let second = pipeline
        .fire(0, &campaign, (USERS + 1..=USERS + 2_000).collect(), 32)
        .await;
    tally.merge(second);
    settle(&pipeline, 0, &campaign, &mut tally).await;

    let gate = coupon_gate::Gate::with_key_prefix(
        coupon_testkit::connect(&pipeline.redis_url).await,
        pipeline.scratch.prefix.clone(),
    )
    .unwrap();
    let id = coupon_gate::CampaignId::new(campaign.as_str()).unwrap();
    let holders: BTreeMap<u64, u64> = gate
        .recovery()
        .holders(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|(user, seq)| (user.as_str().parse().unwrap(), u64::from(seq)))
        .collect();
    assert_eq!(holders.len(), QUOTA as usize, "the quota is filled again");
    let seqs: BTreeSet<u64> = holders.values().copied().collect();
    assert_eq!(
        seqs,
        (1..=u64::from(QUOTA)).collect(),
        "every seq held once"
    );
    let told: BTreeSet<u64> = tally
        .winners
        .iter()
        .chain(&tally.duplicates)
        .copied()
        .collect();
    for user in holders.keys() {
        assert!(
            told.contains(user),
            "user {user} holds a coupon nobody told it of"
        );
    }
    for user in &tally.winners {
        assert!(
            holders.contains_key(user) || released.contains_key(user),
            "user {user} was told success, holds nothing and was not released"
        );
    }
    let winners: BTreeSet<u64> = tally.winners.iter().copied().collect();
    let rewon = released.keys().filter(|u| holders.contains_key(u)).count();
    assert_eq!(
        winners.len() + rewon,
        tally.winners.len(),
        "only a released user is told success twice"
    );

    // MySQL: the same users with the same seqs, once every release has removed its row.
    let stored = pipeline.wait_for_rows(&campaign, u64::from(QUOTA)).await;
    assert_eq!(stored.failed_events, 0);
    eventually(
        Duration::from_secs(60),
        "MySQL to hold Redis's holders",
        || async { pipeline.coupon_rows(&campaign).await == holders },
    )
    .await;
    assert_eq!(
        pipeline.rows(&campaign).await,
        u64::from(QUOTA),
        "no user has two rows"
    );
    audit_finds_nothing(&pipeline, &campaign);
    println!(
        "fault release-mid-burst: rows={} released={RELEASES} released-then-rewon={rewon} success={} PASS",
        holders.len(),
        tally.winners.len()
    );
}

/// Keys of `campaign` under the pipeline's prefix (one `KEYS` on the test's scratch prefix).
async fn campaign_keys(pipeline: &Pipeline, campaign: &str) -> Vec<String> {
    let mut conn = coupon_testkit::connect(&pipeline.redis_url).await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:{{{campaign}}}:*", pipeline.scratch.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    keys
}

/// 15. Archive racing late applications, and a `coupon-admin archive` SIGKILLed midway. A burst
///     fills a campaign whose quota names 111,110 user buckets (so the archive's sweep takes a
///     while); it is closed, and while new users keep applying it is archived through the API as
///     soon as MySQL holds its holders: every late application is answered `closed` or
///     `archived`, never `success`. A second such campaign is archived by `coupon-admin
///     archive`, SIGKILLed as soon as the tombstone appears; a second run finishes it. After
///     both, only the tombstones remain in Redis, MySQL keeps every coupon, and the audit finds
///     nothing; then `rebuild --restore` brings the second back, closed, with every holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_racing_late_applications_and_killed_midway() {
    // 10^7 coupons: user buckets named by the last 5 digits, 111,110 names to sweep, the most
    // the sweep removes by name.
    const BIG: u32 = 10_000_000;
    const HOLDERS: u64 = 2_000;
    let pipeline = Pipeline::start(1).await;
    let server = pipeline.http[0].server.clone();
    let token = Some(support::ADMIN_TOKEN);
    let mut ids = Vec::new();
    for name in ["archive-race", "archive-killed"] {
        let campaign = pipeline.campaign(name, BIG).await;
        let mut tally = pipeline
            .fire(0, &campaign, (1..=HOLDERS).collect(), 32)
            .await;
        settle(&pipeline, 0, &campaign, &mut tally).await;
        assert_eq!(
            tally.winners.len() as u64,
            HOLDERS,
            "{campaign}: everyone admitted"
        );
        ids.push(campaign);
    }

    // The race: late applicants, after the close, against the archive (which waits until the
    // sink has written every holder).
    let race = &ids[0];
    server.close(race, token).await.expect("close");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (late, archived) = tokio::join!(
        async {
            let mut late = Tally::empty();
            let mut next = HOLDERS + 1;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let users: Vec<u64> = (next..next + 200).collect();
                next += 200;
                late.merge(pipeline.fire(0, race, users, 8).await);
            }
            // And once more after the archive.
            late.merge(
                pipeline
                    .fire(0, race, (next..next + 200).collect(), 8)
                    .await,
            );
            late
        },
        async {
            let mut refusals = BTreeMap::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            let answer = loop {
                let (code, answer) = server.archive(race, token).await.expect("archive");
                if code == hyper::StatusCode::OK {
                    break answer;
                }
                assert_eq!(code, hyper::StatusCode::CONFLICT, "{answer}");
                *refusals
                    .entry(answer["reason"].as_str().unwrap_or("?").to_owned())
                    .or_insert(0u32) += 1;
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "not settled in 60 s: {refusals:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            (answer, refusals)
        },
    );
    let (answer, refusals) = archived;
    assert_eq!(answer["issued"], HOLDERS, "{answer}");
    assert!(
        late.winners.is_empty(),
        "a late applicant was admitted: {:?}",
        late.answers
    );
    let closed = late.count("closed");
    let gone = late.count("archived");
    assert_eq!(
        closed + gone,
        late.requests(),
        "late applicants are told closed or archived: {:?}",
        late.answers
    );
    assert!(gone >= 200, "those after the archive are told archived");

    // The kill: as soon as the tombstone is there, mid-sweep.
    let killed = &ids[1];
    server.close(killed, token).await.expect("close");
    let _ = pipeline.wait_for_rows(killed, HOLDERS).await;
    let meta = format!("{}:{{{killed}}}:meta", pipeline.scratch.prefix);
    let mut conn = coupon_testkit::connect(&pipeline.redis_url).await;
    let mut child = pipeline
        .admin_command(&["archive", "--campaign", killed])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start coupon-admin archive");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let tombstone: bool = redis::cmd("HEXISTS")
            .arg(&meta)
            .arg("archived")
            .query_async(&mut conn)
            .await
            .unwrap();
        if tombstone {
            sigkill(child.id());
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("coupon-admin archive ended ({status}) before the tombstone was seen");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no tombstone in 60 s"
        );
    }
    let _ = child.wait();
    let sweep: Option<u32> = redis::cmd("HGET")
        .arg(&meta)
        .arg("sweep")
        .query_async(&mut conn)
        .await
        .unwrap();
    let buckets_left = campaign_keys(&pipeline, killed).await.len() - 1;
    let (code, out) = pipeline.admin(&["archive", "--campaign", killed]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("already archived"), "{out}");

    for campaign in &ids {
        assert_eq!(
            campaign_keys(&pipeline, campaign).await,
            [format!("{}:{{{campaign}}}:meta", pipeline.scratch.prefix)],
            "only the tombstone of {campaign} remains"
        );
        assert_eq!(
            pipeline.rows(campaign).await,
            HOLDERS,
            "MySQL keeps the coupons"
        );
        audit_finds_nothing(&pipeline, campaign);
    }
    let (_, list) = pipeline.admin(&["list"]);
    for campaign in &ids {
        assert!(
            list.lines()
                .any(|l| l.starts_with(campaign.as_str()) && l.contains(" archived ")),
            "{list}"
        );
    }
    // Brought back: refused without --restore, then rebuilt from MySQL and the topic, closed.
    let (code, out) = pipeline.admin(&["rebuild", "--campaign", killed]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("pass --restore"), "{out}");
    let (code, out) = pipeline.admin(&["rebuild", "--campaign", killed, "--restore"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("rebuilt: quota {BIG}, issued {HOLDERS}")),
        "{out}"
    );
    let late = pipeline.fire(0, killed, vec![HOLDERS + 1_000_000], 1).await;
    assert_eq!(
        late.count("closed"),
        1,
        "restored closed: {:?}",
        late.answers
    );
    audit_finds_nothing(&pipeline, killed);
    println!(
        "fault archive-race-and-kill: late closed={closed} archived={gone} refusals before settled={refusals:?} \
         killed mid-sweep={} (user buckets left {buckets_left}) PASS",
        sweep.is_some()
    );
}
