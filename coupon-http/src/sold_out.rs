//! Local knowledge of sold-out campaigns and of who holds their coupons, so that the crowd
//! arriving after the last coupon is answered `sold_out` without a Redis round trip, and a holder
//! applying again is still told `duplicate` with their seq.
//!
//! A campaign is remembered as sold out when the gate answers `SoldOut` for it, for at most
//! the configured time to live, and only once its holders are known: the first `SoldOut` from
//! Redis starts a read of every holder's id ([`Gate::holder_ids`]), and until it is done the
//! campaign's applications go to Redis, which answers them truly. The holders are kept as 64-bit
//! hashes of their ids (see [`HolderSet`] for the memory), at most `max_holders` in all: a
//! campaign with more holders than the room left is never answered from memory. A user whose
//! hash is among the holders is looked up in Redis (two reads, no write) and answered
//! `duplicate` with the seq found there, or `sold_out` for the rare other id with the same hash;
//! everyone else is answered `sold_out` at once.
//!
//! The memory never outlives the truth by more than the time to live: the gate publishes a
//! campaign's id on its changes channel whenever it may have stopped being sold out or changed
//! hands (a slot released, the quota raised, the window changed), and the subscription
//! (`subscription::watch`) forgets the campaign and its holders at once; while that
//! subscription is not established, nothing is remembered at all. An answer or a holder list that was already on its way when a change
//! arrived is not remembered either (a generation counter tells), so a change cannot be
//! overwritten by something older. Holders outlive the time to live, so that a campaign that
//! stays sold out is read once a minute rather than once per time to live; they are dropped a
//! minute after the campaign was last answered sold out by Redis, and read again when a minute
//! old (were a change message lost, a new holder is told `sold_out` for at most that minute).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use coupon_gate::{CampaignId, Gate, RedisConnection, UserId};
use tracing::{debug, info, warn};

/// How long the holders of a campaign are kept after Redis last answered it sold out, and at
/// most since they were read: were a change message lost (a node cut off from a cluster's bus),
/// a new holder would be told `sold_out` from memory for at most this long.
const HOLDERS_IDLE: Duration = Duration::from_secs(60);

/// The campaigns known to be sold out; cheap to clone.
#[derive(Clone)]
pub(crate) struct SoldOutCache {
    inner: Arc<Inner>,
}

struct Inner {
    /// How long a sold-out answer is trusted without a change message; zero disables the cache.
    ttl: Duration,
    /// The most holders remembered, over every campaign.
    max_holders: usize,
    /// What is known of each campaign answered sold out.
    known: RwLock<HashMap<CampaignId, Known>>,
    /// Campaigns whose holders are being read.
    loading: Mutex<HashSet<CampaignId>>,
    /// Hashes user ids for [`HolderSet`]; seeded per process, so that ids colliding on purpose
    /// cannot be chosen from outside.
    hasher: RandomState,
    /// Whether change messages are being received; without them nothing is trusted.
    live: AtomicBool,
    /// Bumped by every change: an answer read before a change must not be remembered after it.
    generation: AtomicU64,
}

/// A campaign answered sold out by Redis.
struct Known {
    /// Until when it is answered sold out without asking Redis.
    until: Instant,
    /// When the read of its holders began.
    read_at: Instant,
    /// Who held its coupons when it sold out; `None` when there were too many to remember.
    holders: Option<HolderSet>,
}

/// The hashes of the ids of a campaign's holders: a hash table of `u64`, 8 bytes a slot plus
/// one control byte, at most 7/8 full, its slots a power of two: 10 to 19 bytes per holder
/// (1,000,000 holders: at most 19 MB).
type HolderSet = HashSet<u64>;

/// What the memory says of an application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Memory {
    /// Nothing: ask Redis.
    Unknown,
    /// Sold out, and the user holds none of its coupons.
    SoldOut,
    /// Sold out, and the user may hold one of its coupons: look the user up.
    MaybeHolder,
}

impl SoldOutCache {
    /// A cache that trusts a sold-out answer for `ttl` (zero: never), remembering at most
    /// `max_holders` holders in all (zero: nothing is answered from memory). It stays empty
    /// until the subscription (`subscription::watch`) is live.
    pub(crate) fn new(ttl: Duration, max_holders: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                ttl: if max_holders == 0 {
                    Duration::ZERO
                } else {
                    ttl
                },
                max_holders,
                known: RwLock::default(),
                loading: Mutex::default(),
                hasher: RandomState::new(),
                live: AtomicBool::new(false),
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// What is known of `user` applying to `campaign` right now.
    pub(crate) fn check(&self, campaign: &CampaignId, user: &UserId) -> Memory {
        if !self.inner.live.load(Ordering::Acquire) {
            return Memory::Unknown;
        }
        let known = self.inner.known.read().expect("sold-out lock");
        let Some(Known {
            until,
            holders: Some(holders),
            ..
        }) = known.get(campaign)
        else {
            return Memory::Unknown;
        };
        if Instant::now() >= *until {
            Memory::Unknown
        } else if holders.contains(&self.hash(user)) {
            Memory::MaybeHolder
        } else {
            Memory::SoldOut
        }
    }

    /// The generation to pass to [`SoldOutCache::remember`] for an answer about to be asked.
    pub(crate) fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Remembers that Redis answered `SoldOut` for `campaign`, unless a change came since
    /// `generation` was read. The first time, its holders are read from `gate` in a task of
    /// their own, and the campaign is remembered once they are known.
    pub(crate) fn remember(
        &self,
        campaign: &CampaignId,
        generation: u64,
        gate: &Gate<RedisConnection>,
    ) {
        if self.inner.ttl.is_zero() || !self.inner.live.load(Ordering::Acquire) {
            return;
        }
        {
            let mut known = self.inner.known.write().expect("sold-out lock");
            // Checked under the lock that `forget` takes after bumping the generation.
            if self.inner.generation.load(Ordering::Acquire) != generation {
                return;
            }
            if let Some(entry) = known.get_mut(campaign) {
                if entry.read_at.elapsed() < HOLDERS_IDLE {
                    entry.until = Instant::now() + self.inner.ttl;
                    return;
                }
                // Read again: until then Redis answers.
                known.remove(campaign);
            }
        }
        if !self
            .inner
            .loading
            .lock()
            .expect("sold-out loading lock")
            .insert(campaign.clone())
        {
            return;
        }
        let cache = self.clone();
        let campaign = campaign.clone();
        let gate = gate.clone();
        tokio::spawn(async move {
            let read_at = Instant::now();
            let holders = cache.read_holders(&campaign, &gate).await;
            cache
                .inner
                .loading
                .lock()
                .expect("sold-out loading lock")
                .remove(&campaign);
            match holders {
                Ok(holders) => cache.learn(campaign, generation, read_at, holders),
                Err(err) => {
                    warn!(%campaign, cause = %err, "cannot read the holders of a sold-out campaign; asking redis meanwhile");
                }
            }
        });
    }

    /// The hashes of `campaign`'s holders, or `None` when there are more than the room left.
    async fn read_holders(
        &self,
        campaign: &CampaignId,
        gate: &Gate<RedisConnection>,
    ) -> Result<Option<HolderSet>, coupon_gate::Error> {
        let room = self.inner.max_holders.saturating_sub(self.held());
        let issued = gate
            .status(campaign)
            .await?
            .map_or(0, |status| status.issued);
        if usize::try_from(issued).unwrap_or(usize::MAX) > room {
            info!(%campaign, issued, room, "too many holders to remember (COUPON_SOLD_OUT_HOLDERS); its sold-out answers come from redis");
            return Ok(None);
        }
        let ids = gate.holder_ids(campaign).await?;
        if ids.len() > room {
            return Ok(None);
        }
        let mut holders = HolderSet::with_capacity(ids.len());
        holders.extend(ids.iter().map(|user| self.hash(user)));
        Ok(Some(holders))
    }

    /// Remembers `campaign` as sold out with its `holders`, unless a change came since
    /// `generation`.
    fn learn(
        &self,
        campaign: CampaignId,
        generation: u64,
        read_at: Instant,
        holders: Option<HolderSet>,
    ) {
        let mut known = self.inner.known.write().expect("sold-out lock");
        if self.inner.generation.load(Ordering::Acquire) != generation
            || !self.inner.live.load(Ordering::Acquire)
        {
            return;
        }
        debug!(%campaign, holders = holders.as_ref().map(HashSet::len), "remembered sold out");
        let until = Instant::now() + self.inner.ttl;
        known.insert(
            campaign,
            Known {
                until,
                read_at,
                holders,
            },
        );
    }

    /// Holders remembered now, over every campaign.
    fn held(&self) -> usize {
        let known = self.inner.known.read().expect("sold-out lock");
        known
            .values()
            .filter_map(|entry| entry.holders.as_ref().map(HashSet::len))
            .sum()
    }

    /// Drops the campaigns, and their holders, that Redis has not answered sold out for a
    /// while; run about once a second.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let mut known = self.inner.known.write().expect("sold-out lock");
        known.retain(|_, entry| entry.until + HOLDERS_IDLE > now);
    }

    fn hash(&self, user: &UserId) -> u64 {
        self.inner.hasher.hash_one(user.as_str())
    }

    pub(crate) fn forget(&self, campaign: Option<&str>) {
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        let mut known = self.inner.known.write().expect("sold-out lock");
        match campaign {
            Some(id) => known.retain(|c, _| c.as_str() != id),
            None => known.clear(),
        }
    }

    pub(crate) fn set_live(&self, live: bool) {
        if !live {
            self.inner.live.store(false, Ordering::Release);
            self.forget(None);
        } else {
            self.inner.live.store(true, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> CampaignId {
        CampaignId::new(s).unwrap()
    }

    fn user(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    /// Remembers `campaign` as `learn` does once its holders are read.
    fn sold_out(cache: &SoldOutCache, campaign: &str, holders: &[&str], generation: u64) {
        let set = holders.iter().map(|h| cache.hash(&user(h))).collect();
        cache.learn(id(campaign), generation, Instant::now(), Some(set));
    }

    #[test]
    fn nothing_is_trusted_before_the_subscription_is_live() {
        let cache = SoldOutCache::new(Duration::from_secs(60), 100);
        sold_out(&cache, "a", &[], cache.generation());
        assert_eq!(cache.check(&id("a"), &user("1")), Memory::Unknown);
        cache.set_live(true);
        sold_out(&cache, "a", &["1"], cache.generation());
        assert_eq!(cache.check(&id("a"), &user("1")), Memory::MaybeHolder);
        assert_eq!(cache.check(&id("a"), &user("2")), Memory::SoldOut);
        assert_eq!(cache.check(&id("b"), &user("2")), Memory::Unknown);
        cache.set_live(false);
        assert_eq!(cache.check(&id("a"), &user("2")), Memory::Unknown);
    }

    #[test]
    fn a_change_forgets_the_campaign_and_outranks_an_older_answer() {
        let cache = SoldOutCache::new(Duration::from_secs(60), 100);
        cache.set_live(true);
        let before = cache.generation();
        sold_out(&cache, "a", &[], before);
        sold_out(&cache, "b", &[], before);
        cache.forget(Some("a"));
        assert_eq!(cache.check(&id("a"), &user("1")), Memory::Unknown);
        assert_eq!(cache.check(&id("b"), &user("1")), Memory::SoldOut);
        // Holders read before the change arrive after it: not remembered.
        sold_out(&cache, "a", &[], before);
        assert_eq!(cache.check(&id("a"), &user("1")), Memory::Unknown);
        sold_out(&cache, "a", &[], cache.generation());
        assert_eq!(cache.check(&id("a"), &user("1")), Memory::SoldOut);
    }

    #[test]
    fn too_many_holders_are_not_answered_from_memory() {
        let cache = SoldOutCache::new(Duration::from_secs(60), 100);
        cache.set_live(true);
        cache.learn(id("big"), cache.generation(), Instant::now(), None);
        assert_eq!(cache.check(&id("big"), &user("1")), Memory::Unknown);
        sold_out(&cache, "small", &["1", "2"], cache.generation());
        assert_eq!(cache.held(), 2);
        let off = SoldOutCache::new(Duration::from_secs(60), 0);
        assert!(off.inner.ttl.is_zero());
    }

    #[test]
    fn memory_expires_and_is_swept_a_while_later() {
        let cache = SoldOutCache::new(Duration::from_nanos(1), 100);
        cache.set_live(true);
        sold_out(&cache, "a", &[], cache.generation());
        let expired = Instant::now() + Duration::from_millis(1);
        while Instant::now() < expired {}
        assert_eq!(cache.check(&id("a"), &user("1")), Memory::Unknown);
        // Its holders stay for the next sold-out answer, until swept once idle.
        assert_eq!(cache.inner.known.read().unwrap().len(), 1);
        cache
            .inner
            .known
            .write()
            .unwrap()
            .get_mut(&id("a"))
            .unwrap()
            .until = Instant::now().checked_sub(HOLDERS_IDLE).unwrap();
        cache.sweep();
        assert!(cache.inner.known.read().unwrap().is_empty());
    }
}
