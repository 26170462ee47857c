//! The part of each limit every coupon-http on one Redis shares: one GCRA bucket per key in
//! Redis ([`Store`], `limit.lua`, on Redis's clock), and each process's view of it
//! ([`Keyed`]): its own bucket of the same limit, what it leased from Redis, and until when
//! Redis has no room for the key.
//!
//! Almost no request waits for Redis. A key's first request in a process (or its first after the key
//! was forgotten, idle for its refill time plus [`LINGER`]) passes and is owed to Redis. A
//! later one spends a token leased from Redis if the process holds one; if not, it passes too
//! and sends Redis what the key owes, asking for a lease of up to a third of the burst; the
//! key's requests that come while Redis decides wait for its answer (a double click, or a
//! script), and once Redis answered that it has no room they are refused until Redis said it
//! has room again. Requests are never given
//! back: what passed is charged even when the bucket is empty, so a client cannot gain by
//! spreading its requests, but at most one request per process in flight.
//!
//! The asks of five milliseconds go to Redis in one script call ([`Store`]'s batcher; one call
//! per key on a cluster, whose keys lie in different slots). A flash crowd of one-shot users
//! thus costs Redis nothing, a user clicking five times one key in a call, and a script clicking
//! without pause one key per lease and then nothing until its bucket refills.
//!
//! Without Redis (not reached yet, or a call failed or timed out) each process applies its own
//! bucket alone, as a single process would, and asks Redis again a second later.

use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use coupon_gate::RedisConnection;
use dashmap::DashMap;
use metrics::Gauge;
use redis::Script;
use tokio::sync::{Notify, mpsc};
use tracing::{info, warn};

use super::RateLimit;

/// How long a key is remembered after its bucket is full again, so that a process's free first
/// request cannot come round again sooner than this, whatever the burst.
pub(super) const LINGER: Duration = Duration::from_secs(1);

/// How long a process applies its own limits alone after a Redis call failed.
const RETRY: Duration = Duration::from_secs(1);

/// How long the batcher gathers asks before it calls Redis, and how many one call carries.
const GATHER: Duration = Duration::from_millis(5);
const MAX_BATCH: usize = 256;

/// Nanoseconds since the limits were made ([`Store::now`]): the processes' own time, for their
/// own buckets.
pub(super) type Nanos = u64;

/// A key's view in one process.
struct Entry {
    /// This process's bucket: its theoretical arrival time.
    tat: Nanos,
    /// Requests let through here that Redis has not been charged for.
    debt: u32,
    /// Requests Redis let through ahead of time (a lease), not yet used.
    tokens: u32,
    /// Until when Redis has no room for the key, as it last said.
    refill_at: Nanos,
    /// Whether Redis is being asked about this key.
    asking: bool,
    /// Wakes the key's requests that wait for the answer, if any do.
    answered: Option<Arc<Notify>>,
}

/// What a request of a key comes to.
#[derive(Debug)]
pub(super) enum Step {
    Pass,
    /// Refused for this many nanoseconds.
    Refused(Nanos),
    /// Passes, and Redis must be told: charge `debt`, and lease `wanted` if there is room.
    PassAndAsk {
        debt: u32,
        wanted: u32,
    },
    /// Redis is being asked about the key: wait for the answer, then step again.
    Wait(Arc<Notify>),
}

/// `limit`'s emission interval (one request's share) and tolerance (the burst's), in
/// nanoseconds.
fn nanos(limit: RateLimit) -> (Nanos, Nanos) {
    let interval = 1_000_000_000 / u64::from(limit.per_second.get());
    (interval, interval * u64::from(limit.burst.get()))
}

/// A limit's buckets in Redis: how their keys are named, and the limit as `limit.lua` takes it.
pub(super) struct Bucket {
    /// The key name's middle: `<prefix>:limit:<kind>:<key>`.
    kind: &'static str,
    /// The emission interval and the tolerance, in microseconds.
    interval: u64,
    tolerance: u64,
}

impl Bucket {
    pub(super) fn new(limit: RateLimit, kind: &'static str) -> Self {
        let (interval, tolerance) = nanos(limit);
        Self {
            kind,
            interval: interval.div_ceil(1000),
            tolerance: tolerance.div_ceil(1000),
        }
    }

    /// The call of `limit.lua` that charges `key`'s bucket under `prefix` with `debt` and leases
    /// `wanted`.
    pub(super) fn charge(
        &self,
        prefix: &str,
        key: &impl std::fmt::Display,
        debt: u32,
        wanted: u32,
    ) -> Charge {
        Charge {
            name: format!("{prefix}:limit:{}:{key}", self.kind),
            args: (self.interval, self.tolerance),
            debt,
            wanted,
        }
    }
}

/// One limit, keyed: each key's view in this process.
pub(super) struct Keyed<K: Hash + Eq> {
    entries: Arc<DashMap<K, Entry>>,
    /// The limit in nanoseconds: one request's share, and the burst's.
    interval: Nanos,
    tolerance: Nanos,
    /// Requests leased at once.
    lease: u32,
    /// The key's bucket in Redis.
    bucket: Bucket,
}

impl<K> Keyed<K>
where
    K: Hash + Eq + Clone + std::fmt::Display + Send + Sync + 'static,
{
    pub(super) fn new(limit: RateLimit, kind: &'static str) -> Self {
        let (interval, tolerance) = nanos(limit);
        Self {
            entries: Arc::new(DashMap::new()),
            interval,
            tolerance,
            lease: limit.burst.get() / 3,
            bucket: Bucket::new(limit, kind),
        }
    }

    /// The limit's buckets in Redis.
    pub(super) fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    /// Decides a request of `key`: its own bucket first, then what this process knows of
    /// Redis's if `shared` (Redis reachable).
    pub(super) fn step(&self, key: &K, now: Nanos, shared: bool) -> Step {
        let mut entry = match self.entries.get_mut(key) {
            Some(entry) => entry,
            None => {
                // Owed to Redis, and paid with the key's next ask from here, if it comes.
                let fresh = Entry {
                    tat: now + self.interval,
                    debt: u32::from(shared),
                    tokens: 0,
                    refill_at: 0,
                    asking: false,
                    answered: None,
                };
                self.entries.insert(key.clone(), fresh);
                return Step::Pass;
            }
        };
        if shared && entry.tokens == 0 && entry.refill_at > now {
            return Step::Refused(entry.refill_at - now);
        }
        let tat = entry.tat.max(now);
        if tat + self.interval > now + self.tolerance {
            return Step::Refused(tat + self.interval - self.tolerance - now);
        }
        if !shared {
            entry.tat = tat + self.interval;
            return Step::Pass;
        }
        if entry.tokens > 0 {
            entry.tat = tat + self.interval;
            entry.tokens -= 1;
            return Step::Pass;
        }
        if entry.asking {
            let answered = entry.answered.get_or_insert_with(Arc::default);
            return Step::Wait(answered.clone());
        }
        entry.tat = tat + self.interval;
        entry.asking = true;
        Step::PassAndAsk {
            debt: std::mem::take(&mut entry.debt) + 1,
            wanted: self.lease,
        }
    }

    /// What to do with Redis's answer to the ask [`Keyed::step`] asked for `key`: record the
    /// lease `granted` and `wait` until Redis has room for one more; with no answer (Redis
    /// failed), nothing but that the ask is over.
    pub(super) fn settle(&self, key: K) -> Settle {
        let entries = self.entries.clone();
        Box::new(move |answer, now| {
            let answered = entries.get_mut(&key).and_then(|mut entry| {
                entry.asking = false;
                if let Some((granted, wait)) = answer {
                    entry.tokens += granted;
                    entry.refill_at = entry.refill_at.max(now + wait);
                }
                entry.answered.take()
            });
            if let Some(answered) = answered {
                answered.notify_waiters();
            }
        })
    }

    /// Whether Redis is being asked about `key`.
    pub(super) fn asking(&self, key: &K) -> bool {
        self.entries.get(key).is_some_and(|entry| entry.asking)
    }

    /// Forgets every key whose bucket has been full for [`LINGER`] and that Redis does not hold
    /// refused.
    pub(super) fn sweep(&self, now: Nanos) {
        let linger = LINGER.as_nanos() as u64;
        self.entries
            .retain(|_, entry| entry.tat + linger > now || entry.refill_at > now || entry.asking);
        self.entries.shrink_to_fit();
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Records Redis's answer to one ask (`None` if Redis failed), at a time of the limits' clock.
pub(super) type Settle = Box<dyn FnOnce(Option<(u32, Nanos)>, Nanos) + Send + Sync>;

/// What one key's call of `limit.lua` says: see the script.
pub(super) struct Charge {
    /// The key's name in Redis.
    name: String,
    /// Its limit: the interval and the tolerance, in microseconds.
    args: (u64, u64),
    debt: u32,
    wanted: u32,
}

/// One key's ask, waiting for the batcher.
pub(super) struct Ask {
    pub(super) charge: Charge,
    pub(super) settle: Settle,
}

/// The shared buckets in Redis, once Redis was reached; each process's own limits while it is
/// away.
pub(super) struct Store {
    redis: OnceLock<(RedisConnection, String)>,
    calls: Arc<Calls>,
    /// The batcher's queue, and its receiving end until the batcher starts.
    asks: mpsc::UnboundedSender<Ask>,
    queued: Mutex<Option<mpsc::UnboundedReceiver<Ask>>>,
}

/// What calls Redis: the script, the timeout, and whether Redis failed lately.
struct Calls {
    script: Script,
    timeout: Duration,
    epoch: Instant,
    /// Until when Redis is not asked, after a failure (nanoseconds of the limits' clock).
    retry_at: AtomicU64,
    /// Whether a call failed and none succeeded since: the limits are each process's own.
    fallen_back: AtomicBool,
    gauge: Gauge,
}

impl Store {
    /// The store of limits whose Redis calls wait at most `timeout`; its clock starts now.
    pub(super) fn new(timeout: Duration) -> Self {
        let gauge = metrics::gauge!("coupon_rate_limit_local_fallback");
        gauge.set(0.0);
        let (asks, queued) = mpsc::unbounded_channel();
        Self {
            redis: OnceLock::new(),
            calls: Arc::new(Calls {
                script: Script::new(include_str!("limit.lua")),
                timeout,
                epoch: Instant::now(),
                retry_at: AtomicU64::new(0),
                fallen_back: AtomicBool::new(false),
                gauge,
            }),
            asks,
            queued: Mutex::new(Some(queued)),
        }
    }

    /// Shares the limits over `redis`, under the key prefix `prefix`, and starts the batcher
    /// (on the current runtime; it ends with the store).
    pub(super) fn connect(&self, redis: RedisConnection, prefix: &str) {
        let queued = self.queued.lock().expect("limits queue").take();
        if let Some(queued) = queued {
            let _ = self.redis.set((redis.clone(), prefix.to_owned()));
            tokio::spawn(batch(self.calls.clone(), redis, queued));
        }
    }

    /// Whether Redis may be asked now: reached, and not failing within the last [`RETRY`].
    pub(super) fn ready(&self, now: Nanos) -> bool {
        self.redis.get().is_some() && now >= self.calls.retry_at.load(Ordering::Relaxed)
    }

    /// The limits' clock: nanoseconds since the store was made.
    pub(super) fn now(&self) -> Nanos {
        self.calls.now()
    }

    /// How long a Redis call may take.
    pub(super) fn timeout(&self) -> Duration {
        self.calls.timeout
    }

    /// The key prefix the limits live under, once Redis was reached.
    pub(super) fn prefix(&self) -> Option<&str> {
        self.redis.get().map(|(_, prefix)| prefix.as_str())
    }

    /// Hands `ask` to the batcher; its answer comes to its `settle`.
    pub(super) fn submit(&self, ask: Ask) {
        if let Err(unsent) = self.asks.send(ask) {
            (unsent.0.settle)(None, self.calls.now());
        }
    }

    /// Runs `limit.lua` on one key at once: `(granted, wait)`, or `None` if Redis failed, in
    /// which case this process applies its own limits alone for [`RETRY`].
    pub(super) async fn charge_now(&self, charge: &Charge) -> Option<(u32, Nanos)> {
        let (redis, _) = self.redis.get()?;
        let answers = self.calls.call(redis.clone(), [charge]).await?;
        answers.first().copied()
    }
}

impl Calls {
    fn now(&self) -> Nanos {
        self.epoch.elapsed().as_nanos() as Nanos
    }

    /// One script call for `asks` (their keys in one slot, or on one server): each key's
    /// `(granted, wait)`, or `None` if Redis failed.
    async fn call<'a>(
        &self,
        mut redis: RedisConnection,
        charges: impl IntoIterator<Item = &'a Charge>,
    ) -> Option<Vec<(u32, Nanos)>> {
        let mut invocation = self.script.prepare_invoke();
        let mut keys = 0;
        for charge in charges {
            keys += 1;
            invocation
                .key(&charge.name)
                .arg(charge.args.0)
                .arg(charge.args.1)
                .arg(charge.debt)
                .arg(charge.wanted);
        }
        let call = invocation.invoke_async::<Vec<u64>>(&mut redis);
        let failure = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(flat)) if flat.len() == 2 * keys => {
                if self.fallen_back.swap(false, Ordering::Relaxed) {
                    self.gauge.set(0.0);
                    info!(
                        "redis answers again: the rate limits are shared by every coupon-http \
                         once more"
                    );
                }
                let answers = flat
                    .chunks(2)
                    .map(|pair| (pair[0] as u32, pair[1].saturating_mul(1000)))
                    .collect();
                return Some(answers);
            }
            Ok(Ok(flat)) => format!("{} numbers for {keys} keys", flat.len()),
            Ok(Err(err)) => format!("{err}"),
            Err(_) => format!("no answer within {:?}", self.timeout),
        };
        self.retry_at
            .store(self.now() + RETRY.as_nanos() as u64, Ordering::Relaxed);
        if !self.fallen_back.swap(true, Ordering::Relaxed) {
            self.gauge.set(1.0);
            warn!(
                cause = failure,
                "the shared rate limits cannot reach redis: each coupon-http applies its own \
                 limits alone (N processes allow N times the rate) and asks redis again every \
                 second"
            );
        }
        None
    }
}

/// The batcher: gathers the asks of [`GATHER`] (at most [`MAX_BATCH`]) and sends them in one
/// script call, or in one per key on a cluster; ends when the store is dropped.
async fn batch(
    calls: Arc<Calls>,
    redis: RedisConnection,
    mut queued: mpsc::UnboundedReceiver<Ask>,
) {
    let mut asks = Vec::with_capacity(MAX_BATCH);
    loop {
        if queued.recv_many(&mut asks, MAX_BATCH).await == 0 {
            return;
        }
        tokio::time::sleep(GATHER).await;
        while asks.len() < MAX_BATCH {
            match queued.try_recv() {
                Ok(ask) => asks.push(ask),
                Err(_) => break,
            }
        }
        let answers: Vec<Option<(u32, Nanos)>> = if redis.is_cluster() {
            let each = asks.iter().map(|ask| {
                let (calls, redis) = (&calls, redis.clone());
                async move {
                    let answer = calls.call(redis, [&ask.charge]).await;
                    answer.and_then(|answers| answers.first().copied())
                }
            });
            futures_util::future::join_all(each).await
        } else {
            match calls
                .call(redis.clone(), asks.iter().map(|ask| &ask.charge))
                .await
            {
                Some(answers) => answers.into_iter().map(Some).collect(),
                None => vec![None; asks.len()],
            }
        };
        let now = calls.now();
        for (ask, answer) in asks.drain(..).zip(answers) {
            (ask.settle)(answer, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    fn keyed(per_second: u32, burst: u32) -> Keyed<u32> {
        let limit = RateLimit {
            per_second: NonZeroU32::new(per_second).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        };
        Keyed::new(limit, "u")
    }

    fn pass(step: Step) {
        assert!(matches!(step, Step::Pass), "{step:?}");
    }

    fn ask(step: Step) -> (u32, u32) {
        match step {
            Step::PassAndAsk { debt, wanted } => (debt, wanted),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_first_request_passes_unasked_and_is_charged_with_the_next() {
        let limit = keyed(5, 10);
        pass(limit.step(&7, 0, true));
        assert_eq!(ask(limit.step(&7, 1, true)), (2, 3));
        // While Redis is asked, the key's requests wait for its answer.
        assert!(matches!(limit.step(&7, 2, true), Step::Wait(_)));
        assert!(limit.asking(&7));
        // Redis leased three.
        (limit.settle(7))(Some((3, 0)), 3);
        assert!(!limit.asking(&7));
        for now in 4..7 {
            pass(limit.step(&7, now, true));
        }
        assert_eq!(ask(limit.step(&7, 7, true)), (1, 3));
        // None left in Redis for a second: refused here without asking until then.
        let second = 1_000_000_000;
        (limit.settle(7))(Some((0, second)), 8);
        assert!(matches!(limit.step(&7, 9, true), Step::Refused(wait) if wait == second - 1));
        assert_eq!(ask(limit.step(&7, 8 + second, true)), (1, 3));
        // Redis failed: the ask is over, nothing leased, nothing refused.
        (limit.settle(7))(None, 9 + second);
        assert!(!limit.asking(&7));
    }

    #[test]
    fn without_redis_the_process_bucket_alone_decides() {
        let limit = keyed(5, 10);
        for now in 0..10 {
            pass(limit.step(&7, now, false));
        }
        assert!(matches!(limit.step(&7, 10, false), Step::Refused(_)));
        // Nothing is owed to Redis for what passed while it was away.
        assert_eq!(ask(limit.step(&7, 200_000_000, true)), (1, 3));
    }

    #[test]
    fn keys_are_forgotten_a_linger_after_their_bucket_is_full() {
        let limit = keyed(1000, 1);
        for key in 0..100 {
            pass(limit.step(&key, 0, true));
        }
        // A burst of one refills in a millisecond; the keys stay for the linger.
        limit.sweep(2_000_000);
        assert_eq!(limit.len(), 100);
        limit.sweep(2_000_000 + LINGER.as_nanos() as u64);
        assert_eq!(limit.len(), 0);
    }
}
