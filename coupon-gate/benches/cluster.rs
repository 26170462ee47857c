//! The capacity of a Redis Cluster shard, beside a standalone Redis measured in the same run.
//!
//! Starts its own servers on free loopback ports: a cluster of 3 masters with a replica each,
//! and one standalone `redis-server` started the same way (no persistence). Each iteration is
//! `BURST` concurrent applications of distinct users through a `Batcher` over one
//! `RedisConnection`, as a `coupon-http` process sends them; every one must be admitted.
//!
//! - `standalone`: one campaign on the standalone server: the reference.
//! - `one_shard`: one campaign on the cluster: all its keys share one slot, so this is both
//!   what one shard admits and the ceiling of one hot campaign.
//! - `one_shard_wait_1`: the same with every admission confirmed by the master's replica
//!   (`Gate::with_replica_acks(1, ..)`, `COUPON_REDIS_WAIT_REPLICAS=1`).
//! - `three_shards`: three campaigns, one per master, each user sent to the one its id picks:
//!   campaigns spread over the shards, and also the traffic of one campaign split over three
//!   hash-tagged sub-campaigns (the design for a campaign bigger than a shard: `README.md`,
//!   *Capacity on a Redis Cluster*).
//!
//! On a machine of few cores the masters, replicas and this client share them, so the spread
//! figures show what the client side costs and that nothing serialises across shards, not the
//! scaling of separate machines.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use coupon_gate::{
    BatchConfig, Batcher, Campaign, CampaignId, Gate, RedisConnection, RedisTarget, UserId,
};
use coupon_testkit::{RedisCluster, RedisServer};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

/// Applications in flight at once: an HTTP server's crowd.
const BURST: u64 = 1024;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A batcher over `cluster`, or over `server` without one, and `count` campaigns of unlimited
/// quota whose ids start with `stem`, each on another master of the cluster.
fn setup(
    rt: &Runtime,
    (server, cluster): (&RedisServer, Option<&RedisCluster>),
    stem: &str,
    count: usize,
    replicas: u32,
) -> (Batcher<RedisConnection>, Vec<CampaignId>) {
    let target = cluster.map_or_else(
        || RedisTarget::server(server.url()),
        |cluster| RedisTarget::cluster(cluster.nodes()),
    );
    rt.block_on(async {
        let conn = target
            .connect(Duration::from_secs(5))
            .await
            .expect("connect");
        let gate = Gate::with_key_prefix(conn, format!("bench-{}", std::process::id()))
            .expect("prefix")
            .with_replica_acks(replicas, Duration::from_secs(1));
        let ids = pick(cluster, stem, count);
        for id in &ids {
            gate.create(&Campaign::new(id.clone(), NonZeroU32::MAX))
                .await
                .expect("create");
        }
        (Batcher::new(gate, BatchConfig::default()), ids)
    })
}

/// `count` campaign ids starting with `stem`, each on another master of `cluster`, or any
/// `count` without one.
fn pick(cluster: Option<&RedisCluster>, stem: &str, count: usize) -> Vec<CampaignId> {
    let id = |n: usize| CampaignId::new(format!("{stem}-{n}")).expect("id");
    let Some(cluster) = cluster else {
        return (0..count).map(id).collect();
    };
    let mut masters = Vec::new();
    let ids: Vec<CampaignId> = cluster
        .campaigns_on_every_master(stem, 1)
        .into_iter()
        .filter(|(_, master)| {
            let first = !masters.contains(master);
            if first {
                masters.push(*master);
            }
            first
        })
        .take(count)
        .map(|(id, _)| CampaignId::new(id).expect("id"))
        .collect();
    assert_eq!(ids.len(), count, "not {count} masters");
    ids
}

/// `BURST` distinct users at once, spread over `ids` by user (as a sub-campaign split picks
/// one by the user's id); every one must be admitted.
async fn burst(batcher: &Batcher<RedisConnection>, ids: &[CampaignId], users: &AtomicU64) {
    let mut set = JoinSet::new();
    for _ in 0..BURST {
        let u = users.fetch_add(1, Ordering::Relaxed);
        let id = ids[(u % ids.len() as u64) as usize].clone();
        let batcher = batcher.clone();
        set.spawn(async move {
            batcher
                .apply(&id, UserId::from_number(u).expect("user"))
                .await
        });
    }
    while let Some(joined) = set.join_next().await {
        let outcome = joined.expect("task").expect("apply");
        assert!(outcome.is_admitted(), "unexpected {outcome:?}");
    }
}

fn cluster(c: &mut Criterion) {
    let standalone = RedisServer::start();
    let cluster = RedisCluster::start();
    let rt = runtime();
    let mut group = c.benchmark_group("cluster");
    group.throughput(Throughput::Elements(BURST));
    let cases: [(&str, Option<&RedisCluster>, usize, u32); 4] = [
        ("standalone", None, 1, 0),
        ("one_shard", Some(&cluster), 1, 0),
        ("one_shard_wait_1", Some(&cluster), 1, 1),
        ("three_shards", Some(&cluster), 3, 0),
    ];
    for (name, on, campaigns, replicas) in cases {
        // A batcher's tasks live on the runtime that first uses it.
        let (batcher, ids) = setup(&rt, (&standalone, on), name, campaigns, replicas);
        let users = AtomicU64::new(1);
        group.bench_function(name, |b| {
            b.iter(|| rt.block_on(burst(&batcher, &ids, &users)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = cluster
}
criterion_main!(benches);
