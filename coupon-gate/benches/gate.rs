//! Gate throughput against a real Redis (`REDIS_URL`, default `redis://127.0.0.1:6379/9`, the
//! tests' database of the machine's Redis).
//!
//! Each iteration sends `CONCURRENCY` applications at once over one multiplexed connection,
//! as an HTTP server under load would, and waits for every answer. Keys live under a prefix of
//! the bench's own (the tests' `Scratch`) and are deleted at the end.
//!
//! - `admit`: distinct users on a campaign that never sells out (every call writes).
//! - `sold_out`: distinct users on a sold-out campaign (reads only).
//! - `duplicate`: one admitted user applying again (reads only).
//! - `batched`: `BATCHED` distinct users at once through a `Batcher`, which coalesces them into
//!   script calls of up to 128 users (every user writes).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use coupon_gate::{BatchConfig, Batcher, Campaign, CampaignId, Gate, Outcome, UserId};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use redis::aio::MultiplexedConnection;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

#[path = "../tests/support/mod.rs"]
mod support;

use support::ScratchGate;

const CONCURRENCY: u64 = 64;
/// Applications in flight at once in the `batched` bench: an HTTP server's crowd.
const BATCHED: u64 = 1024;

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

    /// `BATCHED` distinct users at once through `batcher`, each of whom must be admitted.
    async fn batched_burst(
        &self,
        batcher: &Batcher<MultiplexedConnection>,
        id: &CampaignId,
        users: &AtomicU64,
    ) {
        let mut set = JoinSet::new();
        for _ in 0..BATCHED {
            let (batcher, id) = (batcher.clone(), id.clone());
            let u = users.fetch_add(1, Ordering::Relaxed);
            set.spawn(async move {
                batcher
                    .apply(&id, UserId::from_number(u).expect("user"))
                    .await
            });
        }
        while let Some(joined) = set.join_next().await {
            let outcome = joined.expect("task").expect("apply");
            assert!(outcome.is_admitted(), "unexpected {outcome:?}");
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
            set.spawn(async move {
                gate.apply(&id, &UserId::from_number(u).expect("user"))
                    .await
            });
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
        .block_on(
            bench
                .gate
                .apply(&full, &UserId::from_number(1).expect("user")),
        )
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

    let batched = bench.campaign("batched", u32::MAX);
    // A batcher's tasks live on the runtime that first uses it.
    let batcher = Batcher::new(bench.gate.clone(), BatchConfig::default());
    let next_user = AtomicU64::new(1);
    group.throughput(Throughput::Elements(BATCHED));
    group.bench_function("batched", |b| {
        b.iter(|| {
            bench
                .rt
                .block_on(bench.batched_burst(&batcher, &batched, &next_user))
        })
    });
    group.finish();
}

/// Entries acknowledged at once in `outbox/ack`, as a relay's round does.
const ACK_ENTRIES: u64 = 50;
/// Admissions per entry in `outbox/ack`: a full batch of a crowd.
const ACK_EVENTS: u64 = 128;

/// `outbox/ack`: a relay acknowledging (and so deleting) `ACK_ENTRIES` entries of
/// `ACK_EVENTS` admissions each, once read. Only the acknowledgement is timed; the admissions
/// and the read that precede it are not.
fn outbox(c: &mut Criterion) {
    let bench = Bench::new();
    let mut group = c.benchmark_group("outbox");
    group.throughput(Throughput::Elements(ACK_ENTRIES * ACK_EVENTS));
    let id = bench.campaign("ack", u32::MAX);
    let outbox = bench.gate.outbox();
    let mut next_user = 1;
    group.bench_function("ack", |b| {
        b.iter_custom(|iterations| {
            let mut took = std::time::Duration::ZERO;
            for _ in 0..iterations {
                bench.rt.block_on(async {
                    for _ in 0..ACK_ENTRIES {
                        let users: Vec<_> = (next_user..next_user + ACK_EVENTS)
                            .map(|u| UserId::from_number(u).expect("user"))
                            .collect();
                        next_user += ACK_EVENTS;
                        bench.gate.apply_many(&id, &users).await.expect("admit");
                    }
                    let read = outbox
                        .read(&id, "bench", usize::try_from(ACK_ENTRIES).expect("small"))
                        .await
                        .expect("read");
                    let started = std::time::Instant::now();
                    outbox.ack(&id, &read).await.expect("ack");
                    took += started.elapsed();
                });
            }
            took
        })
    });
    group.finish();
}

criterion_group!(benches, gate, outbox);
criterion_main!(benches);
