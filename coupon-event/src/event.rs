//! The one definition of what travels on the admissions topic: written by the relay, read by the
//! sink, the operator tools and the tests.
//!
//! Key: `<campaign>:<user>`, so that one user's events share a partition and keep their order.
//! Value, JSON:
//! `{"event":"admitted","campaignId":"spring-sale","userId":"42","seq":7,"admittedAt":"2026-…Z"}`,
//! or, after a compensation, `{"event":"released",…,"releasedAt":"…"}`. The user id is written as
//! a string; a number (the form written before user ids became strings) is read too. A value
//! without `event` is an admission (the form of producers that only send admissions).

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::id::{CampaignId, UserId};

/// What happened to a user's slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The user was admitted and holds slot `seq`.
    Admitted,
    /// The user's slot `seq` was given back (a compensation).
    Released,
}

/// An admission or a release, as it travels on the topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Admission or release.
    pub kind: EventKind,
    /// The campaign.
    pub campaign: CampaignId,
    /// The user admitted or released.
    pub user: UserId,
    /// The slot taken or given back, 1..=quota.
    pub seq: u32,
    /// When the gate decided it, in UTC, to the millisecond.
    pub at: OffsetDateTime,
}

/// Why a payload is not an event; the text names the field at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidEvent(String);

impl fmt::Display for InvalidEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidEvent {}

/// The JSON value on the topic, field by field, in the order written; both directions.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire<'a> {
    /// `admitted` or `released`; absent means `admitted`.
    #[serde(borrow)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow)]
    campaign_id: Cow<'a, str>,
    #[serde(borrow)]
    user_id: WireUser<'a>,
    /// A number; kept as a JSON value so that a wrong type is reported by field.
    seq: Value,
    #[serde(borrow, skip_serializing_if = "Option::is_none")]
    admitted_at: Option<Cow<'a, str>>,
    #[serde(borrow, skip_serializing_if = "Option::is_none")]
    released_at: Option<Cow<'a, str>>,
}

/// A user id on the wire: written as a string, read as a string or a number.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum WireUser<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Number(u64),
    /// Anything else, kept to say what it was.
    Other(Value),
}

impl WireUser<'_> {
    fn user(&self) -> Result<UserId, InvalidEvent> {
        let user = match self {
            Self::Text(text) => UserId::new(text.as_ref()).ok(),
            Self::Number(n) => UserId::from_number(*n).ok(),
            Self::Other(_) => None,
        };
        user.ok_or_else(|| {
            let value = match self {
                Self::Text(text) => Value::from(text.as_ref()),
                Self::Number(n) => Value::from(*n),
                Self::Other(value) => value.clone(),
            };
            InvalidEvent(format!(
                "userId {value}: must be 1 to 64 characters from A-Z, a-z, 0-9 and . _ : @ | -, \
                 or an integer from 1 to {}",
                UserId::MAX_NUMBER
            ))
        })
    }
}

impl Event {
    /// The message key: `<campaign>:<user>`.
    pub fn key(&self) -> String {
        format!("{}:{}", self.campaign, self.user)
    }

    /// The message value.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        write_value(
            &mut out,
            self.kind,
            &self.campaign,
            &self.user,
            self.seq,
            &rfc3339(self.at),
        );
        out
    }

    /// Parses and checks a message value.
    ///
    /// # Errors
    ///
    /// [`InvalidEvent`] saying which field is missing or out of range: ids as the gate checks
    /// them, a seq from 1 to 2^32 - 1, an RFC 3339 time in the years 1970 to 9999.
    pub fn decode(payload: &[u8]) -> Result<Self, InvalidEvent> {
        let invalid = |text: String| InvalidEvent(text);
        let wire: Wire<'_> = serde_json::from_slice(payload)
            .map_err(|err| invalid(format!("payload is not a valid event: {err}")))?;
        let campaign = CampaignId::new(wire.campaign_id.as_ref())
            .map_err(|err| invalid(format!("campaignId {:?}: {err}", wire.campaign_id)))?;
        let user = wire.user_id.user()?;
        let seq = wire
            .seq
            .as_u64()
            .and_then(|s| u32::try_from(s).ok())
            .filter(|&s| s > 0)
            .ok_or_else(|| {
                invalid(format!(
                    "seq {}: must be an integer from 1 to {}",
                    wire.seq,
                    u32::MAX
                ))
            })?;
        let (kind, at, field) = match wire.event.as_deref() {
            None | Some("admitted") => (EventKind::Admitted, wire.admitted_at, "admittedAt"),
            Some("released") => (EventKind::Released, wire.released_at, "releasedAt"),
            Some(other) => {
                return Err(invalid(format!(
                    "event {other:?}: must be \"admitted\" or \"released\""
                )));
            }
        };
        let at = at.ok_or_else(|| invalid(format!("{field} is missing")))?;
        let at = parse_time(&at).map_err(|err| invalid(format!("{field} {at:?}: {err}")))?;
        Ok(Self {
            kind,
            campaign,
            user,
            seq,
            at,
        })
    }
}

/// Writes the key and value of events into buffers it reuses, for a producer's rounds of
/// hundreds of events: nothing is allocated per event, and a time that several events in a row
/// share (those of one outbox entry) is formatted once.
#[derive(Default)]
pub struct Encoder {
    key: String,
    value: Vec<u8>,
    /// The last time formatted, and its text.
    stamp: Option<(SystemTime, String)>,
}

impl Encoder {
    /// The key and value of the event told by the parts, valid until the next call: the same
    /// bytes as [`Event::key`] and [`Event::encode`] of that event.
    pub fn encode(
        &mut self,
        kind: EventKind,
        campaign: &CampaignId,
        user: &UserId,
        seq: u32,
        at: SystemTime,
    ) -> (&str, &[u8]) {
        let stamp = match &mut self.stamp {
            Some((last, text)) if *last == at => text,
            stamp => &stamp.insert((at, rfc3339(at.into()))).1,
        };
        self.key.clear();
        let _ = write!(self.key, "{campaign}:{user}");
        self.value.clear();
        write_value(&mut self.value, kind, campaign, user, seq, stamp);
        (&self.key, &self.value)
    }
}

/// Appends the JSON value of an event to `out`; `at` is its time in RFC 3339.
fn write_value(
    out: &mut Vec<u8>,
    kind: EventKind,
    campaign: &CampaignId,
    user: &UserId,
    seq: u32,
    at: &str,
) {
    let (event, admitted_at, released_at) = match kind {
        EventKind::Admitted => ("admitted", Some(Cow::Borrowed(at)), None),
        EventKind::Released => ("released", None, Some(Cow::Borrowed(at))),
    };
    let wire = Wire {
        event: Some(Cow::Borrowed(event)),
        campaign_id: Cow::Borrowed(campaign.as_str()),
        user_id: WireUser::Text(Cow::Borrowed(user.as_str())),
        seq: Value::from(seq),
        admitted_at,
        released_at,
    };
    serde_json::to_writer(out, &wire).expect("plain fields serialize");
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339)
        .expect("a time from the gate's clock or a decoded event formats")
}

/// RFC 3339 text as a time in UTC within the years a `DATETIME` column holds.
fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    let t = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|err| format!("not an RFC 3339 time: {err}"))?
        .to_offset(time::UtcOffset::UTC);
    if !(1970..=9999).contains(&t.year()) {
        return Err("outside the years 1970 to 9999".to_owned());
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::json;

    use super::*;

    fn event(kind: EventKind) -> Event {
        Event {
            kind,
            campaign: CampaignId::new("spring-sale").unwrap(),
            user: UserId::from_number(42).unwrap(),
            seq: 7,
            at: OffsetDateTime::from(UNIX_EPOCH + Duration::from_millis(1_764_000_000_123)),
        }
    }

    fn encode(encoder: &mut Encoder, event: &Event) -> (String, Vec<u8>) {
        let (key, value) = encoder.encode(
            event.kind,
            &event.campaign,
            &event.user,
            event.seq,
            event.at.into(),
        );
        (key.to_owned(), value.to_owned())
    }

    #[test]
    fn the_relay_writes_the_documented_form() {
        let mut encoder = Encoder::default();
        let (key, value) = encode(&mut encoder, &event(EventKind::Admitted));
        assert_eq!(key, "spring-sale:42");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&value).unwrap(),
            json!({"event":"admitted","campaignId":"spring-sale","userId":"42","seq":7,"admittedAt":"2025-11-24T16:00:00.123Z"})
        );
        let (_, value) = encode(&mut encoder, &event(EventKind::Released));
        let value: serde_json::Value = serde_json::from_slice(&value).unwrap();
        assert_eq!(value["event"], "released");
        assert_eq!(value["releasedAt"], "2025-11-24T16:00:00.123Z");
        assert!(value.get("admittedAt").is_none());
    }

    #[test]
    fn what_is_encoded_decodes_to_itself() {
        for kind in [EventKind::Admitted, EventKind::Released] {
            let event = event(kind);
            assert_eq!(Event::decode(&event.encode()), Ok(event.clone()));
            let (key, value) = encode(&mut Encoder::default(), &event);
            assert_eq!((key, value.clone()), (event.key(), event.encode()));
            assert_eq!(Event::decode(&value), Ok(event));
        }
    }

    #[test]
    fn user_ids_are_strings_and_numbers_already_on_a_topic_still_read() {
        let legacy = br#"{"event":"admitted","campaignId":"spring","userId":42,"seq":1,"admittedAt":"2026-11-24T06:00:00Z"}"#;
        let text = br#"{"event":"admitted","campaignId":"spring","userId":"42","seq":1,"admittedAt":"2026-11-24T06:00:00Z"}"#;
        assert_eq!(Event::decode(legacy), Event::decode(text));
        assert_eq!(Event::decode(text).unwrap().user.as_str(), "42");
        let opaque = br#"{"event":"admitted","campaignId":"spring","userId":"auth0|5f3a9c","seq":1,"admittedAt":"2026-11-24T06:00:00Z"}"#;
        let event = Event::decode(opaque).unwrap();
        assert_eq!(event.key(), "spring:auth0|5f3a9c");
        assert_eq!(Event::decode(&event.encode()), Ok(event));
    }

    #[test]
    fn admissions_without_an_event_field_and_other_offsets_decode() {
        // The seed's shape has no `event` field; offsets are turned into UTC.
        let bare = br#"{"campaignId":"spring","userId":1,"seq":1,"admittedAt":"2026-11-24T15:00:00+09:00"}"#;
        let event = Event::decode(bare).unwrap();
        assert_eq!(event.kind, EventKind::Admitted);
        assert_eq!(
            event.at,
            time::macros::datetime!(2026-11-24 06:00:00 UTC),
            "{event:?}"
        );
    }

    #[test]
    fn bad_payloads_say_why() {
        let cases: [(&[u8], &str); 15] = [
            (b"not json", "not a valid event"),
            (br#"{"campaignId":"a","userId":1,"seq":1}"#, "admittedAt is missing"),
            (br#"{"campaignId":"A!","userId":1,"seq":1,"admittedAt":"2026-01-01T00:00:00Z"}"#, "campaignId"),
            (br#"{"campaignId":"a","userId":0,"seq":1,"admittedAt":"2026-01-01T00:00:00Z"}"#, "userId"),
            (br#"{"campaignId":"a","userId":9223372036854775808,"seq":1,"admittedAt":"2026-01-01T00:00:00Z"}"#, "userId"),
            (br#"{"campaignId":"a","userId":"01","seq":1,"admittedAt":"2026-01-01T00:00:00Z"}"#, "userId"),
            (br#"{"campaignId":"a","userId":"a b","seq":1,"admittedAt":"2026-01-01T00:00:00Z"}"#, "userId"),
            (br#"{"campaignId":"a","userId":-1,"seq":1,"admittedAt":"2026-01-01T00:00:00Z"}"#, "userId"),
            (br#"{"campaignId":"a","userId":1.5,"seq":1,"admittedAt":"2026-01-01T00:00:00Z"}"#, "userId"),
            (br#"{"campaignId":"a","userId":true,"seq":1,"admittedAt":"2026-01-01T00:00:00Z"}"#, "userId"),
            (br#"{"campaignId":"a","userId":1,"seq":0,"admittedAt":"2026-01-01T00:00:00Z"}"#, "seq"),
            (br#"{"campaignId":"a","userId":1,"seq":4294967296,"admittedAt":"2026-01-01T00:00:00Z"}"#, "seq"),
            (br#"{"campaignId":"a","userId":1,"seq":1,"admittedAt":"yesterday"}"#, "RFC 3339"),
            (br#"{"campaignId":"a","userId":1,"seq":1,"admittedAt":"1969-12-31T23:59:59Z"}"#, "1970"),
            (br#"{"event":"deleted","campaignId":"a","userId":1,"seq":1,"admittedAt":"2026-01-01T00:00:00Z"}"#, "event"),
        ];
        for (payload, why) in cases {
            let err = Event::decode(payload).unwrap_err().to_string();
            assert!(
                err.contains(why),
                "{}: {err}",
                String::from_utf8_lossy(payload)
            );
        }
    }
}
