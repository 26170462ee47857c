//! The pipeline on a Redis Cluster of the test's own (3 masters, 3 replicas): the `coupon-http`
//! and `coupon-admin` binaries given `REDIS_CLUSTER_NODES`, the relay, the broker, the
//! `coupon-sink` binary and MariaDB. The seed's three scenarios on campaigns of different
//! masters, and many campaigns spread over the slots with two servers and two sinks; each ends
//! with the set check. Failover and resharding mid-burst are in `faults.rs`.

mod support;

use coupon_bench::check;
use coupon_bench::sale::Crowd;
use coupon_bench::scrape::Scrape;
use std::time::Duration;

use coupon_testkit::{RedisCluster, eventually};
use support::{ADMIN_TOKEN, Pipeline, Setup};

/// A pipeline of `servers` coupon-http and `sinks` coupon-sink on `cluster`.
async fn pipeline_on(cluster: &RedisCluster, servers: usize, sinks: usize) -> Pipeline {
    Pipeline::start_with(setup_on(cluster, servers, sinks)).await
}

/// Two nodes as seeds, as a deployment names a few: the rest are discovered.
fn setup_on(cluster: &RedisCluster, servers: usize, sinks: usize) -> Setup {
    Setup {
        servers,
        sinks,
        ..Setup::on_cluster(cluster, 2)
    }
}

/// 한번만응모, 여러명응모 and 한명당_한개의_쿠폰발급, each on a campaign of another master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_scenarios_on_campaigns_of_three_masters() {
    let cluster = RedisCluster::start();
    let pipeline = pipeline_on(&cluster, 1, 1).await;
    // One campaign per master.
    let mut per_master = std::collections::BTreeMap::new();
    for (id, master) in cluster.campaigns_on_every_master("seed", 3) {
        per_master.entry(master).or_insert(id);
    }
    let ids: Vec<String> = per_master.into_values().collect();
    let (once, crowd, one_user) = (&ids[0], &ids[1], &ids[2]);
    for id in &ids {
        pipeline.campaign(id, 100).await;
    }

    let tally = pipeline.fire(0, once, vec![1], 1).await;
    assert_eq!(tally.count("success"), 1, "{:?}", tally.answers);
    let stored = pipeline.wait_for_rows(once, 1).await;
    assert_eq!(
        (stored.users.as_slice(), stored.seqs.as_slice()),
        (&[1][..], &[1][..])
    );
    let verdict = check::verdict(100, 1, &tally, &stored);
    assert!(verdict.passed(), "{once}:\n{verdict}");

    let clicks = Crowd {
        seed: 1,
        ..Crowd::once_each(1000)
    }
    .clicks();
    let tally = pipeline.fire(0, crowd, clicks, 64).await;
    assert_eq!(tally.count("success"), 100, "{:?}", tally.answers);
    assert_eq!(tally.count("sold_out"), 900, "{:?}", tally.answers);
    let stored = pipeline.wait_for_rows(crowd, 100).await;
    assert_eq!(stored.seqs, (1..=100).collect::<Vec<_>>());
    let verdict = check::verdict(100, 1000, &tally, &stored);
    assert!(verdict.passed(), "{crowd}:\n{verdict}");

    let tally = pipeline.fire(0, one_user, vec![7; 1000], 64).await;
    assert_eq!(tally.count("success"), 1, "{:?}", tally.answers);
    assert_eq!(tally.count("duplicate"), 999, "{:?}", tally.answers);
    let stored = pipeline.wait_for_rows(one_user, 1).await;
    assert_eq!(stored.users, [7]);
    let verdict = check::verdict(100, 1, &tally, &stored);
    assert!(verdict.passed(), "{one_user}:\n{verdict}");
}

/// Twelve campaigns over the three masters at once, every user applying through both servers,
/// two sinks of one group writing: each campaign issues exactly its quota, one coupon per user,
/// every one in MySQL; `coupon-admin audit` on the cluster finds nothing amiss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_campaigns_over_the_slots_with_two_servers_and_two_sinks() {
    const QUOTA: u32 = 40;
    const USERS: u64 = 150;
    let cluster = RedisCluster::start();
    let pipeline = pipeline_on(&cluster, 2, 2).await;
    let campaigns = cluster.campaigns_on_every_master("many", 12);
    for (id, _) in &campaigns {
        pipeline.campaign(id, QUOTA).await;
    }
    pipeline.sinks_hold_partitions().await;

    let pipeline = &pipeline;
    let bursts = campaigns.iter().enumerate().map(|(n, (id, _))| async move {
        let clicks = Crowd {
            seed: n as u64,
            ..Crowd::once_each(USERS)
        }
        .clicks();
        let (mut tally, other) = tokio::join!(
            pipeline.fire(0, id, clicks.clone(), 4),
            pipeline.fire(1, id, clicks, 4),
        );
        tally.merge(other);
        (id, tally)
    });
    let tallies = futures_util::future::join_all(bursts).await;

    for (id, tally) in &tallies {
        assert_eq!(
            tally.winners.len(),
            QUOTA as usize,
            "{id}: {:?}",
            tally.answers
        );
        assert_eq!(
            tally.count("sold_out") + tally.count("duplicate"),
            2 * USERS - u64::from(QUOTA),
            "{id}: {:?}",
            tally.answers
        );
        let stored = pipeline.wait_for_rows(id, u64::from(QUOTA)).await;
        let verdict = check::verdict(u64::from(QUOTA), USERS, tally, &stored);
        assert!(verdict.passed(), "{id}:\n{verdict}");
    }
    // Both sinks took part.
    for sink in &pipeline.sinks {
        assert!(
            sink.assignments().last().is_some_and(|p| !p.is_empty()),
            "a sink without partitions"
        );
    }
    // Lookups through either server, for campaigns on every master.
    for (n, (id, tally)) in tallies.iter().enumerate() {
        let server = &pipeline.http[n % 2].server;
        assert_eq!(server.quota(id).await.unwrap(), u64::from(QUOTA), "{id}");
        let winner = tally.winners[0];
        assert!(
            server
                .admission(id, winner, Some(ADMIN_TOKEN))
                .await
                .unwrap()
                .is_some(),
            "{id}: user {winner} holds a coupon"
        );
        let loser = (1..=USERS)
            .find(|u| !tally.winners.contains(u))
            .expect("a user without a coupon");
        assert_eq!(
            server
                .admission(id, loser, Some(ADMIN_TOKEN))
                .await
                .unwrap(),
            None,
            "{id}: user {loser}"
        );
    }
    // The operators' audit reads each campaign's holders on its own master; a rebuild there
    // (forced, the campaign being open) writes back the same state.
    for (id, _) in campaigns.iter().step_by(4) {
        let (code, out) = pipeline.admin(&["audit", "--campaign", id]);
        assert_eq!(code, 0, "{id}: {out}");
        assert!(out.contains(&format!("{QUOTA} holders")), "{id}: {out}");
    }
    let (id, _) = &campaigns[0];
    let (code, out) = pipeline.admin(&["rebuild", "--campaign", id, "--force"]);
    assert_eq!(code, 0, "{id}: {out}");
    assert!(
        out.contains(&format!("rebuilt: quota {QUOTA}, issued {QUOTA}")),
        "{id}: {out}"
    );
    let (code, out) = pipeline.admin(&["audit", "--campaign", id]);
    assert_eq!(code, 0, "{id}: {out}");
    let again = pipeline.fire(0, id, vec![USERS + 1], 1).await;
    assert_eq!(again.count("sold_out"), 1, "{:?}", again.answers);
}

/// A server remembers a sold-out campaign for ten minutes here, and listens for changes on the
/// first seed node; the campaign lives on another master. Raising its quota there reaches the
/// server at once (the change is published cluster-wide), and the next user is admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_master_reaches_a_server_listening_on_another() {
    let cluster = RedisCluster::start();
    let mut setup = setup_on(&cluster, 1, 1);
    setup
        .http_env
        .push(("COUPON_SOLD_OUT_TTL_MS", "600000".to_owned()));
    let pipeline = Pipeline::start_with(setup).await;
    let (id, _) = cluster
        .campaigns_on_every_master("changes", 3)
        .into_iter()
        .find(|&(_, master)| master != cluster.ports[0])
        .expect("a campaign on another master than the first seed");
    pipeline.campaign(&id, 2).await;
    let sold = pipeline.fire(0, &id, vec![1, 2, 3], 1).await;
    assert_eq!(sold.count("sold_out"), 1, "{:?}", sold.answers);
    // Once the server has read the campaign's holders, sold-out answers come from memory: the
    // subscription is live.
    let metrics = format!("http://{}/metrics", pipeline.http[0].addr);
    let mut user = 3;
    eventually(
        Duration::from_secs(10),
        "a sold-out answer from memory",
        || {
            user += 1;
            let (pipeline, metrics, id, u) = (&pipeline, &metrics, id.as_str(), user);
            async move {
                let answer = pipeline.fire(0, id, vec![u], 1).await;
                assert_eq!(answer.count("sold_out"), 1, "{:?}", answer.answers);
                let scrape = Scrape::get(metrics).await.expect("scrape coupon-http");
                scrape.sum("coupon_sold_out_memory_answers_total", &[]) >= 1.0
            }
        },
    )
    .await;

    pipeline.http[0]
        .server
        .create_campaign(&id, 3, Some(ADMIN_TOKEN))
        .await
        .expect("raise the quota");
    eventually(
        Duration::from_secs(10),
        "the raised quota to be seen through the remembered sold-out answer",
        || async {
            let answer = pipeline.fire(0, &id, vec![1000], 1).await;
            answer.count("success") == 1
        },
    )
    .await;
    let mut stored = pipeline.wait_for_rows(&id, 3).await;
    stored.users.sort_unstable();
    assert_eq!(stored.users, [1, 2, 1000]);
}
