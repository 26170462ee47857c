//! The outbox hand-over: read once per consumer group, take over what a crashed reader left,
//! acknowledge-and-delete what was delivered.

mod support;

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use coupon_gate::{Campaign, Error, EventKind, Release};
use support::{Scratch, ScratchGate, campaign, redis_url, user};

#[tokio::test]
async fn entries_are_read_once_claimed_after_idle_and_deleted_on_ack() {
    let scratch = Scratch::new(&redis_url());
    let gate = scratch.gate().await;
    let id = campaign("outbox");
    gate.create(&Campaign::new(id.clone(), NonZeroU32::new(10).unwrap()))
        .await
        .unwrap();
    for u in 1..=5 {
        assert!(gate.apply(&id, &user(u)).await.unwrap().is_admitted());
    }

    // Relay A reads three and then "crashes"; relay B reads the rest.
    let a = gate.outbox().read(&id, "relay-a", 3).await.unwrap();
    let summary: Vec<_> = a
        .iter()
        .map(|e| (e.kind, e.user.as_number().unwrap(), e.seq))
        .collect();
    assert_eq!(
        summary,
        [
            (EventKind::Admitted, 1, 1),
            (EventKind::Admitted, 2, 2),
            (EventKind::Admitted, 3, 3)
        ]
    );
    assert!(a.iter().all(|e| e.campaign == id));
    let b = gate.outbox().read(&id, "relay-b", 10).await.unwrap();
    assert_eq!(
        b.iter()
            .map(|e| e.user.as_number().unwrap())
            .collect::<Vec<_>>(),
        [4, 5]
    );
    assert!(
        gate.outbox()
            .read(&id, "relay-b", 10)
            .await
            .unwrap()
            .is_empty(),
        "nothing is read twice"
    );

    // Just read, so not idle long enough to be taken over yet.
    assert!(
        gate.outbox()
            .claim(&id, "relay-b", Duration::from_secs(60), 10)
            .await
            .unwrap()
            .is_empty()
    );
    gate.outbox().ack(&id, &b).await.unwrap();

    // A's entries become claimable once idle for the timeout.
    let deadline = Instant::now() + Duration::from_secs(10);
    let claimed = loop {
        let claimed = gate
            .outbox()
            .claim(&id, "relay-b", Duration::from_millis(100), 10)
            .await
            .unwrap();
        if !claimed.is_empty() {
            break claimed;
        }
        assert!(
            Instant::now() < deadline,
            "pending entries were never claimable"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        claimed, a,
        "the claimed entries are the ones A left pending"
    );
    assert_eq!(gate.outbox().len(&id).await.unwrap(), 3);

    gate.outbox().ack(&id, &claimed).await.unwrap();
    gate.outbox().ack(&id, &claimed).await.unwrap();
    assert_eq!(
        gate.outbox().len(&id).await.unwrap(),
        0,
        "acknowledged entries are deleted"
    );
    assert!(
        gate.outbox()
            .claim(&id, "relay-b", Duration::ZERO, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn acknowledging_never_removes_an_entry_no_relay_has_read() {
    let scratch = Scratch::new(&redis_url());
    let gate = scratch.gate().await;
    let id = campaign("unread");
    gate.create(&Campaign::new(id.clone(), NonZeroU32::new(10).unwrap()))
        .await
        .unwrap();
    for u in 1..=5 {
        assert!(gate.apply(&id, &user(u)).await.unwrap().is_admitted());
    }
    let all = gate.outbox().peek(&id).await.unwrap();
    let read = gate.outbox().read(&id, "relay-a", 2).await.unwrap();
    assert_eq!(read, all[..2]);

    // The two delivered ones, and an entry nobody has read yet.
    gate.outbox()
        .ack(&id, [&read[0], &read[1], &all[3]])
        .await
        .unwrap();
    assert_eq!(gate.outbox().peek(&id).await.unwrap(), all[2..]);
    let rest = gate.outbox().read(&id, "relay-a", 10).await.unwrap();
    assert_eq!(rest, all[2..], "the unread entries are all still delivered");
}

#[tokio::test]
async fn a_release_is_recorded_in_the_outbox() {
    let scratch = Scratch::new(&redis_url());
    let gate = scratch.gate().await;
    let id = campaign("released");
    gate.create(&Campaign::new(id.clone(), NonZeroU32::new(3).unwrap()))
        .await
        .unwrap();
    gate.apply(&id, &user(9)).await.unwrap();
    assert_eq!(
        gate.release(&id, &user(9)).await.unwrap(),
        Release::Released { seq: 1 }
    );

    let entries = gate.outbox().read(&id, "r", 10).await.unwrap();
    let summary: Vec<_> = entries
        .iter()
        .map(|e| (e.kind, e.user.as_number().unwrap(), e.seq))
        .collect();
    assert_eq!(
        summary,
        [(EventKind::Admitted, 9, 1), (EventKind::Released, 9, 1)]
    );
    assert!(entries[0].at <= entries[1].at);
}

#[tokio::test]
async fn the_backlog_counts_events_and_the_oldest_waits_until_they_are_acknowledged() {
    let scratch = Scratch::new(&redis_url());
    let gate = scratch.gate().await;
    let outbox = gate.outbox();
    let id = campaign("backlog");
    gate.create(&Campaign::new(id.clone(), NonZeroU32::new(100).unwrap()))
        .await
        .unwrap();
    assert_eq!(outbox.backlog(&id).await.unwrap(), 0);
    assert_eq!(outbox.oldest(&id).await.unwrap(), None);

    // One call admitting ten (one entry), three calls admitting one each, a release.
    let ten: Vec<_> = (1..=10).map(user).collect();
    gate.apply_many(&id, &ten).await.unwrap();
    let first_admitted = outbox.oldest(&id).await.unwrap().expect("an entry");
    for u in 11..=13 {
        gate.apply(&id, &user(u)).await.unwrap();
    }
    // A duplicate adds nothing; a release adds its one event.
    gate.apply(&id, &user(11)).await.unwrap();
    gate.release(&id, &user(12)).await.unwrap();
    assert_eq!(outbox.backlog(&id).await.unwrap(), 14);
    assert_eq!(outbox.len(&id).await.unwrap(), 5);

    // Read: still in the backlog until acknowledged; acknowledged twice, counted once.
    let read = outbox.read(&id, "relay-a", 2).await.unwrap();
    assert_eq!(read.len(), 11, "the ten of the first entry and one more");
    assert_eq!(outbox.backlog(&id).await.unwrap(), 14);
    let first = &read[..10];
    assert_eq!(outbox.oldest(&id).await.unwrap(), Some(first_admitted));
    outbox.ack(&id, first).await.unwrap();
    outbox.ack(&id, first).await.unwrap();
    assert_eq!(outbox.backlog(&id).await.unwrap(), 4);
    // The oldest left is the next entry's.
    assert_eq!(outbox.oldest(&id).await.unwrap(), Some(read[10].at));
    // An id no relay has read is not acknowledged, so not counted off.
    let unread = outbox.peek(&id).await.unwrap();
    outbox.ack(&id, unread.last()).await.unwrap();
    assert_eq!(outbox.backlog(&id).await.unwrap(), 4);

    let rest = outbox.read(&id, "relay-a", 10).await.unwrap();
    outbox
        .ack(&id, read[10..].iter().chain(&rest))
        .await
        .unwrap();
    assert_eq!(outbox.backlog(&id).await.unwrap(), 0);
    assert_eq!(outbox.len(&id).await.unwrap(), 0);
    assert_eq!(outbox.oldest(&id).await.unwrap(), None);

    // A count that went wrong (kept by no older version, say) is right again once the outbox
    // drains.
    let mut conn = coupon_testkit::connect(&redis_url()).await;
    let meta = format!("{}:{{backlog}}:meta", scratch.prefix);
    let () = redis::cmd("HSET")
        .arg(&meta)
        .arg("outbox")
        .arg(-7)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(outbox.backlog(&id).await.unwrap(), 0, "never below zero");
    gate.apply(&id, &user(50)).await.unwrap();
    let last = outbox.read(&id, "relay-a", 10).await.unwrap();
    outbox.ack(&id, &last).await.unwrap();
    let healed: i64 = redis::cmd("HGET")
        .arg(&meta)
        .arg("outbox")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(healed, 0);

    assert_eq!(outbox.backlog(&campaign("nowhere")).await.unwrap(), 0);
}

#[tokio::test]
async fn reading_the_outbox_of_an_unknown_campaign_is_an_error() {
    let scratch = Scratch::new(&redis_url());
    let gate = scratch.gate().await;
    let err = gate
        .outbox()
        .read(&campaign("never-created"), "r", 10)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Refused(_)), "{err}");
}

#[tokio::test]
async fn one_call_writes_one_entry_whose_records_keep_the_arrival_order() {
    let scratch = Scratch::new(&redis_url());
    let gate = scratch.gate().await;
    let id = campaign("one-entry");
    gate.create(&Campaign::new(id.clone(), NonZeroU32::new(3).unwrap()))
        .await
        .unwrap();
    // 9 applies twice and 4 comes after the quota: neither is recorded.
    let users = [9, 2, 9, 7, 4].map(user);
    gate.apply_many(&id, &users).await.unwrap();
    assert_eq!(gate.outbox().len(&id).await.unwrap(), 1, "one stream entry");

    let read = gate.outbox().read(&id, "relay", 1).await.unwrap();
    let records: Vec<_> = read
        .iter()
        .map(|e| (e.user.as_number().unwrap(), e.seq))
        .collect();
    assert_eq!(records, [(9, 1), (2, 2), (7, 3)]);
    assert!(
        read.iter()
            .all(|e| e.entry == read[0].entry && e.at == read[0].at)
    );
    assert_eq!(gate.outbox().peek(&id).await.unwrap(), read);

    gate.outbox().ack(&id, &read).await.unwrap();
    assert_eq!(gate.outbox().len(&id).await.unwrap(), 0);
}
