//! `coupon-sink`: consumes the admissions topic and makes each admission exactly one coupon row
//! in MySQL/MariaDB.
//!
//! [`db::connect`] creates the database and applies the migrations; [`consumer::run`] consumes
//! until shutdown; [`replay::replay`] writes failed events again once their cause is fixed.
//! [`run`] and [`replay_failed`] are these as the process runs them, from a [`Config`] (which is also
//! the settings table); the binary (`src/bin/coupon-sink.rs`) only parses its settings, sets up
//! logging and metrics, and calls them. What a message
//! on the topic means is [`coupon_event::Event`], the definition the relay writes with.

mod config;
pub mod consumer;
pub mod db;
pub mod replay;
mod service;

pub use config::Config;
pub use service::{replay_failed, run};
