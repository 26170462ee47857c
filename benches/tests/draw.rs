//! A draw through the whole pipeline with a server SIGKILLed in the middle of the draw, alone (the
//! restarted server finishes the draw by itself) or beside another that races it for the draw's
//! parts: MySQL ends exact, `min(quota, queued)` coupons, every one to a queued user, seqs
//! 1..=quota, nobody twice, and `coupon-admin audit` finds nothing (the users queued and not
//! drawn are no discrepancy). Then Redis loses the campaign, and `coupon-admin rebuild` restores
//! the same holders.

mod support;

use std::collections::BTreeSet;
use std::num::NonZeroU32;
use std::time::{Duration, SystemTime};

use coupon_gate::{Campaign, CampaignId, Create, Gate, Outcome, UserId};
use coupon_testkit::{connect, eventually};
use support::{Mode, Pipeline, Setup};

const QUEUED: u64 = 100_000;
const QUOTA: u32 = 60_000;

/// What [`killed_during_a_draw`] leaves for the test to go on with.
struct Drawn {
    pipeline: Pipeline,
    gate: Gate<redis::aio::MultiplexedConnection>,
    id: CampaignId,
    /// Every holder in Redis, with its seq, sorted by user.
    holders: Vec<(UserId, u32)>,
    /// A user who was drawn.
    winner: u64,
}

/// `servers` coupon-http processes, `QUEUED` users in the pre-queue of campaign `name` of
/// `QUOTA` coupons, the draw due a second later and run by the servers by themselves (all of
/// them racing to); server 0 is SIGKILLed once the draw began and before it ended, and
/// restarted. Then MySQL must hold exactly the draw: `QUOTA` rows, every one a queued user's,
/// seqs 1..=`QUOTA`, nobody twice; and Redis answer a drawn user `duplicate`, another
/// `sold_out`, and `coupon-admin audit` find nothing amiss.
async fn killed_during_a_draw(servers: usize, name: &str) -> Drawn {
    let mut pipeline = Pipeline::start_with(Setup {
        servers,
        mode: Mode::Body,
        ..Setup::default()
    })
    .await;
    pipeline.sinks_hold_partitions().await;
    let gate = Gate::with_key_prefix(
        connect(&pipeline.redis_url).await,
        pipeline.scratch.prefix.clone(),
    )
    .unwrap();
    let id = CampaignId::new(name).unwrap();
    let quota = NonZeroU32::new(QUOTA).unwrap();
    let queue_opens_at = SystemTime::now() - Duration::from_secs(60);
    let definition = |opens_at: SystemTime| {
        Campaign::new(id.clone(), quota)
            .with_window(Some(opens_at), None)
            .unwrap()
            .with_draw(queue_opens_at)
            .unwrap()
    };
    let later = SystemTime::now() + Duration::from_secs(3600);
    assert_eq!(
        gate.create(&definition(later)).await.unwrap(),
        Create::Created
    );
    let mut next = 1;
    while next <= QUEUED {
        let users: Vec<UserId> = (next..(next + 1000).min(QUEUED + 1))
            .map(|u| UserId::from_number(u).unwrap())
            .collect();
        next += users.len() as u64;
        for outcome in gate.apply_many(&id, &users).await.unwrap() {
            assert!(matches!(outcome, Outcome::Queued { .. }), "{outcome:?}");
        }
    }

    // The draw is due in a second; the servers run it by themselves, and server 0 is killed
    // once it began.
    let soon = SystemTime::now() + Duration::from_secs(1);
    assert_eq!(
        gate.create(&definition(soon)).await.unwrap(),
        Create::Updated
    );
    eventually(Duration::from_secs(30), "the draw to begin", || async {
        gate.status(&id).await.unwrap().unwrap().issued > 0
    })
    .await;
    let before_kill = gate.status(&id).await.unwrap().unwrap();
    let victim = pipeline.http[0].process.0.id();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let _ = pipeline.http[0].process.0.wait();
    println!(
        "{name}: server 0 of {servers} killed with {} of {QUOTA} drawn",
        before_kill.issued
    );
    assert!(
        !before_kill.drawn && before_kill.issued < QUOTA,
        "the server was to die in the middle of the draw: {before_kill:?}"
    );

    pipeline.restart_http(0).await;
    eventually(Duration::from_secs(30), "the draw to end", || async {
        gate.status(&id).await.unwrap().unwrap().drawn
    })
    .await;
    let stored = pipeline.wait_for_rows(name, u64::from(QUOTA)).await;
    let users: BTreeSet<u64> = stored.users.iter().copied().collect();
    let seqs: BTreeSet<u64> = stored.seqs.iter().copied().collect();
    assert_eq!(stored.rows, u64::from(QUOTA), "one row per coupon drawn");
    assert_eq!(users.len() as u64, stored.rows, "nobody holds two");
    assert_eq!(seqs, (1..=u64::from(QUOTA)).collect(), "seqs 1..=quota");
    assert!(
        users.iter().all(|u| (1..=QUEUED).contains(u)),
        "only queued users are drawn"
    );
    assert_eq!(stored.failed_events, 0);
    // Redis agrees with MySQL, and answers every user truly.
    let holders = gate.recovery().holders(&id).await.unwrap();
    assert_eq!(holders.len() as u64, stored.rows);
    let winner = *users.first().unwrap();
    let not_drawn = (1..=QUEUED).find(|u| !users.contains(u)).unwrap();
    assert!(matches!(
        gate.apply(&id, &UserId::from_number(winner).unwrap())
            .await
            .unwrap(),
        Outcome::Duplicate { .. }
    ));
    assert_eq!(
        gate.apply(&id, &UserId::from_number(not_drawn).unwrap())
            .await
            .unwrap(),
        Outcome::SoldOut
    );
    let (code, out) = pipeline.admin(&["audit", "--campaign", name]);
    assert_eq!(code, 0, "{out}");
    Drawn {
        pipeline,
        gate,
        id,
        holders,
        winner,
    }
}

/// Two servers race to run the draw; one is killed midway, the other goes on, and the killed one
/// comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_a_draw_and_one_is_killed_during_it() {
    killed_during_a_draw(2, "shared-draw").await;
}

/// The only server is killed midway: the restarted one finishes the draw by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_during_a_draw_leaves_mysql_exact() {
    let Drawn {
        pipeline,
        gate,
        id,
        holders,
        winner,
    } = killed_during_a_draw(1, "kill-draw").await;
    // Redis loses the drawn campaign; rebuild restores its holders as for any campaign.
    let mut conn = connect(&pipeline.redis_url).await;
    coupon_testkit::unlink_matching(
        &mut conn,
        &format!("{}:{{kill-draw}}:*", pipeline.scratch.prefix),
    )
    .await
    .unwrap();
    assert_eq!(gate.status(&id).await.unwrap(), None);
    let (code, out) = pipeline.admin(&[
        "rebuild",
        "--campaign",
        "kill-draw",
        "--quota",
        &QUOTA.to_string(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("rebuilt: quota 60000, issued 60000"), "{out}");
    assert_eq!(
        gate.recovery().holders(&id).await.unwrap(),
        holders,
        "the same holders with the same seqs"
    );
    assert!(matches!(
        gate.apply(&id, &UserId::from_number(winner).unwrap())
            .await
            .unwrap(),
        Outcome::Duplicate { .. }
    ));
    let (code, out) = pipeline.admin(&["audit", "--campaign", "kill-draw"]);
    assert_eq!(code, 0, "{out}");
}
