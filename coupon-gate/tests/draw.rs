//! Draw campaigns: the pre-queue, the draw by the lowest tickets, its exactness when processes
//! share it or stop midway, its fairness, the locked opening, and a model of random draws.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::time::{Duration, SystemTime};

use coupon_gate::{Campaign, CampaignId, Create, Draw, EventKind, Gate, Opening, Outcome, UserId};
use proptest::prelude::*;
use redis::aio::MultiplexedConnection;
use support::{Scratch, ScratchGate, campaign, connect, redis_url, user};

fn quota(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

/// A draw whose queue opened an hour ago and whose draw is an hour away.
fn queueing(id: &CampaignId, coupons: u32) -> Campaign {
    let now = SystemTime::now();
    Campaign::new(id.clone(), quota(coupons))
        .with_window(Some(now + Duration::from_secs(3600)), None)
        .unwrap()
        .with_draw(now - Duration::from_secs(3600))
        .unwrap()
}

/// `queueing`'s campaign with its draw brought forward to now, as an update.
fn due(id: &CampaignId, coupons: u32, queue_opened: SystemTime) -> Campaign {
    Campaign::new(id.clone(), quota(coupons))
        .with_window(Some(SystemTime::now()), None)
        .unwrap()
        .with_draw(queue_opened)
        .unwrap()
}

fn queue_opened(campaign: &Campaign) -> SystemTime {
    match campaign.opening() {
        Opening::Draw { queue_opens_at } => queue_opens_at,
        Opening::Race => panic!("a draw"),
    }
}

/// `users` join, 500 to a call.
async fn join(gate: &Gate<MultiplexedConnection>, id: &CampaignId, users: &[UserId]) {
    for chunk in users.chunks(500) {
        for outcome in gate.apply_many(id, chunk).await.unwrap() {
            assert!(matches!(outcome, Outcome::Queued { .. }), "{outcome:?}");
        }
    }
}

/// A draw of `coupons` that `users` joined, brought forward so that it is due now.
async fn joined_and_due(
    gate: &Gate<MultiplexedConnection>,
    id: &CampaignId,
    coupons: u32,
    users: &[UserId],
) {
    let def = queueing(id, coupons);
    gate.create(&def).await.unwrap();
    join(gate, id, users).await;
    assert_eq!(
        gate.create(&due(id, coupons, queue_opened(&def)))
            .await
            .unwrap(),
        Create::Updated
    );
}

/// Checks a drawn campaign: `winners` holders with seqs 1..=winners, every one of them queued,
/// and the outbox holding exactly their admissions.
async fn assert_drawn(
    gate: &Gate<MultiplexedConnection>,
    id: &CampaignId,
    queued: &BTreeSet<UserId>,
    winners: usize,
) -> BTreeMap<UserId, u32> {
    let holders: BTreeMap<UserId, u32> = gate
        .recovery()
        .holders(id)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(holders.len(), winners);
    let seqs: BTreeSet<u32> = holders.values().copied().collect();
    assert_eq!(seqs, (1..=u32::try_from(winners).unwrap()).collect());
    assert!(
        holders.keys().all(|u| queued.contains(u)),
        "only queued users are drawn"
    );
    let mut outbox: Vec<(UserId, u32)> = gate
        .outbox()
        .peek(id)
        .await
        .unwrap()
        .into_iter()
        .map(|record| {
            assert_eq!(record.kind, EventKind::Admitted);
            (record.user, record.seq)
        })
        .collect();
    outbox.sort();
    let expected: Vec<(UserId, u32)> = holders.iter().map(|(u, s)| (u.clone(), *s)).collect();
    assert_eq!(outbox, expected, "one outbox admission per winner");
    holders
}

#[tokio::test]
async fn a_pre_queue_then_a_draw_gives_the_quota_to_queued_users_only() {
    let scratch = Scratch::new(&redis_url());
    let gate = scratch.gate().await;
    let id = campaign("lottery");
    let def = queueing(&id, 10);
    assert_eq!(gate.create(&def).await.unwrap(), Create::Created);

    let early = campaign("not-yet");
    let now = SystemTime::now();
    let later = Campaign::new(early.clone(), quota(1))
        .with_window(Some(now + Duration::from_secs(7200)), None)
        .unwrap()
        .with_draw(now + Duration::from_secs(3600))
        .unwrap();
    gate.create(&later).await.unwrap();
    assert_eq!(
        gate.apply(&early, &user(1)).await.unwrap(),
        Outcome::NotOpen,
        "before the queue opens"
    );

    let joined: Vec<UserId> = (1..=30).map(user).collect();
    let draw_at = def.opens_at().unwrap();
    for round in 0..3 {
        // Users 1..=10 join three times, 11..=20 twice, the rest once.
        let these = &joined[round * 10..];
        for outcome in gate.apply_many(&id, these).await.unwrap() {
            assert_eq!(outcome, Outcome::Queued { draw_at });
        }
    }
    let status = gate.status(&id).await.unwrap().unwrap();
    assert_eq!(
        (status.opening, status.queued, status.drawn, status.issued),
        (def.opening(), 30, false, 0),
        "each user is queued once, however often it joins"
    );
    assert!(gate.queued(&id, &user(5)).await.unwrap());
    assert!(!gate.queued(&id, &user(31)).await.unwrap());
    assert_eq!(gate.pending_draws().await.unwrap().len(), 2);

    assert_eq!(
        gate.create(&due(&id, 10, queue_opened(&def)))
            .await
            .unwrap(),
        Create::Updated,
        "the draw may move until it starts"
    );
    // A late application waits for the draw, which it runs, and finds nothing left.
    assert_eq!(gate.apply(&id, &user(31)).await.unwrap(), Outcome::SoldOut);
    let queued: BTreeSet<UserId> = joined.iter().cloned().collect();
    let holders = assert_drawn(&gate, &id, &queued, 10).await;
    for u in &joined {
        let answer = gate.apply(&id, u).await.unwrap();
        match holders.get(u) {
            Some(&seq) => assert_eq!(answer, Outcome::Duplicate { seq }),
            None => assert_eq!(answer, Outcome::SoldOut),
        }
        assert!(!gate.queued(&id, u).await.unwrap(), "the queue is gone");
    }
    let status = gate.status(&id).await.unwrap().unwrap();
    assert_eq!((status.queued, status.drawn, status.issued), (30, true, 10));
    assert_eq!(
        gate.draw(&id).await.unwrap(),
        Draw::Done {
            winners: 0,
            took: None
        },
        "a draw runs once"
    );
    let pending: Vec<CampaignId> = gate
        .pending_draws()
        .await
        .unwrap()
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    assert_eq!(pending, std::slice::from_ref(&early));
    assert!(matches!(
        gate.draw(&early).await.unwrap(),
        Draw::NotDue { due_in } if due_in > Duration::from_secs(7000)
    ));
}

#[tokio::test]
async fn a_queue_smaller_than_the_quota_all_wins_and_the_rest_goes_first_come() {
    let scratch = Scratch::new(&redis_url());
    let gate = scratch.gate().await;
    let id = campaign("few");
    let joined: Vec<UserId> = (1..=3).map(user).collect();
    joined_and_due(&gate, &id, 5, &joined).await;
    let drawn = gate.draw(&id).await.unwrap();
    assert!(
        matches!(
            drawn,
            Draw::Done {
                winners: 3,
                took: Some(_)
            }
        ),
        "{drawn:?}"
    );
    assert_drawn(&gate, &id, &joined.iter().cloned().collect(), 3).await;
    assert_eq!(
        gate.apply(&id, &user(9)).await.unwrap(),
        Outcome::Admitted { seq: 4 }
    );
    assert_eq!(
        gate.apply(&id, &user(8)).await.unwrap(),
        Outcome::Admitted { seq: 5 }
    );
    assert_eq!(gate.apply(&id, &user(7)).await.unwrap(), Outcome::SoldOut);
    assert!(gate.pending_draws().await.unwrap().is_empty());
}

#[tokio::test]
async fn how_a_campaign_opens_is_fixed_once_it_takes_applications() {
    let scratch = Scratch::new(&redis_url());
    let gate = scratch.gate().await;
    let now = SystemTime::now();

    // A race that is open cannot become a draw.
    let race = campaign("race");
    gate.create(&Campaign::new(race.clone(), quota(5)))
        .await
        .unwrap();
    let to_draw = Campaign::new(race.clone(), quota(5))
        .with_window(Some(now + Duration::from_secs(60)), None)
        .unwrap()
        .with_draw(now + Duration::from_secs(30))
        .unwrap();
    assert_eq!(gate.create(&to_draw).await.unwrap(), Create::OpeningLocked);
    let status = gate.status(&race).await.unwrap().unwrap();
    assert_eq!((status.opening, status.opens_at), (Opening::Race, None));
    assert!(gate.pending_draws().await.unwrap().is_empty());

    // A draw whose queue has not opened may become a race, and back.
    let future = campaign("future");
    gate.create(&to_draw.clone_as(&future)).await.unwrap();
    let as_race = Campaign::new(future.clone(), quota(5))
        .with_window(Some(now + Duration::from_secs(60)), None)
        .unwrap();
    assert_eq!(gate.create(&as_race).await.unwrap(), Create::Updated);
    assert!(gate.pending_draws().await.unwrap().is_empty());
    assert_eq!(
        gate.create(&to_draw.clone_as(&future)).await.unwrap(),
        Create::Updated
    );

    // Once its queue has opened, a draw stays a draw with the same queue.
    let open = campaign("open");
    let def = queueing(&open, 5);
    gate.create(&def).await.unwrap();
    let as_race = Campaign::new(open.clone(), quota(5))
        .with_window(def.opens_at(), None)
        .unwrap();
    assert_eq!(gate.create(&as_race).await.unwrap(), Create::OpeningLocked);
    let other_queue = Campaign::new(open.clone(), quota(5))
        .with_window(def.opens_at(), None)
        .unwrap()
        .with_draw(now - Duration::from_secs(60))
        .unwrap();
    assert_eq!(
        gate.create(&other_queue).await.unwrap(),
        Create::OpeningLocked
    );
    assert_eq!(
        gate.status(&open).await.unwrap().unwrap().opening,
        def.opening()
    );
    // Its quota and draw time may still change until the draw starts; then the time may not.
    join(&gate, &open, &[user(1), user(2), user(3)]).await;
    let more = due(&open, 7, queue_opened(&def));
    assert_eq!(gate.create(&more).await.unwrap(), Create::Updated);
    assert!(matches!(gate.draw(&open).await.unwrap(), Draw::Done { .. }));
    let moved = Campaign::new(open.clone(), quota(7))
        .with_window(Some(now + Duration::from_secs(600)), None)
        .unwrap()
        .with_draw(queue_opened(&def))
        .unwrap();
    assert_eq!(gate.create(&moved).await.unwrap(), Create::OpeningLocked);
    assert_eq!(gate.create(&more).await.unwrap(), Create::Unchanged);
    // The Unchanged call listed the drawn campaign again; the next look takes it off. A refused
    // update leaves the list as it was.
    assert!(matches!(
        gate.draw(&open).await.unwrap(),
        Draw::Done { took: None, .. }
    ));
    let fewer = Campaign::new(open.clone(), quota(1))
        .with_window(more.opens_at(), None)
        .unwrap()
        .with_draw(queue_opened(&def))
        .unwrap();
    assert_eq!(
        gate.create(&fewer).await.unwrap(),
        Create::QuotaBelowIssued { issued: 3 }
    );
    let pending = gate.pending_draws().await.unwrap();
    assert!(
        pending.iter().all(|(c, _)| *c != open),
        "a refused update lists no draw: {pending:?}"
    );
}

/// A copy of a campaign's definition under another id.
trait CloneAs {
    fn clone_as(&self, id: &CampaignId) -> Campaign;
}

impl CloneAs for Campaign {
    fn clone_as(&self, id: &CampaignId) -> Campaign {
        let copy = Campaign::new(id.clone(), self.quota())
            .with_window(self.opens_at(), self.closes_at())
            .unwrap();
        match self.opening() {
            Opening::Race => copy,
            Opening::Draw { queue_opens_at } => copy.with_draw(queue_opens_at).unwrap(),
        }
    }
}

#[tokio::test]
async fn two_processes_and_a_crowd_share_one_draw_exactly() {
    let scratch = Scratch::new(&redis_url());
    let (a, b) = (scratch.gate().await, scratch.gate().await);
    let id = campaign("shared");
    // More winners than one part draws, so that the draw takes several calls.
    let coupons = coupon_gate::DRAW_PART * 2 + 1_234;
    let joined: Vec<UserId> = (1..=u64::from(coupons) + 5_000).map(user).collect();
    joined_and_due(&a, &id, coupons, &joined).await;

    let late: Vec<UserId> = (1_000_001..=1_000_040).map(user).collect();
    let (da, db, answers) = tokio::join!(a.draw(&id), b.draw(&id), async {
        let mut answers = Vec::new();
        for u in &late {
            answers.push(b.apply(&id, u).await.unwrap());
        }
        answers
    });
    let took: Vec<Option<Duration>> = [da.unwrap(), db.unwrap()]
        .into_iter()
        .map(|d| match d {
            Draw::Done { took, .. } => took,
            other => panic!("{other:?}"),
        })
        .collect();
    // The call that ends the draw is one of the two, or an application that ran the draw's
    // last part itself (parts are sized by time, so there are many): never two of them.
    assert!(
        took.iter().filter(|t| t.is_some()).count() <= 1,
        "one call ends the draw: {took:?}"
    );
    assert!(
        answers.iter().all(|o| *o == Outcome::SoldOut),
        "no late application overtakes the draw"
    );
    let queued = joined.iter().cloned().collect();
    assert_drawn(&a, &id, &queued, coupons as usize).await;
}

#[tokio::test]
async fn a_draw_cut_short_goes_on_where_it_stopped() {
    let scratch = Scratch::new(&redis_url());
    let gate = scratch.gate().await;
    let id = campaign("cut");
    let coupons = coupon_gate::DRAW_PART * 3;
    let joined: Vec<UserId> = (1..=u64::from(coupons) * 2).map(user).collect();
    joined_and_due(&gate, &id, coupons, &joined).await;

    // A process that ran one part of the draw and died.
    let dying = scratch.gate().await;
    let part = dying.draw_part(&id).await.unwrap();
    let Draw::GoesOn { winners } = part else {
        panic!("{part:?}")
    };
    assert!((1..=coupon_gate::DRAW_PART).contains(&winners), "{winners}");
    drop(dying);
    let cut = gate.status(&id).await.unwrap().unwrap();
    assert_eq!((cut.issued, cut.drawn), (winners, false));
    assert_eq!(
        gate.apply(&id, &user(u64::from(coupons) * 3))
            .await
            .unwrap(),
        Outcome::SoldOut,
        "an application finishes the draw before it is decided"
    );
    let rest = gate.draw(&id).await.unwrap();
    assert!(matches!(rest, Draw::Done { .. }), "{rest:?}");
    let queued = joined.iter().cloned().collect();
    assert_drawn(&gate, &id, &queued, coupons as usize).await;
}

/// The earliest joiners and the repeat joiners win as often as anybody: within 4.5 standard
/// deviations of quota/queued (a false alarm about once in 150,000 runs). A draw by joining
/// order, or one that favoured repeated joins, fails it by far.
#[tokio::test]
async fn neither_the_moment_of_joining_nor_joining_again_changes_the_odds() {
    let scratch = Scratch::new(&redis_url());
    let gate = scratch.gate().await;
    let id = campaign("fair");
    let (queued_users, coupons) = (4_000u64, 1_000u32);
    let def = queueing(&id, coupons);
    gate.create(&def).await.unwrap();
    // Users join in id order, one to a call; every fifth (by id) joins five times more, last.
    for u in 1..=queued_users {
        gate.apply(&id, &user(u)).await.unwrap();
    }
    let repeaters: Vec<UserId> = (1..=queued_users)
        .filter(|u| u % 5 == 0)
        .map(user)
        .collect();
    for _ in 0..5 {
        join(&gate, &id, &repeaters).await;
    }
    gate.create(&due(&id, coupons, queue_opened(&def)))
        .await
        .unwrap();
    gate.draw(&id).await.unwrap();
    let holders: BTreeSet<UserId> = gate
        .recovery()
        .holders(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|(u, _)| u)
        .collect();
    assert_eq!(holders.len(), coupons as usize);

    let p = f64::from(coupons) / queued_users as f64;
    let within_bounds = |group: &[UserId], name: &str| {
        let n = group.len() as f64;
        let wins = group.iter().filter(|u| holders.contains(*u)).count() as f64;
        let sd = (n * p * (1.0 - p)).sqrt();
        assert!(
            (wins - n * p).abs() <= 4.5 * sd,
            "{name}: {wins} of {n} won, {:.0} ± {:.0} expected",
            n * p,
            4.5 * sd
        );
    };
    let earliest: Vec<UserId> = (1..=queued_users / 5).map(user).collect();
    let latest: Vec<UserId> = (queued_users * 4 / 5 + 1..=queued_users)
        .map(user)
        .collect();
    within_bounds(&earliest, "the earliest fifth");
    within_bounds(&latest, "the latest fifth");
    within_bounds(&repeaters, "the repeat joiners");
}

/// A random draw campaign: its queue, repeated joins, a quota, and late arrivals after the
/// draw. The gate must give `min(quota, queued)` coupons to queued users only, then serve the
/// late arrivals first come, first served, and answer every user truly.
#[derive(Clone, Debug)]
struct Case {
    /// Per user 0..users: how often it joins (0: never).
    joins: Vec<u8>,
    quota: u32,
    /// Users (by index) applying after the draw, in order; may repeat and include the queued.
    late: Vec<usize>,
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..40, 1u32..30).prop_flat_map(|(users, quota)| {
        (
            prop::collection::vec(0u8..3, users),
            Just(quota),
            prop::collection::vec(0..users, 0..20),
        )
            .prop_map(|(joins, quota, late)| Case { joins, quota, late })
    })
}

async fn run_case(gate: &Gate<MultiplexedConnection>, case: &Case) -> Result<(), TestCaseError> {
    let id = campaign("model");
    let def = queueing(&id, case.quota);
    gate.create(&def).await.unwrap();
    let users: Vec<UserId> = (0..case.joins.len())
        .map(|u| UserId::new(format!("u-{u}")).unwrap())
        .collect();
    let mut queued = BTreeSet::new();
    for round in 0..2 {
        for (u, &times) in case.joins.iter().enumerate() {
            if times > round {
                let outcome = gate.apply(&id, &users[u]).await.unwrap();
                prop_assert!(matches!(outcome, Outcome::Queued { .. }), "{:?}", outcome);
                queued.insert(users[u].clone());
            }
        }
    }
    gate.create(&due(&id, case.quota, queue_opened(&def)))
        .await
        .unwrap();
    // Half the cases let a late arrival run the draw, the others the drawing process.
    if case.late.len().is_multiple_of(2) {
        gate.draw(&id).await.unwrap();
    }
    let drawn = queued.len().min(case.quota as usize);
    let mut holders: BTreeMap<UserId, u32> = BTreeMap::new();
    for (i, &u) in case.late.iter().enumerate() {
        let user = &users[u];
        let outcome = gate.apply(&id, user).await.unwrap();
        if i == 0 {
            holders = gate
                .recovery()
                .holders(&id)
                .await
                .unwrap()
                .into_iter()
                .collect();
            if let Outcome::Admitted { .. } = outcome {
                holders.remove(user);
            }
            prop_assert_eq!(holders.len(), drawn);
            prop_assert!(holders.keys().all(|h| queued.contains(h)));
        }
        let expected = match holders.get(user) {
            Some(&seq) => Outcome::Duplicate { seq },
            None if holders.len() < case.quota as usize => Outcome::Admitted {
                seq: u32::try_from(holders.len()).unwrap() + 1,
            },
            None => Outcome::SoldOut,
        };
        prop_assert_eq!(outcome, expected, "late user {}", u);
        if let Outcome::Admitted { seq } = outcome {
            holders.insert(user.clone(), seq);
        }
    }
    gate.draw(&id).await.unwrap();
    let end: BTreeMap<UserId, u32> = gate
        .recovery()
        .holders(&id)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let drawn = end.iter().filter(|(u, _)| queued.contains(*u)).count();
    prop_assert!(drawn >= queued.len().min(case.quota as usize));
    prop_assert!(end.len() <= case.quota as usize);
    let seqs: BTreeSet<u32> = end.values().copied().collect();
    prop_assert_eq!(seqs.len(), end.len());
    if !holders.is_empty() {
        prop_assert_eq!(&end, &holders);
    }
    let status = gate.status(&id).await.unwrap().unwrap();
    prop_assert_eq!(
        (status.queued, status.drawn, status.issued as usize),
        (queued.len() as u64, true, end.len())
    );
    Ok(())
}

#[test]
fn draws_agree_with_the_model() {
    let scratch = Scratch::new(&redis_url());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let count = std::cell::Cell::new(0u32);
    let result = runner.run(&case(), |case| {
        count.set(count.get() + 1);
        let prefix = format!("{}:case-{}", scratch.prefix, count.get());
        rt.block_on(async {
            let conn = connect(scratch.url()).await;
            let gate = Gate::with_key_prefix(conn, prefix).expect("valid prefix");
            run_case(&gate, &case).await
        })
    });
    if let Err(failure) = result {
        panic!("{failure}\n{runner}");
    }
}
