//! The gate works over every kind of async connection redis-rs offers: a reconnecting
//! `ConnectionManager`, and a Redis Cluster connection (the campaign's hash tag keeps each
//! script on one node).

mod support;

use std::num::NonZeroU32;
use std::process::Command;
use std::time::{Duration, Instant};

use coupon_gate::{Campaign, Gate, Outcome, Release};
use redis::aio::ConnectionLike;
use support::{RedisServer, Scratch, campaign, redis_url, user};

/// Creates two campaigns and drives every gate operation on them.
async fn exercise<C: ConnectionLike + Clone + Send + Sync>(gate: &Gate<C>) {
    let ids = [campaign("conn-a"), campaign("conn-b")];
    for id in &ids {
        gate.create(&Campaign::new(id.clone(), NonZeroU32::new(2).unwrap()))
            .await
            .unwrap();
        assert_eq!(
            gate.apply(id, &user(1)).await.unwrap(),
            Outcome::Admitted { seq: 1 }
        );
        let batch = [user(2), user(3), user(1)];
        assert_eq!(
            gate.apply_many(id, &batch).await.unwrap(),
            [
                Outcome::Admitted { seq: 2 },
                Outcome::SoldOut,
                Outcome::Duplicate { seq: 1 }
            ]
        );
        assert_eq!(
            gate.release(id, &user(2)).await.unwrap(),
            Release::Released { seq: 2 }
        );
        assert_eq!(gate.status(id).await.unwrap().unwrap().issued, 1);
        assert_eq!(gate.admission(id, &user(1)).await.unwrap(), Some(1));
        let entries = gate.outbox().read(id, "c", 10).await.unwrap();
        assert_eq!(entries.len(), 3);
        gate.outbox().ack(id, &entries).await.unwrap();
        assert_eq!(gate.outbox().len(id).await.unwrap(), 0);
    }
    assert_eq!(gate.campaigns().await.unwrap(), ids);
}

#[tokio::test]
async fn over_a_connection_manager() {
    let scratch = Scratch::new(&redis_url());
    let client = redis::Client::open(redis_url()).unwrap();
    let conn = redis::aio::ConnectionManager::new(client).await.unwrap();
    exercise(&Gate::with_key_prefix(conn, scratch.prefix.clone()).unwrap()).await;
}

#[tokio::test]
async fn over_a_redis_cluster() {
    let nodes: Vec<RedisServer> = (0..3)
        .map(|_| {
            RedisServer::start_with(&[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
        })
        .collect();
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let status = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("redis-cli");
    assert!(
        status.status.success(),
        "cluster create: {}",
        String::from_utf8_lossy(&status.stdout)
    );

    // Every node must see every slot covered before the cluster takes commands.
    let deadline = Instant::now() + Duration::from_secs(20);
    for node in &nodes {
        let client = redis::Client::open(node.url()).unwrap();
        loop {
            let info: String = client
                .get_connection()
                .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query(&mut c))
                .unwrap_or_default();
            if info.contains("cluster_state:ok") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "cluster on {} never reached state ok",
                node.url()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    let urls: Vec<String> = nodes.iter().map(RedisServer::url).collect();
    let client = redis::cluster::ClusterClient::new(urls).unwrap();
    let conn = client.get_async_connection().await.unwrap();
    exercise(&Gate::new(conn)).await;
}
