//! The server under connection-level abuse, with real sockets from distinct loopback addresses
//! (any 127.x.y.z is this machine): an idle flood from one address cannot shut out a client from
//! another; many unfinished large heads cannot make the server's memory grow without bound;
//! hyper's own answers to what it cannot parse are JSON; slow heads are cut off.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use coupon_http::Config;
use hyper::{Method, StatusCode};
use support::{Scratch, TestApp, body_of, config, eventually, free_port, redis_url};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

/// A connection to `addr` from `source`.
async fn connect_from(source: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

/// Everything the server sends until it closes the connection (at most 10 s).
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Connections a flood opened so far, and how many of them the server refused with 429.
#[derive(Default)]
struct FloodCounts {
    opened: AtomicUsize,
    refused: AtomicUsize,
}

/// Holds `count` connections from `source` open and silent, opening a new one whenever the
/// server closes one, until `stop` turns true; counts in `counts` as it goes, and returns how
/// many it opened and how many the server refused with 429.
async fn idle_flood(
    source: IpAddr,
    addr: SocketAddr,
    count: usize,
    stop: watch::Receiver<bool>,
    counts: Arc<FloodCounts>,
) -> (usize, usize) {
    let (opened, refused) = (&counts.opened, &counts.refused);
    let holders: Vec<_> = (0..count)
        .map(|_| {
            let (mut stop, counts) = (stop.clone(), counts.clone());
            tokio::spawn(async move {
                let (opened, refused) = (&counts.opened, &counts.refused);
                while !*stop.borrow() {
                    let Ok(mut stream) = connect_from(source, addr).await else {
                        tokio::task::yield_now().await;
                        continue;
                    };
                    opened.fetch_add(1, Ordering::Relaxed);
                    let mut buf = [0u8; 512];
                    // Silent until the server closes (or refuses) the connection.
                    let read = tokio::select! {
                        read = stream.read(&mut buf) => read,
                        _ = stop.wait_for(|stop| *stop) => break,
                    };
                    if let Ok(n) = read
                        && buf[..n].starts_with(b"HTTP/1.1 429")
                    {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for holder in holders {
        let _ = holder.await;
    }
    (
        opened.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    )
}

/// A client at `source` asks `/health` `times` times, each on a new connection; returns the
/// longest wait for an answer. Panics if an answer takes 10 s.
async fn client_served(source: IpAddr, addr: SocketAddr, times: usize) -> Duration {
    let mut longest = Duration::ZERO;
    for _ in 0..times {
        let started = Instant::now();
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            support::call_from(Some(source), addr, Method::GET, "/health", &[], ""),
        )
        .await
        .expect("the client is answered within 10 s");
        assert_eq!(answer.status, StatusCode::OK);
        longest = longest.max(started.elapsed());
    }
    longest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_flood_from_one_address_holds_only_its_share() {
    let app = TestApp::start(Config {
        max_connections: 256,
        max_connections_per_address: 32,
        ..config()
    })
    .await;
    let (flooder, client): (IpAddr, IpAddr) =
        ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
    let (stop, stopped) = watch::channel(false);
    let counts = Arc::new(FloodCounts::default());
    let flood = tokio::spawn(idle_flood(flooder, app.addr, 200, stopped, counts.clone()));
    eventually(
        Duration::from_secs(30),
        "the flood to be refused",
        || async {
            counts.refused.load(Ordering::Relaxed) > 0
                && support::call_from(Some(flooder), app.addr, Method::GET, "/health", &[], "")
                    .await
                    .status
                    == StatusCode::TOO_MANY_REQUESTS
        },
    )
    .await;
    // An HTTP client of the flooding address is answered 429 every time, not cut off before it
    // could send its request.
    for _ in 0..20 {
        let answer =
            support::call_from(Some(flooder), app.addr, Method::GET, "/health", &[], "").await;
        assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(answer.body["status"], "rate_limited");
    }
    let longest = client_served(client, app.addr, 20).await;
    stop.send_replace(true);
    let (opened, refused) = flood.await.unwrap();
    println!(
        "per-address cap: flood opened {opened}, {refused} refused with 429; the other client's longest wait {longest:?}"
    );
    assert!(
        refused > 0,
        "connections beyond the address's share are refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_an_idle_flood_gives_way_to_a_new_client() {
    // Every slot held by one address's idle connections, which reconnect when closed: a client
    // from another address still gets answers, as the idlest connection gives its slot.
    let app = TestApp::start(Config {
        max_connections: 64,
        max_connections_per_address: 1000,
        ..config()
    })
    .await;
    let (flooder, client): (IpAddr, IpAddr) =
        ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
    let (stop, stopped) = watch::channel(false);
    let counts = Arc::new(FloodCounts::default());
    let flood = tokio::spawn(idle_flood(flooder, app.addr, 200, stopped, counts));
    let longest = client_served(client, app.addr, 20).await;
    stop.send_replace(true);
    let (opened, _) = flood.await.unwrap();
    println!(
        "global cap: flood opened {opened} connections; the other client's longest wait {longest:?}"
    );
    assert!(opened > 64, "the flood filled the cap and came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_hyper_cannot_parse_is_answered_in_json_and_heads_must_be_quick() {
    let app = TestApp::start(Config {
        header_timeout: Duration::from_millis(300),
        ..config()
    })
    .await;
    let local: IpAddr = "127.0.0.1".parse().unwrap();
    let cases: [(&[u8], &str); 4] = [
        (b"NOT HTTP AT ALL\r\n\r\n", "HTTP/1.1 400 "),
        (b"GET /health HTTP/1.1\r\nhost x\r\n\r\n", "HTTP/1.1 400 "),
        (
            b"GET /health HTTP/1.1\r\nbad header\0: x\r\n\r\n",
            "HTTP/1.1 400 ",
        ),
        (b"", "HTTP/1.1 431 "),
    ];
    for (request, status) in cases {
        let request = if request.is_empty() {
            // A head over the 8 KiB limit.
            format!(
                "GET /health HTTP/1.1\r\nhost: x\r\nx-pad: {}\r\n\r\n",
                "a".repeat(9000)
            )
            .into_bytes()
        } else {
            request.to_vec()
        };
        let mut stream = connect_from(local, app.addr).await.unwrap();
        stream.write_all(&request).await.unwrap();
        let answer = read_to_close(&mut stream).await;
        assert!(answer.starts_with(status), "{answer:?}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{answer:?}"
        );
        assert_eq!(body_of(&answer)["status"], "error", "{answer:?}");
    }

    // HEAD: the head of the GET answer.
    let mut stream = connect_from(local, app.addr).await.unwrap();
    stream
        .write_all(b"HEAD /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
    assert!(answer.ends_with("\r\n\r\n"), "no body: {answer:?}");

    // Half a head, then nothing: closed once the header timeout has passed since its first byte.
    let mut stream = connect_from(local, app.addr).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let answer = read_to_close(&mut stream).await;
    assert!(answer.is_empty(), "{answer:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(290),
        "closed before the header timeout: {took:?}"
    );
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_unfinished_large_heads_keep_memory_bounded() {
    // The real binary, so that its memory is its own; every connection from another address, so
    // that the per-address cap does not stop them first.
    let scratch = Scratch::new(&redis_url());
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let server = coupon_testkit::Process(
        Command::new(env!("CARGO_BIN_EXE_coupon-http"))
            .env("COUPON_HTTP_ADDR", addr.to_string())
            .env("REDIS_URL", redis_url())
            .env("COUPON_KEY_PREFIX", &scratch.prefix)
            .env("KAFKA_BROKERS", support::brokers())
            .env(
                "COUPON_TOPIC",
                format!("t_{}", scratch.prefix.replace('-', "_")),
            )
            .env("COUPON_IDENTITY", "body")
            .env("COUPON_HEADER_TIMEOUT_MS", "60000")
            .env("COUPON_REQUEST_TIMEOUT_MS", "120000")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = server.0.id();
    eventually(
        Duration::from_secs(30),
        "the server to be ready",
        || async {
            TcpStream::connect(addr).await.is_ok()
                && support::call(addr, Method::GET, "/ready", &[], "").await.0 == StatusCode::OK
        },
    )
    .await;
    let before = rss_kib(pid);

    // 4,000 connections, each stopping 200 bytes short of the 8 KiB head limit.
    const CONNECTIONS: usize = 4000;
    let head = format!(
        "GET /health HTTP/1.1\r\nhost: x\r\nx-pad: {}\r\n",
        "a".repeat(8192 - 250)
    );
    let mut held = Vec::with_capacity(CONNECTIONS);
    for n in 0..CONNECTIONS {
        let source: IpAddr = [127, 2, (n / 250) as u8, (n % 250 + 1) as u8].into();
        let mut stream = connect_from(source, addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        held.push(stream);
    }
    // The server's memory grows as it reads the heads; its peak once it has read them all is
    // taken as the highest of readings a quarter second apart, until two in a row agree.
    let mut readings = vec![rss_kib(pid)];
    let deadline = Instant::now() + Duration::from_secs(60);
    while readings.len() < 2 || readings[readings.len() - 1] != readings[readings.len() - 2] {
        assert!(
            Instant::now() < deadline,
            "the server's memory never settled: {readings:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        readings.push(rss_kib(pid));
    }
    let grown = readings.iter().max().unwrap().saturating_sub(before);
    println!(
        "{CONNECTIONS} unfinished {}-byte heads: the server's RSS grew by {} MiB ({} KiB per connection)",
        head.len(),
        grown / 1024,
        grown / CONNECTIONS as u64
    );
    // About 8 KiB of head each, held in a buffer of at most 12 KiB, and the connection's task:
    // far from the 400 KB a head could take before.
    assert!(
        grown < 32 * CONNECTIONS as u64,
        "{grown} KiB for {CONNECTIONS} connections"
    );

    // One byte more than the limit allows: 431, in JSON.
    let mut stream = connect_from("127.3.0.1".parse().unwrap(), addr)
        .await
        .unwrap();
    let over = format!(
        "GET /health HTTP/1.1\r\nhost: x\r\nx-pad: {}\r\n\r\n",
        "a".repeat(8192)
    );
    stream.write_all(over.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer:?}");
    assert_eq!(body_of(&answer)["status"], "error");
    drop(held);
    drop(server);
}
