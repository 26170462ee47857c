//! `coupon-load --rate`: a paced sale against the real pipeline sends click `i` no earlier than
//! `i / rate` seconds after its start, and is answered and stored like any other sale.

mod support;

use std::time::Duration;

use coupon_bench::check;
use coupon_bench::sale::{self, Target};
use indicatif::ProgressBar;
use support::{Mode, Pipeline, Setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_sale_takes_the_time_its_rate_gives_and_stays_exact() {
    let pipeline = Pipeline::start_with(Setup {
        servers: 1,
        mode: Mode::Body,
        ..Setup::default()
    })
    .await;
    let campaign = pipeline.campaign("paced", 30).await;
    let target =
        Target::local(pipeline.http[0].addr, &campaign).with_identity(pipeline.identity.clone());
    let clicks: Vec<u64> = (1..=40).collect();

    // 40 clicks at 50 a second over 8 connections: the last is due 39 / 50 s after the start.
    // Unpaced, 8 connections answer 40 clicks in a few milliseconds.
    let tally = sale::run_at_rate(&target, clicks, 8, Some(50.0), &ProgressBar::hidden()).await;

    assert!(
        tally.elapsed >= Duration::from_millis(780),
        "40 clicks at 50/s ended after {:?}",
        tally.elapsed
    );
    assert_eq!(tally.count("success"), 30, "{:?}", tally.answers);
    assert_eq!(tally.count("sold_out"), 10, "{:?}", tally.answers);
    let stored = pipeline.wait_for_rows(&campaign, 30).await;
    let verdict = check::verdict(30, 40, &tally, &stored);
    assert!(verdict.passed(), "{verdict}");
}
