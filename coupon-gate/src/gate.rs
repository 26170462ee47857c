//! The `Gate` handle: applications, compensation and campaign management over one Redis
//! connection.
//!
//! Each operation is one script call (or one atomic read), so any number of application
//! nodes can share a campaign without coordinating: Redis runs each script alone. A draw's
//! operations are in the child module `draw`.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionLike;

use crate::campaign::from_millis;
use crate::error::to_seq;
use crate::keys::Keys;
use crate::script::{self, Scripts, code};
use crate::shared::Shared;
use crate::tickets::Tickets;
use draw::PartSize;
mod archive;
pub(crate) mod draw;

pub use archive::{Archive, Seal, Tombstone};

use crate::{
    Campaign, CampaignId, CampaignStatus, Close, Create, DEFAULT_KEY_PREFIX, Error, InvalidInput,
    Listed, OUTBOX_GROUP, Opening, Outbox, Outcome, Recovery, Release, Stage, UserId,
};

/// Random bytes per user handed to the admit script: a user's ticket when it first joins a
/// draw's pre-queue (53 of the 56 bits are used, so that it is exact as a Redis score).
const TICKET_BYTES: usize = 7;

/// Most winners one call of the draw script admits; see `Gate::draw` and BENCHMARKS.md for
/// what a part costs Redis.
pub const DRAW_PART: u32 = 2_000;

/// About how long one call of the draw script may keep Redis: parts are sized to it by what
/// the parts before them took (see `Gate::draw`), as Redis serves nothing else meanwhile.
pub const DRAW_PART_TIME: Duration = Duration::from_millis(10);

/// A cheap, cloneable handle on the admission rules of every campaign in one Redis.
///
/// `C` is any async Redis connection: a [`redis::aio::MultiplexedConnection`], a
/// [`redis::aio::ConnectionManager`] (which reconnects by itself), or a cluster connection.
/// Clones share the connection (as the connection types themselves do) and the loaded
/// scripts.
///
/// The scripts are sent as `EVALSHA`; when Redis does not know them (after `SCRIPT FLUSH`, a
/// restart or a failover) they are loaded again and the call is retried, transparently.
///
/// The outbox protocol and the operators' reads and restores of a campaign's whole state are
/// on handles of their own over the same connection: [`Gate::outbox`], [`Gate::recovery`].
#[derive(Clone)]
pub struct Gate<C> {
    /// The connection every call is sent on; cloned per call, which is cheap for the
    /// multiplexed and cluster connections.
    conn: C,
    /// What does not change after construction, shared by every clone and handle.
    shared: Arc<Shared>,
}

impl<C> Gate<C>
where
    C: ConnectionLike + Clone + Send + Sync,
{
    /// A gate whose keys start with [`DEFAULT_KEY_PREFIX`].
    pub fn new(conn: C) -> Self {
        Self::build(conn, DEFAULT_KEY_PREFIX.to_owned())
    }

    /// A gate whose keys start with `prefix` (`{prefix}:{{campaign}}:users`), so that several
    /// deployments or test runs can share one Redis without seeing each other.
    ///
    /// # Errors
    ///
    /// [`InvalidInput::KeyPrefix`] when `prefix` is empty or contains `{` or `}`, which would
    /// break the campaign's hash tag.
    pub fn with_key_prefix(conn: C, prefix: impl Into<String>) -> Result<Self, InvalidInput> {
        let prefix = prefix.into();
        check_key_prefix(&prefix)?;
        Ok(Self::build(conn, prefix))
    }

    fn build(conn: C, prefix: String) -> Self {
        let shared = Shared {
            prefix,
            scripts: Scripts::load(),
            replicas: (0, Duration::ZERO),
            tickets: Tickets::new(),
            draw_part: PartSize::new(),
        };
        Self {
            conn,
            shared: Arc::new(shared),
        }
    }

    /// This gate, answering an admission only once `replicas` replicas of the campaign's master
    /// hold it (Redis `WAIT`, up to `timeout`); handles made from it ([`Gate::outbox`]) read
    /// outbox entries for delivery only once as many replicas hold them.
    ///
    /// Redis replicates asynchronously: a master that fails right after answering can take its
    /// last admissions with it, and the replica promoted in its place hands their seqs out
    /// again. With one replica confirming, a promoted replica holds every admission that was
    /// answered or delivered. When fewer confirm in time, the batch fails with
    /// [`Error::NotReplicated`] (to be answered "try again"; the users may hold the coupon,
    /// as after any undecided call) and nothing is delivered until they do. `replicas` 0 (the
    /// default) answers as soon as the master has decided.
    pub fn with_replica_acks(self, replicas: u32, timeout: Duration) -> Self {
        let shared = Shared {
            prefix: self.shared.prefix.clone(),
            scripts: Scripts::load(),
            replicas: (replicas, timeout),
            tickets: Tickets::new(),
            draw_part: PartSize::new(),
        };
        Self {
            conn: self.conn,
            shared: Arc::new(shared),
        }
    }

    /// The outbox protocol of this gate's campaigns: what a relay reads, takes over and
    /// acknowledges.
    pub fn outbox(&self) -> Outbox<C> {
        Outbox::new(self.conn.clone(), self.shared.clone())
    }

    /// Reads and restores of a campaign's whole admission state, for operators' audits and
    /// rebuilds.
    pub fn recovery(&self) -> Recovery<C> {
        Recovery::new(self.conn.clone(), self.shared.clone())
    }

    /// Applies for a coupon of `campaign` on behalf of `user`.
    ///
    /// In one atomic step the script checks that the campaign exists and is inside its window,
    /// that the user holds no coupon yet and that one is left; only then does it admit the
    /// user, take the next slot and append the admission to the campaign's outbox stream.
    ///
    /// # Errors
    ///
    /// A Redis or protocol failure. The script may or may not have run (a timeout can hide a
    /// success): treat the application as undecided and let the user retry, which answers
    /// [`Outcome::Duplicate`] if it did run.
    pub async fn apply(&self, campaign: &CampaignId, user: &UserId) -> Result<Outcome, Error> {
        let outcomes = self
            .apply_many(campaign, std::slice::from_ref(user))
            .await?;
        outcomes
            .into_iter()
            .next()
            .ok_or_else(|| Error::protocol("admit returned no outcome"))
    }

    /// Applies for several users of one campaign in one script call.
    ///
    /// The users are decided in slice order exactly as if each had called [`Gate::apply`]
    /// alone, one after the other: the same user twice gets `Admitted` then `Duplicate`, and
    /// when the coupons run out mid-slice the earlier users are the ones admitted. Returns one
    /// outcome per user, in slice order.
    ///
    /// # Errors
    ///
    /// As for [`Gate::apply`], for every user of the slice.
    pub async fn apply_many(
        &self,
        campaign: &CampaignId,
        users: &[UserId],
    ) -> Result<Vec<Outcome>, Error> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let keys = self.keys(campaign);
        let tickets = self.shared.tickets.take(users.len() * TICKET_BYTES)?;
        let mut call = self.shared.scripts.admit.key(&keys.meta);
        call.key(&keys.users)
            .key(&keys.free)
            .key(&keys.outbox)
            .key(&keys.queue)
            .arg(tickets);
        for user in users {
            call.arg(user.as_str());
        }
        let mut conn = self.conn.clone();
        // A draw that is due and has not ended answers every user DRAW_PENDING: this caller
        // then helps the draw to its end, so that no application overtakes it, and asks again.
        let mut draws_run = 0;
        let reply = loop {
            let reply: Vec<i64> = script::run(&call, &mut conn).await?;
            if reply.len() != users.len() * 2 {
                return Err(Error::protocol(format!(
                    "admit answered {} values for {} users",
                    reply.len(),
                    users.len()
                )));
            }
            if reply.first() != Some(&code::DRAW_PENDING) {
                break reply;
            }
            if draws_run == 3 {
                return Err(Error::protocol(
                    "a draw that has ended still answers pending",
                ));
            }
            draws_run += 1;
            self.draw(campaign).await?;
        };
        let outcomes: Vec<Outcome> = reply
            .chunks_exact(2)
            .map(|pair| decode_outcome(pair[0], pair[1]))
            .collect::<Result<_, _>>()?;
        // A duplicate may answer an admission of an earlier call not yet replicated either.
        if outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Admitted { .. } | Outcome::Duplicate { .. }))
        {
            self.shared.confirm_replicated(&mut conn, campaign).await?;
        }
        Ok(outcomes)
    }

    /// Gives back the slot of `user`, whose admission was definitely abandoned.
    ///
    /// Atomically removes the user from the campaign, makes its slot available to the next
    /// applicant and appends a release entry to the outbox, so that downstream stores drop the
    /// coupon too. Calling it again answers [`Release::NotAdmitted`] and changes nothing.
    ///
    /// Call it only after a *definite* failure of whatever followed the admission (say, the
    /// user's order was cancelled). Never call it because an [`Gate::apply`] returned an error
    /// or timed out: the admission may have happened, and the user may have been told so on
    /// another path.
    ///
    /// # Errors
    ///
    /// A Redis or protocol failure; the release may or may not have happened, and calling
    /// again is safe.
    pub async fn release(&self, campaign: &CampaignId, user: &UserId) -> Result<Release, Error> {
        let keys = self.keys(campaign);
        let mut call = self.shared.scripts.release.key(&keys.meta);
        call.key(&keys.users)
            .key(&keys.free)
            .key(&keys.outbox)
            .arg(user.as_str())
            .arg(self.changes_channel())
            .arg(campaign.as_str());
        let (answer, seq): (i64, i64) = script::run(&call, &mut self.conn.clone()).await?;
        match answer {
            code::RELEASED => {
                metrics::counter!("coupon_releases_total").increment(1);
                Ok(Release::Released { seq: to_seq(seq)? })
            }
            code::NOT_ADMITTED => Ok(Release::NotAdmitted),
            code::UNKNOWN_CAMPAIGN => Ok(Release::UnknownCampaign),
            code::ARCHIVED => Ok(Release::Archived),
            other => Err(Error::protocol(format!("release returned code {other}"))),
        }
    }

    /// Creates `campaign`, or replaces the definition of an existing one.
    ///
    /// Creating the same definition again is harmless ([`Create::Unchanged`]). A changed
    /// definition is applied unless it would lower the quota below the users already admitted
    /// ([`Create::QuotaBelowIssued`]). Creation also registers the campaign so that relays
    /// find its outbox.
    ///
    /// # Errors
    ///
    /// A Redis or protocol failure; calling again with the same definition is safe.
    pub async fn create(&self, campaign: &Campaign) -> Result<Create, Error> {
        let keys = self.keys(campaign.id());
        let (opens, closes) = campaign.window_millis();
        let mut conn = self.conn.clone();
        let mut call = self.shared.scripts.create.key(&keys.meta);
        call.key(&keys.outbox)
            .arg(campaign.quota().get())
            .arg(opens)
            .arg(closes)
            .arg(OUTBOX_GROUP)
            .arg(self.changes_channel())
            .arg(campaign.id().as_str())
            .arg(Keys::bucket_digits(campaign.quota().get()))
            .arg(campaign.queue_opens_millis());
        let (answer, issued): (i64, i64) = script::run(&call, &mut conn).await?;
        let outcome = match answer {
            code::CREATED => Create::Created,
            code::UNCHANGED => Create::Unchanged,
            code::UPDATED => Create::Updated,
            code::OPENING_LOCKED => return Ok(Create::OpeningLocked),
            code::ENDED => return Ok(Create::Ended),
            code::ARCHIVED => return Ok(Create::Archived),
            code::QUOTA_BELOW_ISSUED => Create::QuotaBelowIssued {
                issued: to_seq(issued)?,
            },
            other => return Err(Error::protocol(format!("create returned code {other}"))),
        };
        // Registered on every call, not only the first, so that a retry repairs a creation
        // whose registration was lost with the connection. A draw is listed until it has run
        // (see `Gate::draw`); a campaign that is now a race is no longer.
        redis::cmd("SADD")
            .arg(Keys::registry(&self.shared.prefix))
            .arg(campaign.id().as_str())
            .exec_async(&mut conn)
            .await?;
        if let Create::QuotaBelowIssued { .. } = outcome {
            // Refused: the draw list keeps the definition Redis still holds.
            return Ok(outcome);
        }
        let draws = Keys::draws(&self.shared.prefix);
        match (campaign.opening(), campaign.window_millis()) {
            (Opening::Draw { .. }, (opens, _)) => {
                redis::cmd("ZADD")
                    .arg(draws)
                    .arg(opens)
                    .arg(campaign.id().as_str())
                    .exec_async(&mut conn)
                    .await?;
            }
            (Opening::Race, _) => {
                redis::cmd("ZREM")
                    .arg(draws)
                    .arg(campaign.id().as_str())
                    .exec_async(&mut conn)
                    .await?;
            }
        }
        Ok(outcome)
    }

    /// The campaign's quota, issued count and window, read atomically; `None` when no
    /// campaign has this id.
    ///
    /// # Errors
    ///
    /// A Redis or protocol failure.
    pub async fn status(&self, campaign: &CampaignId) -> Result<Option<CampaignStatus>, Error> {
        let keys = self.keys(campaign);
        // One round trip, atomic: the queue is removed in the same step that marks the draw
        // ended and records how many had joined.
        let (meta, waiting): (Vec<Option<u64>>, u64) = redis::pipe()
            .atomic()
            .cmd("HMGET")
            .arg(&keys.meta)
            .arg(&STATUS_FIELDS[..])
            .cmd("ZCARD")
            .arg(&keys.queue)
            .query_async(&mut self.conn.clone())
            .await?;
        let Ok(meta) = <[Option<u64>; 7]>::try_from(meta) else {
            return Err(Error::protocol(
                "HMGET of campaign meta did not answer 7 fields",
            ));
        };
        status_of(meta, waiting)
    }

    /// A page of the campaigns created through this key prefix, archived ones included, in the
    /// order of their ids: those after `after` (from the first when `None`), at most `limit`,
    /// each with its status or tombstone. Reads the two lists of ids (one `SMEMBERS` each) and
    /// the page's statuses, all sent at once, no `KEYS` and no work for campaigns outside the
    /// page; each status is read atomically, the page as a whole is not a snapshot. A listed id
    /// whose campaign no longer exists is left out.
    ///
    /// # Errors
    ///
    /// A Redis or protocol failure.
    pub async fn campaign_page(
        &self,
        after: Option<&CampaignId>,
        limit: usize,
    ) -> Result<Vec<(CampaignId, Listed)>, Error> {
        let (mut ids, archived) =
            futures_util::future::try_join(self.campaigns(), self.archived_campaigns()).await?;
        ids.extend(archived);
        ids.sort();
        ids.dedup();
        let ids: Vec<CampaignId> = ids
            .into_iter()
            .filter(|id| after.is_none_or(|after| id > after))
            .take(limit)
            .collect();
        // Each status on its own, all at once: the connection pipelines them, and a cluster
        // refuses one pipeline over several slots.
        let listed =
            futures_util::future::try_join_all(ids.iter().map(|id| self.listed(id))).await?;
        Ok(ids
            .into_iter()
            .zip(listed)
            .filter_map(|(id, listed)| Some((id, listed?)))
            .collect())
    }

    /// Where `campaign` stands at `now` ([`CampaignStatus::stage`]), read with one `HGETALL`
    /// of its meta (cheaper than [`Gate::status`], for a census of every campaign; and not the
    /// `HMGET` the admit script opens with, which tests count); `None` when it does not exist,
    /// or is archived.
    ///
    /// # Errors
    ///
    /// A Redis or protocol failure.
    pub async fn stage(
        &self,
        campaign: &CampaignId,
        now: std::time::SystemTime,
    ) -> Result<Option<Stage>, Error> {
        let meta: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys(campaign).meta)
            .query_async(&mut self.conn.clone())
            .await?;
        let field = |name: &str| meta.get(name).and_then(|v| v.parse::<u64>().ok());
        // The pre-queue's size and whether it was drawn do not decide a stage.
        let status = status_of(STATUS_FIELDS.map(field), 0)?;
        Ok(status.map(|status| status.stage(now)))
    }

    /// The status of `campaign`, or its tombstone once archived; `None` when neither exists.
    ///
    /// # Errors
    ///
    /// A Redis or protocol failure.
    pub async fn listed(&self, campaign: &CampaignId) -> Result<Option<Listed>, Error> {
        if let Some(status) = self.status(campaign).await? {
            return Ok(Some(Listed::Live(status)));
        }
        Ok(self.tombstone(campaign).await?.map(Listed::Archived))
    }

    /// Ends `campaign` now: every later application is answered [`Outcome::Closed`], its
    /// definition is kept for good ([`Create::Ended`]), and a draw that has not ended is
    /// cancelled: its queue removed and the draw taken off the list [`Gate::pending_draws`]
    /// reads; those it drew keep their coupons. Holders keep their coupons. Servers that
    /// remember the campaign as sold out are told to forget it, so that they answer `Closed`.
    /// Closing again changes nothing ([`Close::AlreadyClosed`]).
    ///
    /// # Errors
    ///
    /// A Redis or protocol failure; calling again is safe.
    pub async fn close(&self, campaign: &CampaignId) -> Result<Close, Error> {
        let keys = self.keys(campaign);
        let mut call = self.shared.scripts.close.key(&keys.meta);
        call.key(&keys.queue)
            .arg(self.changes_channel())
            .arg(campaign.as_str());
        let mut conn = self.conn.clone();
        let (answer, closes): (i64, u64) = script::run(&call, &mut conn).await?;
        let close = match answer {
            code::CLOSED_NOW => Close::Closed {
                at: from_millis(closes),
            },
            code::ALREADY_CLOSED => Close::AlreadyClosed {
                at: from_millis(closes),
            },
            code::UNKNOWN_CAMPAIGN => return Ok(Close::UnknownCampaign),
            code::ARCHIVED => return Ok(Close::Archived),
            other => return Err(Error::protocol(format!("close returned code {other}"))),
        };
        // Outside the script: the list is a key of the prefix, in another cluster slot. A close
        // that stops before this leaves a listed draw that draw.lua finds ended and unlists.
        redis::cmd("ZREM")
            .arg(Keys::draws(&self.shared.prefix))
            .arg(campaign.as_str())
            .exec_async(&mut conn)
            .await?;
        Ok(close)
    }

    /// The slot `user` holds in `campaign`, if admitted.
    ///
    /// # Errors
    ///
    /// A Redis or protocol failure.
    pub async fn admission(
        &self,
        campaign: &CampaignId,
        user: &UserId,
    ) -> Result<Option<u32>, Error> {
        let keys = self.keys(campaign);
        let mut conn = self.conn.clone();
        // The bucket layout is fixed when the campaign is created, so reading it first and the
        // bucket second is as good as one atomic read.
        let Some(digits) = bucket_digits(&keys, &mut conn).await? else {
            return Ok(None);
        };
        let seq: Option<u64> = redis::cmd("HGET")
            .arg(keys.user_bucket(digits, user))
            .arg(user.as_str())
            .query_async(&mut conn)
            .await?;
        seq.map(to_seq).transpose()
    }

    /// Every user holding a seq of `campaign`, in no particular order; empty when it has none or
    /// does not exist. Reads every bucket the campaign's quota provides for, a thousand to a
    /// round trip: about a ninth of the quota in `HKEYS` calls, however many hold a seq. Meant
    /// for a campaign whose quota is filled, to learn its holders once (a sold-out memory);
    /// [`Recovery::holders`](crate::Recovery::holders) reads only the buckets that exist, with
    /// their seqs.
    ///
    /// # Errors
    ///
    /// A Redis or protocol failure.
    pub async fn holder_ids(&self, campaign: &CampaignId) -> Result<Vec<UserId>, Error> {
        let keys = self.keys(campaign);
        let mut conn = self.conn.clone();
        let Some(digits) = bucket_digits(&keys, &mut conn).await? else {
            return Ok(Vec::new());
        };
        let mut holders = Vec::new();
        for buckets in keys.all_buckets(digits).chunks(1000) {
            let mut round = redis::pipe();
            for bucket in buckets {
                round.cmd("HKEYS").arg(bucket);
            }
            let pages: Vec<Vec<String>> = round.query_async(&mut conn).await?;
            for user in pages.into_iter().flatten() {
                let user = UserId::new(user.as_str()).map_err(|_| {
                    Error::protocol(format!("invalid user id {user:?} in {}", keys.users))
                })?;
                holders.push(user);
            }
        }
        Ok(holders)
    }

    /// The ids of every campaign created through this key prefix, archived ones excepted.
    ///
    /// # Errors
    ///
    /// A Redis or protocol failure, including a registered id that is not a valid slug.
    pub async fn campaigns(&self) -> Result<Vec<CampaignId>, Error> {
        self.id_set(&Keys::registry(&self.shared.prefix)).await
    }

    /// The members of the set of campaign ids `key`, sorted.
    async fn id_set(&self, key: &str) -> Result<Vec<CampaignId>, Error> {
        let ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(key)
            .query_async(&mut self.conn.clone())
            .await?;
        let mut ids = ids
            .into_iter()
            .map(|id| {
                CampaignId::new(id)
                    .map_err(|_| Error::protocol("invalid campaign id in the registry"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        ids.sort();
        Ok(ids)
    }

    /// The pub/sub channel on which the id of a campaign is published when its outbox, empty
    /// until then (every event acknowledged), receives an admission or a release. A relay that
    /// reads only the outboxes with work subscribes to it (see coupon-relay's `Announcements`).
    pub fn outbox_channel(&self) -> String {
        Keys::outbox_ready(&self.shared.prefix)
    }

    /// The pub/sub channel on which the id of a campaign is published whenever it may have
    /// stopped being sold out: after a release, and after a creation or a change of definition
    /// (a raised quota, another window). A server that answers `SoldOut` from memory subscribes
    /// to it to forget such campaigns.
    pub fn changes_channel(&self) -> String {
        Keys::changes(&self.shared.prefix)
    }

    fn keys(&self, campaign: &CampaignId) -> Keys {
        self.shared.keys(campaign)
    }
}

/// The meta fields a status is made of, in the order [`status_of`] reads them.
const STATUS_FIELDS: [&str; 7] = [
    "quota",
    "opens",
    "closes",
    "issued",
    "queue_opens",
    "drawn",
    "queued",
];

/// A campaign's status from its [`STATUS_FIELDS`] and the size of its pre-queue (`waiting`);
/// `None` when it does not exist.
fn status_of(meta: [Option<u64>; 7], waiting: u64) -> Result<Option<CampaignStatus>, Error> {
    let [quota, opens, closes, issued, queue_opens, drawn, queued] = meta;
    let Some(quota) = quota else { return Ok(None) };
    let issued = issued.ok_or_else(|| Error::protocol("campaign meta has no issued count"))?;
    let bound = |ms: Option<u64>| ms.filter(|&ms| ms > 0).map(from_millis);
    let opening = match bound(queue_opens) {
        Some(queue_opens_at) => Opening::Draw { queue_opens_at },
        None => Opening::Race,
    };
    let drawn = drawn == Some(1);
    Ok(Some(CampaignStatus {
        quota: to_seq(quota)?,
        issued: to_seq(issued)?,
        opens_at: bound(opens),
        closes_at: bound(closes),
        opening,
        queued: if drawn { queued.unwrap_or(0) } else { waiting },
        drawn,
    }))
}

/// How many digits name the user buckets of the campaign of `keys` (see [`Keys::user_bucket`]);
/// `None` when the campaign does not exist.
async fn bucket_digits<C: ConnectionLike>(
    keys: &Keys,
    conn: &mut C,
) -> Result<Option<usize>, Error> {
    Ok(redis::cmd("HGET")
        .arg(&keys.meta)
        .arg("digits")
        .query_async(conn)
        .await?)
}

/// Checks a key prefix as [`Gate::with_key_prefix`] does, for a service that validates its
/// configuration before Redis is reachable.
///
/// # Errors
///
/// [`InvalidInput::KeyPrefix`] when `prefix` is empty or contains `{` or `}`.
pub fn check_key_prefix(prefix: &str) -> Result<(), InvalidInput> {
    if prefix.is_empty() || prefix.contains(['{', '}']) {
        return Err(InvalidInput::KeyPrefix);
    }
    Ok(())
}

fn decode_outcome(answer: i64, value: i64) -> Result<Outcome, Error> {
    Ok(match answer {
        code::ADMITTED => Outcome::Admitted {
            seq: to_seq(value)?,
        },
        code::DUPLICATE => Outcome::Duplicate {
            seq: to_seq(value)?,
        },
        code::SOLD_OUT => Outcome::SoldOut,
        code::NOT_OPEN => Outcome::NotOpen,
        code::CLOSED => Outcome::Closed,
        code::UNKNOWN_CAMPAIGN => Outcome::UnknownCampaign,
        code::ARCHIVED => Outcome::Archived,
        code::QUEUED => Outcome::Queued {
            draw_at: from_millis(u64::try_from(value).map_err(|_| {
                Error::protocol(format!("admit answered queued with draw time {value}"))
            })?),
        },
        other => return Err(Error::protocol(format!("admit returned code {other}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_code_decodes() {
        assert_eq!(decode_outcome(1, 7).unwrap(), Outcome::Admitted { seq: 7 });
        assert_eq!(decode_outcome(2, 3).unwrap(), Outcome::Duplicate { seq: 3 });
        assert_eq!(decode_outcome(3, 0).unwrap(), Outcome::SoldOut);
        assert_eq!(decode_outcome(4, 0).unwrap(), Outcome::NotOpen);
        assert_eq!(decode_outcome(5, 0).unwrap(), Outcome::Closed);
        assert_eq!(decode_outcome(6, 0).unwrap(), Outcome::UnknownCampaign);
        assert_eq!(
            decode_outcome(7, 1_500).unwrap(),
            Outcome::Queued {
                draw_at: from_millis(1_500)
            }
        );
        assert!(matches!(decode_outcome(7, -1), Err(Error::Protocol(_))));
        assert_eq!(decode_outcome(9, 0).unwrap(), Outcome::Archived);
        assert!(matches!(decode_outcome(10, 0), Err(Error::Protocol(_))));
        assert!(matches!(decode_outcome(1, -1), Err(Error::Protocol(_))));
    }
}
