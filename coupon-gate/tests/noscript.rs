//! The gate reloads its scripts by itself when Redis has forgotten them.

mod support;

use std::num::NonZeroU32;

use coupon_gate::{Campaign, Outcome, Release};
use support::{RedisServer, Scratch, ScratchGate, campaign, connect, user};

#[tokio::test]
async fn apply_succeeds_after_script_flush() {
    // SCRIPT FLUSH is server-wide, so it is done to a Redis of the test's own.
    let server = RedisServer::start();
    let scratch = Scratch::new(&server.url());
    let gate = scratch.gate().await;
    let mut admin = connect(&server.url()).await;
    let id = campaign("flushed");

    gate.create(&Campaign::new(id.clone(), NonZeroU32::new(10).unwrap()))
        .await
        .unwrap();
    assert_eq!(
        gate.apply(&id, &user(1)).await.unwrap(),
        Outcome::Admitted { seq: 1 }
    );

    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .exec_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(
        gate.apply(&id, &user(2)).await.unwrap(),
        Outcome::Admitted { seq: 2 }
    );

    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .exec_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(
        gate.release(&id, &user(2)).await.unwrap(),
        Release::Released { seq: 2 }
    );

    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .exec_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(
        gate.create(&Campaign::new(id.clone(), NonZeroU32::new(10).unwrap()))
            .await
            .unwrap(),
        coupon_gate::Create::Unchanged
    );
}
