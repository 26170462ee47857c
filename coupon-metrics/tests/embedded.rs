//! A process with a recorder of its own keeps it: `install` leaves it in place and serves
//! nothing, and the metrics go to the process's recorder. (A process of its own, as the recorder
//! is global.)

use metrics_exporter_prometheus::PrometheusBuilder;

#[test]
fn an_embedders_recorder_is_kept_and_receives_the_metrics() {
    let own = PrometheusBuilder::new().build_recorder();
    let rendered = own.handle();
    metrics::set_global_recorder(own).expect("the first recorder of this process");

    let installed = coupon_metrics::install("coupon-http", "0.0.0", None).expect("install");
    assert!(installed.is_none(), "nothing of its own to serve");

    metrics::counter!("coupon_relay_delivered_total").increment(3);
    let text = rendered.render();
    assert!(text.contains("coupon_relay_delivered_total 3"), "{text}");
}
