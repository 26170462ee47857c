//! What the binaries of coupon-gate (`coupon-http`, `coupon-sink`, `coupon-admin`) share at
//! start, so that each `main` stays a few lines: their settings from flags, the environment and
//! a settings file ([`parse`]), parsers for values their flags take, and the signal that stops
//! them.

mod parse;
mod settings;
mod signal;
mod table;

pub use parse::kafka_property;
pub use settings::{CONFIG_ENV, Parsed, file_key, parse, parse_from};
pub use signal::shutdown_signal;
pub use table::{WRITE_README_ENV, check_readme, markdown_table};
