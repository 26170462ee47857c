//! A campaign's life after it opens: ended early by `close` (applications answered `Closed`, a
//! draw not run cancelled, the definition kept for good), and the page of campaigns with their
//! stages.

mod support;

use std::num::NonZeroU32;
use std::time::{Duration, SystemTime};

use coupon_gate::{Campaign, CampaignId, Close, Create, Draw, Outcome, Stage};
use support::{Scratch, ScratchGate, campaign, next_payload, redis_url, subscribe, user};

fn quota(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

#[tokio::test]
async fn a_closed_campaign_answers_closed_keeps_its_holders_and_cannot_be_reopened() {
    let scratch = Scratch::new(&redis_url());
    let gate = scratch.gate().await;
    let mut messages = subscribe(&redis_url(), &gate.changes_channel()).await;

    let id = campaign("ends");
    let definition = Campaign::new(id.clone(), quota(3));
    gate.create(&definition).await.unwrap();
    assert_eq!(
        next_payload(&mut messages, Duration::from_secs(5)).await,
        "ends"
    );
    assert!(gate.apply(&id, &user(1)).await.unwrap().is_admitted());

    let before = SystemTime::now() - Duration::from_secs(1);
    let Close::Closed { at } = gate.close(&id).await.unwrap() else {
        panic!("the first close closes");
    };
    assert!(at >= before, "closed now, by Redis's clock");
    assert_eq!(
        next_payload(&mut messages, Duration::from_secs(5)).await,
        "ends",
        "a close is published, so that sold-out memories forget the campaign"
    );
    assert_eq!(gate.apply(&id, &user(2)).await.unwrap(), Outcome::Closed);
    assert_eq!(
        gate.apply(&id, &user(1)).await.unwrap(),
        Outcome::Closed,
        "a holder applying again is told closed too"
    );
    assert_eq!(
        gate.admission(&id, &user(1)).await.unwrap(),
        Some(1),
        "closing takes no coupon back"
    );
    assert_eq!(
        gate.close(&id).await.unwrap(),
        Close::AlreadyClosed { at },
        "closing again changes nothing"
    );
    assert_eq!(
        gate.create(&definition).await.unwrap(),
        Create::Ended,
        "sending the definition again does not reopen it"
    );
    let status = gate.status(&id).await.unwrap().unwrap();
    assert_eq!(status.closes_at, Some(at));
    assert_eq!(status.issued, 1);
    assert_eq!(status.stage(SystemTime::now()), Stage::Closed);
    assert_eq!(
        gate.close(&campaign("nope")).await.unwrap(),
        Close::UnknownCampaign
    );
    assert!(gate.status(&campaign("nope")).await.unwrap().is_none());
}

/// A campaign whose window had ended by itself is already closed: nothing is written.
#[tokio::test]
async fn a_window_that_ended_is_already_closed() {
    let scratch = Scratch::new(&redis_url());
    let gate = scratch.gate().await;
    let id = campaign("past");
    let now = SystemTime::now();
    let ended = now - Duration::from_secs(60);
    gate.create(
        &Campaign::new(id.clone(), quota(3))
            .with_window(Some(now - Duration::from_secs(120)), Some(ended))
            .unwrap(),
    )
    .await
    .unwrap();
    let Close::AlreadyClosed { at } = gate.close(&id).await.unwrap() else {
        panic!("already closed");
    };
    assert_eq!(
        at.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
        ended
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    // Not ended early: the window can still be moved, as before.
    assert_eq!(
        gate.create(&Campaign::new(id.clone(), quota(3)))
            .await
            .unwrap(),
        Create::Updated
    );
}

#[tokio::test]
async fn closing_a_draw_before_it_runs_cancels_it() {
    let scratch = Scratch::new(&redis_url());
    let gate = scratch.gate().await;
    let id = campaign("drawn-never");
    let now = SystemTime::now();
    gate.create(
        &Campaign::new(id.clone(), quota(2))
            .with_window(Some(now + Duration::from_secs(3600)), None)
            .unwrap()
            .with_draw(now - Duration::from_secs(60))
            .unwrap(),
    )
    .await
    .unwrap();
    let users: Vec<_> = (1..=5).map(user).collect();
    for outcome in gate.apply_many(&id, &users).await.unwrap() {
        assert!(matches!(outcome, Outcome::Queued { .. }), "{outcome:?}");
    }
    assert_eq!(
        gate.status(&id)
            .await
            .unwrap()
            .unwrap()
            .stage(SystemTime::now()),
        Stage::Queueing
    );
    assert_eq!(gate.pending_draws().await.unwrap().len(), 1);

    assert!(matches!(
        gate.close(&id).await.unwrap(),
        Close::Closed { .. }
    ));
    assert!(
        gate.pending_draws().await.unwrap().is_empty(),
        "the draw is off the list"
    );
    assert!(
        !gate.queued(&id, &user(1)).await.unwrap(),
        "the queue is removed"
    );
    let status = gate.status(&id).await.unwrap().unwrap();
    assert!(status.drawn, "the draw counts as ended");
    assert_eq!(status.queued, 5, "how many had joined is kept");
    assert_eq!(status.issued, 0, "nobody was drawn");
    assert_eq!(status.stage(SystemTime::now()), Stage::Closed);
    assert_eq!(gate.apply(&id, &user(6)).await.unwrap(), Outcome::Closed);
    assert_eq!(
        gate.draw(&id).await.unwrap(),
        Draw::Done {
            winners: 0,
            took: None
        },
        "a draw asked for afterwards draws nobody"
    );
}

#[tokio::test]
async fn the_page_of_campaigns_goes_in_id_order_with_each_stage() {
    let scratch = Scratch::new(&redis_url());
    let gate = scratch.gate().await;
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let ids: Vec<CampaignId> = ["a-open", "b-sold", "c-later", "d-queue", "e-ended"]
        .into_iter()
        .map(campaign)
        .collect();
    gate.create(&Campaign::new(ids[0].clone(), quota(5)))
        .await
        .unwrap();
    gate.create(&Campaign::new(ids[1].clone(), quota(1)))
        .await
        .unwrap();
    assert!(gate.apply(&ids[1], &user(1)).await.unwrap().is_admitted());
    gate.create(
        &Campaign::new(ids[2].clone(), quota(5))
            .with_window(Some(now + hour), None)
            .unwrap(),
    )
    .await
    .unwrap();
    gate.create(
        &Campaign::new(ids[3].clone(), quota(5))
            .with_window(Some(now + hour), None)
            .unwrap()
            .with_draw(now - hour)
            .unwrap(),
    )
    .await
    .unwrap();
    gate.create(&Campaign::new(ids[4].clone(), quota(5)))
        .await
        .unwrap();
    gate.close(&ids[4]).await.unwrap();

    let stages = |page: &[(CampaignId, coupon_gate::Listed)]| {
        page.iter()
            .map(|(id, listed)| (id.as_str().to_owned(), listed.stage(SystemTime::now())))
            .collect::<Vec<_>>()
    };
    let all = gate.campaign_page(None, 1000).await.unwrap();
    assert_eq!(
        stages(&all),
        vec![
            ("a-open".to_owned(), Stage::Open),
            ("b-sold".to_owned(), Stage::SoldOut),
            ("c-later".to_owned(), Stage::Scheduled),
            ("d-queue".to_owned(), Stage::Queueing),
            ("e-ended".to_owned(), Stage::Closed),
        ]
    );
    let coupon_gate::Listed::Live(sold) = &all[1].1 else {
        panic!("live");
    };
    assert_eq!(sold.issued, 1);

    // Two at a time, each page after the last id of the one before.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = gate.campaign_page(after.as_ref(), 2).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        after = page.last().map(|(id, _)| id.clone());
        seen.extend(page.into_iter().map(|(id, _)| id));
    }
    assert_eq!(seen, ids);
}
