//! What a subscription to the gate's outbox channel tells a relay, so that it reads only the
//! outboxes with work instead of every campaign's each round.
//!
//! The gate's scripts publish a campaign's id on [`Gate::outbox_channel`] when its outbox, empty
//! until then, receives an event. Whoever holds the subscription (coupon-http, beside its
//! sold-out memory's) passes each id to [`Announcements::ready`], and says when the subscription
//! starts ([`Announcements::live`]) and breaks ([`Announcements::lost`]). While it is live, the
//! relay reads the campaigns announced and those it found with a backlog, and lets a campaign
//! rest once its outbox is empty; while it is not, the relay reads every campaign each round, as
//! a relay without announcements always does.
//!
//! [`Gate::outbox_channel`]: coupon_gate::Gate::outbox_channel

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use coupon_gate::CampaignId;
use tokio::sync::Notify;

/// The announcements of one subscription, shared by the subscriber and a relay; cheap to clone.
#[derive(Clone, Default)]
pub struct Announcements {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    /// Wakes a relay that rests when a campaign is announced.
    arrived: Notify,
}

#[derive(Default)]
struct State {
    /// Whether announcements are heard now.
    live: bool,
    /// How many times the subscription went live: announcements made before the latest time
    /// may have been missed, so a relay that sees it grow reads every campaign's backlog.
    epoch: u64,
    /// Campaigns announced since the relay last took them.
    ready: HashSet<CampaignId>,
}

/// What a relay takes at the start of a round.
pub(crate) struct Taken {
    /// Whether the relay may rest campaigns with an empty outbox.
    pub(crate) live: bool,
    pub(crate) epoch: u64,
    pub(crate) ready: HashSet<CampaignId>,
}

impl Announcements {
    /// The subscription is live from now on.
    pub fn live(&self) {
        let mut state = self.lock();
        state.live = true;
        state.epoch += 1;
        drop(state);
        self.inner.arrived.notify_one();
    }

    /// The subscription broke: until [`Announcements::live`] again, the relay reads every
    /// campaign.
    pub fn lost(&self) {
        self.lock().live = false;
        self.inner.arrived.notify_one();
    }

    /// `campaign`'s outbox holds work.
    pub fn ready(&self, campaign: CampaignId) {
        self.lock().ready.insert(campaign);
        self.inner.arrived.notify_one();
    }

    /// The state now, and the campaigns announced since the last call.
    pub(crate) fn take(&self) -> Taken {
        let mut state = self.lock();
        Taken {
            live: state.live,
            epoch: state.epoch,
            ready: std::mem::take(&mut state.ready),
        }
    }

    /// The campaigns announced and not yet taken.
    pub(crate) fn pending(&self) -> Vec<CampaignId> {
        self.lock().ready.iter().cloned().collect()
    }

    /// Resolves when something was announced or the subscription changed since the last time
    /// it resolved (at once if so).
    pub(crate) async fn arrived(&self) {
        self.inner.arrived.notified().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing panics while holding the lock, and the state stays consistent at every step.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
