//! Operator tools for one campaign, across every store it lives in.
//!
//! [`sources`] reads what each store says: the gate's holders and outbox in Redis, the events on
//! the topic, the coupon rows and unresolved failed events in MySQL. [`audit`] compares them and
//! names every discrepancy; [`rebuild`] works out the gate state those sources imply and writes
//! it back into Redis, for when Redis lost its data. [`commands`] runs both as the operator asks,
//! over the stores a [`Config`] (the binary's settings table) names; the `coupon-admin` binary
//! only parses its command line and calls them.

pub mod archive;
pub mod audit;
pub mod commands;
mod config;
pub mod rebuild;
pub mod sources;

pub use config::Config;
