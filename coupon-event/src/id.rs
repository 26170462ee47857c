//! The identifiers every part of coupon-gate shares: who applies, and to which campaign.
//!
//! Every value here is checked when it is built, so the gate (and its Lua scripts, which trust
//! their arguments), the relay and the sink never see an id that could break a Redis key's hash
//! tag, nor a user id that is neither an opaque token nor a positive 64-bit integer.

use std::fmt;
use std::str::FromStr;

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
    /// [`InvalidId::CampaignId`] when `id` is empty, too long, or has a character outside
    /// the slug alphabet.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidId> {
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
            Err(InvalidId::CampaignId)
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
    type Err = InvalidId;

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
    /// [`InvalidId::UserId`] when `id` is empty, longer than 64 bytes, has a character outside
    /// the alphabet, or reads as a number that is not one from 1 to [`UserId::MAX_NUMBER`]
    /// written without leading zeros.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidId> {
        let id = id.into();
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b"._:@|-".contains(&b);
        if id.is_empty() || id.len() > Self::MAX_LEN || !id.bytes().all(allowed) {
            return Err(InvalidId::UserId);
        }
        if looks_numeric(&id) {
            let canonical = id.bytes().all(|b| b.is_ascii_digit())
                && !id.starts_with('0')
                && id
                    .parse::<u64>()
                    .is_ok_and(|n| (1..=Self::MAX_NUMBER).contains(&n));
            if !canonical {
                return Err(InvalidId::UserId);
            }
        }
        Ok(Self(id))
    }

    /// The numeric id `n`.
    ///
    /// # Errors
    ///
    /// [`InvalidId::UserId`] when `n` is 0 or above [`UserId::MAX_NUMBER`].
    pub fn from_number(n: u64) -> Result<Self, InvalidId> {
        if (1..=Self::MAX_NUMBER).contains(&n) {
            Ok(Self(n.to_string()))
        } else {
            Err(InvalidId::UserId)
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
    type Err = InvalidId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// An identifier that was refused when it was built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidId {
    /// A campaign id that is not a slug of 1 to 64 characters from `a-z 0-9 - _`.
    CampaignId,
    /// A user id that is not 1 to 64 bytes of `A-Z a-z 0-9 . _ : @ | -`, or digits that are not
    /// a number from 1 to 2^63 - 1 without leading zeros.
    UserId,
}

impl fmt::Display for InvalidId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::CampaignId => {
                "campaign id must be 1 to 64 characters from a-z, 0-9, '-' and '_', starting with a letter or digit"
            }
            Self::UserId => {
                "user id must be 1 to 64 characters from A-Z, a-z, 0-9 and . _ : @ | -, or an integer from 1 to 9223372036854775807"
            }
        })
    }
}

impl std::error::Error for InvalidId {}

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
            assert_eq!(CampaignId::new(bad), Err(InvalidId::CampaignId), "{bad:?}");
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
            assert_eq!(bad.parse::<UserId>(), Err(InvalidId::UserId), "{bad:?}");
        }
        assert_eq!(UserId::from_number(42).unwrap().as_str(), "42");
        assert_eq!(UserId::from_number(0), Err(InvalidId::UserId));
        assert_eq!(
            UserId::from_number(i64::MAX as u64 + 1),
            Err(InvalidId::UserId)
        );
        assert_eq!(UserId::new("42").unwrap().as_number(), Some(42));
        assert_eq!(UserId::new("auth0|1").unwrap().as_number(), None);
    }
}
