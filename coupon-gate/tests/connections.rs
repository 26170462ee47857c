//! The gate works over every kind of async connection redis-rs offers: a reconnecting
//! `ConnectionManager`, and a Redis Cluster connection (the campaign's hash tag keeps each
//! script on one node).

mod support;

use std::num::NonZeroU32;

use coupon_gate::{Campaign, Gate, Outcome, Release};
use coupon_testkit::RedisCluster;
use redis::aio::ConnectionLike;
use support::{Scratch, campaign, redis_url, user};

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
    let cluster = RedisCluster::start_with(3, 0, &[]);
    exercise(&Gate::new(cluster.connection().await)).await;
}
