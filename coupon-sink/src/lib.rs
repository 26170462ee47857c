//! `coupon-sink`: consumes the admissions topic and makes each admission exactly one coupon row
//! in MySQL/MariaDB.
//!
//! [`db::connect`] creates the database and applies the migrations; [`consumer::run`] consumes
//! until shutdown; [`replay::replay`] writes failed events again once their cause is fixed. The
//! binary (`src/bin/coupon-sink.rs`) only reads configuration and calls these. What a message
//! on the topic means is [`coupon_event::Event`], the definition the relay writes with.

mod config;
pub mod consumer;
pub mod db;
mod patience;
pub mod replay;

pub use config::Config;
