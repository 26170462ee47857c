//! Abuse limits, checked before Redis: applications per user and per client address, failed
//! token verifications per client address, and which address a request comes from.
//!
//! Each limit is a token bucket per key: `burst` at once, refilled at `per_second`. Every
//! coupon-http on one Redis shares it: the limit holds for the deployment, however a load
//! balancer spreads a client's requests (see [`shared`] for what that costs and how little
//! Redis is asked). Each process also keeps a bucket of the same limit of its own, which alone
//! decides while Redis is away. A key's state is dropped by [`Limits::sweep`] once its bucket
//! is full again, so a flood of distinct keys costs memory only for the keys seen in the last
//! `burst / per_second` seconds plus a second or two; in Redis, a key expires then too.
//!
//! The bad-token budget is spent only by tokens refused after verifying; an address that has
//! spent it is refused before verifying until the bucket has room again (`blocked`), and then
//! one of its requests at a time is verified, one per refill interval, until the bucket is full
//! again. A flood of forged tokens thus costs the server the burst, the requests already in
//! flight when it ran out, and then `per_second` verifications a second per address; other
//! addresses pay nothing. Each refused token is charged to the address's shared budget in
//! Redis too, and an address Redis finds out of budget is blocked in every process that
//! learns of it.

mod shared;

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use coupon_gate::{RedisConnection, UserId};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hyper::header::HeaderMap;
use ipnet::IpNet;
use metrics::Counter;

use shared::{Ask, Bucket, Keyed, Step, Store};

/// A rate limit: `burst` at once, `per_second` sustained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Applications per second, sustained.
    pub per_second: NonZeroU32,
    /// Applications at once, after a quiet while.
    pub burst: NonZeroU32,
}

/// One limiter of this process alone, keyed: the bad-token budget's.
struct Limiter<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    clock: DefaultClock,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    fn new(limit: RateLimit) -> Self {
        let clock = DefaultClock::default();
        let quota = Quota::per_second(limit.per_second).allow_burst(limit.burst);
        Self {
            limiter: RateLimiter::dashmap_with_clock(quota, clock.clone()),
            clock,
        }
    }

    /// `Err` with how long until `key` may apply again.
    fn check(&self, key: &K) -> Result<(), Duration> {
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// The limits of one server.
pub(crate) struct Limits {
    user: Option<Keyed<UserId>>,
    address: Option<Keyed<IpAddr>>,
    bad_tokens: Option<BadTokens>,
    /// The buckets every process shares, once Redis was reached, and the limits' clock.
    store: Store,
    /// `coupon_rate_limited_total{scope}`: user, address, bad_token.
    refused: [Counter; 3],
    /// Proxies whose `X-Forwarded-For` entries are believed.
    trusted: Vec<IpNet>,
}

/// Each address's budget of failed token verifications.
struct BadTokens {
    budget: Limiter<IpAddr>,
    /// Addresses that found their budget spent, and until when their tokens are not verified.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    /// One refill of the budget: `1 / per_second`.
    interval: Duration,
    /// How long the budget takes to fill again from empty: `burst / per_second`. An address
    /// blocked longer ago than this is forgotten by the sweep.
    refill: Duration,
    /// The budget in Redis, shared by every process.
    shared: Bucket,
}

/// How many times a request waits for Redis's answer about its key before it is refused.
const WAITS: usize = 3;

/// A request refused by a limit: how long until it may come again, and which limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limited {
    pub(crate) retry_after: Duration,
    pub(crate) limit: Limit,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// Applications of one user.
    User,
    /// Applications from one client address.
    Address,
    /// Failed token verifications from one client address.
    BadTokens,
}

impl Limit {
    /// The `scope` label of `coupon_rate_limited_total`.
    const SCOPES: [&'static str; 3] = ["user", "address", "bad_token"];
}

impl Limits {
    /// The limits of a server whose Redis calls wait at most `timeout`; each process's own
    /// until [`Limits::connect`].
    pub(crate) fn new(
        user: Option<RateLimit>,
        address: Option<RateLimit>,
        bad_tokens: Option<RateLimit>,
        trusted: Vec<IpNet>,
        timeout: Duration,
    ) -> Self {
        Self {
            user: user.map(|limit| Keyed::new(limit, "u")),
            address: address.map(|limit| Keyed::new(limit, "a")),
            bad_tokens: bad_tokens.map(|limit| {
                let per_second = f64::from(limit.per_second.get());
                BadTokens {
                    budget: Limiter::new(limit),
                    blocked: Mutex::default(),
                    interval: Duration::from_secs_f64(1.0 / per_second),
                    refill: Duration::from_secs_f64(f64::from(limit.burst.get()) / per_second),
                    shared: Bucket::new(limit, "b"),
                }
            }),
            store: Store::new(timeout),
            refused: Limit::SCOPES
                .map(|scope| metrics::counter!("coupon_rate_limited_total", "scope" => scope)),
            trusted,
        }
    }

    /// Shares the limits with every coupon-http on `redis` under the key prefix `prefix`.
    pub(crate) fn connect(&self, redis: RedisConnection, prefix: &str) {
        self.store.connect(redis, prefix);
    }

    /// A request refused by `limit` for `retry_after`, counted in `coupon_rate_limited_total`.
    fn refuse(&self, limit: Limit, retry_after: Duration) -> Limited {
        let index = match limit {
            Limit::User => 0,
            Limit::Address => 1,
            Limit::BadTokens => 2,
        };
        self.refused[index].increment(1);
        Limited { retry_after, limit }
    }

    /// Whether `address` may have a token verified: `Err` while it has spent its budget of
    /// failed verifications. Once the budget has room for one again, one request is let through
    /// and the address's others are held back for one refill interval, so that a flood on many
    /// connections cannot slip several verifications through at once. Spends nothing.
    pub(crate) fn check_bad_tokens(&self, address: IpAddr) -> Result<(), Limited> {
        let Some(bad) = &self.bad_tokens else {
            return Ok(());
        };
        let mut blocked = bad.blocked.lock().expect("bad-token lock");
        let Some(until) = blocked.get_mut(&address) else {
            return Ok(());
        };
        let now = Instant::now();
        if now < *until {
            let retry_after = *until - now;
            drop(blocked);
            return Err(self.refuse(Limit::BadTokens, retry_after));
        }
        *until = now + bad.interval;
        Ok(())
    }

    /// Spends one failed verification of `address`'s budget, in this process and in Redis;
    /// once either is spent, the address is refused by [`Limits::check_bad_tokens`] until the
    /// budget has room again.
    pub(crate) async fn spend_bad_token(&self, address: IpAddr) {
        let Some(bad) = &self.bad_tokens else {
            return;
        };
        let block = |wait: Duration| {
            let until = Instant::now() + wait;
            let mut blocked = bad.blocked.lock().expect("bad-token lock");
            let entry = blocked.entry(address).or_insert(until);
            *entry = (*entry).max(until);
        };
        if let Err(wait) = bad.budget.check(&address) {
            block(wait);
        }
        let now = self.store.now();
        let Some(prefix) = self.store.prefix().filter(|_| self.store.ready(now)) else {
            return;
        };
        // Charged whatever the budget holds: a flood spread over the processes spends it too.
        let charge = bad.shared.charge(prefix, &address, 1, 0);
        let answer = self.store.charge_now(&charge).await;
        if let Some((_, wait)) = answer.filter(|&(_, wait)| wait > 0) {
            block(Duration::from_nanos(wait));
        }
    }

    /// Counts an application from `address` against its limit.
    pub(crate) async fn check_address(&self, address: IpAddr) -> Result<(), Limited> {
        match &self.address {
            Some(limit) => self.check(limit, &address, Limit::Address).await,
            None => Ok(()),
        }
    }

    /// Counts an application of `user` against its limit.
    pub(crate) async fn check_user(&self, user: &UserId) -> Result<(), Limited> {
        match &self.user {
            Some(limit) => self.check(limit, user, Limit::User).await,
            None => Ok(()),
        }
    }

    /// Counts a request of `key` against `limit`: in this process, and in Redis, which this
    /// process waits for only while Redis is being asked about the key (see [`shared`]).
    async fn check<K>(&self, limit: &Keyed<K>, key: &K, which: Limit) -> Result<(), Limited>
    where
        K: Hash + Eq + Clone + std::fmt::Display + Send + Sync + 'static,
    {
        for _ in 0..WAITS {
            let now = self.store.now();
            match limit.step(key, now, self.store.ready(now)) {
                Step::Pass => return Ok(()),
                Step::PassAndAsk { debt, wanted } => {
                    let prefix = self.store.prefix().unwrap_or_default();
                    let charge = limit.bucket().charge(prefix, key, debt, wanted);
                    let settle = limit.settle(key.clone());
                    self.store.submit(Ask { charge, settle });
                    return Ok(());
                }
                Step::Refused(wait) => {
                    return Err(self.refuse(which, Duration::from_nanos(wait)));
                }
                Step::Wait(answered) => {
                    let notified = answered.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    // Answered since the step, or answered while this waits: step again.
                    if limit.asking(key) {
                        let _ = tokio::time::timeout(self.store.timeout(), notified).await;
                    }
                }
            }
        }
        // Redis was asked again and again while this waited: a key this busy waits its turn.
        Err(self.refuse(which, Duration::from_millis(1)))
    }

    /// Forgets every key whose bucket is full again; run about once a second.
    pub(crate) fn sweep(&self) {
        let now = self.store.now();
        if let Some(limit) = &self.user {
            limit.sweep(now);
        }
        if let Some(limit) = &self.address {
            limit.sweep(now);
        }
        if let Some(bad) = &self.bad_tokens {
            bad.budget.sweep();
            let now = Instant::now();
            let mut blocked = bad.blocked.lock().expect("bad-token lock");
            // Kept until the budget is full again: until then, one request at a time.
            blocked.retain(|_, until| *until + bad.refill > now);
            blocked.shrink_to_fit();
        }
    }

    /// The client a request comes from: its peer, unless the peer is a trusted proxy, in which
    /// case the last `X-Forwarded-For` entry that is not itself a trusted proxy (each proxy
    /// appends the address it received the request from; only the entries trusted proxies
    /// appended are believed).
    pub(crate) fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|entry| parse_address(entry.trim()))
            .collect();
        forwarded
            .iter()
            .rev()
            .find(|address| !self.is_trusted(**address))
            .or(forwarded.first())
            .copied()
            .unwrap_or(peer)
    }

    fn is_trusted(&self, address: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&address))
    }
}

/// An `X-Forwarded-For` entry: an address, perhaps with a port (`[::1]:80`, `10.0.0.1:5000`).
fn parse_address(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    fn limit(per_second: u32, burst: u32) -> RateLimit {
        RateLimit {
            per_second: NonZeroU32::new(per_second).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        }
    }

    /// Limits of this process alone, as before Redis is reached.
    fn alone(
        user: Option<RateLimit>,
        bad_tokens: Option<RateLimit>,
        trusted: Vec<IpNet>,
    ) -> Limits {
        Limits::new(user, None, bad_tokens, trusted, Duration::from_secs(1))
    }

    #[tokio::test]
    async fn a_burst_passes_and_the_next_waits_about_one_interval() {
        let limits = alone(Some(limit(5, 10)), None, Vec::new());
        let alice = UserId::new("alice").unwrap();
        for _ in 0..10 {
            assert_eq!(limits.check_user(&alice).await, Ok(()));
        }
        let refused = limits.check_user(&alice).await.unwrap_err();
        assert_eq!(refused.limit, Limit::User);
        assert!(
            refused.retry_after <= Duration::from_millis(200),
            "{refused:?}"
        );
        // Another user has a bucket of its own; addresses are not limited.
        assert_eq!(
            limits.check_user(&UserId::new("bob").unwrap()).await,
            Ok(())
        );
        assert_eq!(
            limits.check_address("127.0.0.2".parse().unwrap()).await,
            Ok(())
        );
    }

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
        let limits = alone(None, None, vec!["10.0.0.0/8".parse().unwrap()]);
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.7, 10.0.0.2"),
        );
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        // The client's own entry (6.6.6.6) could be forged; the one the proxy appended is not.
        assert_eq!(
            limits.client(proxy, &headers),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(limits.client(stranger, &headers), stranger);
        assert_eq!(limits.client(proxy, &HeaderMap::new()), proxy);
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("[2001:db8::1]:443"),
        );
        assert_eq!(
            limits.client(proxy, &headers),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
    }

    #[tokio::test]
    async fn a_spent_bad_token_budget_refuses_that_address_only_until_it_refills() {
        let limits = alone(None, Some(limit(100, 3)), Vec::new());
        let (attacker, other) = (IpAddr::from([127, 0, 0, 2]), IpAddr::from([127, 0, 0, 3]));
        // The budget of 3 failures, and the one that finds it spent.
        for _ in 0..4 {
            assert_eq!(limits.check_bad_tokens(attacker), Ok(()));
            limits.spend_bad_token(attacker).await;
        }
        let refused = limits.check_bad_tokens(attacker).unwrap_err();
        assert_eq!(refused.limit, Limit::BadTokens);
        assert!(
            refused.retry_after <= Duration::from_millis(10),
            "{refused:?}"
        );
        assert_eq!(limits.check_bad_tokens(other), Ok(()));
        // Refilled by one: one request is verified, the next waits another interval.
        let deadline = Instant::now() + Duration::from_secs(1);
        while limits.check_bad_tokens(attacker).is_err() {
            assert!(Instant::now() < deadline, "the budget never refilled");
        }
        assert!(limits.check_bad_tokens(attacker).is_err());
        let off = alone(None, None, Vec::new());
        off.spend_bad_token(attacker).await;
        assert_eq!(off.check_bad_tokens(attacker), Ok(()));
    }
}
