//! `COUPON_SINK_METRICS_ADDR`: an address that cannot be bound, or a value that is no address,
//! stops the sink at start with a message naming the variable. (What the sink's metrics count
//! is proven end to end in `benches/tests/metrics.rs`.)

mod support;

use std::process::Command;

use support::{ScratchDb, brokers};

/// Runs the sink with `COUPON_SINK_METRICS_ADDR=value` until it stops by itself; its exit
/// success and standard error.
fn run_with(db: &ScratchDb, value: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_coupon-sink"))
        .env("DATABASE_URL", db.url())
        .env("KAFKA_BROKERS", brokers())
        .env("COUPON_SINK_METRICS_ADDR", value)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("coupon-sink binary");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_metrics_address_taken_or_invalid_stops_the_start_with_a_message() {
    let db = ScratchDb::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let taken = taken.local_addr().expect("its address").to_string();

    let (ok, stderr) = run_with(&db, &taken);
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "COUPON_SINK_METRICS_ADDR={taken} cannot be served"
        )),
        "{stderr}"
    );

    let (ok, stderr) = run_with(&db, "everywhere");
    assert!(!ok);
    assert!(stderr.contains("neither host:port"), "{stderr}");
}
