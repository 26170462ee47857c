//! The flash-sale harness of coupon-gate: [`sale`] fires a crowd of users at a running
//! `coupon-http` and tallies the answers, [`admin`] makes the campaign and waits for the server,
//! [`check`] compares the answers with the coupon rows in MySQL, [`scrape`] reads the
//! binaries' Prometheus metrics, [`memory`] Redis's memory. The `coupon-load` binary and the end-to-end tests are built on
//! these; what a benchmark wrote to Redis is removed with `coupon_testkit::unlink_matching`.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use coupon_bench::{admin, check, sale};
//! use indicatif::ProgressBar;
//!
//! let server = admin::Server::new("http://127.0.0.1:8080")?;
//! server.create_campaign("launch", 100, Some("admin-token")).await?;
//! let target = sale::Target::resolve("http://127.0.0.1:8080", "launch").await?;
//! let tally = sale::run(&target, sale::Crowd::once_each(10_000).clicks(), 256, &ProgressBar::hidden()).await;
//! assert!(tally.count("success") <= 100);
//! # Ok(()) }
//! ```

pub mod admin;
pub mod check;
pub mod memory;
pub mod sale;
pub mod scrape;
pub mod scratch;
