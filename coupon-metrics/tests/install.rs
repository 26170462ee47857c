//! `install`: every histogram with the buckets the dashboards are written against, help for every
//! metric, the build info; a second call shares the first recorder, and one asking for another
//! listener is refused. (A process of its own, as the recorder is global.)

use std::net::SocketAddr;

use coupon_metrics::{BATCH_SIZE_BUCKETS, DELIVERY_BUCKETS, Kind, LATENCY_BUCKETS, METRICS};

#[tokio::test]
async fn the_recorder_has_every_bucket_and_help_and_is_installed_once() {
    let handle = coupon_metrics::install("coupon-sink", "1.2.3", None)
        .expect("install")
        .expect("no other recorder in this process");
    for (name, buckets) in [
        ("coupon_apply_duration_seconds", LATENCY_BUCKETS),
        ("coupon_sink_batch_seconds", LATENCY_BUCKETS),
        ("coupon_relay_delivery_seconds", DELIVERY_BUCKETS),
        ("coupon_draw_duration_seconds", DELIVERY_BUCKETS),
        ("coupon_gate_batch_size", BATCH_SIZE_BUCKETS),
    ] {
        metrics::histogram!(name).record(buckets[0]);
    }
    for &(name, kind, _) in METRICS {
        match kind {
            Kind::Counter => metrics::counter!(name).increment(1),
            Kind::Gauge => metrics::gauge!(name).set(1.0),
            Kind::Histogram => {}
        }
    }
    let text = handle.render();
    assert!(
        text.contains("coupon_build_info{binary=\"coupon-sink\",version=\"1.2.3\"} 1"),
        "{text}"
    );
    for &(name, kind, help) in METRICS {
        assert!(
            text.contains(&format!("# HELP {name} {help}")),
            "{name}: {text}"
        );
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        assert!(
            text.contains(&format!("# TYPE {name} {kind}")),
            "{name}: {text}"
        );
    }
    // Every bound of every histogram, and no summary quantiles.
    for (name, buckets) in [
        ("coupon_apply_duration_seconds", LATENCY_BUCKETS),
        ("coupon_relay_delivery_seconds", DELIVERY_BUCKETS),
        ("coupon_draw_duration_seconds", DELIVERY_BUCKETS),
        ("coupon_gate_batch_size", BATCH_SIZE_BUCKETS),
    ] {
        for bound in buckets {
            assert!(
                text.contains(&format!("{name}_bucket{{le=\"{bound}\"}}")),
                "{name} {bound}: {text}"
            );
        }
    }
    assert!(!text.contains("quantile="), "{text}");

    let again = coupon_metrics::install("coupon-sink", "1.2.3", None)
        .expect("a second install shares the first")
        .expect("the same recorder");
    assert!(again.render().contains("coupon_build_info"));
    let elsewhere: SocketAddr = ([127, 0, 0, 1], 1).into();
    let err = coupon_metrics::install("coupon-sink", "1.2.3", Some(elsewhere))
        .expect_err("another listener in the same process");
    assert!(err.to_string().contains("already served"), "{err}");
}
