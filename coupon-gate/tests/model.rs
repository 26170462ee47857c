//! Model check: random sequences of operations, run against real Redis and against a plain
//! sequential model of the rules, must agree step by step, and leave the same outbox.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::time::{Duration, SystemTime};

use coupon_gate::UserId;
use coupon_gate::{
    BatchConfig, Batcher, Campaign, CampaignId, CampaignStatus, Create, EventKind, Gate, Opening,
    Outcome, Release,
};
use futures_util::future::join_all;
use proptest::prelude::*;
use redis::aio::MultiplexedConnection;
use support::{Scratch, campaign, redis_url};

/// The gate's id of model user `u`: odd users are numeric ids, even ones strings, so that both
/// bucket rules (last digits, hash) are exercised.
fn user(u: u64) -> UserId {
    if u % 2 == 1 {
        UserId::from_number(u).unwrap()
    } else {
        UserId::new(format!("user-{u}")).unwrap()
    }
}

const CAMPAIGNS: [&str; 2] = ["alpha", "beta"];
const USERS: u64 = 6;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Window {
    Unbounded,
    /// Opened an hour ago, closes in an hour.
    Open,
    /// Opens in an hour.
    Future,
    /// Closed an hour ago.
    Past,
}

#[derive(Clone, Debug)]
enum Op {
    Create {
        c: usize,
        quota: u32,
        window: Window,
    },
    Apply {
        c: usize,
        u: u64,
    },
    ApplyMany {
        c: usize,
        users: Vec<u64>,
    },
    /// Concurrent applications through a `Batcher` that takes at most 3 users per call, queued
    /// in this order: several batches, decided as if each user had applied alone in turn.
    Batched {
        c: usize,
        users: Vec<u64>,
    },
    Release {
        c: usize,
        u: u64,
    },
    Status {
        c: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..CAMPAIGNS.len();
    // Ids 6, 11, 16, ...: with the one-digit buckets of a quota above 100 they fall into
    // buckets 6 and 1, several users to a bucket.
    let u = (1..=USERS).prop_map(|u| u * 5 + 1);
    let window = prop_oneof![
        4 => Just(Window::Unbounded),
        2 => Just(Window::Open),
        1 => Just(Window::Future),
        1 => Just(Window::Past),
    ];
    prop_oneof![
        2 => (c.clone(), 1..=4u32, window.clone()).prop_map(|(c, quota, window)| Op::Create { c, quota, window }),
        // Above 100 the users are spread over buckets (a layout fixed at creation).
        1 => (c.clone(), prop_oneof![Just(101u32), Just(5000u32)], window).prop_map(|(c, quota, window)| Op::Create { c, quota, window }),
        6 => (c.clone(), u.clone()).prop_map(|(c, u)| Op::Apply { c, u }),
        3 => (c.clone(), prop::collection::vec(u.clone(), 1..=5)).prop_map(|(c, users)| Op::ApplyMany { c, users }),
        3 => (c.clone(), prop::collection::vec(u.clone(), 1..=8)).prop_map(|(c, users)| Op::Batched { c, users }),
        3 => (c.clone(), u).prop_map(|(c, u)| Op::Release { c, u }),
        1 => c.prop_map(|c| Op::Status { c }),
    ]
}

/// One campaign as the rules describe it, written independently of the script.
#[derive(Debug)]
struct ModelCampaign {
    quota: u32,
    window: Window,
    users: BTreeMap<u64, u32>,
    free: BTreeSet<u32>,
    next: u32,
}

#[derive(Debug, Default)]
struct Model {
    campaigns: BTreeMap<usize, ModelCampaign>,
    /// What each campaign's outbox must hold, in order: (kind, user, seq).
    outbox: BTreeMap<usize, Vec<(EventKind, u64, u32)>>,
}

impl Model {
    fn create(&mut self, c: usize, quota: u32, window: Window) -> Create {
        match self.campaigns.get_mut(&c) {
            None => {
                let fresh = ModelCampaign {
                    quota,
                    window,
                    users: BTreeMap::new(),
                    free: BTreeSet::new(),
                    next: 0,
                };
                self.campaigns.insert(c, fresh);
                Create::Created
            }
            Some(m) if m.quota == quota && m.window == window => Create::Unchanged,
            Some(m) if (quota as usize) < m.users.len() => Create::QuotaBelowIssued {
                issued: m.users.len() as u32,
            },
            Some(m) => {
                m.quota = quota;
                m.window = window;
                Create::Updated
            }
        }
    }

    fn apply(&mut self, c: usize, u: u64) -> Outcome {
        let Some(m) = self.campaigns.get_mut(&c) else {
            return Outcome::UnknownCampaign;
        };
        match m.window {
            Window::Future => return Outcome::NotOpen,
            Window::Past => return Outcome::Closed,
            Window::Unbounded | Window::Open => {}
        }
        if let Some(&seq) = m.users.get(&u) {
            return Outcome::Duplicate { seq };
        }
        if m.users.len() >= m.quota as usize {
            return Outcome::SoldOut;
        }
        let seq = match m.free.iter().copied().find(|&s| s <= m.quota) {
            Some(s) => {
                m.free.remove(&s);
                s
            }
            None => {
                m.next += 1;
                m.next
            }
        };
        assert!(seq <= m.quota, "model: seq {seq} above quota {}", m.quota);
        m.users.insert(u, seq);
        self.outbox
            .entry(c)
            .or_default()
            .push((EventKind::Admitted, u, seq));
        Outcome::Admitted { seq }
    }

    fn release(&mut self, c: usize, u: u64) -> Release {
        let Some(m) = self.campaigns.get_mut(&c) else {
            return Release::UnknownCampaign;
        };
        let Some(seq) = m.users.remove(&u) else {
            return Release::NotAdmitted;
        };
        m.free.insert(seq);
        self.outbox
            .entry(c)
            .or_default()
            .push((EventKind::Released, u, seq));
        Release::Released { seq }
    }

    fn status(&self, c: usize, now: SystemTime) -> Option<CampaignStatus> {
        self.campaigns.get(&c).map(|m| {
            let (opens_at, closes_at) = bounds(m.window, now);
            CampaignStatus {
                quota: m.quota,
                issued: m.users.len() as u32,
                opens_at,
                closes_at,
                opening: Opening::Race,
                queued: 0,
                drawn: false,
            }
        })
    }
}

fn bounds(window: Window, now: SystemTime) -> (Option<SystemTime>, Option<SystemTime>) {
    let hour = Duration::from_secs(3600);
    match window {
        Window::Unbounded => (None, None),
        Window::Open => (Some(now - hour), Some(now + hour)),
        Window::Future => (Some(now + hour), None),
        Window::Past => (Some(now - 2 * hour), Some(now - hour)),
    }
}

fn definition(id: &CampaignId, quota: u32, window: Window, now: SystemTime) -> Campaign {
    let (opens, closes) = bounds(window, now);
    Campaign::new(id.clone(), NonZeroU32::new(quota).unwrap())
        .with_window(opens, closes)
        .unwrap()
}

async fn run(gate: &Gate<MultiplexedConnection>, ops: &[Op]) -> Result<(), TestCaseError> {
    let batcher = Batcher::new(
        gate.clone(),
        BatchConfig {
            max_batch: 3,
            ..BatchConfig::default()
        },
    );
    // One "now" per case, in whole milliseconds, so that re-creating a window reproduces it
    // exactly, as a user re-sending the same definition would.
    let now = SystemTime::UNIX_EPOCH
        + Duration::from_millis(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64,
        );
    let ids: Vec<CampaignId> = CAMPAIGNS.iter().map(|c| campaign(c)).collect();
    let mut model = Model::default();
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Create { c, quota, window } => {
                let real = gate
                    .create(&definition(&ids[*c], *quota, *window, now))
                    .await
                    .unwrap();
                prop_assert_eq!(
                    real,
                    model.create(*c, *quota, *window),
                    "step {}: {:?}",
                    step,
                    op
                );
            }
            Op::Apply { c, u } => {
                let real = gate.apply(&ids[*c], &user(*u)).await.unwrap();
                prop_assert_eq!(real, model.apply(*c, *u), "step {}: {:?}", step, op);
            }
            Op::ApplyMany { c, users } => {
                let batch: Vec<_> = users.iter().map(|&u| user(u)).collect();
                let real = gate.apply_many(&ids[*c], &batch).await.unwrap();
                let expected: Vec<_> = users.iter().map(|&u| model.apply(*c, u)).collect();
                prop_assert_eq!(real, expected, "step {}: {:?}", step, op);
            }
            Op::Batched { c, users } => {
                // join_all polls each future once, in order, before any batch is taken: that
                // first poll queues the application.
                let real = join_all(users.iter().map(|&u| batcher.apply(&ids[*c], user(u)))).await;
                let real: Vec<_> = real.into_iter().map(Result::unwrap).collect();
                let expected: Vec<_> = users.iter().map(|&u| model.apply(*c, u)).collect();
                prop_assert_eq!(real, expected, "step {}: {:?}", step, op);
            }
            Op::Release { c, u } => {
                let real = gate.release(&ids[*c], &user(*u)).await.unwrap();
                prop_assert_eq!(real, model.release(*c, *u), "step {}: {:?}", step, op);
            }
            Op::Status { c } => {
                let real = gate.status(&ids[*c]).await.unwrap();
                prop_assert_eq!(real, model.status(*c, now), "step {}: {:?}", step, op);
            }
        }
    }
    for (c, id) in ids.iter().enumerate() {
        let expected = model.outbox.remove(&c).unwrap_or_default();
        if !model.campaigns.contains_key(&c) {
            continue;
        }
        let entries = gate.outbox().read(id, "model", 10_000).await.unwrap();
        let real: Vec<_> = entries
            .iter()
            .map(|e| (e.kind, e.user.clone(), e.seq))
            .collect();
        let expected: Vec<_> = expected
            .into_iter()
            .map(|(kind, u, seq)| (kind, user(u), seq))
            .collect();
        prop_assert_eq!(real, expected, "outbox of {}", id);
        for (u, seq) in &model.campaigns[&c].users {
            prop_assert_eq!(gate.admission(id, &user(*u)).await.unwrap(), Some(*seq));
        }
    }
    Ok(())
}

#[test]
fn gate_agrees_with_the_sequential_model() {
    // Every case starts from nothing under a key prefix of its own, below one scratch prefix for
    // the whole run: the clean-up, a SCAN over the server's keys, runs once and not per case.
    let scratch = Scratch::new(&redis_url());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // As `proptest!` sets it up: regressions come from and go to model.proptest-regressions.
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 256,
        source_file: Some(file!()),
        ..ProptestConfig::default()
    });
    let case = std::cell::Cell::new(0u32);
    let result = runner.run(&prop::collection::vec(op(), 1..60), |ops| {
        case.set(case.get() + 1);
        let prefix = format!("{}:case-{}", scratch.prefix, case.get());
        rt.block_on(async {
            let conn = support::connect(scratch.url()).await;
            let gate = Gate::with_key_prefix(conn, prefix).expect("valid prefix");
            run(&gate, &ops).await
        })
    });
    if let Err(failure) = result {
        panic!("{failure}\n{runner}");
    }
}
