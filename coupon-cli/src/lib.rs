//! What the binaries of coupon-gate (`coupon-http`, `coupon-sink`, `coupon-admin`) share at
//! start, so that each `main` stays a few lines: their settings from flags, the environment and
//! a settings file ([`parse`]), parsers for values their flags take, and the signal that stops
//! them.
//!
//! A binary's settings table is its clap `Parser` struct; every field with an `env` is a
//! setting, and its settings file key is the variable's name in lower case without `COUPON_`:
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
//!     addr: String,
//! }
//!
//! let file = std::env::temp_dir().join(format!("coupon-cli-doctest-{}.toml", std::process::id()));
//! std::fs::write(&file, "example_addr = \"0.0.0.0:9000\"\n")?;
//! let Parsed::Run(args) = coupon_cli::parse_from::<Args>(["example".as_ref(), "--config".as_ref(), file.as_os_str()])?
//! else {
//!     unreachable!("not asked to print")
//! };
//! assert_eq!(args.addr, "0.0.0.0:9000");
//!
//! std::fs::write(&file, "exampel_addr = \"0.0.0.0:9000\"\n")?;
//! let refused = coupon_cli::parse_from::<Args>(["example".as_ref(), "--config".as_ref(), file.as_os_str()]);
//! assert!(refused.unwrap_err().to_string().contains("unknown setting `exampel_addr`"));
//! # std::fs::remove_file(&file)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod parse;
mod settings;
mod signal;
mod table;

pub use parse::kafka_property;
pub use settings::{CONFIG_ENV, Parsed, check_settings_file, file_key, parse, parse_from};
pub use signal::shutdown_signal;
pub use table::{WRITE_README_ENV, check_readme, markdown_table};
