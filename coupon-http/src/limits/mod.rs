//! Abuse limits, checked before Redis: applications per user and per client address, failed
//! token verifications per client address, and which address a request comes from.
//!
//! Each limit is a token bucket per key (governor's keyed GCRA limiter): `burst` at once,
//! refilled at `per_second`. A key's state is dropped by [`Limits::sweep`] once its bucket is
//! full again, so a flood of distinct keys costs memory only for the keys seen in the last
//! `burst / per_second` seconds plus one sweep interval.
//!
//! The bad-token budget is spent only by tokens refused after verifying; an address that has
//! spent it is refused before verifying until the bucket has room again (`blocked`), and then
//! one of its requests at a time is verified, one per refill interval, until the bucket is full
//! again. A flood of forged tokens thus costs the server the burst, the requests already in
//! flight when it ran out, and then `per_second` verifications a second per address; other
//! addresses pay nothing.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use coupon_gate::UserId;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hyper::header::HeaderMap;
use ipnet::IpNet;

/// A rate limit: `burst` at once, `per_second` sustained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Applications per second, sustained.
    pub per_second: NonZeroU32,
    /// Applications at once, after a quiet while.
    pub burst: NonZeroU32,
}

/// One limiter, keyed.
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
    user: Option<Limiter<UserId>>,
    address: Option<Limiter<IpAddr>>,
    bad_tokens: Option<BadTokens>,
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
}

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

impl Limits {
    pub(crate) fn new(
        user: Option<RateLimit>,
        address: Option<RateLimit>,
        bad_tokens: Option<RateLimit>,
        trusted: Vec<IpNet>,
    ) -> Self {
        Self {
            user: user.map(Limiter::new),
            address: address.map(Limiter::new),
            bad_tokens: bad_tokens.map(|limit| {
                let per_second = f64::from(limit.per_second.get());
                BadTokens {
                    budget: Limiter::new(limit),
                    blocked: Mutex::default(),
                    interval: Duration::from_secs_f64(1.0 / per_second),
                    refill: Duration::from_secs_f64(f64::from(limit.burst.get()) / per_second),
                }
            }),
            trusted,
        }
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
            return Err(Limited {
                retry_after: *until - now,
                limit: Limit::BadTokens,
            });
        }
        *until = now + bad.interval;
        Ok(())
    }

    /// Spends one failed verification of `address`'s budget; once it is spent, the address is
    /// refused by [`Limits::check_bad_tokens`] until the budget has room again.
    pub(crate) fn spend_bad_token(&self, address: IpAddr) {
        let Some(bad) = &self.bad_tokens else {
            return;
        };
        if let Err(wait) = bad.budget.check(&address) {
            let until = Instant::now() + wait;
            bad.blocked
                .lock()
                .expect("bad-token lock")
                .insert(address, until);
        }
    }

    /// Counts an application from `address` against its limit.
    pub(crate) fn check_address(&self, address: IpAddr) -> Result<(), Limited> {
        match &self.address {
            Some(limiter) => limiter.check(&address).map_err(|retry_after| Limited {
                retry_after,
                limit: Limit::Address,
            }),
            None => Ok(()),
        }
    }

    /// Counts an application of `user` against its limit.
    pub(crate) fn check_user(&self, user: &UserId) -> Result<(), Limited> {
        match &self.user {
            Some(limiter) => limiter.check(user).map_err(|retry_after| Limited {
                retry_after,
                limit: Limit::User,
            }),
            None => Ok(()),
        }
    }

    /// Forgets every key whose bucket is full again; run about once a second.
    pub(crate) fn sweep(&self) {
        if let Some(limiter) = &self.user {
            limiter.sweep();
        }
        if let Some(limiter) = &self.address {
            limiter.sweep();
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

    #[test]
    fn a_burst_passes_and_the_next_waits_about_one_interval() {
        let limits = Limits::new(Some(limit(5, 10)), None, None, Vec::new());
        let alice = UserId::new("alice").unwrap();
        for _ in 0..10 {
            assert_eq!(limits.check_user(&alice), Ok(()));
        }
        let refused = limits.check_user(&alice).unwrap_err();
        assert_eq!(refused.limit, Limit::User);
        assert!(
            refused.retry_after <= Duration::from_millis(200),
            "{refused:?}"
        );
        // Another user has a bucket of its own; addresses are not limited.
        assert_eq!(limits.check_user(&UserId::new("bob").unwrap()), Ok(()));
        assert_eq!(limits.check_address("127.0.0.2".parse().unwrap()), Ok(()));
    }

    #[test]
    fn full_buckets_are_forgotten() {
        let limits = Limits::new(None, Some(limit(1000, 1)), None, Vec::new());
        for last in 1..=100u8 {
            let _ = limits.check_address(IpAddr::from([10, 0, 0, last]));
        }
        assert_eq!(limits.address.as_ref().unwrap().limiter.len(), 100);
        std::thread::sleep(Duration::from_millis(5));
        limits.sweep();
        assert_eq!(limits.address.as_ref().unwrap().limiter.len(), 0);
    }

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
        let limits = Limits::new(None, None, None, vec!["10.0.0.0/8".parse().unwrap()]);
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

    #[test]
    fn a_spent_bad_token_budget_refuses_that_address_only_until_it_refills() {
        let limits = Limits::new(None, None, Some(limit(100, 3)), Vec::new());
        let (attacker, other) = (IpAddr::from([127, 0, 0, 2]), IpAddr::from([127, 0, 0, 3]));
        // The budget of 3 failures, and the one that finds it spent.
        for _ in 0..4 {
            assert_eq!(limits.check_bad_tokens(attacker), Ok(()));
            limits.spend_bad_token(attacker);
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
        let off = Limits::new(None, None, None, Vec::new());
        off.spend_bad_token(attacker);
        assert_eq!(off.check_bad_tokens(attacker), Ok(()));
    }
}
