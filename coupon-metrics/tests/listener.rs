//! The metrics listener answers `GET /metrics` (and `HEAD`) with the exposition, another path
//! 404 and another method on `/metrics` 405, each refusal in JSON. (A process of its own, as the
//! recorder is global.)

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The whole answer to `request`, sent on a connection of its own that the request closes.
async fn ask(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    String::from_utf8(answer).expect("text")
}

/// The JSON body of an answer.
fn body_of(answer: &str) -> serde_json::Value {
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {answer}"))
}

fn request(method: &str, path: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
}

#[tokio::test]
async fn only_get_metrics_is_answered_with_the_exposition() {
    let addr: SocketAddr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        probe.local_addr().expect("its address")
    };
    coupon_metrics::install("coupon-sink", "1.2.3", Some(addr))
        .expect("install")
        .expect("no other recorder in this process");

    let scrape = ask(addr, &request("GET", "/metrics")).await;
    assert!(scrape.starts_with("HTTP/1.1 200 "), "{scrape}");
    assert!(
        scrape.contains("content-type: text/plain; version=0.0.4"),
        "{scrape}"
    );
    assert!(scrape.contains("coupon_build_info{binary=\"coupon-sink\",version=\"1.2.3\"} 1"));

    let head = ask(addr, &request("HEAD", "/metrics")).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "no body: {head}");

    for path in ["/", "/metrics/", "/metricsx", "/api/coupons/apply"] {
        let answer = ask(addr, &request("GET", path)).await;
        assert!(answer.starts_with("HTTP/1.1 404 "), "{path}: {answer}");
        assert!(
            answer.contains("content-type: application/json"),
            "{answer}"
        );
        let body = body_of(&answer);
        assert_eq!(body["status"], "error", "{answer}");
        assert!(body["message"].as_str().unwrap().contains(path), "{answer}");
    }
    for method in ["POST", "PUT", "DELETE"] {
        let answer = ask(addr, &request(method, "/metrics")).await;
        assert!(answer.starts_with("HTTP/1.1 405 "), "{method}: {answer}");
        assert!(answer.contains("allow: GET, HEAD"), "{answer}");
        assert_eq!(body_of(&answer)["status"], "error", "{answer}");
    }
}
