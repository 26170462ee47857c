//! What a [`Gate`](crate::Gate) and the handles it makes ([`Outbox`](crate::Outbox),
//! [`Recovery`](crate::Recovery)) share: the key prefix, the loaded scripts, how many
//! replicas must confirm a write, the pool of random bytes for pre-queue tickets and the size of
//! the next draw part.

use std::time::Duration;

use redis::aio::ConnectionLike;

use crate::gate::draw::PartSize;
use crate::keys::Keys;
use crate::script::Scripts;
use crate::tickets::Tickets;
use crate::{CampaignId, Error};

/// What a gate and its handles share.
pub(crate) struct Shared {
    /// Prepended to every key, so that several deployments can share one Redis.
    pub(crate) prefix: String,
    /// The scripts, with their SHA1 computed once.
    pub(crate) scripts: Scripts,
    /// Replicas that must confirm an admission before it is answered, and how long to wait for
    /// them; 0 replicas: answer at once.
    pub(crate) replicas: (u32, Duration),
    /// Random bytes for the tickets of pre-queues.
    pub(crate) tickets: Tickets,
    /// How many winners the next part of a draw takes.
    pub(crate) draw_part: PartSize,
}

impl Shared {
    pub(crate) fn keys(&self, campaign: &CampaignId) -> Keys {
        Keys::new(&self.prefix, campaign)
    }

    /// Waits until the required replicas hold every write this connection made to the master
    /// of `campaign`'s slot, when any are required.
    ///
    /// `WAIT` counts the writes of the connection it is sent on, so it follows a keyed read of
    /// the campaign in one pipeline: a cluster connection sends both to the campaign's master,
    /// on the connection the writes took (a bare `WAIT` would go to every master).
    pub(crate) async fn confirm_replicated<C: ConnectionLike>(
        &self,
        conn: &mut C,
        campaign: &CampaignId,
    ) -> Result<(), Error> {
        let (required, timeout) = self.replicas;
        if required == 0 {
            return Ok(());
        }
        let (_, confirmed): (Option<u64>, u64) = redis::pipe()
            .cmd("HGET")
            .arg(self.keys(campaign).meta)
            .arg("next")
            .cmd("WAIT")
            .arg(required)
            .arg(
                u64::try_from(timeout.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            )
            .query_async(conn)
            .await?;
        if confirmed < u64::from(required) {
            return Err(Error::NotReplicated {
                confirmed,
                required,
            });
        }
        Ok(())
    }
}
