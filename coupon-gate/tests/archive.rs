//! Archiving a settled campaign: refused while it is open, its outbox holds events or its
//! holders changed since the seal; once archived, a tombstone answers for it, every other key
//! of it is gone, and an archive cut short is finished by the next call.

mod support;

use std::num::NonZeroU32;
use std::time::{Duration, SystemTime};

use coupon_gate::{
    Archive, Campaign, CampaignId, Close, Create, Gate, Listed, Outcome, Release, Stage, Tombstone,
};
use redis::aio::MultiplexedConnection;
use support::{Scratch, ScratchGate, campaign, connect, next_payload, redis_url, subscribe, user};

fn quota(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

/// Reads and acknowledges everything in the campaign's outbox, as a relay does once the
/// destination confirmed it.
async fn deliver(gate: &Gate<MultiplexedConnection>, id: &CampaignId) {
    let outbox = gate.outbox();
    loop {
        let records = outbox.read(id, "test", 1000).await.unwrap();
        if records.is_empty() {
            break;
        }
        outbox.ack(id, &records).await.unwrap();
    }
}

/// Every key under the scratch prefix, sorted.
async fn keys(scratch: &Scratch) -> Vec<String> {
    let mut conn = connect(scratch.url()).await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", scratch.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    keys
}

/// A campaign of `holders` users out of `quota`, closed, its outbox delivered.
async fn settled(gate: &Gate<MultiplexedConnection>, id: &CampaignId, quota_: u32, holders: u64) {
    gate.create(&Campaign::new(id.clone(), quota(quota_)))
        .await
        .unwrap();
    let users: Vec<_> = (1..=holders).map(user).collect();
    for part in users.chunks(500) {
        for outcome in gate.apply_many(id, part).await.unwrap() {
            assert!(outcome.is_admitted(), "{outcome:?}");
        }
    }
    assert!(matches!(
        gate.close(id).await.unwrap(),
        Close::Closed { .. }
    ));
    deliver(gate, id).await;
}

#[tokio::test]
async fn a_settled_campaign_leaves_only_a_tombstone_that_answers_for_it() {
    let scratch = Scratch::new(&redis_url());
    let gate = scratch.gate().await;
    let id = campaign("spent");
    let other = campaign("other");
    gate.create(&Campaign::new(other.clone(), quota(5)))
        .await
        .unwrap();
    settled(&gate, &id, 1000, 300).await;
    let mut messages = subscribe(&redis_url(), &gate.changes_channel()).await;

    let seal = gate.begin_archive(&id).await.unwrap().unwrap();
    assert_eq!(seal.issued, 300);
    // A release after the seal was read: the holders the caller compared are not the holders.
    assert!(matches!(
        gate.release(&id, &user(7)).await.unwrap(),
        Release::Released { .. }
    ));
    assert_eq!(
        gate.archive(&id, &seal).await.unwrap(),
        Archive::OutboxPending { events: 1 },
        "the release is not delivered yet"
    );
    deliver(&gate, &id).await;
    assert_eq!(gate.archive(&id, &seal).await.unwrap(), Archive::Changed);

    let seal = gate.begin_archive(&id).await.unwrap().unwrap();
    assert_eq!(seal.issued, 299);
    let before = SystemTime::now() - Duration::from_secs(1);
    let Archive::Archived {
        tombstone,
        now: true,
    } = gate.archive(&id, &seal).await.unwrap()
    else {
        panic!("archived now");
    };
    assert!(tombstone.archived_at >= before);
    assert_eq!((tombstone.quota, tombstone.holders), (1000, 299));
    loop {
        // The release published first; then the archive.
        if next_payload(&mut messages, Duration::from_secs(5)).await == "spent" {
            break;
        }
    }

    let meta = format!("{}:{{spent}}:meta", scratch.prefix);
    let left: Vec<String> = keys(&scratch)
        .await
        .into_iter()
        .filter(|k| k.contains("{spent}"))
        .collect();
    assert_eq!(left, [meta], "only the tombstone stays");
    assert_eq!(gate.apply(&id, &user(1)).await.unwrap(), Outcome::Archived);
    assert_eq!(
        gate.apply(&id, &user(999)).await.unwrap(),
        Outcome::Archived
    );
    assert_eq!(
        gate.release(&id, &user(1)).await.unwrap(),
        Release::Archived
    );
    assert_eq!(gate.close(&id).await.unwrap(), Close::Archived);
    assert_eq!(
        gate.create(&Campaign::new(id.clone(), quota(10)))
            .await
            .unwrap(),
        Create::Archived,
        "the id is not reused"
    );
    assert_eq!(gate.status(&id).await.unwrap(), None);
    assert!(
        gate.outbox()
            .read(&id, "late", 10)
            .await
            .unwrap()
            .is_empty(),
        "a relay that still lists it reads nothing"
    );
    assert_eq!(
        gate.listed(&id).await.unwrap(),
        Some(Listed::Archived(tombstone))
    );
    assert_eq!(
        gate.campaigns().await.unwrap(),
        std::slice::from_ref(&other)
    );
    assert_eq!(
        gate.archived_campaigns().await.unwrap(),
        std::slice::from_ref(&id)
    );
    let page = gate.campaign_page(None, 10).await.unwrap();
    let stages: Vec<_> = page
        .iter()
        .map(|(id, l)| (id.as_str(), l.stage(SystemTime::now())))
        .collect();
    assert_eq!(stages, [("other", Stage::Open), ("spent", Stage::Archived)]);

    assert_eq!(
        gate.archive(&id, &seal).await.unwrap(),
        Archive::Archived {
            tombstone,
            now: false
        },
        "archiving twice changes nothing"
    );
    assert_eq!(
        gate.begin_archive(&id).await.unwrap(),
        Err(Archive::Archived {
            tombstone,
            now: false
        })
    );
}

#[tokio::test]
async fn an_open_campaign_or_one_with_events_on_their_way_is_not_archived() {
    let scratch = Scratch::new(&redis_url());
    let gate = scratch.gate().await;
    let id = campaign("live");
    gate.create(&Campaign::new(id.clone(), quota(5)))
        .await
        .unwrap();
    assert_eq!(
        gate.begin_archive(&id).await.unwrap(),
        Err(Archive::NotClosed { closes_at: None })
    );
    let later = SystemTime::now() + Duration::from_secs(3600);
    let windowed = campaign("windowed");
    gate.create(
        &Campaign::new(windowed.clone(), quota(5))
            .with_window(None, Some(later))
            .unwrap(),
    )
    .await
    .unwrap();
    let Err(Archive::NotClosed {
        closes_at: Some(at),
    }) = gate.begin_archive(&windowed).await.unwrap()
    else {
        panic!("not closed");
    };
    assert!(at.duration_since(later).unwrap_or_default() < Duration::from_secs(1));

    assert!(gate.apply(&id, &user(1)).await.unwrap().is_admitted());
    gate.close(&id).await.unwrap();
    assert_eq!(
        gate.begin_archive(&id).await.unwrap(),
        Err(Archive::OutboxPending { events: 1 })
    );
    // Read by a relay but not acknowledged: still on its way.
    let read = gate.outbox().read(&id, "test", 10).await.unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(
        gate.begin_archive(&id).await.unwrap(),
        Err(Archive::OutboxPending { events: 1 })
    );
    gate.outbox().ack(&id, &read).await.unwrap();
    assert!(gate.begin_archive(&id).await.unwrap().is_ok());
    assert_eq!(
        gate.begin_archive(&campaign("nope")).await.unwrap(),
        Err(Archive::UnknownCampaign)
    );
    assert_eq!(
        gate.apply(&campaign("nope"), &user(1)).await.unwrap(),
        Outcome::UnknownCampaign,
        "a campaign never created is unknown, not archived"
    );
}

/// A process killed after the script made the tombstone, before the sweep removed the holders
/// and moved the campaign off the relays' list: the next call finishes it.
#[tokio::test]
async fn an_archive_cut_short_is_finished_by_the_next_call() {
    let scratch = Scratch::new(&redis_url());
    let gate = scratch.gate().await;
    let id = campaign("halfway");
    settled(&gate, &id, 5000, 2000).await;
    let seal = gate.begin_archive(&id).await.unwrap().unwrap();
    let Archive::Archived { tombstone, .. } = gate.archive(&id, &seal).await.unwrap() else {
        panic!("archived");
    };
    // Put back what the sweep removes, as a kill before it would have left it.
    let prefix = &scratch.prefix;
    let mut conn = connect(scratch.url()).await;
    redis::pipe()
        .cmd("HSET")
        .arg(format!("{prefix}:{{halfway}}:meta"))
        .arg("sweep")
        .arg(2)
        .cmd("HSET")
        .arg(format!("{prefix}:{{halfway}}:users:42"))
        .arg("1042")
        .arg(17)
        .cmd("SADD")
        .arg(format!("{prefix}:campaigns"))
        .arg("halfway")
        .exec_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(gate.campaigns().await.unwrap(), std::slice::from_ref(&id));

    assert_eq!(
        gate.begin_archive(&id).await.unwrap(),
        Err(Archive::Archived {
            tombstone,
            now: false
        })
    );
    let left: Vec<String> = keys(&scratch)
        .await
        .into_iter()
        .filter(|k| k.contains("{halfway}"))
        .collect();
    assert_eq!(left, [format!("{prefix}:{{halfway}}:meta")]);
    let sweep: Option<String> = redis::cmd("HGET")
        .arg(format!("{prefix}:{{halfway}}:meta"))
        .arg("sweep")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(sweep, None, "nothing is left to do");
    assert!(gate.campaigns().await.unwrap().is_empty());
}

/// What an archive frees, counted by `MEMORY USAGE` of every key of three campaigns of 10,000
/// holders: at most 1 % of it stays. (BENCHMARKS.md measures 100 campaigns with `INFO memory`.)
#[tokio::test]
async fn a_tombstone_keeps_under_one_percent_of_the_memory() {
    let scratch = Scratch::new(&redis_url());
    let gate = scratch.gate().await;
    let ids: Vec<CampaignId> = (0..3).map(|n| campaign(&format!("big-{n}"))).collect();
    for id in &ids {
        settled(&gate, id, 10_000, 10_000).await;
    }
    let url = scratch.url().to_owned();
    let usage = async |keys: Vec<String>| {
        let mut conn = connect(&url).await;
        let mut total = 0u64;
        for key in keys.iter().filter(|k| k.contains("{big-")) {
            let bytes: Option<u64> = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(key)
                .arg("SAMPLES")
                .arg(0)
                .query_async(&mut conn)
                .await
                .unwrap();
            total += bytes.unwrap_or(0);
        }
        total
    };
    let before = usage(keys(&scratch).await).await;
    let mut tombstones: Vec<Tombstone> = Vec::new();
    for id in &ids {
        let seal = gate.begin_archive(id).await.unwrap().unwrap();
        let Archive::Archived { tombstone, .. } = gate.archive(id, &seal).await.unwrap() else {
            panic!("archived");
        };
        tombstones.push(tombstone);
    }
    assert!(tombstones.iter().all(|t| t.holders == 10_000));
    let after = usage(keys(&scratch).await).await;
    assert!(
        after * 100 <= before,
        "{after} bytes stay of {before} ({:.3} %)",
        after as f64 * 100.0 / before as f64
    );
}

/// A quota of a hundred million names 1.1 million buckets, most never made: the sweep finds the
/// ones that exist with `SCAN` instead of removing every name.
#[tokio::test]
async fn a_campaign_of_a_huge_quota_is_swept_by_its_buckets_that_exist() {
    let scratch = Scratch::new(&redis_url());
    let gate = scratch.gate().await;
    let id = campaign("huge");
    settled(&gate, &id, 100_000_000, 1_500).await;
    let seal = gate.begin_archive(&id).await.unwrap().unwrap();
    assert!(matches!(
        gate.archive(&id, &seal).await.unwrap(),
        Archive::Archived { now: true, .. }
    ));
    let left: Vec<String> = keys(&scratch)
        .await
        .into_iter()
        .filter(|k| k.contains("{huge}"))
        .collect();
    assert_eq!(left, [format!("{}:{{huge}}:meta", scratch.prefix)]);
}
