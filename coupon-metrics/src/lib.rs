//! `coupon-metrics`: Prometheus exposition for the coupon-gate binaries.
//!
//! The libraries (`coupon-gate`, `coupon-relay`, `coupon-sink`) record through the [`metrics`]
//! facade, which does nothing until a process installs a recorder: an embedder installs its own,
//! the binaries install this crate's with [`install`]. It sets every histogram's buckets (the
//! bounds dashboards and alerts are written against), publishes `coupon_build_info`, and keeps
//! the recorder's upkeep running. The names of the metrics are a contract; README lists them.
//!
//! One recorder per process: the first [`install`] wins, and later ones (an HTTP server started
//! twice in one test process) share it. A process that installed a recorder of its own keeps
//! it: the metrics go there.

mod listener;

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

pub use metrics_exporter_prometheus::PrometheusHandle;

/// Bounds, in seconds, of answer latencies (`coupon_apply_duration_seconds`) and sink batches
/// (`coupon_sink_batch_seconds`): from half a millisecond (a sold-out answer from memory) to ten
/// seconds (the request timeout).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Bounds, in seconds, of the time from admission to the broker's confirmation
/// (`coupon_relay_delivery_seconds`): milliseconds when the relay keeps up, minutes when the
/// broker was away. Draws (`coupon_draw_duration_seconds`) use them too: milliseconds for a
/// small queue, seconds for a million.
pub const DELIVERY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Bounds of applications per admission script call (`coupon_gate_batch_size`): powers of two
/// up to the largest batch allowed.
pub const BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// The kind of a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (until the process restarts).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Samples counted into buckets.
    Histogram,
}

/// Every metric the binaries export, with its kind and help text: the contract dashboards and
/// alert rules are written against (README's metrics table lists the same).
pub const METRICS: &[(&str, Kind, &str)] = &[
    (
        "coupon_build_info",
        Kind::Gauge,
        "1, labelled with the binary and its version",
    ),
    (
        "coupon_applications_total",
        Kind::Counter,
        "Answers to applications, by campaign (gate-decided outcomes of existing campaigns only, else empty) and outcome",
    ),
    (
        "coupon_apply_duration_seconds",
        Kind::Histogram,
        "Time from an application's request to its answer",
    ),
    (
        "coupon_sold_out_memory_answers_total",
        Kind::Counter,
        "Sold-out answers given from memory, without Redis",
    ),
    (
        "coupon_rate_limited_total",
        Kind::Counter,
        "Requests refused by a rate limit, by scope: user, address, bad_token (an address past its budget of invalid tokens); the limits are shared by every coupon-http on one Redis",
    ),
    (
        "coupon_rate_limit_local_fallback",
        Kind::Gauge,
        "1 while this process cannot reach Redis for the shared rate limits and applies its own alone (N processes then allow N times the rate), 0 otherwise",
    ),
    (
        "coupon_token_verifications_total",
        Kind::Counter,
        "Bearer tokens not verified before, by result: valid, invalid (refused after verifying), skipped (refused by the per-address bad-token budget before verifying)",
    ),
    (
        "coupon_gate_batch_size",
        Kind::Histogram,
        "Applications decided per admission script call",
    ),
    (
        "coupon_http_connections_open",
        Kind::Gauge,
        "Connections being served",
    ),
    (
        "coupon_http_connections_refused_total",
        Kind::Counter,
        "Connections answered 429 because their address held its share",
    ),
    (
        "coupon_http_connections_closed_total",
        Kind::Counter,
        "Connections the server closed: evicted for a new client at the cap, or timed out",
    ),
    (
        "coupon_releases_total",
        Kind::Counter,
        "Coupons taken back through this process: their seqs went back to the pool",
    ),
    (
        "coupon_campaigns",
        Kind::Gauge,
        "Campaigns of the key prefix by state (scheduled, queueing, open, sold_out, closed, archived) at this process's last census, once a minute",
    ),
    (
        "coupon_archive_runs_total",
        Kind::Counter,
        "Archive runs of this process (the API call and COUPON_ARCHIVE_AFTER) by result: archived, already_archived, refused, unknown_campaign, error",
    ),
    (
        "coupon_archive_refusals_total",
        Kind::Counter,
        "Refused archive runs by reason: not_closed, outbox_pending, mysql_differs, failed_events, changed",
    ),
    (
        "coupon_queue_size",
        Kind::Gauge,
        "Users waiting in a draw campaign's pre-queue, by campaign (0 once drawn; set once a second)",
    ),
    (
        "coupon_draw_duration_seconds",
        Kind::Histogram,
        "Seconds from a draw's first part to its end, recorded by the process that ended it",
    ),
    (
        "coupon_outbox_backlog",
        Kind::Gauge,
        "Events of a campaign in its outbox not yet confirmed by Kafka, read by a relay or not",
    ),
    (
        "coupon_outbox_oldest_seconds",
        Kind::Gauge,
        "How long the oldest event still in a campaign's outbox has waited; 0 when none",
    ),
    (
        "coupon_relay_delivered_total",
        Kind::Counter,
        "Outbox events the broker confirmed",
    ),
    (
        "coupon_relay_failures_total",
        Kind::Counter,
        "Relay failures: records the broker did not confirm (delivery), rounds that could not read or acknowledge the outbox (redis)",
    ),
    (
        "coupon_relay_delivery_seconds",
        Kind::Histogram,
        "Time from admission to the broker's confirmation",
    ),
    (
        "coupon_relay_producer_replacements_total",
        Kind::Counter,
        "Kafka producers replaced after the broker refused them",
    ),
    (
        "coupon_relay_bound_elsewhere",
        Kind::Gauge,
        "1 while the key prefix's outboxes are bound to another topic, so this relay delivers nothing",
    ),
    (
        "coupon_sink_rows_written_total",
        Kind::Counter,
        "Coupon rows inserted into MySQL",
    ),
    (
        "coupon_sink_redeliveries_total",
        Kind::Counter,
        "Admissions whose row was already in MySQL (a redelivery)",
    ),
    (
        "coupon_sink_releases_total",
        Kind::Counter,
        "Release events applied",
    ),
    (
        "coupon_sink_failed_events_total",
        Kind::Counter,
        "Events recorded in failed_event, by reason: malformed, conflict, refused",
    ),
    (
        "coupon_sink_batch_seconds",
        Kind::Histogram,
        "Time from a batch's write to its offsets' commit, retries included",
    ),
    (
        "coupon_sink_consumer_lag",
        Kind::Gauge,
        "Messages of an assigned partition after the sink's committed offset",
    ),
    (
        "coupon_sink_consumer_replacements_total",
        Kind::Counter,
        "Kafka consumers replaced after librdkafka declared them fatally failed",
    ),
];

/// How often the recorder folds recorded histogram samples into their buckets.
const UPKEEP: Duration = Duration::from_secs(5);

/// The recorder this process installed, and the address it serves on, if any; held while
/// [`install`] runs, so that concurrent first calls install once.
static INSTALLED: Mutex<Option<(PrometheusHandle, Option<SocketAddr>)>> = Mutex::new(None);

/// Installs the process's Prometheus recorder, with every histogram's buckets, and sets
/// `coupon_build_info{binary,version}` to 1; returns the handle that renders the text format.
///
/// With `listen`, the exposition is also served on that address at `GET /metrics` (and `HEAD`;
/// another path is answered 404, another method 405, each with a JSON body), from a task on the
/// current Tokio runtime. Must be called within a Tokio runtime.
///
/// `None` when the process already has a recorder of its own (an embedder's): the metrics go to
/// it, and nothing is served here; a warning says so.
///
/// # Errors
///
/// The address cannot be bound; this process already installed one that serves elsewhere.
pub fn install(
    binary: &'static str,
    version: &'static str,
    listen: Option<SocketAddr>,
) -> anyhow::Result<Option<PrometheusHandle>> {
    let mut installed = INSTALLED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((handle, served)) = installed.as_ref() {
        anyhow::ensure!(
            listen.is_none() || listen == *served,
            "the metrics of this process are already served {}; one process serves them once",
            served.map_or_else(
                || "without a listener".to_owned(),
                |addr| format!("on {addr}")
            )
        );
        metrics::gauge!("coupon_build_info", "binary" => binary, "version" => version).set(1.0);
        return Ok(Some(handle.clone()));
    }
    let listener = listen.map(listener::bind).transpose()?;
    let recorder = buckets(PrometheusBuilder::new())?.build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        tracing::warn!(
            "this process has a metrics recorder of its own: the metrics go to it, and are not served here"
        );
        return Ok(None);
    }
    if let Some(listener) = listener {
        // Its connections are served on the runtime, beside the process's own work.
        drop(tokio::spawn(listener::serve(listener, handle.clone())));
    }
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP);
                upkeep.run_upkeep();
            }
        })
        .context("cannot start the metrics upkeep thread")?;
    describe();
    metrics::gauge!("coupon_build_info", "binary" => binary, "version" => version).set(1.0);
    *installed = Some((handle.clone(), listen));
    Ok(Some(handle))
}

/// Gives every metric of [`METRICS`] its help text.
fn describe() {
    for &(name, kind, help) in METRICS {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
}

/// Sets the buckets of every histogram the binaries record.
fn buckets(builder: PrometheusBuilder) -> anyhow::Result<PrometheusBuilder> {
    let histograms: [(&str, &[f64]); 5] = [
        ("coupon_apply_duration_seconds", LATENCY_BUCKETS),
        ("coupon_sink_batch_seconds", LATENCY_BUCKETS),
        ("coupon_relay_delivery_seconds", DELIVERY_BUCKETS),
        ("coupon_draw_duration_seconds", DELIVERY_BUCKETS),
        ("coupon_gate_batch_size", BATCH_SIZE_BUCKETS),
    ];
    histograms
        .into_iter()
        .try_fold(builder, |builder, (name, bounds)| {
            builder.set_buckets_for_metric(Matcher::Full(name.to_owned()), bounds)
        })
        .context("histogram buckets")
}
