//! Process lifecycle: graceful shutdown finishes what is in flight, and the connection cap
//! holds further clients back until a connection closes.

mod support;

use std::time::Duration;

use hyper::{Method, StatusCode};
use support::{Options, TestApp, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `Expect: 100-continue` makes the server say when its handler starts reading the body: from
/// then on the request is provably in flight.
const HEAD: &str = "POST /api/coupons/apply HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 12\r\nexpect: 100-continue\r\n\r\n";

async fn read_answer(stream: &mut TcpStream) -> String {
    let mut answer = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_a_request_in_flight_and_refuses_new_connections() {
    let app = TestApp::start(Options::default()).await;
    let addr = app.addr;

    // A request the handler is reading when shutdown begins, its body not yet sent.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(HEAD.as_bytes()).await.unwrap();
    let continue_ = read_answer(&mut stream).await;
    assert!(continue_.starts_with("HTTP/1.1 100"), "{continue_}");
    let stopped = tokio::spawn(app.stop());
    eventually(Duration::from_secs(10), "the listener to close", || async {
        TcpStream::connect(addr).await.is_err()
    })
    .await;

    stream.write_all(br#"{"userId":7}"#).await.unwrap();
    let answer = read_answer(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains(r#""status":"success""#) && answer.contains(r#""seq":1"#),
        "{answer}"
    );
    stopped
        .await
        .unwrap()
        .expect("serve returns Ok after a graceful shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let app = TestApp::start(Options {
        max_connections: 2,
        ..Options::default()
    })
    .await;
    // `start` waited for /ready over a connection that has closed since; hold both slots now.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        stream
            .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(read_answer(&mut stream).await.starts_with("HTTP/1.1 200"));
        held.push(stream); // kept alive
    }

    let waiting = tokio::spawn(support::call(app.addr, Method::GET, "/health", &[], ""));
    // An observation window for something that must not happen; it cannot be waited for.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "a third connection was served while two held the cap"
    );

    drop(held.pop());
    let (code, _) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("served once a slot freed")
        .unwrap();
    assert_eq!(code, StatusCode::OK);
}
