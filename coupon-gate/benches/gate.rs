//! Gate throughput against a real Redis (`REDIS_URL`, default `redis://127.0.0.1:6379`).
//!
//! Each iteration sends `CONCURRENCY` applications at once over one multiplexed connection,
//! as an HTTP server under load would, and waits for every answer. Keys live under a prefix of
//! the bench's own (the tests' `Scratch`) and are deleted at the end.
//!
//! - `admit`: distinct users on a campaign that never sells out (every call writes).
//! - `sold_out`: distinct users on a sold-out campaign (reads only).
//! - `duplicate`: one admitted user applying again (reads only).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use coupon_gate::{Campaign, CampaignId, Gate, Outcome, UserId};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use redis::aio::MultiplexedConnection;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

#[path = "../tests/support/mod.rs"]
mod support;

use support::ScratchGate;

const CONCURRENCY: u64 = 64;

struct Bench {
    rt: Runtime,
    gate: Gate<MultiplexedConnection>,
    /// Owns the bench's key prefix; deletes its keys when the bench ends.
    _scratch: support::Scratch,
}

impl Bench {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let scratch = support::Scratch::new(&support::redis_url());
        let gate = rt.block_on(scratch.gate());
        Self {
            rt,
            gate,
            _scratch: scratch,
        }
    }

    fn campaign(&self, id: &str, quota: u32) -> CampaignId {
        let id = CampaignId::new(id).expect("id");
        let campaign = Campaign::new(id.clone(), NonZeroU32::new(quota).expect("quota"));
        self.rt
            .block_on(self.gate.create(&campaign))
            .expect("create");
        id
    }

    /// Runs `CONCURRENCY` applications at once, users drawn from `users`, and checks each
    /// answer is `expected`.
    async fn burst(
        &self,
        id: &CampaignId,
        users: &AtomicU64,
        fixed_user: bool,
        expected: fn(Outcome) -> bool,
    ) {
        let mut set = JoinSet::new();
        for _ in 0..CONCURRENCY {
            let (gate, id) = (self.gate.clone(), id.clone());
            let u = if fixed_user {
                users.load(Ordering::Relaxed)
            } else {
                users.fetch_add(1, Ordering::Relaxed)
            };
            set.spawn(async move { gate.apply(&id, UserId::new(u).expect("user")).await });
        }
        while let Some(joined) = set.join_next().await {
            let outcome = joined.expect("task").expect("apply");
            assert!(expected(outcome), "unexpected {outcome:?}");
        }
    }
}

fn gate(c: &mut Criterion) {
    let bench = Bench::new();
    let mut group = c.benchmark_group("gate");
    group.throughput(Throughput::Elements(CONCURRENCY));

    let open = bench.campaign("admit", u32::MAX);
    let next_user = AtomicU64::new(1);
    group.bench_function("admit", |b| {
        b.iter(|| {
            bench
                .rt
                .block_on(bench.burst(&open, &next_user, false, Outcome::is_admitted))
        })
    });

    let full = bench.campaign("sold-out", 1);
    bench
        .rt
        .block_on(bench.gate.apply(&full, UserId::new(1).expect("user")))
        .expect("admit the only user");
    let next_user = AtomicU64::new(2);
    group.bench_function("sold_out", |b| {
        b.iter(|| {
            bench
                .rt
                .block_on(bench.burst(&full, &next_user, false, |o| o == Outcome::SoldOut))
        })
    });

    let same_user = AtomicU64::new(1);
    group.bench_function("duplicate", |b| {
        b.iter(|| {
            bench.rt.block_on(bench.burst(&full, &same_user, true, |o| {
                matches!(o, Outcome::Duplicate { .. })
            }))
        })
    });
    group.finish();
}

criterion_group!(benches, gate);
criterion_main!(benches);
