//! Validated identifiers and the campaign definition.
//!
//! Every value here is checked when it is built, so the rest of the crate (and the Lua
//! scripts, which trust their arguments) never sees an id that could break a key's hash tag
//! or a user id that is not a positive 64-bit integer.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The identifier of a campaign: a short slug.
///
/// 1 to [`CampaignId::MAX_LEN`] characters from `a-z`, `0-9`, `-` and `_`, starting with a
/// letter or digit. The id becomes part of every Redis key of the campaign, inside a Redis
/// Cluster hash tag, so characters such as `{`, `}` or `:` are refused.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CampaignId(String);

impl CampaignId {
    /// The longest id accepted.
    pub const MAX_LEN: usize = 64;

    /// Checks `id` and wraps it.
    ///
    /// # Errors
    ///
    /// [`InvalidInput::CampaignId`] when `id` is empty, too long, or has a character outside
    /// the slug alphabet.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidInput> {
        let id = id.into();
        let valid_char =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
        let valid = !id.is_empty()
            && id.len() <= Self::MAX_LEN
            && id.chars().all(valid_char)
            && id.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
        if valid {
            Ok(Self(id))
        } else {
            Err(InvalidInput::CampaignId)
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CampaignId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for CampaignId {
    type Err = InvalidInput;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// The identifier of a user: an opaque string, as identity providers name their subjects
/// (`auth0|5f3a9c`, a UUID, an e-mail address), or a positive integer.
///
/// 1 to [`UserId::MAX_LEN`] bytes of `A-Z a-z 0-9 . _ : @ | -`. An id that reads as a number
/// (digits, perhaps after `-` or around one `.`) must be a positive integer written plainly: no
/// leading zero, from 1 to [`UserId::MAX_NUMBER`], so that `42` and `"42"` are the same user,
/// numeric ids keep the form they always had in Redis and downstream, and `"-1"` or `"1.5"` are
/// refused as the numbers -1 and 1.5 are.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

impl UserId {
    /// The longest id accepted, in bytes.
    pub const MAX_LEN: usize = 64;
    /// The largest numeric id, `i64::MAX`, so that it fits a signed `BIGINT` wherever ids were
    /// kept as numbers.
    pub const MAX_NUMBER: u64 = i64::MAX as u64;

    /// Checks `id` and wraps it.
    ///
    /// # Errors
    ///
    /// [`InvalidInput::UserId`] when `id` is empty, longer than 64 bytes, has a character outside
    /// the alphabet, or reads as a number that is not one from 1 to [`UserId::MAX_NUMBER`]
    /// written without leading zeros.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidInput> {
        let id = id.into();
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b"._:@|-".contains(&b);
        if id.is_empty() || id.len() > Self::MAX_LEN || !id.bytes().all(allowed) {
            return Err(InvalidInput::UserId);
        }
        if looks_numeric(&id) {
            let canonical = id.bytes().all(|b| b.is_ascii_digit())
                && !id.starts_with('0')
                && id
                    .parse::<u64>()
                    .is_ok_and(|n| (1..=Self::MAX_NUMBER).contains(&n));
            if !canonical {
                return Err(InvalidInput::UserId);
            }
        }
        Ok(Self(id))
    }

    /// The numeric id `n`.
    ///
    /// # Errors
    ///
    /// [`InvalidInput::UserId`] when `n` is 0 or above [`UserId::MAX_NUMBER`].
    pub fn from_number(n: u64) -> Result<Self, InvalidInput> {
        if (1..=Self::MAX_NUMBER).contains(&n) {
            Ok(Self(n.to_string()))
        } else {
            Err(InvalidInput::UserId)
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as a number, when it is one.
    pub fn as_number(&self) -> Option<u64> {
        if self.0.bytes().all(|b| b.is_ascii_digit()) {
            self.0.parse().ok()
        } else {
            None
        }
    }
}

/// Whether `id` reads as a number: digits, perhaps after one `-`, perhaps with one `.` between
/// digits.
fn looks_numeric(id: &str) -> bool {
    let unsigned = id.strip_prefix('-').unwrap_or(id);
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, "1"));
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && digits(fraction)
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for UserId {
    type Err = InvalidInput;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// The definition of a campaign: how many coupons, and when applications are accepted.
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
}

impl Campaign {
    /// A campaign of `quota` coupons, open from creation on with no closing time.
    pub fn new(id: CampaignId, quota: NonZeroU32) -> Self {
        Self {
            id,
            quota,
            opens_at: None,
            closes_at: None,
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
        self.opens_at = opens_at;
        self.closes_at = closes_at;
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
}

impl CampaignStatus {
    /// Coupons still available.
    pub fn remaining(&self) -> u32 {
        self.quota.saturating_sub(self.issued)
    }
}

/// A value that was refused when it was built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidInput {
    /// A campaign id that is not a slug of 1 to 64 characters from `a-z 0-9 - _`.
    CampaignId,
    /// A user id that is not 1 to 64 bytes of `A-Z a-z 0-9 . _ : @ | -`, or digits that are not
    /// a number from 1 to 2^63 - 1 without leading zeros.
    UserId,
    /// A window whose end is not after its start, or that lies before the Unix epoch.
    Window,
    /// A key prefix that is empty or contains `{` or `}`.
    KeyPrefix,
}

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::CampaignId => {
                "campaign id must be 1 to 64 characters from a-z, 0-9, '-' and '_', starting with a letter or digit"
            }
            Self::UserId => {
                "user id must be 1 to 64 characters from A-Z, a-z, 0-9 and . _ : @ | -, or an integer from 1 to 9223372036854775807"
            }
            Self::Window => "campaign window must close after it opens, and not before 1970",
            Self::KeyPrefix => "key prefix must be non-empty and contain no '{' or '}'",
        })
    }
}

impl std::error::Error for InvalidInput {}

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
    fn campaign_ids_are_slugs() {
        for ok in ["a", "default", "spring-sale_2026", "0day", &"x".repeat(64)] {
            assert!(CampaignId::new(ok).is_ok(), "{ok:?} should be accepted");
        }
        for bad in [
            "",
            "-lead",
            "_lead",
            "Upper",
            "a b",
            "a{b}",
            "a:b",
            "쿠폰",
            &"x".repeat(65),
        ] {
            assert_eq!(
                CampaignId::new(bad),
                Err(InvalidInput::CampaignId),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn user_ids_are_opaque_strings_or_canonical_numbers() {
        for ok in [
            "1",
            "42",
            "9223372036854775807",
            "auth0|5f3a9c",
            "550e8400-e29b-41d4-a716-446655440000",
            "someone@example.com",
            "urn:user:7",
            "A.b_c",
            "1-2",
            "1.2.3",
            "-",
            "1.",
            ".5",
            &"x".repeat(64),
        ] {
            assert_eq!(
                UserId::new(ok).map(|u| u.as_str().to_owned()),
                Ok(ok.to_owned())
            );
        }
        for bad in [
            "",
            " 1",
            "+1",
            "-1",
            "0",
            "007",
            "1.0",
            "1.5",
            "-0",
            "9223372036854775808",
            "99999999999999999999",
            "a b",
            "쿠폰",
            "a{b}",
            "a/b",
            &"x".repeat(65),
        ] {
            assert_eq!(bad.parse::<UserId>(), Err(InvalidInput::UserId), "{bad:?}");
        }
        assert_eq!(UserId::from_number(42).unwrap().as_str(), "42");
        assert_eq!(UserId::from_number(0), Err(InvalidInput::UserId));
        assert_eq!(
            UserId::from_number(i64::MAX as u64 + 1),
            Err(InvalidInput::UserId)
        );
        assert_eq!(UserId::new("42").unwrap().as_number(), Some(42));
        assert_eq!(UserId::new("auth0|1").unwrap().as_number(), None);
    }

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
}
