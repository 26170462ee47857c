//! What the binaries of coupon-gate (`coupon-http`, `coupon-sink`, `coupon-admin`, and the
//! benches' tools) share at start, so that each `main` stays a few lines: their settings from
//! flags, the environment and a settings file ([`parse`]), the settings several of them read,
//! each declared once ([`Redis`], [`KeyPrefix`], [`Kafka`], [`Topic`], [`Database`]) with
//! what TLS to Redis and MySQL reads from them ([`Redis::tls`], [`Database::opts`]), parsers
//! for values their flags take, the checks their tests make of their settings tables
//! ([`check_settings`]), logging ([`init_logging`]), waiting for a dependency ([`patiently`]),
//! redaction of secrets ([`redact`]) and the signal that stops them.
//!
//! A binary's settings table is its clap `Parser` struct; every field with an `env` is a
//! setting, and its settings file key is its flag's name with `_` for `-`, which is also the
//! variable's name in lower case without `COUPON_`:
//!
//! ```
//! use clap::Parser;
//! use coupon_cli::Parsed;
//!
//! /// The settings of a binary.
//! #[derive(Parser, Debug)]
//! #[command(name = "example")]
//! struct Args {
//!     /// Listen address.
//!     #[arg(long, env = "COUPON_EXAMPLE_ADDR", default_value = "127.0.0.1:8080")]
//!     example_addr: String,
//! }
//!
//! let file = std::env::temp_dir().join(format!("coupon-cli-doctest-{}.toml", std::process::id()));
//! std::fs::write(&file, "example_addr = \"0.0.0.0:9000\"\n")?;
//! let Parsed::Run(args) = coupon_cli::parse_from::<Args>(["example".as_ref(), "--config".as_ref(), file.as_os_str()])?
//! else {
//!     unreachable!("not asked to print")
//! };
//! assert_eq!(args.example_addr, "0.0.0.0:9000");
//! coupon_cli::check_names(&<Args as clap::CommandFactory>::command())?;
//!
//! std::fs::write(&file, "exampel_addr = \"0.0.0.0:9000\"\n")?;
//! let refused = coupon_cli::parse_from::<Args>(["example".as_ref(), "--config".as_ref(), file.as_os_str()]);
//! assert!(refused.unwrap_err().to_string().contains("unknown setting `exampel_addr`"));
//! # std::fs::remove_file(&file)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod declared;
mod groups;
mod logging;
mod parse;
mod patience;
mod secrets;
mod settings;
mod signal;
mod table;
mod tls;

pub use declared::{CONFIG_ENV, file_key};
pub use groups::{
    DEFAULT_BROKERS, DEFAULT_DATABASE_URL, DEFAULT_KEY_PREFIX, DEFAULT_REDIS_URL, DEFAULT_TOPIC,
    Database, Kafka, KeyPrefix, Redis, SslMode, Topic,
};
pub use logging::{LogTo, init_logging};
pub use parse::kafka_property;
pub use patience::{Waiting, patiently};
pub use settings::{Parsed, check_settings_file, defaults, parse, parse_from, redact};
pub use signal::shutdown_signal;
pub use table::{WRITE_README_ENV, check_names, check_readme, check_settings, markdown_table};
pub use tls::RedisTls;
