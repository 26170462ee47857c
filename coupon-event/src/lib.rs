//! The one wire contract of coupon-gate: the identifiers every part shares ([`CampaignId`],
//! [`UserId`]) and the [`Event`] that travels on the admissions topic, with its encoding.
//!
//! The relay writes events with an [`Encoder`]; the sink, the operator tools and the tests read
//! them with [`Event::decode`]. This crate depends on no Redis, Kafka or database client, so
//! that whatever reads the topic links none of the gate's machinery.
//!
//! ```
//! use coupon_event::{CampaignId, Event, EventKind, UserId};
//!
//! let payload = br#"{"event":"admitted","campaignId":"spring-sale","userId":"42","seq":7,"admittedAt":"2026-11-24T06:00:00Z"}"#;
//! let event = Event::decode(payload)?;
//! assert_eq!(event.kind, EventKind::Admitted);
//! assert_eq!(event.campaign, CampaignId::new("spring-sale")?);
//! assert_eq!(event.user, UserId::from_number(42)?);
//! assert_eq!(event.key(), "spring-sale:42");
//! assert_eq!(Event::decode(&event.encode())?, event);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod event;
mod id;

pub use event::{Encoder, Event, EventKind, InvalidEvent};
pub use id::{CampaignId, InvalidId, UserId};

/// Kafka bootstrap servers of a local deployment, the default of every binary.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";
/// Topic of admissions, shared by the relay, the sink and the operator tools.
pub const DEFAULT_TOPIC: &str = "coupon_create";
