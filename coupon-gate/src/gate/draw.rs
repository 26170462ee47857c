//! A draw's operations on the [`Gate`]: running it part by part, each part sized by what the
//! parts before it cost, the draws not yet run, and who waits in a pre-queue.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use redis::aio::ConnectionLike;

use super::{DRAW_PART, DRAW_PART_TIME, Gate};
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
    /// Each script call draws as many winners as take Redis about [`DRAW_PART_TIME`], judged
    /// by what the gate's parts before it took (the first part of a gate 250, never more than
    /// [`DRAW_PART`]), so that Redis serves other requests between the parts of a large draw
    /// however busy its cores are; applications to the campaign meanwhile wait
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

    /// Runs one part of `campaign`'s draw (sized as [`Gate::draw`] says), if it is due: what
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
            .arg(self.shared.draw_part.size())
            .arg(ENTRY_RECORDS);
        let mut conn = self.conn.clone();
        let started = Instant::now();
        let (answer, winners, ms): (i64, i64, i64) = script::run(&call, &mut conn).await?;
        let winners = to_seq(winners).unwrap_or(0);
        self.shared.draw_part.took(winners, started.elapsed());
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

/// The size of a gate's next draw part: as many winners as take Redis about [`DRAW_PART_TIME`],
/// from the time the last part took per winner, as its caller saw it (the script, and any wait
/// behind other commands or for a core). A part is at most twice the one before and between
/// [`LEAST_PART`] and [`DRAW_PART`] winners, so a slow part makes the next ones small at once
/// and a quick one lets them grow back gradually.
#[derive(Debug)]
pub(crate) struct PartSize(AtomicU32);

/// The first part of a gate's first draw, before any part was timed.
const FIRST_PART: u32 = 250;
/// The fewest winners a part takes, however slow the parts before it were.
const LEAST_PART: u32 = 20;

impl PartSize {
    pub(crate) fn new() -> Self {
        Self(AtomicU32::new(FIRST_PART))
    }

    /// The most winners the next part takes.
    pub(crate) fn size(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    /// Sizes the next part from one that drew `winners` in `took`.
    pub(crate) fn took(&self, winners: u32, took: Duration) {
        if winners == 0 {
            return;
        }
        // A part that took no measurable time allows the largest.
        let fits = DRAW_PART_TIME.as_nanos() * u128::from(winners) / took.as_nanos().max(1);
        let fits = u32::try_from(fits).unwrap_or(u32::MAX);
        let grown = self.size().saturating_mul(2);
        let next = fits.min(grown).clamp(LEAST_PART, DRAW_PART);
        self.0.store(next, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_fit_the_time_from_what_the_last_took() {
        let part = PartSize::new();
        assert_eq!(part.size(), FIRST_PART);
        // 250 winners in 2.5 ms: 10 µs each, so 1,000 fit; at most twice the last part.
        part.took(250, Duration::from_micros(2_500));
        assert_eq!(part.size(), 500);
        part.took(500, Duration::from_millis(5));
        assert_eq!(part.size(), 1_000);
        // A busy machine: 58 µs a winner (a part of 2,000 in 117 ms) fits 172.
        part.took(1_000, Duration::from_millis(58));
        assert_eq!(part.size(), 172);
        // Never below the least part, never above DRAW_PART; nothing drawn tells nothing.
        part.took(10, Duration::from_secs(1));
        assert_eq!(part.size(), LEAST_PART);
        part.took(0, Duration::ZERO);
        assert_eq!(part.size(), LEAST_PART);
        for _ in 0..20 {
            part.took(part.size(), Duration::ZERO);
        }
        assert_eq!(part.size(), DRAW_PART);
    }
}
