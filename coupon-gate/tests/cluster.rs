//! The library over a real Redis Cluster (3 masters, 3 replicas, started by the test): the
//! seed's three scenarios through the batcher, campaigns spread over the masters, and the
//! outbox protocol on each campaign's slot. Every campaign's keys share its hash tag, so each
//! script runs on the one master that owns the campaign.

mod support;

use std::collections::BTreeSet;
use std::num::NonZeroU32;

use std::time::Duration;

use coupon_gate::{BatchConfig, Batcher, Campaign, CampaignState, Gate, Outcome, RedisTarget};
use coupon_testkit::RedisCluster;
use support::{campaign, next_payload, subscribe, user};

/// A gate over `cluster`, through its nodes.
async fn cluster_gate(cluster: &RedisCluster) -> Gate<coupon_gate::RedisConnection> {
    let conn = RedisTarget::from_config("redis://unused:1", &cluster.nodes())
        .connect(Duration::from_secs(5))
        .await
        .unwrap();
    Gate::new(conn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_scenarios_hold_on_a_cluster_with_campaigns_on_every_master() {
    let cluster = RedisCluster::start();
    // As the binaries connect, given REDIS_CLUSTER_NODES.
    let conn = RedisTarget::from_config("redis://unused:1", &cluster.nodes())
        .connect(Duration::from_secs(5))
        .await
        .unwrap();
    assert!(conn.is_cluster());
    let gate = Gate::new(conn);
    let batcher = Batcher::new(gate.clone(), BatchConfig::default());

    // Campaigns until every master owns one (their slots follow their ids' hash tags).
    let campaigns: Vec<_> = cluster
        .campaigns_on_every_master("spread", 1)
        .iter()
        .map(|(id, _)| campaign(id))
        .collect();

    let batcher = &batcher;
    for id in &campaigns {
        gate.create(&Campaign::new(id.clone(), NonZeroU32::new(100).unwrap()))
            .await
            .unwrap();

        // 한번만응모: one application, one admission.
        assert_eq!(
            batcher.apply(id, user(1)).await.unwrap(),
            Outcome::Admitted { seq: 1 }
        );

        // 여러명응모: 1,000 distinct users at once (user 1 among them again) on quota 100.
        let answers = futures_util::future::join_all(
            (1..=1000).map(|u| async move { (u, batcher.apply(id, user(u)).await.unwrap()) }),
        )
        .await;
        let admitted: BTreeSet<u32> = answers
            .iter()
            .filter_map(|(_, outcome)| match outcome {
                Outcome::Admitted { seq } => Some(*seq),
                _ => None,
            })
            .collect();
        assert_eq!(admitted, (2..=100).collect(), "{id}: 99 more, seqs 2..=100");
        let sold_out = answers
            .iter()
            .filter(|(_, outcome)| *outcome == Outcome::SoldOut)
            .count();
        assert_eq!(sold_out, 900, "{id}");

        // 한명당_한개의_쿠폰발급: one admitted user applying 200 times at once.
        let again = futures_util::future::join_all(
            (0..200).map(|_| async { batcher.apply(id, user(1)).await.unwrap() }),
        )
        .await;
        assert!(
            again
                .iter()
                .all(|outcome| *outcome == Outcome::Duplicate { seq: 1 }),
            "{id}: {again:?}"
        );

        let status = gate.status(id).await.unwrap().expect("the campaign");
        assert_eq!((status.issued, status.remaining()), (100, 0), "{id}");
    }

    // Every campaign is listed, and its outbox is read and drained on its own slot.
    let listed: BTreeSet<_> = gate.campaigns().await.unwrap().into_iter().collect();
    assert!(campaigns.iter().all(|id| listed.contains(id)));
    let outbox = gate.outbox();
    for id in &campaigns {
        assert_eq!(outbox.backlog(id).await.unwrap(), 100, "{id}");
        assert!(outbox.oldest(id).await.unwrap().is_some());
        let records = outbox.read(id, "relay-a", 1000).await.unwrap();
        let users: BTreeSet<u64> = records
            .iter()
            .map(|r| r.user.as_number().unwrap())
            .collect();
        assert_eq!(users.len(), 100, "{id}");
        outbox.ack(id, &records).await.unwrap();
        assert_eq!(outbox.backlog(id).await.unwrap(), 0, "{id}");
        assert_eq!(outbox.len(id).await.unwrap(), 0, "{id}");
        assert_eq!(outbox.oldest(id).await.unwrap(), None, "{id}");
    }

    // The operators' reads and restores find each campaign's holders on its own master, and a
    // restore there puts back exactly what was read.
    let recovery = gate.recovery();
    for id in &campaigns {
        let holders = recovery.holders(id).await.unwrap();
        let seqs: BTreeSet<u32> = holders.iter().map(|&(_, seq)| seq).collect();
        assert_eq!(seqs, (1..=100).collect(), "{id}: holders on its master");
        let state = CampaignState::new(
            Campaign::new(id.clone(), NonZeroU32::new(100).unwrap()),
            holders.clone(),
        )
        .unwrap();
        recovery.restore(&state).await.unwrap();
        assert_eq!(recovery.holders(id).await.unwrap(), holders, "{id}");
        assert_eq!(
            batcher.apply(id, user(5000)).await.unwrap(),
            Outcome::SoldOut
        );
    }
}

/// With replica confirmations, an admission is answered, and its outbox entry read for
/// delivery, only once the campaign's master has that many replicas holding it: here each
/// master has one, so requiring one succeeds and requiring two fails as undecided.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admissions_wait_for_the_replicas_of_their_master() {
    let cluster = RedisCluster::start();
    let conn = RedisTarget::cluster(cluster.nodes())
        .connect(Duration::from_secs(5))
        .await
        .unwrap();
    let one = Gate::new(conn.clone()).with_replica_acks(1, Duration::from_secs(2));
    let two = Gate::new(conn).with_replica_acks(2, Duration::from_millis(100));
    for n in 0..3 {
        let id = campaign(&format!("replicated-{n}"));
        one.create(&Campaign::new(id.clone(), NonZeroU32::new(10).unwrap()))
            .await
            .unwrap();
        assert_eq!(
            one.apply(&id, &user(1)).await.unwrap(),
            Outcome::Admitted { seq: 1 }
        );
        match two.apply(&id, &user(2)).await {
            Err(coupon_gate::Error::NotReplicated {
                confirmed: 1,
                required: 2,
            }) => {}
            other => panic!("{id}: {other:?}"),
        }
        // Undecided, not refused: the master admitted the user, as a retry tells.
        assert_eq!(
            one.apply(&id, &user(2)).await.unwrap(),
            Outcome::Duplicate { seq: 2 }
        );
        assert!(matches!(
            two.outbox().read(&id, "relay-b", 10).await,
            Err(coupon_gate::Error::NotReplicated { .. })
        ));
        // What the failed read took is pending; taken over, it is confirmed and delivered.
        let claimed = one
            .outbox()
            .claim(&id, "relay-a", Duration::ZERO, 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 2, "{id}");
    }
}

/// Why replicas must confirm. With the campaign's replica stalled, an admission answered at once
/// is gone when that replica takes over from its failed master, and its seq goes to another user
/// (two users told the same seq); with confirmations, the same situation answers
/// `NotReplicated` ("try again"), never an admission a failover can take back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_takes_back_what_no_replica_confirmed() {
    let mut cluster = RedisCluster::start();
    let mut conn = RedisTarget::cluster(cluster.nodes())
        .connect(Duration::from_secs(5))
        .await
        .unwrap();
    let at_once = Gate::new(conn.clone());
    let confirmed = Gate::new(conn.clone()).with_replica_acks(1, Duration::from_secs(2));
    let id = campaign("failover-loss");
    at_once
        .create(&Campaign::new(id.clone(), NonZeroU32::new(10).unwrap()))
        .await
        .unwrap();
    assert_eq!(
        confirmed.apply(&id, &user(1)).await.unwrap(),
        Outcome::Admitted { seq: 1 }
    );

    let key = "{failover-loss}";
    let master = cluster.master_of(key);
    let replica = cluster.replica_of(master);
    cluster.pause(replica);
    // 64 MiB of writes on the campaign's slot first, more than the sockets between master and
    // replica buffer: what follows stays in the master's memory until the replica reads again.
    for n in 0..4 {
        redis::cmd("SET")
            .arg(format!("ballast:{key}:{n}"))
            .arg(vec![b'x'; 16 << 20])
            .exec_async(&mut conn)
            .await
            .unwrap();
    }
    assert_eq!(
        at_once.apply(&id, &user(2)).await.unwrap(),
        Outcome::Admitted { seq: 2 },
        "answered before any replica holds it"
    );
    match confirmed.apply(&id, &user(3)).await {
        Err(coupon_gate::Error::NotReplicated {
            confirmed: 0,
            required: 1,
        }) => {}
        other => panic!("{other:?}"),
    }
    cluster.kill(master);
    cluster.resume(replica);
    assert_eq!(cluster.wait_promoted(key, master), replica);

    // The promoted master has no replica yet: what must be confirmed fails closed.
    assert!(matches!(
        confirmed.apply(&id, &user(1)).await,
        Err(coupon_gate::Error::NotReplicated { confirmed: 0, .. })
    ));
    // The confirmed admission survived; the one answered at once did not, and its seq is
    // handed out again.
    assert_eq!(
        at_once.apply(&id, &user(1)).await.unwrap(),
        Outcome::Duplicate { seq: 1 }
    );
    let status = at_once.status(&id).await.unwrap().expect("the campaign");
    assert_eq!(status.issued, 1, "user 2's admission went with the master");
    assert_eq!(
        at_once.apply(&id, &user(4)).await.unwrap(),
        Outcome::Admitted { seq: 2 },
        "seq 2 again, for another user"
    );
}

/// The outbox announcements of campaigns on every master reach a subscriber on one node: a
/// relay resting empty outboxes on a cluster hears of each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_announcements_from_every_master_reach_one_subscriber() {
    let cluster = RedisCluster::start();
    let gate = cluster_gate(&cluster).await;
    let mut messages = subscribe(cluster.nodes()[0].as_str(), &gate.outbox_channel()).await;

    let campaigns: BTreeSet<String> = cluster
        .campaigns_on_every_master("announced", 1)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    for id in &campaigns {
        let id = campaign(id);
        gate.create(&Campaign::new(id.clone(), NonZeroU32::new(10).unwrap()))
            .await
            .unwrap();
        assert!(gate.apply(&id, &user(1)).await.unwrap().is_admitted());
    }
    let mut heard = BTreeSet::new();
    while heard.len() < campaigns.len() {
        heard.insert(next_payload(&mut messages, Duration::from_secs(10)).await);
    }
    assert_eq!(heard, campaigns);
}

/// The page of campaigns over a cluster: one registry read, and the statuses of campaigns that
/// live on every master (one pipeline over several slots is refused: `CROSSSLOT`); a close and a
/// release on campaigns of different masters, and an archive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_of_campaigns_reads_every_master_and_close_and_release_work_there() {
    let cluster = RedisCluster::start();
    let gate = cluster_gate(&cluster).await;
    let ids: Vec<_> = cluster
        .campaigns_on_every_master("life", 1)
        .iter()
        .map(|(id, _)| campaign(id))
        .collect();
    assert!(ids.len() >= 3, "one campaign per master: {ids:?}");
    for (i, id) in ids.iter().enumerate() {
        gate.create(&Campaign::new(
            id.clone(),
            NonZeroU32::new(u32::try_from(i).unwrap() + 2).unwrap(),
        ))
        .await
        .unwrap();
        assert!(gate.apply(id, &user(1)).await.unwrap().is_admitted());
    }
    assert!(matches!(
        gate.close(&ids[0]).await.unwrap(),
        coupon_gate::Close::Closed { .. }
    ));
    assert_eq!(
        gate.release(&ids[1], &user(1)).await.unwrap(),
        coupon_gate::Release::Released { seq: 1 }
    );

    let page = gate.campaign_page(None, 1000).await.unwrap();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(
        page.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        sorted
    );
    let now = std::time::SystemTime::now();
    for (id, listed) in &page {
        let coupon_gate::Listed::Live(status) = listed else {
            panic!("{id} is live");
        };
        let i = ids.iter().position(|x| x == id).unwrap();
        assert_eq!(status.quota, u32::try_from(i).unwrap() + 2, "{id}");
        let expected = match i {
            0 => (1, coupon_gate::Stage::Closed),
            1 => (0, coupon_gate::Stage::Open),
            _ => (1, coupon_gate::Stage::Open),
        };
        assert_eq!((status.issued, status.stage(now)), expected, "{id}");
    }
    assert_eq!(
        gate.apply(&ids[0], &user(2)).await.unwrap(),
        Outcome::Closed
    );

    // Archived there: the script on the campaign's master, the lists on theirs.
    let outbox = gate.outbox();
    let read = outbox.read(&ids[0], "test", 10).await.unwrap();
    outbox.ack(&ids[0], &read).await.unwrap();
    let seal = gate.begin_archive(&ids[0]).await.unwrap().unwrap();
    assert!(matches!(
        gate.archive(&ids[0], &seal).await.unwrap(),
        coupon_gate::Archive::Archived { now: true, .. }
    ));
    assert_eq!(
        gate.apply(&ids[0], &user(2)).await.unwrap(),
        Outcome::Archived
    );
    assert!(!gate.campaigns().await.unwrap().contains(&ids[0]));
    let page = gate.campaign_page(None, 1000).await.unwrap();
    assert_eq!(page.len(), ids.len(), "the archived campaign is listed");
    assert!(
        page.iter()
            .any(|(id, l)| id == &ids[0] && matches!(l, coupon_gate::Listed::Archived(_)))
    );
}
