//! Process lifecycle: start-up refusals, graceful shutdown finishing what is in flight, and the
//! connection cap holding further clients back until a connection closes.

mod support;

use std::time::Duration;

use coupon_http::Config;
use hyper::{Method, StatusCode};
use support::{TestApp, config, eventually};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
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
    let app = TestApp::start(config()).await;
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

/// Opens a connection and has one request answered on it, so that it is idle and kept alive.
async fn idle_connection(app: &TestApp) -> TcpStream {
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_answer(&mut stream).await.starts_with("HTTP/1.1 200"));
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_the_longest_idle_connection_gives_way_to_a_new_client() {
    let app = TestApp::start(Config {
        max_connections: 2,
        ..config()
    })
    .await;
    // `start` waited for /ready over a connection that has closed since; fill both slots.
    let mut oldest = idle_connection(&app).await;
    let _newer = idle_connection(&app).await;

    let (code, _) = tokio::time::timeout(
        Duration::from_secs(10),
        support::call(app.addr, Method::GET, "/health", &[], ""),
    )
    .await
    .expect("a new client is served at the cap");
    assert_eq!(code, StatusCode::OK);
    until_closed(&mut oldest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_new_clients_wait_while_every_connection_is_busy() {
    let app = TestApp::start(Config {
        max_connections: 2,
        ..config()
    })
    .await;
    // Two connections in the middle of a request head: busy, not idle. Each has had an answer
    // first, so the server is serving it (and reading what arrives on it) before the third
    // client comes.
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut stream = idle_connection(&app).await;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        busy.push(stream);
    }

    let waiting = tokio::spawn(support::call(app.addr, Method::GET, "/health", &[], ""));
    // An observation window for something that must not happen; it cannot be waited for.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "a third connection was served while two busy ones held the cap"
    );

    // One request completes; its connection is idle from then on, and gives way.
    busy[0].write_all(b"\r\n").await.unwrap();
    assert!(read_answer(&mut busy[0]).await.starts_with("HTTP/1.1 200"));
    let (code, _) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("served once a connection fell idle")
        .unwrap();
    assert_eq!(code, StatusCode::OK);
}

/// Reads until the server closes `stream` and says how long that took; panics after 10 s.
async fn until_closed(stream: &mut (impl AsyncRead + Unpin)) -> Duration {
    let start = std::time::Instant::now();
    let mut buf = vec![0; 4096];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("the server closes the connection");
        match read {
            Ok(0) | Err(_) => return start.elapsed(),
            Ok(_) => {}
        }
    }
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_silent_and_idle_clients_are_disconnected_busy_ones_are_not() {
    let limit = Duration::from_millis(400);
    let app = TestApp::start(Config {
        request_timeout: limit,
        redis_timeout: Duration::from_millis(200),
        ..config()
    })
    .await;

    // Connects and sends nothing.
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    // Sends a head one byte every 50 ms, never finishing it.
    let mut dribbling = TcpStream::connect(app.addr).await.unwrap();
    let (mut dribble_read, mut dribble_write) = dribbling.split();
    let dribble = async {
        dribble_write
            .write_all(b"GET /health HTTP/1.1\r\nx-slow: ")
            .await
            .unwrap();
        while dribble_write.write_all(b"a").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    // Sends a head and 5 of its 12 body bytes.
    let mut stalled = TcpStream::connect(app.addr).await.unwrap();
    stalled
        .write_all(b"POST /api/coupons/apply HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n{\"use")
        .await
        .unwrap();
    // Asks once, then stays idle on the keep-alive connection.
    let mut idle = TcpStream::connect(app.addr).await.unwrap();
    idle.write_all(HEALTH).await.unwrap();
    assert!(read_answer(&mut idle).await.starts_with("HTTP/1.1 200"));

    let (silent_closed, dribbling_closed, stalled_closed, idle_closed) = tokio::join!(
        until_closed(&mut silent),
        async {
            tokio::select! {
                closed = until_closed(&mut dribble_read) => closed,
                () = dribble => unreachable!("the dribble ends only when the server closes"),
            }
        },
        until_closed(&mut stalled),
        until_closed(&mut idle),
    );
    for (who, after) in [
        ("silent", silent_closed),
        ("dribbling", dribbling_closed),
        ("stalled", stalled_closed),
        ("idle", idle_closed),
    ] {
        assert!(after >= limit / 2, "{who} closed after only {after:?}");
    }

    // A client that keeps asking keeps its connection, for three times the limit.
    let mut busy = TcpStream::connect(app.addr).await.unwrap();
    for _ in 0..12 {
        busy.write_all(HEALTH).await.unwrap();
        let answer = read_answer(&mut busy).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_request_timeout_not_above_the_redis_timeout_is_refused() {
    let app = TestApp::start(config()).await;
    let mut config = app.config.clone();
    config.request_timeout = config.redis_timeout;
    let listener = coupon_http::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let err = coupon_http::serve(config, listener, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("must exceed the Redis timeout"),
        "{err}"
    );
}

/// `REDIS_CLUSTER_NODES` takes precedence over `REDIS_URL`, and a node that is not part of a
/// cluster stops start-up with a message that names the cluster and the cause.
#[tokio::test]
async fn cluster_nodes_take_precedence_and_a_plain_server_among_them_is_refused() {
    let mut config = config();
    // The URL would work; the "cluster" is the same server, without cluster support.
    let node = config
        .redis
        .redis_url
        .trim_start_matches("redis://")
        .to_owned();
    config.redis.redis_cluster_nodes = vec![node.clone()];
    let listener = coupon_http::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let err = coupon_http::serve(config, listener, std::future::pending())
        .await
        .unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains(&format!(
            "cannot connect to Redis at the cluster of redis://{node}"
        )) && message.contains("cluster support disabled"),
        "{message}"
    );
}

/// `serve` on a port-0 listener with `config` (a topic and relay name of its own), without
/// waiting for it to be ready: its address, the sender that stops it, and its task.
fn spawn_server(
    mut config: Config,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let listener = coupon_http::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    config.topic.topic = format!("t_late_{}", addr.port());
    config.relay_consumer = Some(format!("relay-{}", addr.port()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(coupon_http::serve(config, listener, async {
        let _ = stopped.await;
    }));
    (addr, stop, server)
}

const JSON: (&str, &str) = ("content-type", "application/json");

async fn apply(
    addr: std::net::SocketAddr,
    path: &str,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    support::call(addr, Method::POST, path, &[JSON], body.to_owned()).await
}

/// What a server without Redis answers: `/health` 200, `/ready` 503 saying so, every API call
/// `503 unavailable` with `Retry-After`, bad input 400.
async fn answers_without_redis(addr: std::net::SocketAddr) {
    let (code, _) = support::call(addr, Method::GET, "/health", &[], "").await;
    assert_eq!(code, StatusCode::OK);
    let (code, ready) = support::call(addr, Method::GET, "/ready", &[], "").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert_eq!(ready["redis"], false);
    for path in ["/api/coupons/apply", "/api/campaigns/default/apply"] {
        let answer = support::raw_call(addr, Method::POST, path, &[JSON], r#"{"userId":1}"#).await;
        assert_eq!(
            answer.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            answer.body
        );
        assert_eq!(answer.body["status"], "unavailable");
        assert!(answer.headers.contains_key("retry-after"));
    }
    let (code, answer) = support::call(addr, Method::GET, "/api/campaigns/default", &[], "").await;
    assert_eq!(
        (code, &answer["status"]),
        (StatusCode::SERVICE_UNAVAILABLE, &"unavailable".into())
    );
    let (code, answer) = apply(addr, "/api/coupons/apply", r#"{"userId":"no spaces"}"#).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{answer}");
}

/// Waits until the server is ready and has admitted user 1 to the `default` campaign (a retry
/// after a 503 that had worked answers `duplicate`).
async fn ready_and_admitting(addr: std::net::SocketAddr, within: Duration) {
    eventually(within, "the server to be ready and admitting", || async {
        if support::call(addr, Method::GET, "/ready", &[], "").await.0 != StatusCode::OK {
            return false;
        }
        let (code, answer) = apply(addr, "/api/coupons/apply", r#"{"userId":1}"#).await;
        matches!(
            (code, answer["status"].as_str()),
            (StatusCode::OK, Some("success")) | (StatusCode::CONFLICT, Some("duplicate"))
        )
    })
    .await;
}

/// Started while its Redis is down, the server lives (`/health` 200), is not ready, refuses bad
/// input as bad input and answers every API call `503 unavailable` with `Retry-After`; once
/// Redis is up it is ready within seconds by itself: the `default` campaign is created,
/// admissions pass and the sold-out memory's subscription is in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_before_redis_it_answers_503_then_recovers_by_itself() {
    let mut redis = support::RedisServer::start();
    redis.kill();
    let (addr, stop, server) = spawn_server(Config {
        redis: coupon_cli::Redis::server(redis.url()),
        redis_timeout: Duration::from_millis(300),
        sold_out_ttl: Duration::from_secs(60),
        ..config()
    });
    answers_without_redis(addr).await;
    assert!(!server.is_finished(), "the server lives on without redis");

    redis.restart(false);
    ready_and_admitting(addr, Duration::from_secs(10)).await;
    // The sold-out memory works: its subscription came up with Redis.
    let admin = format!("Bearer {}", support::ADMIN_TOKEN);
    let (code, _) = support::call(
        addr,
        Method::POST,
        "/api/campaigns",
        &[JSON, ("authorization", admin.as_str())],
        r#"{"id":"late","quota":1}"#,
    )
    .await;
    assert_eq!(code, StatusCode::CREATED);
    let (code, _) = apply(addr, "/api/campaigns/late/apply", r#"{"userId":1}"#).await;
    assert_eq!(code, StatusCode::OK);
    let mut user = 1;
    support::until_answered_locally(addr, &redis.url(), "late", &mut user).await;
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// The same with a Redis Cluster whose nodes are all down at start: 503 until they are back,
/// then ready and admitting by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_before_its_cluster_it_answers_503_then_recovers_by_itself() {
    let mut cluster = coupon_testkit::RedisCluster::start_with(3, 0, &[]);
    let ports = cluster.ports.clone();
    for &port in &ports {
        cluster.kill(port);
    }
    let (addr, stop, server) = spawn_server(Config {
        redis: coupon_cli::Redis::cluster(cluster.nodes()[..2].to_vec()),
        redis_timeout: Duration::from_millis(300),
        ..config()
    });
    answers_without_redis(addr).await;
    assert!(
        !server.is_finished(),
        "the server lives on without its cluster"
    );

    for &port in &ports {
        cluster.restart(port);
    }
    // The nodes find each other again from their nodes.conf before the cluster reports ok.
    ready_and_admitting(addr, Duration::from_secs(30)).await;
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
