//! The messages on the admissions topic, parsed and validated.
//!
//! A payload that does not parse, or carries ids out of range, is not an error of the sink:
//! it becomes a failed event with the reason, and consumption goes on.

use coupon_gate::{CampaignId, UserId};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// What a message asks the sink to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Write the coupon row.
    Admitted(Coupon),
    /// Remove exactly this coupon row (a compensation in the gate).
    Released(Coupon),
}

/// One coupon: who holds which slot of which campaign, since when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coupon {
    /// The campaign.
    pub campaign: CampaignId,
    /// The user holding the coupon.
    pub user: UserId,
    /// The slot, 1..=quota.
    pub seq: u32,
    /// When the gate admitted (or released) the user, as `DATETIME(3)` text in UTC.
    pub at: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    /// Absent in messages of producers that only send admissions.
    event: Option<String>,
    campaign_id: String,
    user_id: serde_json::Value,
    seq: serde_json::Value,
    admitted_at: Option<String>,
    released_at: Option<String>,
}

impl Event {
    /// Parses a message payload.
    ///
    /// # Errors
    ///
    /// A text saying why the payload is not a valid admission or release.
    pub fn parse(payload: &[u8]) -> Result<Self, String> {
        let wire: Wire = serde_json::from_slice(payload)
            .map_err(|err| format!("payload is not a valid event: {err}"))?;
        let campaign = CampaignId::new(wire.campaign_id.as_str())
            .map_err(|err| format!("campaignId {:?}: {err}", wire.campaign_id))?;
        let user = wire
            .user_id
            .as_u64()
            .and_then(|u| UserId::new(u).ok())
            .ok_or_else(|| {
                format!(
                    "userId {}: must be an integer from 1 to {}",
                    wire.user_id,
                    UserId::MAX
                )
            })?;
        let seq = wire
            .seq
            .as_u64()
            .and_then(|s| u32::try_from(s).ok())
            .filter(|&s| s > 0)
            .ok_or_else(|| {
                format!(
                    "seq {}: must be an integer from 1 to {}",
                    wire.seq,
                    u32::MAX
                )
            })?;
        let (at, field, kind): (_, _, fn(Coupon) -> Self) = match wire.event.as_deref() {
            None | Some("admitted") => (wire.admitted_at, "admittedAt", Self::Admitted),
            Some("released") => (wire.released_at, "releasedAt", Self::Released),
            Some(other) => {
                return Err(format!(
                    "event {other:?}: must be \"admitted\" or \"released\""
                ));
            }
        };
        let at = at.ok_or_else(|| format!("{field} is missing"))?;
        let at = datetime(&at).map_err(|err| format!("{field} {at:?}: {err}"))?;
        Ok(kind(Coupon {
            campaign,
            user,
            seq,
            at,
        }))
    }
}

/// RFC 3339 text as MySQL `DATETIME(3)` text in UTC.
fn datetime(text: &str) -> Result<String, String> {
    let t = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|err| format!("not an RFC 3339 time: {err}"))?;
    let utc = t.to_offset(time::UtcOffset::UTC);
    if !(1970..=9999).contains(&utc.year()) {
        return Err("outside the years 1970 to 9999".to_owned());
    }
    utc.format(format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]"
    ))
    .map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coupon(campaign: &str, user: u64, seq: u32, at: &str) -> Coupon {
        Coupon {
            campaign: CampaignId::new(campaign).unwrap(),
            user: UserId::new(user).unwrap(),
            seq,
            at: at.to_owned(),
        }
    }

    #[test]
    fn admissions_and_releases_parse() {
        let admitted = br#"{"event":"admitted","campaignId":"spring","userId":42,"seq":7,"admittedAt":"2026-11-24T06:08:09.633Z"}"#;
        assert_eq!(
            Event::parse(admitted),
            Ok(Event::Admitted(coupon(
                "spring",
                42,
                7,
                "2026-11-24 06:08:09.633"
            )))
        );
        // The seed's shape has no `event` field; offsets are turned into UTC.
        let bare = br#"{"campaignId":"spring","userId":1,"seq":1,"admittedAt":"2026-11-24T15:00:00+09:00"}"#;
        assert_eq!(
            Event::parse(bare),
            Ok(Event::Admitted(coupon(
                "spring",
                1,
                1,
                "2026-11-24 06:00:00.000"
            )))
        );
        let released = br#"{"event":"released","campaignId":"spring","userId":42,"seq":7,"releasedAt":"2026-11-24T07:00:00Z"}"#;
        assert_eq!(
            Event::parse(released),
            Ok(Event::Released(coupon(
                "spring",
                42,
                7,
                "2026-11-24 07:00:00.000"
            )))
        );
    }

    #[test]
    fn bad_payloads_say_why() {
        let cases: [(&[u8], &str); 10] = [
            (b"not json", "not a valid event"),
            (br#"{"campaignId":"a","userId":1,"seq":1}"#, "admittedAt is missing"),
            (br#"{"campaignId":"A!","userId":1,"seq":1,"admittedAt":"2026-01-01T00:00:00Z"}"#, "campaignId"),
            (br#"{"campaignId":"a","userId":0,"seq":1,"admittedAt":"2026-01-01T00:00:00Z"}"#, "userId"),
            (br#"{"campaignId":"a","userId":9223372036854775808,"seq":1,"admittedAt":"2026-01-01T00:00:00Z"}"#, "userId"),
            (br#"{"campaignId":"a","userId":"1","seq":1,"admittedAt":"2026-01-01T00:00:00Z"}"#, "userId"),
            (br#"{"campaignId":"a","userId":1,"seq":0,"admittedAt":"2026-01-01T00:00:00Z"}"#, "seq"),
            (br#"{"campaignId":"a","userId":1,"seq":4294967296,"admittedAt":"2026-01-01T00:00:00Z"}"#, "seq"),
            (br#"{"campaignId":"a","userId":1,"seq":1,"admittedAt":"yesterday"}"#, "RFC 3339"),
            (br#"{"event":"deleted","campaignId":"a","userId":1,"seq":1,"admittedAt":"2026-01-01T00:00:00Z"}"#, "event"),
        ];
        for (payload, why) in cases {
            let err = Event::parse(payload).unwrap_err();
            assert!(
                err.contains(why),
                "{}: {err}",
                String::from_utf8_lossy(payload)
            );
        }
    }
}
