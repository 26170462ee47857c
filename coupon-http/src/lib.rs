//! `coupon-http`: the HTTP front of the coupon gate, and the relay from the gate's outbox to
//! Kafka.
//!
//! [`serve`] runs the whole process: [`server::run`] serves the API on a listener until a shutdown future resolves; the
//! [`relay`] moves admissions from the campaigns' Redis outbox streams to a Kafka topic. The
//! binary (`src/bin/coupon-http.rs`) only reads configuration and wires the two together, so
//! tests run the same code on port 0.

pub mod api;
mod app;
mod body;
pub mod config;
mod poll_again;
pub mod relay;
mod response;
pub mod server;
pub mod sold_out;
mod watchdog;

pub use app::serve;
pub use config::{Config, RelayConfig};
pub use server::{AppState, run};
