//! Local knowledge of sold-out campaigns, so that the crowd arriving after the last coupon is
//! answered `sold_out` without a Redis round trip.
//!
//! A campaign is remembered as sold out when the gate answers `SoldOut` for it, for at most
//! the configured time to live. The memory never outlives the truth by more than that: the gate
//! publishes a campaign's id on its changes channel whenever it may have stopped being sold
//! out (a slot released, the quota raised, the window changed), and [`watch`] forgets it at
//! once; while that subscription is not established, nothing is remembered at all. An answer
//! that was already on its way when a change arrived is not remembered either (a generation
//! counter tells), so a change cannot be overwritten by an older answer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use coupon_gate::CampaignId;
use futures_util::StreamExt;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// The campaigns known to be sold out; cheap to clone.
#[derive(Clone)]
pub(crate) struct SoldOutCache {
    inner: Arc<Inner>,
}

struct Inner {
    /// How long a sold-out answer is trusted without a change message; zero disables the cache.
    ttl: Duration,
    /// Campaign -> when the memory of its sold-out answer expires.
    known: RwLock<HashMap<CampaignId, Instant>>,
    /// Whether change messages are being received; without them nothing is trusted.
    live: AtomicBool,
    /// Bumped by every change: an answer read before a change must not be remembered after it.
    generation: AtomicU64,
}

impl SoldOutCache {
    /// A cache that trusts a sold-out answer for `ttl` (zero: never). It stays empty until
    /// [`watch`] has subscribed to the changes channel.
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                ttl,
                known: RwLock::default(),
                live: AtomicBool::new(false),
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// Whether `campaign` is known to be sold out right now.
    pub(crate) fn is_sold_out(&self, campaign: &CampaignId) -> bool {
        if !self.inner.live.load(Ordering::Acquire) {
            return false;
        }
        let known = self.inner.known.read().expect("sold-out lock");
        known
            .get(campaign)
            .is_some_and(|&until| Instant::now() < until)
    }

    /// The generation to pass to [`SoldOutCache::remember`] for an answer about to be asked.
    pub(crate) fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Remembers that Redis answered `SoldOut` for `campaign`, unless a change came since
    /// `generation` was read.
    pub(crate) fn remember(&self, campaign: &CampaignId, generation: u64) {
        if self.inner.ttl.is_zero() || !self.inner.live.load(Ordering::Acquire) {
            return;
        }
        let mut known = self.inner.known.write().expect("sold-out lock");
        // Checked under the lock that `forget` takes after bumping the generation.
        if self.inner.generation.load(Ordering::Acquire) == generation {
            known.insert(campaign.clone(), Instant::now() + self.inner.ttl);
        }
    }

    fn forget(&self, campaign: Option<&str>) {
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        let mut known = self.inner.known.write().expect("sold-out lock");
        match campaign {
            Some(id) => known.retain(|c, _| c.as_str() != id),
            None => known.clear(),
        }
    }

    fn set_live(&self, live: bool) {
        if !live {
            self.inner.live.store(false, Ordering::Release);
            self.forget(None);
        } else {
            self.inner.live.store(true, Ordering::Release);
        }
    }
}

/// Keeps `cache` honest until `stop` turns true: subscribes to the gate's changes channel on
/// one of `nodes` and forgets every campaign announced there. When the subscription breaks,
/// everything is forgotten and nothing is remembered until it is back, on the same node or the
/// next one.
///
/// `nodes` is the one server, or the nodes of a cluster named in the configuration: the gate
/// publishes with `PUBLISH`, whose messages every node of a cluster receives, so any node will
/// do, and a failed one is left for the next.
pub(crate) async fn watch(
    cache: SoldOutCache,
    nodes: Vec<redis::Client>,
    channel: String,
    mut stop: watch::Receiver<bool>,
) {
    if cache.inner.ttl.is_zero() || nodes.is_empty() {
        return;
    }
    let mut backoff = Duration::from_millis(100);
    let mut next = 0;
    while !*stop.borrow() {
        let client = &nodes[next % nodes.len()];
        next += 1;
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            result = subscribed => result,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        let mut messages = match pubsub {
            Ok(pubsub) => pubsub.into_on_message(),
            Err(err) => {
                warn!(cause = %err, node = ?client.get_connection_info().addr(), "cannot subscribe to campaign changes; sold-out answers go to redis");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|stop| *stop) => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        cache.set_live(true);
        info!(%channel, node = ?client.get_connection_info().addr(), "watching campaign changes; sold-out campaigns are answered locally");
        loop {
            let message = tokio::select! {
                message = messages.next() => message,
                _ = stop.wait_for(|stop| *stop) => return,
            };
            let Some(message) = message else {
                break;
            };
            match message.get_payload::<String>() {
                Ok(id) => {
                    debug!(campaign = %id, "campaign changed");
                    cache.forget(Some(&id));
                }
                Err(_) => cache.forget(None),
            }
        }
        warn!(
            "lost the subscription to campaign changes; sold-out answers go to redis until it is back"
        );
        cache.set_live(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> CampaignId {
        CampaignId::new(s).unwrap()
    }

    #[test]
    fn nothing_is_trusted_before_the_subscription_is_live() {
        let cache = SoldOutCache::new(Duration::from_secs(60));
        cache.remember(&id("a"), cache.generation());
        assert!(!cache.is_sold_out(&id("a")));
        cache.set_live(true);
        cache.remember(&id("a"), cache.generation());
        assert!(cache.is_sold_out(&id("a")));
        assert!(!cache.is_sold_out(&id("b")));
        cache.set_live(false);
        assert!(!cache.is_sold_out(&id("a")));
    }

    #[test]
    fn a_change_forgets_the_campaign_and_outranks_an_older_answer() {
        let cache = SoldOutCache::new(Duration::from_secs(60));
        cache.set_live(true);
        let before = cache.generation();
        cache.remember(&id("a"), before);
        cache.remember(&id("b"), before);
        cache.forget(Some("a"));
        assert!(!cache.is_sold_out(&id("a")));
        assert!(cache.is_sold_out(&id("b")));
        // An answer asked before the change arrives after it: not remembered.
        cache.remember(&id("a"), before);
        assert!(!cache.is_sold_out(&id("a")));
        cache.remember(&id("a"), cache.generation());
        assert!(cache.is_sold_out(&id("a")));
    }

    #[test]
    fn memory_expires_and_a_zero_ttl_disables_it() {
        let cache = SoldOutCache::new(Duration::from_nanos(1));
        cache.set_live(true);
        cache.remember(&id("a"), cache.generation());
        let expired = Instant::now() + Duration::from_millis(1);
        while Instant::now() < expired {}
        assert!(!cache.is_sold_out(&id("a")));
        let off = SoldOutCache::new(Duration::ZERO);
        off.set_live(true);
        off.remember(&id("a"), off.generation());
        assert!(!off.is_sold_out(&id("a")));
    }
}
