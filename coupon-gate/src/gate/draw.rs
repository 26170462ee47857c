//! A draw's operations on the [`Gate`]: running it part by part, the draws not yet run, and
//! who waits in a pre-queue.

use std::time::{Duration, SystemTime};

use redis::aio::ConnectionLike;

use super::{DRAW_PART, Gate};
use crate::campaign::from_millis;
use crate::error::to_seq;
use crate::keys::Keys;
use crate::outbox::ENTRY_RECORDS;
use crate::script::{self, code};
use crate::{CampaignId, Draw, Error, UserId};

impl<C> Gate<C>
where
    C: ConnectionLike + Clone + Send + Sync,
{
    /// Runs `campaign`'s draw to its end, if it is due; calls from several processes at once
    /// share the work, and a draw cut short (a process killed midway) goes on from where it
    /// stopped at the next call.
    ///
    /// Each script call draws at most [`DRAW_PART`] winners, so that Redis serves other
    /// requests between the parts of a large draw; applications to the campaign meanwhile wait
    /// for the draw's end (see [`Gate::apply_many`]). Once the draw has ended, or when the
    /// campaign is none, it leaves the list [`Gate::pending_draws`] reads.
    ///
    /// # Errors
    ///
    /// A Redis or protocol failure; whatever parts ran are kept, and calling again goes on.
    pub async fn draw(&self, campaign: &CampaignId) -> Result<Draw, Error> {
        let mut winners: u32 = 0;
        loop {
            match self.draw_part(campaign).await? {
                Draw::GoesOn { winners: part } => winners = winners.saturating_add(part),
                Draw::Done {
                    winners: part,
                    took,
                } => {
                    let winners = winners.saturating_add(part);
                    return Ok(Draw::Done { winners, took });
                }
                other => return Ok(other),
            }
        }
    }

    /// Runs one part of `campaign`'s draw (at most [`DRAW_PART`] winners), if it is due: what
    /// [`Gate::draw`] repeats until the draw has ended. Answers [`Draw::GoesOn`] while the draw
    /// has more to do. The part that ends a draw records how long the draw took, from its first
    /// part, in the histogram `coupon_draw_duration_seconds` through the [`metrics`] facade.
    ///
    /// # Errors
    ///
    /// A Redis or protocol failure; the part ran entirely or not at all.
    pub async fn draw_part(&self, campaign: &CampaignId) -> Result<Draw, Error> {
        let keys = self.keys(campaign);
        let mut call = self.shared.scripts.draw.key(&keys.meta);
        call.key(&keys.users)
            .key(&keys.free)
            .key(&keys.outbox)
            .key(&keys.queue)
            .arg(DRAW_PART)
            .arg(ENTRY_RECORDS);
        let mut conn = self.conn.clone();
        let (answer, winners, ms): (i64, i64, i64) = script::run(&call, &mut conn).await?;
        let winners = to_seq(winners).unwrap_or(0);
        let draw = match answer {
            code::DRAW_GOES_ON => Draw::GoesOn { winners },
            code::DRAW_NOT_DUE => {
                let due_in = Duration::from_millis(u64::try_from(ms).unwrap_or(0));
                return Ok(Draw::NotDue { due_in });
            }
            code::DRAW_DONE => {
                let took = u64::try_from(ms).ok().map(Duration::from_millis);
                if let Some(took) = took {
                    // Once per draw, by whichever caller ended it.
                    metrics::histogram!("coupon_draw_duration_seconds").record(took.as_secs_f64());
                }
                Draw::Done { winners, took }
            }
            code::NO_DRAW => Draw::NoDraw,
            other => return Err(Error::protocol(format!("draw returned code {other}"))),
        };
        if matches!(draw, Draw::Done { .. } | Draw::NoDraw) {
            redis::cmd("ZREM")
                .arg(Keys::draws(&self.shared.prefix))
                .arg(campaign.as_str())
                .exec_async(&mut conn)
                .await?;
        }
        if winners > 0 {
            self.shared.confirm_replicated(&mut conn, campaign).await?;
        }
        Ok(draw)
    }

    /// The draws not yet run, with when each is due (the campaign's `opens_at`), earliest
    /// first. A process that runs draws by themselves reads it, and calls [`Gate::draw`] for
    /// each that is due.
    ///
    /// # Errors
    ///
    /// A Redis or protocol failure, including a listed id that is not a valid slug.
    pub async fn pending_draws(&self) -> Result<Vec<(CampaignId, SystemTime)>, Error> {
        let listed: Vec<(String, u64)> = redis::cmd("ZRANGE")
            .arg(Keys::draws(&self.shared.prefix))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut self.conn.clone())
            .await?;
        listed
            .into_iter()
            .map(|(id, due)| {
                let id = CampaignId::new(id)
                    .map_err(|_| Error::protocol("invalid campaign id in the draw list"))?;
                Ok((id, from_millis(due)))
            })
            .collect()
    }

    /// Whether `user` waits in `campaign`'s pre-queue: joined, and the draw has not ended.
    ///
    /// # Errors
    ///
    /// A Redis or protocol failure.
    pub async fn queued(&self, campaign: &CampaignId, user: &UserId) -> Result<bool, Error> {
        let ticket: Option<f64> = redis::cmd("ZSCORE")
            .arg(self.keys(campaign).queue)
            .arg(user.as_str())
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(ticket.is_some())
    }
}
