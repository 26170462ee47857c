//! The batcher under a real crowd: concurrent applications are coalesced into far fewer script
//! calls, and the guarantees hold as without it. (Its outcomes, batch by batch and in arrival
//! order, are checked against the sequential model in `model.rs`.)

mod support;

use std::collections::BTreeSet;
use std::num::NonZeroU32;

use coupon_gate::{BatchConfig, Batcher, Campaign, Outcome};
use support::{RedisServer, Scratch, ScratchGate, campaign, connect, script_calls, user};
use tokio::task::JoinSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_through_the_batcher_gets_exactly_the_quota_in_fewer_calls() {
    // An own Redis, so that no other test's calls move the counter.
    let server = RedisServer::start();
    let scratch = Scratch::new(&server.url());
    let gate = scratch.gate().await;
    let mut admin = connect(&server.url()).await;
    let id = campaign("crowd");
    gate.create(&Campaign::new(id.clone(), NonZeroU32::new(100).unwrap()))
        .await
        .unwrap();
    let batcher = Batcher::new(gate.clone(), BatchConfig::default());

    let before = script_calls(&mut admin).await;
    let mut crowd = JoinSet::new();
    // 2000 applications of 1000 users, each user twice.
    for u in (1..=1000).chain(1..=1000) {
        let (batcher, id) = (batcher.clone(), id.clone());
        crowd.spawn(async move { (u, batcher.apply(&id, user(u)).await.unwrap()) });
    }
    let outcomes = crowd.join_all().await;
    let calls = script_calls(&mut admin).await - before;

    let admitted: Vec<_> = outcomes
        .iter()
        .filter_map(|(u, o)| match o {
            Outcome::Admitted { seq } => Some((*u, *seq)),
            _ => None,
        })
        .collect();
    let users: BTreeSet<_> = admitted.iter().map(|(u, _)| u).collect();
    let seqs: BTreeSet<_> = admitted.iter().map(|(_, s)| *s).collect();
    assert_eq!(admitted.len(), 100);
    assert_eq!(users.len(), 100, "no user admitted twice");
    assert_eq!(seqs, (1..=100).collect());
    for (u, outcome) in &outcomes {
        if let Outcome::Duplicate { seq } = outcome {
            assert!(
                admitted.contains(&(*u, *seq)),
                "user {u}: duplicate of a seq it holds"
            );
        }
    }
    assert_eq!(
        outcomes
            .iter()
            .filter(|(_, o)| *o == Outcome::SoldOut)
            .count()
            + outcomes
                .iter()
                .filter(|(_, o)| matches!(o, Outcome::Duplicate { .. }))
                .count(),
        1900
    );
    assert!(
        calls < 2000 / 4,
        "{calls} script calls for 2000 applications"
    );
    eprintln!("2000 applications in {calls} script calls");
}

#[tokio::test]
async fn a_batcher_of_one_calls_once_per_application_and_idle_queues_end() {
    let server = RedisServer::start();
    let scratch = Scratch::new(&server.url());
    let gate = scratch.gate().await;
    let mut admin = connect(&server.url()).await;
    let id = campaign("single");
    gate.create(&Campaign::new(id.clone(), NonZeroU32::new(3).unwrap()))
        .await
        .unwrap();

    let single = Batcher::new(
        gate.clone(),
        BatchConfig {
            max_batch: 1,
            ..BatchConfig::default()
        },
    );
    // Loads the script (a first EVALSHA answered NOSCRIPT is counted apart).
    assert!(gate.apply(&id, &user(1)).await.unwrap().is_admitted());
    let before = script_calls(&mut admin).await;
    for u in 1..=5 {
        single.apply(&id, user(u)).await.unwrap();
    }
    assert_eq!(script_calls(&mut admin).await - before, 5);

    // A task that ended for idleness is replaced on the next application.
    let brief = Batcher::new(
        gate,
        BatchConfig {
            idle: std::time::Duration::from_millis(1),
            ..BatchConfig::default()
        },
    );
    for u in 1..=3 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert_eq!(
            brief.apply(&id, user(u)).await.unwrap(),
            Outcome::Duplicate { seq: u as u32 }
        );
    }
}
