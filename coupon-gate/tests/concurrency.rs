//! Many concurrent applications never admit more users than the quota, nor one user twice.

mod support;

use std::collections::BTreeSet;
use std::num::NonZeroU32;

use coupon_gate::{Campaign, EventKind, Outcome};
use support::{Scratch, ScratchGate, campaign, redis_url, user};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_distinct_users_on_quota_100_admit_exactly_100() {
    let scratch = Scratch::new(&redis_url());
    let gate = scratch.gate().await;
    let id = campaign("race");
    gate.create(&Campaign::new(id.clone(), NonZeroU32::new(100).unwrap()))
        .await
        .unwrap();

    let tasks: Vec<_> = (1..=1000)
        .map(|u| {
            let (gate, id) = (gate.clone(), id.clone());
            tokio::spawn(async move { (u, gate.apply(&id, &user(u)).await.unwrap()) })
        })
        .collect();
    let mut admitted = Vec::new();
    let mut sold_out = 0;
    for task in tasks {
        match task.await.unwrap() {
            (u, Outcome::Admitted { seq }) => admitted.push((u, seq)),
            (_, Outcome::SoldOut) => sold_out += 1,
            (u, other) => panic!("user {u}: unexpected {other:?}"),
        }
    }
    assert_eq!(admitted.len(), 100);
    assert_eq!(sold_out, 900);
    let seqs: BTreeSet<u32> = admitted.iter().map(|&(_, s)| s).collect();
    assert_eq!(seqs, (1..=100).collect(), "seqs are exactly 1..=100");

    let status = gate.status(&id).await.unwrap().unwrap();
    assert_eq!((status.issued, status.remaining()), (100, 0));

    assert_eq!(gate.outbox().len(&id).await.unwrap(), 100);
    let entries = gate.outbox().read(&id, "checker", 1000).await.unwrap();
    let from_outbox: BTreeSet<(u64, u32)> = entries
        .iter()
        .inspect(|e| assert_eq!(e.kind, EventKind::Admitted))
        .map(|e| (e.user.as_number().unwrap(), e.seq))
        .collect();
    assert_eq!(
        from_outbox,
        admitted.into_iter().collect(),
        "the outbox records exactly the admissions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_applying_1000_times_concurrently_is_admitted_once() {
    let scratch = Scratch::new(&redis_url());
    let gate = scratch.gate().await;
    let id = campaign("one-user");
    gate.create(&Campaign::new(id.clone(), NonZeroU32::new(100).unwrap()))
        .await
        .unwrap();

    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (gate, id) = (gate.clone(), id.clone());
            tokio::spawn(async move { gate.apply(&id, &user(7)).await.unwrap() })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    let admitted = outcomes.iter().filter(|o| o.is_admitted()).count();
    let duplicates = outcomes
        .iter()
        .filter(|o| **o == Outcome::Duplicate { seq: 1 })
        .count();
    assert_eq!((admitted, duplicates), (1, 999));
    assert_eq!(gate.status(&id).await.unwrap().unwrap().issued, 1);
    assert_eq!(gate.outbox().len(&id).await.unwrap(), 1);
}
