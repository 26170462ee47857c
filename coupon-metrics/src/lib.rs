//! `coupon-metrics`: Prometheus exposition for the coupon-gate binaries.
//!
//! The libraries (`coupon-gate`, `coupon-relay`, `coupon-sink`) record through the [`metrics`]
//! facade, which does nothing until a process installs a recorder: an embedder installs its own,
//! the binaries install this crate's with [`install`]. It sets every histogram's buckets (the
//! bounds dashboards and alerts are written against), publishes `coupon_build_info`, and keeps
//! the recorder's upkeep running. The names of the metrics are a contract; README lists them.
//!
//! One recorder per process: the first [`install`] wins, and later ones (an HTTP server started
//! twice in one test process) share it.

use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
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
/// broker was away.
pub const DELIVERY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Bounds of applications per admission script call (`coupon_gate_batch_size`): powers of two
/// up to the largest batch allowed.
pub const BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// How often the recorder folds recorded histogram samples into their buckets.
const UPKEEP: Duration = Duration::from_secs(5);

/// The recorder of this process, once installed, and the address it serves on, if any.
static INSTALLED: OnceLock<(PrometheusHandle, Option<SocketAddr>)> = OnceLock::new();
/// Makes concurrent first calls of [`install`] one.
static INSTALLING: Mutex<()> = Mutex::new(());

/// Installs the process's Prometheus recorder, with every histogram's buckets, and sets
/// `coupon_build_info{binary,version}` to 1; returns the handle that renders the text format.
///
/// With `listen`, the recorder also serves every scrape (`GET /metrics`, any path) on that
/// address, from a task on the current Tokio runtime. Must be called within a Tokio runtime.
///
/// # Errors
///
/// The address cannot be bound; another recorder is already installed (an embedder's); this
/// process already installed one that serves elsewhere.
pub fn install(
    binary: &'static str,
    version: &'static str,
    listen: Option<SocketAddr>,
) -> anyhow::Result<PrometheusHandle> {
    let _one = INSTALLING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((handle, served)) = INSTALLED.get() {
        anyhow::ensure!(
            listen.is_none() || listen == *served,
            "the metrics of this process are already served {}; one process serves them once",
            served.map_or_else(
                || "without a listener".to_owned(),
                |addr| format!("on {addr}")
            )
        );
        metrics::gauge!("coupon_build_info", "binary" => binary, "version" => version).set(1.0);
        return Ok(handle.clone());
    }
    let builder = buckets(PrometheusBuilder::new())?;
    let handle = match listen {
        Some(addr) => {
            let (recorder, exporter) = builder
                .with_http_listener(addr)
                .upkeep_timeout(UPKEEP)
                .build()
                .with_context(|| format!("cannot serve metrics on {addr}"))?;
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder)
                .context("another metrics recorder is already installed")?;
            tokio::spawn(exporter);
            handle
        }
        None => {
            let handle = builder
                .install_recorder()
                .context("another metrics recorder is already installed")?;
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
            handle
        }
    };
    metrics::gauge!("coupon_build_info", "binary" => binary, "version" => version).set(1.0);
    let _ = INSTALLED.set((handle.clone(), listen));
    Ok(handle)
}

/// Sets the buckets of every histogram the binaries record.
fn buckets(builder: PrometheusBuilder) -> anyhow::Result<PrometheusBuilder> {
    let histograms: [(&str, &[f64]); 4] = [
        ("coupon_apply_duration_seconds", LATENCY_BUCKETS),
        ("coupon_sink_batch_seconds", LATENCY_BUCKETS),
        ("coupon_relay_delivery_seconds", DELIVERY_BUCKETS),
        ("coupon_gate_batch_size", BATCH_SIZE_BUCKETS),
    ];
    histograms
        .into_iter()
        .try_fold(builder, |builder, (name, bounds)| {
            builder.set_buckets_for_metric(Matcher::Full(name.to_owned()), bounds)
        })
        .context("histogram buckets")
}
