//! `coupon-http`: the HTTP front of the coupon gate, with the relay from the gate's outbox to
//! Kafka running beside it.
//!
//! [`serve`] runs the whole process on a listener (made by [`listen`], which gives a crowd room to
//! queue) until a shutdown future resolves: the API
//! (routing and validation in `api`, the accept loop in `server`, the state the handlers share
//! in `state`) and a [`coupon_relay::Relay`] on a thread of its own. The binary
//! (`src/bin/coupon-http.rs`) only reads a [`Config`] from flags and the environment, so tests
//! run the same code on port 0.

mod api;
mod app;
mod archiving;
mod body;
mod config;
mod connections;
mod draws;
mod failure;
mod identity;
mod limits;
mod poll_again;
mod response;
mod server;
mod sold_out;
mod state;
mod stream;
mod subscription;
mod telemetry;
mod watchdog;

pub use app::serve;
pub use config::{Config, Identity, JwtConfig, JwtKey};
pub use coupon_relay::RelayConfig;
pub use ipnet::IpNet;
pub use limits::RateLimit;
pub use server::{LISTEN_BACKLOG, listen};
