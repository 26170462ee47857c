//! Exact first-come-first-served admission, decided in one atomic Redis script.
//!
//! A [`Gate`] hands out exactly `quota` coupons of a [`Campaign`] to the first distinct users
//! who apply, however many application nodes share the campaign and however hard they are hit.
//! One Lua script checks, in one atomic step, that the campaign exists and is inside its
//! window, that the user holds no coupon yet and that one is left; only then does it admit the
//! user, take the next slot (`seq`, from 1 to the quota) and append the admission to the
//! campaign's outbox stream. A relay reads the outbox and delivers each admission at least once
//! to wherever coupons are kept, so no admission the gate answered can be lost.
//!
//! Rejections are ordinary [`Outcome`]s (`Duplicate`, `SoldOut`, `NotOpen`, `Closed`,
//! `UnknownCampaign`), and none of them writes to Redis: a sold-out campaign under a flash
//! crowd costs Redis reads only. [`Error`] is kept for Redis that cannot be reached or answers
//! something unexpected.
//!
//! ```
//! use std::num::NonZeroU32;
//! use coupon_gate::{Campaign, CampaignId, Create, Gate, Outcome, UserId};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
//! let client = redis::Client::open(url)?;
//! let conn = client.get_multiplexed_async_connection().await?;
//! # let conn_for_doc = conn.clone();
//! # let run = std::process::id();
//! # let gate = Gate::with_key_prefix(conn_for_doc, format!("doctest-{run}"))?;
//! # /*
//! let gate = Gate::new(conn);
//! # */
//!
//! let id = CampaignId::new("spring-sale")?;
//! let quota = NonZeroU32::new(2).expect("quota is not zero");
//! assert_eq!(gate.create(&Campaign::new(id.clone(), quota)).await?, Create::Created);
//!
//! // Opaque ids, as identity providers name their subjects, or numbers.
//! let alice = UserId::new("auth0|5f3a9c")?;
//! let (bob, carol) = (UserId::from_number(42)?, UserId::new("carol@example.com")?);
//! assert_eq!(gate.apply(&id, &alice).await?, Outcome::Admitted { seq: 1 });
//! assert_eq!(gate.apply(&id, &alice).await?, Outcome::Duplicate { seq: 1 });
//! assert_eq!(gate.apply(&id, &bob).await?, Outcome::Admitted { seq: 2 });
//! assert_eq!(gate.apply(&id, &carol).await?, Outcome::SoldOut);
//!
//! let status = gate.status(&id).await?.expect("the campaign exists");
//! assert_eq!((status.issued, status.remaining()), (2, 0));
//! # let mut conn = conn;
//! # let keys = ["meta", "users:0", "free", "outbox"].map(|k| format!("doctest-{run}:{{spring-sale}}:{k}"));
//! # redis::cmd("DEL").arg(&keys).arg(format!("doctest-{run}:campaigns")).exec_async(&mut conn).await?;
//! # Ok(())
//! # }
//! ```
//!
//! A campaign may also open with a draw ([`Campaign::with_draw`]): a pre-queue answered
//! [`Outcome::Queued`], then at `opens_at` a draw ([`Gate::draw`]) that gives the coupons to
//! queued users chosen uniformly at random, each admitted exactly as a first-come admission.
//!
//! The gate takes any async connection; [`RedisTarget`] connects to one server or to a Redis
//! Cluster alike, over TLS where the addresses are `rediss://` ([`RedisTarget::with_tls`] for a
//! private CA or a client certificate; every key of a campaign shares one hash tag, so its
//! scripts run on the master of its slot), and [`Gate::with_replica_acks`] answers admissions only once replicas hold
//! them, so that a failover cannot take one back.

mod batch;
mod campaign;
mod connection;
mod error;
mod gate;
mod keys;
mod outbox;
mod outcome;
mod recovery;
mod script;
mod shared;
mod tickets;

pub use batch::{BatchConfig, Batcher};
pub use campaign::{Campaign, CampaignStatus, InvalidInput, Listed, Opening, Stage};
pub use connection::{RedisConnection, RedisTarget};
pub use coupon_event::{CampaignId, EventKind, InvalidId, UserId};
pub use error::Error;
pub use gate::{Archive, DRAW_PART, DRAW_PART_TIME, Gate, Seal, Tombstone, check_key_prefix};
pub use outbox::{Destination, Outbox, OutboxRecord};
pub use outcome::{Close, Create, Draw, Outcome, Release};
pub use recovery::{CampaignState, InvalidState, Recovery};

/// The Redis of a local deployment, the default of every binary.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The prefix of every Redis key of a [`Gate::new`]; [`Gate::with_key_prefix`] chooses another.
pub const DEFAULT_KEY_PREFIX: &str = "coupon";

/// The consumer group through which relays read the campaigns' outbox streams.
pub const OUTBOX_GROUP: &str = "relay";
