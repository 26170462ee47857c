//! What the binaries of coupon-gate (`coupon-http`, `coupon-sink`, `coupon-admin`) share at
//! start, so that each `main` stays a few lines: parsers for values their flags take, and the
//! signal that stops them.

mod parse;
mod signal;

pub use parse::kafka_property;
pub use signal::shutdown_signal;
