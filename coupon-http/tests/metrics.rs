//! Where `/metrics` is served: on the API's port by default; only on `COUPON_METRICS_ADDR`
//! when that is set; nowhere with `COUPON_METRICS=off`. Each case is the real binary, as the
//! recorder is one per process. (What the metrics count is proven end to end in
//! `benches/tests/metrics.rs`.)

mod support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use coupon_testkit::{Process, Scratch, brokers, eventually, free_port, redis_url};
use hyper::{Method, StatusCode};
use support::call;

/// The binary on a free port with `env`, once it is ready; and its address.
async fn start(scratch: &Scratch, env: &[(&str, String)]) -> (Process, SocketAddr) {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let topic = format!("t_{}", scratch.prefix.replace('-', "_"));
    let process = Process(
        Command::new(env!("CARGO_BIN_EXE_coupon-http"))
            .env("COUPON_HTTP_ADDR", addr.to_string())
            .env("REDIS_URL", redis_url())
            .env("COUPON_KEY_PREFIX", &scratch.prefix)
            .env("KAFKA_BROKERS", brokers())
            .env("COUPON_TOPIC", topic)
            .env("COUPON_IDENTITY", "body")
            .envs(env.iter().map(|(k, v)| (k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("coupon-http binary"),
    );
    eventually(
        Duration::from_secs(30),
        "coupon-http to be ready",
        || async {
            tokio::net::TcpStream::connect(addr).await.is_ok()
                && call(addr, Method::GET, "/ready", &[], "").await.0 == StatusCode::OK
        },
    )
    .await;
    (process, addr)
}

/// `GET /metrics` at `addr`: the status and the text.
async fn metrics(addr: SocketAddr) -> (StatusCode, String) {
    let answer = support::raw_call(addr, Method::GET, "/metrics", &[], "").await;
    let text = match &answer.body {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    (answer.status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_on_the_api_port_on_their_own_address_or_nowhere() {
    let scratch = Scratch::new(&redis_url());

    // The default: on the API's port, with the build info and the help of every metric.
    let (_default, addr) = start(&scratch, &[]).await;
    let (code, text) = metrics(addr).await;
    assert_eq!(code, StatusCode::OK, "{text}");
    assert!(
        text.contains(&format!(
            "coupon_build_info{{binary=\"coupon-http\",version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(text.contains("# HELP coupon_applications_total "), "{text}");

    // COUPON_METRICS_ADDR: there, and no longer on the API's port.
    let own: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let (_moved, addr) = start(&scratch, &[("COUPON_METRICS_ADDR", own.to_string())]).await;
    let (code, text) = metrics(addr).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{text}");
    assert!(text.contains("COUPON_METRICS_ADDR"), "{text}");
    let (code, text) = metrics(own).await;
    assert_eq!(code, StatusCode::OK, "{text}");
    assert!(text.contains("coupon_build_info"), "{text}");

    // COUPON_METRICS=off: nowhere.
    let (_off, addr) = start(&scratch, &[("COUPON_METRICS", "off".to_owned())]).await;
    let (code, text) = metrics(addr).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{text}");
    assert!(text.contains("COUPON_METRICS=off"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_address_that_cannot_be_bound_stops_the_start_with_a_message() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let taken = taken.local_addr().expect("its address");
    let scratch = Scratch::new(&redis_url());
    let out = Command::new(env!("CARGO_BIN_EXE_coupon-http"))
        .env("COUPON_HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("REDIS_URL", redis_url())
        .env("COUPON_KEY_PREFIX", &scratch.prefix)
        .env("KAFKA_BROKERS", brokers())
        .env("COUPON_IDENTITY", "body")
        .env("COUPON_METRICS_ADDR", taken.to_string())
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("coupon-http binary");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("COUPON_METRICS_ADDR"), "{stderr}");
    assert!(stderr.contains(&taken.to_string()), "{stderr}");
}
