//! The relay from coupon-gate's outbox to Kafka.
//!
//! The gate admits users and records every admission in its campaign's outbox stream, in the
//! same atomic step; nothing leaves Redis until a [`Relay`] delivers it. A relay reads the
//! outboxes of every campaign, produces each admission as an [`Event`] with an idempotent
//! producer, and acknowledges an outbox entry only once the broker confirmed all of it; entries
//! a crashed relay held are taken over by another. Run one beside every process that admits,
//! or any number of them: they share the outboxes through one consumer group.
//!
//! The relays of one key prefix deliver to one topic: the first records its topic and broker
//! cluster in Redis ([`Outbox::bind`](coupon_gate::Outbox::bind)), and a relay configured
//! otherwise delivers nothing and says so ([`Running::bound_elsewhere`]) until an operator moves
//! the binding. A broker that refuses the relay's credentials or TLS handshake fails
//! [`Relay::ensure_topic`] at once with [`Error::Refused`]. TLS and SASL are librdkafka's
//! properties ([`RelayConfig::kafka_properties`]).
//!
//! Consumers read the topic with [`Event::decode`] (from coupon-event, re-exported here), the
//! same definition the relay writes with.
//!
//! ```no_run
//! use coupon_gate::Gate;
//! use coupon_relay::{Relay, RelayConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let conn = redis::Client::open("redis://127.0.0.1:6379")?
//!     .get_multiplexed_async_connection()
//!     .await?;
//! let gate = Gate::new(conn);
//! let relay = Relay::new(&gate, RelayConfig::default())?;
//! relay.ensure_topic().await?;
//! relay.run(async { tokio::signal::ctrl_c().await.unwrap_or(()) }).await;
//! # Ok(())
//! # }
//! ```

mod announcements;
mod backlog;
mod config;
mod error;
mod producer;
mod refusals;
mod relay;
mod topic;

pub use announcements::Announcements;
pub use config::{DEFAULT_BROKERS, DEFAULT_TOPIC, RelayConfig};
pub use coupon_event::{Event, InvalidEvent};
pub use error::Error;
pub use relay::{Relay, Running};
pub use topic::ensure_topic;

// The workspace README's embedding example, which runs the gate and this relay, compiles as a
// doctest of this crate.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct WorkspaceReadme;
