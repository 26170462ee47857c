//! Archiving on the [`Gate`]: a settled campaign's state leaves Redis, and a tombstone of a few
//! fields stays in its place, so that the campaign is answered [`Outcome::Archived`] and its id
//! is not reused.
//!
//! The gate cannot see the stores downstream, so archiving takes two calls around the caller's
//! own check: [`Gate::begin_archive`] reads a [`Seal`], the caller compares the holders with
//! what the stores downstream hold, and [`Gate::archive`] archives only if nothing changed since
//! the seal was read.
//!
//! [`Outcome::Archived`]: crate::Outcome::Archived

use std::time::SystemTime;

use redis::aio::ConnectionLike;

use super::Gate;
use crate::campaign::from_millis;
use crate::error::to_seq;
use crate::keys::Keys;
use crate::script::{self, code};
use crate::{CampaignId, Error};

/// Bucket keys removed per round trip when an archive sweeps a campaign's holders away.
const SWEEP_PART: usize = 1000;

/// The most bucket digits whose every name the sweep removes (111,110 names, 112 round trips, for
/// a quota up to ten million); a campaign of a larger quota (up to 111 million names, most of
/// them never made) has the buckets that exist found by `SCAN` instead.
const SWEEP_BY_NAME: usize = 5;

/// What must not change between reading a campaign's holders and archiving it: the counts every
/// admission or release moves. Read by [`Gate::begin_archive`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seal {
    /// Users holding a coupon when the seal was read.
    pub issued: u32,
    /// The meta's issued, next and floor fields as read ('' for one that is absent).
    fields: [String; 3],
}

/// What stays of an archived campaign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tombstone {
    /// When it was archived, by Redis's clock.
    pub archived_at: SystemTime,
    /// When its window had ended.
    pub closed_at: SystemTime,
    /// Its quota.
    pub quota: u32,
    /// Users who held a coupon when it was archived.
    pub holders: u32,
}

/// What [`Gate::archive`] (or [`Gate::begin_archive`]) found or did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Archive {
    /// The campaign is archived: now (`now`), or by an earlier call.
    Archived {
        /// What stays of it.
        tombstone: Tombstone,
        /// Whether this call archived it.
        now: bool,
    },
    /// Its window has not ended (`None`: it has no end); nothing changed.
    NotClosed {
        /// When it closes.
        closes_at: Option<SystemTime>,
    },
    /// Events of it are still in the outbox, not acknowledged by a relay; nothing changed.
    OutboxPending {
        /// How many.
        events: u64,
    },
    /// A coupon was released (or taken) since the seal was read; nothing changed. Check again.
    Changed,
    /// No campaign has this id; nothing changed.
    UnknownCampaign,
}

impl<C> Gate<C>
where
    C: ConnectionLike + Clone + Send + Sync,
{
    /// Starts archiving `campaign`: its [`Seal`] when its window has ended and its outbox is
    /// empty and acknowledged, else what stands in the way. An archived campaign is answered
    /// [`Archive::Archived`] (not `now`), after finishing what an archive cut short left to do.
    ///
    /// Between this and [`Gate::archive`] the caller checks that the stores downstream hold
    /// exactly the campaign's holders ([`Recovery::holders`](crate::Recovery::holders)).
    ///
    /// # Errors
    ///
    /// A Redis or protocol failure.
    pub async fn begin_archive(
        &self,
        campaign: &CampaignId,
    ) -> Result<Result<Seal, Archive>, Error> {
        if let Some(tombstone) = self.tombstone(campaign).await? {
            self.sweep(campaign).await?;
            return Ok(Err(Archive::Archived {
                tombstone,
                now: false,
            }));
        }
        let keys = self.keys(campaign);
        let meta: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&keys.meta)
            .arg(&["quota", "closes", "issued", "next", "floor", "outbox"][..])
            .query_async(&mut self.conn.clone())
            .await?;
        let [quota, closes, issued, next, floor, outbox] = &meta[..] else {
            return Err(Error::protocol(
                "HMGET of campaign meta did not answer 6 fields",
            ));
        };
        if quota.is_none() {
            // Archived or gone since the tombstone was looked for: the script says which.
            return Ok(Err(self.archive(campaign, &Seal::none()).await?));
        }
        let number =
            |field: &Option<String>| -> Result<u64, Error> {
                field.as_deref().unwrap_or("0").parse().map_err(|_| {
                    Error::protocol("campaign meta holds a field that is not a number")
                })
            };
        let closes = number(closes)?;
        if closes == 0 || from_millis(closes) > SystemTime::now() {
            // By this process's clock, which may disagree with Redis's; the script decides.
            return Ok(Err(Archive::NotClosed {
                closes_at: (closes > 0).then(|| from_millis(closes)),
            }));
        }
        let events = number(outbox)?;
        if events > 0 {
            return Ok(Err(Archive::OutboxPending { events }));
        }
        let field = |f: &Option<String>| f.clone().unwrap_or_default();
        Ok(Ok(Seal {
            issued: to_seq(i64::try_from(number(issued)?).unwrap_or(-1))?,
            fields: [field(issued), field(next), field(floor)],
        }))
    }

    /// Archives `campaign` if its window has ended, its outbox is empty and acknowledged, and no
    /// coupon was taken or released since `seal` was read: its meta becomes a [`Tombstone`], and
    /// its holders, released seqs, outbox and pre-queue leave Redis, as does its entry in the
    /// list relays read. Servers that remember it as sold out are told to forget it. Archiving
    /// again changes nothing; an archive cut short (a process killed) is finished by the next
    /// call.
    ///
    /// # Errors
    ///
    /// A Redis or protocol failure; calling again is safe.
    pub async fn archive(&self, campaign: &CampaignId, seal: &Seal) -> Result<Archive, Error> {
        let keys = self.keys(campaign);
        let mut call = self.shared.scripts.archive.key(&keys.meta);
        call.key(&keys.free)
            .key(&keys.queue)
            .key(&keys.outbox)
            .arg(&seal.fields[..])
            .arg(self.changes_channel())
            .arg(campaign.as_str());
        let (answer, value): (i64, u64) = script::run(&call, &mut self.conn.clone()).await?;
        let now = match answer {
            code::ARCHIVED_NOW => true,
            code::ARCHIVED => false,
            code::NOT_CLOSED => {
                return Ok(Archive::NotClosed {
                    closes_at: (value > 0).then(|| from_millis(value)),
                });
            }
            code::OUTBOX_PENDING => return Ok(Archive::OutboxPending { events: value }),
            code::CHANGED => return Ok(Archive::Changed),
            code::UNKNOWN_CAMPAIGN => return Ok(Archive::UnknownCampaign),
            other => return Err(Error::protocol(format!("archive returned code {other}"))),
        };
        self.sweep(campaign).await?;
        let tombstone = self
            .tombstone(campaign)
            .await?
            .ok_or_else(|| Error::protocol("an archived campaign has no tombstone"))?;
        Ok(Archive::Archived { tombstone, now })
    }

    /// What stays of `campaign` if it was archived.
    ///
    /// # Errors
    ///
    /// A Redis or protocol failure.
    pub async fn tombstone(&self, campaign: &CampaignId) -> Result<Option<Tombstone>, Error> {
        let fields: Vec<Option<u64>> = redis::cmd("HMGET")
            .arg(self.keys(campaign).meta)
            .arg(&["archived", "closed_at", "quota_was", "holders"][..])
            .query_async(&mut self.conn.clone())
            .await?;
        let [Some(archived), closed, quota, holders] = fields[..] else {
            return Ok(None);
        };
        let count = |n: Option<u64>| to_seq(i64::try_from(n.unwrap_or(0)).unwrap_or(-1));
        Ok(Some(Tombstone {
            archived_at: from_millis(archived),
            closed_at: from_millis(closed.unwrap_or(archived)),
            quota: count(quota)?,
            holders: count(holders)?,
        }))
    }

    /// The ids of every archived campaign of this key prefix, sorted.
    ///
    /// # Errors
    ///
    /// A Redis or protocol failure, including a listed id that is not a valid slug.
    pub async fn archived_campaigns(&self) -> Result<Vec<CampaignId>, Error> {
        self.id_set(&Keys::archived(&self.shared.prefix)).await
    }

    /// How many campaigns of this key prefix are archived (one `SCARD`).
    ///
    /// # Errors
    ///
    /// A Redis failure.
    pub async fn archived_count(&self) -> Result<u64, Error> {
        Ok(redis::cmd("SCARD")
            .arg(Keys::archived(&self.shared.prefix))
            .query_async(&mut self.conn.clone())
            .await?)
    }

    /// Moves an archived campaign from the list relays read to the list of archived ones, then
    /// removes its outbox and user buckets, a part at a time, and last the tombstone's `sweep`
    /// field, which says that this is still to do. Each step may be repeated, so a sweep cut
    /// short is finished by the next.
    async fn sweep(&self, campaign: &CampaignId) -> Result<(), Error> {
        let keys = self.keys(campaign);
        let mut conn = self.conn.clone();
        let digits: Option<usize> = redis::cmd("HGET")
            .arg(&keys.meta)
            .arg("sweep")
            .query_async(&mut conn)
            .await?;
        let Some(digits) = digits else { return Ok(()) };
        let prefix = &self.shared.prefix;
        // Listed as archived before it leaves the registry, so that it is always on one list.
        for (command, key) in [
            ("SADD", Keys::archived(prefix)),
            ("SREM", Keys::registry(prefix)),
            ("ZREM", Keys::draws(prefix)),
        ] {
            redis::cmd(command)
                .arg(key)
                .arg(campaign.as_str())
                .exec_async(&mut conn)
                .await?;
        }
        redis::cmd("UNLINK")
            .arg(&keys.outbox)
            .exec_async(&mut conn)
            .await?;
        let names: Vec<String> = if digits <= SWEEP_BY_NAME {
            keys.bucket_names(digits).collect()
        } else {
            self.recovery().buckets(campaign).await?
        };
        for part in names.chunks(SWEEP_PART) {
            redis::cmd("UNLINK").arg(part).exec_async(&mut conn).await?;
        }
        redis::cmd("HDEL")
            .arg(&keys.meta)
            .arg("sweep")
            .exec_async(&mut conn)
            .await?;
        Ok(())
    }
}

impl Seal {
    /// A seal no campaign matches: for asking the script what it finds.
    fn none() -> Self {
        Self {
            issued: 0,
            fields: ["-".into(), "-".into(), "-".into()],
        }
    }
}
