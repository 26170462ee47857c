//! Rejections write nothing: a sold-out campaign under a flash crowd costs Redis reads only.

mod support;

use std::num::NonZeroU32;

use coupon_gate::{Campaign, Outcome};
use support::{RedisServer, Scratch, ScratchGate, campaign, connect, info_field, user};

/// Redis's count of writes since the last save (`server.dirty`): every write command bumps it.
async fn dirty(conn: &mut redis::aio::MultiplexedConnection) -> i64 {
    info_field(conn, "persistence", "rdb_changes_since_last_save").await
}

#[tokio::test]
async fn sold_out_duplicate_and_unknown_applications_write_nothing() {
    // An own Redis, so that no other test's writes move the counter.
    let server = RedisServer::start();
    let scratch = Scratch::new(&server.url());
    let gate = scratch.gate().await;
    let mut admin = connect(&server.url()).await;
    let id = campaign("flash");
    gate.create(&Campaign::new(id.clone(), NonZeroU32::new(2).unwrap()))
        .await
        .unwrap();

    // The counter does see the admission path's writes, so it can catch a write on the others.
    let before = dirty(&mut admin).await;
    assert!(gate.apply(&id, &user(1)).await.unwrap().is_admitted());
    assert!(gate.apply(&id, &user(2)).await.unwrap().is_admitted());
    assert!(
        dirty(&mut admin).await > before,
        "admissions must register as writes"
    );

    let before = dirty(&mut admin).await;
    for u in 3..=1002 {
        assert_eq!(gate.apply(&id, &user(u)).await.unwrap(), Outcome::SoldOut);
    }
    let batch: Vec<_> = (2000..2100).map(user).collect();
    assert!(
        gate.apply_many(&id, &batch)
            .await
            .unwrap()
            .iter()
            .all(|o| *o == Outcome::SoldOut)
    );
    assert_eq!(
        gate.apply(&id, &user(1)).await.unwrap(),
        Outcome::Duplicate { seq: 1 }
    );
    assert_eq!(
        gate.apply(&campaign("nope"), &user(1)).await.unwrap(),
        Outcome::UnknownCampaign
    );
    assert_eq!(
        dirty(&mut admin).await,
        before,
        "a rejection wrote to Redis"
    );
}
