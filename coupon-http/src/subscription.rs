//! The subscription to the gate's two pub/sub channels: campaign changes, which keep the sold-out
//! memory honest, and outbox announcements, which tell the relay which outboxes hold work.
//!
//! The gate publishes with `PUBLISH`, whose messages every node of a cluster receives, so the
//! subscription is held on one of the configured nodes, and a failed one is left for the next.
//! While it is down, the sold-out memory trusts nothing and the relay reads every outbox.

use std::time::Duration;

use coupon_gate::CampaignId;
use coupon_relay::Announcements;
use futures_util::StreamExt;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::sold_out::SoldOutCache;

/// The channels and those who listen to them.
pub(crate) struct Listeners {
    pub(crate) cache: SoldOutCache,
    pub(crate) announcements: Announcements,
    /// The gate's channel of campaign changes.
    pub(crate) changes: String,
    /// The gate's channel of outbox announcements.
    pub(crate) outboxes: String,
}

/// Subscribes to both channels on one of `nodes` until `stop` turns true, and hands what is
/// published to the listeners: a changed campaign is forgotten by the sold-out memory, an
/// announced outbox is passed to the relay. When the subscription breaks, both are told, and it
/// is made again, on the same node or the next one.
pub(crate) async fn watch(
    listeners: Listeners,
    nodes: Vec<redis::Client>,
    mut stop: watch::Receiver<bool>,
) {
    if nodes.is_empty() {
        return;
    }
    let channels = [listeners.changes.as_str(), listeners.outboxes.as_str()];
    let mut backoff = Duration::from_millis(100);
    let mut next = 0;
    while !*stop.borrow() {
        let client = &nodes[next % nodes.len()];
        next += 1;
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channels[..]).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            result = subscribed => result,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        let mut messages = match pubsub {
            Ok(pubsub) => pubsub.into_on_message(),
            Err(err) => {
                warn!(cause = %err, node = %client.get_connection_info().addr(), "cannot subscribe to campaign changes and outbox announcements; sold-out answers go to redis, and the relay reads every outbox");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|stop| *stop) => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        listeners.cache.set_live(true);
        listeners.announcements.live();
        info!(changes = %listeners.changes, outboxes = %listeners.outboxes, node = %client.get_connection_info().addr(), "watching campaign changes and outbox announcements");
        loop {
            let message = tokio::select! {
                message = messages.next() => message,
                _ = stop.wait_for(|stop| *stop) => return,
            };
            let Some(message) = message else {
                break;
            };
            listeners.hand(&message);
        }
        warn!(
            "lost the subscription to campaign changes and outbox announcements; sold-out answers go to redis, and the relay reads every outbox, until it is back"
        );
        listeners.cache.set_live(false);
        listeners.announcements.lost();
    }
}

impl Listeners {
    fn hand(&self, message: &redis::Msg) {
        let payload = message.get_payload::<String>().ok();
        if message.get_channel_name() == self.outboxes {
            // The scripts publish valid ids only; anything else is no outbox of ours.
            if let Some(campaign) = payload.and_then(|id| CampaignId::new(id).ok()) {
                self.announcements.ready(campaign);
            }
            return;
        }
        match payload {
            Some(id) => {
                debug!(campaign = %id, "campaign changed");
                self.cache.forget(Some(&id));
            }
            None => self.cache.forget(None),
        }
    }
}
