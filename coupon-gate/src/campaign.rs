//! The campaign definition and what the gate reports of one.
//!
//! Every value here is checked when it is built, so the rest of the crate (and the Lua
//! scripts, which trust their arguments) never sees a window that closes before it opens; the
//! identifiers come checked from coupon-event.

use std::fmt;
use std::num::NonZeroU32;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use coupon_event::CampaignId;

/// The definition of a campaign: how many coupons, when applications are accepted, and how
/// the opening is decided.
///
/// The window is half-open: a campaign accepts applications from `opens_at` (inclusive) until
/// `closes_at` (exclusive), as judged by the Redis server's clock so that every application
/// node agrees. Without bounds a campaign is open as soon as it is created and never closes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Campaign {
    id: CampaignId,
    quota: NonZeroU32,
    opens_at: Option<SystemTime>,
    closes_at: Option<SystemTime>,
    opening: Opening,
}

/// How a campaign's coupons are handed out when it opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opening {
    /// First come, first served from `opens_at` on.
    Race,
    /// A pre-queue from `queue_opens_at` until `opens_at`, then a draw: at `opens_at` up to the
    /// quota's worth of the queued users are chosen uniformly at random, each with a ticket drawn
    /// from the operating system's randomness when it first joined. Coupons the queue does not
    /// take go first come, first served after the draw.
    Draw {
        /// When the pre-queue opens; before `opens_at`.
        queue_opens_at: SystemTime,
    },
}

impl Opening {
    /// The name the HTTP API and the docs use: `race` or `draw`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Race => "race",
            Self::Draw { .. } => "draw",
        }
    }

    /// When a draw's pre-queue opens; `None` for a race.
    pub fn queue_opens_at(self) -> Option<SystemTime> {
        match self {
            Self::Race => None,
            Self::Draw { queue_opens_at } => Some(queue_opens_at),
        }
    }
}

impl Campaign {
    /// A campaign of `quota` coupons, open from creation on with no closing time.
    pub fn new(id: CampaignId, quota: NonZeroU32) -> Self {
        Self {
            id,
            quota,
            opens_at: None,
            closes_at: None,
            opening: Opening::Race,
        }
    }

    /// Sets the window in which applications are accepted. Either bound may be open.
    ///
    /// Times are kept with millisecond precision; anything finer is dropped.
    ///
    /// # Errors
    ///
    /// [`InvalidInput::Window`] when `closes_at` is not after `opens_at`, or a bound lies
    /// before the Unix epoch.
    pub fn with_window(
        mut self,
        opens_at: Option<SystemTime>,
        closes_at: Option<SystemTime>,
    ) -> Result<Self, InvalidInput> {
        let opens_at = opens_at.map(truncate_to_millis).transpose()?;
        let closes_at = closes_at.map(truncate_to_millis).transpose()?;
        if let (Some(o), Some(c)) = (opens_at, closes_at)
            && c <= o
        {
            return Err(InvalidInput::Window);
        }
        if let Opening::Draw { queue_opens_at } = self.opening {
            check_draw(queue_opens_at, opens_at)?;
        }
        self.opens_at = opens_at;
        self.closes_at = closes_at;
        Ok(self)
    }

    /// Makes the opening a draw whose pre-queue opens at `queue_opens_at` (see
    /// [`Opening::Draw`]); the draw is at `opens_at`, so set the window first.
    ///
    /// # Errors
    ///
    /// [`InvalidInput::Draw`] when the campaign has no `opens_at`, or `queue_opens_at` is not
    /// before it or lies before the Unix epoch.
    pub fn with_draw(mut self, queue_opens_at: SystemTime) -> Result<Self, InvalidInput> {
        let queue_opens_at = truncate_to_millis(queue_opens_at).map_err(|_| InvalidInput::Draw)?;
        check_draw(queue_opens_at, self.opens_at)?;
        self.opening = Opening::Draw { queue_opens_at };
        Ok(self)
    }

    /// The campaign's id.
    pub fn id(&self) -> &CampaignId {
        &self.id
    }

    /// How many coupons the campaign hands out.
    pub fn quota(&self) -> NonZeroU32 {
        self.quota
    }

    /// When applications start being accepted, if bounded.
    pub fn opens_at(&self) -> Option<SystemTime> {
        self.opens_at
    }

    /// When applications stop being accepted, if bounded.
    pub fn closes_at(&self) -> Option<SystemTime> {
        self.closes_at
    }

    /// How the coupons are handed out when the campaign opens.
    pub fn opening(&self) -> Opening {
        self.opening
    }

    /// When the pre-queue opens, as the scripts keep it: milliseconds since the epoch, 0 for a
    /// race.
    pub(crate) fn queue_opens_millis(&self) -> u64 {
        // `with_draw` refused every time that does not convert, so 0 stands for a race only.
        self.opening
            .queue_opens_at()
            .and_then(|t| to_millis(t).ok())
            .unwrap_or(0)
    }

    /// The window as the scripts keep it: milliseconds since the epoch, 0 for no bound.
    pub(crate) fn window_millis(&self) -> (u64, u64) {
        // `with_window` refused every bound that does not convert, so 0 is never reached.
        let ms = |t: Option<SystemTime>| t.and_then(|t| to_millis(t).ok()).unwrap_or(0);
        (ms(self.opens_at), ms(self.closes_at))
    }
}

/// A campaign as Redis holds it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CampaignStatus {
    /// How many coupons the campaign hands out.
    pub quota: u32,
    /// How many users hold a coupon now (admissions minus releases).
    pub issued: u32,
    /// When applications start being accepted, if bounded.
    pub opens_at: Option<SystemTime>,
    /// When applications stop being accepted, if bounded.
    pub closes_at: Option<SystemTime>,
    /// How the coupons are handed out when the campaign opens.
    pub opening: Opening,
    /// Users in the pre-queue of a draw: those waiting before the draw, those who had joined
    /// once it has run; 0 for a race.
    pub queued: u64,
    /// Whether the draw has run to its end; false for a race.
    pub drawn: bool,
}

impl CampaignStatus {
    /// Coupons still available.
    pub fn remaining(&self) -> u32 {
        self.quota.saturating_sub(self.issued)
    }

    /// Where the campaign stands at `now` (read with the status, by the caller's clock; Redis
    /// judges applications by its own).
    pub fn stage(&self, now: SystemTime) -> Stage {
        if self.closes_at.is_some_and(|closes| closes <= now) {
            return Stage::Closed;
        }
        if self.opens_at.is_some_and(|opens| now < opens) {
            let queueing = self.opening.queue_opens_at().is_some_and(|q| q <= now);
            return if queueing {
                Stage::Queueing
            } else {
                Stage::Scheduled
            };
        }
        if self.remaining() == 0 {
            Stage::SoldOut
        } else {
            Stage::Open
        }
    }
}

/// A campaign as a list of campaigns shows it ([`crate::Gate::campaign_page`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listed {
    /// Its state is in Redis.
    Live(CampaignStatus),
    /// It was archived: this is what stays.
    Archived(crate::Tombstone),
}

impl Listed {
    /// Where it stands at `now` ([`CampaignStatus::stage`], or [`Stage::Archived`]).
    pub fn stage(&self, now: SystemTime) -> Stage {
        match self {
            Self::Live(status) => status.stage(now),
            Self::Archived(_) => Stage::Archived,
        }
    }
}

/// Where a campaign stands in its life ([`CampaignStatus::stage`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stage {
    /// Not open yet, and no pre-queue open either.
    Scheduled,
    /// A draw's pre-queue is open; the draw runs when the campaign opens.
    Queueing,
    /// Taking applications, with coupons left (or a draw that is running).
    Open,
    /// Within its window, every coupon taken.
    SoldOut,
    /// Its window has ended, by itself or closed early.
    Closed,
    /// Closed and settled, its state removed from Redis but for a tombstone.
    Archived,
}

impl Stage {
    /// The name the HTTP API and coupon-admin use: `scheduled`, `queueing`, `open`,
    /// `sold_out`, `closed` or `archived`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Queueing => "queueing",
            Self::Open => "open",
            Self::SoldOut => "sold_out",
            Self::Closed => "closed",
            Self::Archived => "archived",
        }
    }
}

/// A value that was refused when it was built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidInput {
    /// A window whose end is not after its start, or that lies before the Unix epoch.
    Window,
    /// A key prefix that is empty or contains `{` or `}`.
    KeyPrefix,
    /// A draw without `opens_at`, or whose pre-queue does not open before it.
    Draw,
}

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Window => "campaign window must close after it opens, and not before 1970",
            Self::KeyPrefix => "key prefix must be non-empty and contain no '{' or '}'",
            Self::Draw => {
                "a draw needs opensAt, and its queue must open before it (and not before 1970)"
            }
        })
    }
}

impl std::error::Error for InvalidInput {}

fn check_draw(
    queue_opens_at: SystemTime,
    opens_at: Option<SystemTime>,
) -> Result<(), InvalidInput> {
    match opens_at {
        Some(opens_at) if queue_opens_at < opens_at && queue_opens_at > UNIX_EPOCH => Ok(()),
        _ => Err(InvalidInput::Draw),
    }
}

fn truncate_to_millis(t: SystemTime) -> Result<SystemTime, InvalidInput> {
    let ms = to_millis(t)?;
    Ok(from_millis(ms))
}

/// Milliseconds since the Unix epoch, as the scripts keep times.
fn to_millis(t: SystemTime) -> Result<u64, InvalidInput> {
    let since = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| InvalidInput::Window)?;
    u64::try_from(since.as_millis()).map_err(|_| InvalidInput::Window)
}

pub(crate) fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_must_close_after_it_opens() {
        let id = CampaignId::new("w").unwrap();
        let quota = NonZeroU32::new(1).unwrap();
        let t = UNIX_EPOCH + Duration::from_secs(1_000);
        let c = Campaign::new(id.clone(), quota);
        assert_eq!(
            c.clone().with_window(Some(t), Some(t)),
            Err(InvalidInput::Window)
        );
        assert!(
            c.clone()
                .with_window(Some(t), Some(t + Duration::from_millis(1)))
                .is_ok()
        );
        assert!(c.clone().with_window(None, Some(t)).is_ok());
        let before_epoch = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(
            c.with_window(Some(before_epoch), None),
            Err(InvalidInput::Window)
        );
    }

    #[test]
    fn a_draw_needs_a_queue_that_opens_before_the_campaign() {
        let id = CampaignId::new("d").unwrap();
        let quota = NonZeroU32::new(1).unwrap();
        let t = UNIX_EPOCH + Duration::from_secs(1_000);
        let c = Campaign::new(id, quota);
        assert_eq!(
            c.clone().with_draw(t),
            Err(InvalidInput::Draw),
            "no opensAt"
        );
        let windowed = c.with_window(Some(t), None).unwrap();
        assert_eq!(windowed.clone().with_draw(t), Err(InvalidInput::Draw));
        assert_eq!(
            windowed.clone().with_draw(t + Duration::from_secs(1)),
            Err(InvalidInput::Draw)
        );
        let draw = windowed.with_draw(t - Duration::from_secs(60)).unwrap();
        assert_eq!(draw.opening().name(), "draw");
        assert_eq!(draw.queue_opens_millis(), 940_000);
        assert_eq!(
            draw.clone().with_window(None, None),
            Err(InvalidInput::Draw),
            "a draw keeps its opensAt"
        );
        assert_eq!(
            draw.clone()
                .with_window(Some(t - Duration::from_secs(60)), None),
            Err(InvalidInput::Draw),
            "nor moves it to the queue's opening"
        );
        assert!(
            draw.with_window(Some(t + Duration::from_secs(60)), None)
                .is_ok()
        );
    }

    #[test]
    fn window_is_kept_in_whole_milliseconds() {
        let id = CampaignId::new("w").unwrap();
        let quota = NonZeroU32::new(1).unwrap();
        let t = UNIX_EPOCH + Duration::from_nanos(1_500_999_999);
        let c = Campaign::new(id, quota).with_window(Some(t), None).unwrap();
        assert_eq!(
            c.opens_at(),
            Some(UNIX_EPOCH + Duration::from_millis(1_500))
        );
    }

    #[test]
    fn a_stage_follows_the_window_the_queue_and_the_quota() {
        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        let status = CampaignStatus {
            quota: 2,
            issued: 1,
            opens_at: Some(at(100)),
            closes_at: Some(at(200)),
            opening: Opening::Draw {
                queue_opens_at: at(50),
            },
            queued: 0,
            drawn: false,
        };
        assert_eq!(status.stage(at(10)), Stage::Scheduled);
        assert_eq!(status.stage(at(50)), Stage::Queueing);
        assert_eq!(status.stage(at(100)), Stage::Open);
        assert_eq!(status.stage(at(200)), Stage::Closed);
        let race = CampaignStatus {
            opening: Opening::Race,
            ..status.clone()
        };
        assert_eq!(race.stage(at(50)), Stage::Scheduled);
        let sold_out = CampaignStatus { issued: 2, ..race };
        assert_eq!(sold_out.stage(at(150)), Stage::SoldOut);
        assert_eq!(sold_out.stage(at(250)), Stage::Closed);
        // Closed early, before it opened: closed, not scheduled.
        let ended = CampaignStatus {
            closes_at: Some(at(20)),
            ..status
        };
        assert_eq!(ended.stage(at(30)), Stage::Closed);
    }
}
